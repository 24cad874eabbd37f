//! [`DiscoveryError`].

use std::time::Duration;

/// Why advertising or discovering failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The mDNS daemon failed (no multicast, socket errors...).
    #[error("mDNS: {0}")]
    Mdns(mdns_sd::Error),
    /// Nothing answered in time.
    #[error(
        "no p2p-transfer index server answered on the local network within {}; \
         start one, pass --server ADDR, check that the firewall allows mDNS (UDP port 5353), \
         and that the server is on the same subnet",
        humanize(*.0)
    )]
    NotFound(Duration),
    /// `--server-name` matched nothing that answered.
    #[error("no index server named {wanted:?} answered; found: {found}")]
    NameNotFound {
        /// The name asked for.
        wanted: String,
        /// What answered, comma-separated.
        found: String,
    },
}

/// The cause is in the text only (not also `source()`), so it is printed once.
impl From<mdns_sd::Error> for DiscoveryError {
    fn from(err: mdns_sd::Error) -> Self {
        DiscoveryError::Mdns(err)
    }
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
