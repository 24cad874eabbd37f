//! [`Peer::start`] wires a peer together; [`PeerHandle`] is what the CLI and shells call.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use p2p_protocol::manifest_file::FolderManifestFile;
use p2p_protocol::{
    FileId, FileManifest, FileSummary, IdPrefix, NodeId, PeerConversation, PeerId, PeerRequest,
    PeerResponse, PeerSummary, ProtocolError,
};
use p2p_storage::{OpenSource, SourceFile, Tree, TreeFile};
use p2p_transport::{ClientConnection, Tls};
use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use crate::chunk_server::{ChunkServer, ServeStats};
use crate::config::PeerConfig;
use crate::download::{
    self, DownloadEvent, DownloadOptions, DownloadReport, EventSink, HostSpec, Refresh, Wanted,
};
use crate::downloads::{Downloads, PeerChange, PeerStatus};
use crate::error::PeerError;
use crate::heartbeat;
use crate::inbox::{Inbox, ReceivedMessage};
use crate::index_client::{IndexClient, Session};
use crate::shared_files::{SharedFileInfo, SharedFiles};

/// Namespace for starting a peer.
#[derive(Debug)]
pub struct Peer;

/// The running parts of a peer, shared by its tasks and handles.
#[derive(Debug)]
pub(crate) struct Node {
    pub config: PeerConfig,
    /// This node's key, presented on every connection it opens or accepts.
    pub tls: Tls,
    pub local_addr: SocketAddr,
    pub files: SharedFiles,
    /// `None` for a peer that works without an index server (direct downloads only).
    pub index: Option<IndexClient>,
    /// None until registered, and while re-registering fails.
    session: Mutex<Option<Session>>,
    inbox: Arc<Inbox>,
    stats: Arc<ServeStats>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// Download jobs, and the change feed every live view listens to.
    downloads: Downloads,
    /// The runtime the peer started on: jobs started from another thread (a shell's) run
    /// there too.
    runtime: tokio::runtime::Handle,
    /// Hosts every download job asks besides the index's (`--from`, `connect`). std Mutex: a
    /// copy or a push, never held across an await.
    direct_hosts: Mutex<Vec<SocketAddr>>,
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

    /// The index client, or the error a user sees when there is none.
    pub fn index(&self) -> Result<&IndexClient, PeerError> {
        self.index.as_ref().ok_or(PeerError::NoIndex)
    }

    /// The address we ask the index to hand out for us.
    fn advertised_addr(&self) -> SocketAddr {
        self.config.advertise_addr.unwrap_or(self.local_addr)
    }

    /// Registers afresh and re-adds every shared file.
    pub async fn register_everything(&self) -> Result<Session, PeerError> {
        let index = self.index()?;
        let session = index.register(self.advertised_addr()).await?;
        // The registration stands even if some file is refused (a cap, say): keep it, or the
        // next heartbeat would register yet another peer.
        self.set_session(Some(session.clone()));
        for manifest in self.files.manifests() {
            let name = manifest.name.clone();
            match index.add_file(&session, manifest).await {
                Ok(_) => {}
                Err(err @ PeerError::IndexRefused { .. }) => {
                    warn!(%err, file = %name, "the index refused a shared file");
                }
                Err(err) => return Err(err),
            }
        }
        Ok(session)
    }

    /// Withdraws files that changed on disk from the index.
    pub async fn withdraw_pending(&self) {
        let (Some(session), Some(index)) = (self.session(), self.index.as_ref()) else {
            return;
        };
        for file_id in self.files.take_withdrawn() {
            self.downloads.announce(PeerChange::FileUnshared(file_id));
            if let Err(err) = index.remove_file(&session, file_id).await {
                warn!(%err, file = %file_id.fmt_short(), "cannot withdraw changed file from the index");
            }
        }
    }
}

impl Peer {
    /// Binds the chunk server, registers with the index (if there is one) and starts
    /// heartbeating. `tls` carries the node's key: every connection proves it.
    pub async fn start(config: PeerConfig, tls: Tls) -> Result<PeerHandle, PeerError> {
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .map_err(|cause| PeerError::Listen {
                addr: config.listen_addr,
                cause,
            })?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| PeerError::Internal(e.to_string()))?;
        let downloads = Downloads::default();
        let inbox = Arc::new(Inbox::with_changes(downloads.changes().clone()));
        let node = Arc::new(Node {
            index: config.server_addr.map(|addr| {
                IndexClient::new(addr, config.index_timeout, tls.clone())
                    .expecting(config.server_id)
            }),
            config,
            tls,
            local_addr,
            files: SharedFiles::default(),
            session: Mutex::new(None),
            inbox,
            stats: Arc::new(ServeStats::default()),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            downloads,
            runtime: tokio::runtime::Handle::current(),
            direct_hosts: Mutex::new(Vec::new()),
        });
        if let Some(index) = &node.index {
            let session = node.register_everything().await?;
            info!(peer_id = %session.peer_id, addr = %session.addr, server = %index.server(), "registered with the index");
        }

        let server = ChunkServer {
            listener,
            tls: node.tls.clone(),
            allowed: node.config.allow_peers.clone(),
            files: node.files.clone(),
            inbox: node.inbox.clone(),
            stats: node.stats.clone(),
            max_inbound: node.config.max_inbound,
            max_inbound_per_ip: node.config.max_inbound_per_ip,
            idle_timeout: node.config.idle_timeout,
            first_request_timeout: node.config.first_request_timeout,
        };
        node.tasks.spawn(
            server
                .run(node.shutdown.child_token())
                .instrument(info_span!("chunk_server", addr = %local_addr)),
        );
        if node.index.is_some() {
            node.tasks
                .spawn(heartbeat::run(node.clone(), node.shutdown.child_token()));
        }
        Ok(PeerHandle { node })
    }
}

/// What to download, and where besides the index to look for it: one job, a file or a whole
/// folder.
#[derive(Clone, Debug, Default)]
pub struct DownloadRequest {
    /// The file or folder id, or (with an index) a unique prefix of one.
    pub id: String,
    /// The manifest, if the caller has it already (from a manifest file); it must hash to
    /// `id`, which must then be the full id.
    pub manifest: Option<FileManifest>,
    /// A folder's manifest file, if the caller has it (its files go under a folder of its
    /// name in the output folder).
    pub folder: Option<Arc<FolderManifestFile>>,
    /// Peers to fetch from directly, whether or not the index knows them.
    pub hosts: Vec<SocketAddr>,
}

impl DownloadRequest {
    /// A download by id or prefix, through the index.
    pub fn by_id(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            ..Self::default()
        }
    }
}

/// A running peer. Cheap to clone; every clone controls the same peer.
#[derive(Clone, Debug)]
pub struct PeerHandle {
    pub(crate) node: Arc<Node>,
}

impl PeerHandle {
    /// Where the chunk server listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.node.local_addr
    }

    /// The index server's address, if the peer uses one.
    pub fn server_addr(&self) -> Option<SocketAddr> {
        self.node.index.as_ref().map(IndexClient::server)
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
        Ok(self.register_manifest(path).await?.id())
    }

    /// Like [`PeerHandle::register`], returning the whole manifest (for manifest files).
    /// The file is opened once (a FIFO or device is refused, never waited on) and hashed and
    /// served through that one handle.
    pub async fn register_manifest(&self, path: &Path) -> Result<FileManifest, PeerError> {
        let owned = path.to_owned();
        self.register_opened(move || OpenSource::open(&owned)).await
    }

    /// Shares one file of a shared folder: opened beneath the folder's handle, and only if it
    /// is still the file the walk saw.
    pub async fn register_tree_file(
        &self,
        tree: Arc<Tree>,
        file: TreeFile,
    ) -> Result<FileManifest, PeerError> {
        self.register_opened(move || tree.open_file(&file)).await
    }

    /// Opens with `open`, hashes through that handle, serves it and announces it.
    async fn register_opened(
        &self,
        open: impl FnOnce() -> Result<OpenSource, p2p_storage::StorageError> + Send + 'static,
    ) -> Result<FileManifest, PeerError> {
        let source = tokio::task::spawn_blocking(move || SourceFile::hash(open()?))
            .await
            .map_err(|e| PeerError::Internal(e.to_string()))??;
        let manifest = source.manifest().clone();
        self.share_source(source).await?;
        Ok(manifest)
    }

    /// A token cancelled when the peer shuts down.
    pub(crate) fn shutdown_token(&self) -> CancellationToken {
        self.node.shutdown.child_token()
    }

    /// Runs `task` among the peer's tasks (waited for at shutdown), on the peer's runtime
    /// whichever thread calls.
    pub(crate) fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.node.tasks.spawn_on(task, &self.node.runtime);
    }

    /// Starts serving an already-hashed file and announces it.
    pub async fn share_source(&self, source: SourceFile) -> Result<FileId, PeerError> {
        let manifest = source.manifest().clone();
        let file_id = manifest.id();
        self.node.files.insert(file_id, Arc::new(source));
        self.node
            .downloads
            .announce(PeerChange::FileShared(file_id));
        if let Some(index) = &self.node.index {
            let session = self.node.session().ok_or_else(|| PeerError::IndexRefused {
                code: p2p_protocol::ErrorCode::UnknownPeer,
                message: "not registered with the index right now; the file will be announced when the index is back".into(),
            })?;
            index.add_file(&session, manifest).await?;
        }
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
            [] => return Err(PeerError::NotSharedPrefix(prefix.to_string())),
            _ => {
                return Err(PeerError::AmbiguousPrefix {
                    prefix: prefix.to_string(),
                    count: matching.len(),
                    what: "shared files",
                });
            }
        };
        if self.node.files.remove(&file_id) {
            self.node
                .downloads
                .announce(PeerChange::FileUnshared(file_id));
        }
        if let (Some(session), Some(index)) = (self.node.session(), &self.node.index) {
            index.remove_file(&session, file_id).await?;
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
        self.fetch(DownloadRequest::by_id(id), out_dir, events, cancel)
            .await
    }

    /// Downloads what `request` describes: the manifest from the request, the index, or the
    /// named hosts (in that order); hosts from the index and the request together.
    pub async fn fetch(
        &self,
        request: DownloadRequest,
        out_dir: &Path,
        events: Option<UnboundedSender<DownloadEvent>>,
        cancel: CancellationToken,
    ) -> Result<DownloadReport, PeerError> {
        let lookup = self.resolve(&request).await?;
        let mut options = DownloadOptions::new(&self.node.config, self.node.tls.clone());
        options.me = self.node.session().map(|s| s.peer_id);
        // While every host is gone, the pool asks the index again.
        let refresh: Option<Refresh> = self.node.index.as_ref().map(|_| {
            let node = self.node.clone();
            let full_id = lookup.file_id.to_string();
            let refresh: Refresh = Arc::new(move || {
                let node = node.clone();
                let id = full_id.clone();
                Box::pin(async move { node.index()?.lookup(&id).await.map(|found| found.hosts) })
            });
            refresh
        });
        let (report, source) = download::download(
            lookup,
            out_dir,
            &[],
            options,
            EventSink::new(events),
            refresh,
            cancel,
        )
        .await?;
        // Share what we just verified, without hashing it again.
        match source {
            Ok(source) => {
                if let Err(err) = self.share_source(source).await {
                    warn!(%err, "downloaded file could not be announced to the index");
                }
            }
            Err(err) => warn!(%err, "downloaded file can't be shared"),
        }
        Ok(report)
    }

    /// The checked manifest and the hosts to use for `request`.
    pub(crate) async fn resolve(&self, request: &DownloadRequest) -> Result<Wanted, PeerError> {
        let direct: Vec<HostSpec> = request
            .hosts
            .iter()
            .enumerate()
            // Hosts named by address have no registration; give them ids no index hands out
            // to anyone we would also meet (the top of the range).
            .map(|(i, addr)| HostSpec {
                peer_id: PeerId(u64::MAX - i as u64),
                addr: *addr,
                node_id: None,
            })
            .collect();
        let from_index = match &self.node.index {
            Some(index) => match (&request.manifest, index.lookup(&request.id).await) {
                (_, Ok(found)) => Some(found),
                // The manifest is in hand: the index not knowing the file is no error.
                (Some(_), Err(PeerError::IndexRefused { .. })) => None,
                (None, Err(err)) if direct.is_empty() => return Err(err),
                (_, Err(err)) => {
                    warn!(%err, "index lookup failed; using the hosts given");
                    None
                }
            },
            None => None,
        };
        let (file_id, manifest) = match (&request.manifest, &from_index) {
            (Some(manifest), _) => {
                let file_id: FileId = request.id.parse()?;
                if manifest.id() != file_id || manifest.validate().is_err() {
                    return Err(PeerError::ManifestMismatch(file_id));
                }
                (file_id, manifest.clone())
            }
            (None, Some(found)) => (found.file_id, found.manifest.clone()),
            (None, None) => {
                let file_id: FileId = request.id.parse()?;
                (
                    file_id,
                    self.manifest_from_hosts(file_id, &request.hosts).await?,
                )
            }
        };
        let mut hosts = direct;
        if let Some(found) = from_index
            && found.file_id == file_id
        {
            hosts.extend(
                found
                    .hosts
                    .into_iter()
                    .filter(|h| !request.hosts.contains(&h.addr))
                    .map(HostSpec::from),
            );
        }
        Ok(Wanted {
            file_id,
            manifest,
            hosts,
        })
    }

    /// Asks each host in turn for the manifest of `file_id` and checks it against the id.
    async fn manifest_from_hosts(
        &self,
        file_id: FileId,
        hosts: &[SocketAddr],
    ) -> Result<FileManifest, PeerError> {
        let mut last = String::from("no host given");
        for addr in hosts {
            match self.ask_manifest(*addr, file_id).await {
                Ok(manifest) if manifest.id() == file_id && manifest.validate().is_ok() => {
                    return Ok(manifest);
                }
                Ok(_) => last = format!("{addr} sent a manifest that does not match the id"),
                Err(err) => last = format!("{addr}: {err}"),
            }
        }
        Err(PeerError::NoManifest {
            id: file_id,
            reason: last,
        })
    }

    async fn ask_manifest(
        &self,
        addr: SocketAddr,
        file_id: FileId,
    ) -> Result<FileManifest, ProtocolError> {
        let (mut conn, _) = self.connect_peer(addr).await?;
        match conn
            .request(
                &PeerRequest::GetManifest { file_id },
                self.node.config.request_timeout,
            )
            .await?
        {
            PeerResponse::Manifest { manifest, .. } => Ok(manifest),
            PeerResponse::Error { code, message } => Err(ProtocolError::Remote {
                code,
                message: message.into(),
            }),
            _ => Err(ProtocolError::Unexpected("expected Manifest")),
        }
    }

    /// A connection to the peer at `addr`, and its node id.
    async fn connect_peer(
        &self,
        addr: SocketAddr,
    ) -> Result<(ClientConnection<PeerConversation>, NodeId), ProtocolError> {
        let timeout = self.node.config.connect_timeout;
        p2p_transport::connect::<PeerConversation>(&self.node.tls, addr, None, timeout).await
    }

    /// The index server's node id, as its last handshake showed it (`None` without an index,
    /// or before the first connection).
    pub fn index_node_id(&self) -> Option<NodeId> {
        self.node
            .index
            .as_ref()
            .and_then(IndexClient::server_node_id)
    }

    /// This peer's node id (what its key proves on every connection).
    pub fn node_id(&self) -> NodeId {
        self.node.tls.node_id()
    }

    /// Sends a short text message to the peer at `to`; returns the node id of the peer that
    /// took it (proved in the TLS handshake). Not kept: front ends call
    /// [`PeerHandle::send_message_to`], which keeps what it sent.
    pub async fn send_message(&self, to: SocketAddr, text: &str) -> Result<NodeId, PeerError> {
        let unreachable = |cause| PeerError::PeerUnreachable { addr: to, cause };
        let (mut conn, recipient) = self.connect_peer(to).await.map_err(unreachable)?;
        let from = self
            .node
            .session()
            .map_or_else(|| self.node.advertised_addr(), |s| s.addr)
            .to_string();
        let request = PeerRequest::Message {
            from,
            text: text.to_owned(),
        };
        match conn
            .request(&request, MESSAGE_TIMEOUT)
            .await
            .map_err(unreachable)?
        {
            PeerResponse::MessageReceived {} => Ok(recipient),
            PeerResponse::Error { code, message } => Err(unreachable(ProtocolError::Remote {
                code,
                message: message.into(),
            })),
            _ => Err(unreachable(ProtocolError::Unexpected(
                "expected MessageReceived",
            ))),
        }
    }

    /// Messages received during this run, and those sent with
    /// [`PeerHandle::send_message_to`] (marked `sent`), oldest first.
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        self.node.inbox.list()
    }

    /// Messages as they arrive, and those this peer sends with [`PeerHandle::send_message_to`]
    /// (marked `sent`).
    pub fn subscribe_messages(&self) -> tokio::sync::broadcast::Receiver<ReceivedMessage> {
        self.node.inbox.subscribe()
    }

    /// Files on the network.
    pub async fn network_files(&self) -> Result<(Vec<FileSummary>, u64), PeerError> {
        self.node.index()?.list_files().await
    }

    /// Files on the network whose names contain every word of `query`, ignoring case.
    pub async fn search(&self, query: &str) -> Result<(Vec<FileSummary>, u64), PeerError> {
        self.node.index()?.search(query).await
    }

    /// Peers known to the index.
    pub async fn network_peers(&self) -> Result<(Vec<PeerSummary>, u64), PeerError> {
        self.node.index()?.list_peers().await
    }

    /// Unregisters from the index (best effort), stops serving and waits for every task.
    pub async fn shutdown(&self) {
        if let (Some(session), Some(index)) = (self.node.session(), &self.node.index) {
            match index.unregister(&session).await {
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

/// Download jobs, status, shared paths, direct hosts and messages by name: what every front
/// end (the shells, the web API) calls, so they share one path.
impl PeerHandle {
    /// The download registry.
    pub(crate) fn registry(&self) -> &Downloads {
        &self.node.downloads
    }

    /// What `status` shows.
    pub fn status(&self) -> PeerStatus {
        let session = self.session();
        PeerStatus {
            node_id: self.node_id(),
            listen_addr: self.local_addr(),
            advertised_addr: session.as_ref().map(|s| s.addr),
            server_addr: self.server_addr(),
            server_node_id: self.index_node_id(),
            registered: session.is_some(),
            files_shared: self.files().len(),
            chunks_served: self.chunks_served(),
            downloads_active: self.node.downloads.active(),
            direct_hosts: self.direct_hosts(),
        }
    }

    /// Shares a file, or every file of a folder (walked as `--share-dir` does); returns what
    /// is now shared from it.
    pub async fn share_path(&self, path: &Path) -> Result<Vec<SharedFileInfo>, PeerError> {
        let shared = self.share_path_manifests(path).await?;
        Ok(shared
            .into_iter()
            .map(|(rel, manifest)| SharedFileInfo {
                file_id: manifest.id(),
                name: manifest.name.clone(),
                size: manifest.size,
                path: if rel.as_os_str().is_empty() {
                    path.to_owned()
                } else {
                    path.join(rel)
                },
            })
            .collect())
    }

    /// As [`PeerHandle::share_path`], with each file's path inside the folder (empty for a
    /// single file) and its manifest, for writing a manifest file. A folder is walked and its
    /// files opened through a handle on it: links and FIFOs in it are skipped, nothing outside
    /// it is shared, and a folder that can't be listed completely is an error.
    pub async fn share_path_manifests(
        &self,
        path: &Path,
    ) -> Result<Vec<(PathBuf, FileManifest)>, PeerError> {
        let failed = |shown: &Path| {
            let shown = shown.to_owned();
            move |cause: PeerError| PeerError::Share {
                path: shown,
                cause: Box::new(cause),
            }
        };
        if !is_dir(path).await {
            let manifest = self.register_manifest(path).await.map_err(failed(path))?;
            return Ok(vec![(PathBuf::new(), manifest)]);
        }
        let dir = path.to_owned();
        let tree = tokio::task::spawn_blocking(move || Tree::open(&dir))
            .await
            .map_err(|e| PeerError::Internal(e.to_string()))?
            .map_err(|e| failed(path)(e.into()))?;
        let tree = Arc::new(tree);
        let walked = {
            let tree = tree.clone();
            tokio::task::spawn_blocking(move || tree.walk())
                .await
                .map_err(|e| PeerError::Internal(e.to_string()))?
        };
        if !walked.complete {
            return Err(PeerError::IncompleteFolder(path.to_owned()));
        }
        let mut shared = Vec::with_capacity(walked.files.len());
        for file in walked.files {
            let rel = file.rel.clone();
            let manifest = self
                .register_tree_file(tree.clone(), file)
                .await
                .map_err(failed(&path.join(&rel)))?;
            shared.push((rel, manifest));
        }
        Ok(shared)
    }

    /// Changes as they happen: download jobs, shared files, messages.
    pub fn subscribe_changes(&self) -> tokio::sync::broadcast::Receiver<PeerChange> {
        self.node.downloads.changes().subscribe()
    }

    /// Hosts named for direct downloads (`--from`, `connect`), in the order they were added.
    pub fn direct_hosts(&self) -> Vec<SocketAddr> {
        self.node
            .direct_hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Adds a host for direct downloads; `false` if it was there already.
    pub fn add_direct_host(&self, addr: SocketAddr) -> bool {
        let mut hosts = self
            .node
            .direct_hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if hosts.contains(&addr) {
            return false;
        }
        hosts.push(addr);
        true
    }

    /// Removes a host for direct downloads; `false` if it was not there.
    pub fn remove_direct_host(&self, addr: SocketAddr) -> bool {
        let mut hosts = self
            .node
            .direct_hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let before = hosts.len();
        hosts.retain(|h| *h != addr);
        hosts.len() != before
    }

    /// Sends a message to `to`: `host:port`, or a peer id (or unique prefix of one) the index
    /// knows. Returns the address used and the node id that took it. The message is kept
    /// with the received ones, marked `sent`, so a conversation shows both sides.
    pub async fn send_message_to(
        &self,
        to: &str,
        text: &str,
    ) -> Result<(SocketAddr, NodeId), PeerError> {
        let addr = match to.parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => self.peer_addr(to).await?,
        };
        let recipient = self.send_message(addr, text).await?;
        let from = self
            .node
            .session()
            .map_or_else(|| self.node.advertised_addr(), |s| s.addr)
            .to_string();
        self.node.inbox.push(ReceivedMessage {
            from: from.into(),
            node: recipient,
            name: self.node.config.allow_peers.name(recipient),
            remote: addr,
            text: text.into(),
            at: std::time::SystemTime::now(),
            sent: true,
        });
        Ok((addr, recipient))
    }

    /// The address of the registered peer whose id starts with `prefix`.
    async fn peer_addr(&self, prefix: &str) -> Result<SocketAddr, PeerError> {
        let wanted = prefix.to_lowercase();
        let unknown = || PeerError::UnknownRecipient(prefix.to_owned());
        if wanted.is_empty() {
            return Err(unknown());
        }
        let (peers, _) = self.network_peers().await?;
        let matching: Vec<SocketAddr> = peers
            .iter()
            .filter(|p| p.peer_id.to_string().starts_with(&wanted))
            .map(|p| p.addr)
            .collect();
        match matching.as_slice() {
            [one] => Ok(*one),
            [] => Err(unknown()),
            _ => Err(PeerError::AmbiguousPrefix {
                prefix: prefix.to_owned(),
                count: matching.len(),
                what: "peers",
            }),
        }
    }
}

/// Whether `path` is a folder (following links), as [`Path::is_dir`] says, without blocking
/// the reactor on the `stat`.
async fn is_dir(path: &Path) -> bool {
    tokio::fs::metadata(path).await.is_ok_and(|m| m.is_dir())
}

/// Limit on delivering one message.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
