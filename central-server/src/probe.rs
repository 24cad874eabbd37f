//! `Prober`: answers `Probe { port }` by connecting back to the asking connection's own
//! source IP at that port, as a downloader would (TCP, TLS, the chunk conversation's `Hello`),
//! and saying whether it got through (`p2p-transfer doctor` asks this to learn whether others
//! can reach its chunk server).
//!
//! What keeps this from being a tool against others (PROTOCOL.md §7.7):
//! * the address is never the client's to choose: only the port is, the IP is the one the
//!   asking TCP connection comes from, so the index can only be made to knock on the asker's
//!   own door (and a TCP source address can't be spoofed past the handshake);
//! * each source address may probe [`PROBE_BURST_PER_IP`] times at once, then once a second
//!   ([`PROBE_RATE_PER_IP`]), an IPv6 address counting with its whole /64 (one host holds a
//!   /64, and could otherwise take a fresh address for each probe); the whole index at most
//!   [`PROBE_RATE`] times a second, and [`MAX_RUNNING_PROBES`] at once. A probe the index
//!   turns down as `busy` costs the asker nothing;
//! * each probe gives up after [`PROBE_TIMEOUT`], and sends nothing but `Hello`;
//! * an operator can turn probes off (`ServerConfig::probes`, `server --no-probe`): for an
//!   index behind a TCP proxy, where the source address is the proxy's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use p2p_protocol::{
    ErrorCode, IndexResponse, NodeId, PeerConversation, ProbeOutcome, ProtocolError,
};
use p2p_transport::Tls;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::rate::RateLimit;

/// TCP connect, TLS handshake and `Welcome`, in all, before a probe counts as timed out.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Probes one source address may make at once.
pub const PROBE_BURST_PER_IP: u32 = 4;

/// Probes one source address may make per second after its burst.
pub const PROBE_RATE_PER_IP: u32 = 1;

/// Probes the whole index makes per second (also its burst).
pub const PROBE_RATE: u32 = 16;

/// Probes running at once; one more is answered `busy`.
pub const MAX_RUNNING_PROBES: usize = 16;

/// The reply to `Probe` of an index run with probes off (`ServerConfig::probes`).
pub const PROBES_OFF: &str =
    "this index server does not check reachability: its operator turned probes off";

/// The one key of the index-wide bucket (a [`RateLimit`] keyed by address, with one address).
const EVERYONE: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// Connects back for `Probe`, within its limits.
#[derive(Debug)]
pub(crate) struct Prober {
    /// The index's own TLS set-up: it connects as itself.
    tls: Tls,
    /// Per source address. std Mutex: a map operation, no `.await` inside.
    per_ip: Mutex<RateLimit>,
    /// Index-wide.
    overall: Mutex<RateLimit>,
    running: Arc<Semaphore>,
}

impl Prober {
    pub(crate) fn new(tls: Tls) -> Self {
        Self {
            tls,
            per_ip: Mutex::new(RateLimit::new(PROBE_BURST_PER_IP, PROBE_RATE_PER_IP)),
            overall: Mutex::new(RateLimit::new(PROBE_RATE, PROBE_RATE)),
            running: Arc::new(Semaphore::new(MAX_RUNNING_PROBES)),
        }
    }

    /// Forgets addresses that no longer limit anyone.
    pub(crate) fn prune(&self, now: Instant) {
        self.per_ip
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .prune(now);
    }

    /// Answers `Probe { port }` from `from`, whose connection proved `node`. Stops early (with
    /// `busy`) when `stop` fires (the connection closed, or the server shuts down).
    pub(crate) async fn probe(
        &self,
        from: SocketAddr,
        node: NodeId,
        port: u16,
        now: Instant,
        stop: &CancellationToken,
    ) -> IndexResponse {
        let error = |code, message: String| IndexResponse::Error { code, message };
        if port == 0 {
            return error(
                ErrorCode::BadRequest,
                "a probe needs a non-zero port".to_owned(),
            );
        }
        let ip = from.ip().to_canonical();
        let _running = match self.admit(ip, now) {
            Ok(permit) => permit,
            Err(refused) => return refused.reply(),
        };
        let addr = SocketAddr::new(ip, port);
        let connect =
            p2p_transport::connect::<PeerConversation>(&self.tls, addr, Some(node), PROBE_TIMEOUT);
        let result = tokio::select! {
            result = connect => result.map(|_| ()),
            // The attempt was made: the asker's token stays spent.
            () = stop.cancelled() => return busy(),
        };
        let (outcome, message) = judge(addr, port, node, result);
        debug!(%addr, %outcome, %message, "probed");
        IndexResponse::Probed {
            addr,
            outcome,
            message,
        }
    }

    /// Admits a probe from `ip` within the limits: the per-address one first, then the
    /// index-wide ones. A probe turned down by those (`busy`) gives the asker's token back.
    fn admit(&self, ip: IpAddr, now: Instant) -> Result<OwnedSemaphorePermit, Refused> {
        let asker = asker_key(ip);
        if !self
            .per_ip
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_take(asker, now)
        {
            return Err(Refused::Asker);
        }
        let permit = self.running.clone().try_acquire_owned().ok();
        let admitted = permit.filter(|_| {
            self.overall
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .try_take(EVERYONE, now)
        });
        admitted.ok_or_else(|| {
            self.per_ip
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .give_back(asker);
            Refused::Index
        })
    }
}

/// Why a probe was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refused {
    /// The asker's own limit: `limit_exceeded`.
    Asker,
    /// The index-wide limits: `busy`.
    Index,
}

impl Refused {
    fn reply(self) -> IndexResponse {
        match self {
            Refused::Asker => IndexResponse::Error {
                code: ErrorCode::LimitExceeded,
                message: format!(
                    "your address probes too often (at most {PROBE_RATE_PER_IP} a second after \
                     the first {PROBE_BURST_PER_IP}); try again in a few seconds"
                ),
            },
            Refused::Index => busy(),
        }
    }
}

/// The reply to a probe the index as a whole has no room for.
fn busy() -> IndexResponse {
    IndexResponse::Error {
        code: ErrorCode::Busy,
        message: "the index server is running as many probes as it may; try again in a moment"
            .to_owned(),
    }
}

/// The per-address limit's key for a source address: an IPv4 address itself, an IPv6 one's
/// /64 (the rest zeroed).
fn asker_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// What a connection back to `addr` that ended with `result` tells the asker.
fn judge(
    addr: SocketAddr,
    port: u16,
    node: NodeId,
    result: Result<(), ProtocolError>,
) -> (ProbeOutcome, String) {
    use std::io::ErrorKind;
    match result {
        Ok(()) => (
            ProbeOutcome::Reached,
            format!("the index reached you at {addr}"),
        ),
        // A chunk server that is full still proved who it is before it said so.
        Err(ProtocolError::Remote {
            code: ErrorCode::Busy | ErrorCode::LimitExceeded,
            ..
        }) => (
            ProbeOutcome::Reached,
            format!("the index reached you at {addr} (your peer said it is busy)"),
        ),
        Err(ProtocolError::WrongNode { got, .. }) => (
            ProbeOutcome::OtherNode,
            format!("the index reached {addr}, but node {got} answered there, not you ({node})"),
        ),
        Err(ProtocolError::Io(err)) if err.kind() == ErrorKind::ConnectionRefused => (
            ProbeOutcome::Refused,
            format!(
                "the index's connection to {addr} was refused: nothing listens on port {port} \
                 there, or a firewall rejects it"
            ),
        ),
        Err(ProtocolError::Timeout(after)) => (
            ProbeOutcome::TimedOut,
            format!(
                "the index got no answer from {addr} within {}s: a firewall most likely \
                 drops connections to port {port}",
                after.as_secs()
            ),
        ),
        Err(err) => (
            ProbeOutcome::Failed,
            format!("the index could not talk to a peer at {addr}: {err}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeId {
        crate::test_tls().node_id()
    }

    #[tokio::test]
    async fn a_probe_reaches_only_the_askers_own_address_within_its_limits() {
        let prober = Prober::new(crate::test_tls());
        let stop = CancellationToken::new();
        let now = Instant::now();
        // Nothing listens on this port (bound, then closed): refused, at the asker's IP.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let from: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let reply = prober.probe(from, node(), port, now, &stop).await;
        let IndexResponse::Probed { addr, outcome, .. } = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(addr, SocketAddr::new(from.ip(), port));
        assert_eq!(outcome, ProbeOutcome::Refused);
        // Port 0 is refused, and costs nothing.
        let reply = prober.probe(from, node(), 0, now, &stop).await;
        assert!(
            matches!(
                reply,
                IndexResponse::Error {
                    code: ErrorCode::BadRequest,
                    ..
                }
            ),
            "{reply:?}"
        );
        // The burst, then `limit_exceeded` for this address only.
        for _ in 1..PROBE_BURST_PER_IP {
            let reply = prober.probe(from, node(), port, now, &stop).await;
            assert!(matches!(reply, IndexResponse::Probed { .. }), "{reply:?}");
        }
        let reply = prober.probe(from, node(), port, now, &stop).await;
        let IndexResponse::Error { code, message } = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(code, ErrorCode::LimitExceeded);
        assert!(message.contains("probes too often"), "{message}");
        let other: SocketAddr = "127.0.0.2:40000".parse().unwrap();
        let reply = prober.probe(other, node(), port, now, &stop).await;
        assert!(matches!(reply, IndexResponse::Probed { .. }), "{reply:?}");
        // A second later, one more.
        let later = now + Duration::from_secs(1);
        let reply = prober.probe(from, node(), port, later, &stop).await;
        assert!(matches!(reply, IndexResponse::Probed { .. }), "{reply:?}");
    }

    #[tokio::test]
    async fn the_index_as_a_whole_probes_at_a_bounded_rate() {
        let prober = Prober::new(crate::test_tls());
        let stop = CancellationToken::new();
        let now = Instant::now();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut busy = 0;
        for i in 0..(PROBE_RATE + 8) {
            // Each from its own address, so only the index-wide limit binds.
            let from = SocketAddr::from(([127, 0, 1, i as u8], 1));
            match prober.probe(from, node(), port, now, &stop).await {
                IndexResponse::Probed { .. } => {}
                IndexResponse::Error {
                    code: ErrorCode::Busy,
                    ..
                } => busy += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(busy, 8);
    }

    fn code(result: Result<OwnedSemaphorePermit, Refused>) -> Option<ErrorCode> {
        match result.map_err(Refused::reply) {
            Ok(_) => None,
            Err(IndexResponse::Error { code, .. }) => Some(code),
            Err(other) => panic!("{other:?}"),
        }
    }

    /// `admit` alone: these addresses are never connected to.
    #[tokio::test]
    async fn an_ipv6_asker_is_limited_by_its_64_and_an_ipv4_one_by_its_address() {
        let prober = Prober::new(crate::test_tls());
        let now = Instant::now();
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        // Another address of the same /64 each time: the fifth is over the limit.
        for i in 1..=PROBE_BURST_PER_IP {
            let asker = ip(&format!("2001:db8:1:2::{i:x}"));
            assert_eq!(code(prober.admit(asker, now)), None, "{asker}");
        }
        assert_eq!(
            code(prober.admit(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), now)),
            Some(ErrorCode::LimitExceeded)
        );
        // The next /64 has its own.
        assert_eq!(code(prober.admit(ip("2001:db8:1:3::1"), now)), None);
        // IPv4: by address; an IPv4-mapped IPv6 address is the IPv4 one.
        for _ in 0..PROBE_BURST_PER_IP {
            assert_eq!(code(prober.admit(ip("10.0.0.1"), now)), None);
        }
        assert_eq!(
            code(prober.admit(ip("::ffff:10.0.0.1"), now)),
            Some(ErrorCode::LimitExceeded)
        );
        assert_eq!(code(prober.admit(ip("10.0.0.2"), now)), None);
        assert_eq!(asker_key(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(asker_key(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
    }

    #[tokio::test]
    async fn a_busy_reply_costs_the_asker_nothing() {
        let prober = Prober::new(crate::test_tls());
        let now = Instant::now();
        let asker: IpAddr = "10.9.9.9".parse().unwrap();
        // Every running slot taken (by as many other askers).
        let running: Vec<_> = (0..MAX_RUNNING_PROBES)
            .map(|i| {
                let other = IpAddr::from([10, 1, 0, i as u8]);
                prober.admit(other, now).expect("room for it")
            })
            .collect();
        // Turned down as busy more often than the asker's burst, never `limit_exceeded`.
        for _ in 0..2 * PROBE_BURST_PER_IP {
            assert_eq!(code(prober.admit(asker, now)), Some(ErrorCode::Busy));
        }
        drop(running);
        // The index-wide rate is used up this second: busy again, still free of charge.
        for _ in 0..2 * PROBE_BURST_PER_IP {
            assert_eq!(code(prober.admit(asker, now)), Some(ErrorCode::Busy));
        }
        // A second later there is room, and the asker still has its whole burst.
        let later = now + Duration::from_secs(1);
        for _ in 0..PROBE_BURST_PER_IP {
            assert_eq!(code(prober.admit(asker, later)), None);
        }
        assert_eq!(
            code(prober.admit(asker, later)),
            Some(ErrorCode::LimitExceeded)
        );
    }

    #[test]
    fn each_failure_is_named_with_its_port() {
        let addr: SocketAddr = "10.0.0.9:7000".parse().unwrap();
        let n = node();
        let (outcome, message) = judge(addr, 7000, n, Err(ProtocolError::Timeout(PROBE_TIMEOUT)));
        assert_eq!(outcome, ProbeOutcome::TimedOut);
        assert!(
            message.contains("port 7000") && message.contains("3s"),
            "{message}"
        );
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let (outcome, _) = judge(addr, 7000, n, Err(ProtocolError::Io(refused)));
        assert_eq!(outcome, ProbeOutcome::Refused);
        let (outcome, message) = judge(addr, 7000, n, Err(ProtocolError::Tls("no".into())));
        assert_eq!(outcome, ProbeOutcome::Failed);
        assert!(message.contains("TLS"), "{message}");
    }
}
