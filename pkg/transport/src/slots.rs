//! [`SlotTable`]: the connections a server has admitted, what each is doing, and which one to
//! close when a newcomer finds every slot taken. Both servers use it, so idle, slow or greedy
//! connections can't starve the clients that actually use a server.
//!
//! # Rules
//! * At most `max` connections in all and `max_per_ip` from one source address (IPv4-mapped
//!   IPv6 counts as IPv4). Over the per-address cap the newcomer is refused.
//! * Each admitted connection is **idle** (handshaking, or between requests, since some
//!   instant), **busy** (a request is being answered: read whole, and waiting for a turn or
//!   for room, or being worked on) or **writing** (its reply is being sent, since some
//!   instant). Only how long a reply has been *written* says that a client reads slowly; time
//!   spent answering says nothing about the client.
//! * When all `max` are taken, the table closes one idle connection to admit the newcomer:
//!   the **longest-idle** one whose address holds more connections than the newcomer's address
//!   does (or one of the newcomer's own address). So one address can't push out the
//!   connections of a lighter one, and a newcomer from an address with nothing open can always
//!   get in while anything is idle.
//! * If nothing idle qualifies, a connection that has been writing one reply for at least
//!   `slow_after` (its client reads the reply too slowly) is closed instead, the longest-writing
//!   first, but only from an address holding at least two more connections than the
//!   newcomer's. A busy connection is never closed by this rule, however long it has been busy.
//! * With `fair_share` (the chunk server), if still nothing qualifies, any busy or writing
//!   connection of an address holding at least two more connections than the newcomer's is
//!   closed: one of the address holding most, the one longest in its state first. So a
//!   newcomer from an address holding `n` connections is refused only if no address holds
//!   `n + 2` or more: clients that re-request back to back, never idle and never slow, still
//!   can't keep a newcomer from an address holding nothing out while any address holds two.
//! * A connection can be **privileged** for a while (the index: it carries a live
//!   registration, proven by its node id). Privileged connections are closed only when no
//!   unprivileged one qualifies. One key (peer id) privileges one connection at a time, so a
//!   privilege can't be spread over many connections.
//! * If no connection qualifies, the newcomer is refused. Refusals being answered are bounded
//!   too (`max_refusals`); beyond that a newcomer is closed without a reply.
//!
//! A closed connection is told through its [`Slot::closed`] token, a child of the server's
//! shutdown token; it leaves the table (and frees its counts) at once.
//!
//! The table is pure state: every method that needs the time takes `now`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tracing::debug;

/// The caps of one [`SlotTable`].
#[derive(Clone, Copy, Debug)]
pub struct SlotLimits {
    /// Connections served at once.
    pub max: usize,
    /// Connections one source address may hold at once.
    pub max_per_ip: usize,
    /// Refusals being answered at once; more newcomers are closed without a reply.
    pub max_refusals: usize,
    /// A connection writing one reply for this long is reading it too slowly; when nothing
    /// idle can make room, it may be closed for a newcomer from a lighter address.
    pub slow_after: Duration,
    /// When nothing idle or slow can make room, close a busy or writing connection, whatever
    /// its speed, of an address holding at least two more connections than the newcomer's
    /// (see the module docs). For servers whose clients legitimately keep every connection
    /// busy, such as a chunk server serving back-to-back downloads.
    pub fair_share: bool,
}

/// The admitted connections of one listener. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SlotTable {
    /// std Mutex: every critical section is a few map operations (a scan of the table when
    /// full) with no `.await` inside.
    table: Arc<Mutex<Table>>,
}

#[derive(Debug)]
struct Table {
    limits: SlotLimits,
    next_id: u64,
    open: HashMap<u64, Entry>,
    per_ip: HashMap<IpAddr, usize>,
    /// Privilege key → the one slot holding it.
    privileged: HashMap<u64, u64>,
    refusing: usize,
}

#[derive(Debug)]
struct Entry {
    ip: IpAddr,
    state: State,
    /// The key and until when the privilege lasts.
    privilege: Option<(u64, Instant)>,
    closed: CancellationToken,
}

/// What a connection is doing, and since when.
#[derive(Clone, Copy, Debug)]
enum State {
    /// Handshaking, or waiting for the next request.
    Idle(Instant),
    /// Answering a request, its reply not yet being written.
    Busy(Instant),
    /// Writing the reply.
    Writing(Instant),
}

impl Entry {
    fn privileged(&self, now: Instant) -> bool {
        self.privilege.is_some_and(|(_, until)| until > now)
    }
}

/// What to do with a new connection.
#[derive(Debug)]
pub enum Admission {
    /// Serve it; the slot frees when dropped.
    Admitted(Slot),
    /// Answer it with an error reply and close it. Holds one of the `max_refusals` places
    /// until dropped.
    Refused(Refusal, RefusalPlace),
    /// Too many refusals are being answered already: close it without a reply.
    Dropped,
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its address already holds `max` connections.
    AddressFull {
        /// The per-address cap.
        max: usize,
    },
    /// All `max` slots are taken and none could be closed for it.
    Full {
        /// The total cap.
        max: usize,
    },
}

/// One admitted connection. Dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    id: u64,
    closed: CancellationToken,
    table: Arc<Mutex<Table>>,
}

/// A refusal being answered; dropping it frees the place.
#[derive(Debug)]
pub struct RefusalPlace {
    table: Arc<Mutex<Table>>,
}

impl SlotTable {
    /// An empty table with these caps.
    pub fn new(limits: SlotLimits) -> Self {
        Self {
            table: Arc::new(Mutex::new(Table {
                limits,
                next_id: 0,
                open: HashMap::new(),
                per_ip: HashMap::new(),
                privileged: HashMap::new(),
                refusing: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        lock(&self.table)
    }

    /// Admits a connection from `ip` that arrived at `now`, closing a qualifying connection
    /// (the longest-idle one, if any; module docs) if every slot is taken. The slot's [`Slot::closed`] token is a
    /// child of `shutdown`.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use p2p_transport::slots::{Admission, Refusal, SlotLimits, SlotTable};
    /// use tokio_util::sync::CancellationToken;
    ///
    /// let limits = SlotLimits {
    ///     max: 1,
    ///     max_per_ip: 1,
    ///     max_refusals: 4,
    ///     slow_after: Duration::from_secs(10),
    ///     fair_share: false,
    /// };
    /// let table = SlotTable::new(limits);
    /// let shutdown = CancellationToken::new();
    /// let t0 = Instant::now();
    /// let Admission::Admitted(idle) = table.admit("10.0.0.1".parse().unwrap(), t0, &shutdown)
    ///     else { panic!() };
    /// // Full: a newcomer from another address closes the idle connection.
    /// let later = t0 + Duration::from_secs(1);
    /// let Admission::Admitted(busy) = table.admit("10.0.0.2".parse().unwrap(), later, &shutdown)
    ///     else { panic!() };
    /// assert!(idle.closed_token().is_cancelled());
    /// // A connection answering a request is never closed to make room (without
    /// // `fair_share`).
    /// assert!(busy.busy(later));
    /// let refused = table.admit("10.0.0.3".parse().unwrap(), later, &shutdown);
    /// assert!(matches!(refused, Admission::Refused(Refusal::Full { max: 1 }, _)));
    /// ```
    pub fn admit(&self, ip: IpAddr, now: Instant, shutdown: &CancellationToken) -> Admission {
        let ip = ip.to_canonical();
        let mut table = self.lock();
        let from_ip = table.per_ip.get(&ip).copied().unwrap_or(0);
        let refusal = if from_ip >= table.limits.max_per_ip {
            Some(Refusal::AddressFull {
                max: table.limits.max_per_ip,
            })
        } else if table.open.len() >= table.limits.max {
            match table.victim(ip, from_ip, now) {
                Some(victim) => {
                    let evicted = table.remove(victim);
                    if let Some(entry) = evicted {
                        entry.closed.cancel();
                        debug!(victim = %entry.ip, state = ?entry.state, newcomer = %ip, "full: closed a connection to make room");
                    }
                    None
                }
                None => Some(Refusal::Full {
                    max: table.limits.max,
                }),
            }
        } else {
            None
        };
        if let Some(refusal) = refusal {
            if table.refusing >= table.limits.max_refusals {
                return Admission::Dropped;
            }
            table.refusing += 1;
            return Admission::Refused(
                refusal,
                RefusalPlace {
                    table: self.table.clone(),
                },
            );
        }
        let id = table.next_id;
        table.next_id += 1;
        let closed = shutdown.child_token();
        table.open.insert(
            id,
            Entry {
                ip,
                state: State::Idle(now),
                privilege: None,
                closed: closed.clone(),
            },
        );
        *table.per_ip.entry(ip).or_insert(0) += 1;
        Admission::Admitted(Slot {
            id,
            closed,
            table: self.table.clone(),
        })
    }

    /// Connections admitted and not yet closed.
    pub fn len(&self) -> usize {
        self.lock().open.len()
    }

    /// Whether no connection is admitted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Table {
    /// The slot to close for a newcomer from `ip`, which holds `from_ip` connections,
    /// unprivileged ones first: the longest-idle of the newcomer's own address or of an
    /// address holding more; failing that, of an address holding at least two more (so the
    /// swap leaves it no lighter than the newcomer's), the longest-writing of those writing
    /// for at least `slow_after`; failing that, with `fair_share`, any busy or writing one of
    /// the heaviest such address, the longest in its state.
    fn victim(&self, ip: IpAddr, from_ip: usize, now: Instant) -> Option<u64> {
        let holds = |entry: &Entry| self.per_ip.get(&entry.ip).copied().unwrap_or(0);
        let heavier = |entry: &Entry| holds(entry) > from_ip + 1;
        // The entry that qualifies with the least key, unprivileged before privileged.
        fn pick<K: Ord>(
            table: &Table,
            now: Instant,
            qualifies: impl Fn(&Entry) -> Option<K>,
        ) -> Option<u64> {
            table
                .open
                .iter()
                .filter_map(|(id, entry)| {
                    qualifies(entry).map(|key| (entry.privileged(now), key, *id))
                })
                .min()
                .map(|(_, _, id)| id)
        }
        let idle = pick(self, now, |entry| match entry.state {
            State::Idle(since) if entry.ip == ip || holds(entry) > from_ip => Some(since),
            _ => None,
        });
        let slow = || {
            pick(self, now, |entry| match entry.state {
                State::Writing(since)
                    if heavier(entry)
                        && now.saturating_duration_since(since) >= self.limits.slow_after =>
                {
                    Some(since)
                }
                _ => None,
            })
        };
        let greedy = || {
            if !self.limits.fair_share {
                return None;
            }
            pick(self, now, |entry| match entry.state {
                State::Busy(since) | State::Writing(since) if heavier(entry) => {
                    Some((std::cmp::Reverse(holds(entry)), since))
                }
                _ => None,
            })
        };
        idle.or_else(slow).or_else(greedy)
    }

    /// Takes `id` out of the table, freeing its counts.
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.open.remove(&id)?;
        if let Some(count) = self.per_ip.get_mut(&entry.ip) {
            *count -= 1;
            if *count == 0 {
                self.per_ip.remove(&entry.ip);
            }
        }
        if let Some((key, _)) = entry.privilege
            && self.privileged.get(&key) == Some(&id)
        {
            self.privileged.remove(&key);
        }
        Some(entry)
    }
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, Table> {
        lock(&self.table)
    }

    /// Completes when this connection should close: it was closed to make room, or the server
    /// is shutting down.
    pub fn closed(&self) -> WaitForCancellationFuture<'_> {
        self.closed.cancelled()
    }

    /// The token behind [`Slot::closed`].
    pub fn closed_token(&self) -> &CancellationToken {
        &self.closed
    }

    /// Marks the connection busy answering a request from `now`: it is not closed to make
    /// room, however long that takes (unless by `fair_share`). Returns `false` if it was
    /// closed already (the request should then be dropped).
    pub fn busy(&self, now: Instant) -> bool {
        let mut table = self.lock();
        match table.open.get_mut(&self.id) {
            Some(entry) if !entry.closed.is_cancelled() => {
                entry.state = State::Busy(now);
                true
            }
            _ => false,
        }
    }

    /// Marks the connection writing its reply from `now`, just before the first byte goes out:
    /// if that takes `slow_after` or more, its client reads too slowly, and the connection may
    /// be closed to make room.
    pub fn writing(&self, now: Instant) {
        if let Some(entry) = self.lock().open.get_mut(&self.id) {
            entry.state = State::Writing(now);
        }
    }

    /// Marks the connection idle from `now` (its reply is sent).
    pub fn idle(&self, now: Instant) {
        if let Some(entry) = self.lock().open.get_mut(&self.id) {
            entry.state = State::Idle(now);
        }
    }

    /// Privileges this connection under `key` until `until`, taking the privilege away from
    /// whichever other connection held that key.
    pub fn privilege(&self, key: u64, until: Instant) {
        let mut table = self.lock();
        let Some(entry) = table.open.get_mut(&self.id) else {
            return;
        };
        if let Some((old, _)) = entry.privilege.replace((key, until))
            && old != key
            && table.privileged.get(&old) == Some(&self.id)
        {
            table.privileged.remove(&old);
        }
        if let Some(other) = table.privileged.insert(key, self.id)
            && other != self.id
            && let Some(entry) = table.open.get_mut(&other)
        {
            entry.privilege = None;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.lock().remove(self.id);
    }
}

impl Drop for RefusalPlace {
    fn drop(&mut self) {
        lock(&self.table).refusing -= 1;
    }
}

fn lock(table: &Mutex<Table>) -> MutexGuard<'_, Table> {
    // A panic while holding the lock would be a bug here; the counts are still usable.
    table.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn table(max: usize, max_per_ip: usize) -> SlotTable {
        limited(max, max_per_ip, false)
    }

    fn limited(max: usize, max_per_ip: usize, fair_share: bool) -> SlotTable {
        SlotTable::new(SlotLimits {
            max,
            max_per_ip,
            max_refusals: 2,
            slow_after: Duration::from_secs(10),
            fair_share,
        })
    }

    fn at(secs: u64) -> Instant {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *START.get_or_init(Instant::now) + Duration::from_secs(secs)
    }

    #[track_caller]
    fn admitted(admission: Admission) -> Slot {
        match admission {
            Admission::Admitted(slot) => slot,
            other => panic!("not admitted: {other:?}"),
        }
    }

    #[track_caller]
    fn refused(admission: Admission) -> Refusal {
        match admission {
            Admission::Refused(refusal, _) => refusal,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn an_address_over_its_cap_is_refused_and_mapped_v6_counts_as_v4() {
        let t = table(10, 1);
        let shutdown = CancellationToken::new();
        let _a = admitted(t.admit(ip(1), at(0), &shutdown));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(
            refused(t.admit(mapped, at(0), &shutdown)),
            Refusal::AddressFull { max: 1 }
        );
        let _b = admitted(t.admit(ip(2), at(0), &shutdown));
    }

    #[test]
    fn when_full_the_longest_idle_goes_and_busy_ones_stay() {
        let t = table(3, 3);
        let shutdown = CancellationToken::new();
        let old = admitted(t.admit(ip(1), at(0), &shutdown));
        let working = admitted(t.admit(ip(1), at(1), &shutdown));
        let recent = admitted(t.admit(ip(1), at(2), &shutdown));
        assert!(working.busy(at(2)));
        let _new = admitted(t.admit(ip(2), at(3), &shutdown));
        assert!(old.closed_token().is_cancelled());
        assert!(!working.closed_token().is_cancelled());
        assert!(!recent.closed_token().is_cancelled());
        assert_eq!(t.len(), 3);
        // The closed one can't become busy any more; dropping it frees nothing twice.
        assert!(!old.busy(at(3)));
        drop(old);
        assert_eq!(t.len(), 3);
        // Idle again after its reply: now the longest idle is `recent` (since 2).
        working.idle(at(4));
        let _newer = admitted(t.admit(ip(3), at(5), &shutdown));
        assert!(recent.closed_token().is_cancelled());
        assert!(!working.closed_token().is_cancelled());
    }

    #[test]
    fn all_busy_means_refused_and_refusals_are_bounded() {
        let t = table(2, 2);
        let shutdown = CancellationToken::new();
        let a = admitted(t.admit(ip(1), at(0), &shutdown));
        let b = admitted(t.admit(ip(2), at(0), &shutdown));
        assert!(a.busy(at(0)) && b.busy(at(0)));
        let first = t.admit(ip(3), at(1), &shutdown);
        let second = t.admit(ip(3), at(1), &shutdown);
        assert!(matches!(
            first,
            Admission::Refused(Refusal::Full { max: 2 }, _)
        ));
        assert!(matches!(second, Admission::Refused(..)));
        assert!(matches!(
            t.admit(ip(3), at(1), &shutdown),
            Admission::Dropped
        ));
        drop(first);
        assert!(matches!(
            t.admit(ip(3), at(1), &shutdown),
            Admission::Refused(..)
        ));
    }

    #[test]
    fn a_slow_reader_on_a_heavy_address_makes_room_when_nothing_is_idle() {
        let t = table(3, 3);
        let shutdown = CancellationToken::new();
        let light = admitted(t.admit(ip(1), at(0), &shutdown));
        let heavy: Vec<Slot> = (0..2)
            .map(|_| admitted(t.admit(ip(2), at(0), &shutdown)))
            .collect();
        assert!(light.busy(at(0)) && heavy[0].busy(at(0)) && heavy[1].busy(at(0)));
        light.writing(at(0));
        heavy[0].writing(at(1));
        heavy[1].writing(at(2));
        // Writing for less than `slow_after`: nobody is closed.
        assert_eq!(
            refused(t.admit(ip(3), at(5), &shutdown)),
            Refusal::Full { max: 3 }
        );
        // Later, the heavy address's longest-writing one goes; the light one (writing longer,
        // but its address is no heavier than the newcomer's would be) stays.
        let _n = admitted(t.admit(ip(3), at(20), &shutdown));
        assert!(heavy[0].closed_token().is_cancelled());
        assert!(!light.closed_token().is_cancelled());
        assert!(!heavy[1].closed_token().is_cancelled());
    }

    #[test]
    fn a_connection_answering_slowly_is_never_closed_one_writing_slowly_is() {
        let t = table(3, 3);
        let shutdown = CancellationToken::new();
        let light = admitted(t.admit(ip(1), at(0), &shutdown));
        let heavy: Vec<Slot> = (0..2)
            .map(|_| admitted(t.admit(ip(2), at(0), &shutdown)))
            .collect();
        assert!(light.busy(at(0)) && heavy[0].busy(at(0)) && heavy[1].busy(at(1)));
        // Answering (waiting for its turn, say) for twice `slow_after`: not a slow reader.
        assert_eq!(
            refused(t.admit(ip(3), at(20), &shutdown)),
            Refusal::Full { max: 3 }
        );
        assert!(heavy.iter().all(|s| !s.closed_token().is_cancelled()));
        // Its reply starts at 21: slow only from 31 on, and then it goes.
        heavy[1].writing(at(21));
        assert_eq!(
            refused(t.admit(ip(3), at(30), &shutdown)),
            Refusal::Full { max: 3 }
        );
        let _n = admitted(t.admit(ip(3), at(31), &shutdown));
        assert!(heavy[1].closed_token().is_cancelled());
        assert!(!heavy[0].closed_token().is_cancelled());
    }

    #[test]
    fn with_fair_share_a_busy_heavy_address_gives_way_to_a_light_one() {
        let t = limited(6, 3, true);
        let shutdown = CancellationToken::new();
        // Two addresses hold every slot, each connection busy or writing, none slow.
        let heavy: Vec<(IpAddr, Slot)> = [1, 1, 1, 2, 2, 2]
            .into_iter()
            .map(|last| (ip(last), admitted(t.admit(ip(last), at(0), &shutdown))))
            .collect();
        for (i, (_, slot)) in heavy.iter().enumerate() {
            assert!(slot.busy(at(1)));
            if i % 2 == 0 {
                slot.writing(at(1));
            }
        }
        // A newcomer from a third address gets in, and one more from it; each time an address
        // holding the most gives one up.
        let first = admitted(t.admit(ip(3), at(2), &shutdown));
        assert!(first.busy(at(2)));
        let second = admitted(t.admit(ip(3), at(2), &shutdown));
        assert!(second.busy(at(2)));
        let closed = |last: u8| {
            heavy
                .iter()
                .filter(|(from, slot)| *from == ip(last) && slot.closed_token().is_cancelled())
                .count()
        };
        assert_eq!((closed(1), closed(2)), (1, 1));
        // Now each address holds two: nobody holds two more than the third's, so its third
        // connection is refused, and so is a newcomer of the heavy ones.
        assert_eq!(
            refused(t.admit(ip(3), at(3), &shutdown)),
            Refusal::Full { max: 6 }
        );
        assert_eq!(
            refused(t.admit(ip(1), at(3), &shutdown)),
            Refusal::Full { max: 6 }
        );
        assert!(!first.closed_token().is_cancelled() && !second.closed_token().is_cancelled());
        // Without `fair_share`, the same busy connections are never closed.
        let t = table(2, 2);
        let a = admitted(t.admit(ip(1), at(0), &shutdown));
        let b = admitted(t.admit(ip(1), at(0), &shutdown));
        assert!(a.busy(at(0)) && b.busy(at(0)));
        assert_eq!(
            refused(t.admit(ip(3), at(1), &shutdown)),
            Refusal::Full { max: 2 }
        );
    }

    #[test]
    fn a_heavy_address_cannot_push_out_a_lighter_one() {
        let t = table(4, 4);
        let shutdown = CancellationToken::new();
        // A light address (one old idle connection) and a heavy one.
        let light = admitted(t.admit(ip(1), at(0), &shutdown));
        let heavy: Vec<Slot> = (1..4)
            .map(|s| admitted(t.admit(ip(2), at(s), &shutdown)))
            .collect();
        // The heavy address's newcomer closes its own oldest, not the older light one.
        let _more = admitted(t.admit(ip(2), at(5), &shutdown));
        assert!(!light.closed_token().is_cancelled());
        assert!(heavy[0].closed_token().is_cancelled());
        // A newcomer from an address with nothing open takes the longest-idle of all.
        let _third = admitted(t.admit(ip(3), at(6), &shutdown));
        assert!(light.closed_token().is_cancelled());
        assert!(!heavy[1].closed_token().is_cancelled());
    }

    #[test]
    fn privileged_connections_go_last_and_a_key_privileges_one() {
        let t = table(3, 3);
        let shutdown = CancellationToken::new();
        let peer = admitted(t.admit(ip(1), at(0), &shutdown));
        let twin = admitted(t.admit(ip(1), at(1), &shutdown));
        let idler = admitted(t.admit(ip(2), at(2), &shutdown));
        peer.privilege(7, at(100));
        let _a = admitted(t.admit(ip(3), at(3), &shutdown));
        assert!(!peer.closed_token().is_cancelled(), "privileged kept");
        assert!(
            twin.closed_token().is_cancelled(),
            "oldest unprivileged closed"
        );
        let _b = admitted(t.admit(ip(4), at(4), &shutdown));
        assert!(idler.closed_token().is_cancelled());
        let table = t.lock();
        assert_eq!(table.privileged.len(), 1);
        drop(table);
        // A privilege that ran out no longer protects.
        let late = t.admit(ip(5), at(200), &shutdown);
        assert!(matches!(late, Admission::Admitted(_)));
        assert!(peer.closed_token().is_cancelled());
    }

    #[test]
    fn one_key_privileges_one_connection() {
        let t = table(3, 3);
        let shutdown = CancellationToken::new();
        let first = admitted(t.admit(ip(1), at(0), &shutdown));
        let second = admitted(t.admit(ip(1), at(1), &shutdown));
        let third = admitted(t.admit(ip(1), at(2), &shutdown));
        first.privilege(9, at(100));
        second.privilege(9, at(100));
        third.privilege(8, at(100));
        // `first` lost its privilege to `second`, so it is the one closed.
        let _n = admitted(t.admit(ip(2), at(3), &shutdown));
        assert!(first.closed_token().is_cancelled());
        assert!(!second.closed_token().is_cancelled());
        assert!(!third.closed_token().is_cancelled());
    }

    #[test]
    fn shutdown_reaches_every_slot() {
        let t = table(2, 2);
        let shutdown = CancellationToken::new();
        let a = admitted(t.admit(ip(1), at(0), &shutdown));
        shutdown.cancel();
        assert!(a.closed_token().is_cancelled());
    }

    /// One step against a table.
    #[derive(Clone, Debug)]
    enum Op {
        Admit(u8),
        Busy(usize),
        Writing(usize),
        Idle(usize),
        Privilege(usize, u8),
        Close(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            2 => (0..4u8).prop_map(Op::Admit),
            3 => any::<usize>().prop_map(Op::Busy),
            2 => any::<usize>().prop_map(Op::Writing),
            1 => any::<usize>().prop_map(Op::Idle),
            1 => (any::<usize>(), 0..4u8).prop_map(|(i, k)| Op::Privilege(i, k)),
            1 => any::<usize>().prop_map(Op::Close),
        ]
    }

    /// What a test believes a slot is doing.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Doing {
        Idle,
        Busy,
        Writing(Instant),
    }

    /// A slot under test: where from, what it does, and whether it was seen closed.
    struct Held {
        slot: Slot,
        from: IpAddr,
        doing: Doing,
        seen_closed: bool,
    }

    proptest! {
        #[test]
        fn caps_hold_and_only_slow_writers_or_unfair_shares_are_closed(
            fair_share in any::<bool>(),
            ops in proptest::collection::vec(op(), 0..200),
        ) {
            let t = limited(5, 3, fair_share);
            let shutdown = CancellationToken::new();
            let mut slots: Vec<Held> = Vec::new();
            for (step, op) in ops.into_iter().enumerate() {
                let now = at(step as u64);
                let pick = |i: usize, n: usize| i % n.max(1);
                // Connections per address before this step.
                let mut holds: HashMap<IpAddr, usize> = HashMap::new();
                for held in slots.iter().filter(|h| !h.seen_closed) {
                    *holds.entry(held.from).or_default() += 1;
                }
                let mut newcomer = None;
                match op {
                    Op::Admit(last) => {
                        let from_ip = holds.get(&ip(last)).copied().unwrap_or(0);
                        newcomer = Some(from_ip);
                        match t.admit(ip(last), now, &shutdown) {
                            Admission::Admitted(slot) => slots.push(Held {
                                slot,
                                from: ip(last),
                                doing: Doing::Idle,
                                seen_closed: false,
                            }),
                            // Fair share: refused only if no address holds two more.
                            Admission::Refused(Refusal::Full { .. }, _) if fair_share => {
                                prop_assert!(holds.values().all(|n| *n < from_ip + 2), "refused despite an unfair share: {holds:?}");
                            }
                            _ => {}
                        }
                    }
                    Op::Busy(i) if !slots.is_empty() => {
                        let i = pick(i, slots.len());
                        if slots[i].slot.busy(now) {
                            slots[i].doing = Doing::Busy;
                        }
                    }
                    Op::Writing(i) if !slots.is_empty() => {
                        let i = pick(i, slots.len());
                        if slots[i].doing == Doing::Busy {
                            slots[i].slot.writing(now);
                            slots[i].doing = Doing::Writing(now);
                        }
                    }
                    Op::Idle(i) if !slots.is_empty() => {
                        let i = pick(i, slots.len());
                        slots[i].slot.idle(now);
                        slots[i].doing = Doing::Idle;
                    }
                    Op::Privilege(i, key) if !slots.is_empty() => {
                        let i = pick(i, slots.len());
                        slots[i].slot.privilege(u64::from(key), now + Duration::from_secs(10));
                    }
                    Op::Close(i) if !slots.is_empty() => {
                        let i = pick(i, slots.len());
                        slots.swap_remove(i);
                    }
                    _ => {}
                }
                for held in &mut slots {
                    if held.slot.closed_token().is_cancelled() && !held.seen_closed {
                        held.seen_closed = true;
                        let unfair = newcomer.is_some_and(|from_ip| holds[&held.from] >= from_ip + 2);
                        match held.doing {
                            Doing::Idle => {}
                            Doing::Busy => prop_assert!(fair_share && unfair, "a busy connection was closed"),
                            Doing::Writing(since) => prop_assert!(
                                unfair && (fair_share || now - since >= Duration::from_secs(10)),
                                "a writing connection was closed too soon"
                            ),
                        }
                    }
                }
                let live = slots.iter().filter(|h| !h.slot.closed_token().is_cancelled()).count();
                prop_assert!(live <= 5);
                prop_assert_eq!(live, t.len());
                let table = t.lock();
                prop_assert!(table.per_ip.values().all(|n| *n <= 3));
                prop_assert!(table.privileged.len() <= 4);
            }
        }
    }
}
