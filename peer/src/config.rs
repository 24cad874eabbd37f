//! [`PeerConfig`]: everything a peer needs to know, with the defaults the CLI uses.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Finds an index server again after it became unreachable, e.g. by browsing mDNS. The peer
/// library knows nothing of how; the binary supplies this.
pub trait Rediscover: Send + Sync + fmt::Debug {
    /// The server's current address, or `None` if it can't be found right now.
    fn rediscover(&self) -> Pin<Box<dyn Future<Output = Option<SocketAddr>> + Send + '_>>;
}

/// One index server a peer registers with.
#[derive(Clone, Debug)]
pub struct IndexSpec {
    /// Its address.
    pub addr: SocketAddr,
    /// Its node id, if known (pinned with `--server-id`, or remembered): an index that shows
    /// another in its TLS handshake is refused, at start and on every reconnection. `None`:
    /// whichever node answers at `addr`.
    pub node_id: Option<p2p_protocol::NodeId>,
    /// Asked for a new address when heartbeats can't reach this index (the one found over
    /// mDNS). `None`: keep retrying the same address.
    pub rediscover: Option<Arc<dyn Rediscover>>,
}

impl IndexSpec {
    /// The index at `addr`, whichever node answers there.
    pub fn at(addr: SocketAddr) -> Self {
        Self {
            addr,
            node_id: None,
            rediscover: None,
        }
    }

    /// The index at `addr` that must prove `node_id` (if given).
    pub fn expecting(mut self, node_id: Option<p2p_protocol::NodeId>) -> Self {
        self.node_id = node_id;
        self
    }
}

/// How a peer behaves. `Default` gives the documented production values.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// Where the chunk server listens. Port 0 picks a free port.
    pub listen_addr: SocketAddr,
    /// The index servers, in order (the first given first): the peer registers with every
    /// one, heartbeats each and asks all of them. Empty for a peer that only downloads
    /// directly from named peers and serves whoever connects (until an index is added).
    pub indexes: Vec<IndexSpec>,
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
    /// Share each download once it is whole (announced to the index, served from the handle
    /// it was written with). Off for a peer that exits right after its downloads (`peer
    /// --download` with nothing to share): it would announce a file only to withdraw it.
    pub share_downloads: bool,
    /// Take part in the DHT: announce what is shared, find hosts of ids no index knows.
    /// `None`: no DHT.
    pub dht: Option<crate::dht::DhtSettings>,
}

impl Default for PeerConfig {
    fn default() -> Self {
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 8001)),
            indexes: vec![IndexSpec::at(SocketAddr::from(([127, 0, 0, 1], 8000)))],
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
            allow_peers: p2p_identity::Allowed::everyone(),
            share_downloads: true,
            dht: None,
        }
    }
}
