//! [`ServerConfig`]: every knob of the index server, with the defaults the CLI uses.

use std::time::Duration;

/// One mebibyte, for the byte budgets below.
pub const MIB: usize = 1024 * 1024;

/// How the index server behaves. `Default` gives the documented production values.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// How often peers are told to heartbeat. Sent to each peer in `Registered`.
    pub heartbeat_interval: Duration,
    /// A peer silent for this long is dropped with its files. Three intervals by default, so
    /// one or two lost heartbeats never drop a live peer.
    pub heartbeat_timeout: Duration,
    /// Connections served at once. When all are taken, a newcomer closes the longest-idle
    /// connection that qualifies (connections of registered peers last). One whose request is
    /// being answered is never closed for it, however long the answer waits; one whose reply
    /// has been being written for 2 s (a client reading too slowly) may be, if nothing idle
    /// qualifies (`p2p_transport::slots`). Otherwise the newcomer is refused with `busy`.
    pub max_connections: usize,
    /// Connections one source address may hold at once; more are answered
    /// `limit_exceeded` and closed.
    pub max_connections_per_ip: usize,
    /// Registrations one source address may hold at once; `Register` beyond this gets
    /// `limit_exceeded`, so one client can't fill the index.
    pub max_peers_per_ip: usize,
    /// Registered peers at once; `Register` beyond this gets `limit_exceeded`.
    pub max_peers: usize,
    /// Top-level files one peer may add; `AddFile` or `AddFiles` beyond this gets
    /// `limit_exceeded`. Files inside folders don't count here.
    pub max_files_per_peer: usize,
    /// Folders one peer may add; `AddFolder` beyond this gets `limit_exceeded`.
    pub max_folders_per_peer: usize,
    /// Files the folders of one peer may hold in all, as their heads declare; an `AddFolder`
    /// that would pass it gets `limit_exceeded`. The byte budgets bind too: a file inside a
    /// folder costs about 140 bytes (`crate::folders`).
    pub max_folder_files_per_peer: u64,
    /// A connection that sends no complete request for this long is closed, which also cuts
    /// off clients that trickle bytes. Peers heartbeat well within it.
    pub idle_timeout: Duration,
    /// A connection that sends no complete request this long after `Welcome` (or
    /// `idle_timeout`, if shorter) is closed, so connections that only say `Hello` don't hold
    /// slots. Clients send their first request right after the handshake.
    pub first_request_timeout: Duration,
    /// Bytes of manifests the whole index may store (one copy per file, plus a small
    /// accounted overhead per file and per host). `AddFile` beyond this gets
    /// `limit_exceeded`, so memory stays bounded whatever clients send. 256 MiB holds about
    /// half a million small files.
    pub max_index_bytes: usize,
    /// Bytes of manifests charged to the peers of one source address. Each host is charged the
    /// whole manifest of every file it adds, even one another peer stored first, so a client
    /// can't dodge its share by adding popular files and keep them alive after their owners
    /// leave. Keeps one address from filling [`ServerConfig::max_index_bytes`].
    pub max_index_bytes_per_ip: usize,
    /// Bytes of manifests charged to one peer, as for the per-address budget, so one of many
    /// peers behind a NAT can't take its neighbours' share.
    pub max_index_bytes_per_peer: usize,
    /// `Register` requests one source address may make per second, on average. A burst of
    /// [`ServerConfig::max_peers_per_ip`] is allowed, so every peer behind a NAT can register
    /// again at once after a restart; churning registrations to pick peer ids gets
    /// `limit_exceeded`.
    pub register_rate_per_ip: u32,
    /// `Search` requests one source address may make per second, on average, with a burst of
    /// twice that. A search reads every file name, so this keeps one client from taking the
    /// server's time; beyond it the reply is `limit_exceeded`.
    pub search_rate_per_ip: u32,
    /// Bytes of large frames (over [`crate::budget::FREE_FRAME_LEN`]) the server buffers at
    /// once across all connections: requests being read and replies being written. A
    /// connection waits for room before it reads such a frame's body, so idle clients that
    /// announce big frames cost a few bytes each. At least twice the largest frame.
    pub max_buffered_bytes: usize,
    /// The same for the connections of one source address, so one address can't take all of
    /// [`ServerConfig::max_buffered_bytes`]. At least the largest frame (2 MiB).
    pub max_buffered_bytes_per_ip: usize,
    /// Who may register (`--allow-peers`): everyone by default. Anyone may still look files
    /// up, search and list.
    pub allow_peers: p2p_identity::Allowed,
    /// Whether `Probe` is answered (`--no-probe` turns it off; then every `Probe` is refused
    /// with `forbidden` and the index connects nowhere). Off suits an index behind a TCP proxy
    /// or port forwarder, where every connection seems to come from the proxy, so a probe
    /// would knock on the proxy's machine rather than the asker's.
    pub probes: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_timeout: Duration::from_secs(15),
            max_connections: 8192,
            max_connections_per_ip: 64,
            max_peers_per_ip: 64,
            max_peers: 10_000,
            max_files_per_peer: 10_000,
            max_folders_per_peer: 64,
            max_folder_files_per_peer: 1 << 20,
            idle_timeout: Duration::from_secs(60),
            first_request_timeout: Duration::from_secs(10),
            max_index_bytes: 256 * MIB,
            max_index_bytes_per_ip: 64 * MIB,
            max_index_bytes_per_peer: 32 * MIB,
            register_rate_per_ip: 1,
            search_rate_per_ip: 5,
            max_buffered_bytes: 64 * MIB,
            max_buffered_bytes_per_ip: 8 * MIB,
            allow_peers: p2p_identity::Allowed::everyone(),
            probes: true,
        }
    }
}
