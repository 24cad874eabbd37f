//! The hosts of one download: their reusable connections, load and failure counts, and which
//! one gets the next chunk.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use p2p_protocol::{HostInfo, NodeId, PeerConversation, PeerId, ProtocolError};
use p2p_transport::{ClientConnection, Tls};

/// One host's connection.
pub(crate) type HostConnection = ClientConnection<PeerConversation>;

/// A host as the index or the user named it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HostSpec {
    pub addr: SocketAddr,
    pub peer_id: PeerId,
    /// Who must answer at `addr`: the node id the index recorded when the host registered.
    /// `None` for a host named only by its address (`--from`): whoever answers there.
    pub node_id: Option<NodeId>,
}

impl From<HostInfo> for HostSpec {
    fn from(info: HostInfo) -> Self {
        Self {
            addr: info.addr,
            peer_id: info.peer_id,
            node_id: Some(info.node_id),
        }
    }
}

/// A peer serving chunks to this download.
#[derive(Debug)]
pub(crate) struct Host {
    pub addr: SocketAddr,
    pub peer_id: PeerId,
    /// The node that must answer at `addr`, if known ([`HostSpec::node_id`]).
    pub node_id: Option<NodeId>,
    /// Connections not in use right now; reused so a chunk costs no TCP handshake.
    idle: Mutex<Vec<HostConnection>>,
    /// Chunk requests outstanding; the least loaded host gets the next chunk.
    in_flight: AtomicUsize,
    failures: AtomicU32,
    dropped: AtomicBool,
    /// Sent bytes that failed verification, or said it lacks the file: once dropped (after
    /// [`crate::PeerConfig::max_host_failures`] failures, or at once for a missing file), it is
    /// not taken back in this download, even if the index (not updated yet) lists it again.
    banned: AtomicBool,
    /// Chunks this host delivered first and that passed verification.
    pub delivered: AtomicU64,
}

impl Host {
    pub fn new(spec: HostSpec) -> Self {
        Self {
            addr: spec.addr,
            peer_id: spec.peer_id,
            node_id: spec.node_id,
            idle: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            failures: AtomicU32::new(0),
            dropped: AtomicBool::new(false),
            banned: AtomicBool::new(false),
            delivered: AtomicU64::new(0),
        }
    }

    /// An idle connection (`true`: reused, so the host may have closed it meanwhile), or a
    /// new one after the handshake.
    pub async fn checkout(
        &self,
        tls: &Tls,
        connect_timeout: Duration,
    ) -> Result<(HostConnection, bool), ProtocolError> {
        if let Some(conn) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok((conn, true));
        }
        Ok((self.connect(tls, connect_timeout).await?, false))
    }

    /// A new connection, after the handshakes; [`ProtocolError::WrongNode`] if another node
    /// than the expected one answers (an impostor at the host's address).
    pub async fn connect(
        &self,
        tls: &Tls,
        connect_timeout: Duration,
    ) -> Result<HostConnection, ProtocolError> {
        let (conn, _) = p2p_transport::connect::<PeerConversation>(
            tls,
            self.addr,
            self.node_id,
            connect_timeout,
        )
        .await?;
        Ok(conn)
    }

    /// Returns a connection that finished its exchange cleanly.
    pub fn checkin(&self, conn: HostConnection) {
        if !self.is_dropped() {
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn);
        }
    }

    /// Counts a failure; returns true if this one dropped the host.
    pub fn record_failure(&self, max_failures: u32, fatal: bool, lied: bool) -> bool {
        if lied || fatal {
            self.banned.store(true, Ordering::Relaxed);
        }
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if (fatal || failures >= max_failures) && !self.dropped.swap(true, Ordering::Relaxed) {
            self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
            return true;
        }
        false
    }

    /// Gives a dropped host another chance (the index still lists it), unless it lied or
    /// lacks the file.
    pub fn revive(&self) -> bool {
        if self.banned.load(Ordering::Relaxed) || !self.is_dropped() {
            return false;
        }
        self.failures.store(0, Ordering::Relaxed);
        self.dropped.store(false, Ordering::Relaxed);
        true
    }

    pub fn is_dropped(&self) -> bool {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Marks a request as outstanding until the guard drops.
    pub fn start_request(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }
}

/// Decrements a host's outstanding count on drop, whatever way the request ends.
pub(crate) struct InFlight<'a>(&'a Host);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Chooses the host for chunk `index`: the live host with the fewest requests outstanding,
/// ties broken by a rotation on the chunk index so equal hosts share the work evenly, and
/// avoiding the hosts in `avoid` (that just failed this chunk, or are already fetching it)
/// while another host is alive.
pub(crate) fn pick<H: AsRef<Host>>(hosts: &[H], index: u32, avoid: &[usize]) -> Option<usize> {
    let n = hosts.len();
    if n == 0 {
        return None;
    }
    let live = |i: &usize| !hosts[*i].as_ref().is_dropped();
    let candidates = (0..n).map(|k| (k + index as usize) % n).filter(live);
    let best = |skip: &[usize]| {
        candidates
            .clone()
            .filter(|i| !skip.contains(i))
            .min_by_key(|i| hosts[*i].as_ref().in_flight.load(Ordering::Relaxed))
    };
    best(avoid).or_else(|| best(&[]))
}

impl AsRef<Host> for Host {
    fn as_ref(&self) -> &Host {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(n: usize) -> Vec<Host> {
        (0..n)
            .map(|i| {
                Host::new(HostSpec {
                    addr: SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16)),
                    peer_id: PeerId(i as u64),
                    node_id: None,
                })
            })
            .collect()
    }

    #[test]
    fn equal_hosts_share_chunks_evenly() {
        let hosts = hosts(3);
        let mut guards = Vec::new();
        let mut counts = [0; 3];
        for index in 0..9 {
            let h = pick(&hosts, index, &[]).unwrap();
            counts[h] += 1;
            guards.push(hosts[h].start_request());
        }
        assert_eq!(counts, [3, 3, 3]);
    }

    #[test]
    fn failed_host_is_avoided_then_dropped_and_liars_stay_dropped() {
        let hosts = hosts(2);
        assert_eq!(pick(&hosts, 0, &[0]), Some(1));
        assert!(!hosts[1].record_failure(2, false, false));
        assert!(hosts[1].record_failure(2, false, false));
        assert_eq!(pick(&hosts, 0, &[0]), Some(0));
        assert!(
            !hosts[0].record_failure(5, false, true),
            "one bad chunk of five allowed"
        );
        assert!(
            hosts[0].record_failure(5, true, false),
            "a fatal error drops at once"
        );
        assert_eq!(pick(&hosts, 0, &[]), None);
        assert!(
            hosts[1].revive(),
            "a host that only failed to answer may come back"
        );
        assert!(!hosts[0].revive(), "a host that sent bad data does not");
        assert_eq!(pick(&hosts, 0, &[]), Some(1));
    }
}
