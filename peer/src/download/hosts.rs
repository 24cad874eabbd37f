//! The hosts of one download job.
//!
//! * [`HostSpec`]: a host as the index or the user named it.
//! * [`HostFault`] and its [`Effect`]: what went wrong with a request, and what that does to
//!   the host (it replaces the `fatal`/`lied` flags of the old pool).
//! * [`HostTable`]: the pure state of a job's hosts: load, failure counts, live / dropped /
//!   banned, chunks delivered, and which one gets the next chunk. No I/O, no locks, no clock;
//!   the scheduler (`schedule.rs`) owns it.
//!
//! The connections to the hosts are `links.rs`'s.
//!
//! # Host rules (the table's part; the scheduler adds the per-chunk and per-file ones)
//! * **Least loaded, rotated**: the next chunk goes to the usable host with the fewest requests
//!   outstanding; ties are broken by a rotation on the chunk, so equal hosts share evenly.
//! * **Failures**: [`Effect::Retry`] faults count; at `max_host_failures` the host is dropped.
//!   [`Effect::Lacks`] does not count: the scheduler keeps the host off that one file, and drops
//!   it only when it lacks every file still to fetch. [`Effect::Drop`] and [`Effect::Ban`] drop
//!   it at once.
//! * **Bans**: a host that sent bad data ([`Effect::Distrust`], [`Effect::Ban`]) is never taken
//!   back in this job once dropped, even when the index (not updated yet) lists it again. One
//!   bad chunk alone does not drop it ([`Effect::Distrust`] counts as one failure): a flipped bit
//!   on its disk costs one chunk, not every other chunk it could still serve.
//! * **Revival**: a dropped host that is not banned comes back when the index lists it again,
//!   with its failure count reset. A listed host the table does not know (by address) is added.

use std::net::SocketAddr;

use p2p_protocol::{ErrorCode, HostInfo, NodeId};

/// A host as the index or the user named it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HostSpec {
    pub addr: SocketAddr,
    /// Who must answer at `addr`: the node id the index recorded when the host registered.
    /// `None` for a host named only by its address (`--from`): whoever answers there.
    pub node_id: Option<NodeId>,
}

impl From<HostInfo> for HostSpec {
    fn from(info: HostInfo) -> Self {
        Self {
            addr: info.addr,
            // Two indexes disagreed about who is there: whoever answers (chunks are verified).
            node_id: (info.node_id != crate::index::merge::UNPINNED).then_some(info.node_id),
        }
    }
}

/// What went wrong with one request to a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HostFault {
    /// No connection: refused, unreachable, or the TLS/`Hello` handshake failed.
    Unreachable,
    /// No reply within the request timeout, or the connection died during the reply.
    Timeout,
    /// A pooled connection the host had closed while it sat idle (its idle timeout, or it made
    /// room for another client): not the host failing.
    #[allow(dead_code)] // links.rs reconnects such a connection itself
    ClosedIdle,
    /// The host is at its connection or request limit right now.
    Busy,
    /// The host answered with an error code.
    Refused(ErrorCode),
    /// Another node than the one the index recorded answered at the host's address.
    WrongNode,
    /// The host sent something no honest host sends.
    BadData(BadData),
}

/// The kinds of bad data a host can send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BadData {
    /// A chunk whose SHA-256 is not the manifest's (or whose length is wrong).
    HashMismatch,
    /// A chunk announced longer than any chunk can be.
    TooLarge,
    /// A reply that does not answer the request (another chunk, another message).
    WrongReply,
    /// A folder record page or manifest that does not match its id.
    #[allow(dead_code)] // the folder record's (record.rs)
    BadRecord,
}

/// What a [`HostFault`] does to the host (and to the chunk: every fault but a success puts the
/// chunk back for another host, unless another copy is still in flight).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Not held against the host: the chunk is simply asked again, from any host.
    Requeue,
    /// Counts toward `max_host_failures`; the chunk goes to another host if there is one.
    Retry,
    /// The host lacks this file (it said `unknown_file`, `file_unavailable` or
    /// `chunk_out_of_range`): it is never asked for this file again in this job. The table does
    /// not count it: the scheduler drops the host only when it lacks every file still to fetch,
    /// so files a seeder edited during a job (however many) do not cost the host the others.
    Lacks,
    /// Dropped at once (it refuses us: `forbidden`); a re-list by the index revives it.
    Drop,
    /// Counts toward `max_host_failures` like [`Effect::Retry`], and once dropped the host is
    /// banned: never revived in this job.
    Distrust,
    /// Dropped at once and never revived in this job.
    Ban,
}

impl HostFault {
    /// What this fault does to the host.
    pub fn effect(&self) -> Effect {
        match self {
            HostFault::ClosedIdle => Effect::Requeue,
            HostFault::Unreachable | HostFault::Timeout | HostFault::Busy => Effect::Retry,
            HostFault::Refused(
                ErrorCode::UnknownFile | ErrorCode::FileUnavailable | ErrorCode::ChunkOutOfRange,
            ) => Effect::Lacks,
            HostFault::Refused(ErrorCode::Forbidden) => Effect::Drop,
            HostFault::Refused(_) => Effect::Retry,
            HostFault::BadData(BadData::HashMismatch | BadData::TooLarge) => Effect::Distrust,
            HostFault::BadData(BadData::WrongReply | BadData::BadRecord) | HostFault::WrongNode => {
                Effect::Ban
            }
        }
    }
}

/// A host's place in its job's [`HostTable`]; stable for the whole job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct HostIx(pub usize);

/// Whether a host is asked for chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HostStatus {
    /// Asked for chunks.
    Live,
    /// Not asked; a re-list by the index revives it.
    Dropped,
    /// Not asked again in this job.
    Banned,
}

/// One host of a job.
#[derive(Clone, Debug)]
pub(crate) struct HostState {
    pub spec: HostSpec,
    pub status: HostStatus,
    /// Requests outstanding; the least loaded host gets the next chunk.
    pub load: usize,
    /// [`Effect::Retry`] and [`Effect::Distrust`] faults since it was added or revived.
    failures: u32,
    /// Sent bad data: banned, not dropped, when it goes.
    distrusted: bool,
    /// Chunks it delivered first that passed verification.
    pub delivered: u64,
}

impl HostState {
    fn new(spec: HostSpec) -> Self {
        Self {
            spec,
            status: HostStatus::Live,
            load: 0,
            failures: 0,
            distrusted: false,
            delivered: 0,
        }
    }
}

/// What a re-list did to a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Listed {
    /// A host the job did not know.
    Added(HostIx),
    /// A dropped (not banned) host, live again.
    Revived(HostIx),
}

/// The hosts of one job: pure state, no I/O (see the module docs for the rules).
#[derive(Clone, Debug)]
pub(crate) struct HostTable {
    hosts: Vec<HostState>,
    max_failures: u32,
}

impl HostTable {
    /// A table of `specs` (a second spec with an address already listed is ignored), each
    /// dropped after `max_failures` failures.
    pub fn new(specs: impl IntoIterator<Item = HostSpec>, max_failures: u32) -> Self {
        let mut table = Self {
            hosts: Vec::new(),
            max_failures: max_failures.max(1),
        };
        for spec in specs {
            if table.find(spec.addr).is_none() {
                table.hosts.push(HostState::new(spec));
            }
        }
        table
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    #[allow(dead_code)] // for tests and callers to come
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Every host, by index.
    pub fn iter(&self) -> impl Iterator<Item = (HostIx, &HostState)> + '_ {
        self.hosts.iter().enumerate().map(|(i, h)| (HostIx(i), h))
    }

    pub fn get(&self, host: HostIx) -> &HostState {
        &self.hosts[host.0]
    }

    /// The host at `addr`, if the table has one.
    pub fn find(&self, addr: SocketAddr) -> Option<HostIx> {
        self.hosts
            .iter()
            .position(|h| h.spec.addr == addr)
            .map(HostIx)
    }

    #[allow(dead_code)] // for tests and callers to come
    pub fn is_live(&self, host: HostIx) -> bool {
        self.hosts[host.0].status == HostStatus::Live
    }

    pub fn is_banned(&self, host: HostIx) -> bool {
        self.hosts[host.0].status == HostStatus::Banned
    }

    /// Whether any host is live.
    pub fn any_live(&self) -> bool {
        self.hosts.iter().any(|h| h.status == HostStatus::Live)
    }

    /// A request to `host` went out.
    pub fn start(&mut self, host: HostIx) {
        self.hosts[host.0].load += 1;
    }

    /// A request to `host` ended, whatever way.
    pub fn end(&mut self, host: HostIx) {
        let load = &mut self.hosts[host.0].load;
        debug_assert!(*load > 0, "a request ended that never started");
        *load = load.saturating_sub(1);
    }

    /// `host` delivered a chunk first, and it verified.
    pub fn delivered(&mut self, host: HostIx) {
        self.hosts[host.0].delivered += 1;
    }

    /// Applies `effect` to `host`; returns whether this dropped it (`false` if it was dropped
    /// already).
    pub fn fault(&mut self, host: HostIx, effect: Effect) -> bool {
        let max = self.max_failures;
        let h = &mut self.hosts[host.0];
        let drop = match effect {
            Effect::Requeue => false,
            Effect::Retry => {
                h.failures += 1;
                h.failures >= max
            }
            Effect::Distrust => {
                h.distrusted = true;
                h.failures += 1;
                h.failures >= max
            }
            // The scheduler's (per file, and every file left).
            Effect::Lacks => false,
            Effect::Drop => true,
            Effect::Ban => {
                h.distrusted = true;
                true
            }
        };
        let was_live = h.status == HostStatus::Live;
        if h.distrusted && h.status == HostStatus::Dropped {
            // Dropped for failing to answer, then (a reply still in flight) caught lying.
            h.status = HostStatus::Banned;
        }
        if drop && was_live {
            h.status = if h.distrusted {
                HostStatus::Banned
            } else {
                HostStatus::Dropped
            };
            return true;
        }
        false
    }

    /// The index lists `specs` (this peer already filtered out): adds the hosts the table does
    /// not know and revives the dropped ones that are not banned.
    pub fn listed(&mut self, specs: impl IntoIterator<Item = HostSpec>) -> Vec<Listed> {
        let mut changes = Vec::new();
        for spec in specs {
            match self.find(spec.addr) {
                Some(known) => {
                    let h = &mut self.hosts[known.0];
                    if h.status == HostStatus::Dropped {
                        h.status = HostStatus::Live;
                        h.failures = 0;
                        changes.push(Listed::Revived(known));
                    }
                }
                None => {
                    self.hosts.push(HostState::new(spec));
                    changes.push(Listed::Added(HostIx(self.hosts.len() - 1)));
                }
            }
        }
        changes
    }

    /// The host for the next chunk among those `usable` says may take it: the least loaded,
    /// ties broken by a rotation on `rotation` (the chunk), and not `avoid` (the host that
    /// last failed this chunk) while another usable host exists.
    pub fn pick(
        &self,
        rotation: usize,
        avoid: Option<HostIx>,
        usable: impl Fn(HostIx, &HostState) -> bool,
    ) -> Option<HostIx> {
        let n = self.hosts.len();
        if n == 0 {
            return None;
        }
        let mut best: Option<(HostIx, usize)> = None;
        let mut fallback: Option<(HostIx, usize)> = None;
        for k in 0..n {
            let i = HostIx((k + rotation) % n);
            let h = &self.hosts[i.0];
            if !usable(i, h) {
                continue;
            }
            let slot = if Some(i) == avoid {
                &mut fallback
            } else {
                &mut best
            };
            if slot.is_none_or(|(_, load)| h.load < load) {
                *slot = Some((i, h.load));
            }
        }
        best.or(fallback).map(|(i, _)| i)
    }

    /// Chunks each host delivered first, for the job's report.
    pub fn per_host(&self) -> Vec<(SocketAddr, u64)> {
        self.hosts
            .iter()
            .map(|h| (h.spec.addr, h.delivered))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(n: usize) -> HostTable {
        HostTable::new(
            (0..n).map(|i| HostSpec {
                addr: SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16)),
                node_id: None,
            }),
            3,
        )
    }

    fn live(_: HostIx, h: &HostState) -> bool {
        h.status == HostStatus::Live
    }

    #[test]
    fn each_fault_has_the_effect_the_old_flags_had_or_the_plan_asks() {
        use ErrorCode::*;
        let cases = [
            (HostFault::ClosedIdle, Effect::Requeue),
            (HostFault::Unreachable, Effect::Retry),
            (HostFault::Timeout, Effect::Retry),
            (HostFault::Busy, Effect::Retry),
            (HostFault::Refused(Busy), Effect::Retry),
            (HostFault::Refused(Internal), Effect::Retry),
            (HostFault::Refused(Unknown), Effect::Retry),
            (HostFault::Refused(UnknownFile), Effect::Lacks),
            (HostFault::Refused(FileUnavailable), Effect::Lacks),
            (HostFault::Refused(ChunkOutOfRange), Effect::Lacks),
            (HostFault::Refused(Forbidden), Effect::Drop),
            (HostFault::BadData(BadData::HashMismatch), Effect::Distrust),
            (HostFault::BadData(BadData::TooLarge), Effect::Distrust),
            (HostFault::BadData(BadData::WrongReply), Effect::Ban),
            (HostFault::BadData(BadData::BadRecord), Effect::Ban),
            (HostFault::WrongNode, Effect::Ban),
        ];
        for (fault, effect) in cases {
            assert_eq!(fault.effect(), effect, "{fault:?}");
        }
    }

    #[test]
    fn the_table_picks_the_least_loaded_rotating_among_equals() {
        let mut t = table(3);
        assert_eq!(t.pick(0, None, live), Some(HostIx(0)));
        assert_eq!(t.pick(1, None, live), Some(HostIx(1)));
        assert_eq!(t.pick(5, None, live), Some(HostIx(2)));
        t.start(HostIx(0));
        t.start(HostIx(1));
        assert_eq!(t.pick(0, None, live), Some(HostIx(2)));
        // The last failer only when nobody else can.
        assert_eq!(t.pick(2, Some(HostIx(2)), live), Some(HostIx(0)));
        let only_2 = |h: HostIx, s: &HostState| live(h, s) && h == HostIx(2);
        assert_eq!(t.pick(0, Some(HostIx(2)), only_2), Some(HostIx(2)));
        assert_eq!(t.pick(0, None, |_, _| false), None);
        t.end(HostIx(0));
        assert_eq!(t.get(HostIx(0)).load, 0);
    }

    #[test]
    fn the_table_drops_bans_and_revives() {
        let mut t = table(4);
        // Retries count to three.
        assert!(!t.fault(HostIx(0), Effect::Retry));
        assert!(!t.fault(HostIx(0), Effect::Retry));
        assert!(t.fault(HostIx(0), Effect::Retry));
        assert!(!t.fault(HostIx(0), Effect::Retry), "dropped once");
        assert_eq!(t.get(HostIx(0)).status, HostStatus::Dropped);
        // Lacking files never count: neither toward failures nor on their own.
        assert!(!t.fault(HostIx(1), Effect::Retry));
        for _ in 0..10 {
            assert!(!t.fault(HostIx(1), Effect::Lacks));
        }
        assert!(!t.fault(HostIx(1), Effect::Retry));
        assert_eq!(t.get(HostIx(1)).status, HostStatus::Live);
        assert!(t.fault(HostIx(1), Effect::Retry));
        // Bad data: one is allowed, but once dropped it is banned.
        assert!(!t.fault(HostIx(2), Effect::Distrust));
        assert!(t.get(HostIx(2)).status == HostStatus::Live);
        assert!(!t.fault(HostIx(2), Effect::Retry));
        assert!(t.fault(HostIx(2), Effect::Retry));
        assert_eq!(t.get(HostIx(2)).status, HostStatus::Banned);
        assert!(t.fault(HostIx(3), Effect::Drop));
        assert!(!t.any_live());
        let changes = t.listed((0..4).map(|i| t.get(HostIx(i)).spec).collect::<Vec<_>>());
        assert_eq!(
            changes,
            vec![
                Listed::Revived(HostIx(0)),
                Listed::Revived(HostIx(1)),
                Listed::Revived(HostIx(3)),
            ]
        );
        assert!(t.is_banned(HostIx(2)), "a ban survives a re-list");
        // Revived with its failures forgotten: three more to drop it.
        assert!(!t.fault(HostIx(0), Effect::Retry));
        assert!(!t.fault(HostIx(0), Effect::Retry));
        // A dropped host caught lying by a late reply is banned.
        assert!(t.fault(HostIx(3), Effect::Drop));
        assert!(!t.fault(HostIx(3), Effect::Ban));
        assert!(t.is_banned(HostIx(3)));
        assert_eq!(t.listed(vec![t.get(HostIx(3)).spec]), vec![]);
    }
}
