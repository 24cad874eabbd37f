//! Every JSON shape the API sends or takes. These are the contract docs/API.md documents:
//! field names are snake_case, ids are strings (file ids in hex, node ids in their base32
//! form), sizes are bytes, times are milliseconds. They are built from library types here,
//! in one place, so a library change never silently changes the API.
//!
//! Text that came from the network (names, messages) goes out in its printable form: control
//! and bidirectional characters escaped, as the command line shows them.

use std::time::{SystemTime, UNIX_EPOCH};

use p2p_peer::{DownloadInfo, DownloadState, PeerStatus, ReceivedMessage, SharedFileInfo};
use p2p_protocol::{FileSummary, PeerSummary, printable};
use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch (0 for a clock before it).
fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn text(s: &str) -> String {
    printable(s).to_string()
}

// ---------------------------------------------------------------------------------------
// Peer

/// `GET /api/v1/status` on a peer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerStatusView {
    /// Always `"peer"`.
    pub role: String,
    /// The program's version.
    pub version: String,
    /// This peer's node id.
    pub node_id: String,
    /// Where its chunk server listens.
    pub listen_addr: String,
    /// The address the (first) index that registered it hands out for it.
    pub advertised_addr: Option<String>,
    /// The first index server's address, if it uses one (`indexes` has them all).
    pub server_addr: Option<String>,
    /// The first index's node id, as its last handshake showed it.
    pub server_node_id: Option<String>,
    /// How the first index was found (`"--server"`, `"mDNS"`, ...), if known.
    pub found_index_by: Option<String>,
    /// Whether at least one index has it registered right now.
    pub registered: bool,
    /// Every index server it uses, in order, and where it stands with each.
    pub indexes: Vec<IndexView>,
    /// Files it shares.
    pub files_shared: usize,
    /// Chunks it has served.
    pub chunks_served: u64,
    /// Downloads not finished.
    pub downloads_active: usize,
    /// Hosts named for direct downloads.
    pub direct_hosts: Vec<String>,
}

/// One index server a peer uses, in its status.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IndexView {
    /// Its address.
    pub addr: String,
    /// Its node id, as its last handshake showed it (or as pinned, before one).
    pub node_id: Option<String>,
    /// `"connecting"` (first attempt not over), `"registered"` or `"down"` (retrying).
    pub state: String,
    /// Why it is down: the error a user sees.
    pub error: Option<String>,
    /// The peer id this index gave the peer (each index numbers its own).
    pub peer_id: Option<String>,
    /// The address this index hands out for the peer.
    pub advertised_addr: Option<String>,
}

impl IndexView {
    /// The view of `index`.
    pub fn new(index: &p2p_peer::IndexStatus) -> Self {
        let (state, error) = match &index.state {
            p2p_peer::IndexState::Connecting => ("connecting", None),
            p2p_peer::IndexState::Registered => ("registered", None),
            p2p_peer::IndexState::Down(why) => ("down", Some(why.clone())),
        };
        Self {
            addr: index.addr.to_string(),
            node_id: index.node_id.map(|n| n.to_string()),
            state: state.into(),
            error,
            peer_id: index.peer_id.map(|p| p.to_string()),
            advertised_addr: index.advertised_addr.map(|a| a.to_string()),
        }
    }
}

impl PeerStatusView {
    /// The view of `status`.
    pub fn new(status: &PeerStatus, found_index_by: Option<String>) -> Self {
        Self {
            role: "peer".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            node_id: status.node_id.to_string(),
            listen_addr: status.listen_addr.to_string(),
            advertised_addr: status.advertised_addr.map(|a| a.to_string()),
            server_addr: status.server_addr.map(|a| a.to_string()),
            server_node_id: status.server_node_id.map(|n| n.to_string()),
            found_index_by,
            registered: status.registered,
            indexes: status.indexes.iter().map(IndexView::new).collect(),
            files_shared: status.files_shared,
            chunks_served: status.chunks_served,
            downloads_active: status.downloads_active,
            direct_hosts: status.direct_hosts.iter().map(|a| a.to_string()).collect(),
        }
    }
}

/// One file or folder this peer shares (`GET /api/v1/files`, `POST /api/v1/shares`, the
/// `file_shared` event): a folder shared as a whole is one line, as on the network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedFileView {
    /// `"file"` or `"folder"`.
    pub kind: String,
    /// Its id (64 hex digits): the file id, or the folder id for a folder.
    pub file_id: String,
    /// Its name.
    pub name: String,
    /// Its size in bytes (a folder's: all its files).
    pub size: u64,
    /// Files in it: 1 for a file.
    pub files: u64,
    /// Where it is read from (a folder: the path it was shared by).
    pub path: String,
}

impl From<&SharedFileInfo> for SharedFileView {
    fn from(f: &SharedFileInfo) -> Self {
        Self {
            kind: if f.files.is_some() { "folder" } else { "file" }.into(),
            file_id: f.file_id.to_string(),
            name: text(&f.name),
            size: f.size,
            files: f.files.unwrap_or(1),
            path: text(&f.path.display().to_string()),
        }
    }
}

/// `GET /api/v1/files`, and the answer to `POST /api/v1/shares`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedFilesView {
    /// The files.
    pub files: Vec<SharedFileView>,
}

/// `POST /api/v1/shares`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareBody {
    /// A file or folder on this peer's machine.
    pub path: String,
}

/// `DELETE /api/v1/shares/{id}` answers with the id no longer shared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsharedView {
    /// The full id of the file no longer shared.
    pub file_id: String,
}

/// One file or folder on the network (`GET /api/v1/network/files`, and the server's
/// `/files`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkFileView {
    /// `"file"` or `"folder"`.
    pub kind: String,
    /// Its id: the file id, or the folder id for a folder (either downloads it).
    pub file_id: String,
    /// Its name.
    pub name: String,
    /// Its size in bytes (a folder's: all its files).
    pub size: u64,
    /// Files in it: 1 for a file.
    pub files: u64,
    /// For a file inside a shared folder, its path from the folder's root, the folder's name
    /// first (`album/2019/a.jpg`); `null` otherwise.
    pub path: Option<String>,
    /// Peers hosting it.
    pub hosts: u32,
}

impl From<&FileSummary> for NetworkFileView {
    fn from(f: &FileSummary) -> Self {
        Self {
            kind: if f.files.is_some() { "folder" } else { "file" }.into(),
            file_id: f.file_id.to_string(),
            name: text(&f.name),
            size: f.size,
            files: f.files.unwrap_or(1),
            path: f.path.as_deref().map(text),
            hosts: f.hosts,
        }
    }
}

/// `GET /api/v1/network/files`, and the server's `GET /api/v1/files`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkFilesView {
    /// Up to the index's list limit of files.
    pub files: Vec<NetworkFileView>,
    /// How many match in all (may be more than listed).
    pub total: u64,
}

/// One peer the index knows (`GET /api/v1/peers` on both roles).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerView {
    /// Its registration id.
    pub peer_id: String,
    /// Its node id (proved in its TLS handshake with the index).
    pub node_id: String,
    /// Its chunk server's address.
    pub addr: String,
    /// Files it hosts.
    pub files: u32,
    /// Milliseconds since the index last heard from it (its heartbeat age).
    pub last_seen_ms: u64,
    /// Whether this is the peer answering (always `false` on the server).
    pub this_peer: bool,
}

impl PeerView {
    /// The view of `p`; `me` is the answering peer's node id, if a peer answers.
    pub fn new(p: &PeerSummary, me: Option<p2p_protocol::NodeId>) -> Self {
        Self {
            peer_id: p.peer_id.to_string(),
            node_id: p.node_id.to_string(),
            addr: p.addr.to_string(),
            files: p.files,
            last_seen_ms: p.last_seen_ms,
            this_peer: me == Some(p.node_id),
        }
    }
}

/// `GET /api/v1/peers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeersView {
    /// Up to the index's list limit of peers.
    pub peers: Vec<PeerView>,
    /// How many in all.
    pub total: u64,
}

/// `POST /api/v1/downloads`: exactly one of `id` and `manifest`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadBody {
    /// A file or folder id, or a unique prefix of one.
    #[serde(default)]
    pub id: Option<String>,
    /// The text of a `.p2pm` manifest file (a file or a folder), checked as on the command
    /// line.
    #[serde(default)]
    pub manifest: Option<String>,
    /// The output folder (must exist).
    pub out: String,
}

/// One download job (`GET /api/v1/downloads[/{handle}]`, the `download` event).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DownloadView {
    /// Its handle, for `GET`/`DELETE /api/v1/downloads/{handle}`.
    pub handle: u64,
    /// The job's version: a number that grows with every change to any job of the node, so
    /// of two views of one job the one with the higher version is the newer (responses and
    /// events can arrive out of order).
    pub version: u64,
    /// What was asked for: an id, a prefix or a manifest file's name.
    pub target: String,
    /// The output folder.
    pub out: String,
    /// The file (or folder) name, once known.
    pub name: Option<String>,
    /// The file's id, once known (`null` for a folder).
    pub file_id: Option<String>,
    /// The folder's id, for a folder, once known.
    pub folder_id: Option<String>,
    /// Files in the job, once known (0 before).
    pub files_total: usize,
    /// Files in place: fetched, or found already there.
    pub files_done: usize,
    /// Of those, files found already there (identical, checked by hash), not fetched.
    pub files_skipped: usize,
    /// Files whose target holds something else, left as it is and not fetched.
    pub conflicts: usize,
    /// Files that could not be fetched in this run.
    pub files_failed: usize,
    /// Bytes in the job, once known.
    pub size: u64,
    /// Bytes verified and written (resumed bytes included).
    pub done: u64,
    /// Bytes that were on disk already from an earlier run.
    pub resumed: u64,
    /// `done / size` as a percentage (100 for an empty job that is done).
    pub percent: f64,
    /// Bytes per second fetched in this run, over the last few seconds.
    pub speed_bps: f64,
    /// Seconds left at that speed, while running.
    pub eta_secs: Option<f64>,
    /// Hosts known for the job.
    pub hosts_known: usize,
    /// Hosts that delivered chunks in this run.
    pub hosts_delivering: usize,
    /// `looking_up`, `running`, `flushing`, `done`, `failed` or `cancelled`.
    pub state: String,
    /// Why it failed, when `state` is `failed`.
    pub error: Option<String>,
    /// The finished file or folder, when done.
    pub path: Option<String>,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// Milliseconds from start to now, or to its end.
    pub elapsed_ms: u64,
}

impl From<&DownloadInfo> for DownloadView {
    fn from(d: &DownloadInfo) -> Self {
        let (state, error) = match &d.state {
            DownloadState::LookingUp => ("looking_up", None),
            DownloadState::Running => ("running", None),
            DownloadState::Flushing => ("flushing", None),
            DownloadState::Done => ("done", None),
            DownloadState::Failed(err) => ("failed", Some(text(err))),
            DownloadState::Cancelled => ("cancelled", None),
        };
        let percent = d.percent();
        Self {
            handle: d.id.0,
            version: d.version,
            target: text(&d.target),
            out: text(&d.out.display().to_string()),
            name: d.name.as_deref().map(text),
            file_id: d.file_id.map(|f| f.to_string()),
            folder_id: d.folder_id.map(|f| f.to_string()),
            files_total: d.files_total,
            files_done: d.files_done,
            files_skipped: d.files_skipped,
            conflicts: d.conflicts,
            files_failed: d.files_failed,
            size: d.size,
            done: d.done,
            resumed: d.resumed,
            percent,
            speed_bps: d.speed,
            eta_secs: d.eta.map(|e| e.as_secs_f64()),
            hosts_known: d.hosts_known,
            hosts_delivering: d.hosts_delivering,
            state: state.into(),
            error,
            path: d.path.as_ref().map(|p| text(&p.display().to_string())),
            started_unix_ms: unix_ms(d.started),
            elapsed_ms: u64::try_from(d.elapsed.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// `GET /api/v1/downloads`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DownloadsView {
    /// Every job of this run, oldest first.
    pub downloads: Vec<DownloadView>,
}

/// `POST /api/v1/hosts`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostBody {
    /// A peer's `host:port`.
    pub addr: String,
}

/// `GET /api/v1/hosts`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostsView {
    /// Hosts named for direct downloads.
    pub hosts: Vec<String>,
}

/// `POST /api/v1/messages`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageBody {
    /// `host:port`, or a peer id (or unique prefix) the index knows.
    pub to: String,
    /// The text.
    pub text: String,
}

/// One message, received or sent (`GET /api/v1/messages`, the `message` event).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageView {
    /// `in` (received) or `out` (sent by this peer).
    pub direction: String,
    /// The other peer's node id (proved in the TLS handshake).
    pub node_id: String,
    /// The name this peer's allow-list gives it, if any.
    pub name: Option<String>,
    /// For `in`: how the sender named itself (its words); for `out`: this peer's address.
    pub from: String,
    /// The other peer's address.
    pub remote: String,
    /// The text.
    pub text: String,
    /// When it arrived or was sent, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

impl From<&ReceivedMessage> for MessageView {
    fn from(m: &ReceivedMessage) -> Self {
        Self {
            direction: if m.sent { "out" } else { "in" }.into(),
            node_id: m.node.to_string(),
            name: m.name.as_deref().map(text),
            from: m.from.to_string(),
            remote: m.remote.to_string(),
            text: m.text.to_string(),
            at_unix_ms: unix_ms(m.at),
        }
    }
}

/// `GET /api/v1/messages`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessagesView {
    /// Recent messages, oldest first.
    pub messages: Vec<MessageView>,
}

/// The answer to `POST /api/v1/messages`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageSentView {
    /// The node id of the peer that took the message.
    pub node_id: String,
}

/// The answer to an upload: the file, now shared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadView {
    /// Its id.
    pub file_id: String,
    /// Its name in the upload folder.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Where it was written.
    pub path: String,
}

/// The first event of a peer's stream, and the one sent again after a client fell behind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerSnapshotView {
    /// Status.
    pub status: PeerStatusView,
    /// Files shared.
    pub files: Vec<SharedFileView>,
    /// Download jobs.
    pub downloads: Vec<DownloadView>,
    /// Recent messages.
    pub messages: Vec<MessageView>,
}

// ---------------------------------------------------------------------------------------
// Server

/// `GET /api/v1/status` on the index server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatusView {
    /// Always `"server"`.
    pub role: String,
    /// The program's version.
    pub version: String,
    /// The index's node id.
    pub node_id: String,
    /// Where it listens for peers.
    pub listen_addr: String,
    /// Its mDNS instance name, when it advertises.
    pub mdns_name: Option<String>,
    /// Milliseconds since it started.
    pub uptime_ms: u64,
    /// Registered peers.
    pub peers: usize,
    /// Distinct files.
    pub files: usize,
    /// Bytes of manifests stored, as the budget counts them.
    pub stored_bytes: usize,
    /// The most it may store.
    pub max_stored_bytes: usize,
}

/// The first event of the server's stream: the answers of its three endpoints, each in the
/// shape of its own event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerSnapshotView {
    /// As `GET /status`.
    pub status: ServerStatusView,
    /// As `GET /peers`.
    pub peers: PeersView,
    /// As `GET /files`.
    pub files: NetworkFilesView,
}
