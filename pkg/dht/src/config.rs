//! [`DhtConfig`]: where the node listens, whom it bootstraps from, how long a lookup may take.
//!
//! PRIVATE BY DEFAULT: the node bootstraps only from [`DhtConfig::bootstrap`]. An empty list
//! means no bootstrap at all; the public BitTorrent bootstrap nodes (mainline's own default) are
//! never used, because `DhtConfig::to_mainline` always hands mainline an explicit list.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

/// A suggested fixed UDP port for the DHT, so that `HOST:PORT` bootstrap entries can be
/// written down once for a site. (TCP 8000 is the index's default; this is UDP.)
pub const DEFAULT_PORT: u16 = 8010;

/// How long a KRPC request waits for its answer (mainline's own default). A query ends when
/// every request it sent was answered or timed out, so a dead node costs a query this much.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = mainline::DEFAULT_REQUEST_TIMEOUT;

/// Longest a lookup may take, whatever the network does.
pub const DEFAULT_LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Once a lookup has found a first host, how much longer it waits for more before returning.
pub const DEFAULT_LOOKUP_SETTLE: Duration = Duration::from_millis(500);

/// Most hosts one lookup returns.
pub const DEFAULT_MAX_HOSTS: usize = 50;

/// How a DHT node is set up. `Default` listens on `127.0.0.1` (a free port) and bootstraps from
/// nobody: a node that can reach nothing, which is the safe starting point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhtConfig {
    /// UDP address to listen on; port 0 picks a free one. Announced hosts are stored with the
    /// source address other nodes see, so bind to the address the chunk server is reached on.
    pub listen: SocketAddrV4,
    /// Nodes to join through, as `HOST:PORT` (names are looked up, IPv4 only). Empty: no
    /// bootstrap, this node waits to be found (the first node of a site). Never the public
    /// BitTorrent nodes.
    pub bootstrap: Vec<String>,
    /// How long one KRPC request waits for its answer.
    pub request_timeout: Duration,
    /// Longest a lookup may take.
    pub lookup_timeout: Duration,
    /// After the first host is found, how much longer a lookup waits for more.
    pub lookup_settle: Duration,
    /// Most hosts one lookup returns.
    pub max_hosts: usize,
}

impl Default for DhtConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
            bootstrap: Vec::new(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            lookup_timeout: DEFAULT_LOOKUP_TIMEOUT,
            lookup_settle: DEFAULT_LOOKUP_SETTLE,
            max_hosts: DEFAULT_MAX_HOSTS,
        }
    }
}

impl DhtConfig {
    /// The mainline configuration for this node, with `bootstrap` already resolved.
    ///
    /// PRIVATE BY DEFAULT: `bootstrap` is always `Some`, so mainline never falls back to
    /// `DEFAULT_BOOTSTRAP_NODES` (the public BitTorrent routers); `Some(vec![])` is mainline's
    /// `no_bootstrap()`.
    ///
    /// Server mode is always on: every peer of a site is reachable on its LAN, and in mainline's
    /// adaptive mode a node answers nobody for its first 15 minutes (and then only if it has
    /// confirmed a public address by pinging itself), so a new private DHT would have no node
    /// to store anything.
    pub(crate) fn to_mainline(&self, bootstrap: Vec<SocketAddrV4>) -> mainline::Config {
        mainline::Config {
            bootstrap: Some(bootstrap),
            // Always explicit: with `None` mainline tries 6881 first.
            port: Some(self.listen.port()),
            bind_address: Some(*self.listen.ip()),
            request_timeout: self.request_timeout,
            server_mode: true,
            // No BEP 42 id from an address: private and loopback addresses are exempt anyway.
            public_ip: None,
            server_settings: mainline::ServerSettings::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_bootstraps_from_nobody() {
        let config = DhtConfig::default();
        assert!(config.bootstrap.is_empty());
        let mainline = config.to_mainline(Vec::new());
        // `Some(empty)`, never `None` (which would mean the public bootstrap nodes).
        assert_eq!(mainline.bootstrap, Some(Vec::new()));
        assert!(mainline.server_mode);
        assert_eq!(mainline.bind_address, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(mainline.port, Some(0));
    }

    #[test]
    fn the_given_nodes_are_the_only_bootstrap() {
        let node = SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, 7), DEFAULT_PORT);
        let config = DhtConfig {
            listen: SocketAddrV4::new(Ipv4Addr::new(10, 2, 0, 3), DEFAULT_PORT),
            ..DhtConfig::default()
        };
        let mainline = config.to_mainline(vec![node]);
        assert_eq!(mainline.bootstrap, Some(vec![node]));
        assert_eq!(mainline.port, Some(DEFAULT_PORT));
    }
}
