//! The peer in the DHT (`--dht`): every id it shares on its own (files and folders) is kept
//! announced with the chunk server's port, and the hosts of an id no index knows (or with no
//! index reachable) are looked up there.
//!
//! The DHT is private: it is joined only through the nodes the peer is given
//! (`DhtSettings::config`'s bootstrap), those it remembers ([`p2p_dht::RoutingCache`], beside its
//! key) and the peers its indexes list (at their address, on this peer's own DHT port: a site
//! runs the DHT on one port). Hosts found there are claims: unpinned, and every chunk they send
//! is verified like any host's, so a lying node can waste time but never deliver wrong bytes.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;

use p2p_dht::{Announcer, Dht, DhtConfig, RoutingCache};
use p2p_protocol::FileId;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::downloads::PeerChange;
use crate::error::PeerError;
use crate::node::Node;

/// Most peers an index lists that are tried as bootstrap nodes.
const BOOTSTRAP_FROM_INDEXES: usize = 32;

/// How a peer takes part in the DHT.
#[derive(Clone, Debug)]
pub struct DhtSettings {
    /// The node's own settings: where it listens (UDP), the nodes given to join through.
    pub config: DhtConfig,
    /// Where the routing table is remembered across restarts (`None`: not remembered).
    pub cache_dir: Option<PathBuf>,
}

/// The running DHT node of a peer.
#[derive(Debug)]
pub(crate) struct PeerDht {
    dht: Dht,
    announcer: Announcer,
    cache: Option<RoutingCache>,
    /// The port announced: this peer's chunk server's.
    port: u16,
}

impl PeerDht {
    /// Starts the node, joining through `settings`' nodes, the remembered ones and
    /// `index_peers` (the peers the indexes list), and announcing with `port`.
    pub async fn start(
        settings: &DhtSettings,
        port: u16,
        index_peers: Vec<IpAddr>,
    ) -> Result<Self, PeerError> {
        let cache = settings.cache_dir.as_deref().map(RoutingCache::new);
        let mut config = settings.config.clone();
        if let Some(cache) = &cache {
            for node in cache.load().await {
                config.bootstrap.push(node.to_string());
            }
        }
        let own = config.listen;
        // Other peers are taken to use the site's one DHT port: ours (not when ours is left
        // to the system).
        let peers = if own.port() == 0 {
            Vec::new()
        } else {
            index_peers
        };
        for ip in peers.into_iter().take(BOOTSTRAP_FROM_INDEXES) {
            if let IpAddr::V4(ip) = ip
                && ip != *own.ip()
            {
                config
                    .bootstrap
                    .push(SocketAddrV4::new(ip, own.port()).to_string());
            }
        }
        config.bootstrap.dedup();
        let dht = Dht::start(config)
            .await
            .map_err(|e| PeerError::Dht(e.to_string()))?;
        info!(addr = %dht.local_addr(), "DHT node listening");
        let announcer = Announcer::start(dht.clone(), port);
        Ok(Self {
            dht,
            announcer,
            cache,
            port,
        })
    }

    /// The hosts announced for `id`, without this peer itself (its port at any address of
    /// this machine: what the others saw of it).
    pub async fn hosts(&self, id: &FileId) -> Vec<SocketAddr> {
        match self.dht.lookup(id).await {
            Ok(hosts) => hosts
                .into_iter()
                .filter(|h| !(h.port() == self.port && is_this_host(h.ip())))
                .collect(),
            Err(err) => {
                warn!(%err, id = %id.fmt_short(), "DHT lookup failed");
                Vec::new()
            }
        }
    }

    /// Stops announcing and remembers the routing table for the next start.
    pub async fn shutdown(&self) {
        if let Some(cache) = &self.cache {
            match self.dht.bootstrap_nodes().await {
                Ok(nodes) if !nodes.is_empty() => {
                    if let Err(err) = cache.save(&nodes).await {
                        warn!(%err, "cannot remember the DHT's nodes");
                    }
                }
                Ok(_) => {}
                Err(err) => debug!(%err, "no DHT nodes to remember"),
            }
        }
    }
}

/// Whether `ip` is an address of this machine (it can be bound to).
fn is_this_host(ip: IpAddr) -> bool {
    ip.is_loopback() || std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// Keeps the announcer's set equal to what the peer shares on its own (files and folders),
/// until `shutdown`.
pub(crate) async fn follow_shares(node: Arc<Node>, shutdown: CancellationToken) {
    let Some(dht) = node.dht.get() else {
        return;
    };
    let mut changes = node.downloads.changes().subscribe();
    resync(&node, &dht.announcer);
    loop {
        let change = tokio::select! {
            _ = shutdown.cancelled() => return,
            change = changes.recv() => change,
        };
        match change {
            Ok(PeerChange::FileShared(id)) => dht.announcer.add(id),
            Ok(PeerChange::FileUnshared(id)) => dht.announcer.remove(&id),
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => resync(&node, &dht.announcer),
            Err(RecvError::Closed) => return,
        }
    }
}

/// Makes the announcer's set what is shared now.
fn resync(node: &Node, announcer: &Announcer) {
    let shared: Vec<FileId> = node.files.list().into_iter().map(|f| f.file_id).collect();
    for id in announcer.ids() {
        if !shared.contains(&id) {
            announcer.remove(&id);
        }
    }
    for id in shared {
        announcer.add(id);
    }
}
