//! The p2p-transfer wire protocol: the shared vocabulary, its framing over any async stream,
//! and the `Hello` handshake; no disk, no sockets. Taking connections (accepting, admitting,
//! the request loop) is the `p2p-transport` crate's job.
//!
//! `docs/PROTOCOL.md` at the repository root is the full contract (byte layouts, every field,
//! every error reply, every limit); this summary and the types here must agree with it.
//!
//! # Conversations
//! * **peer ↔ index server** ([`IndexRequest`] / [`IndexResponse`]): a peer registers its chunk
//!   server address and gets a [`PeerId`], which belongs to its [`NodeId`]; it then adds files
//!   (manifests) and folders (a head, then pages of its file list), heartbeats every
//!   `heartbeat_interval_ms`, and unregisters on exit. Anyone may look files and folders up by
//!   id prefix (each host comes with its node id), search them by name, and list files and
//!   peers. A node may ask the index to connect back to it (`Probe`), to learn whether
//!   others can reach its chunk server.
//! * **downloader ↔ peer** ([`PeerRequest`] / [`PeerResponse`]): fetch a manifest, a chunk,
//!   or a folder's head and file list ([`folder`]), or leave a short text message for the
//!   peer's user.
//!
//! Every connection is TLS 1.3 over TCP, both sides presenting a certificate for their node's
//! Ed25519 key (the `p2p-transport` crate); inside it, it opens with `Hello { version }`, answered by
//! `Welcome { version, role }` or by `Error { code: version_mismatch }` and a close. After that the
//! client sends requests and reads exactly one response per request, in order.
//!
//! # Framing
//! A 4-byte big-endian length, then that many bytes holding one MessagePack value: a map with
//! one key, the message name, whose value maps field names to values ([`codec`]). Hashes are
//! `bin` of 32 bytes, node ids `bin` of 20; addresses are `"ip:port"` strings. A `Chunk` reply
//! is followed by the chunk's bytes, raw, outside any frame.
//!
//! # Errors
//! A request that fails gets `Error { code, message }`. Frames that are too large or can't be
//! decoded, and a wrong version, close the connection after the error reply; other errors leave
//! it open.
//!
//! # Layout
//! * [`types`]: [`FileId`], [`FolderId`], [`Sha256Hash`], [`PeerId`], [`FileManifest`], name
//!   rules.
//! * [`folder`]: a shared folder's head, its pages and their canonical bytes, and the checks a
//!   downloader makes while the pages stream in.
//! * [`message`]: the four message enums.
//! * [`codec`]: frames ↔ messages.
//! * [`connection`]: [`Connection`], typed send/receive over any async stream, and a chunk's
//!   raw bytes after its `Chunk`.
//! * [`handshake`]: the `Hello` exchange.
//! * [`manifest_file`]: the `.p2pm` file format (not on the wire; shared by tools).
//! * [`node_id`]: [`NodeId`], who a node is, derived from its public key.
//! * [`ticket`]: [`Ticket`], what `send` prints and `receive` reads (not on the wire).
//! * [`text`]: showing text that came from the network ([`printable`], [`RemoteText`]).
//! * [`error`][mod@error]: [`ProtocolError`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod codec;
pub mod connection;
pub mod error;
pub mod folder;
pub mod handshake;
pub mod manifest_file;
pub mod message;
pub mod node_id;
pub mod text;
pub mod ticket;
pub mod types;

pub use connection::{
    ChunkReply, Connection, IndexClientConnection, IndexServerConnection, PeerClientConnection,
    PeerServerConnection,
};
pub use error::ProtocolError;
pub use folder::{CheckedItem, FolderError, FolderHead, FolderItem, FolderRef, PageChecker};
pub use handshake::{
    Conversation, IndexConversation, PeerConversation, answer_hello, client_hello, server_hello,
};
pub use message::{
    ErrorCode, FileSummary, HostInfo, IndexRequest, IndexResponse, PeerRequest, PeerResponse,
    PeerSummary, ProbeOutcome, Role,
};
pub use node_id::{NodeId, NodeIdError};
pub use text::{RemoteText, printable};
pub use ticket::{Ticket, TicketError, TicketIndex, TicketItem};
pub use types::{
    FileId, FileManifest, FileNameError, FolderId, IdParseError, IdPrefix, ManifestError, PeerId,
    Sha256Hash, validate_file_name,
};

/// The version sent in `Hello`. Bumped on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 4;

/// Size of every chunk but the last: 4 MiB.
pub const CHUNK_SIZE: u32 = 4 * 1024 * 1024;

/// Largest frame body of a control message (everything but `Chunk`): 2 MiB, enough for the
/// manifest of the largest file allowed ([`MAX_CHUNKS_PER_FILE`] hashes, about 1.1 MB).
pub const MAX_CONTROL_FRAME_LEN: usize = 2 * 1024 * 1024;

/// Largest frame body a chunk server accepts: its requests are small (a `Message` of the
/// longest text is about 1.2 KB), so 64 KiB, and a client can't make it buffer megabytes per
/// connection.
pub const MAX_PEER_REQUEST_FRAME_LEN: usize = 64 * 1024;

/// Most chunks a manifest may list: 32,768, i.e. files up to 128 GiB.
pub const MAX_CHUNKS_PER_FILE: u32 = 32 * 1024;

/// Longest file name, in UTF-8 bytes.
pub const MAX_FILE_NAME_LEN: usize = 255;

/// Shortest id prefix a user may type.
pub const MIN_ID_PREFIX_LEN: usize = 6;

/// Longest peer-to-peer `Message` text, in bytes.
pub const MAX_MESSAGE_LEN: usize = 1024;

/// Longest `from` of a `Message`, in bytes.
pub const MAX_SENDER_LEN: usize = 64;

/// Deepest nesting of maps and arrays a frame body may have, the message's own map included.
/// Known messages nest at most 6 levels (a `FolderPages` item's chunk hashes); the rest is
/// room for fields added later.
pub const MAX_NESTING_DEPTH: usize = 32;

/// Longest `Search` query, in bytes.
pub const MAX_QUERY_LEN: usize = 1024;

/// Most hosts one `Found` reply lists; a downloader needs no more than that at once.
pub const MAX_HOSTS_PER_LOOKUP: usize = 256;

/// Most entries in one `Files` or `Peers` reply.
pub const MAX_LIST_ENTRIES: usize = 1000;

/// Most manifests one `AddFiles` request may carry.
pub const MAX_FILES_PER_ADD: usize = 1000;
