//! The chunk server: answers `GetManifest` and `GetChunk` for the files this peer shares,
//! reading straight from the original files.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use p2p_protocol::accept::{accept, refuse};
use p2p_protocol::limits::PerIpLimit;
use p2p_protocol::{
    ErrorCode, FileId, PeerConversation, PeerRequest, PeerResponse, PeerServerConnection,
    ProtocolError, server_hello,
};
use p2p_protocol::{MAX_MESSAGE_LEN, MAX_SENDER_LEN};
use p2p_storage::{ChunkRange, SourceFile, StorageError};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
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
}

impl ChunkServer {
    /// Serves until `shutdown`; spawned connection tasks go on `tasks`.
    pub async fn run(self, shutdown: CancellationToken, tasks: TaskTracker) {
        let limit = Arc::new(Semaphore::new(self.max_inbound));
        let per_ip = PerIpLimit::new(self.max_inbound_per_ip);
        let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
        while let Some((stream, addr)) = accept(&self.listener, &shutdown).await {
            let mut conn = PeerServerConnection::peer_server(stream);
            // Refuse rather than queue when full: the downloader has other hosts to try.
            let slots = limit
                .clone()
                .try_acquire_owned()
                .ok()
                .zip(per_ip.try_admit(addr.ip()));
            let Some(permit) = slots else {
                // Refusals are bounded too: past that, close at once without a reply.
                let Ok(refusal) = refusals.clone().try_acquire_owned() else {
                    continue;
                };
                tasks.spawn(async move {
                    let _refusal = refusal;
                    let reply = PeerResponse::Error {
                        code: ErrorCode::Busy,
                        message: "too many downloads from this peer right now".into(),
                    };
                    refuse(&mut conn, &reply, BUSY_HELLO_WAIT).await;
                });
                continue;
            };
            let handler = Handler {
                conn,
                remote: addr,
                inbox: self.inbox.clone(),
                files: self.files.clone(),
                stats: self.stats.clone(),
                idle_timeout: self.idle_timeout,
                shutdown: shutdown.child_token(),
            };
            tasks.spawn(
                async move {
                    if let Err(err) = handler.run().await {
                        info!(%err, "connection dropped");
                    }
                    drop(permit);
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
    shutdown: CancellationToken,
}

impl Handler {
    async fn run(mut self) -> Result<(), ProtocolError> {
        server_hello::<PeerConversation, _>(&mut self.conn).await?;
        loop {
            let request = tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                received = tokio::time::timeout(self.idle_timeout, self.conn.recv()) => match received {
                    Err(_) => return Ok(()),
                    Ok(Ok(Some(request))) => request,
                    Ok(Ok(None)) => return Ok(()),
                    Ok(Err(err)) => {
                        if let Some(code) = err.reply_code() {
                            warn!(%err, "bad frame; closing connection");
                            let _ = self.conn.send(&PeerResponse::Error { code, message: err.to_string() }).await;
                        }
                        return Err(err);
                    }
                },
            };
            match self.respond(request).await {
                // The chunk goes straight from the page cache to the socket.
                Reply::Chunk {
                    file_id,
                    index,
                    file,
                    range,
                } => {
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
                    self.conn.send_timeout(&response, SEND_TIMEOUT).await?
                }
            }
        }
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
