//! [`Peer::start`] wires a peer together; [`PeerHandle`] is what the CLI and shells call.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use p2p_protocol::{
    FileId, FileSummary, NodeId, PeerConversation, PeerRequest, PeerResponse, PeerSummary,
    ProtocolError,
};
use p2p_transport::Tls;
use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use crate::chunk_server::{ChunkServer, ServeStats};
use crate::config::PeerConfig;
use crate::deliveries::Deliveries;
use crate::download::{self, DownloadEvent, DownloadOptions, DownloadReport, EventSink, JobSource};
use crate::downloads::{Downloads, PeerChange, PeerStatus};
use crate::error::PeerError;
use crate::inbox::{Inbox, ReceivedMessage};
use crate::index::set::{LATE_ANSWER_GRACE, next_within};
use crate::index::{IndexLink, IndexState, IndexStatus, Indexes, Session, heartbeat};
use crate::shared_files::{SharedFileInfo, SharedFiles};
use futures::stream::FuturesUnordered;

pub use crate::download::resolve::DownloadRequest;

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
    /// The index servers; none for a peer that works without one (direct downloads only).
    pub indexes: Indexes,
    /// The DHT node (`--dht`), once started (after the first registrations, whose peers it
    /// may join through).
    pub dht: std::sync::OnceLock<crate::dht::PeerDht>,
    inbox: Arc<Inbox>,
    stats: Arc<ServeStats>,
    /// Which client has fetched every chunk of a watched item (`send`).
    pub(crate) deliveries: Arc<Deliveries>,
    shutdown: CancellationToken,
    /// Cancelled first at shutdown: the heartbeat tasks, so none registers again while the
    /// peer is leaving its indexes.
    beats: CancellationToken,
    tasks: TaskTracker,
    /// Download jobs, and the change feed every live view listens to.
    pub downloads: Downloads,
    /// The runtime the peer started on: jobs started from another thread (a shell's) run
    /// there too.
    runtime: tokio::runtime::Handle,
    /// Hosts every download job asks besides the index's (`--from`, `connect`). std Mutex: a
    /// copy or a push, never held across an await.
    direct_hosts: Mutex<Vec<SocketAddr>>,
}

impl Node {
    /// The address we ask the index to hand out for us.
    pub(crate) fn advertised_addr(&self) -> SocketAddr {
        self.config.advertise_addr.unwrap_or(self.local_addr)
    }

    /// The address others know this peer by: as the first index that registered us hands it
    /// out, else as we ask indexes to.
    pub(crate) fn known_addr(&self) -> SocketAddr {
        self.indexes
            .links()
            .iter()
            .find_map(|l| l.session())
            .map_or_else(|| self.advertised_addr(), |s| s.addr)
    }

    /// Registers with every index at once (a peer's start): `Ok` with the links still
    /// registering once one has registered us and [`LATE_ANSWER_GRACE`] has passed (their
    /// heartbeat tasks carry on), or when there is no index. The failed ones are named in
    /// warnings; their heartbeat tasks keep trying. An error only when none registered us.
    async fn register_with_all(&self) -> Result<Vec<Arc<IndexLink>>, PeerError> {
        let links = self.indexes.links();
        let mut pending: FuturesUnordered<_> = links
            .iter()
            .map(|link| async move { (link.clone(), self.register_everything(link).await) })
            .collect();
        let mut first_err = None;
        let mut registered = false;
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let next = next_within(&mut pending, deadline).await;
            let Some((link, result)) = next else { break };
            match result {
                Ok(session) => {
                    registered = true;
                    deadline.get_or_insert(tokio::time::Instant::now() + LATE_ANSWER_GRACE);
                    info!(peer_id = %session.peer_id, addr = %session.addr, server = %link.client.server(), "registered with the index");
                }
                Err(err) => {
                    link.failed(&err);
                    if links.len() > 1 {
                        warn!(server = %link.client.server(), %err, "cannot register with this index server; will keep trying");
                    }
                    first_err.get_or_insert(err);
                }
            }
        }
        // The slow ones: dropped mid-request (their connections with them), registered by
        // their heartbeat tasks from the start.
        drop(pending);
        let still = links
            .iter()
            .filter(|l| l.session().is_none() && !l.is_down())
            .cloned()
            .collect();
        match first_err {
            Some(err) if !registered => Err(err),
            _ => Ok(still),
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
        let shutdown = CancellationToken::new();
        let node = Arc::new(Node {
            indexes: Indexes::new(&config.indexes, config.index_timeout, tls.clone()),
            dht: std::sync::OnceLock::new(),
            config,
            tls,
            local_addr,
            files: SharedFiles::default(),
            inbox,
            stats: Arc::new(ServeStats::default()),
            deliveries: Arc::new(Deliveries::default()),
            beats: shutdown.child_token(),
            shutdown,
            tasks: TaskTracker::new(),
            downloads,
            runtime: tokio::runtime::Handle::current(),
            direct_hosts: Mutex::new(Vec::new()),
        });
        // The DHT first (its failure, a port taken, leaves nothing registered): it joins
        // through the peers the indexes list, which anyone may ask.
        if let Some(settings) = &node.config.dht {
            let index_peers = match node.indexes.list_peers().await {
                Ok((peers, _)) => peers.iter().map(|p| p.addr.ip()).collect(),
                Err(_) => Vec::new(),
            };
            let port = node.advertised_addr().port();
            let dht = crate::dht::PeerDht::start(settings, port, index_peers).await?;
            let _ = node.dht.set(dht);
            let follow = crate::dht::follow_shares(node.clone(), node.shutdown.child_token());
            node.tasks.spawn(follow);
        }
        let registering = match (node.register_with_all().await, &node.config.dht) {
            (Err(err), None) => return Err(err),
            (Err(err), Some(_)) => {
                warn!(%err, "no index server registered this peer; it is found through the DHT until one does");
                Vec::new()
            }
            (Ok(still), _) => still,
        };

        let server = ChunkServer {
            listener,
            tls: node.tls.clone(),
            allowed: node.config.allow_peers.clone(),
            files: node.files.clone(),
            inbox: node.inbox.clone(),
            stats: node.stats.clone(),
            deliveries: node.deliveries.clone(),
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
        for link in node.indexes.links() {
            let first = registering.iter().any(|r| Arc::ptr_eq(r, &link));
            let beats = heartbeat::run(node.clone(), link, first, node.beats.child_token());
            node.tasks.spawn(beats);
        }
        Ok(PeerHandle { node })
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

    /// The first index server's address, if the peer uses one ([`PeerHandle::indexes`] has
    /// them all).
    pub fn server_addr(&self) -> Option<SocketAddr> {
        self.node.indexes.first().map(|l| l.client.server())
    }

    /// The registration with the first index server, if it has us now
    /// ([`PeerHandle::indexes`] has them all).
    pub fn session(&self) -> Option<Session> {
        self.node.indexes.first().and_then(|l| l.session())
    }

    /// Every index server this peer uses, in order, and where it stands with each.
    pub fn indexes(&self) -> Vec<IndexStatus> {
        self.node
            .indexes
            .links()
            .iter()
            .map(|l| l.status())
            .collect()
    }

    /// Registers with one more index server (a ticket's, one found later) and keeps
    /// heartbeating it, in the background: [`PeerHandle::indexes`] shows how it goes. `false`
    /// if the peer uses that address already.
    pub fn add_index(&self, spec: crate::config::IndexSpec) -> bool {
        let Some(link) = self.node.indexes.add(&spec) else {
            return false;
        };
        info!(server = %spec.addr, "adding an index server");
        let node = self.node.clone();
        let beats = self.node.beats.child_token();
        self.spawn(heartbeat::run(node, link, true, beats));
        true
    }

    /// Chunks this peer has served.
    pub fn chunks_served(&self) -> u64 {
        self.node.stats.chunks_served.load(Ordering::Relaxed)
    }

    /// The files and folders this peer shares, one line each (a folder's line has
    /// [`SharedFileInfo::files`]).
    pub fn files(&self) -> Vec<SharedFileInfo> {
        self.node.files.list()
    }

    /// Every file this peer serves, one line each, those inside its folders included.
    pub fn every_file(&self) -> Vec<SharedFileInfo> {
        self.node.files.every_file()
    }

    /// How many files of shared folders are open right now (at most
    /// 256, however many the folders hold).
    pub fn open_folder_files(&self) -> usize {
        self.node.files.open_folder_files()
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

    /// Downloads the file with id (or unique prefix) `id` into `out_dir`, from every peer that
    /// hosts it, then shares it too if [`share_downloads`] is on (the default). Events go to
    /// `events` if given.
    ///
    /// [`share_downloads`]: crate::PeerConfig::share_downloads
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

    /// Downloads what `request` describes (a file or a folder, see
    /// [`DownloadRequest`]) into `out_dir` as one job, outside the registry, as a registry job
    /// does: resolve, the engine, then, if [`share_downloads`] is on (the default), share what
    /// it fetched. A job that ends with files missing is [`PeerError::FilesMissing`].
    ///
    /// [`share_downloads`]: crate::PeerConfig::share_downloads
    pub async fn fetch(
        &self,
        request: DownloadRequest,
        out_dir: &Path,
        events: Option<UnboundedSender<DownloadEvent>>,
        cancel: CancellationToken,
    ) -> Result<DownloadReport, PeerError> {
        let (source, refresh) = self.resolve(&request).await?;
        let (id, folder) = match &source {
            JobSource::File { file_id, .. } => (*file_id, false),
            JobSource::Folder { folder_id, .. } => (FileId(folder_id.0), true),
        };
        let options = DownloadOptions::new(&self.node.config, self.node.tls.clone());
        let events = EventSink::new(events);
        let mut report = download::run(source, out_dir, options, events, refresh, cancel).await?;
        if let Some(shared) = report.shared.take() {
            self.share_fetched(shared).await;
        }
        if let Some(missing) = crate::downloads::shortfall(&report, folder) {
            return Err(PeerError::FilesMissing(missing));
        }
        Ok(DownloadReport {
            file_id: id,
            path: report.path,
            bytes: report.size,
            elapsed: report.elapsed,
            per_host: report.per_host,
        })
    }

    /// The first index server's node id, as its last handshake showed it, or as pinned
    /// (`None` without an index, or before the first connection to an unpinned one).
    pub fn index_node_id(&self) -> Option<NodeId> {
        self.node.indexes.first().and_then(|l| l.node_id())
    }

    /// This peer's node id (what its key proves on every connection).
    pub fn node_id(&self) -> NodeId {
        self.node.tls.node_id()
    }

    /// Sends a short text message to the peer at `to`; returns the node id of the peer that
    /// took it (proved in the TLS handshake). Not kept: front ends call
    /// [`PeerHandle::send_message_to`], which keeps what it sent.
    pub async fn send_message(&self, to: SocketAddr, text: &str) -> Result<NodeId, PeerError> {
        let from = self.node.known_addr().to_string();
        let request = PeerRequest::Message {
            from,
            text: text.to_owned(),
        };
        match self
            .one_request(to, None, &request, MESSAGE_TIMEOUT)
            .await?
        {
            (PeerResponse::MessageReceived {}, recipient) => Ok(recipient),
            _ => Err(PeerError::PeerUnreachable {
                addr: to,
                cause: ProtocolError::Unexpected("expected MessageReceived"),
            }),
        }
    }

    /// Sends `request` to the chunk server at `to` on a connection of its own (the node there
    /// must be `expect`, if given), within the connect timeout and then `timeout` for the
    /// reply, and closes the connection: the reply and the node id that gave it. An `Error`
    /// reply is [`PeerError::PeerUnreachable`] with the remote code.
    pub(crate) async fn one_request(
        &self,
        to: SocketAddr,
        expect: Option<NodeId>,
        request: &PeerRequest,
        timeout: Duration,
    ) -> Result<(PeerResponse, NodeId), PeerError> {
        let unreachable = |cause| PeerError::PeerUnreachable { addr: to, cause };
        let connect = self.node.config.connect_timeout;
        let (mut conn, node) =
            p2p_transport::connect::<PeerConversation>(&self.node.tls, to, expect, connect)
                .await
                .map_err(unreachable)?;
        match conn.request(request, timeout).await.map_err(unreachable)? {
            PeerResponse::Error { code, message } => Err(unreachable(ProtocolError::Remote {
                code,
                message: message.into(),
            })),
            reply => Ok((reply, node)),
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

    /// Files on the network, from every index that answers.
    pub async fn network_files(&self) -> Result<(Vec<FileSummary>, u64), PeerError> {
        self.node.indexes.list_files().await
    }

    /// Files on the network whose names contain every word of `query`, ignoring case, from
    /// every index that answers.
    pub async fn search(&self, query: &str) -> Result<(Vec<FileSummary>, u64), PeerError> {
        self.node.indexes.search(query).await
    }

    /// Peers known to the indexes, one line per node.
    pub async fn network_peers(&self) -> Result<(Vec<PeerSummary>, u64), PeerError> {
        self.node.indexes.list_peers().await
    }

    /// Unregisters from every index (best effort, at once), stops serving and waits for
    /// every task.
    pub async fn shutdown(&self) {
        // No heartbeat task may register again while the peer leaves.
        self.node.beats.cancel();
        let links = self.node.indexes.links();
        futures::future::join_all(links.iter().map(|link| async move {
            let Some(session) = link.session() else {
                return;
            };
            // An index that doesn't answer expires us anyway: not worth holding Ctrl-C up.
            let left = tokio::time::timeout(UNREGISTER_TIMEOUT, link.client.unregister(&session));
            match left.await.unwrap_or(Err(PeerError::Cancelled)) {
                Ok(()) => info!(server = %link.client.server(), "unregistered from the index"),
                Err(err) => {
                    warn!(server = %link.client.server(), %err, "could not unregister from the index")
                }
            }
            link.forget_session();
        }))
        .await;
        if let Some(dht) = self.node.dht.get() {
            dht.shutdown().await;
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
        let indexes = self.indexes();
        PeerStatus {
            node_id: self.node_id(),
            listen_addr: self.local_addr(),
            advertised_addr: indexes.iter().find_map(|i| i.advertised_addr),
            server_addr: self.server_addr(),
            server_node_id: self.index_node_id(),
            registered: indexes.iter().any(|i| i.state == IndexState::Registered),
            indexes,
            files_shared: self.node.files.count() as usize,
            chunks_served: self.chunks_served(),
            downloads_active: self.node.downloads.active(),
            direct_hosts: self.direct_hosts(),
        }
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
        let from = self.node.known_addr().to_string();
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

/// Limit on leaving one index at shutdown.
const UNREGISTER_TIMEOUT: Duration = Duration::from_secs(2);

/// Limit on delivering one message.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
