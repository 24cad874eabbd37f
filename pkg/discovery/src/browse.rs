//! Browsing for index servers, and choosing one.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mdns_sd::{ServiceDaemon, ServiceEvent};
use tracing::debug;

use crate::{DiscoveryError, Interfaces, SERVICE_TYPE, TXT_ID, TXT_VERSION};

/// After the first answer, how long to keep listening for other servers. Responders answer
/// after a random delay of up to 120 ms (RFC 6762 §6), but a responder on a busy machine can
/// be held up for most of a second: a shorter window (it was 0.7 s) sometimes heard only the
/// first of two servers, so the choice among them (and passing over a rogue that claims
/// another's id) depended on the machine's load.
pub const SETTLE: Duration = Duration::from_millis(1500);

/// An index server that answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundServer {
    /// Its DNS-SD instance name, e.g. `p2p-transfer on lab-pc:8000 [MFRG-GZDF]`.
    pub instance: String,
    /// Where to reach it, best first: non-loopback before loopback, IPv4 before IPv6.
    pub addrs: Vec<SocketAddr>,
    /// Protocol version from its TXT record.
    pub version: Option<u32>,
    /// Node id from its TXT record (a claim, until the TLS handshake proves it).
    pub server_id: Option<String>,
}

impl FoundServer {
    /// The address to connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }
}

/// Listens for index servers for up to `timeout`, returning early [`SETTLE`] after the first
/// answer. Sorted by instance name; empty if none answered.
pub fn browse(
    timeout: Duration,
    interfaces: &Interfaces,
) -> Result<Vec<FoundServer>, DiscoveryError> {
    let daemon = ServiceDaemon::new()?;
    let result = browse_with(&daemon, timeout, interfaces);
    if let Ok(status) = daemon.shutdown() {
        let _ = status.recv_timeout(Duration::from_secs(1));
    }
    result
}

fn browse_with(
    daemon: &ServiceDaemon,
    timeout: Duration,
    interfaces: &Interfaces,
) -> Result<Vec<FoundServer>, DiscoveryError> {
    interfaces.apply(daemon)?;
    let events = daemon.browse(SERVICE_TYPE)?;
    let deadline = Instant::now() + timeout;
    let mut settle_until: Option<Instant> = None;
    let mut found: BTreeMap<String, FoundServer> = BTreeMap::new();
    loop {
        let until = settle_until.map_or(deadline, |s| s.min(deadline));
        let Ok(event) = events.recv_deadline(until) else {
            break;
        };
        match event {
            ServiceEvent::ServiceResolved(service) => {
                let mut addrs: Vec<SocketAddr> = service
                    .addresses
                    .iter()
                    .map(|ip| ip.to_ip_addr())
                    .filter(usable)
                    .map(|ip| SocketAddr::new(ip, service.port))
                    .collect();
                if addrs.is_empty() {
                    continue;
                }
                addrs.sort_by_key(|a| (a.ip().is_loopback(), a.is_ipv6(), *a));
                let instance = instance_of(&service.fullname);
                debug!(%instance, ?addrs, "index server answered");
                let server = FoundServer {
                    instance: instance.clone(),
                    addrs,
                    version: service
                        .get_property_val_str(TXT_VERSION)
                        .and_then(|v| v.parse().ok()),
                    server_id: service.get_property_val_str(TXT_ID).map(str::to_owned),
                };
                found.insert(instance, server);
                settle_until.get_or_insert_with(|| Instant::now() + SETTLE);
            }
            ServiceEvent::ServiceRemoved(_, fullname) => {
                found.remove(&instance_of(&fullname));
            }
            _ => {}
        }
    }
    let _ = daemon.stop_browse(SERVICE_TYPE);
    Ok(found.into_values().collect())
}

/// IPv6 link-local addresses need a scope id that a plain socket address string can't carry.
fn usable(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_unspecified(),
        IpAddr::V6(v6) => !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80,
    }
}

/// `name._p2p-transfer._tcp.local.` → `name`, with DNS-SD escapes removed.
fn instance_of(fullname: &str) -> String {
    let name = fullname
        .strip_suffix(SERVICE_TYPE)
        .and_then(|n| n.strip_suffix('.'))
        .unwrap_or(fullname);
    name.replace("\\.", ".").replace("\\\\", "\\")
}

/// Picks the server to use from what answered: the one named `wanted` (its full instance name
/// or a part of it that matches one server only, ignoring case), or else the first by instance
/// name that `prefer` accepts (one whose id this peer knows), or else the first by instance
/// name, so every peer on the network makes the same choice. Returns it and the others.
pub fn choose(
    mut found: Vec<FoundServer>,
    wanted: Option<&str>,
    prefer: impl Fn(&FoundServer) -> bool,
    waited: Duration,
) -> Result<(FoundServer, Vec<FoundServer>), DiscoveryError> {
    if found.is_empty() {
        return Err(DiscoveryError::NotFound(waited));
    }
    found.sort_by(|a, b| a.instance.cmp(&b.instance));
    let index = match wanted {
        None => found.iter().position(prefer).unwrap_or(0),
        Some(want) => {
            let want = want.to_lowercase();
            let exact = found.iter().position(|s| s.instance.to_lowercase() == want);
            let partial: Vec<usize> = (0..found.len())
                .filter(|i| found[*i].instance.to_lowercase().contains(&want))
                .collect();
            match (exact, partial.as_slice()) {
                (Some(i), _) | (None, &[i]) => i,
                _ => {
                    return Err(DiscoveryError::NameNotFound {
                        wanted: want,
                        found: found
                            .iter()
                            .map(|s| s.instance.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
            }
        }
    };
    let chosen = found.remove(index);
    Ok((chosen, found))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str, port: u16) -> FoundServer {
        FoundServer {
            instance: name.to_owned(),
            addrs: vec![SocketAddr::from(([127, 0, 0, 1], port))],
            version: Some(1),
            server_id: None,
        }
    }

    #[test]
    fn choice_is_deterministic_and_can_be_named() {
        let found = vec![
            server("p2p-transfer on b:2", 2),
            server("p2p-transfer on a:1", 1),
        ];
        let any = |_: &FoundServer| false;
        let (chosen, others) = choose(found.clone(), None, any, SETTLE).unwrap();
        assert_eq!(chosen.instance, "p2p-transfer on a:1");
        assert_eq!(others.len(), 1);
        let (chosen, _) = choose(found.clone(), Some("ON B:2"), any, SETTLE).unwrap();
        assert_eq!(chosen.addr().port(), 2);
        assert!(matches!(
            choose(found.clone(), Some("p2p"), any, SETTLE),
            Err(DiscoveryError::NameNotFound { .. })
        ));
        assert!(matches!(
            choose(vec![], None, any, SETTLE),
            Err(DiscoveryError::NotFound(_))
        ));
    }

    #[test]
    fn a_known_id_wins_over_name_order() {
        let mut rogue = server("a rogue that sorts first", 1);
        rogue.server_id = Some("ROGUE".into());
        let mut real = server("p2p-transfer on lab:8000", 2);
        real.server_id = Some("REAL".into());
        let known = |s: &FoundServer| s.server_id.as_deref() == Some("REAL");
        let (chosen, _) = choose(vec![rogue, real], None, known, SETTLE).unwrap();
        assert_eq!(chosen.addr().port(), 2);
    }

    #[test]
    fn not_found_says_what_to_try() {
        let msg = DiscoveryError::NotFound(Duration::from_secs(5)).to_string();
        assert!(
            msg.contains("within 5s") && msg.contains("--server ADDR") && msg.contains("5353"),
            "{msg}"
        );
    }

    #[test]
    fn instance_names_are_unescaped() {
        assert_eq!(
            instance_of("my\\.server._p2p-transfer._tcp.local."),
            "my.server"
        );
    }
}
