//! The chunk server: answers `GetManifest` and `GetChunk` for the files this peer shares,
//! reading straight from the original files.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use p2p_protocol::accept::{accept, next_request, refuse, welcome};
use p2p_protocol::slots::{Admission, Slot, SlotLimits, SlotTable};
use p2p_protocol::{
    ErrorCode, FileId, PeerConversation, PeerRequest, PeerResponse, PeerServerConnection,
    ProtocolError,
};
use p2p_protocol::{MAX_MESSAGE_LEN, MAX_SENDER_LEN};
use p2p_storage::{ChunkRange, SourceFile, StorageError};
use tokio::net::{TcpListener, TcpStream};
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

/// How long a refused client may take to send its `Hello` before it is told `busy`.
const BUSY_HELLO_WAIT: Duration = Duration::from_secs(2);

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
        while let Some((stream, addr)) = accept(&self.listener, &shutdown).await {
            let mut conn = PeerServerConnection::peer_server(stream);
            // When full, the longest-idle connection makes room, or one of an address holding
            // far more than the newcomer's; refuse rather than queue when none can: the
            // downloader has other hosts to try.
            let slot = match slots.admit(addr.ip(), std::time::Instant::now(), &shutdown) {
                Admission::Admitted(slot) => slot,
                Admission::Refused(refusal, place) => {
                    debug!(client = %addr, ?refusal, "connection refused");
                    tasks.spawn(async move {
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
            let handler = Handler {
                conn,
                remote: addr,
                inbox: self.inbox.clone(),
                files: self.files.clone(),
                stats: self.stats.clone(),
                idle_timeout: self.idle_timeout,
                first_request_timeout: self.first_request_timeout,
                slot,
            };
            tasks.spawn(
                async move {
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
    conn: PeerServerConnection<TcpStream>,
    remote: std::net::SocketAddr,
    inbox: Arc<Inbox>,
    files: SharedFiles,
    stats: Arc<ServeStats>,
    idle_timeout: Duration,
    first_request_timeout: Duration,
    /// Busy while a request is answered, writing while its reply is sent; closed when the
    /// server needs the room for another client, or shuts down.
    slot: Slot,
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
            // The chunk goes straight from the page cache to the socket.
            Reply::Chunk {
                file_id,
                index,
                file,
                range,
            } => {
                self.slot.writing(std::time::Instant::now());
                self.conn
                    .send_chunk_from_file(
                        file_id,
                        index,
                        file,
                        range.offset,
                        range.len,
                        SEND_TIMEOUT,
                    )
                    .await?;
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

    async fn respond(&self, request: PeerRequest) -> Reply {
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
    /// A `Chunk` frame whose data is sent straight from the shared file.
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
