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
//!   ([`PROBE_RATE_PER_IP`]); the whole index at most [`PROBE_RATE`] times a second, and
//!   [`MAX_RUNNING_PROBES`] at once;
//! * each probe gives up after [`PROBE_TIMEOUT`], and sends nothing but `Hello`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use p2p_protocol::{
    ErrorCode, IndexResponse, NodeId, PeerConversation, ProbeOutcome, ProtocolError,
};
use p2p_transport::Tls;
use tokio::sync::Semaphore;
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
        if !self
            .per_ip
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_take(ip, now)
        {
            return error(
                ErrorCode::LimitExceeded,
                format!(
                    "your address probes too often (at most {PROBE_RATE_PER_IP} a second after \
                     the first {PROBE_BURST_PER_IP}); try again in a few seconds"
                ),
            );
        }
        let busy = || {
            error(
                ErrorCode::Busy,
                "the index server is running as many probes as it may; try again in a moment"
                    .to_owned(),
            )
        };
        let Ok(_running) = self.running.clone().try_acquire_owned() else {
            return busy();
        };
        if !self
            .overall
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_take(EVERYONE, now)
        {
            return busy();
        }
        let addr = SocketAddr::new(ip, port);
        let connect =
            p2p_transport::connect::<PeerConversation>(&self.tls, addr, Some(node), PROBE_TIMEOUT);
        let result = tokio::select! {
            result = connect => result.map(|_| ()),
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
