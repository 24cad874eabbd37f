//! Finding the p2p-transfer index server: on the local network with mDNS / DNS-SD, and across
//! routers with unicast DNS-SD in the site's ordinary DNS zone ([`unicast`]).
//!
//! The server advertises the service type [`SERVICE_TYPE`] under a unique instance name, with
//! its port, its addresses and TXT records `version` (protocol version) and `id` (its node id).
//! Peers browse for that type and connect to what answers. Nothing here is authenticated: the
//! TXT id only helps a peer choose; the TLS handshake proves (or disproves) it.
//!
//! This is the only crate that uses `mdns_sd` or a DNS resolver, and it depends on no crate of ours: the peer and
//! server libraries take socket addresses, so everything but discovery itself is tested on
//! loopback without multicast.
//!
//! # Layout
//! * [`advertise`]: [`Advertisement`], an RAII guard; dropping it withdraws the service.
//! * [`browse`][mod@browse]: [`browse()`] and [`choose`]: what answers, and which one to use.
//! * [`unicast`]: [`unicast::lookup`]: the indexes published under a domain in ordinary DNS.
//! * [`error`][mod@error]: [`DiscoveryError`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod advertise;
pub mod browse;
pub mod error;
pub mod unicast;

pub use advertise::host_label;
pub use advertise::{AdvertiseConfig, Advertisement};
pub use browse::{FoundServer, browse, choose};
pub use error::DiscoveryError;

/// The DNS-SD service type of the index server.
pub const SERVICE_TYPE: &str = "_p2p-transfer._tcp.local.";

/// TXT key holding the protocol version the server speaks.
pub const TXT_VERSION: &str = "version";

/// TXT key holding the server's node id.
pub const TXT_ID: &str = "id";

/// Which interfaces mDNS may use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Interfaces {
    /// Every interface with multicast.
    #[default]
    All,
    /// Loopback only: for a server listening on 127.0.0.1 or ::1, which nobody else can reach.
    LoopbackOnly,
    /// Only these, by name (`eth0`, `lo`).
    Named(Vec<String>),
}

impl Interfaces {
    /// Restricts `daemon` accordingly.
    pub(crate) fn apply(&self, daemon: &mdns_sd::ServiceDaemon) -> Result<(), DiscoveryError> {
        use mdns_sd::IfKind;
        match self {
            Interfaces::All => Ok(()),
            Interfaces::LoopbackOnly => {
                daemon.disable_interface(IfKind::All)?;
                daemon.enable_interface(vec![IfKind::LoopbackV4, IfKind::LoopbackV6])?;
                Ok(())
            }
            Interfaces::Named(names) => {
                daemon.disable_interface(IfKind::All)?;
                let kinds: Vec<IfKind> = names.iter().map(|n| IfKind::Name(n.clone())).collect();
                daemon.enable_interface(kinds)?;
                Ok(())
            }
        }
    }
}
