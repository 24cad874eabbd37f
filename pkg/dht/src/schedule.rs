//! [`Schedule`]: which announced ids are due when. Pure state, time passed in.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use p2p_protocol::FileId;
use tokio::time::Instant;

/// When each id is next announced, and which announcements are running.
#[derive(Debug)]
pub(crate) struct Schedule {
    every: Duration,
    retry: Duration,
    due: HashMap<FileId, Instant>,
    running: HashSet<FileId>,
}

impl Schedule {
    /// Announces each id every `every`, and `retry` after a failed announcement.
    pub(crate) fn new(every: Duration, retry: Duration) -> Self {
        Self {
            every,
            retry,
            due: HashMap::new(),
            running: HashSet::new(),
        }
    }

    /// Adds `id`, due at once. An id already there keeps its time.
    pub(crate) fn add(&mut self, id: FileId, now: Instant) {
        self.due.entry(id).or_insert(now);
    }

    /// Stops announcing `id` (a running announcement still ends, its result is ignored).
    pub(crate) fn remove(&mut self, id: &FileId) {
        self.due.remove(id);
    }

    /// The ids being announced.
    pub(crate) fn ids(&self) -> Vec<FileId> {
        self.due.keys().copied().collect()
    }

    /// Up to `limit` ids due at `now` and not running; they are marked running.
    pub(crate) fn take_due(&mut self, now: Instant, limit: usize) -> Vec<FileId> {
        let mut due: Vec<(Instant, FileId)> = self
            .due
            .iter()
            .filter(|(id, at)| **at <= now && !self.running.contains(*id))
            .map(|(id, at)| (*at, *id))
            .collect();
        // Oldest first, so nothing starves behind newer ids.
        due.sort_unstable_by_key(|(at, id)| (*at, *id.as_bytes()));
        due.truncate(limit);
        let ids: Vec<FileId> = due.into_iter().map(|(_, id)| id).collect();
        self.running.extend(ids.iter().copied());
        ids
    }

    /// Records the end of `id`'s announcement at `now`: next one after `every`, or after
    /// `retry` when it failed.
    pub(crate) fn done(&mut self, id: &FileId, ok: bool, now: Instant) {
        self.running.remove(id);
        if let Some(at) = self.due.get_mut(id) {
            *at = now + if ok { self.every } else { self.retry };
        }
    }

    /// The earliest time an id that is not running falls due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.due
            .iter()
            .filter(|(id, _)| !self.running.contains(*id))
            .map(|(_, at)| *at)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_secs(900);
    const RETRY: Duration = Duration::from_secs(60);

    fn id(n: u8) -> FileId {
        FileId([n; 32])
    }

    #[test]
    fn an_added_id_is_due_at_once_then_every_period() {
        let t0 = Instant::now();
        let mut s = Schedule::new(EVERY, RETRY);
        s.add(id(1), t0);
        assert_eq!(s.take_due(t0, 8), [id(1)]);
        // Running: not due again, not a wake-up time.
        assert!(s.take_due(t0, 8).is_empty());
        assert_eq!(s.next_due(), None);
        s.done(&id(1), true, t0);
        assert_eq!(s.next_due(), Some(t0 + EVERY));
        assert!(
            s.take_due(t0 + EVERY - Duration::from_secs(1), 8)
                .is_empty()
        );
        assert_eq!(s.take_due(t0 + EVERY, 8), [id(1)]);
    }

    #[test]
    fn a_failed_announcement_is_retried_sooner() {
        let t0 = Instant::now();
        let mut s = Schedule::new(EVERY, RETRY);
        s.add(id(1), t0);
        s.take_due(t0, 8);
        s.done(&id(1), false, t0);
        assert_eq!(s.next_due(), Some(t0 + RETRY));
    }

    #[test]
    fn a_removed_id_is_not_announced_again() {
        let t0 = Instant::now();
        let mut s = Schedule::new(EVERY, RETRY);
        s.add(id(1), t0);
        s.add(id(2), t0);
        s.take_due(t0, 8);
        s.remove(&id(1));
        s.done(&id(1), true, t0);
        s.done(&id(2), true, t0);
        assert_eq!(s.ids(), [id(2)]);
        assert_eq!(s.take_due(t0 + EVERY, 8), [id(2)]);
    }

    #[test]
    fn at_most_limit_at_once_oldest_first_and_adding_twice_keeps_the_time() {
        let t0 = Instant::now();
        let mut s = Schedule::new(EVERY, RETRY);
        s.add(id(3), t0 + Duration::from_secs(2));
        s.add(id(1), t0);
        s.add(id(2), t0 + Duration::from_secs(1));
        s.add(id(1), t0 + Duration::from_secs(5));
        let later = t0 + Duration::from_secs(10);
        assert_eq!(s.take_due(later, 2), [id(1), id(2)]);
        assert_eq!(s.take_due(later, 2), [id(3)]);
    }
}
