//! `--dns-sd-domain` / `--dns-sd-server`: the index servers an administrator published in the
//! site's DNS (unicast DNS-SD), for routed sites that mDNS can't reach. The lookup itself is
//! `p2p_discovery::unicast`; this turns the flags into index candidates, best first, and picks
//! the first that answers for the commands that use one index.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use p2p_discovery::unicast::{self, DNS_PORT};
use p2p_protocol::NodeId;
use tracing::{debug, warn};

use crate::cli::DnsSdArgs;

/// How long the whole DNS lookup may take. A site's DNS answers in milliseconds; this is the
/// common resolver timeout (resolv.conf's default), for a slow or distant server.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// How long checking that a published index answers (and proves the id it claims) may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// An index server published in DNS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Where to connect (its first address: IPv4 before IPv6).
    pub addr: SocketAddr,
    /// The node id its TXT record claims (the TLS handshake must prove it).
    pub claimed: Option<NodeId>,
    /// Its DNS-SD instance name (`main` of `main._p2p-transfer._tcp.example.lan`).
    pub instance: String,
    /// For messages: `found in DNS as "main" (_p2p-transfer._tcp.example.lan)`.
    pub label: String,
}

/// The index servers published under `--dns-sd-domain`, best first (SRV priority, then
/// weight), asking `--dns-sd-server` or the system's resolver; none when no domain is given.
/// Nothing published, no answer in time, or nothing usable is an error naming what was asked.
pub async fn find(args: &DnsSdArgs) -> anyhow::Result<Vec<Candidate>> {
    let Some(domain) = args.domain.as_deref() else {
        return Ok(Vec::new());
    };
    let name = unicast::service_name(domain)?;
    let shown = name.to_string();
    let shown = shown.trim_end_matches('.');
    let found = unicast::lookup(
        domain,
        args.server,
        LOOKUP_TIMEOUT,
        p2p_protocol::PROTOCOL_VERSION,
    )
    .await?;
    let candidates = found
        .into_iter()
        .map(|server| {
            let claimed = server.server_id.as_deref().and_then(|id| match id.parse() {
                Ok(id) => Some(id),
                Err(err) => {
                    warn!(
                        instance = %server.instance,
                        id,
                        %err,
                        "the TXT id published in DNS is not a node id; it is unknown until the \
                         index connects"
                    );
                    None
                }
            });
            Candidate {
                addr: server.addr(),
                claimed,
                label: format!("found in DNS as {:?} ({shown})", server.instance),
                instance: server.instance,
            }
        })
        .collect();
    Ok(candidates)
}

/// The first of `candidates` that answers and proves the id `expect` gives for it (its
/// remembered or pinned id, else the one it claims), in the published order, with the id it
/// proved; an error listing each one's failure when none does.
pub async fn first_answering(
    candidates: Vec<Candidate>,
    tls: &p2p_transport::Tls,
    expect: impl Fn(&Candidate) -> Option<NodeId>,
) -> anyhow::Result<(Candidate, Option<NodeId>)> {
    let mut failures = Vec::new();
    for candidate in candidates {
        let expected = expect(&candidate);
        match tls.connect(candidate.addr, expected, PROBE_TIMEOUT).await {
            Ok((_, proved)) => return Ok((candidate, Some(proved))),
            Err(err) => {
                debug!(addr = %candidate.addr, %err, "a published index did not answer");
                failures.push(format!(
                    "{:?} at {}: {err}",
                    candidate.instance, candidate.addr
                ));
            }
        }
    }
    anyhow::bail!(
        "no index server published in DNS answers ({})",
        failures.join("; ")
    )
}

/// `--dns-sd-server`: an IP address, with a port or not (53).
pub fn parse_nameserver(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DNS_PORT));
    }
    Err(format!(
        "expected a DNS server's IP address, with a port or not (10.0.0.53, 10.0.0.53:5353, \
         fd00::53 or [fd00::53]:5353), not {:?}",
        p2p_protocol::printable(text)
    ))
}

/// `--dns-sd-domain`: a domain name (checked here, so a typo is a usage error).
pub fn parse_domain(text: &str) -> Result<String, String> {
    unicast::service_name(text)
        .map(|_| text.trim().to_owned())
        .map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nameserver_is_an_ip_with_port_53_by_default() {
        let ok = |text: &str| parse_nameserver(text).unwrap().to_string();
        assert_eq!(ok("10.0.0.53"), "10.0.0.53:53");
        assert_eq!(ok("127.0.0.1:5353"), "127.0.0.1:5353");
        assert_eq!(ok("fd00::53"), "[fd00::53]:53");
        assert_eq!(ok("[::1]:5353"), "[::1]:5353");
        let err = parse_nameserver("dns.example.lan").unwrap_err();
        assert!(
            err.contains("IP address") && err.contains("\"dns.example.lan\""),
            "{err}"
        );
    }

    #[test]
    fn a_domain_must_be_a_domain_name() {
        assert_eq!(parse_domain("example.lan").unwrap(), "example.lan");
        assert!(parse_domain("").is_err());
        assert!(parse_domain(&format!("{}.lan", "x".repeat(64))).is_err());
    }
}
