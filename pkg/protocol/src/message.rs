//! Every message of both conversations: one enum per direction (peer ↔ index, peer ↔ peer).
//!
//! On the wire each message is a MessagePack map with exactly one key, the variant name, whose
//! value is a map of the variant's fields by name (`{"GetChunk": {"file_id": <bin 32>, "index": 3}}`).
//! See the crate docs for the order of exchanges.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::folder::{FolderHead, FolderItem, FolderRef};
use crate::node_id::NodeId;
use crate::types::{FileId, FileManifest, FolderId, PeerId};

/// What kind of node answered a `Hello`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The central index server.
    Index,
    /// A peer's chunk server.
    Peer,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Index => "index server",
            Role::Peer => "peer",
        })
    }
}

/// Machine-readable reason carried by every `Error` reply. Travels as a snake_case string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// `Hello` announced a version this node does not speak. The connection is closed.
    VersionMismatch,
    /// The request was malformed or not allowed at this point. The connection is closed when
    /// the frame itself could not be decoded or the handshake was wrong; it stays open for a
    /// well-formed request with a bad argument (a second `Hello`, port 0, a malformed id).
    BadRequest,
    /// The frame's length prefix exceeded the limit. Closed.
    FrameTooLarge,
    /// The peer id is not registered (the index restarted or expired it): register again.
    UnknownPeer,
    /// Refused because of who asks (the node id of the TLS handshake): that registration
    /// belongs to another node, which alone may change or end it; or the index (to
    /// `Register`) or the peer (to any request but `Hello`) has an allow-list that does not
    /// name this node. The connection stays open.
    Forbidden,
    /// No file with that id or prefix is known.
    UnknownFile,
    /// The prefix matches more than one file; the message lists some of them.
    AmbiguousPrefix,
    /// A manifest whose fields disagree, or whose name is unsafe.
    InvalidManifest,
    /// A chunk index past the end of the file.
    ChunkOutOfRange,
    /// The file changed on the host's disk since it was registered, or was deleted, moved or
    /// can't be checked; it is no longer served.
    FileUnavailable,
    /// Too many connections or requests right now; try another host or later.
    Busy,
    /// A per-peer or per-server cap was reached (files per peer, peers per server).
    LimitExceeded,
    /// The node failed to do something it should have been able to do (disk error...).
    Internal,
    /// A code from a newer version of the protocol.
    #[serde(other)]
    Unknown,
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorCode::VersionMismatch => "version_mismatch",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::UnknownPeer => "unknown_peer",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::UnknownFile => "unknown_file",
            ErrorCode::AmbiguousPrefix => "ambiguous_prefix",
            ErrorCode::InvalidManifest => "invalid_manifest",
            ErrorCode::ChunkOutOfRange => "chunk_out_of_range",
            ErrorCode::FileUnavailable => "file_unavailable",
            ErrorCode::Busy => "busy",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
        };
        f.write_str(s)
    }
}

/// A message from a peer (or any client) to the index server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IndexRequest {
    /// Must be the first message on every connection. Answered by `Welcome`, or by
    /// `Error { code: version_mismatch }` and a close.
    Hello {
        /// The client's [`crate::PROTOCOL_VERSION`].
        version: u32,
    },
    /// Announce a peer that serves chunks at `addr`. Answered by `Registered`. The
    /// registration belongs to the node id this connection's TLS handshake proved; a node holds
    /// at most one, so registering again ends the node's old registration (and its files).
    Register {
        /// Where other peers reach this peer's chunk server, as `"ip:port"`. An unspecified IP
        /// (`0.0.0.0`, `[::]`) is replaced by the IP this connection comes from.
        #[serde(with = "display_fromstr")]
        addr: SocketAddr,
    },
    /// Keeps a registration alive. Answered by `HeartbeatAck`, or `Error { code: unknown_peer }`
    /// when the index no longer knows the peer (it must register again).
    Heartbeat {
        /// From `Registered`.
        peer_id: PeerId,
    },
    /// Adds a file the peer hosts. Answered by `FileAdded`. Adding a file twice is harmless.
    AddFile {
        /// From `Registered`.
        peer_id: PeerId,
        /// The file's manifest; it is validated and its id computed by the index.
        manifest: FileManifest,
    },
    /// Adds several files the peer hosts at once. Answered by `FilesAdded`.
    AddFiles {
        /// From `Registered`.
        peer_id: PeerId,
        /// The files' manifests.
        manifests: Vec<FileManifest>,
    },
    /// Adds a folder the peer hosts: its head. Answered by `FolderAdded`; the index computes
    /// the id. Its files follow in `AddFolderFiles`.
    AddFolder {
        /// From `Registered`.
        peer_id: PeerId,
        /// The folder's head.
        head: FolderHead,
    },
    /// Adds pages of a folder's file list, from page `first_page` on. Answered by
    /// `FolderFilesAdded`.
    AddFolderFiles {
        /// From `Registered`.
        peer_id: PeerId,
        /// The folder, added before with `AddFolder`.
        folder_id: FolderId,
        /// Number of the first page sent.
        first_page: u32,
        /// Consecutive pages.
        pages: Vec<Vec<FolderRef>>,
    },
    /// Stops advertising a folder (and its files) for this peer. Answered by `FolderRemoved`.
    RemoveFolder {
        /// From `Registered`.
        peer_id: PeerId,
        /// The folder.
        folder_id: FolderId,
    },
    /// Stops advertising a file for this peer. Answered by `FileRemoved`.
    RemoveFile {
        /// From `Registered`.
        peer_id: PeerId,
        /// The file to remove.
        file_id: FileId,
    },
    /// Removes the peer and all its files. Answered by `Unregistered`.
    Unregister {
        /// From `Registered`.
        peer_id: PeerId,
    },
    /// Finds a file by full id or unique prefix (at least 6 hex characters). Answered by `Found`
    /// or `Error { code: unknown_file | ambiguous_prefix | bad_request }`.
    Lookup {
        /// Lowercase hex id or prefix.
        id: String,
    },
    /// Lists files on the network. Answered by `Files`.
    ListFiles {},
    /// Lists files whose name contains every whitespace-separated word of `query`, ignoring
    /// case. Answered by `Files` (only the matches; `total` counts all matches), or
    /// `Error { code: bad_request }` for an empty or whitespace-only query or one over
    /// [`crate::MAX_QUERY_LEN`] bytes.
    Search {
        /// Words to look for.
        query: String,
    },
    /// Lists registered peers. Answered by `Peers`.
    ListPeers {},
    /// Asks the index to connect back to this connection's own source IP at `port`, as a
    /// downloader would, and say whether it got through (`p2p-transfer doctor`). Answered by
    /// `Probed`, or `Error { code: bad_request }` for port 0, `limit_exceeded` when this
    /// address probes too often, `busy` when the index runs too many probes. The index never
    /// connects anywhere else: there is no address field.
    Probe {
        /// The port this node's chunk server listens on.
        port: u16,
    },
}

/// A reply from the index server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IndexResponse {
    /// Accepts `Hello`.
    Welcome {
        /// The server's [`crate::PROTOCOL_VERSION`].
        version: u32,
        /// Always `index`.
        role: Role,
    },
    /// Accepts `Register`.
    Registered {
        /// The id the peer uses from now on, on connections showing the same node id.
        peer_id: PeerId,
        /// The address other peers are told to reach this peer at.
        #[serde(with = "display_fromstr")]
        addr: SocketAddr,
        /// How often the index expects a heartbeat, in milliseconds.
        heartbeat_interval_ms: u64,
        /// After how long without a heartbeat the peer is dropped, in milliseconds.
        heartbeat_timeout_ms: u64,
    },
    /// Accepts `Heartbeat`.
    HeartbeatAck {},
    /// Accepts `AddFile`.
    FileAdded {
        /// Id of the added file.
        file_id: FileId,
    },
    /// Accepts `AddFiles`.
    FilesAdded {
        /// Ids of the added files, in the order sent.
        file_ids: Vec<FileId>,
    },
    /// Accepts `AddFolder`.
    FolderAdded {
        /// The folder's id, computed from its head.
        folder_id: FolderId,
    },
    /// Accepts `AddFolderFiles`.
    FolderFilesAdded {
        /// How many files of the folder the index knows now.
        files: u64,
    },
    /// Accepts `RemoveFolder`.
    FolderRemoved {
        /// The folder.
        folder_id: FolderId,
    },
    /// Accepts `RemoveFile` (also when the peer did not host that file).
    FileRemoved {
        /// Id of the removed file.
        file_id: FileId,
    },
    /// Accepts `Unregister`.
    Unregistered {},
    /// Answers `Lookup`.
    Found {
        /// The full id.
        file_id: FileId,
        /// The manifest, as registered (its id is `file_id`).
        manifest: FileManifest,
        /// Peers that host the file, sorted by peer id, at most
        /// [`crate::MAX_HOSTS_PER_LOOKUP`] of them.
        hosts: Vec<HostInfo>,
    },
    /// Answers `Lookup` for a folder.
    FoundFolder {
        /// The full id.
        folder_id: FolderId,
        /// Its head (its id is `folder_id`).
        head: FolderHead,
        /// Peers that host the folder.
        hosts: Vec<HostInfo>,
    },
    /// Answers `Lookup` for a file known only as part of a folder: its manifest comes from a
    /// host (`GetManifest`).
    FoundInFolder {
        /// The full id.
        file_id: FileId,
        /// The folder it is in.
        folder_id: FolderId,
        /// Its path under the folder's root.
        path: String,
        /// Its size.
        size: u64,
        /// Peers that host the folder.
        hosts: Vec<HostInfo>,
    },
    /// Answers `ListFiles` and `Search`, sorted by name then id.
    Files {
        /// At most [`crate::MAX_LIST_ENTRIES`] entries.
        files: Vec<FileSummary>,
        /// How many files matched in all: every file for `ListFiles`, the matches for `Search`.
        total: u64,
    },
    /// Answers `ListPeers`, sorted by peer id.
    Peers {
        /// At most [`crate::MAX_LIST_ENTRIES`] entries.
        peers: Vec<PeerSummary>,
        /// How many peers the index knows in all.
        total: u64,
    },
    /// Answers `Probe`: what the index met when it connected back.
    Probed {
        /// Where it connected: the connection's source IP, the port asked for.
        #[serde(with = "display_fromstr")]
        addr: SocketAddr,
        /// Whether it got through, or why not.
        outcome: ProbeOutcome,
        /// One line for a human, with the detail (the other node's id, the error).
        message: String,
    },
    /// The request failed. See [`ErrorCode`] for which codes also close the connection.
    Error {
        /// Machine-readable reason.
        code: ErrorCode,
        /// One line for a human.
        message: String,
    },
}

/// What the index met when it connected back for a `Probe`. Travels as a snake_case string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeOutcome {
    /// TCP, TLS and the chunk conversation's `Hello` went through, and the node there proved
    /// the node id of the connection that asked: this node is reachable from the index.
    Reached,
    /// A p2p-transfer node answered there, but with another node id (another peer on that
    /// port, or the asker's connection came through a NAT that owns the address).
    OtherNode,
    /// The connection was refused: nothing listens there, or a firewall rejects it.
    Refused,
    /// No answer within the probe's time: a firewall most likely drops the connection.
    TimedOut,
    /// Anything else: no route, or something answered that is not a p2p-transfer peer.
    Failed,
    /// An outcome from a newer version of the protocol.
    #[serde(other)]
    Unknown,
}

impl fmt::Display for ProbeOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProbeOutcome::Reached => "reached",
            ProbeOutcome::OtherNode => "other_node",
            ProbeOutcome::Refused => "refused",
            ProbeOutcome::TimedOut => "timed_out",
            ProbeOutcome::Failed => "failed",
            ProbeOutcome::Unknown => "unknown",
        })
    }
}

/// A peer that hosts a file, as `Found` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    /// The host's registration.
    pub peer_id: PeerId,
    /// Its chunk server, `"ip:port"`.
    #[serde(with = "display_fromstr")]
    pub addr: SocketAddr,
    /// Who it is: the node id its connection to the index proved at registration. A
    /// downloader refuses a host at `addr` whose handshake shows another.
    pub node_id: NodeId,
}

/// One line of `Files`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSummary {
    /// Full id.
    pub file_id: FileId,
    /// Base name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// How many peers host it.
    pub hosts: u32,
    /// Present when this line is a folder: how many files it holds (`file_id` then holds the
    /// folder id's bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    /// Present for a file inside a folder: its path, the folder's name first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// One line of `Peers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSummary {
    /// Registration id.
    pub peer_id: PeerId,
    /// Who it is (from its connection's TLS handshake).
    pub node_id: NodeId,
    /// Chunk server address, `"ip:port"`.
    #[serde(with = "display_fromstr")]
    pub addr: SocketAddr,
    /// Files it hosts.
    pub files: u32,
    /// Milliseconds since it was last heard from: registration, heartbeat, or an accepted
    /// `AddFile`.
    pub last_seen_ms: u64,
}

/// A message from a downloader to a peer's chunk server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Must be the first message. Answered by `Welcome` or `Error { code: version_mismatch }`.
    Hello {
        /// The client's [`crate::PROTOCOL_VERSION`].
        version: u32,
    },
    /// Asks for the manifest of a file the peer hosts. Answered by `Manifest`, or
    /// `Error { code: unknown_file | file_unavailable }`.
    GetManifest {
        /// The file.
        file_id: FileId,
    },
    /// Asks for one chunk. Answered by `Chunk`, or `Error { code: unknown_file |
    /// chunk_out_of_range | file_unavailable | internal }`; the connection stays open after
    /// these errors.
    GetChunk {
        /// The file.
        file_id: FileId,
        /// Zero-based chunk index.
        index: u32,
    },
    /// Asks for a folder's head. Answered by `Folder`, or `Error { code: unknown_file |
    /// file_unavailable }`.
    GetFolder {
        /// The folder.
        folder_id: FolderId,
    },
    /// Asks for pages of a folder's file list. Answered by `FolderPages`.
    GetFolderPages {
        /// The folder.
        folder_id: FolderId,
        /// First page wanted.
        first: u32,
        /// Most pages wanted.
        count: u32,
    },
    /// A short text message for the peer's user, shown in its shell. Answered by
    /// `MessageReceived`, or `Error { code: bad_request }` when `text` is empty or over
    /// [`crate::MAX_MESSAGE_LEN`] bytes or `from` is over [`crate::MAX_SENDER_LEN`] bytes.
    /// Anyone may send one; the receiver shows the connection's source address beside `from`.
    Message {
        /// How the sender names itself (a peer sends its advertised address).
        from: String,
        /// The message.
        text: String,
    },
    /// The client has the file or folder `id` whole and verified, however it got it (from this
    /// peer, from other hosts, or already on its disk): a sender that waits for its items to
    /// arrive (`p2p-transfer send`) counts it delivered to this connection's node. Answered by
    /// `ReceivedAck`, or `Error { code: unknown_file }` when this peer shares no file or folder
    /// with that id; the connection stays open. Added to version 4 without a bump: a peer
    /// built before it answers `bad_request` and closes.
    Received {
        /// A file id, or a folder id's 32 bytes.
        id: FileId,
    },
}

/// A reply from a peer's chunk server (and its message inbox).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerResponse {
    /// Accepts `Hello`.
    Welcome {
        /// The peer's [`crate::PROTOCOL_VERSION`].
        version: u32,
        /// Always `peer`.
        role: Role,
    },
    /// Answers `GetManifest`.
    Manifest {
        /// The file asked for.
        file_id: FileId,
        /// Its manifest.
        manifest: FileManifest,
    },
    /// Answers `GetChunk`: the chunk's `size` bytes follow this frame on the connection at
    /// once, raw, outside any frame. The receiver must check them against the manifest's
    /// chunk hash. `size` is at most [`crate::CHUNK_SIZE`].
    Chunk {
        /// The file asked for.
        file_id: FileId,
        /// The chunk index asked for.
        index: u32,
        /// How many bytes of data follow.
        size: u32,
    },
    /// Answers `GetFolder`.
    Folder {
        /// The folder asked for.
        folder_id: FolderId,
        /// Its head.
        head: FolderHead,
    },
    /// Answers `GetFolderPages`.
    FolderPages {
        /// The folder asked for.
        folder_id: FolderId,
        /// Number of the first page sent.
        first: u32,
        /// Consecutive pages.
        pages: Vec<Vec<FolderItem>>,
    },
    /// Accepts `Message`.
    MessageReceived {},
    /// Accepts `Received`.
    ReceivedAck {},
    /// The request failed.
    Error {
        /// Machine-readable reason.
        code: ErrorCode,
        /// One line for a human.
        message: String,
    },
}

/// Addresses travel as text (`"127.0.0.1:8000"`, `"[::1]:8000"`), which every language parses,
/// instead of serde's compact binary form.
mod display_fromstr {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(addr: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(addr)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(D::Error::custom)
    }
}
