//! `--server` as a person types it: `host`, `host:port`, `1.2.3.4`, `1.2.3.4:port`, a bare
//! IPv6 address (`fe80::1`, `::1`) or `[v6]` / `[v6]:port`. The port defaults to the index
//! server's own default ([`DEFAULT_INDEX_PORT`]). A host name is looked up when the command
//! uses it (tokio's `lookup_host`, the system resolver: `/etc/hosts`, DNS, mDNS `.local`
//! names where the system resolves them), not when the flags are parsed. A lookup gets
//! [`LOOKUP_TIMEOUT`] and the connection probes among a name's addresses [`PROBE_TIMEOUT`], so
//! neither can hold a command for long; [`ServerAddr::resolve_interruptible`] also gives up at
//! a signal, for the commands that handle signals themselves (`peer`, `send`, `receive`;
//! `search` and `manifest` are interruptible as a whole).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The port `p2p-transfer server` listens on unless told otherwise, and so the port a
/// `--server` without one means.
pub const DEFAULT_INDEX_PORT: u16 = 8000;

/// How long a name's addresses, probed all at once, may take to accept a connection when the
/// name has several (`localhost` is `::1` and `127.0.0.1`; a server may listen on only one).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the system resolver may take to answer for a name: long enough for a resolver
/// that falls back to a second DNS server, short enough that a dead one is soon reported.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest host name DNS allows.
const MAX_HOST_LEN: usize = 253;

/// An index server's address from the command line: an IP address or a host name, and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerAddr {
    host: Host,
    port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Host {
    Ip(IpAddr),
    Name(String),
}

impl ServerAddr {
    /// The address itself when the host is an IP address (no lookup needed).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self.host {
            Host::Ip(ip) => Some(SocketAddr::new(ip, self.port)),
            Host::Name(_) => None,
        }
    }

    /// The address to connect to: the IP as given, or the host name looked up (within
    /// [`LOOKUP_TIMEOUT`]). Where a name has several addresses, the first to accept a TCP
    /// connection (all are tried at once, within [`PROBE_TIMEOUT`]), else the first in the
    /// resolver's order.
    pub async fn resolve(&self) -> anyhow::Result<SocketAddr> {
        let name = match &self.host {
            Host::Ip(ip) => return Ok(SocketAddr::new(*ip, self.port)),
            Host::Name(name) => name,
        };
        let unknown = || {
            format!(
                "cannot find the host {name:?} of --server {self}: check its name, or give the \
                 index server's IP address"
            )
        };
        let lookup = tokio::net::lookup_host((name.as_str(), self.port));
        let found = match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
            Ok(found) => found.with_context(unknown)?,
            Err(_) => {
                return Err(anyhow::anyhow!(
                    "the name resolver did not answer within {}s",
                    LOOKUP_TIMEOUT.as_secs()
                ))
                .with_context(unknown);
            }
        };
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for addr in found {
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        let Some(&first) = addrs.first() else {
            return Err(anyhow::anyhow!("the name has no address")).with_context(unknown);
        };
        if addrs.len() == 1 {
            return Ok(first);
        }
        Ok(first_to_accept(&addrs).await.unwrap_or(first))
    }

    /// [`ServerAddr::resolve`], given up at `shutdown` (a signal): for commands that go on
    /// running after their set-up and so are not interruptible as a whole.
    pub async fn resolve_interruptible(
        &self,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<SocketAddr> {
        tokio::select! {
            resolved = self.resolve() => resolved,
            () = shutdown.cancelled() => {
                anyhow::bail!("interrupted while looking up --server {self}")
            }
        }
    }

    /// Every one of `servers` resolved at once ([`ServerAddr::resolve`]), in the order given:
    /// each one's address, or why it has none. The caller decides whether one failure is
    /// fatal.
    pub async fn resolve_all(servers: &[ServerAddr]) -> Vec<anyhow::Result<SocketAddr>> {
        let mut lookups = JoinSet::new();
        for (at, server) in servers.iter().enumerate() {
            let server = server.clone();
            lookups.spawn(async move { (at, server.resolve().await) });
        }
        let mut resolved: Vec<Option<anyhow::Result<SocketAddr>>> = std::iter::repeat_with(|| None)
            .take(servers.len())
            .collect();
        while let Some(done) = lookups.join_next().await {
            match done {
                Ok((at, result)) => resolved[at] = Some(result),
                // A lookup task ends only by returning: nothing aborts or panics there.
                Err(join) => std::panic::resume_unwind(join.into_panic()),
            }
        }
        resolved
            .into_iter()
            .map(|r| r.expect("every lookup task reports its server"))
            .collect()
    }
}

/// The first of `addrs` to accept a TCP connection, all tried at once, within
/// [`PROBE_TIMEOUT`] in all; `None` if none does.
async fn first_to_accept(addrs: &[SocketAddr]) -> Option<SocketAddr> {
    let mut probes = JoinSet::new();
    for &addr in addrs {
        probes.spawn(async move { tokio::net::TcpStream::connect(addr).await.map(|_| addr) });
    }
    let first = async {
        while let Some(done) = probes.join_next().await {
            if let Ok(Ok(addr)) = done {
                return Some(addr);
            }
        }
        None
    };
    // The probes still running are aborted when `probes` is dropped.
    tokio::time::timeout(PROBE_TIMEOUT, first)
        .await
        .ok()
        .flatten()
}

impl From<SocketAddr> for ServerAddr {
    fn from(addr: SocketAddr) -> Self {
        Self {
            host: Host::Ip(addr.ip()),
            port: addr.port(),
        }
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(ip) => SocketAddr::new(*ip, self.port).fmt(f),
            Host::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

/// Why a `--server` value is not an address.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddrError {
    /// Nothing given.
    #[error("no address given (HOST, HOST:PORT, IP, IP:PORT or [IPv6]:PORT)")]
    Empty,
    /// The port part is not a port.
    #[error("{0:?} is not a port (1 to 65535)")]
    BadPort(String),
    /// Not an IP address, and not a possible host name.
    #[error("{0:?} is not a host name or IP address (HOST, HOST:PORT, IP, IP:PORT or [IPv6]:PORT)")]
    BadHost(String),
}

impl FromStr for ServerAddr {
    type Err = AddrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.is_empty() {
            return Err(AddrError::Empty);
        }
        let port = |p: &str| match p.parse::<u16>() {
            Ok(port) if port != 0 => Ok(port),
            _ => Err(AddrError::BadPort(p.to_owned())),
        };
        // A bare IP address, IPv6 included (`::1`: its colons are not a port's).
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Self::from(SocketAddr::new(ip, DEFAULT_INDEX_PORT)));
        }
        // `[v6]` or `[v6]:port`.
        if let Some(rest) = text.strip_prefix('[') {
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| AddrError::BadHost(text.to_owned()))?;
            let ip: std::net::Ipv6Addr = inside
                .parse()
                .map_err(|_| AddrError::BadHost(inside.to_owned()))?;
            let port = match after {
                "" => DEFAULT_INDEX_PORT,
                _ => port(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| AddrError::BadHost(text.to_owned()))?,
                )?,
            };
            return Ok(Self::from(SocketAddr::new(IpAddr::V6(ip), port)));
        }
        let (host, port) = match text.split_once(':') {
            Some((host, p)) => (host, port(p)?),
            None => (text, DEFAULT_INDEX_PORT),
        };
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Self::from(SocketAddr::new(ip, port)));
        }
        if !is_host_name(host) {
            return Err(AddrError::BadHost(host.to_owned()));
        }
        Ok(Self {
            host: Host::Name(host.to_ascii_lowercase()),
            port,
        })
    }
}

/// Letters, digits, `-` and `_` in dot-separated labels of at most 63 (a trailing dot is
/// allowed): what a resolver may be asked about.
fn is_host_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= MAX_HOST_LEN
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ServerAddr, AddrError> {
        text.parse()
    }

    fn ip(text: &str) -> Option<SocketAddr> {
        parse(text).unwrap().socket_addr()
    }

    #[test]
    fn ip_forms_need_no_lookup_and_default_the_port() {
        assert_eq!(ip("10.0.0.5"), Some("10.0.0.5:8000".parse().unwrap()));
        assert_eq!(ip("10.0.0.5:9"), Some("10.0.0.5:9".parse().unwrap()));
        assert_eq!(ip("::1"), Some("[::1]:8000".parse().unwrap()));
        assert_eq!(ip("fe80::1"), Some("[fe80::1]:8000".parse().unwrap()));
        assert_eq!(ip("[::1]"), Some("[::1]:8000".parse().unwrap()));
        assert_eq!(ip("[::1]:9"), Some("[::1]:9".parse().unwrap()));
        assert_eq!(ip(" 127.0.0.1:80 "), Some("127.0.0.1:80".parse().unwrap()));
    }

    #[test]
    fn names_keep_their_port_or_take_the_default() {
        let a = parse("Index.LAN").unwrap();
        assert_eq!(a.socket_addr(), None);
        assert_eq!(a.to_string(), "index.lan:8000");
        assert_eq!(parse("localhost:9").unwrap().to_string(), "localhost:9");
        assert_eq!(parse("my-box_1.").unwrap().to_string(), "my-box_1.:8000");
    }

    #[test]
    fn nonsense_is_refused_with_what_is_wrong() {
        assert_eq!(parse(""), Err(AddrError::Empty));
        assert_eq!(parse("host:0"), Err(AddrError::BadPort("0".into())));
        assert_eq!(parse("host:http"), Err(AddrError::BadPort("http".into())));
        assert_eq!(parse("host:70000"), Err(AddrError::BadPort("70000".into())));
        assert_eq!(parse("a b"), Err(AddrError::BadHost("a b".into())));
        assert_eq!(parse("a..b"), Err(AddrError::BadHost("a..b".into())));
        assert_eq!(parse("[::1"), Err(AddrError::BadHost("[::1".into())));
        assert_eq!(parse("[nope]:1"), Err(AddrError::BadHost("nope".into())));
        assert_eq!(parse("[::1]x"), Err(AddrError::BadHost("[::1]x".into())));
        assert!(parse(&"a".repeat(300)).is_err());
        // An IPv6 address with a port needs brackets.
        assert!(parse("fe80::1:99999").is_err());
    }

    #[tokio::test]
    async fn resolve_all_keeps_the_order_given_and_each_ones_result() {
        let servers = [parse("127.0.0.1:5").unwrap(), parse("[::1]:6").unwrap()];
        let resolved = ServerAddr::resolve_all(&servers).await;
        let addrs: Vec<SocketAddr> = resolved.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            addrs,
            ["127.0.0.1:5".parse().unwrap(), "[::1]:6".parse().unwrap()]
        );
    }

    #[tokio::test]
    async fn the_first_address_to_accept_wins_and_none_is_bounded() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap();
        // A port nothing listens on: refused at once.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert_eq!(first_to_accept(&[closed, open]).await, Some(open));
        assert_eq!(first_to_accept(&[closed]).await, None);
    }

    #[tokio::test]
    async fn an_ip_resolves_to_itself_and_localhost_to_loopback() {
        let addr = parse("127.0.0.1:5").unwrap().resolve().await.unwrap();
        assert_eq!(addr, "127.0.0.1:5".parse().unwrap());
        // From the hosts file: no DNS server is asked. (An unknown name's error is checked
        // in a private network namespace: cli_defaults.rs.)
        let addr = parse("localhost:5").unwrap().resolve().await.unwrap();
        assert!(addr.ip().is_loopback() && addr.port() == 5, "{addr}");
    }
}
