//! The chunk server: answers `GetManifest` and `GetChunk` for the files this peer shares,
//! reading straight from the original files, and takes `Message`s for the user. Every
//! connection is TLS; the client's node id comes from its handshake.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use p2p_protocol::handshake::HANDSHAKE_TIMEOUT;
use p2p_protocol::{
    ErrorCode, FileId, NodeId, PeerConversation, PeerRequest, PeerResponse, PeerServerConnection,
    ProtocolError,
};
use p2p_protocol::{MAX_MESSAGE_LEN, MAX_SENDER_LEN};
use p2p_storage::{ChunkRange, SourceFile, StorageError};
use p2p_transport::accept::{accept, next_request, refuse, welcome};
use p2p_transport::slots::{Admission, Slot, SlotLimits, SlotTable};
use p2p_transport::{Stream, Tls};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::inbox::{Inbox, ReceivedMessage};
use crate::shared_files::SharedFiles;

/// A chunk that can't be written within this long (the client stopped reading) closes the
/// connection.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Refused connections being answered at once; more are closed without a reply.
const MAX_REFUSALS: usize = 64;

/// A chunk still being sent after this long means a client reading too slowly (4 MiB take
/// well under a second on a LAN, 3.5 s at 10 Mbit/s): when the server is full and nothing idle
/// can make room, such a connection is closed first.
const SLOW_REPLY: Duration = Duration::from_secs(10);

/// How long a refused client may take over its TLS handshake, then its `Hello`, before it is
/// told `busy`.
const BUSY_HELLO_WAIT: Duration = Duration::from_secs(2);

/// A chunk's data is read from the file and sent in pieces of this size, so a connection
/// sending a chunk holds this much, not the whole chunk.
const SEND_PIECE: usize = 256 * 1024;

/// Counters a chunk server keeps, for status displays and tests.
#[derive(Debug, Default)]
pub struct ServeStats {
    /// Chunks sent.
    pub chunks_served: AtomicU64,
    /// Chunk bytes sent.
    pub bytes_served: AtomicU64,
}

/// What one chunk server needs.
pub(crate) struct ChunkServer {
    pub listener: TcpListener,
    pub tls: Tls,
    /// Who may download and send messages.
    pub allowed: p2p_identity::Allowed,
    pub files: SharedFiles,
    pub inbox: Arc<Inbox>,
    pub stats: Arc<ServeStats>,
    pub max_inbound: usize,
    pub max_inbound_per_ip: usize,
    pub idle_timeout: Duration,
    pub first_request_timeout: Duration,
}

impl ChunkServer {
    /// Serves until `shutdown`; spawned connection tasks go on `tasks`.
    pub async fn run(self, shutdown: CancellationToken, tasks: TaskTracker) {
        let slots = SlotTable::new(SlotLimits {
            max: self.max_inbound,
            max_per_ip: self.max_inbound_per_ip,
            max_refusals: MAX_REFUSALS,
            slow_after: SLOW_REPLY,
            // Downloads keep their connections busy back to back, never idle and rarely slow:
            // without this, two addresses could hold every slot for good.
            fair_share: true,
        });
        while let Some((tcp, addr)) = accept(&self.listener, &shutdown).await {
            // When full, the longest-idle connection makes room, or one of an address holding
            // far more than the newcomer's; refuse rather than queue when none can: the
            // downloader has other hosts to try.
            let slot = match slots.admit(addr.ip(), std::time::Instant::now(), &shutdown) {
                Admission::Admitted(slot) => slot,
                Admission::Refused(refusal, place) => {
                    debug!(client = %addr, ?refusal, "connection refused");
                    let tls = self.tls.clone();
                    tasks.spawn(async move {
                        let Ok((stream, _)) = tls.accept(tcp, BUSY_HELLO_WAIT).await else {
                            return;
                        };
                        let mut conn = PeerServerConnection::peer_server(stream);
                        let reply = PeerResponse::Error {
                            code: ErrorCode::Busy,
                            message: "too many downloads from this peer right now".into(),
                        };
                        refuse(&mut conn, &reply, BUSY_HELLO_WAIT).await;
                        drop(place);
                    });
                    continue;
                }
                Admission::Dropped => continue,
            };
            let tls = self.tls.clone();
            let allowed = self.allowed.clone();
            let inbox = self.inbox.clone();
            let files = self.files.clone();
            let stats = self.stats.clone();
            let (idle_timeout, first_request_timeout) =
                (self.idle_timeout, self.first_request_timeout);
            tasks.spawn(
                async move {
                    // The handshake holds the slot, within its deadline: a client that stalls
                    // in it is dropped like one that sends no request.
                    let handshake = tokio::select! {
                        biased;
                        _ = slot.closed() => return,
                        shaken = tls.accept(tcp, HANDSHAKE_TIMEOUT) => shaken,
                    };
                    let (stream, client) = match handshake {
                        Ok(done) => done,
                        Err(err) => {
                            info!(%err, "TLS handshake failed");
                            return;
                        }
                    };
                    let handler = Handler {
                        conn: PeerServerConnection::peer_server(stream),
                        remote: addr,
                        client,
                        allowed,
                        inbox,
                        files,
                        stats,
                        idle_timeout,
                        first_request_timeout,
                        slot,
                        piece: Vec::new(),
                    };
                    if let Err(err) = handler.run().await {
                        info!(%err, "connection dropped");
                    }
                }
                .instrument(info_span!("serve", client = %addr)),
            );
        }
    }
}

struct Handler {
    conn: PeerServerConnection<Stream>,
    remote: std::net::SocketAddr,
    /// Who the client is, from its TLS handshake.
    client: NodeId,
    /// Who may ask anything.
    allowed: p2p_identity::Allowed,
    inbox: Arc<Inbox>,
    files: SharedFiles,
    stats: Arc<ServeStats>,
    idle_timeout: Duration,
    first_request_timeout: Duration,
    /// Busy while a request is answered, writing while its reply is sent; closed when the
    /// server needs the room for another client, or shuts down.
    slot: Slot,
    /// The buffer a chunk is read into piece by piece; allocated on the first chunk.
    piece: Vec<u8>,
}

impl Handler {
    async fn run(mut self) -> Result<(), ProtocolError> {
        if !welcome::<PeerConversation, _>(&mut self.conn, &self.slot).await? {
            return Ok(());
        }
        // Closing the slot (to make room for another client, or shutdown) also ends a reply
        // that is being sent too slowly.
        let closed = self.slot.closed_token().clone();
        // Never longer than the idle timeout: shortening that shortens both.
        let mut wait = self.first_request_timeout.min(self.idle_timeout);
        while let Some(request) =
            next_request::<PeerConversation, _>(&mut self.conn, &self.slot, wait).await?
        {
            tokio::select! {
                biased;
                _ = closed.cancelled() => return Ok(()),
                answered = self.answer(request) => answered?,
            }
            self.slot.idle(std::time::Instant::now());
            wait = self.idle_timeout;
        }
        Ok(())
    }

    /// Answers one request, and sends the reply; the slot is writing from the reply's first
    /// byte.
    async fn answer(&mut self, request: PeerRequest) -> Result<(), ProtocolError> {
        match self.respond(request).await {
            Reply::Chunk {
                file_id,
                index,
                file,
                range,
            } => {
                self.slot.writing(std::time::Instant::now());
                let send = self.send_chunk(file_id, index, file, range);
                tokio::time::timeout(SEND_TIMEOUT, send)
                    .await
                    .map_err(|_| ProtocolError::Timeout(SEND_TIMEOUT))??;
                self.stats.chunks_served.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .bytes_served
                    .fetch_add(range.len as u64, Ordering::Relaxed);
            }
            Reply::Message(response) => {
                if let PeerResponse::Error { code, message } = &response {
                    debug!(%code, %message, "request refused");
                }
                self.slot.writing(std::time::Instant::now());
                self.conn.send_timeout(&response, SEND_TIMEOUT).await?
            }
        }
        Ok(())
    }

    /// Sends `Chunk` and then the chunk's data, read from the file piece by piece on a
    /// blocking thread (a read may wait for the disk, which must never stall the reactor).
    /// A file that turns out shorter than its manifest ends the connection: the announced
    /// data can't be completed.
    async fn send_chunk(
        &mut self,
        file_id: FileId,
        index: u32,
        file: Arc<SourceFile>,
        range: ChunkRange,
    ) -> Result<(), ProtocolError> {
        let size = u32::try_from(range.len).expect("a chunk is at most CHUNK_SIZE");
        self.conn
            .send(&PeerResponse::Chunk {
                file_id,
                index,
                size,
            })
            .await?;
        let mut piece = std::mem::take(&mut self.piece);
        piece.resize(SEND_PIECE.min(range.len), 0);
        let mut sent = 0;
        while sent < range.len {
            let len = SEND_PIECE.min(range.len - sent);
            let (at, source) = (range.offset + sent as u64, file.clone());
            let (returned, read) = tokio::task::spawn_blocking(move || {
                let read = source.read_at(&mut piece[..len], at);
                (piece, read)
            })
            .await
            .map_err(std::io::Error::other)?;
            piece = returned;
            if let Err(err) = read {
                if matches!(err, StorageError::FileChanged(_)) {
                    self.files.withdraw_changed(&file_id);
                }
                return Err(ProtocolError::Io(std::io::Error::other(err.to_string())));
            }
            self.conn.send_chunk_data(&piece[..len]).await?;
            sent += len;
        }
        self.conn.flush().await?;
        self.piece = piece;
        Ok(())
    }

    async fn respond(&self, request: PeerRequest) -> Reply {
        if !matches!(request, PeerRequest::Hello { .. }) && !self.allowed.permits(self.client) {
            return Reply::Message(error(
                ErrorCode::Forbidden,
                format!(
                    "this peer serves only the nodes on its allow-list, and yours ({}) is not on \
                     it; ask its user to add it",
                    self.client
                ),
            ));
        }
        match request {
            PeerRequest::GetChunk { file_id, index } => self.chunk(file_id, index).await,
            PeerRequest::GetManifest { file_id } => Reply::Message(self.manifest(file_id)),
            PeerRequest::Message { from, text } => Reply::Message(self.message(from, text)),
            PeerRequest::Hello { .. } => Reply::Message(error(
                ErrorCode::BadRequest,
                "Hello was already received".into(),
            )),
        }
    }

    /// Answers `Message`: keeps it in the inbox for the user.
    fn message(&self, from: String, text: String) -> PeerResponse {
        if text.is_empty() || text.len() > MAX_MESSAGE_LEN || from.len() > MAX_SENDER_LEN {
            return error(
                ErrorCode::BadRequest,
                format!(
                    "a message needs 1 to {MAX_MESSAGE_LEN} bytes of text and a sender of at most {MAX_SENDER_LEN} bytes"
                ),
            );
        }
        self.inbox.push(ReceivedMessage {
            from: from.into(),
            node: self.client,
            name: self.allowed.name(self.client),
            remote: self.remote,
            text: text.into(),
            at: std::time::SystemTime::now(),
        });
        PeerResponse::MessageReceived {}
    }

    /// Answers `GetManifest`.
    fn manifest(&self, file_id: FileId) -> PeerResponse {
        match self.files.get(&file_id) {
            Some(file) if file.check_unchanged().is_err() => {
                self.files.withdraw_changed(&file_id);
                error(
                    ErrorCode::FileUnavailable,
                    format!("{file_id} changed on this peer's disk and is no longer shared"),
                )
            }
            Some(file) => PeerResponse::Manifest {
                file_id,
                manifest: file.manifest().clone(),
            },
            None => error(
                ErrorCode::UnknownFile,
                format!("this peer does not share {file_id}"),
            ),
        }
    }

    /// Answers `GetChunk`: where the chunk lies in the shared file, or an error reply.
    async fn chunk(&self, file_id: FileId, index: u32) -> Reply {
        let Some(file) = self.files.get(&file_id) else {
            return Reply::Message(error(
                ErrorCode::UnknownFile,
                format!("this peer does not share {file_id}"),
            ));
        };
        // The metadata check and the read-ahead hint touch the disk: off the reactor.
        let shared = file.clone();
        let prepared = tokio::task::spawn_blocking(move || shared.prepare_chunk(index)).await;
        let refusal = match prepared {
            Ok(Ok(range)) => {
                return Reply::Chunk {
                    file_id,
                    index,
                    file,
                    range,
                };
            }
            Ok(Err(err @ StorageError::ChunkOutOfRange { .. })) => {
                error(ErrorCode::ChunkOutOfRange, err.to_string())
            }
            Ok(Err(StorageError::FileChanged(_))) => {
                self.files.withdraw_changed(&file_id);
                error(
                    ErrorCode::FileUnavailable,
                    format!("{file_id} changed on this peer's disk and is no longer shared"),
                )
            }
            Ok(Err(err)) => {
                warn!(%err, "cannot read chunk");
                error(ErrorCode::Internal, format!("cannot read chunk {index}"))
            }
            Err(join) => error(ErrorCode::Internal, format!("chunk read failed: {join}")),
        };
        Reply::Message(refusal)
    }
}

/// What the handler sends back for one request.
enum Reply {
    /// A message frame.
    Message(PeerResponse),
    /// A `Chunk` frame and its data, read from the shared file.
    Chunk {
        file_id: FileId,
        index: u32,
        file: Arc<SourceFile>,
        range: ChunkRange,
    },
}

fn error(code: ErrorCode, message: String) -> PeerResponse {
    PeerResponse::Error { code, message }
}
