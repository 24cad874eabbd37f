//! [`Downloads`]: every download this peer started for a shell, a script or the web API, kept
//! with its live progress so any front end can list, cancel and resume it. One registry per
//! node; the shells and the API read the same entries.
//!
//! A download here is a *job*: one or more [`DownloadRequest`]s (a file, or every file of a
//! folder manifest) fetched one after another into one output folder, with one handle.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use p2p_protocol::FileId;

use crate::inbox::ReceivedMessage;

/// The handle of one download job: small, stable for the node's lifetime, never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DownloadId(pub u64);

impl std::fmt::Display for DownloadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where a download job stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DownloadState {
    /// Asking the index (or the named hosts) for the manifest and hosts.
    LookingUp,
    /// Chunks are arriving.
    Running,
    /// Every chunk is verified; the file is being flushed before it gets its name.
    Flushing,
    /// Complete and verified.
    Done,
    /// Ended by an error (the message, printable).
    Failed(String),
    /// Cancelled by a user; part files are kept for a resume.
    Cancelled,
}

impl DownloadState {
    /// Whether the job has ended (done, failed or cancelled).
    pub fn is_finished(&self) -> bool {
        matches!(self, Self::Done | Self::Failed(_) | Self::Cancelled)
    }
}

/// A snapshot of one download job, for listings and live views.
#[derive(Clone, Debug, PartialEq)]
pub struct DownloadInfo {
    /// Its handle.
    pub id: DownloadId,
    /// What the user asked for: an id, a prefix, or a manifest file's name.
    pub target: String,
    /// The output folder.
    pub out: PathBuf,
    /// The name of the file being fetched (the folder's name for a folder job), once known.
    pub name: Option<String>,
    /// The file id being fetched now, once known.
    pub file_id: Option<FileId>,
    /// Files in the job, and files finished.
    pub files_total: usize,
    /// Files finished.
    pub files_done: usize,
    /// Bytes of the whole job, once known (0 before).
    pub size: u64,
    /// Bytes verified and written, resumed bytes included.
    pub done: u64,
    /// Bytes that were already on disk from an earlier run.
    pub resumed: u64,
    /// Bytes per second fetched in this run, over the last few seconds.
    pub speed: f64,
    /// Time left at that speed, while running.
    pub eta: Option<Duration>,
    /// Hosts known for the current file.
    pub hosts_known: usize,
    /// Hosts that delivered at least one chunk of the current file.
    pub hosts_delivering: usize,
    /// Where the job stands.
    pub state: DownloadState,
    /// The finished file (or folder) on disk, when done.
    pub path: Option<PathBuf>,
    /// When the job started (wall clock).
    pub started: SystemTime,
    /// Time from start to now, or to its end.
    pub elapsed: Duration,
    /// Bumped on every change, so a live view sends only what moved.
    pub version: u64,
}

/// Something a live view (the API's event stream, the shell) wants to know about. Sent on
/// state changes only, never per chunk: progress is read from [`DownloadInfo::version`].
#[derive(Clone, Debug)]
pub enum PeerChange {
    /// A download job started, changed state or ended.
    Download(DownloadId),
    /// This peer started sharing a file.
    FileShared(FileId),
    /// This peer stopped sharing a file.
    FileUnshared(FileId),
    /// A message arrived or was sent.
    Message(ReceivedMessage),
}

/// What the shells' and the API's `status` show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// This peer's node id.
    pub node_id: p2p_protocol::NodeId,
    /// Where the chunk server listens.
    pub listen_addr: SocketAddr,
    /// The address the index hands out for this peer, once registered.
    pub advertised_addr: Option<SocketAddr>,
    /// The index server, if the peer uses one.
    pub server_addr: Option<SocketAddr>,
    /// The index's node id, as its last handshake showed it.
    pub server_node_id: Option<p2p_protocol::NodeId>,
    /// Whether the peer is registered with the index right now.
    pub registered: bool,
    /// Files shared.
    pub files_shared: usize,
    /// Chunks served to other peers.
    pub chunks_served: u64,
    /// Download jobs not finished.
    pub downloads_active: usize,
    /// Hosts named for direct downloads (`--from`, `connect`).
    pub direct_hosts: Vec<SocketAddr>,
}
