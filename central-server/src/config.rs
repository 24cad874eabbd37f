//! [`ServerConfig`]: every knob of the index server, with the defaults the CLI uses.

use std::time::Duration;

/// How the index server behaves. `Default` gives the documented production values.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// How often peers are told to heartbeat. Sent to each peer in `Registered`.
    pub heartbeat_interval: Duration,
    /// A peer silent for this long is dropped with its files. Three intervals by default, so
    /// one or two lost heartbeats never drop a live peer.
    pub heartbeat_timeout: Duration,
    /// Connections served at once. When all are taken, a newcomer closes the longest-idle
    /// connection that qualifies (connections of registered peers last, one answering a
    /// request never; `p2p_protocol::slots`), or is refused with `busy`.
    pub max_connections: usize,
    /// Connections one source address may hold at once; more are answered
    /// `limit_exceeded` and closed.
    pub max_connections_per_ip: usize,
    /// Registrations one source address may hold at once; `Register` beyond this gets
    /// `limit_exceeded`, so one client can't fill the index.
    pub max_peers_per_ip: usize,
    /// Registered peers at once; `Register` beyond this gets `limit_exceeded`.
    pub max_peers: usize,
    /// Files one peer may add; `AddFile` beyond this gets `limit_exceeded`.
    pub max_files_per_peer: usize,
    /// A connection that sends no complete request for this long is closed, which also cuts
    /// off clients that trickle bytes. Peers heartbeat well within it.
    pub idle_timeout: Duration,
    /// A connection that sends no complete request this long after `Welcome` (or
    /// `idle_timeout`, if shorter) is closed, so connections that only say `Hello` don't hold
    /// slots. Clients send their first request right after the handshake.
    pub first_request_timeout: Duration,
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
            idle_timeout: Duration::from_secs(60),
            first_request_timeout: Duration::from_secs(10),
        }
    }
}
