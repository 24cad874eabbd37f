//! The chunk server: answers `GetManifest` and `GetChunk` for the files this peer shares (on
//! their own or in folders), reading straight from the original files, `GetFolder` and
//! `GetFolderPages` for its folders, takes `Message`s for the user and `Received`
//! confirmations for a sender waiting for its deliveries.
//! `ChunkServer` turns the peer's config into the connection loop's
//! ([`p2p_transport::serve()`], which accepts, admits, runs the TLS and `Hello` handshakes and
//! waits for requests); `Handler` answers each request of one connection. The client's node id
//! comes from its TLS handshake.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use p2p_protocol::{
    ErrorCode, FileId, FolderId, NodeId, PeerConversation, PeerRequest, PeerResponse, ProtocolError,
};
use p2p_protocol::{MAX_MESSAGE_LEN, MAX_SENDER_LEN};
use p2p_storage::{ChunkRange, SourceFile, StorageError};
use p2p_transport::serve::{self, MAX_REFUSALS, ServeConfig, Service};
use p2p_transport::slots::{Refusal, Slot, SlotLimits};
use p2p_transport::{ServerConnection, Tls};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::deliveries::Deliveries;
use crate::inbox::{Inbox, ReceivedMessage};
use crate::shared_files::{Found, SharedFiles, Unserved};

/// A chunk that can't be written within this long (the client stopped reading) closes the
/// connection.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// A chunk still being sent after this long means a client reading too slowly (4 MiB take
/// well under a second on a LAN, 3.5 s at 10 Mbit/s): when the server is full and nothing idle
/// can make room, such a connection is closed first.
const SLOW_REPLY: Duration = Duration::from_secs(10);

/// A chunk's data is read from the file and sent in pieces of this size, so a connection
/// sending a chunk holds this much, not the whole chunk.
const SEND_PIECE: usize = 256 * 1024;

/// A chunk this small (a small file, or the tail of a big one) is checked and read in one
/// blocking call, before its reply is started, and queued behind the replies before it: the
/// fast path that makes a pipelined request for a small file cost a few microseconds.
const INLINE_SEND: usize = SEND_PIECE;

/// Replies to pipelined requests are queued until this many bytes wait (or no request is
/// ready), then written together.
const WRITE_BATCH: usize = 64 * 1024;

/// Requests of one connection read ahead of the one being answered, at most: those a client
/// pipelined and that had arrived whole (a downloader keeps up to 32 in flight on a link).
const READ_AHEAD: usize = 32;

/// Small chunks (each at most [`INLINE_SEND`]) read from disk in one blocking call, at most
/// this many bytes together: the requests read ahead are answered from memory then. One
/// blocking call per small file cost more in thread hand-offs than the read itself.
const PREFETCH_BYTES: usize = 512 * 1024;

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
    /// Told of every chunk sent whole, and of every manifest and head asked for.
    pub deliveries: Arc<Deliveries>,
    pub max_inbound: usize,
    pub max_inbound_per_ip: usize,
    pub idle_timeout: Duration,
    pub first_request_timeout: Duration,
}

impl ChunkServer {
    /// Serves until `shutdown`, then returns once every connection has finished.
    pub async fn run(self, shutdown: CancellationToken) {
        let config = ServeConfig {
            slots: SlotLimits {
                max: self.max_inbound,
                max_per_ip: self.max_inbound_per_ip,
                max_refusals: MAX_REFUSALS,
                slow_after: SLOW_REPLY,
                // Downloads keep their connections busy back to back, never idle and rarely
                // slow: without this, two addresses could hold every slot for good. Refuse
                // rather than queue when nothing can make room: the downloader has other
                // hosts to try.
                fair_share: true,
            },
            first_request_timeout: self.first_request_timeout,
            idle_timeout: self.idle_timeout,
        };
        let shared = Arc::new(Shared {
            allowed: self.allowed,
            files: self.files,
            inbox: self.inbox,
            stats: self.stats,
            deliveries: self.deliveries,
        });
        serve::serve(self.listener, self.tls, config, shared, shutdown).await;
    }
}

/// What every connection answers from.
struct Shared {
    allowed: p2p_identity::Allowed,
    files: SharedFiles,
    inbox: Arc<Inbox>,
    stats: Arc<ServeStats>,
    deliveries: Arc<Deliveries>,
}

impl Service for Shared {
    type Handler = Handler;

    /// `busy`, whether the server or the client's address is full.
    fn refusal(&self, _: Refusal) -> PeerResponse {
        error(
            ErrorCode::Busy,
            "too many downloads from this peer right now".into(),
        )
    }

    fn handler(self: &Arc<Self>, remote: SocketAddr, client: NodeId) -> Handler {
        self.deliveries.opened(client);
        Handler {
            shared: self.clone(),
            remote,
            client,
            piece: Vec::new(),
            ahead: VecDeque::new(),
            ahead_error: None,
            prefetched: VecDeque::new(),
        }
    }
}

/// Answers the requests of one connection.
struct Handler {
    shared: Arc<Shared>,
    remote: SocketAddr,
    /// Who the client is, from its TLS handshake.
    client: NodeId,
    /// The buffer a chunk is read into piece by piece; allocated on the first chunk.
    piece: Vec<u8>,
    /// Requests read ahead (pipelined, whole already), oldest first.
    ahead: VecDeque<PeerRequest>,
    /// A receive error met while reading ahead: returned once `ahead` is empty.
    ahead_error: Option<ProtocolError>,
    /// Small chunks of the requests at the front of `ahead`, prepared together with the one
    /// answered before them, in the same order.
    prefetched: VecDeque<((FileId, u32), Prepared)>,
}

impl Drop for Handler {
    /// The connection has ended.
    fn drop(&mut self) {
        self.shared.deliveries.closed(self.client);
    }
}

/// What one blocking call found for a chunk: the file (or why it isn't served) and the
/// chunk's range, with its data when it is small enough to be sent from memory.
type Prepared = Result<
    (
        Arc<SourceFile>,
        Result<(ChunkRange, Option<Vec<u8>>), StorageError>,
    ),
    Unserved,
>;

/// Opens `found` (a folder's file is opened by its path: disk work), checks it and, for a
/// chunk of at most [`INLINE_SEND`] bytes, reads it into `buf`. Blocking.
fn prepare(found: Found, index: u32, mut buf: Vec<u8>) -> Prepared {
    let file = found.open_blocking()?;
    let read = file.prepare_chunk(index).and_then(|range| {
        if range.len > INLINE_SEND {
            return Ok((range, None));
        }
        buf.resize(range.len, 0);
        file.read_at(&mut buf, range.offset)?;
        Ok((range, Some(buf)))
    });
    Ok((file, read))
}

impl serve::Handler for Handler {
    type Conversation = PeerConversation;
    type Ticket = ();
    type Reply = Reply;

    async fn receive(
        &mut self,
        conn: &mut ServerConnection<PeerConversation>,
    ) -> Result<Option<(PeerRequest, ())>, ProtocolError> {
        if let Some(request) = self.ahead.pop_front() {
            return Ok(Some((request, ())));
        }
        if let Some(err) = self.ahead_error.take() {
            return Err(err);
        }
        let Some(request) = conn.recv().await? else {
            return Ok(None);
        };
        // Whatever else the client pipelined and is here whole: read now, so small chunks
        // can be fetched from disk together (see `chunk`).
        // Only `GetChunk`s are read past (a few dozen bytes each): any other request, up to
        // its frame limit, ends the read-ahead, so a connection holds at most one such frame.
        let mut last_small = matches!(request, PeerRequest::GetChunk { .. });
        while last_small && self.ahead.len() < READ_AHEAD && conn.frame_ready() {
            match conn.recv().await {
                Ok(Some(next)) => {
                    last_small = matches!(next, PeerRequest::GetChunk { .. });
                    self.ahead.push_back(next);
                }
                Ok(None) => break,
                Err(err) => {
                    self.ahead_error = Some(err);
                    break;
                }
            }
        }
        Ok(Some((request, ())))
    }

    async fn answer(&mut self, request: PeerRequest, (): (), _: &Slot) -> Reply {
        let reply = self.respond(request).await;
        if let Reply::Message(PeerResponse::Error { code, message }) = &reply {
            debug!(%code, %message, "request refused");
        }
        reply
    }

    async fn send(
        &mut self,
        conn: &mut ServerConnection<PeerConversation>,
        reply: Reply,
    ) -> Result<(), ProtocolError> {
        match reply {
            Reply::Chunk {
                file_id,
                index,
                file,
                range,
            } => {
                let send = self.send_chunk(conn, file_id, index, file, range);
                tokio::time::timeout(SEND_TIMEOUT, send)
                    .await
                    .map_err(|_| ProtocolError::Timeout(SEND_TIMEOUT))??;
                let stats = &self.shared.stats;
                stats.chunks_served.fetch_add(1, Ordering::Relaxed);
                stats
                    .bytes_served
                    .fetch_add(range.len as u64, Ordering::Relaxed);
                self.shared.deliveries.sent(self.client, file_id, index);
            }
            Reply::Inline {
                file_id,
                index,
                data,
            } => {
                let send = async {
                    let header = PeerResponse::Chunk {
                        file_id,
                        index,
                        size: u32::try_from(data.len()).expect("a chunk is at most CHUNK_SIZE"),
                    };
                    conn.set_write_batch(WRITE_BATCH);
                    conn.feed_chunk(&header, &data).await?;
                    // More requests read ahead or ready: their replies go out with this one.
                    if self.ahead.is_empty() && !conn.frame_ready() {
                        conn.flush().await?;
                    }
                    Ok::<_, ProtocolError>(())
                };
                tokio::time::timeout(SEND_TIMEOUT, send)
                    .await
                    .map_err(|_| ProtocolError::Timeout(SEND_TIMEOUT))??;
                let stats = &self.shared.stats;
                stats.chunks_served.fetch_add(1, Ordering::Relaxed);
                stats
                    .bytes_served
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                self.shared.deliveries.sent(self.client, file_id, index);
                self.piece = data;
            }
            Reply::Message(response) => conn.send_timeout(&response, SEND_TIMEOUT).await?,
        }
        Ok(())
    }
}

impl Handler {
    /// Sends `Chunk` and then the chunk's data, read from the file piece by piece on a
    /// blocking thread (a read may wait for the disk, which must never stall the reactor).
    /// A file that turns out shorter than its manifest ends the connection: the announced
    /// data can't be completed.
    async fn send_chunk(
        &mut self,
        conn: &mut ServerConnection<PeerConversation>,
        file_id: FileId,
        index: u32,
        file: Arc<SourceFile>,
        range: ChunkRange,
    ) -> Result<(), ProtocolError> {
        let size = u32::try_from(range.len).expect("a chunk is at most CHUNK_SIZE");
        conn.send(&PeerResponse::Chunk {
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
                    self.shared.files.withdraw_changed(&file_id);
                }
                return Err(ProtocolError::Io(std::io::Error::other(err.to_string())));
            }
            conn.send_chunk_data(&piece[..len]).await?;
            sent += len;
        }
        conn.flush().await?;
        self.piece = piece;
        Ok(())
    }

    async fn respond(&mut self, request: PeerRequest) -> Reply {
        if !matches!(request, PeerRequest::Hello { .. })
            && !self.shared.allowed.permits(self.client)
        {
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
            PeerRequest::Received { id } => Reply::Message(self.received(id)),
            PeerRequest::GetFolder { folder_id } => Reply::Message(self.folder(folder_id)),
            PeerRequest::GetFolderPages {
                folder_id,
                first,
                count,
            } => Reply::Message(self.folder_pages(folder_id, first, count).await),
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
        self.shared.inbox.push(ReceivedMessage {
            from: from.into(),
            node: self.client,
            name: self.shared.allowed.name(self.client),
            remote: self.remote,
            text: text.into(),
            at: std::time::SystemTime::now(),
            sent: false,
        });
        PeerResponse::MessageReceived {}
    }

    /// Answers `Received`: the client has `id` whole, which counts as its delivery. Any id
    /// this peer knows as a file or a folder (one that changed since included: the client's
    /// copy was verified against the id) is acknowledged; no disk is touched.
    fn received(&self, id: FileId) -> PeerResponse {
        let known = |found: Result<(), Unserved>| !matches!(found, Err(Unserved::Unknown));
        let file = self.shared.files.find(&id).map(drop);
        let folder = self.shared.files.folder(&FolderId(id.0)).map(drop);
        if !known(file) && !known(folder) {
            return error(
                ErrorCode::UnknownFile,
                format!("this peer shares no file or folder {id}"),
            );
        }
        self.shared.deliveries.confirmed(self.client, id);
        PeerResponse::ReceivedAck {}
    }

    /// Answers `GetManifest`, for a file shared on its own or in a folder.
    fn manifest(&self, file_id: FileId) -> PeerResponse {
        match self.shared.files.manifest(&file_id) {
            Ok(manifest) => {
                self.shared.deliveries.asked(self.client, file_id);
                PeerResponse::Manifest { file_id, manifest }
            }
            Err(why) => unserved(file_id, why),
        }
    }

    /// Answers `GetFolder`: the folder's head.
    fn folder(&self, folder_id: FolderId) -> PeerResponse {
        match self.shared.files.folder(&folder_id) {
            Ok(folder) => {
                self.shared
                    .deliveries
                    .asked(self.client, FileId(folder_id.0));
                PeerResponse::Folder {
                    folder_id,
                    head: folder.head().clone(),
                }
            }
            Err(why) => unserved_folder(folder_id, why),
        }
    }

    /// Answers `GetFolderPages`: pages `first..first + count` of the folder's record, as many
    /// whole ones as fit in [`crate::shared_folders::PAGES_BUDGET`] (at least one, none past
    /// the end). Building them hashes the big files' manifests: off the reactor.
    async fn folder_pages(&self, folder_id: FolderId, first: u32, count: u32) -> PeerResponse {
        if count == 0 {
            return error(
                ErrorCode::BadRequest,
                "GetFolderPages needs a count of at least 1".into(),
            );
        }
        let folder = match self.shared.files.folder(&folder_id) {
            Ok(folder) => folder,
            Err(why) => return unserved_folder(folder_id, why),
        };
        match tokio::task::spawn_blocking(move || folder.pages(first, count)).await {
            Ok(pages) => PeerResponse::FolderPages {
                folder_id,
                first,
                pages,
            },
            Err(join) => error(ErrorCode::Internal, format!("folder pages failed: {join}")),
        }
    }

    /// Answers `GetChunk`: a small chunk's data, or where a larger one lies in the shared
    /// file, or an error reply. A small chunk is read together with the small chunks the
    /// requests read ahead ask for, in one blocking call; their answers then come from
    /// memory.
    async fn chunk(&mut self, file_id: FileId, index: u32) -> Reply {
        if let Some(prepared) = self.take_prefetched(file_id, index) {
            return self.reply(file_id, index, Ok(prepared));
        }
        let found = match self.shared.files.find(&file_id) {
            Ok(found) => found,
            Err(why) => return Reply::Message(unserved(file_id, why)),
        };
        // An index past the end is answered before the file is checked (or opened).
        let Some(len) = found.manifest().chunk_len(index) else {
            let count = found.manifest().chunks.len();
            let err = StorageError::ChunkOutOfRange { index, count };
            return Reply::Message(error(ErrorCode::ChunkOutOfRange, err.to_string()));
        };
        let mut batch = vec![((file_id, index), found)];
        if len <= INLINE_SEND {
            let mut bytes = len;
            for request in &self.ahead {
                let PeerRequest::GetChunk { file_id, index } = *request else {
                    break;
                };
                let Ok(found) = self.shared.files.find(&file_id) else {
                    break;
                };
                match found.manifest().chunk_len(index) {
                    Some(len) if len <= INLINE_SEND && bytes + len <= PREFETCH_BYTES => {
                        bytes += len;
                        batch.push(((file_id, index), found));
                    }
                    _ => break,
                }
            }
        }
        // Opening a folder's file, the metadata check, the read-ahead hint and a small chunk's
        // read touch the disk: off the reactor, in one blocking call.
        let piece = std::mem::take(&mut self.piece);
        let prepared = tokio::task::spawn_blocking(move || {
            let mut piece = Some(piece);
            batch
                .into_iter()
                .map(|(key, found)| {
                    let buf = piece.take().unwrap_or_default();
                    (key, prepare(found, key.1, buf))
                })
                .collect::<Vec<_>>()
        })
        .await;
        match prepared {
            Ok(prepared) => {
                let mut prepared = prepared.into_iter();
                let first = prepared.next().map(|(_, p)| p);
                self.prefetched.extend(prepared);
                match first {
                    Some(first) => self.reply(file_id, index, Ok(first)),
                    None => self.reply(file_id, index, Err("nothing prepared".into())),
                }
            }
            Err(join) => self.reply(file_id, index, Err(join.to_string())),
        }
    }

    /// The prepared answer for `(file_id, index)` if it was read ahead (the next one kept),
    /// unless the file stopped being shared since.
    fn take_prefetched(&mut self, file_id: FileId, index: u32) -> Option<Prepared> {
        match self.prefetched.pop_front() {
            Some((key, prepared)) if key == (file_id, index) => {
                Some(self.shared.files.find(&file_id).and(prepared))
            }
            // Not in step with the requests (never expected): drop what was read ahead.
            Some(_) => {
                self.prefetched.clear();
                None
            }
            None => None,
        }
    }

    /// The reply for a prepared chunk (`Err`: the blocking call itself failed).
    fn reply(&mut self, file_id: FileId, index: u32, prepared: Result<Prepared, String>) -> Reply {
        let refusal = match prepared {
            Ok(Err(why)) => unserved(file_id, why),
            Ok(Ok((_, Ok((_, Some(data)))))) => {
                return Reply::Inline {
                    file_id,
                    index,
                    data,
                };
            }
            Ok(Ok((file, Ok((range, None))))) => {
                return Reply::Chunk {
                    file_id,
                    index,
                    file,
                    range,
                };
            }
            Ok(Ok((_, Err(err @ StorageError::ChunkOutOfRange { .. })))) => {
                error(ErrorCode::ChunkOutOfRange, err.to_string())
            }
            Ok(Ok((_, Err(StorageError::FileChanged(_))))) => {
                self.shared.files.withdraw_changed(&file_id);
                error(
                    ErrorCode::FileUnavailable,
                    format!("{file_id} changed on this peer's disk and is no longer shared"),
                )
            }
            Ok(Ok((_, Err(err)))) => {
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
    /// A `Chunk` frame and its data, already read (at most [`INLINE_SEND`] bytes).
    Inline {
        file_id: FileId,
        index: u32,
        data: Vec<u8>,
    },
    /// A `Chunk` frame and its data, read from the shared file as it is sent.
    Chunk {
        file_id: FileId,
        index: u32,
        file: Arc<SourceFile>,
        range: ChunkRange,
    },
}

/// The reply for a file this peer can't serve.
fn unserved(file_id: FileId, why: Unserved) -> PeerResponse {
    match why {
        Unserved::Unknown => error(
            ErrorCode::UnknownFile,
            format!("this peer does not share {file_id}"),
        ),
        Unserved::Changed => error(
            ErrorCode::FileUnavailable,
            format!("{file_id} changed on this peer's disk and is no longer shared"),
        ),
        Unserved::Failed => error(
            ErrorCode::Internal,
            format!("this peer cannot open {file_id} right now; it stays shared, ask again later"),
        ),
    }
}

/// The reply for a folder this peer can't serve.
fn unserved_folder(folder_id: FolderId, why: Unserved) -> PeerResponse {
    match why {
        Unserved::Unknown => error(
            ErrorCode::UnknownFile,
            format!("this peer does not share folder {folder_id}"),
        ),
        Unserved::Changed => error(
            ErrorCode::FileUnavailable,
            format!(
                "folder {folder_id} changed on this peer's disk and is shared under a new id now"
            ),
        ),
        Unserved::Failed => error(
            ErrorCode::Internal,
            format!("this peer cannot serve folder {folder_id} right now; ask again later"),
        ),
    }
}

fn error(code: ErrorCode, message: String) -> PeerResponse {
    PeerResponse::Error { code, message }
}
