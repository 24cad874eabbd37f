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
    /// The DNS-SD domain given is not a domain name.
    #[error("{domain:?} is not a DNS domain name: {reason}")]
    BadDomain {
        /// As given.
        domain: String,
        /// Why not.
        reason: String,
    },
    /// No resolver could be set up (no usable `/etc/resolv.conf`).
    #[error("cannot use the system's DNS configuration: {0}")]
    NoResolver(String),
    /// The domain has no PTR record for the service (NXDOMAIN or no records).
    #[error("no p2p-transfer index published at {name}")]
    NothingPublished {
        /// The name asked for, `_p2p-transfer._tcp.DOMAIN`.
        name: String,
    },
    /// Instances are published, but none can be used.
    #[error("no usable p2p-transfer index published at {name} ({skipped})")]
    NoneUsable {
        /// The name asked for.
        name: String,
        /// Each instance and why it was left out, `; `-separated.
        skipped: String,
    },
    /// The nameserver did not answer in time.
    #[error("no answer from {asked} about {name} within {}", humanize(*.after))]
    DnsTimeout {
        /// The name asked for.
        name: String,
        /// Whom: `the DNS server 10.0.0.53:53`, or the system's.
        asked: String,
        /// How long it was given.
        after: Duration,
    },
    /// The nameserver answered with an error, or could not be reached.
    #[error("{asked} could not answer {question}: {cause}")]
    Dns {
        /// The record type and name asked for.
        question: String,
        /// Whom.
        asked: String,
        /// What went wrong.
        cause: String,
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
