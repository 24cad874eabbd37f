//! The accept loop ([`Server`]) and the per-connection [`Handler`], mini-redis style.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use p2p_protocol::accept::{accept, next_request, refuse, welcome};
use p2p_protocol::slots::{Admission, Refusal, Slot, SlotLimits, SlotTable};
use p2p_protocol::{
    ErrorCode, IdPrefix, IndexConversation, IndexRequest, IndexResponse, IndexServerConnection,
    ProtocolError,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span};

use crate::config::ServerConfig;
use crate::index::{Index, IndexLimits};
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

/// State shared by the accept loop, every handler, the reaper and [`ServerHandle`]s.
#[derive(Debug)]
pub(crate) struct Shared {
    /// std Mutex: every critical section is a few map operations with no `.await` inside.
    index: Mutex<Index>,
    pub(crate) config: ServerConfig,
    started: Instant,
}

impl Shared {
    pub(crate) fn index(&self) -> MutexGuard<'_, Index> {
        // A panic while holding the lock would be a bug in Index; the data is still usable.
        self.index.lock().unwrap_or_else(|e| e.into_inner())
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
        let limits = IndexLimits {
            max_peers: config.max_peers,
            max_files_per_peer: config.max_files_per_peer,
            max_peers_per_ip: config.max_peers_per_ip,
        };
        Self {
            listener,
            shared: Arc::new(Shared {
                index: Mutex::new(Index::new(limits)),
                config,
                started: Instant::now(),
            }),
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
        if !welcome::<IndexConversation, _>(&mut self.conn, &self.slot).await? {
            return Ok(());
        }
        let config = &self.shared.config;
        // Never longer than the idle timeout: an operator who shortens that shortens both.
        let mut wait = config.first_request_timeout.min(config.idle_timeout);
        while let Some(request) =
            next_request::<IndexConversation, _>(&mut self.conn, &self.slot, wait).await?
        {
            let heartbeat_of = match &request {
                IndexRequest::Heartbeat { peer_id, .. } => Some(*peer_id),
                _ => None,
            };
            let response = self.shared.respond(self.addr, request);
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
            tokio::select! {
                biased;
                _ = self.slot.closed() => return Ok(()),
                sent = self.conn.send_timeout(&response, SEND_TIMEOUT) => sent?,
            }
            self.slot.idle(Instant::now().into_std());
            wait = config.idle_timeout;
        }
        Ok(())
    }
}

impl Shared {
    /// Answers one request from `from`. Pure bookkeeping on the index: no I/O.
    pub(crate) fn respond(&self, from: SocketAddr, request: IndexRequest) -> IndexResponse {
        let now = Instant::now().into_std();
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
            IndexRequest::Lookup { id } => id
                .parse::<IdPrefix>()
                .map_err(|e| (ErrorCode::BadRequest, e.to_string()))
                .and_then(|prefix| self.index().lookup(&prefix).map_err(refusal))
                .map(|found| IndexResponse::Found {
                    file_id: found.file_id,
                    manifest: (*found.manifest).clone(),
                    hosts: found.hosts,
                }),
            IndexRequest::ListFiles {} => {
                let (files, total) = self.index().list_files();
                Ok(IndexResponse::Files { files, total })
            }
            IndexRequest::Search { query } => {
                if query.trim().is_empty() || query.len() > p2p_protocol::MAX_QUERY_LEN {
                    Err((
                        ErrorCode::BadRequest,
                        format!(
                            "a search needs 1 to {} bytes of text",
                            p2p_protocol::MAX_QUERY_LEN
                        ),
                    ))
                } else {
                    let (files, total) = self.index().search(&query);
                    Ok(IndexResponse::Files { files, total })
                }
            }
            IndexRequest::ListPeers {} => {
                let (peers, total) = self.index().list_peers(now);
                Ok(IndexResponse::Peers { peers, total })
            }
        };
        result.unwrap_or_else(|(code, message)| IndexResponse::Error { code, message })
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
            ..ServerConfig::default()
        };
        Shared {
            index: Mutex::new(Index::new(IndexLimits {
                max_peers: config.max_peers,
                max_files_per_peer: config.max_files_per_peer,
                max_peers_per_ip: config.max_peers_per_ip,
            })),
            config,
            started: Instant::now(),
        }
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
                    let _ = shared.respond(FROM, request);
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
                if let IndexResponse::Registered { peer_id, token, addr, .. } = shared.respond(FROM, request) {
                    prop_assert!(!addr.ip().is_unspecified(), "handed out {addr}");
                    creds.push((peer_id, token));
                }
                let index = shared.index();
                prop_assert!(index.peer_count() <= 8);
                prop_assert!(index.file_count() <= 8 * 4);
            }
        }
    }
}
