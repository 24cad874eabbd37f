//! The accept loop ([`Server`]) and the per-connection [`Handler`], mini-redis style.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use p2p_protocol::accept::{accept, await_request, next_request_reply, refuse};
use p2p_protocol::handshake::{HANDSHAKE_TIMEOUT, answer_hello};
use p2p_protocol::slots::{Admission, Refusal, Slot, SlotLimits, SlotTable};
use p2p_protocol::{
    ErrorCode, IdPrefix, IndexConversation, IndexRequest, IndexResponse, IndexServerConnection,
    MAX_FILE_NAME_LEN, MAX_LIST_ENTRIES, ProtocolError,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span};

use crate::backlog::Backlog;
use crate::budget::{BODY_TIMEOUT, BufferBudget, FREE_FRAME_LEN, Room};
use crate::config::ServerConfig;
use crate::index::{Found, Index, IndexLimits, Search};
use crate::rate::RateLimit;
use crate::reaper;

/// A reply that can't be written within this long (the client stopped reading) closes the
/// connection.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a refused client may take to send its `Hello` before the refusal goes out.
const REFUSE_HELLO_WAIT: Duration = Duration::from_secs(2);

/// Refusals being answered at once; beyond that a connection is closed without a reply.
const MAX_REFUSALS: usize = 64;

/// A reply still being written after this long means a client reading too slowly: when the
/// server is full and nothing idle can make room, such a connection may be closed instead.
/// Replies are at most 2 MiB, well under a second on a LAN.
const SLOW_REPLY: Duration = Duration::from_secs(2);

/// File names a search looks at per hold of the index lock; the lock is let go between slices,
/// so a heartbeat waits for one slice at most, not for a whole search.
const SEARCH_SLICE: usize = 1024;

/// Searches that run at once. They run on the blocking pool, off the threads that serve
/// connections; the rest wait their turn in order.
const CONCURRENT_SEARCHES: usize = 1;

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
    /// Turns to run a search.
    search_turns: Arc<Semaphore>,
}

impl Shared {
    pub(crate) fn new(config: ServerConfig) -> Self {
        let search_rate = config.search_rate_per_ip.max(1);
        Self {
            index: Mutex::new(Index::new(IndexLimits::from(&config))),
            backlog: Arc::default(),
            budget: BufferBudget::new(config.max_buffered_bytes, config.max_buffered_bytes_per_ip),
            searches: Mutex::new(RateLimit::new(2 * search_rate, search_rate)),
            search_turns: Arc::new(Semaphore::new(CONCURRENT_SEARCHES)),
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
    }
}

/// The index server, bound and ready to run.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
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
    pub fn new(listener: TcpListener, config: ServerConfig) -> Self {
        Self {
            listener,
            shared: Arc::new(Shared::new(config)),
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
        let tasks = TaskTracker::new();
        tasks.spawn(reaper::run(self.shared.clone(), shutdown.child_token()));
        let config = &self.shared.config;
        let slots = SlotTable::new(SlotLimits {
            max: config.max_connections,
            max_per_ip: config.max_connections_per_ip,
            max_refusals: MAX_REFUSALS,
            slow_after: SLOW_REPLY,
        });
        // Accept first, then decide: a full server closes its longest-idle connection for the
        // newcomer, or tells it why not, rather than leaving it unseen in the backlog.
        while let Some((stream, addr)) = accept(&self.listener, &shutdown).await {
            let slot = match slots.admit(addr.ip(), Instant::now().into_std(), &shutdown) {
                Admission::Admitted(slot) => slot,
                Admission::Refused(refusal, place) => {
                    debug!(client = %addr, ?refusal, "connection refused");
                    tasks.spawn(async move {
                        refuse_connection(stream, refusal).await;
                        drop(place);
                    });
                    continue;
                }
                Admission::Dropped => continue,
            };
            let handler = Handler {
                shared: self.shared.clone(),
                conn: IndexServerConnection::index_server(stream),
                addr,
                slot,
            };
            tasks.spawn(
                async move {
                    match handler.run().await {
                        Ok(()) => debug!("connection closed"),
                        Err(err) => info!(%err, "connection dropped"),
                    }
                }
                .instrument(info_span!("conn", client = %addr)),
            );
        }
        tasks.close();
        tasks.wait().await;
    }
}

/// Answers a connection the server can't take with an `Error` after its `Hello` (so the reply
/// is not lost to a reset), and closes it: `limit_exceeded` over the per-address cap, `busy`
/// when every slot is answering a request.
async fn refuse_connection(stream: TcpStream, refusal: Refusal) {
    let mut conn = IndexServerConnection::index_server(stream);
    let reply = match refusal {
        Refusal::AddressFull { max } => IndexResponse::Error {
            code: ErrorCode::LimitExceeded,
            message: format!("too many connections from your address (at most {max})"),
        },
        Refusal::Full { max } => IndexResponse::Error {
            code: ErrorCode::Busy,
            message: format!("the index server is busy ({max} connections); try again later"),
        },
    };
    refuse(&mut conn, &reply, REFUSE_HELLO_WAIT).await;
}

/// Serves one connection: handshake, then one response per request.
struct Handler {
    shared: Arc<Shared>,
    conn: IndexServerConnection<TcpStream>,
    addr: SocketAddr,
    /// Closed when the server needs the room for another client, or shuts down.
    slot: Slot,
}

impl Handler {
    async fn run(mut self) -> Result<(), ProtocolError> {
        if !self.handshake().await? {
            return Ok(());
        }
        let config = self.shared.config.clone();
        // Never longer than the idle timeout: an operator who shortens that shortens both.
        let mut wait = config.first_request_timeout.min(config.idle_timeout);
        let ip = self.addr.ip();
        loop {
            let received = await_request(
                &self.slot,
                wait,
                next_request(&mut self.conn, &self.shared, ip),
            )
            .await;
            let Some((request, room)) =
                next_request_reply::<IndexConversation, _, _>(&mut self.conn, received).await?
            else {
                return Ok(());
            };
            let heartbeat_of = match &request {
                IndexRequest::Heartbeat { peer_id, .. } => Some(*peer_id),
                _ => None,
            };
            let (response, reply_room) = self.answer(request, room).await;
            // This connection carries a live registration, proven by its token: keep it over
            // unregistered ones when full, for as long as the registration lasts.
            let registered = match (&response, heartbeat_of) {
                (IndexResponse::Registered { peer_id, .. }, _) => Some(*peer_id),
                (IndexResponse::HeartbeatAck {}, heartbeat_of) => heartbeat_of,
                _ => None,
            };
            if let Some(peer_id) = registered {
                let until = Instant::now().into_std() + config.heartbeat_timeout;
                self.slot.privilege(peer_id.0, until);
            }
            if let IndexResponse::Error { code, message } = &response {
                info!(%code, %message, "request refused");
            }
            // Closing the slot (to make room for another client, or shutdown) also ends a
            // reply that is being written too slowly.
            let closed = self.slot.closed_token().clone();
            tokio::select! {
                biased;
                _ = closed.cancelled() => return Ok(()),
                sent = self.send(&response, reply_room) => sent?,
            }
            self.slot.idle(Instant::now().into_std());
            wait = config.idle_timeout;
        }
    }

    /// `server_hello`, with the first frame read like any other (a large one waits for room),
    /// so that a client can't make the server buffer 2 MiB before it has even said `Hello`.
    /// `Ok(false)` when the slot was closed first (to make room, or shutdown).
    async fn handshake(&mut self) -> Result<bool, ProtocolError> {
        let closed = self.slot.closed_token().clone();
        let ip = self.addr.ip();
        let shake = async {
            let received = tokio::time::timeout(
                HANDSHAKE_TIMEOUT,
                next_request(&mut self.conn, &self.shared, ip),
            )
            .await;
            let (first, room) = match received {
                Err(_) => (Err(ProtocolError::Timeout(HANDSHAKE_TIMEOUT)), None),
                Ok(Ok(Some((first, room)))) => (Ok(first), room),
                Ok(Ok(None)) => (Err(ProtocolError::Closed), None),
                Ok(Err(err)) => (Err(err), None),
            };
            self.conn.shrink_buffers();
            drop(room);
            answer_hello::<IndexConversation, _>(&mut self.conn, first).await
        };
        tokio::select! {
            biased;
            _ = closed.cancelled() => Ok(false),
            shaken = shake => shaken.map(|()| true),
        }
    }

    /// Answers one request, and returns it with the room its reply needs, if large. The
    /// request's own room is given back as soon as the request is consumed. A reply that can
    /// be large gets its room before it is built: a search or a listing by how many entries it
    /// may have, a `Found` by its manifest's size. A search runs on the blocking pool, one at a
    /// time, letting go of the index between slices; everything else is a few map operations.
    async fn answer(
        &mut self,
        request: IndexRequest,
        request_room: Option<Room>,
    ) -> (IndexResponse, Option<Room>) {
        // Time of arrival: what a heartbeat proves, however long it waits to be applied.
        let arrived = Instant::now().into_std();
        match request {
            IndexRequest::Search { query } => {
                self.release(request_room);
                let search = match self.shared.start_search(self.addr, &query, arrived) {
                    Ok(search) => search,
                    Err(refusal) => return (refusal, None),
                };
                let room = self.room_for(self.shared.list_len_bound(false)).await;
                let turn = self.shared.search_turns.clone().acquire_owned().await;
                let shared = self.shared.clone();
                let response = tokio::task::spawn_blocking(move || {
                    let _turn = turn;
                    shared.finish_search(search)
                })
                .await
                .unwrap_or_else(|err| IndexResponse::Error {
                    code: ErrorCode::BadRequest,
                    message: format!("the search failed: {err}"),
                });
                (response, room)
            }
            IndexRequest::Lookup { id } => {
                let found = self.shared.lookup(&id);
                drop(id);
                self.release(request_room);
                match found {
                    Err(refusal) => (refusal, None),
                    Ok(found) => {
                        let room = self.room_for(found_len_bound(&found)).await;
                        // The copy into the wire form, outside the lock and inside the room.
                        let response = IndexResponse::Found {
                            file_id: found.file_id,
                            manifest: found.manifest.to_manifest(),
                            hosts: found.hosts,
                        };
                        (response, room)
                    }
                }
            }
            request @ (IndexRequest::ListFiles {} | IndexRequest::ListPeers {}) => {
                self.release(request_room);
                let peers = matches!(request, IndexRequest::ListPeers {});
                let room = self.room_for(self.shared.list_len_bound(peers)).await;
                (self.shared.respond(self.addr, request, arrived), room)
            }
            request => {
                let pending = matches!(
                    request,
                    IndexRequest::Heartbeat { .. } | IndexRequest::AddFile { .. }
                )
                .then(|| self.shared.backlog.enter(arrived));
                let response = self.shared.respond(self.addr, request, arrived);
                drop(pending);
                self.release(request_room);
                (response, None)
            }
        }
    }

    /// Gives back the room a request took, after shrinking the buffers it grew.
    fn release(&mut self, room: Option<Room>) {
        if room.is_some() {
            self.conn.shrink_buffers();
        }
        drop(room);
    }

    /// Room for a reply of up to `len` bytes, if it needs any.
    async fn room_for(&self, len: usize) -> Option<Room> {
        if len > FREE_FRAME_LEN {
            Some(self.shared.budget.reserve(self.addr.ip(), len).await)
        } else {
            None
        }
    }

    /// Sends `response` (in `room` if it got one; otherwise making room first if it turns out
    /// large), then shrinks the connection's buffers and gives the room back.
    async fn send(
        &mut self,
        response: &IndexResponse,
        room: Option<Room>,
    ) -> Result<(), ProtocolError> {
        let room = match room {
            Some(room) => Some(room),
            None => self.room_for(encoded_len_bound(response)).await,
        };
        let sent = self.conn.send_timeout(response, SEND_TIMEOUT).await;
        self.conn.shrink_buffers();
        drop(room);
        sent
    }
}

/// The next request on `conn`, read once there is room for it if it is large (see
/// `budget.rs`).
async fn next_request(
    conn: &mut IndexServerConnection<TcpStream>,
    shared: &Shared,
    ip: std::net::IpAddr,
) -> Result<Option<(IndexRequest, Option<Room>)>, ProtocolError> {
    conn.recv_admitted(FREE_FRAME_LEN, BODY_TIMEOUT, |len| {
        shared.budget.reserve(ip, len)
    })
    .await
}

/// Bytes of field names, map headers and fixed-size fields around each entry of a reply.
const PER_ENTRY: usize = 128;
/// Longest address string, with room to spare.
const ADDR: usize = 64;
/// Bytes per chunk hash of a manifest on the wire (`bin 8` header and 32 bytes).
const PER_HASH: usize = 34;

/// At least the encoded size of a `Found` for `found`.
fn found_len_bound(found: &Found) -> usize {
    PER_ENTRY
        + found.manifest.name().len()
        + found.manifest.chunk_count() * PER_HASH
        + found.hosts.len() * (PER_ENTRY + ADDR)
}

/// At least the encoded size of `response`, roughly: what its reply frame will take.
fn encoded_len_bound(response: &IndexResponse) -> usize {
    match response {
        IndexResponse::Found {
            manifest, hosts, ..
        } => {
            PER_ENTRY
                + manifest.name.len()
                + manifest.chunks.len() * PER_HASH
                + hosts.len() * (PER_ENTRY + ADDR)
        }
        IndexResponse::Files { files, .. } => {
            PER_ENTRY
                + files
                    .iter()
                    .map(|f| PER_ENTRY + f.name.len())
                    .sum::<usize>()
        }
        IndexResponse::Peers { peers, .. } => PER_ENTRY + peers.len() * (PER_ENTRY + ADDR),
        IndexResponse::Error { message, .. } => PER_ENTRY + message.len(),
        _ => PER_ENTRY + ADDR,
    }
}

impl Shared {
    /// Answers one request from `from`. Pure bookkeeping on the index: no I/O.
    /// `now` is when the request arrived.
    pub(crate) fn respond(
        &self,
        from: SocketAddr,
        request: IndexRequest,
        now: std::time::Instant,
    ) -> IndexResponse {
        let result = match request {
            IndexRequest::Hello { .. } => Err((
                ErrorCode::BadRequest,
                "Hello was already received".to_owned(),
            )),
            IndexRequest::Register { addr } => self.register(from, addr, now),
            IndexRequest::Heartbeat { peer_id, token } => self
                .index()
                .heartbeat(peer_id, &token, now)
                .map(|()| IndexResponse::HeartbeatAck {})
                .map_err(refusal),
            IndexRequest::AddFile {
                peer_id,
                token,
                manifest,
            } => {
                let name = manifest.name.clone();
                self.index()
                    .add_file(peer_id, &token, manifest, now)
                    .map(|file_id| {
                        debug!(%peer_id, file = %file_id.fmt_short(), %name, "file added");
                        IndexResponse::FileAdded { file_id }
                    })
                    .map_err(refusal)
            }
            IndexRequest::RemoveFile {
                peer_id,
                token,
                file_id,
            } => self
                .index()
                .remove_file(peer_id, &token, &file_id)
                .map(|()| IndexResponse::FileRemoved { file_id })
                .map_err(refusal),
            IndexRequest::Unregister { peer_id, token } => self
                .index()
                .unregister(peer_id, &token)
                .map(|()| {
                    info!(%peer_id, "peer unregistered");
                    IndexResponse::Unregistered {}
                })
                .map_err(refusal),
            IndexRequest::Lookup { id } => {
                return match self.lookup(&id) {
                    Ok(found) => IndexResponse::Found {
                        file_id: found.file_id,
                        manifest: found.manifest.to_manifest(),
                        hosts: found.hosts,
                    },
                    Err(refusal) => refusal,
                };
            }
            IndexRequest::ListFiles {} => {
                let (files, total) = self.index().list_files();
                Ok(IndexResponse::Files { files, total })
            }
            IndexRequest::Search { query } => {
                return match self.start_search(from, &query, now) {
                    Ok(search) => self.finish_search(search),
                    Err(refusal) => refusal,
                };
            }
            IndexRequest::ListPeers {} => {
                let (peers, total) = self.index().list_peers(now);
                Ok(IndexResponse::Peers { peers, total })
            }
        };
        result.unwrap_or_else(|(code, message)| IndexResponse::Error { code, message })
    }

    /// The file `id` names, with the hosts to offer; the lock is let go before the caller
    /// copies the manifest into its wire form.
    fn lookup(&self, id: &str) -> Result<Found, IndexResponse> {
        let refuse = |(code, message)| IndexResponse::Error { code, message };
        let prefix = id
            .parse::<IdPrefix>()
            .map_err(|e| refuse((ErrorCode::BadRequest, e.to_string())))?;
        self.index()
            .lookup(&prefix)
            .map_err(|err| refuse(refusal(err)))
    }

    /// At least the encoded size of a `Files` (or with `peers`, a `Peers`) reply now.
    fn list_len_bound(&self, peers: bool) -> usize {
        let index = self.index();
        if peers {
            PER_ENTRY + index.peer_count().min(MAX_LIST_ENTRIES) * (PER_ENTRY + ADDR)
        } else {
            PER_ENTRY + index.file_count().min(MAX_LIST_ENTRIES) * (PER_ENTRY + MAX_FILE_NAME_LEN)
        }
    }

    /// Checks a search and its sender's rate; the search itself is [`Shared::finish_search`].
    fn start_search(
        &self,
        from: SocketAddr,
        query: &str,
        now: std::time::Instant,
    ) -> Result<Search, IndexResponse> {
        let refuse = |code, message| IndexResponse::Error { code, message };
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

    /// Runs `search` to the end, a slice at a time, letting go of the index between slices.
    fn finish_search(&self, mut search: Search) -> IndexResponse {
        while !self.index().search_step(&mut search, SEARCH_SLICE) {}
        let (files, total) = search.finish();
        IndexResponse::Files { files, total }
    }

    fn register(
        &self,
        from: SocketAddr,
        addr: SocketAddr,
        now: std::time::Instant,
    ) -> Result<IndexResponse, (ErrorCode, String)> {
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
        let (peer_id, token) = self
            .index()
            .register(addr, from.ip().to_canonical(), now)
            .map_err(refusal)?;
        info!(%peer_id, %addr, "peer registered");
        let config = &self.config;
        Ok(IndexResponse::Registered {
            peer_id,
            token,
            addr,
            heartbeat_interval_ms: config.heartbeat_interval.as_millis() as u64,
            heartbeat_timeout_ms: config.heartbeat_timeout.as_millis() as u64,
        })
    }
}

fn refusal(err: crate::index::IndexError) -> (ErrorCode, String) {
    (err.code(), err.to_string())
}

#[cfg(test)]
mod tests {
    use p2p_protocol::codec::decode_body;
    use p2p_protocol::{CHUNK_SIZE, FileManifest, PeerId, Sha256Hash, Token};
    use proptest::prelude::*;

    use super::*;

    const FROM: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4000);

    fn shared() -> Shared {
        let config = ServerConfig {
            max_peers: 8,
            max_files_per_peer: 4,
            // A manifest here costs about 700 bytes: these bind.
            max_index_bytes: 6_000,
            max_index_bytes_per_ip: 5_000,
            max_index_bytes_per_peer: 2_000,
            ..ServerConfig::default()
        };
        Shared::new(config)
    }

    /// One step a client may take, with credentials that are real (from an earlier
    /// `Registered`) or forged.
    #[derive(Clone, Debug)]
    enum Op {
        Register(u16),
        Heartbeat(usize, bool),
        AddFile(usize, u8, u64, bool),
        RemoveFile(usize, u8),
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

    proptest! {
        #[test]
        fn arbitrary_frames_never_panic_the_handler(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..40)
        ) {
            let shared = shared();
            for frame in frames {
                if let Ok(request) = decode_body::<IndexRequest>(&frame) {
                    let _ = shared.respond(FROM, request, std::time::Instant::now());
                }
            }
        }

        #[test]
        fn arbitrary_request_sequences_keep_the_index_within_its_caps(
            ops in proptest::collection::vec(op(), 0..200)
        ) {
            let shared = shared();
            let mut creds: Vec<(PeerId, Token)> = Vec::new();
            let pick = |creds: &[(PeerId, Token)], i: usize, forge: bool| -> (PeerId, Token) {
                match creds.get(i % creds.len().max(1)) {
                    Some((id, token)) if !forge => (*id, *token),
                    Some((id, _)) => (*id, Token([0xee; 32])),
                    None => (PeerId(i as u64), Token([0; 32])),
                }
            };
            for op in ops {
                let request = match op {
                    Op::Register(port) => IndexRequest::Register { addr: SocketAddr::from(([0, 0, 0, 0], port)) },
                    Op::Heartbeat(i, forge) => {
                        let (peer_id, token) = pick(&creds, i, forge);
                        IndexRequest::Heartbeat { peer_id, token }
                    }
                    Op::AddFile(i, name, size, ok) => {
                        let (peer_id, token) = pick(&creds, i, false);
                        IndexRequest::AddFile { peer_id, token, manifest: manifest(name, size, ok) }
                    }
                    Op::RemoveFile(i, name) => {
                        let (peer_id, token) = pick(&creds, i, false);
                        IndexRequest::RemoveFile { peer_id, token, file_id: manifest(name, 1, true).id() }
                    }
                    Op::Unregister(i, forge) => {
                        let (peer_id, token) = pick(&creds, i, forge);
                        IndexRequest::Unregister { peer_id, token }
                    }
                    Op::Lookup(id) => IndexRequest::Lookup { id },
                    Op::Search(query) => IndexRequest::Search { query },
                    Op::List => IndexRequest::ListPeers {},
                };
                if let IndexResponse::Registered { peer_id, token, addr, .. } = shared.respond(FROM, request, std::time::Instant::now()) {
                    prop_assert!(!addr.ip().is_unspecified(), "handed out {addr}");
                    creds.push((peer_id, token));
                }
                let index = shared.index();
                prop_assert!(index.peer_count() <= 8);
                prop_assert!(index.file_count() <= 8 * 4);
                prop_assert!(index.stored_bytes() <= 6_000);
                index.check_accounts();
            }
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
    /// A heartbeat answered later than this fails the test: generous for a loaded machine,
    /// far below what a server that scans the whole index under its lock takes.
    const PROMPT: Duration = Duration::from_millis(750);

    async fn connect_from(source: [u8; 4], server: SocketAddr) -> IndexClientConnection<TcpStream> {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((source, 0))).unwrap();
        let stream = socket.connect(server).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut conn = IndexClientConnection::index_client(stream);
        client_hello::<IndexConversation, _>(&mut conn)
            .await
            .unwrap();
        conn
    }

    /// Many files from one address, several connections from it sending `Search` as fast as
    /// they can, and a legitimate peer heartbeating: every heartbeat is answered promptly and
    /// no live peer is expired.
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
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Server::new(listener, config);
        let addr = server.local_addr().unwrap();
        let handle = server.handle().unwrap();
        let shared = handle.shared();
        // The hostile address's peers and files, put straight into the index.
        let hostile_ip = IpAddr::V4(Ipv4Addr::from(HOSTILE));
        let mut hostile = Vec::new();
        {
            let now = tokio::time::Instant::now().into_std();
            let mut index = shared.index();
            for p in 0..FILES / 10_000 {
                let (id, token) = index
                    .register("127.0.0.2:1".parse().unwrap(), hostile_ip, now)
                    .unwrap();
                for f in 0..10_000 {
                    let manifest = FileManifest {
                        name: format!("a file {p}-{f}.bin"),
                        size: 1,
                        chunk_size: CHUNK_SIZE,
                        chunks: vec![Sha256Hash([p as u8; 32])],
                    };
                    index.add_file(id, &token, manifest, now).unwrap();
                }
                hostile.push((id, token));
            }
            // Filling took a while: they are all live as of now.
            let now = tokio::time::Instant::now().into_std();
            for (id, token) in &hostile {
                index.heartbeat(*id, token, now).unwrap();
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
                    for (id, token) in &hostile {
                        let _ = shared.index().heartbeat(*id, token, now);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        let mut searchers = Vec::new();
        for _ in 0..6 {
            let mut conn = connect_from(HOSTILE, addr).await;
            let stop = stop.clone();
            searchers.push(tokio::spawn(async move {
                let mut answered = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let query = IndexRequest::Search { query: "a".into() };
                    match conn.request(&query, Duration::from_secs(30)).await {
                        Ok(_) => answered += 1,
                        Err(_) => break,
                    }
                }
                answered
            }));
        }

        let mut legit = connect_from([127, 0, 0, 1], addr).await;
        let t = Duration::from_secs(30);
        let IndexResponse::Registered { peer_id, token, .. } = legit
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
                .request(&IndexRequest::Heartbeat { peer_id, token }, t)
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
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Server::new(listener, config);
        let addr = server.local_addr().unwrap();
        let shared = server.handle().unwrap().shared();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        let full = shared.budget.available();
        let frame = MAX_CONTROL_FRAME_LEN + p2p_protocol::codec::HEADER_LEN;
        assert_eq!(full, 2 * frame);

        // Ten hostile connections each announce a 2 MiB request and send 100 bytes of it, half
        // of them before they have even said `Hello`.
        let mut stalled = Vec::new();
        for i in 0..10 {
            let socket = TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::from((HOSTILE, 0))).unwrap();
            let mut stream = socket.connect(addr).await.unwrap();
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
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while shared.budget.available() == full {
            assert!(
                std::time::Instant::now() < deadline,
                "no frame was admitted"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Give the others every chance to be admitted too: they must not be.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(shared.budget.available(), full - frame);

        // A peer elsewhere adds the largest manifest (about 1.1 MB): it gets the rest.
        let mut legit = connect_from([127, 0, 0, 1], addr).await;
        let t = Duration::from_secs(10);
        let IndexResponse::Registered { peer_id, token, .. } = legit
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
            .request(
                &IndexRequest::AddFile {
                    peer_id,
                    token,
                    manifest,
                },
                t,
            )
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
