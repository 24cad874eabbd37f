//! Unicast DNS-SD ([RFC 6763]) over ordinary DNS: [`lookup`] finds the index servers an
//! administrator published in a site's zone, for routed networks that mDNS can't cross.
//!
//! For a domain `D` the records are:
//! * `PTR _p2p-transfer._tcp.D.` → one instance name per index, `NAME._p2p-transfer._tcp.D.`;
//! * `SRV` at each instance name: priority, weight, port and target host;
//! * `TXT` at each instance name: `version=…` and `id=…`, the keys of the mDNS advertisement;
//! * `A` / `AAAA` at each target host.
//!
//! Instances come back best first: lowest SRV priority, then highest weight ([RFC 2782]),
//! then by name, so every node reading the same zone makes the same choice (no random spread
//! among equal priorities). A missing TXT record or `id` leaves the id unknown (the TLS
//! handshake proves ids anyway); an instance that names another protocol version than the
//! caller's is skipped with a warning.
//!
//! [RFC 6763]: https://www.rfc-editor.org/rfc/rfc6763
//! [RFC 2782]: https://www.rfc-editor.org/rfc/rfc2782

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use tracing::{debug, warn};

use crate::{DiscoveryError, FoundServer, TXT_ID, TXT_VERSION};

/// The service's name under a domain: PTR records at `_p2p-transfer._tcp.DOMAIN` list the
/// instances.
pub const SERVICE_NAME: &str = "_p2p-transfer._tcp";

/// The DNS port, when a nameserver is given without one.
pub const DNS_PORT: u16 = 53;

/// Where the questions go, for messages.
fn describe(nameserver: Option<SocketAddr>, config: &ResolverConfig) -> String {
    match nameserver {
        Some(addr) => format!("the DNS server {addr}"),
        None => {
            let ips: Vec<String> = config
                .name_servers()
                .iter()
                .map(|ns| ns.ip.to_string())
                .collect();
            format!("the system's DNS servers ({})", ips.join(", "))
        }
    }
}

/// The name asked for: `_p2p-transfer._tcp.DOMAIN.` (fully qualified, so no search domain is
/// appended to it).
pub fn service_name(domain: &str) -> Result<Name, DiscoveryError> {
    let bad = |reason: String| DiscoveryError::BadDomain {
        domain: domain.to_owned(),
        reason,
    };
    let trimmed = domain.trim().trim_end_matches('.');
    if trimmed.is_empty() {
        return Err(bad("it is empty".to_owned()));
    }
    let name = Name::from_utf8(format!("{SERVICE_NAME}.{trimmed}."))
        .map_err(|err| bad(err.to_string()))?;
    Ok(name)
}

/// Looks up every index server published under `domain`, asking `nameserver` (UDP, then TCP
/// for long answers) or, without one, the servers of the system's resolver configuration
/// (`/etc/resolv.conf`). The whole lookup takes at most `timeout`. Instances whose TXT
/// `version` is not `protocol_version` are skipped with a warning. Returns at least one
/// server, best first (see the module docs), or an error naming what was asked and of whom.
pub async fn lookup(
    domain: &str,
    nameserver: Option<SocketAddr>,
    timeout: Duration,
    protocol_version: u32,
) -> Result<Vec<FoundServer>, DiscoveryError> {
    let service = service_name(domain)?;
    let (config, mut options) = match nameserver {
        Some(addr) => (
            ResolverConfig::from_name_servers(vec![at(addr)]),
            ResolverOpts::default(),
        ),
        None => hickory_resolver::system_conf::read_system_conf()
            .map_err(|err| DiscoveryError::NoResolver(err.to_string()))?,
    };
    let asked = describe(nameserver, &config);
    options.timeout = timeout;
    // One try per question: the whole lookup is bounded by `timeout` below anyway.
    options.attempts = 1;
    let resolver = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(options)
        .build()
        .map_err(|err| DiscoveryError::NoResolver(err.to_string()))?;
    let asking = Asking {
        resolver: &resolver,
        service: &service,
        asked: &asked,
        timeout,
    };
    match tokio::time::timeout(timeout, asking.run(protocol_version)).await {
        Ok(result) => result,
        Err(_) => Err(asking.timed_out()),
    }
}

/// A nameserver at `addr`, over UDP and TCP (for answers too long for a datagram).
fn at(addr: SocketAddr) -> NameServerConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
}

/// One lookup under way.
struct Asking<'a> {
    resolver: &'a TokioResolver,
    service: &'a Name,
    /// The nameserver(s), for messages.
    asked: &'a str,
    /// The bound on the whole lookup.
    timeout: Duration,
}

/// An instance found, with its place in the order.
struct Ranked {
    priority: u16,
    weight: u16,
    server: FoundServer,
}

impl Asking<'_> {
    async fn run(&self, protocol_version: u32) -> Result<Vec<FoundServer>, DiscoveryError> {
        let pointers = self.ask(self.service, RecordType::PTR).await?;
        let mut instances: Vec<Name> = pointers
            .into_iter()
            .filter_map(|data| match data {
                RData::PTR(ptr) => Some(ptr.0),
                _ => None,
            })
            .collect();
        instances.dedup();
        if instances.is_empty() {
            return Err(self.nothing_published());
        }
        let mut found = Vec::new();
        let mut skipped = Vec::new();
        for instance in &instances {
            match self.instance(instance, protocol_version).await {
                Ok(ranked) => found.push(ranked),
                Err(why) => {
                    warn!(instance = %instance, why, "skipped a DNS-SD instance");
                    skipped.push(format!("{}: {why}", label(instance)));
                }
            }
        }
        if found.is_empty() {
            return Err(DiscoveryError::NoneUsable {
                name: self.shown(),
                skipped: skipped.join("; "),
            });
        }
        found.sort_by(|a, b| {
            (a.priority, std::cmp::Reverse(a.weight), &a.server.instance).cmp(&(
                b.priority,
                std::cmp::Reverse(b.weight),
                &b.server.instance,
            ))
        });
        Ok(found.into_iter().map(|r| r.server).collect())
    }

    /// One instance's SRV, TXT and addresses, or why it can't be used (a question about it
    /// that fails only leaves it out: the others may still be fine).
    async fn instance(&self, instance: &Name, protocol_version: u32) -> Result<Ranked, String> {
        let (services, texts) = tokio::join!(
            self.ask_optional(instance, RecordType::SRV),
            self.ask_optional(instance, RecordType::TXT),
        );
        let mut services: Vec<_> = services
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter_map(|data| match data {
                RData::SRV(srv) => Some(srv),
                _ => None,
            })
            .collect();
        if services.is_empty() {
            return Err("no SRV record".to_owned());
        }
        services.sort_by_key(|srv| (srv.priority, std::cmp::Reverse(srv.weight)));
        let txt = Txt::parse(texts.map_err(|e| e.to_string())?);
        let version = match txt.get(TXT_VERSION) {
            None => {
                debug!(instance = %instance, "no TXT version: taken as ours");
                None
            }
            Some(text) => match text.parse::<u32>() {
                Ok(v) if v == protocol_version => Some(v),
                Ok(v) => {
                    return Err(format!(
                        "protocol version {v}, this program speaks {protocol_version}"
                    ));
                }
                Err(_) => {
                    return Err(format!(
                        "TXT {TXT_VERSION}={text:?} is not a protocol version"
                    ));
                }
            },
        };
        let server_id = txt.get(TXT_ID).map(str::to_owned);
        if server_id.is_none() {
            debug!(instance = %instance, "no TXT id: its node id is unknown until it connects");
        }
        let mut addrs = Vec::new();
        for srv in &services {
            // A target of "." says the service is decidedly not there (RFC 2782).
            if srv.target.is_root() {
                continue;
            }
            for ip in self
                .addresses(&srv.target)
                .await
                .map_err(|e| e.to_string())?
            {
                let addr = SocketAddr::new(ip, srv.port);
                if !addrs.contains(&addr) {
                    addrs.push(addr);
                }
            }
        }
        if addrs.is_empty() {
            let targets: Vec<String> = services.iter().map(|s| s.target.to_string()).collect();
            return Err(format!(
                "its target {} has no A or AAAA record",
                targets.join(", ")
            ));
        }
        let best = &services[0];
        Ok(Ranked {
            priority: best.priority,
            weight: best.weight,
            server: FoundServer {
                instance: label(instance),
                addrs,
                version,
                server_id,
            },
        })
    }

    /// The IPv4 then IPv6 addresses of `host`.
    async fn addresses(&self, host: &Name) -> Result<Vec<IpAddr>, DiscoveryError> {
        let (v4, v6) = tokio::join!(
            self.ask_optional(host, RecordType::A),
            self.ask_optional(host, RecordType::AAAA),
        );
        let ips = v4?.into_iter().chain(v6?).filter_map(|data| match data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
            _ => None,
        });
        Ok(ips.collect())
    }

    /// The records of `kind` at `name`; none there is an empty list.
    async fn ask_optional(
        &self,
        name: &Name,
        kind: RecordType,
    ) -> Result<Vec<RData>, DiscoveryError> {
        match self.resolver.lookup(name.clone(), kind).await {
            Ok(found) => Ok(found.answers().iter().map(|r| r.data.clone()).collect()),
            Err(err) if err.is_no_records_found() => Ok(Vec::new()),
            Err(err) => Err(self.failed(name, kind, err)),
        }
    }

    /// The records of `kind` at `name`; none there is "nothing published".
    async fn ask(&self, name: &Name, kind: RecordType) -> Result<Vec<RData>, DiscoveryError> {
        match self.resolver.lookup(name.clone(), kind).await {
            Ok(found) => Ok(found.answers().iter().map(|r| r.data.clone()).collect()),
            Err(err) if err.is_no_records_found() => Err(self.nothing_published()),
            Err(err) => Err(self.failed(name, kind, err)),
        }
    }

    fn failed(&self, name: &Name, kind: RecordType, err: NetError) -> DiscoveryError {
        if matches!(err, NetError::Timeout) {
            return DiscoveryError::DnsTimeout {
                name: shown(name),
                asked: self.asked.to_owned(),
                after: self.timeout,
            };
        }
        DiscoveryError::Dns {
            question: format!("{kind} {}", shown(name)),
            asked: self.asked.to_owned(),
            cause: err.to_string(),
        }
    }

    fn nothing_published(&self) -> DiscoveryError {
        DiscoveryError::NothingPublished { name: self.shown() }
    }

    fn timed_out(&self) -> DiscoveryError {
        DiscoveryError::DnsTimeout {
            name: self.shown(),
            asked: self.asked.to_owned(),
            after: self.timeout,
        }
    }

    fn shown(&self) -> String {
        shown(self.service)
    }
}

/// A name as people write it: without the final dot.
fn shown(name: &Name) -> String {
    let text = name.to_utf8();
    text.strip_suffix('.').map(str::to_owned).unwrap_or(text)
}

/// An instance's own label (`lab index` of `lab index._p2p-transfer._tcp.example.lan.`).
fn label(instance: &Name) -> String {
    instance
        .iter()
        .next()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .unwrap_or_default()
}

/// The `key=value` strings of an instance's TXT record(s) (RFC 6763 §6): keys ignore case, the
/// first of a key counts, a key without `=` has no value.
struct Txt(Vec<(String, Option<String>)>);

impl Txt {
    fn parse(records: Vec<RData>) -> Self {
        let mut pairs = Vec::new();
        for data in records {
            let RData::TXT(txt) = data else { continue };
            for item in txt.txt_data.iter() {
                let text = String::from_utf8_lossy(item);
                let (key, value) = match text.split_once('=') {
                    Some((k, v)) => (k, Some(v.to_owned())),
                    None => (text.as_ref(), None),
                };
                pairs.push((key.to_ascii_lowercase(), value));
            }
        }
        Self(pairs)
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::rr::rdata::TXT;

    #[test]
    fn the_name_asked_is_fully_qualified() {
        assert_eq!(
            service_name("example.lan").unwrap().to_string(),
            "_p2p-transfer._tcp.example.lan."
        );
        assert_eq!(
            service_name("example.lan.").unwrap().to_string(),
            "_p2p-transfer._tcp.example.lan."
        );
        assert!(matches!(
            service_name(" "),
            Err(DiscoveryError::BadDomain { .. })
        ));
        let long = "a".repeat(64);
        let err = service_name(&format!("{long}.lan"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&long) && err.contains("not a DNS domain"),
            "{err}"
        );
    }

    #[test]
    fn txt_keys_ignore_case_and_the_first_wins() {
        let txt = Txt::parse(vec![RData::TXT(TXT::new(vec![
            "ID=first".into(),
            "id=second".into(),
            "flag".into(),
            "version=1".into(),
        ]))]);
        assert_eq!(txt.get("id"), Some("first"));
        assert_eq!(txt.get("version"), Some("1"));
        assert_eq!(txt.get("flag"), None);
        assert_eq!(txt.get("other"), None);
    }
}
