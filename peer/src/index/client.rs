//! [`IndexClient`]: requests to the index server over two reused connections, reconnecting
//! when one breaks.
//!
//! # Two connections, so a heartbeat never waits behind a question
//!
//! An index connection carries one request at a time (PROTOCOL.md §1), so a request waits
//! for every request queued before it on the same connection. A heartbeat that waits here
//! has not been sent, and the index's own protection of heartbeats (arrival-time expiry,
//! sliced searches) can't see it. So the client keeps one connection per [`Lane`]:
//!
//! * the **session** connection carries the registration's own requests: `Register`,
//!   `Heartbeat`, `AddFile`, `AddFiles`, `AddFolder`, `AddFolderFiles`, `RemoveFile`,
//!   `RemoveFolder`, `Unregister`;
//! * the **query** connection carries questions: `Lookup`, `Search`, `ListFiles`, `ListPeers`.
//!
//! Each has its own lock, and a request takes only its own lane's lock. A user's search, a
//! download's lookup or a slow `Found` reply (each may take up to `index_timeout`, 10 s by
//! default, against a 15 s expiry) then holds up only other questions. A heartbeat still
//! queues behind this peer's own `AddFile` / `RemoveFile` (a share or unshare), which the
//! index answers without searching.
//!
//! Each connection opens lazily, on its lane's first request, so a client that only asks
//! questions (`p2p-transfer search`) opens one; a peer opens up to two (PROTOCOL.md §7.6 counts
//! them against the per-address limit). A reused connection found closed (the server
//! restarted, or closed it idle or to make room) is replaced once, on either lane. After
//! [`IndexClient::set_server`], each lane opens a new connection on its next request, without
//! waiting for a request in flight on the other lane.

use std::net::SocketAddr;
use std::time::Duration;

use p2p_protocol::{
    FileId, FileManifest, FileSummary, FolderHead, FolderId, FolderRef, HostInfo,
    IndexConversation, IndexRequest, IndexResponse, MAX_CONTROL_FRAME_LEN, MAX_FILES_PER_ADD,
    NodeId, PeerId, PeerSummary, ProtocolError,
};
use p2p_transport::{ClientConnection, Tls};
use tokio::sync::Mutex;

use crate::error::PeerError;

/// What the index told us at registration.
#[derive(Clone, Debug)]
pub struct Session {
    /// Our id (only this node may use it: the index checks our node id).
    pub peer_id: PeerId,
    /// The address the index gives to others for us.
    pub addr: SocketAddr,
    /// How often to heartbeat.
    pub heartbeat_interval: Duration,
}

/// A lookup's answer for a top-level file, checked: the manifest hashes to `file_id`.
#[derive(Clone, Debug)]
pub struct Found {
    /// Full id.
    pub file_id: FileId,
    /// Its manifest.
    pub manifest: FileManifest,
    /// Who hosts it.
    pub hosts: Vec<HostInfo>,
}

/// The name [`IndexClient::lookup`] has always returned.
pub type Lookup = Found;

/// What an id or prefix names on the network ([`IndexClient::locate`]), checked against it.
#[derive(Clone, Debug)]
pub enum Located {
    /// A top-level file: its manifest hashes to its id.
    File(Found),
    /// A folder: its head hashes to `folder_id` and passes [`FolderHead::validate`]; its file
    /// list comes from a host (`GetFolder` / `GetFolderPages`).
    Folder {
        /// Full id.
        folder_id: FolderId,
        /// Its head.
        head: FolderHead,
        /// Who hosts it.
        hosts: Vec<HostInfo>,
    },
    /// A file known only inside a folder: its manifest comes from a host (`GetManifest`),
    /// which must hash to `file_id`.
    InFolder {
        /// Full id.
        file_id: FileId,
        /// A folder it is in.
        folder_id: FolderId,
        /// Its path under that folder's root (the index checked its parts).
        path: String,
        /// Its size.
        size: u64,
        /// Who hosts the folder.
        hosts: Vec<HostInfo>,
    },
}

/// Most bytes of manifests or pages one batched request carries, well under
/// [`MAX_CONTROL_FRAME_LEN`] with the request's own fields.
const BATCH_BYTES: usize = MAX_CONTROL_FRAME_LEN * 3 / 4;

/// At least the encoded size of a manifest (name, 34 bytes per hash, field names).
fn manifest_len(manifest: &FileManifest) -> usize {
    64 + manifest.name.len() + 34 * manifest.chunks.len()
}

/// At least the encoded size of a page of `FolderRef`s.
fn page_len(page: &[FolderRef]) -> usize {
    8 + page.iter().map(|r| 72 + r.path.len()).sum::<usize>()
}

/// Splits `items` into consecutive runs of at most `max` items and [`BATCH_BYTES`] by `len`
/// (an item bigger than that alone in its run).
fn batches<T>(items: &[T], max: usize, len: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut runs = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let n = len(item);
        if i > start && (i - start == max || bytes + n > BATCH_BYTES) {
            runs.push(&items[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += n;
    }
    if start < items.len() {
        runs.push(&items[start..]);
    }
    runs
}

/// Which of the client's connections a request goes on (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// The registration's own requests: they keep this peer listed, so they never wait
    /// behind a question.
    Session,
    /// Questions about the network, which may be slow to answer.
    Query,
}

impl Lane {
    /// The lane `request` goes on.
    pub fn of(request: &IndexRequest) -> Self {
        // No wildcard: a new request kind must be given a lane on purpose.
        match request {
            IndexRequest::Register { .. }
            | IndexRequest::Heartbeat { .. }
            | IndexRequest::AddFile { .. }
            | IndexRequest::AddFiles { .. }
            | IndexRequest::AddFolder { .. }
            | IndexRequest::AddFolderFiles { .. }
            | IndexRequest::RemoveFolder { .. }
            | IndexRequest::RemoveFile { .. }
            | IndexRequest::Unregister { .. } => Self::Session,
            // `Hello` is sent by the handshake; one sent here is refused, on either lane.
            IndexRequest::Hello { .. }
            | IndexRequest::Lookup { .. }
            | IndexRequest::Search { .. }
            | IndexRequest::ListFiles { .. }
            | IndexRequest::ListPeers { .. }
            | IndexRequest::Probe { .. } => Self::Query,
        }
    }
}

/// Where requests go: the server's address, and how many times it has been changed.
#[derive(Clone, Copy, Debug)]
struct Target {
    addr: SocketAddr,
    /// Bumped by [`IndexClient::set_server`]; a connection opened under an older one is
    /// dropped before its next request.
    generation: u64,
}

/// An open connection and the [`Target`] generation it was opened for.
#[derive(Debug)]
struct OpenConnection {
    generation: u64,
    conn: ClientConnection<IndexConversation>,
}

/// One lane's connection, if open. A tokio Mutex: held across the request's await, one
/// request at a time per connection.
type Slot = Mutex<Option<OpenConnection>>;

/// A client of one index server.
#[derive(Debug)]
pub struct IndexClient {
    /// How this node connects.
    tls: Tls,
    /// The index's node id, from the last handshake.
    server_node: std::sync::Mutex<Option<NodeId>>,
    /// The node id the index must show (pinned or remembered); another is refused.
    expect: Option<NodeId>,
    /// Changes when the server is found again elsewhere (mDNS re-discovery).
    target: std::sync::Mutex<Target>,
    timeout: Duration,
    /// For [`Lane::Session`].
    session_conn: Slot,
    /// For [`Lane::Query`].
    query_conn: Slot,
}

impl IndexClient {
    /// A client for `server`, connecting with `tls`; connects lazily.
    pub fn new(server: SocketAddr, timeout: Duration, tls: Tls) -> Self {
        Self {
            tls,
            server_node: std::sync::Mutex::new(None),
            expect: None,
            target: std::sync::Mutex::new(Target {
                addr: server,
                generation: 0,
            }),
            timeout,
            session_conn: Mutex::new(None),
            query_conn: Mutex::new(None),
        }
    }

    fn target(&self) -> Target {
        *self.target.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The server's address.
    pub fn server(&self) -> SocketAddr {
        self.target().addr
    }

    /// Talks to `server` from now on; each lane's next request opens a new connection. Does
    /// not wait for requests in flight: they finish (or time out) on the old connection.
    pub fn set_server(&self, server: SocketAddr) {
        let mut target = self.target.lock().unwrap_or_else(|e| e.into_inner());
        target.addr = server;
        target.generation += 1;
    }

    fn slot(&self, lane: Lane) -> &Slot {
        match lane {
            Lane::Session => &self.session_conn,
            Lane::Query => &self.query_conn,
        }
    }

    /// Refuses an index server that shows another node id than `id` in its handshake
    /// ([`ProtocolError::WrongNode`]), wherever it is found (`None`: any).
    pub fn expecting(mut self, id: Option<NodeId>) -> Self {
        self.expect = id;
        self
    }

    /// The index's node id, as its last handshake showed it; `None` before the first
    /// connection.
    pub fn server_node_id(&self) -> Option<NodeId> {
        *self.server_node.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn connect(&self) -> Result<OpenConnection, ProtocolError> {
        let target = self.target();
        let (conn, node_id) = p2p_transport::connect::<IndexConversation>(
            &self.tls,
            target.addr,
            self.expect,
            self.timeout,
        )
        .await?;
        *self.server_node.lock().unwrap_or_else(|e| e.into_inner()) = Some(node_id);
        Ok(OpenConnection {
            generation: target.generation,
            conn,
        })
    }

    /// Sends `request` on its [`Lane`]'s connection and returns the reply; an `Error` reply
    /// becomes [`PeerError::IndexRefused`]. A reused connection that turns out to be closed
    /// (the server restarted or timed it out) is replaced once.
    pub async fn call(&self, request: IndexRequest) -> Result<IndexResponse, PeerError> {
        let mut slot = self.slot(Lane::of(&request)).lock().await;
        let generation = self.target().generation;
        if slot
            .as_ref()
            .is_some_and(|open| open.generation != generation)
        {
            // Opened for a server we no longer talk to.
            *slot = None;
        }
        let reused = slot.is_some();
        let result = self.call_on(&mut slot, &request).await;
        let result = match result {
            Err(ProtocolError::Io(_) | ProtocolError::Closed) if reused => {
                self.call_on(&mut slot, &request).await
            }
            other => other,
        };
        match result {
            Ok(IndexResponse::Error { code, message }) => Err(PeerError::IndexRefused {
                code,
                message: message.into(),
            }),
            Ok(reply) => Ok(reply),
            Err(err) => Err(PeerError::from_index(self.server(), err)),
        }
    }

    async fn call_on(
        &self,
        slot: &mut Option<OpenConnection>,
        request: &IndexRequest,
    ) -> Result<IndexResponse, ProtocolError> {
        // Out of the slot while the request is under way: a caller that stops waiting (a
        // question the other indexes answered first) drops it with the connection, so the
        // next request never reads this one's late reply. It goes back only once its reply
        // has been read whole.
        let mut open = match slot.take() {
            Some(open) => open,
            None => self.connect().await?,
        };
        // On an error, whatever state the stream is in, it can't be trusted for the next
        // request: it stays out.
        let reply = open.conn.request(request, self.timeout).await?;
        *slot = Some(open);
        Ok(reply)
    }

    /// Registers a peer whose chunk server is at `addr`.
    pub async fn register(&self, addr: SocketAddr) -> Result<Session, PeerError> {
        match self.call(IndexRequest::Register { addr }).await? {
            IndexResponse::Registered {
                peer_id,
                addr,
                heartbeat_interval_ms,
                ..
            } => Ok(Session {
                peer_id,
                addr,
                heartbeat_interval: Duration::from_millis(heartbeat_interval_ms.max(100)),
            }),
            other => Err(unexpected(other)),
        }
    }

    /// Keeps `session` alive.
    pub async fn heartbeat(&self, session: &Session) -> Result<(), PeerError> {
        let request = IndexRequest::Heartbeat {
            peer_id: session.peer_id,
        };
        match self.call(request).await? {
            IndexResponse::HeartbeatAck {} => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Announces that we host `manifest`.
    pub async fn add_file(
        &self,
        session: &Session,
        manifest: FileManifest,
    ) -> Result<FileId, PeerError> {
        let request = IndexRequest::AddFile {
            peer_id: session.peer_id,
            manifest,
        };
        match self.call(request).await? {
            IndexResponse::FileAdded { file_id } => Ok(file_id),
            other => Err(unexpected(other)),
        }
    }

    /// Announces that we host every one of `manifests`, in as few `AddFiles` requests as fit
    /// in frames (at most [`MAX_FILES_PER_ADD`] each); returns their ids in the order given.
    /// Each request is all or nothing; when one is refused, the ones before it stay added.
    pub async fn add_files(
        &self,
        session: &Session,
        manifests: Vec<FileManifest>,
    ) -> Result<Vec<FileId>, PeerError> {
        let mut ids = Vec::with_capacity(manifests.len());
        for batch in batches(&manifests, MAX_FILES_PER_ADD, manifest_len) {
            let request = IndexRequest::AddFiles {
                peer_id: session.peer_id,
                manifests: batch.to_vec(),
            };
            match self.call(request).await? {
                IndexResponse::FilesAdded { file_ids } if file_ids.len() == batch.len() => {
                    ids.extend(file_ids);
                }
                other => return Err(unexpected(other)),
            }
        }
        Ok(ids)
    }

    /// Announces that we host the folder `head` names; its files follow with
    /// [`IndexClient::add_folder_files`]. Returns its id, checked against the head.
    pub async fn add_folder(
        &self,
        session: &Session,
        head: FolderHead,
    ) -> Result<FolderId, PeerError> {
        let expected = head.id();
        let request = IndexRequest::AddFolder {
            peer_id: session.peer_id,
            head,
        };
        match self.call(request).await? {
            IndexResponse::FolderAdded { folder_id } if folder_id == expected => Ok(folder_id),
            other => Err(unexpected(other)),
        }
    }

    /// Sends the pages of folder `folder_id`'s file list from page `first_page` on, several
    /// pages per `AddFolderFiles` request (each frame under 2 MiB), and returns how many of
    /// the folder's files the index knows after the last one. A page sent again is harmless.
    pub async fn add_folder_files(
        &self,
        session: &Session,
        folder_id: FolderId,
        first_page: u32,
        pages: &[Vec<FolderRef>],
    ) -> Result<u64, PeerError> {
        let mut files = 0;
        let mut next = first_page;
        for batch in batches(pages, usize::MAX, |p| page_len(p)) {
            let request = IndexRequest::AddFolderFiles {
                peer_id: session.peer_id,
                folder_id,
                first_page: next,
                pages: batch.to_vec(),
            };
            match self.call(request).await? {
                IndexResponse::FolderFilesAdded { files: known } => files = known,
                other => return Err(unexpected(other)),
            }
            next += batch.len() as u32;
        }
        Ok(files)
    }

    /// Withdraws a folder (and its files).
    pub async fn remove_folder(
        &self,
        session: &Session,
        folder_id: FolderId,
    ) -> Result<(), PeerError> {
        let request = IndexRequest::RemoveFolder {
            peer_id: session.peer_id,
            folder_id,
        };
        match self.call(request).await? {
            IndexResponse::FolderRemoved { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Withdraws a file.
    pub async fn remove_file(&self, session: &Session, file_id: FileId) -> Result<(), PeerError> {
        let request = IndexRequest::RemoveFile {
            peer_id: session.peer_id,
            file_id,
        };
        match self.call(request).await? {
            IndexResponse::FileRemoved { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Ends the registration.
    pub async fn unregister(&self, session: &Session) -> Result<(), PeerError> {
        let request = IndexRequest::Unregister {
            peer_id: session.peer_id,
        };
        match self.call(request).await? {
            IndexResponse::Unregistered {} => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Resolves an id or prefix that must name a top-level file, and checks the manifest
    /// against the id. A folder, or a file known only inside one, is [`PeerError::NotAFile`]
    /// (use [`IndexClient::locate`] for those).
    pub async fn lookup(&self, id: &str) -> Result<Found, PeerError> {
        match self.locate(id).await? {
            Located::File(found) => Ok(found),
            Located::Folder { folder_id, .. } => Err(PeerError::NotAFile(folder_id.to_string())),
            Located::InFolder { file_id, .. } => Err(PeerError::NotAFile(file_id.to_string())),
        }
    }

    /// Resolves an id or prefix to what it names: a file, a folder or a file inside a folder,
    /// each checked against the id (a manifest or head that does not hash to it, or an id
    /// the prefix does not start, is [`PeerError::ManifestMismatch`] /
    /// [`PeerError::FolderMismatch`]: a broken or lying index).
    pub async fn locate(&self, id: &str) -> Result<Located, PeerError> {
        let prefix: p2p_protocol::IdPrefix = id.parse()?;
        let starts = |bytes: &[u8; 32]| prefix.matches(&FileId(*bytes));
        match self
            .call(IndexRequest::Lookup {
                id: prefix.to_string(),
            })
            .await?
        {
            IndexResponse::Found {
                file_id,
                manifest,
                hosts,
            } => {
                if manifest.id() != file_id || !starts(&file_id.0) || manifest.validate().is_err() {
                    return Err(PeerError::ManifestMismatch(file_id));
                }
                Ok(Located::File(Found {
                    file_id,
                    manifest,
                    hosts,
                }))
            }
            IndexResponse::FoundFolder {
                folder_id,
                head,
                hosts,
            } => {
                if head.id() != folder_id || !starts(&folder_id.0) || head.validate().is_err() {
                    return Err(PeerError::FolderMismatch(folder_id));
                }
                Ok(Located::Folder {
                    folder_id,
                    head,
                    hosts,
                })
            }
            IndexResponse::FoundInFolder {
                file_id,
                folder_id,
                path,
                size,
                hosts,
            } => {
                if !starts(&file_id.0) || p2p_protocol::folder::check_path(&path).is_err() {
                    return Err(PeerError::ManifestMismatch(file_id));
                }
                Ok(Located::InFolder {
                    file_id,
                    folder_id,
                    path,
                    size,
                    hosts,
                })
            }
            other => Err(unexpected(other)),
        }
    }

    /// Files on the network, and how many there are in all.
    pub async fn list_files(&self) -> Result<(Vec<FileSummary>, u64), PeerError> {
        match self.call(IndexRequest::ListFiles {}).await? {
            IndexResponse::Files { files, total } => Ok((files, total)),
            other => Err(unexpected(other)),
        }
    }

    /// Files whose names contain every word of `query`, and how many match in all.
    pub async fn search(&self, query: &str) -> Result<(Vec<FileSummary>, u64), PeerError> {
        match self
            .call(IndexRequest::Search {
                query: query.to_owned(),
            })
            .await?
        {
            IndexResponse::Files { files, total } => Ok((files, total)),
            other => Err(unexpected(other)),
        }
    }

    /// Registered peers, and how many there are in all.
    pub async fn list_peers(&self) -> Result<(Vec<PeerSummary>, u64), PeerError> {
        match self.call(IndexRequest::ListPeers {}).await? {
            IndexResponse::Peers { peers, total } => Ok((peers, total)),
            other => Err(unexpected(other)),
        }
    }
}

fn unexpected(reply: IndexResponse) -> PeerError {
    PeerError::Internal(format!(
        "the index server sent an unexpected reply: {reply:?}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_stay_under_their_count_and_frame() {
        let sizes = [10, 10, BATCH_BYTES, 1, BATCH_BYTES / 2, BATCH_BYTES / 2, 3];
        let runs = batches(&sizes, 3, |n| *n);
        let lens: Vec<usize> = runs.iter().map(|r| r.len()).collect();
        assert_eq!(lens, [2, 1, 2, 2]);
        let runs = batches(&[1; 7], 3, |n| *n);
        assert_eq!(runs.iter().map(|r| r.len()).collect::<Vec<_>>(), [3, 3, 1]);
        assert!(batches(&[] as &[usize], 3, |n| *n).is_empty());
        // The largest page (1024 paths of 1024 bytes) fits a frame with room to spare.
        let page = vec![
            FolderRef {
                path: "p".repeat(p2p_protocol::folder::MAX_FOLDER_PATH_LEN),
                file_id: FileId([0xff; 32]),
                size: u64::MAX,
            };
            p2p_protocol::folder::FOLDER_PAGE_FILES
        ];
        let request = IndexRequest::AddFolderFiles {
            peer_id: PeerId(u64::MAX),
            folder_id: FolderId([0xff; 32]),
            first_page: u32::MAX,
            pages: vec![page.clone()],
        };
        let encoded = p2p_protocol::codec::encode_frame(&request).unwrap().len();
        assert!(encoded <= page_len(&page) + 200, "{encoded}");
        assert!(page_len(&page) <= BATCH_BYTES);
    }
}
