//! [`Backlog`]: requests that refresh a peer (`Heartbeat`, `AddFile`) which have arrived but
//! are not yet applied to the index, so the reaper knows how far the index has caught up.
//!
//! "The index fell behind" means: a peer's heartbeat reached the server in time, but the
//! server had not applied it when the reaper looked. Dropping that peer would be the server's
//! fault, not the peer's. So each such request is entered here, stamped with its arrival, from
//! the moment its frame is complete until it has been applied (which also uses the arrival as
//! the peer's last-seen time), and the reaper judges silence only up to the oldest arrival
//! still pending: a peer is dropped only if it was silent for the whole timeout before a moment
//! by which every request that arrived has been applied.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Arrival times of pending requests (a multiset).
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    /// std Mutex: one map update per request entered or applied.
    pending: Mutex<BTreeMap<Instant, usize>>,
}

/// A pending request; dropping it marks the request applied.
#[derive(Debug)]
pub(crate) struct Pending {
    backlog: Arc<Backlog>,
    arrived: Instant,
}

impl Backlog {
    /// Enters a request that arrived at `arrived`.
    pub(crate) fn enter(self: &Arc<Self>, arrived: Instant) -> Pending {
        *self.lock().entry(arrived).or_default() += 1;
        Pending {
            backlog: self.clone(),
            arrived,
        }
    }

    /// The moment up to which every request that arrived has been applied, as seen at `now`.
    pub(crate) fn caught_up_to(&self, now: Instant) -> Instant {
        self.lock()
            .first_key_value()
            .map_or(now, |(oldest, _)| (*oldest).min(now))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Instant, usize>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut pending = self.backlog.lock();
        if let Some(count) = pending.get_mut(&self.arrived) {
            *count -= 1;
            if *count == 0 {
                pending.remove(&self.arrived);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn caught_up_to_the_oldest_pending_arrival() {
        let backlog = Arc::new(Backlog::default());
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(20);
        assert_eq!(backlog.caught_up_to(now), now);
        let first = backlog.enter(t0);
        let second = backlog.enter(t0 + Duration::from_secs(5));
        let same = backlog.enter(t0);
        assert_eq!(backlog.caught_up_to(now), t0);
        drop(first);
        assert_eq!(
            backlog.caught_up_to(now),
            t0,
            "another arrived at the same time"
        );
        drop(same);
        assert_eq!(backlog.caught_up_to(now), t0 + Duration::from_secs(5));
        drop(second);
        assert_eq!(backlog.caught_up_to(now), now);
    }
}
