//! [`Peer::start`] wires a peer together; [`PeerHandle`] is what the CLI and shells call.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use p2p_protocol::{FileId, FileSummary, IdPrefix, PeerSummary};
use p2p_storage::{SourceFile, build_manifest};
use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use crate::chunk_server::{ChunkServer, ServeStats};
use crate::config::PeerConfig;
use crate::download::{self, DownloadEvent, DownloadOptions, DownloadReport, EventSink, Refresh};
use crate::error::PeerError;
use crate::heartbeat;
use crate::index_client::{IndexClient, Session};
use crate::shared_files::{SharedFileInfo, SharedFiles};

/// Namespace for starting a peer.
#[derive(Debug)]
pub struct Peer;

/// The running parts of a peer, shared by its tasks and handles.
#[derive(Debug)]
pub(crate) struct Node {
    pub config: PeerConfig,
    pub local_addr: SocketAddr,
    pub files: SharedFiles,
    pub index: IndexClient,
    /// None until registered, and while re-registering fails.
    session: Mutex<Option<Session>>,
    stats: Arc<ServeStats>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Node {
    pub fn session(&self) -> Option<Session> {
        self.session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_session(&self, session: Option<Session>) {
        *self.session.lock().unwrap_or_else(|e| e.into_inner()) = session;
    }

    /// The address we ask the index to hand out for us.
    fn advertised_addr(&self) -> SocketAddr {
        self.config.advertise_addr.unwrap_or(self.local_addr)
    }

    /// Registers afresh and re-adds every shared file.
    pub async fn register_everything(&self) -> Result<Session, PeerError> {
        let session = self.index.register(self.advertised_addr()).await?;
        for manifest in self.files.manifests() {
            self.index.add_file(&session, manifest).await?;
        }
        self.set_session(Some(session.clone()));
        Ok(session)
    }

    /// Withdraws files that changed on disk from the index.
    pub async fn withdraw_pending(&self) {
        let Some(session) = self.session() else {
            return;
        };
        for file_id in self.files.take_withdrawn() {
            if let Err(err) = self.index.remove_file(&session, file_id).await {
                warn!(%err, file = %file_id.fmt_short(), "cannot withdraw changed file from the index");
            }
        }
    }
}

impl Peer {
    /// Binds the chunk server, registers with the index and starts heartbeating.
    pub async fn start(config: PeerConfig) -> Result<PeerHandle, PeerError> {
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .map_err(|source| PeerError::Listen {
                addr: config.listen_addr,
                source,
            })?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| PeerError::Internal(e.to_string()))?;
        let node = Arc::new(Node {
            index: IndexClient::new(config.server_addr, config.index_timeout),
            config,
            local_addr,
            files: SharedFiles::default(),
            session: Mutex::new(None),
            stats: Arc::new(ServeStats::default()),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        let session = node.register_everything().await?;
        info!(peer_id = %session.peer_id, addr = %session.addr, server = %node.index.server(), "registered with the index");

        let server = ChunkServer {
            listener,
            files: node.files.clone(),
            stats: node.stats.clone(),
            max_inbound: node.config.max_inbound,
            max_inbound_per_ip: node.config.max_inbound_per_ip,
            idle_timeout: node.config.idle_timeout,
        };
        node.tasks.spawn(
            server
                .run(node.shutdown.child_token(), node.tasks.clone())
                .instrument(info_span!("chunk_server", addr = %local_addr)),
        );
        node.tasks
            .spawn(heartbeat::run(node.clone(), node.shutdown.child_token()));
        Ok(PeerHandle { node })
    }
}

/// A running peer. Cheap to clone; every clone controls the same peer.
#[derive(Clone, Debug)]
pub struct PeerHandle {
    node: Arc<Node>,
}

impl PeerHandle {
    /// Where the chunk server listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.node.local_addr
    }

    /// The index server's address.
    pub fn server_addr(&self) -> SocketAddr {
        self.node.index.server()
    }

    /// The current registration, if any.
    pub fn session(&self) -> Option<Session> {
        self.node.session()
    }

    /// Chunks this peer has served.
    pub fn chunks_served(&self) -> u64 {
        self.node.stats.chunks_served.load(Ordering::Relaxed)
    }

    /// The files this peer shares.
    pub fn files(&self) -> Vec<SharedFileInfo> {
        self.node.files.list()
    }

    /// Hashes `path`, starts serving it and announces it to the index. Returns its id.
    pub async fn register(&self, path: &Path) -> Result<FileId, PeerError> {
        let owned = path.to_owned();
        let source = tokio::task::spawn_blocking(move || {
            let hashed = build_manifest(&owned)?;
            SourceFile::open(&owned, hashed)
        })
        .await
        .map_err(|e| PeerError::Internal(e.to_string()))??;
        self.share(source).await
    }

    async fn share(&self, source: SourceFile) -> Result<FileId, PeerError> {
        let manifest = source.manifest().clone();
        let file_id = manifest.id();
        self.node.files.insert(file_id, Arc::new(source));
        let session = self.node.session().ok_or_else(|| PeerError::IndexRefused {
            code: p2p_protocol::ErrorCode::UnknownPeer,
            message: "not registered with the index right now; the file will be announced when the index is back".into(),
        })?;
        self.node.index.add_file(&session, manifest).await?;
        info!(file = %file_id.fmt_short(), "sharing file");
        Ok(file_id)
    }

    /// Stops sharing a file given by full id or unique prefix among this peer's files.
    pub async fn unshare(&self, id: &str) -> Result<FileId, PeerError> {
        let prefix: IdPrefix = id.parse()?;
        let matching: Vec<FileId> = self
            .files()
            .into_iter()
            .map(|f| f.file_id)
            .filter(|id| prefix.matches(id))
            .collect();
        let file_id = match matching.as_slice() {
            [one] => *one,
            [] => {
                return Err(PeerError::IndexRefused {
                    code: p2p_protocol::ErrorCode::UnknownFile,
                    message: format!("this peer shares no file matching {prefix}"),
                });
            }
            _ => {
                return Err(PeerError::IndexRefused {
                    code: p2p_protocol::ErrorCode::AmbiguousPrefix,
                    message: format!(
                        "{prefix} matches {} shared files; type more characters",
                        matching.len()
                    ),
                });
            }
        };
        self.node.files.remove(&file_id);
        if let Some(session) = self.node.session() {
            self.node.index.remove_file(&session, file_id).await?;
        }
        Ok(file_id)
    }

    /// Downloads the file with id (or unique prefix) `id` into `out_dir`, from every peer that
    /// hosts it, then shares it too. Events go to `events` if given.
    pub async fn download(
        &self,
        id: &str,
        out_dir: &Path,
        events: Option<UnboundedSender<DownloadEvent>>,
        cancel: CancellationToken,
    ) -> Result<DownloadReport, PeerError> {
        let lookup = self.node.index.lookup(id).await?;
        let manifest = lookup.manifest.clone();
        let mut options = DownloadOptions::from(&self.node.config);
        options.me = self.node.session().map(|s| s.peer_id);
        // While every host is gone, the pool asks the index again.
        let node = self.node.clone();
        let full_id = lookup.file_id.to_string();
        let refresh: Refresh = Arc::new(move || {
            let node = node.clone();
            let id = full_id.clone();
            Box::pin(async move { node.index.lookup(&id).await.map(|found| found.hosts) })
        });
        let report = download::download(
            lookup,
            out_dir,
            options,
            EventSink::new(events),
            Some(refresh),
            cancel,
        )
        .await?;
        // Share what we just verified, without hashing it again.
        let path = report.path.clone();
        let source =
            tokio::task::spawn_blocking(move || SourceFile::open_verified(&path, manifest)).await;
        match source {
            Ok(Ok(source)) => {
                if let Err(err) = self.share(source).await {
                    warn!(%err, "downloaded file could not be announced to the index");
                }
            }
            Ok(Err(err)) => warn!(%err, "downloaded file can't be shared"),
            Err(err) => warn!(%err, "downloaded file can't be shared"),
        }
        Ok(report)
    }

    /// Files on the network.
    pub async fn network_files(&self) -> Result<(Vec<FileSummary>, u64), PeerError> {
        self.node.index.list_files().await
    }

    /// Files on the network whose names contain every word of `query`, ignoring case.
    pub async fn search(&self, query: &str) -> Result<(Vec<FileSummary>, u64), PeerError> {
        self.node.index.search(query).await
    }

    /// Peers known to the index.
    pub async fn network_peers(&self) -> Result<(Vec<PeerSummary>, u64), PeerError> {
        self.node.index.list_peers().await
    }

    /// Unregisters from the index (best effort), stops serving and waits for every task.
    pub async fn shutdown(&self) {
        if let Some(session) = self.node.session() {
            match self.node.index.unregister(&session).await {
                Ok(()) => info!("unregistered from the index"),
                Err(err) => warn!(%err, "could not unregister from the index"),
            }
            self.node.set_session(None);
        }
        self.node.shutdown.cancel();
        self.node.tasks.close();
        self.node.tasks.wait().await;
    }
}
