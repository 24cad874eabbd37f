//! [`Dht`]: one running DHT node; announce a file's host, look a file's hosts up.
//!
//! mainline runs each node on a thread of its own (a UDP socket with a 50 ms read timeout and a
//! loop over it); this handle talks to that thread over channels, so nothing here blocks the
//! tokio reactor. Each call runs in a task of its own, so a panic of mainline's thread (its
//! handle then panics on the next request) becomes [`DhtError::NodeStopped`] instead of
//! unwinding through the caller.

use std::collections::HashSet;
use std::future::Future;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;

use futures::StreamExt;
use mainline::async_dht::AsyncDht;
use p2p_protocol::FileId;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::bootstrap;
use crate::config::DhtConfig;
use crate::error::DhtError;
use crate::info_hash::target;

/// A running DHT node. Cheap to clone; the node (its thread and socket) stops when the last
/// clone is dropped.
#[derive(Clone, Debug)]
pub struct Dht {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    node: AsyncDht,
    local_addr: SocketAddrV4,
    config: DhtConfig,
}

impl Dht {
    /// Resolves the bootstrap entries, opens the UDP socket and starts the node. It starts
    /// joining through the bootstrap nodes at once, in the background.
    pub async fn start(config: DhtConfig) -> Result<Dht, DhtError> {
        let bootstrap = bootstrap::resolve(&config.bootstrap, config.listen).await?;
        let bootstrap_count = bootstrap.len();
        let settings = config.to_mainline(bootstrap);
        let listen = config.listen;
        let bind_error = |source| DhtError::Bind {
            addr: listen,
            source,
        };
        // Spawning the thread and waiting for its socket is a short blocking call.
        let node = tokio::task::spawn_blocking(move || {
            // mainline 8.0.1 panics instead of returning the error when its thread fails to
            // bind before it is asked whether it did (a race in `Dht::new`), so try first.
            drop(std::net::UdpSocket::bind(listen)?);
            mainline::Dht::new(settings)
        })
        .await
        .map_err(|_| {
            bind_error(std::io::Error::other(
                "the DHT thread stopped while opening its socket",
            ))
        })?
        .map_err(bind_error)?
        .as_async();
        let info = contained(node.clone(), |node| async move { node.info().await }).await?;
        let local_addr = info.local_addr();
        info!(addr = %local_addr, id = %info.id(), bootstrap = bootstrap_count, "DHT node started");
        Ok(Dht {
            inner: Arc::new(Inner {
                node,
                local_addr,
                config,
            }),
        })
    }

    /// The UDP address the node listens on.
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.inner.local_addr
    }

    /// The configuration the node was started with.
    pub fn config(&self) -> &DhtConfig {
        &self.inner.config
    }

    /// Looks this node's own id up (what joining does) and says whether any node answered: a
    /// way to wait until the node has joined, or to refresh its routing table.
    pub async fn bootstrap(&self) -> Result<bool, DhtError> {
        contained(self.inner.node.clone(), |node| async move {
            node.bootstrapped().await
        })
        .await
    }

    /// Announces that `port` on this host serves file `id`: the nodes closest to the id's
    /// info-hash store this host's address as they see it (the source address of this node's
    /// packets) with `port`. Returns once at least one node stored it, or fails when none did.
    pub async fn announce(&self, id: &FileId, port: u16) -> Result<(), DhtError> {
        let key = target(id);
        let short = id.fmt_short();
        let result = contained(self.inner.node.clone(), move |node| async move {
            node.announce_peer(key, Some(port)).await
        })
        .await?;
        match result {
            Ok(_) => {
                debug!(id = %short, port, "announced in the DHT");
                Ok(())
            }
            Err(source) => Err(DhtError::Announce { id: short, source }),
        }
    }

    /// The hosts announced for file `id`, without duplicates, in the order they arrived. Ends
    /// when the DHT query ends, when [`DhtConfig::max_hosts`] are known, when
    /// [`DhtConfig::lookup_settle`] has passed since the first host was found, or at
    /// [`DhtConfig::lookup_timeout`], whichever comes first. Empty when nobody announced it.
    ///
    /// The hosts are claims of other nodes: untrusted until their chunks verify. They may also
    /// be stale (mainline never expires an announcement, see the crate docs), and this node's
    /// own address is among them when it announced the id itself.
    pub async fn lookup(&self, id: &FileId) -> Result<Vec<SocketAddr>, DhtError> {
        let key = target(id);
        let config = self.inner.config.clone();
        let started = Instant::now();
        let hosts = contained(self.inner.node.clone(), move |node| async move {
            collect_hosts(&node, key, &config).await
        })
        .await?;
        debug!(id = %id.fmt_short(), hosts = hosts.len(), ms = started.elapsed().as_millis() as u64, "DHT lookup done");
        Ok(hosts)
    }

    /// The nodes of the routing table seen in the last 15 minutes: what to remember for the
    /// next start (see [`RoutingCache`](crate::RoutingCache)).
    pub async fn bootstrap_nodes(&self) -> Result<Vec<SocketAddrV4>, DhtError> {
        let nodes = contained(self.inner.node.clone(), |node| async move {
            node.to_bootstrap().await
        })
        .await?;
        Ok(nodes.iter().filter_map(|n| n.parse().ok()).collect())
    }
}

/// Reads a `get_peers` query's answers until one of the lookup's bounds is reached.
async fn collect_hosts(node: &AsyncDht, key: mainline::Id, config: &DhtConfig) -> Vec<SocketAddr> {
    let deadline = Instant::now() + config.lookup_timeout;
    let mut settle_at: Option<Instant> = None;
    let mut seen = HashSet::new();
    let mut hosts = Vec::new();
    let mut answers = node.get_peers(key);
    while hosts.len() < config.max_hosts {
        let until = settle_at.map_or(deadline, |at| at.min(deadline));
        let Ok(Some(batch)) = tokio::time::timeout_at(until, answers.next()).await else {
            // The query ended, or a bound was reached.
            break;
        };
        for host in batch {
            // Port 0 can't be connected to; a node that says so is wrong.
            if host.port() != 0 && hosts.len() < config.max_hosts && seen.insert(host) {
                hosts.push(SocketAddr::V4(host));
            }
        }
        if settle_at.is_none() && !hosts.is_empty() {
            settle_at = Some(Instant::now() + config.lookup_settle);
        }
    }
    hosts
}

/// Runs `call` on its own task, so a panic in mainline's handle (its thread is gone) becomes
/// [`DhtError::NodeStopped`].
async fn contained<T, F, Fut>(node: AsyncDht, call: F) -> Result<T, DhtError>
where
    T: Send + 'static,
    F: FnOnce(AsyncDht) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    tokio::spawn(call(node))
        .await
        .map_err(|_| DhtError::NodeStopped)
}
