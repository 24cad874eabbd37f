//! [`PeerConfig`]: everything a peer needs to know, with the defaults the CLI uses.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Finds the index server again after it became unreachable, e.g. by browsing mDNS. The peer
/// library knows nothing of how; the binary supplies this.
pub trait Rediscover: Send + Sync + fmt::Debug {
    /// The server's current address, or `None` if it can't be found right now.
    fn rediscover(&self) -> Pin<Box<dyn Future<Output = Option<SocketAddr>> + Send + '_>>;
}

/// How a peer behaves. `Default` gives the documented production values.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// Where the chunk server listens. Port 0 picks a free port.
    pub listen_addr: SocketAddr,
    /// The index server; `None` for a peer that only downloads directly from named peers and
    /// serves whoever connects.
    pub server_addr: Option<SocketAddr>,
    /// The index server's node id, if known (pinned with `--server-id`, or remembered): an
    /// index that shows another in its TLS handshake is refused, at start and on every
    /// reconnection. `None`: whichever node answers at `server_addr`.
    pub server_id: Option<p2p_protocol::NodeId>,
    /// The address other peers should use, when the listen address is not reachable as is
    /// (NAT, a container). `None`: the listen address, or, when that is `0.0.0.0`/`[::]`, the
    /// address the index sees our connection come from.
    pub advertise_addr: Option<SocketAddr>,
    /// Chunks downloaded at once, across all hosts: this many whole (4 MiB) chunks, or up to
    /// 32 times as many smaller ones (small files) within the same bytes. Bounds download
    /// memory at about 2 x workers x 4 MiB.
    pub workers: usize,
    /// Inbound chunk-server connections served at once. When all are taken, a newcomer
    /// closes the longest-idle connection that qualifies; failing that, one sending a chunk
    /// for 10 s or more (a client reading too slowly), and failing that, any connection of
    /// the address holding the most, if that is at least two more than the newcomer's
    /// address holds (`p2p_transport::slots`, fair share). Otherwise it gets a `busy` reply.
    /// So a downloader from an address holding nothing gets in unless every address holds at
    /// most one connection.
    pub max_inbound: usize,
    /// Inbound connections one source address may hold at once; more get a `busy` reply.
    pub max_inbound_per_ip: usize,
    /// Limit on connecting to another node.
    pub connect_timeout: Duration,
    /// Limit on one request/reply to the index server, connection included.
    pub index_timeout: Duration,
    /// Limit on one chunk request/reply (a whole 4 MiB chunk must arrive within it).
    pub request_timeout: Duration,
    /// A host that fails this many chunk requests is dropped from that download.
    pub max_host_failures: u32,
    /// With every host gone, how long a download keeps asking the index for hosts before it
    /// gives up (keeping its part file for a resume).
    pub stall_timeout: Duration,
    /// Inbound connections idle for this long are closed.
    pub idle_timeout: Duration,
    /// An inbound connection that sends no complete request this long after `Welcome` (or
    /// `idle_timeout`, if shorter) is closed, so connections that only say `Hello` don't hold
    /// slots. Downloaders send their first request right after the handshake.
    pub first_request_timeout: Duration,
    /// Who may download from this peer and send it messages (`--allow-peers`): everyone by
    /// default.
    pub allow_peers: p2p_identity::Allowed,
    /// Asked for a new index address when heartbeats can't reach the current one. `None`:
    /// keep retrying the same address.
    pub rediscover: Option<Arc<dyn Rediscover>>,
    /// Share each download once it is whole (announced to the index, served from the handle
    /// it was written with). Off for a peer that exits right after its downloads (`peer
    /// --download` with nothing to share): it would announce a file only to withdraw it.
    pub share_downloads: bool,
}

impl Default for PeerConfig {
    fn default() -> Self {
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 8001)),
            server_addr: Some(SocketAddr::from(([127, 0, 0, 1], 8000))),
            server_id: None,
            advertise_addr: None,
            workers: 8,
            max_inbound: 64,
            max_inbound_per_ip: 32,
            connect_timeout: Duration::from_secs(5),
            index_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_host_failures: 3,
            stall_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            first_request_timeout: Duration::from_secs(10),
            rediscover: None,
            allow_peers: p2p_identity::Allowed::everyone(),
            share_downloads: true,
        }
    }
}
