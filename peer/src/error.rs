//! [`PeerError`]: which step of a peer operation failed.

use std::net::SocketAddr;
use std::path::PathBuf;

use p2p_protocol::{ErrorCode, FileId, FolderId, NodeId, ProtocolError, RemoteText, printable};
use p2p_storage::StorageError;

/// A failed peer operation. Every variant reads as one line for a user, its cause included
/// in its text (and never also as `source()`, which would print it twice in a chain).
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The index server could not be reached or broke the connection, or what answered
    /// there does not speak this protocol (a reply it cannot read: said as such, not as
    /// "cannot reach").
    #[error("{}", index_trouble(*addr, cause))]
    IndexUnreachable {
        /// The server.
        addr: SocketAddr,
        /// What went wrong.
        cause: ProtocolError,
    },
    /// The chunk server could not bind its address.
    #[error("cannot listen on {addr}: {cause}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        cause: std::io::Error,
    },
    /// The index server refused a request.
    #[error("index server: {message}")]
    IndexRefused {
        /// Why, for code.
        code: ErrorCode,
        /// Why, for people (the index's words, shown escaped).
        message: RemoteText,
    },
    /// A local file operation failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An id the user typed is malformed.
    #[error(transparent)]
    BadId(#[from] p2p_protocol::IdParseError),
    /// The index answered with a manifest that does not hash to the id (a broken or lying index).
    #[error("the manifest the index sent for {0} does not match that id")]
    ManifestMismatch(FileId),
    /// The index answered with a folder head that does not hash to the id or breaks the
    /// folder rules (a broken or lying index).
    #[error("the folder record the index sent for {0} does not match that id")]
    FolderMismatch(FolderId),
    /// An id that names a folder, or a file known only inside one, where a file was needed.
    #[error("{} is a folder or a file inside one, not a file shared on its own", printable(.0))]
    NotAFile(String),
    /// Nobody hosts the file right now.
    #[error("no peer is hosting {} ({}) right now", printable(name), id.fmt_short())]
    NoHosts {
        /// File name.
        name: String,
        /// File id.
        id: FileId,
    },
    /// Every host failed before the download completed.
    #[error(
        "download of {} failed with {done} of {total} chunks complete: {}",
        printable(name),
        printable(reason)
    )]
    DownloadFailed {
        /// File name.
        name: String,
        /// Chunks verified and written.
        done: usize,
        /// Chunks in the file.
        total: usize,
        /// The last failure.
        reason: String,
    },
    /// The peer runs without an index server.
    #[error(
        "this peer runs without an index server (it was started with --from); give --server or --auto-discover"
    )]
    NoIndex,
    /// The DHT node could not start (its UDP port taken, a bootstrap name unknown).
    #[error("cannot start the DHT node: {0}")]
    Dht(String),
    /// No named host could give the manifest of a file.
    #[error(
        "cannot get the manifest of {id} from the hosts given ({})",
        printable(reason)
    )]
    NoManifest {
        /// The file.
        id: FileId,
        /// The last failure.
        reason: String,
    },
    /// A peer could not be reached or refused.
    #[error("peer {addr}: {cause}")]
    PeerUnreachable {
        /// The peer.
        addr: SocketAddr,
        /// What went wrong.
        cause: ProtocolError,
    },
    /// No shared file matches a prefix.
    #[error("this peer shares no file matching {0}")]
    NotSharedPrefix(String),
    /// A prefix typed here matches more than one of this peer's shared files, or of the peers
    /// it just listed: decided by this peer (the index's own answer is
    /// [`PeerError::IndexRefused`] with `ambiguous_prefix`).
    #[error("{} matches {count} {what}; type more characters", printable(prefix))]
    AmbiguousPrefix {
        /// What was typed.
        prefix: String,
        /// How many match.
        count: usize,
        /// What they are: "shared files", "peers".
        what: &'static str,
    },
    /// A manifest file names index servers this running peer does not use: it can't change
    /// its index, and the one it uses may not know the file's hosts.
    #[error("{0}")]
    OtherIndex(IndexConflict),
    /// The operation was cancelled (Ctrl-C, shutdown).
    #[error("cancelled")]
    Cancelled,
    /// The file is not shared by this peer.
    #[error("this peer does not share {}", .0.fmt_short())]
    NotShared(FileId),
    /// No download job has this handle.
    #[error("no download {0} on this peer")]
    UnknownDownload(crate::downloads::DownloadId),
    /// A running download cannot be resumed (cancel it first).
    #[error("download {0} is still running; cancel it first")]
    DownloadRunning(crate::downloads::DownloadId),
    /// A download's output folder is not an existing folder.
    #[error("the output folder {} does not exist or is not a folder", printable(&.0.display().to_string()))]
    NoOutputFolder(PathBuf),
    /// A download job with no file to fetch.
    #[error("nothing to download")]
    NothingToDownload,
    /// No registered peer has this id (or prefix) to send a message to.
    #[error("no peer \"{}\" is registered; give its host:port", printable(.0))]
    UnknownRecipient(String),
    /// A file or folder could not be shared.
    #[error("cannot share {}: {cause}", printable(&.path.display().to_string()))]
    Share {
        /// The file (for a folder, the file inside it that failed, or the folder).
        path: PathBuf,
        /// Why.
        cause: Box<PeerError>,
    },
    /// A folder to share could not be listed completely.
    #[error("cannot list every folder under {}", printable(&.0.display().to_string()))]
    IncompleteFolder(PathBuf),
    /// A folder record (a head, a page, a path in it) breaks a rule of folder records.
    #[error(transparent)]
    Folder(#[from] p2p_protocol::folder::FolderError),
    /// No host gave a folder's file list that checks out against its id.
    #[error(
        "cannot get the file list of folder {} ({}) from any host: {}",
        printable(name),
        id.fmt_short(),
        printable(reason)
    )]
    NoFolderRecord {
        /// The folder's name.
        name: String,
        /// Its id.
        id: p2p_protocol::FolderId,
        /// The last host's failure.
        reason: String,
    },
    /// A download ended with files not in place (conflicts, failures), as one line.
    #[error("{}", printable(.0))]
    FilesMissing(String),
    /// A background task failed unexpectedly.
    #[error("internal error: {0}")]
    Internal(String),
}

/// How a manifest file's index servers differ from the one a running peer uses (see
/// [`PeerError::OtherIndex`]). Its text is the command line's wording.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IndexConflict {
    /// The manifest names this peer's index, by address, with another node id.
    #[error(
        "the manifest names the index server at {addr} as {named}, but this peer knows it as {known}"
    )]
    OtherKey {
        /// The index's address.
        addr: SocketAddr,
        /// The node id the manifest gives it.
        named: NodeId,
        /// The node id this peer knows it by.
        known: NodeId,
    },
    /// The manifest names other index servers only (`named`, never empty); `ours` is the one
    /// this peer uses, if any.
    #[error(
        "the manifest names the index server at {}, but {}; start a peer with --server {} to download it",
        list(named),
        ours.map_or_else(
            || "this peer runs without an index server".to_owned(),
            |a| format!("this peer uses the one at {a}")
        ),
        named.first().map_or_else(String::new, ToString::to_string)
    )]
    OtherServers {
        /// The servers the manifest names, in its order.
        named: Vec<SocketAddr>,
        /// This peer's index server.
        ours: Option<SocketAddr>,
    },
}

fn list(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The line of [`PeerError::IndexUnreachable`]: something answered but not as an index
/// server of this version does, or nothing useful answered.
fn index_trouble(addr: SocketAddr, cause: &ProtocolError) -> String {
    match cause {
        ProtocolError::Decode(_)
        | ProtocolError::FrameTooLarge { .. }
        | ProtocolError::ChunkTooLarge(_)
        | ProtocolError::Unexpected(_) => unreadable(addr, cause),
        // A handshake cut short (a server at its connection limit) is no reply at all.
        ProtocolError::Tls(why) if !why.contains("closed the connection") => {
            unreadable(addr, cause)
        }
        cause => format!("cannot reach the index server at {addr}: {cause}"),
    }
}

fn unreadable(addr: SocketAddr, cause: &ProtocolError) -> String {
    format!(
        "the index server at {addr} sent a reply this program cannot read ({cause}); is \
             that address a p2p-transfer index server of this version?"
    )
}

impl PeerError {
    pub(crate) fn from_index(addr: SocketAddr, err: ProtocolError) -> Self {
        match err {
            ProtocolError::Remote { code, message } => PeerError::IndexRefused { code, message },
            cause => PeerError::IndexUnreachable { addr, cause },
        }
    }
}
