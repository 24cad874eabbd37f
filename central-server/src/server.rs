//! The index server: [`Server`] turns its config into the connection loop's
//! ([`p2p_transport::serve()`], which accepts, admits, handshakes and waits for requests), and
//! `Handler` answers each request of one connection from the index (`Shared::answer`).

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use p2p_protocol::folder::MAX_FOLDER_PATH_LEN;
use p2p_protocol::{
    ErrorCode, FolderRef, IdPrefix, IndexConversation, IndexRequest, IndexResponse,
    MAX_FILE_NAME_LEN, MAX_FILES_PER_ADD, MAX_LIST_ENTRIES, NodeId, PeerId, ProtocolError,
};
use p2p_transport::serve::{self, MAX_REFUSALS, ServeConfig, Service};
use p2p_transport::slots::{Refusal, Slot, SlotLimits};
use p2p_transport::{ServerConnection, Tls};
use tokio::net::TcpListener;
use tokio::task::JoinError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backlog::Backlog;
use crate::budget::{BODY_TIMEOUT, BufferBudget, FREE_FRAME_LEN, Room};
use crate::config::ServerConfig;
use crate::folders;
use crate::index::{Index, IndexLimits, Located, Search};
use crate::probe::{PROBES_OFF, Prober};
use crate::rate::RateLimit;
use crate::reaper;
use crate::search_queue::SearchQueue;

/// A reply that can't be written within this long (the client stopped reading) closes the
/// connection.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// A reply still being written after this long (counted from its first byte, not from the
/// request's arrival) means a client reading too slowly: when the server is full and nothing
/// idle can make room, such a connection may be closed instead. Replies are at most 2 MiB,
/// well under a second on a LAN.
const SLOW_REPLY: Duration = Duration::from_secs(2);

/// File names a search looks at per hold of the index lock; the lock is let go between slices,
/// so a heartbeat waits for one slice at most, not for a whole search.
const SEARCH_SLICE: usize = 1024;

/// State shared by the accept loop, every handler, the reaper and [`ServerHandle`]s.
#[derive(Debug)]
pub(crate) struct Shared {
    /// std Mutex: every critical section is a few map operations with no `.await` inside, or
    /// one slice of a search.
    index: Mutex<Index>,
    pub(crate) config: ServerConfig,
    started: Instant,
    /// Heartbeats and `AddFile`s received but not yet applied (for the reaper).
    pub(crate) backlog: Arc<Backlog>,
    /// Room for large frames, across connections.
    budget: BufferBudget,
    /// Searches per source address. Its own lock: checked before a search touches the index.
    searches: Mutex<RateLimit>,
    /// The turn to run a search, and the searches waiting for it.
    search_queue: SearchQueue,
    /// Connects back for `Probe`, within its limits.
    prober: Prober,
}

impl Shared {
    /// The state of an index whose key is `tls`'s (it connects back as itself for `Probe`).
    pub(crate) fn new(config: ServerConfig, tls: Tls) -> Self {
        let search_rate = config.search_rate_per_ip.max(1);
        Self {
            index: Mutex::new(Index::new(IndexLimits::from(&config))),
            backlog: Arc::default(),
            budget: BufferBudget::new(config.max_buffered_bytes, config.max_buffered_bytes_per_ip),
            // A burst of twice the rate.
            searches: Mutex::new(RateLimit::new(search_rate.saturating_mul(2), search_rate)),
            search_queue: SearchQueue::new(),
            prober: Prober::new(tls),
            config,
            started: Instant::now(),
        }
    }

    pub(crate) fn index(&self) -> MutexGuard<'_, Index> {
        // A panic while holding the lock would be a bug in Index; the data is still usable.
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets per-address state that no longer limits anyone.
    pub(crate) fn prune(&self, now: std::time::Instant) {
        self.index().prune(now);
        self.searches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .prune(now);
        self.prober.prune(now);
    }
}

/// The index server, bound and ready to run.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    /// The index's key, presented on every connection.
    tls: Tls,
    shared: Arc<Shared>,
}

/// A cheap, cloneable view of a running server, for status displays.
#[derive(Clone, Debug)]
pub struct ServerHandle {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
}

/// A snapshot for `status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerStatus {
    /// Where the server listens.
    pub local_addr: SocketAddr,
    /// Time since start.
    pub uptime: Duration,
    /// Registered peers.
    pub peers: usize,
    /// Distinct files.
    pub files: usize,
    /// Bytes of manifests the index stores, as its budget counts them.
    pub stored_bytes: usize,
    /// The most it may store (`ServerConfig::max_index_bytes`).
    pub max_stored_bytes: usize,
}

impl ServerHandle {
    #[cfg(test)]
    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Counts and uptime.
    pub fn status(&self) -> ServerStatus {
        let index = self.shared.index();
        ServerStatus {
            local_addr: self.local_addr,
            uptime: self.shared.started.elapsed(),
            peers: index.peer_count(),
            files: index.file_count(),
            stored_bytes: index.stored_bytes(),
            max_stored_bytes: index.limits().max_bytes,
        }
    }

    /// Up to [`p2p_protocol::MAX_LIST_ENTRIES`] peers, and the total.
    pub fn list_peers(&self) -> (Vec<p2p_protocol::PeerSummary>, u64) {
        self.shared.index().list_peers(Instant::now().into_std())
    }

    /// Up to [`p2p_protocol::MAX_LIST_ENTRIES`] files, and the total.
    pub fn list_files(&self) -> (Vec<p2p_protocol::FileSummary>, u64) {
        self.shared.index().list_files()
    }
}

impl Server {
    /// A server that will accept on `listener` (bind port 0 in tests and read
    /// [`Server::local_addr`]).
    pub fn new(listener: TcpListener, config: ServerConfig, tls: Tls) -> Self {
        Self {
            listener,
            shared: Arc::new(Shared::new(config, tls.clone())),
            tls,
        }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A view for status displays.
    pub fn handle(&self) -> io::Result<ServerHandle> {
        Ok(ServerHandle {
            shared: self.shared.clone(),
            local_addr: self.local_addr()?,
        })
    }

    /// Serves until `shutdown` is cancelled, then closes every connection and returns once
    /// all of them and the reaper have finished.
    pub async fn run(self, shutdown: CancellationToken) {
        let reaper = tokio::spawn(reaper::run(self.shared.clone(), shutdown.child_token()));
        let config = &self.shared.config;
        let serve_config = ServeConfig {
            slots: SlotLimits {
                max: config.max_connections,
                max_per_ip: config.max_connections_per_ip,
                max_refusals: MAX_REFUSALS,
                slow_after: SLOW_REPLY,
                // A request being answered is never cut off for a newcomer: the index answers
                // quickly, and connections wait here only for a turn or for room.
                fair_share: false,
            },
            first_request_timeout: config.first_request_timeout,
            idle_timeout: config.idle_timeout,
        };
        serve::serve(self.listener, self.tls, serve_config, self.shared, shutdown).await;
        if let Err(err) = reaper.await {
            warn!(%err, "the reaper failed");
        }
    }
}

impl Service for Shared {
    type Handler = Handler;

    /// `limit_exceeded` over the per-address cap, `busy` when every slot is answering a
    /// request.
    fn refusal(&self, refusal: Refusal) -> IndexResponse {
        match refusal {
            Refusal::AddressFull { max } => IndexResponse::Error {
                code: ErrorCode::LimitExceeded,
                message: format!("too many connections from your address (at most {max})"),
            },
            Refusal::Full { max } => IndexResponse::Error {
                code: ErrorCode::Busy,
                message: format!("the index server is busy ({max} connections); try again later"),
            },
        }
    }

    fn handler(self: &Arc<Self>, addr: SocketAddr, node: NodeId) -> Handler {
        Handler {
            shared: self.clone(),
            addr,
            node,
        }
    }
}

/// Answers the requests of one connection.
pub(crate) struct Handler {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// Who the client is, from its TLS handshake.
    node: NodeId,
}

impl serve::Handler for Handler {
    type Conversation = IndexConversation;
    /// Room in the buffer budget for a large request, until it is consumed.
    type Ticket = Option<Room>;
    /// The reply, with the room it needs if large.
    type Reply = (IndexResponse, Option<Room>);

    /// The next request, read once there is room for it if it is large (see `budget.rs`), so
    /// that a client can't make the server buffer 2 MiB, not even before it has said `Hello`.
    async fn receive(
        &mut self,
        conn: &mut ServerConnection<IndexConversation>,
    ) -> Result<Option<(IndexRequest, Option<Room>)>, ProtocolError> {
        let (budget, ip) = (&self.shared.budget, self.addr.ip());
        conn.recv_admitted(FREE_FRAME_LEN, BODY_TIMEOUT, |len| budget.reserve(ip, len))
            .await
    }

    /// [`Shared::answer`], then the room its reply needs if that turns out large. A search
    /// stops once the slot is closed.
    async fn answer(
        &mut self,
        request: IndexRequest,
        room: Option<Room>,
        slot: &Slot,
    ) -> (IndexResponse, Option<Room>) {
        let heartbeat_of = match &request {
            IndexRequest::Heartbeat { peer_id, .. } => Some(*peer_id),
            _ => None,
        };
        let (response, room) = self
            .shared
            .answer(self.addr, self.node, request, room, slot.closed_token())
            .await;
        // This connection carries a live registration, proven by its node id: keep it over
        // unregistered ones when full, for as long as the registration lasts.
        let registered = match (&response, heartbeat_of) {
            (IndexResponse::Registered { peer_id, .. }, _) => Some(*peer_id),
            (IndexResponse::HeartbeatAck {}, heartbeat_of) => heartbeat_of,
            _ => None,
        };
        if let Some(peer_id) = registered {
            let until = Instant::now().into_std() + self.shared.config.heartbeat_timeout;
            slot.privilege(peer_id.0, until);
        }
        if let IndexResponse::Error { code, message } = &response {
            info!(%code, %message, "request refused");
        }
        let room = match room {
            Some(room) => Some(room),
            None => {
                self.shared
                    .room_for(self.addr.ip(), encoded_len_bound(&response))
                    .await
            }
        };
        (response, room)
    }

    /// Sends the reply in its room, then gives back the connection's buffers and the room.
    async fn send(
        &mut self,
        conn: &mut ServerConnection<IndexConversation>,
        (response, room): (IndexResponse, Option<Room>),
    ) -> Result<(), ProtocolError> {
        let sent = conn.send_timeout(&response, SEND_TIMEOUT).await;
        conn.shrink_buffers();
        drop(room);
        sent
    }
}

/// Bytes of field names, map headers and fixed-size fields around each entry of a reply.
const PER_ENTRY: usize = 128;
/// Longest address string, with room to spare.
const ADDR: usize = 64;
/// Bytes per chunk hash of a manifest on the wire (`bin 8` header and 32 bytes).
const PER_HASH: usize = 34;

/// Longest `path` of a `FileSummary`: the folder's name, `/`, the path inside it.
const SUMMARY_PATH: usize = MAX_FILE_NAME_LEN + 1 + MAX_FOLDER_PATH_LEN;

/// At least the encoded size of a `Found` whose manifest has a name of `name_len` bytes and
/// `chunks` chunks, with `hosts` hosts (also of a `FoundFolder` whose head has a name of
/// `name_len` bytes and `chunks` page hashes, and of a `FoundInFolder` with a path of
/// `name_len` bytes and no hashes).
fn found_len_bound(name_len: usize, chunks: usize, hosts: usize) -> usize {
    PER_ENTRY + name_len + chunks * PER_HASH + hosts * (PER_ENTRY + ADDR)
}

/// At least the encoded size of a `Files` reply with `entries` entries, none of them a file
/// inside a folder (so without a `path`).
fn files_len_bound(entries: usize) -> usize {
    search_len_bound(entries, 0)
}

/// At least the encoded size of a `Files` reply to a search over `listed` top-level files and
/// folders and `in_folders` files inside folders (which carry a `path`).
fn search_len_bound(listed: usize, in_folders: usize) -> usize {
    let with_path = in_folders.min(MAX_LIST_ENTRIES);
    let without = listed.min(MAX_LIST_ENTRIES - with_path);
    PER_ENTRY
        + without * (PER_ENTRY + MAX_FILE_NAME_LEN)
        + with_path * (PER_ENTRY + MAX_FILE_NAME_LEN + SUMMARY_PATH)
}

/// At least the encoded size of a `Peers` reply with `entries` entries.
fn peers_len_bound(entries: usize) -> usize {
    PER_ENTRY + entries.min(MAX_LIST_ENTRIES) * (PER_ENTRY + ADDR)
}

/// At least the encoded size of `response`, roughly: what its reply frame will take.
fn encoded_len_bound(response: &IndexResponse) -> usize {
    match response {
        IndexResponse::Found {
            manifest, hosts, ..
        } => found_len_bound(manifest.name.len(), manifest.chunks.len(), hosts.len()),
        IndexResponse::Files { files, .. } => {
            PER_ENTRY
                + files
                    .iter()
                    .map(|f| PER_ENTRY + f.name.len() + f.path.as_ref().map_or(0, String::len))
                    .sum::<usize>()
        }
        IndexResponse::FilesAdded { file_ids } => PER_ENTRY + file_ids.len() * PER_HASH,
        IndexResponse::FoundFolder { head, hosts, .. } => {
            found_len_bound(head.name.len(), head.pages.len(), hosts.len())
        }
        IndexResponse::FoundInFolder { path, hosts, .. } => {
            found_len_bound(path.len(), 1, hosts.len())
        }
        IndexResponse::Peers { peers, .. } => peers_len_bound(peers.len()),
        IndexResponse::Error { message, .. } => PER_ENTRY + message.len(),
        IndexResponse::Probed { message, .. } => PER_ENTRY + ADDR + message.len(),
        _ => PER_ENTRY + ADDR,
    }
}

/// The reply to a search that ran on the blocking pool: a search that panicked is a fault of
/// the server, not of the request.
fn search_reply(joined: Result<IndexResponse, JoinError>) -> IndexResponse {
    joined.unwrap_or_else(|err| IndexResponse::Error {
        code: ErrorCode::Internal,
        message: format!("the search failed: {err}"),
    })
}

impl Shared {
    /// Answers one request from `from`, whose connection proved node id `node`, and returns
    /// the reply with the room it needs, if
    /// large. This is the one path every request takes, in production and in the property
    /// tests. The request's own room is given back as soon as the request is consumed. A
    /// reply that can be large gets its room before it is built: a listing by how many entries
    /// it may have, a `Found` by its manifest's size, a search once it has its turn
    /// ([`Shared::search`]). Everything but a search is a few map operations on the index.
    /// A search running when `stop` fires (its connection was closed) stops at its next slice.
    pub(crate) async fn answer(
        self: &Arc<Self>,
        from: SocketAddr,
        node: NodeId,
        request: IndexRequest,
        request_room: Option<Room>,
        stop: &CancellationToken,
    ) -> (IndexResponse, Option<Room>) {
        // Time of arrival: what a heartbeat proves, however long it waits to be applied.
        let now = Instant::now().into_std();
        let result = match request {
            IndexRequest::Search { query } => {
                drop(request_room);
                return self.search(from, &query, now, stop).await;
            }
            IndexRequest::Lookup { id } => {
                let located = self.locate(&id);
                drop((id, request_room));
                return match located {
                    Err((code, message)) => (IndexResponse::Error { code, message }, None),
                    Ok(located) => self.located_reply(from, located).await,
                };
            }
            IndexRequest::ListFiles {} => {
                drop(request_room);
                let bound = files_len_bound(self.index().listed_count());
                let room = self.room_for(from.ip(), bound).await;
                let (files, total) = self.index().list_files();
                return (IndexResponse::Files { files, total }, room);
            }
            IndexRequest::ListPeers {} => {
                drop(request_room);
                let bound = peers_len_bound(self.index().peer_count());
                let room = self.room_for(from.ip(), bound).await;
                let (peers, total) = self.index().list_peers(now);
                return (IndexResponse::Peers { peers, total }, room);
            }
            IndexRequest::Probe { .. } if !self.config.probes => {
                Err((ErrorCode::Forbidden, PROBES_OFF.to_owned()))
            }
            IndexRequest::Probe { .. } if !self.config.allow_peers.permits(node) => {
                Err((ErrorCode::Forbidden, not_allowed(node)))
            }
            IndexRequest::Probe { port } => {
                drop(request_room);
                return (self.prober.probe(from, node, port, now, stop).await, None);
            }
            IndexRequest::Hello { .. } => Err((
                ErrorCode::BadRequest,
                "Hello was already received".to_owned(),
            )),
            IndexRequest::Register { addr } => self.register(from, node, addr, now),
            // A node taken off the allow-list since it registered: its registration ends at
            // its next change or heartbeat.
            IndexRequest::Heartbeat { peer_id }
            | IndexRequest::AddFile { peer_id, .. }
            | IndexRequest::AddFiles { peer_id, .. }
            | IndexRequest::AddFolder { peer_id, .. }
            | IndexRequest::AddFolderFiles { peer_id, .. }
            | IndexRequest::RemoveFolder { peer_id, .. }
            | IndexRequest::RemoveFile { peer_id, .. }
                if !self.config.allow_peers.permits(node) =>
            {
                if self.index().unregister(peer_id, node).is_ok() {
                    info!(%peer_id, %node, "registration ended: the node is no longer on the allow-list");
                }
                Err((ErrorCode::Forbidden, not_allowed(node)))
            }
            IndexRequest::Heartbeat { peer_id } => {
                let _pending = self.backlog.enter(now);
                self.index()
                    .heartbeat(peer_id, node, now)
                    .map(|()| IndexResponse::HeartbeatAck {})
                    .map_err(refusal)
            }
            IndexRequest::AddFile { peer_id, manifest } => {
                let _pending = self.backlog.enter(now);
                let name = manifest.name.clone();
                self.index()
                    .add_file(peer_id, node, manifest, now)
                    .map(|file_id| {
                        debug!(%peer_id, file = %file_id.fmt_short(), %name, "file added");
                        IndexResponse::FileAdded { file_id }
                    })
                    .map_err(refusal)
            }
            IndexRequest::AddFiles { manifests, .. } if manifests.len() > MAX_FILES_PER_ADD => {
                Err((
                    ErrorCode::BadRequest,
                    format!(
                        "AddFiles carries at most {MAX_FILES_PER_ADD} manifests, this one {}",
                        manifests.len()
                    ),
                ))
            }
            IndexRequest::AddFiles { peer_id, manifests } => {
                let _pending = self.backlog.enter(now);
                let count = manifests.len();
                self.index()
                    .add_files(peer_id, node, manifests, now)
                    .map(|file_ids| {
                        debug!(%peer_id, count, "files added");
                        IndexResponse::FilesAdded { file_ids }
                    })
                    .map_err(refusal)
            }
            IndexRequest::AddFolder { peer_id, head } => {
                let _pending = self.backlog.enter(now);
                let (name, files) = (head.name.clone(), head.files);
                self.index()
                    .add_folder(peer_id, node, head, now)
                    .map(|folder_id| {
                        debug!(%peer_id, folder = %folder_id.fmt_short(), %name, files, "folder added");
                        IndexResponse::FolderAdded { folder_id }
                    })
                    .map_err(refusal)
            }
            IndexRequest::AddFolderFiles {
                peer_id,
                folder_id,
                first_page,
                pages,
            } => {
                // The request's room is held until the pages are stored (below).
                self.add_folder_files(peer_id, node, folder_id, first_page, pages, now)
                    .await
            }
            IndexRequest::RemoveFolder { peer_id, folder_id } => self
                .index()
                .remove_folder(peer_id, node, &folder_id)
                .map(|()| IndexResponse::FolderRemoved { folder_id })
                .map_err(refusal),
            IndexRequest::RemoveFile { peer_id, file_id } => self
                .index()
                .remove_file(peer_id, node, &file_id)
                .map(|()| IndexResponse::FileRemoved { file_id })
                .map_err(refusal),
            IndexRequest::Unregister { peer_id } => self
                .index()
                .unregister(peer_id, node)
                .map(|()| {
                    info!(%peer_id, "peer unregistered");
                    IndexResponse::Unregistered {}
                })
                .map_err(refusal),
        };
        drop(request_room);
        let response =
            result.unwrap_or_else(|(code, message)| IndexResponse::Error { code, message });
        (response, None)
    }

    /// Runs a search from `from` and returns its reply with the room it needs. After the
    /// checks of [`Shared::start_search`], the search takes a place in the queue (refused if
    /// its address already has one waiting, or the queue is full) and waits there, first for
    /// its address's share of the buffer budget (so an address whose own frames fill its share
    /// waits behind them without holding the turn), then for the turn. Only with the turn does
    /// it take room in the total, sized by the index as it is then: a queued search holds
    /// none of the total. It runs on the blocking pool, letting go of the index between
    /// slices.
    async fn search(
        self: &Arc<Self>,
        from: SocketAddr,
        query: &str,
        now: std::time::Instant,
        stop: &CancellationToken,
    ) -> (IndexResponse, Option<Room>) {
        let search = match self.start_search(from, query, now) {
            Ok(search) => search,
            Err((code, message)) => return (IndexResponse::Error { code, message }, None),
        };
        let place = match self.search_queue.enter(from.ip()) {
            Ok(place) => place,
            Err(full) => {
                let refusal = IndexResponse::Error {
                    code: ErrorCode::LimitExceeded,
                    message: full.to_string(),
                };
                return (refusal, None);
            }
        };
        // The share for the largest reply a search may have; the room taken in the total
        // below is sized by the index as it is then.
        let share = self
            .budget
            .share(from.ip(), search_len_bound(0, MAX_LIST_ENTRIES))
            .await;
        let turn = place.turn().await;
        let bound = {
            let index = self.index();
            search_len_bound(index.listed_count(), index.folder_file_count())
        };
        let room = if bound > FREE_FRAME_LEN {
            Some(share.room(bound).await)
        } else {
            None
        };
        let shared = self.clone();
        let stop = stop.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            shared.finish_search(search, &stop)
        })
        .await;
        (search_reply(joined), room)
    }

    /// Room for a reply of up to `len` bytes to `ip`, if it needs any.
    async fn room_for(&self, ip: std::net::IpAddr, len: usize) -> Option<Room> {
        if len > FREE_FRAME_LEN {
            Some(self.budget.reserve(ip, len).await)
        } else {
            None
        }
    }

    /// The file, folder or file inside a folder `id` names, with the hosts to offer; the lock
    /// is let go before the caller copies it into its wire form ([`Shared::located_reply`]).
    fn locate(&self, id: &str) -> Result<Located, (ErrorCode, String)> {
        let prefix = id
            .parse::<IdPrefix>()
            .map_err(|e| (ErrorCode::BadRequest, e.to_string()))?;
        self.index().locate(&prefix).map_err(refusal)
    }

    /// The reply to a `Lookup` that found `located`, built in the room it needs (a manifest
    /// or a head with many hashes is large), outside the index's lock.
    async fn located_reply(
        &self,
        from: SocketAddr,
        located: Located,
    ) -> (IndexResponse, Option<Room>) {
        let bound = match &located {
            Located::File(found) => found_len_bound(
                found.manifest.name().len(),
                found.manifest.chunk_count(),
                found.hosts.len(),
            ),
            Located::Folder { head, hosts, .. } => {
                found_len_bound(head.name().len(), head.pages().len(), hosts.len())
            }
            Located::InFolder { path, hosts, .. } => found_len_bound(path.len(), 1, hosts.len()),
        };
        let room = self.room_for(from.ip(), bound).await;
        let response = match located {
            Located::File(found) => IndexResponse::Found {
                file_id: found.file_id,
                manifest: found.manifest.to_manifest(),
                hosts: found.hosts,
            },
            Located::Folder {
                folder_id,
                head,
                hosts,
            } => IndexResponse::FoundFolder {
                folder_id,
                head: head.to_head(),
                hosts,
            },
            Located::InFolder {
                file_id,
                folder_id,
                path,
                size,
                hosts,
            } => IndexResponse::FoundInFolder {
                file_id,
                folder_id,
                path,
                size,
                hosts,
            },
        };
        (response, room)
    }

    /// `AddFolderFiles`: checks the registration and that it hosts the folder, then each page
    /// against the folder's head on the blocking pool (hashing a 2 MiB request takes a few
    /// milliseconds, and the index's lock is not held meanwhile), then stores them.
    async fn add_folder_files(
        &self,
        peer_id: PeerId,
        node: NodeId,
        folder_id: p2p_protocol::FolderId,
        first_page: u32,
        pages: Vec<Vec<FolderRef>>,
        now: std::time::Instant,
    ) -> Result<IndexResponse, (ErrorCode, String)> {
        let _pending = self.backlog.enter(now);
        let head = self
            .index()
            .folder_for_pages(peer_id, node, &folder_id, now)
            .map_err(refusal)?;
        let checked = tokio::task::spawn_blocking(move || {
            folders::check_pages(folder_id, &head, first_page, pages)
        })
        .await
        .map_err(|err| {
            (
                ErrorCode::Internal,
                format!("checking the pages failed: {err}"),
            )
        })?
        .map_err(|err| refusal(err.into()))?;
        let files = self
            .index()
            .add_folder_files(peer_id, node, checked, now)
            .map_err(refusal)?;
        debug!(%peer_id, folder = %folder_id.fmt_short(), files, "folder files added");
        Ok(IndexResponse::FolderFilesAdded { files })
    }

    /// Checks a search and its sender's rate; the search itself is [`Shared::finish_search`].
    fn start_search(
        &self,
        from: SocketAddr,
        query: &str,
        now: std::time::Instant,
    ) -> Result<Search, (ErrorCode, String)> {
        let refuse = |code, message| (code, message);
        if query.trim().is_empty() || query.len() > p2p_protocol::MAX_QUERY_LEN {
            return Err(refuse(
                ErrorCode::BadRequest,
                format!(
                    "a search needs 1 to {} bytes of text",
                    p2p_protocol::MAX_QUERY_LEN
                ),
            ));
        }
        let allowed = self
            .searches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_take(from.ip(), now);
        if !allowed {
            return Err(refuse(
                ErrorCode::LimitExceeded,
                format!(
                    "your address searches too often (at most {} a second); try again in a moment",
                    self.config.search_rate_per_ip.max(1)
                ),
            ));
        }
        Ok(Search::new(query))
    }

    /// Runs `search` to the end, a slice at a time, letting go of the index between slices, or
    /// until `stop` fires (its connection closed: what was found so far is never sent).
    fn finish_search(&self, mut search: Search, stop: &CancellationToken) -> IndexResponse {
        while !stop.is_cancelled() && !self.index().search_step(&mut search, SEARCH_SLICE) {}
        let (files, total) = search.finish();
        IndexResponse::Files { files, total }
    }

    fn register(
        &self,
        from: SocketAddr,
        node: NodeId,
        addr: SocketAddr,
        now: std::time::Instant,
    ) -> Result<IndexResponse, (ErrorCode, String)> {
        if !self.config.allow_peers.permits(node) {
            return Err((ErrorCode::Forbidden, not_allowed(node)));
        }
        if addr.port() == 0 {
            return Err((
                ErrorCode::BadRequest,
                "peer address must have a non-zero port".to_owned(),
            ));
        }
        // A peer listening on every interface can't know which of its addresses others reach;
        // the one its connection comes from is reachable from here, so use that.
        let addr = if addr.ip().is_unspecified() {
            SocketAddr::new(from.ip().to_canonical(), addr.port())
        } else {
            addr
        };
        let peer_id = self
            .index()
            .register(addr, from.ip().to_canonical(), node, now)
            .map_err(refusal)?;
        info!(%peer_id, %addr, node = %node, "peer registered");
        let config = &self.config;
        Ok(IndexResponse::Registered {
            peer_id,
            addr,
            heartbeat_interval_ms: config.heartbeat_interval.as_millis() as u64,
            heartbeat_timeout_ms: config.heartbeat_timeout.as_millis() as u64,
        })
    }
}

/// The refusal for a node not on the index's allow-list.
fn not_allowed(node: NodeId) -> String {
    format!(
        "this index accepts registrations only from the nodes on its allow-list, and yours \
         ({node}) is not on it; ask its operator to add it"
    )
}

fn refusal(err: crate::index::IndexError) -> (ErrorCode, String) {
    (err.code(), err.to_string())
}

#[cfg(test)]
mod tests {
    use p2p_protocol::codec::decode_body;
    use p2p_protocol::{CHUNK_SIZE, FileManifest, PeerId, Sha256Hash};
    use proptest::prelude::*;

    use super::*;

    const FROM: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4000);

    fn shared() -> Arc<Shared> {
        let config = ServerConfig {
            max_peers: 8,
            max_files_per_peer: 4,
            max_folders_per_peer: 2,
            // A manifest here costs about 700 bytes: these bind.
            max_index_bytes: 6_000,
            max_index_bytes_per_ip: 5_000,
            max_index_bytes_per_peer: 2_000,
            ..ServerConfig::default()
        };
        Arc::new(Shared::new(config, crate::test_tls()))
    }

    /// Runs the answers of one test case.
    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Answers `request` from `node` the way a connection does.
    fn answer(
        runtime: &tokio::runtime::Runtime,
        shared: &Arc<Shared>,
        node: NodeId,
        request: IndexRequest,
    ) -> IndexResponse {
        runtime
            .block_on(shared.answer(FROM, node, request, None, &CancellationToken::new()))
            .0
    }

    /// The `n`th node of a test.
    fn node(n: usize) -> NodeId {
        let mut id = [0u8; 20];
        id[..8].copy_from_slice(&(n as u64).to_be_bytes());
        NodeId(id)
    }

    /// A node that registered nothing.
    const STRANGER: NodeId = NodeId([0xee; 20]);

    /// One step a client may take, with credentials that are real (from an earlier
    /// `Registered`) or forged.
    #[derive(Clone, Debug)]
    enum Op {
        Register(u16),
        Heartbeat(usize, bool),
        AddFile(usize, u8, u64, bool),
        RemoveFile(usize, u8),
        AddFiles(usize, Vec<(u8, u64, bool)>),
        AddFolder(usize, u8, u8),
        AddFolderFiles(usize, u8, u8, bool),
        RemoveFolder(usize, u8),
        Unregister(usize, bool),
        Lookup(String),
        Search(String),
        List,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            any::<u16>().prop_map(Op::Register),
            (any::<usize>(), any::<bool>()).prop_map(|(i, f)| Op::Heartbeat(i, f)),
            (any::<usize>(), any::<u8>(), 0..20_000_000u64, any::<bool>())
                .prop_map(|(i, n, s, ok)| Op::AddFile(i, n, s, ok)),
            (any::<usize>(), any::<u8>()).prop_map(|(i, n)| Op::RemoveFile(i, n)),
            (
                any::<usize>(),
                proptest::collection::vec((any::<u8>(), 0..20_000_000u64, any::<bool>()), 0..5)
            )
                .prop_map(|(i, m)| Op::AddFiles(i, m)),
            (any::<usize>(), 0..4u8, 0..4u8).prop_map(|(i, n, f)| Op::AddFolder(i, n, f)),
            (any::<usize>(), 0..4u8, 0..4u8, any::<bool>())
                .prop_map(|(i, n, f, ok)| Op::AddFolderFiles(i, n, f, ok)),
            (any::<usize>(), 0..4u8).prop_map(|(i, n)| Op::RemoveFolder(i, n)),
            (any::<usize>(), any::<bool>()).prop_map(|(i, f)| Op::Unregister(i, f)),
            "[0-9a-fA-Fz ]{0,70}".prop_map(Op::Lookup),
            ".{0,40}".prop_map(Op::Search),
            Just(Op::List),
        ]
    }

    fn manifest(name: u8, size: u64, consistent: bool) -> FileManifest {
        let chunks =
            FileManifest::chunk_count_for(size, CHUNK_SIZE) as usize + usize::from(!consistent);
        FileManifest {
            name: format!("f{name}"),
            size,
            chunk_size: CHUNK_SIZE,
            chunks: vec![Sha256Hash([name; 32]); chunks],
        }
    }

    /// Folder `name` of `files` files, and its one page as the index gets it (none if empty).
    fn folder(name: u8, files: u8) -> (p2p_protocol::FolderHead, Vec<Vec<FolderRef>>) {
        let files = (0..files)
            .map(|j| (format!("s/x{j}"), manifest(j, 1, true)))
            .map(|(path, mut m)| {
                m.name = path[2..].to_owned();
                (path, m)
            })
            .collect();
        let (head, pages) = p2p_protocol::folder::build(&format!("dir{name}"), files).unwrap();
        let refs = pages
            .iter()
            .map(|p| p2p_protocol::folder::refs(p).unwrap())
            .collect();
        (head, refs)
    }

    /// Registers `node` and returns its peer id.
    fn register(runtime: &tokio::runtime::Runtime, shared: &Arc<Shared>, node: NodeId) -> PeerId {
        let request = IndexRequest::Register {
            addr: "127.0.0.1:9".parse().unwrap(),
        };
        match answer(runtime, shared, node, request) {
            IndexResponse::Registered { peer_id, .. } => peer_id,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_folder_is_added_looked_up_and_its_forged_pages_refused() {
        let (runtime, shared) = (runtime(), shared());
        let me = node(1);
        let peer_id = register(&runtime, &shared, me);
        let (head, pages) = folder(1, 3);
        let reply = answer(
            &runtime,
            &shared,
            me,
            IndexRequest::AddFolder {
                peer_id,
                head: head.clone(),
            },
        );
        let IndexResponse::FolderAdded { folder_id } = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(folder_id, head.id());
        let stored = shared.index().stored_bytes();
        let mut forged = pages.clone();
        forged[0][0].size += 1;
        let add = |pages: Vec<Vec<FolderRef>>| IndexRequest::AddFolderFiles {
            peer_id,
            folder_id,
            first_page: 0,
            pages,
        };
        match answer(&runtime, &shared, me, add(forged)) {
            IndexResponse::Error { code, message } => {
                assert_eq!(code, ErrorCode::InvalidManifest);
                assert_eq!(
                    message,
                    "invalid folder: folder page 0 does not match the folder's record"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(shared.index().stored_bytes(), stored);
        let reply = answer(&runtime, &shared, me, add(pages.clone()));
        assert!(
            matches!(reply, IndexResponse::FolderFilesAdded { files: 3 }),
            "{reply:?}"
        );
        let lookup = |id: String| IndexRequest::Lookup { id };
        match answer(
            &runtime,
            &shared,
            STRANGER,
            lookup(folder_id.to_string()[..8].into()),
        ) {
            IndexResponse::FoundFolder {
                folder_id: found,
                head: got,
                hosts,
            } => {
                assert_eq!((found, got, hosts.len()), (folder_id, head, 1));
            }
            other => panic!("{other:?}"),
        }
        match answer(
            &runtime,
            &shared,
            STRANGER,
            lookup(pages[0][2].file_id.to_string()),
        ) {
            IndexResponse::FoundInFolder { path, size, .. } => {
                assert_eq!((path.as_str(), size), ("s/x2", 1));
            }
            other => panic!("{other:?}"),
        }
        let reply = answer(
            &runtime,
            &shared,
            me,
            IndexRequest::RemoveFolder { peer_id, folder_id },
        );
        assert!(
            matches!(reply, IndexResponse::FolderRemoved { .. }),
            "{reply:?}"
        );
        assert_eq!(shared.index().stored_bytes(), 0);
        // More manifests than one AddFiles may carry.
        let manifests = vec![manifest(1, 1, true); MAX_FILES_PER_ADD + 1];
        match answer(
            &runtime,
            &shared,
            me,
            IndexRequest::AddFiles { peer_id, manifests },
        ) {
            IndexResponse::Error { code, message } => {
                assert_eq!(code, ErrorCode::BadRequest);
                assert_eq!(
                    message,
                    "AddFiles carries at most 1000 manifests, this one 1001"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    /// A node taken off the allow-list loses its registration at its next folder request too.
    #[test]
    fn folder_requests_from_a_node_off_the_allow_list_end_its_registration() {
        let runtime = runtime();
        let me = node(1);
        let list =
            p2p_identity::AllowList::parse(&format!("{me}\n"), std::path::Path::new("allow"))
                .unwrap();
        let allowed = p2p_identity::Allowed::only(list);
        let shared = Arc::new(Shared::new(
            ServerConfig {
                allow_peers: allowed.clone(),
                ..ServerConfig::default()
            },
            crate::test_tls(),
        ));
        let (head, _) = folder(1, 2);
        for request in [
            |peer_id, head| IndexRequest::AddFolder { peer_id, head },
            |peer_id, _| IndexRequest::AddFiles {
                peer_id,
                manifests: vec![],
            },
            |peer_id, head: p2p_protocol::FolderHead| IndexRequest::RemoveFolder {
                peer_id,
                folder_id: head.id(),
            },
            |peer_id, head: p2p_protocol::FolderHead| IndexRequest::AddFolderFiles {
                peer_id,
                folder_id: head.id(),
                first_page: 0,
                pages: vec![],
            },
        ] {
            allowed.replace(
                p2p_identity::AllowList::parse(&format!("{me}\n"), std::path::Path::new("allow"))
                    .unwrap(),
            );
            let peer_id = register(&runtime, &shared, me);
            allowed.replace(
                p2p_identity::AllowList::parse("", std::path::Path::new("allow")).unwrap(),
            );
            let reply = answer(&runtime, &shared, me, request(peer_id, head.clone()));
            assert!(
                matches!(
                    reply,
                    IndexResponse::Error {
                        code: ErrorCode::Forbidden,
                        ..
                    }
                ),
                "{reply:?}"
            );
            assert_eq!(shared.index().peer_count(), 0);
        }
    }

    /// The reply bounds that size the room a large reply takes hold for the largest replies
    /// of each kind.
    #[test]
    fn reply_bounds_cover_the_largest_replies() {
        use p2p_protocol::{FileSummary, FolderHead, FolderId, HostInfo, Sha256Hash};
        let host = HostInfo {
            peer_id: PeerId(u64::MAX),
            addr: "[1111:2222:3333:4444:5555:6666:7777:8888]:65535"
                .parse()
                .unwrap(),
            node_id: NodeId([0xff; 20]),
        };
        let hosts = vec![host; p2p_protocol::MAX_HOSTS_PER_LOOKUP];
        let name = "n".repeat(MAX_FILE_NAME_LEN);
        let replies = [
            IndexResponse::FoundFolder {
                folder_id: FolderId([1; 32]),
                head: FolderHead {
                    name: name.clone(),
                    files: u64::MAX,
                    size: u64::MAX,
                    pages: vec![Sha256Hash([2; 32]); 1024],
                },
                hosts: hosts.clone(),
            },
            IndexResponse::FoundInFolder {
                file_id: p2p_protocol::FileId([1; 32]),
                folder_id: FolderId([1; 32]),
                path: "p".repeat(MAX_FOLDER_PATH_LEN),
                size: u64::MAX,
                hosts,
            },
            IndexResponse::FilesAdded {
                file_ids: vec![p2p_protocol::FileId([1; 32]); MAX_FILES_PER_ADD],
            },
            IndexResponse::Files {
                files: vec![
                    FileSummary {
                        file_id: p2p_protocol::FileId([1; 32]),
                        name: name.clone(),
                        size: u64::MAX,
                        hosts: u32::MAX,
                        files: Some(u64::MAX),
                        path: Some("p".repeat(SUMMARY_PATH)),
                    };
                    MAX_LIST_ENTRIES
                ],
                total: u64::MAX,
            },
        ];
        for reply in replies {
            let len = p2p_protocol::codec::encode_frame(&reply).unwrap().len();
            assert!(encoded_len_bound(&reply) >= len, "{len}");
            assert!(len <= p2p_protocol::MAX_CONTROL_FRAME_LEN, "{len}");
        }
        assert!(search_len_bound(0, MAX_LIST_ENTRIES) >= search_len_bound(MAX_LIST_ENTRIES, 3));
    }

    /// A search that panics (a bug) is answered as the server's fault, not the client's.
    #[tokio::test]
    async fn a_search_that_panics_is_answered_internal() {
        let joined = tokio::task::spawn_blocking(|| -> IndexResponse {
            panic!("a bug in the search (this panic is part of the test)")
        })
        .await;
        let reply = search_reply(joined);
        assert!(
            matches!(
                reply,
                IndexResponse::Error {
                    code: ErrorCode::Internal,
                    ..
                }
            ),
            "{reply:?}"
        );
    }

    /// The largest search rate a configuration can hold is taken as it is (its burst of twice
    /// that used to overflow).
    #[test]
    fn the_largest_search_rate_is_accepted() {
        let shared = Arc::new(Shared::new(
            ServerConfig {
                search_rate_per_ip: u32::MAX,
                ..ServerConfig::default()
            },
            crate::test_tls(),
        ));
        let search = IndexRequest::Search {
            query: "anything".into(),
        };
        let reply = answer(&runtime(), &shared, STRANGER, search);
        assert!(
            matches!(reply, IndexResponse::Files { total: 0, .. }),
            "{reply:?}"
        );
    }

    proptest! {
        #[test]
        fn arbitrary_frames_never_panic_the_handler(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..40)
        ) {
            let (runtime, shared) = (runtime(), shared());
            for frame in frames {
                if let Ok(request) = decode_body::<IndexRequest>(&frame) {
                    let _ = answer(&runtime, &shared, STRANGER, request);
                }
            }
        }

        #[test]
        fn arbitrary_request_sequences_keep_the_index_within_its_caps(
            ops in proptest::collection::vec(op(), 0..200)
        ) {
            let (runtime, shared) = (runtime(), shared());
            // Each registration from a node of its own; a forged request comes from a node
            // that registered nothing.
            let mut creds: Vec<(PeerId, NodeId)> = Vec::new();
            let pick = |creds: &[(PeerId, NodeId)], i: usize, forge: bool| -> (PeerId, NodeId) {
                match creds.get(i % creds.len().max(1)) {
                    Some((id, node)) if !forge => (*id, *node),
                    Some((id, _)) => (*id, STRANGER),
                    None => (PeerId(i as u64), STRANGER),
                }
            };
            for (n, op) in ops.into_iter().enumerate() {
                let (from, request) = match op {
                    Op::Register(port) => (node(n), IndexRequest::Register { addr: SocketAddr::from(([0, 0, 0, 0], port)) }),
                    Op::Heartbeat(i, forge) => {
                        let (peer_id, node) = pick(&creds, i, forge);
                        (node, IndexRequest::Heartbeat { peer_id })
                    }
                    Op::AddFile(i, name, size, ok) => {
                        let (peer_id, node) = pick(&creds, i, false);
                        (node, IndexRequest::AddFile { peer_id, manifest: manifest(name, size, ok) })
                    }
                    Op::RemoveFile(i, name) => {
                        let (peer_id, node) = pick(&creds, i, false);
                        (node, IndexRequest::RemoveFile { peer_id, file_id: manifest(name, 1, true).id() })
                    }
                    Op::AddFiles(i, manifests) => {
                        let (peer_id, node) = pick(&creds, i, false);
                        let manifests = manifests.into_iter().map(|(n, s, ok)| manifest(n, s, ok)).collect();
                        (node, IndexRequest::AddFiles { peer_id, manifests })
                    }
                    Op::AddFolder(i, name, files) => {
                        let (peer_id, node) = pick(&creds, i, false);
                        (node, IndexRequest::AddFolder { peer_id, head: folder(name, files).0 })
                    }
                    Op::AddFolderFiles(i, name, files, ok) => {
                        let (peer_id, node) = pick(&creds, i, false);
                        let (head, mut pages) = folder(name, files);
                        if !ok && let Some(first) = pages.first_mut().and_then(|p| p.first_mut()) {
                            first.size += 1;
                        }
                        (node, IndexRequest::AddFolderFiles { peer_id, folder_id: head.id(), first_page: 0, pages })
                    }
                    Op::RemoveFolder(i, name) => {
                        let (peer_id, node) = pick(&creds, i, false);
                        (node, IndexRequest::RemoveFolder { peer_id, folder_id: folder(name, 1).0.id() })
                    }
                    Op::Unregister(i, forge) => {
                        let (peer_id, node) = pick(&creds, i, forge);
                        (node, IndexRequest::Unregister { peer_id })
                    }
                    Op::Lookup(id) => (STRANGER, IndexRequest::Lookup { id }),
                    Op::Search(query) => (STRANGER, IndexRequest::Search { query }),
                    Op::List => (STRANGER, IndexRequest::ListPeers {}),
                };
                if let IndexResponse::Registered { peer_id, addr, .. } = answer(&runtime, &shared, from, request) {
                    prop_assert!(!addr.ip().is_unspecified(), "handed out {addr}");
                    creds.push((peer_id, from));
                }
                let index = shared.index();
                prop_assert!(index.peer_count() <= 8);
                prop_assert!(index.file_count() <= 8 * 4);
                prop_assert!(index.folder_count() <= 8 * 2);
                prop_assert!(index.stored_bytes() <= 6_000);
                index.check_accounts();
            }
            // Whatever happened, once every peer is gone the index holds nothing.
            for (peer_id, node) in creds {
                let _ = answer(&runtime, &shared, node, IndexRequest::Unregister { peer_id });
            }
            let index = shared.index();
            prop_assert_eq!(index.peer_count(), 0);
            prop_assert_eq!(index.stored_bytes(), 0);
            prop_assert_eq!(index.listed_count(), 0);
            prop_assert_eq!(index.folder_file_count(), 0);
        }
    }
}

/// Over loopback: a real server, a hostile client on 127.0.0.2 and a legitimate one on
/// 127.0.0.1.
#[cfg(test)]
mod hostile_clients {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use p2p_protocol::{
        CHUNK_SIZE, FileManifest, IndexClientConnection, IndexConversation, IndexRequest,
        IndexResponse, Sha256Hash, client_hello,
    };
    use tokio::net::{TcpListener, TcpSocket, TcpStream};
    use tokio_util::sync::CancellationToken;

    use crate::{Server, ServerConfig};

    const HOSTILE: [u8; 4] = [127, 0, 0, 2];
    const FILES: usize = 100_000;
    /// How long the searches hammer the server.
    const HAMMER: Duration = Duration::from_secs(3);
    /// A heartbeat answered later than this fails the test: generous for a debug build on a
    /// loaded machine, far below the 16 to 23 s a server that scans the whole index under its
    /// lock takes here.
    const PROMPT: Duration = Duration::from_millis(2500);

    /// A TCP connection to `server` from the loopback address `source`. (The integration
    /// tests' `support::connect_from`, which these unit tests can't reach.)
    async fn stream_from(source: [u8; 4], server: SocketAddr) -> TcpStream {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((source, 0))).unwrap();
        let stream = socket.connect(server).await.unwrap();
        stream.set_nodelay(true).unwrap();
        stream
    }

    /// A server on a free loopback port, not yet running, with its address and state.
    async fn bound(config: ServerConfig) -> (Server, SocketAddr, Arc<super::Shared>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Server::new(listener, config, crate::test_tls());
        let addr = server.local_addr().unwrap();
        let shared = server.handle().unwrap().shared();
        (server, addr, shared)
    }

    /// A TLS connection to `server` from `source`, as a new node, before any message.
    async fn tls_from(source: [u8; 4], server: SocketAddr) -> p2p_transport::Stream {
        let tcp = stream_from(source, server).await;
        crate::test_tls()
            .secure(tcp, None, Duration::from_secs(10))
            .await
            .unwrap()
            .0
    }

    /// A handshaken index connection from `source`, as a new node.
    async fn connect_from(
        source: [u8; 4],
        server: SocketAddr,
    ) -> IndexClientConnection<p2p_transport::Stream> {
        let stream = tls_from(source, server).await;
        let mut conn = IndexClientConnection::index_client(stream);
        client_hello::<IndexConversation, _>(&mut conn)
            .await
            .unwrap();
        conn
    }

    /// Many files from one address, connections from several addresses sending `Search` as
    /// fast as they can (so that searches are always waiting), and a legitimate peer
    /// heartbeating: every heartbeat is answered promptly and no live peer is expired.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn searches_do_not_hold_back_heartbeats() {
        let config = ServerConfig {
            heartbeat_interval: Duration::from_millis(100),
            heartbeat_timeout: Duration::from_secs(1),
            // The scan itself is under test here, not the rate limit that would refuse most
            // of these searches.
            search_rate_per_ip: 100_000,
            ..ServerConfig::default()
        };
        let (server, addr, shared) = bound(config).await;
        let handle = server.handle().unwrap();
        // The hostile address's peers and files, put straight into the index.
        let hostile_ip = IpAddr::V4(Ipv4Addr::from(HOSTILE));
        let mut hostile = Vec::new();
        {
            let now = tokio::time::Instant::now().into_std();
            let mut index = shared.index();
            for p in 0..FILES / 10_000 {
                let node = p2p_protocol::NodeId(rand::random());
                let id = index
                    .register("127.0.0.2:1".parse().unwrap(), hostile_ip, node, now)
                    .unwrap();
                for f in 0..10_000 {
                    let manifest = FileManifest {
                        name: format!("a file {p}-{f}.bin"),
                        size: 1,
                        chunk_size: CHUNK_SIZE,
                        chunks: vec![Sha256Hash([p as u8; 32])],
                    };
                    index.add_file(id, node, manifest, now).unwrap();
                }
                hostile.push((id, node));
            }
            // Filling took a while: they are all live as of now.
            let now = tokio::time::Instant::now().into_std();
            for (id, node) in &hostile {
                index.heartbeat(*id, *node, now).unwrap();
            }
        }
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        let stop = Arc::new(AtomicBool::new(false));
        // The hostile peers stay alive (straight into the index, off the runtime's workers).
        let keep_alive = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let now = tokio::time::Instant::now().into_std();
                    for (id, node) in &hostile {
                        let _ = shared.index().heartbeat(*id, *node, now);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        let mut searchers = Vec::new();
        for i in 0..6 {
            // One address each: an address may have one search waiting.
            let mut conn = connect_from([127, 0, 0, 2 + i], addr).await;
            let stop = stop.clone();
            searchers.push(tokio::spawn(async move {
                let mut answered = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let query = IndexRequest::Search { query: "a".into() };
                    match conn.request(&query, Duration::from_secs(30)).await {
                        Ok(IndexResponse::Files { .. }) => answered += 1,
                        Ok(other) => panic!("search refused: {other:?}"),
                        Err(_) => break,
                    }
                }
                answered
            }));
        }

        let mut legit = connect_from([127, 0, 0, 1], addr).await;
        let t = Duration::from_secs(30);
        let IndexResponse::Registered { peer_id, .. } = legit
            .request(
                &IndexRequest::Register {
                    addr: "127.0.0.1:9".parse().unwrap(),
                },
                t,
            )
            .await
            .unwrap()
        else {
            panic!("not registered")
        };
        let started = std::time::Instant::now();
        let mut slowest = Duration::ZERO;
        while started.elapsed() < HAMMER {
            let sent = std::time::Instant::now();
            let reply = legit
                .request(&IndexRequest::Heartbeat { peer_id }, t)
                .await
                .unwrap();
            assert!(
                matches!(reply, IndexResponse::HeartbeatAck {}),
                "live peer expired: {reply:?}"
            );
            slowest = slowest.max(sent.elapsed());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let mut searches = 0;
        for searcher in searchers {
            searches += searcher.await.unwrap();
        }
        keep_alive.join().unwrap();
        assert!(searches > 0, "no search was answered");
        assert!(
            slowest < PROMPT,
            "a heartbeat waited {slowest:?} behind {searches} searches"
        );
        assert_eq!(
            handle.status().peers,
            FILES / 10_000 + 1,
            "a live peer was expired"
        );
        shutdown.cancel();
        task.await.unwrap();
    }

    /// Searches waiting for their turn behind a long one are being answered, not read slowly:
    /// on a full server, however long they wait, none is closed for a newcomer (which is told
    /// `busy`), and each gets its reply once the turn comes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn searches_waiting_their_turn_are_not_closed_for_a_newcomer() {
        use p2p_protocol::{ErrorCode, ProtocolError};

        let config = ServerConfig {
            max_connections: 3,
            ..ServerConfig::default()
        };
        let (server, addr, shared) = bound(config).await;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        // A long search holds the one turn.
        let turn = shared.search_queue.hold_turn().await;
        // Three addresses (one search may wait per address) fill the server with searches
        // that wait for it.
        let mut searchers = Vec::new();
        for last in [4, 5, 6] {
            let mut conn = connect_from([127, 0, 0, last], addr).await;
            searchers.push(tokio::spawn(async move {
                let query = IndexRequest::Search { query: "a".into() };
                conn.request(&query, Duration::from_secs(30)).await
            }));
        }
        // Longer than a reply may take to be written before it counts as slow.
        tokio::time::sleep(super::SLOW_REPLY + Duration::from_secs(1)).await;

        let stream = tls_from([127, 0, 0, 3], addr).await;
        let mut newcomer = IndexClientConnection::index_client(stream);
        let refused = client_hello::<IndexConversation, _>(&mut newcomer).await;
        assert!(
            matches!(
                refused,
                Err(ProtocolError::Remote {
                    code: ErrorCode::Busy,
                    ..
                })
            ),
            "{refused:?}"
        );
        drop(turn);
        for searcher in searchers {
            let reply = searcher.await.unwrap();
            assert!(
                matches!(reply, Ok(IndexResponse::Files { .. })),
                "a waiting search was cut off: {reply:?}"
            );
        }
        shutdown.cancel();
        task.await.unwrap();
    }

    /// Searches waiting for their turn hold none of the buffer budget's total, however many
    /// there are: a large request from another address is answered meanwhile. One address may
    /// have one search waiting and the server `MAX_WAITING_SEARCHES`; searches beyond that
    /// are refused at once with `limit_exceeded`, and the waiting ones are answered in turn.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_searches_hold_no_room_and_are_bounded() {
        use p2p_protocol::{ErrorCode, MAX_CHUNKS_PER_FILE};
        use tokio::sync::mpsc;

        use crate::search_queue::MAX_WAITING_SEARCHES;

        const FILES: u64 = 1000;
        let config = ServerConfig {
            // Raised to their floors: two largest frames in all, one per address.
            max_buffered_bytes: 0,
            max_buffered_bytes_per_ip: 0,
            heartbeat_timeout: Duration::from_secs(60),
            ..ServerConfig::default()
        };
        let (server, addr, shared) = bound(config).await;
        // Enough files that a search's reply may take about 383 KB, so it needs room.
        {
            let now = tokio::time::Instant::now().into_std();
            let mut index = shared.index();
            let node = p2p_protocol::NodeId(rand::random());
            let id = index
                .register(
                    "10.9.9.9:1".parse().unwrap(),
                    [10, 9, 9, 9].into(),
                    node,
                    now,
                )
                .unwrap();
            for f in 0..FILES {
                let manifest = FileManifest {
                    name: format!("file {f}.bin"),
                    size: f + 1,
                    chunk_size: CHUNK_SIZE,
                    chunks: vec![Sha256Hash([1; 32])],
                };
                index.add_file(id, node, manifest, now).unwrap();
            }
        }
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        let full = shared.budget.available();
        // Searches wait as long as the test holds the turn.
        let turn = shared.search_queue.hold_turn().await;

        let (replies, mut replied) = mpsc::unbounded_channel();
        let search = |source: [u8; 4]| {
            let replies = replies.clone();
            tokio::spawn(async move {
                let mut conn = connect_from(source, addr).await;
                let query = IndexRequest::Search {
                    query: "file".into(),
                };
                let reply = conn.request(&query, Duration::from_secs(60)).await;
                replies.send(reply.unwrap()).unwrap();
                // Keep the connection until the test is done with the server.
                conn
            })
        };
        let t = Duration::from_secs(10);
        let refusal = |reply: &IndexResponse, says: &str| match reply {
            IndexResponse::Error {
                code: ErrorCode::LimitExceeded,
                message,
            } => assert!(message.contains(says), "{message}"),
            other => panic!("expected limit_exceeded, got {other:?}"),
        };
        let mut searchers = vec![search(HOSTILE)];
        let deadline = std::time::Instant::now() + t;
        while shared.search_queue.waiting() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the search never queued"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // A second search from the same address is refused at once.
        searchers.push(search(HOSTILE));
        let reply = tokio::time::timeout(t, replied.recv()).await.unwrap();
        refusal(&reply.unwrap(), "your address already has a search waiting");
        // More addresses than places: the rest are refused at once.
        let more = MAX_WAITING_SEARCHES + 6;
        for i in 0..more {
            searchers.push(search([127, 0, 1, i as u8]));
        }
        for _ in 0..more + 1 - MAX_WAITING_SEARCHES {
            let reply = tokio::time::timeout(t, replied.recv()).await.unwrap();
            refusal(&reply.unwrap(), "searches waiting");
        }
        assert_eq!(shared.search_queue.waiting(), MAX_WAITING_SEARCHES);
        assert_eq!(
            shared.budget.available(),
            full,
            "waiting searches hold room in the total"
        );

        // Meanwhile a peer elsewhere adds the largest manifest (about 1.1 MB).
        let mut legit = connect_from([127, 0, 0, 1], addr).await;
        let IndexResponse::Registered { peer_id, .. } = legit
            .request(
                &IndexRequest::Register {
                    addr: "127.0.0.1:9".parse().unwrap(),
                },
                t,
            )
            .await
            .unwrap()
        else {
            panic!("not registered")
        };
        let manifest = FileManifest {
            name: "big.bin".into(),
            size: u64::from(MAX_CHUNKS_PER_FILE) * u64::from(CHUNK_SIZE),
            chunk_size: CHUNK_SIZE,
            chunks: vec![Sha256Hash([5; 32]); MAX_CHUNKS_PER_FILE as usize],
        };
        let add = IndexRequest::AddFile { peer_id, manifest };
        let reply = legit.request(&add, t).await.unwrap();
        assert!(
            matches!(reply, IndexResponse::FileAdded { .. }),
            "{reply:?}"
        );

        // Given the turn, every waiting search is answered, each in its turn.
        drop(turn);
        for _ in 0..MAX_WAITING_SEARCHES {
            let reply = tokio::time::timeout(Duration::from_secs(60), replied.recv())
                .await
                .expect("a waiting search was not answered")
                .unwrap();
            assert!(
                matches!(reply, IndexResponse::Files { total: FILES, .. }),
                "{reply:?}"
            );
        }
        let deadline = std::time::Instant::now() + t;
        while shared.budget.available() != full {
            assert!(std::time::Instant::now() < deadline, "room not given back");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(searchers);
        shutdown.cancel();
        task.await.unwrap();
    }

    /// Connections that announce the largest frame and then stall take at most their
    /// address's share of the buffer budget, whatever their number; a large request from
    /// another address is still read and answered, and the room comes back after each reply.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stalled_large_frames_take_one_share_of_the_buffer_budget() {
        use tokio::io::AsyncWriteExt;

        use p2p_protocol::{MAX_CHUNKS_PER_FILE, MAX_CONTROL_FRAME_LEN};

        let config = ServerConfig {
            // Raised to their floors: one largest frame per address, two in all.
            max_buffered_bytes: 0,
            max_buffered_bytes_per_ip: 0,
            ..ServerConfig::default()
        };
        let (server, addr, shared) = bound(config).await;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        let full = shared.budget.available();
        let frame = MAX_CONTROL_FRAME_LEN + p2p_protocol::codec::HEADER_LEN;
        assert_eq!(full, 2 * frame);

        // Ten hostile connections each announce a 2 MiB request and send 100 bytes of it, half
        // of them before they have even said `Hello`.
        let mut stalled = Vec::new();
        for i in 0..10 {
            let mut stream = tls_from(HOSTILE, addr).await;
            let hello = IndexRequest::Hello {
                version: p2p_protocol::PROTOCOL_VERSION,
            };
            let mut partial = if i % 2 == 0 {
                p2p_protocol::codec::encode_frame(&hello).unwrap()
            } else {
                Vec::new()
            };
            partial.extend_from_slice(&(MAX_CONTROL_FRAME_LEN as u32).to_be_bytes());
            partial.extend_from_slice(&[0x81; 100]);
            stream.write_all(&partial).await.unwrap();
            stalled.push(stream);
        }
        // Every one of them has reached the budget (holds room or waits for it): one holds
        // its address's share, the others wait behind it.
        let hostile_ip = IpAddr::V4(Ipv4Addr::from(HOSTILE));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while shared.budget.users(hostile_ip) < stalled.len() {
            assert!(
                std::time::Instant::now() < deadline,
                "only {} of the stalled frames reached the budget",
                shared.budget.users(hostile_ip)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(shared.budget.available(), full - frame);

        // A peer elsewhere adds the largest manifest (about 1.1 MB): it gets the rest.
        let mut legit = connect_from([127, 0, 0, 1], addr).await;
        let t = Duration::from_secs(10);
        let IndexResponse::Registered { peer_id, .. } = legit
            .request(
                &IndexRequest::Register {
                    addr: "127.0.0.1:9".parse().unwrap(),
                },
                t,
            )
            .await
            .unwrap()
        else {
            panic!("not registered")
        };
        let manifest = FileManifest {
            name: "big.bin".into(),
            size: u64::from(MAX_CHUNKS_PER_FILE) * u64::from(CHUNK_SIZE),
            chunk_size: CHUNK_SIZE,
            chunks: vec![Sha256Hash([5; 32]); MAX_CHUNKS_PER_FILE as usize],
        };
        let reply = legit
            .request(&IndexRequest::AddFile { peer_id, manifest }, t)
            .await
            .unwrap();
        assert!(
            matches!(reply, IndexResponse::FileAdded { .. }),
            "{reply:?}"
        );
        // Its room came back with the reply; the stalled ones still hold one share.
        assert_eq!(shared.budget.available(), full - frame);
        drop(stalled);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while shared.budget.available() != full {
            assert!(std::time::Instant::now() < deadline, "room not given back");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shutdown.cancel();
        task.await.unwrap();
    }
}
