//! Turning `HOST:PORT` bootstrap entries into the IPv4 socket addresses mainline takes.
//!
//! Syntax errors fail the start (a typo should not silently leave a node alone); a name that
//! does not resolve, or resolves to IPv6 only, is skipped with a warning (a remembered name may
//! be gone, and mainline speaks IPv4 only).

use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use tracing::warn;

use crate::error::DhtError;

/// Longest one name lookup may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// One bootstrap entry, parsed.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    /// An IPv4 address and port.
    V4(SocketAddrV4),
    /// An IPv6 literal, which mainline cannot use.
    V6,
    /// A name to look up.
    Name(String, u16),
}

const BAD_PORT: &str = "the port must be 1 to 65535";

fn parse(entry: &str) -> Result<Entry, &'static str> {
    let entry = entry.trim();
    if let Ok(addr) = entry.parse::<SocketAddr>() {
        return match addr {
            _ if addr.port() == 0 => Err(BAD_PORT),
            SocketAddr::V4(addr) => Ok(Entry::V4(addr)),
            SocketAddr::V6(_) => Ok(Entry::V6),
        };
    }
    let Some((host, port)) = entry.rsplit_once(':') else {
        return Err("expected HOST:PORT");
    };
    if host.is_empty() || host.contains(':') || host.contains(char::is_whitespace) {
        return Err("expected HOST:PORT");
    }
    match port.parse::<u16>() {
        Ok(port) if port != 0 => Ok(Entry::Name(host.to_owned(), port)),
        _ => Err(BAD_PORT),
    }
}

/// The IPv4 addresses of `entries`, without duplicates and without `own` (this node itself).
pub(crate) async fn resolve(
    entries: &[String],
    own: SocketAddrV4,
) -> Result<Vec<SocketAddrV4>, DhtError> {
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let parsed = parse(entry).map_err(|reason| DhtError::InvalidBootstrap {
            entry: entry.clone(),
            reason,
        })?;
        let found = match parsed {
            Entry::V4(addr) => vec![addr],
            Entry::V6 => {
                warn!(entry = %entry, "DHT bootstrap node skipped: the DHT speaks IPv4 only");
                continue;
            }
            Entry::Name(host, port) => {
                let lookup = tokio::net::lookup_host((host.as_str(), port));
                match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                    Ok(Ok(addrs)) => addrs
                        .filter_map(|a| match a {
                            SocketAddr::V4(a) => Some(a),
                            SocketAddr::V6(_) => None,
                        })
                        .collect(),
                    Ok(Err(err)) => {
                        warn!(entry = %entry, %err, "DHT bootstrap node skipped: cannot resolve it");
                        continue;
                    }
                    Err(_) => {
                        warn!(entry = %entry, "DHT bootstrap node skipped: name lookup timed out");
                        continue;
                    }
                }
            }
        };
        if found.is_empty() {
            warn!(entry = %entry, "DHT bootstrap node skipped: no IPv4 address");
        }
        for addr in found {
            if addr != own && !out.contains(&addr) {
                out.push(addr);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn entries_parse_or_say_why_not() {
        let v4 = SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, 7), 8010);
        assert_eq!(parse("10.1.0.7:8010"), Ok(Entry::V4(v4)));
        assert_eq!(parse(" 10.1.0.7:8010 "), Ok(Entry::V4(v4)));
        assert_eq!(parse("[::1]:8010"), Ok(Entry::V6));
        assert_eq!(
            parse("dht.example.lan:8010"),
            Ok(Entry::Name("dht.example.lan".into(), 8010))
        );
        assert_eq!(parse("10.1.0.7"), Err("expected HOST:PORT"));
        assert_eq!(parse(":8010"), Err("expected HOST:PORT"));
        assert_eq!(parse("10.1.0.7:0"), Err("the port must be 1 to 65535"));
        assert_eq!(parse("host:99999"), Err("the port must be 1 to 65535"));
        assert_eq!(parse("host:port"), Err("the port must be 1 to 65535"));
    }

    #[tokio::test]
    async fn duplicates_and_the_node_itself_are_left_out() {
        let own = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 4000);
        let entries = [
            "127.0.0.1:4000",
            "127.0.0.1:4001",
            "127.0.0.1:4001",
            "localhost:4002",
        ]
        .map(String::from);
        let got = resolve(&entries, own).await.unwrap();
        assert_eq!(
            got,
            [4001, 4002].map(|port| SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
        );
        let err = resolve(&["nope".to_owned()], own).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad DHT bootstrap node \"nope\": expected HOST:PORT"
        );
    }
}
