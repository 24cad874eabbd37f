//! [`SearchQueue`]: the turn to run a search, and which searches may wait for it.
//!
//! A search reads every file name, so searches run one at a time, in the order they arrive.
//! A search waiting for its turn holds nothing of the shared buffer budget (it takes its room in
//! the total only once it has the turn; see `server.rs`), but its client waits, and every later
//! search waits behind it. So each source address may have one search waiting, and at most
//! [`MAX_WAITING_SEARCHES`] may wait in all; a search beyond either is refused at once rather
//! than left waiting without limit.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Searches waiting for their turn at once, across all addresses (one per address at most).
/// The last of them waits for this many searches to run before it, and no longer.
pub const MAX_WAITING_SEARCHES: usize = 64;

/// Searches that run at once. They run on the blocking pool, off the threads that serve
/// connections.
const CONCURRENT_SEARCHES: usize = 1;

/// The search turn and the searches waiting for it.
#[derive(Debug)]
pub(crate) struct SearchQueue {
    turns: Arc<Semaphore>,
    /// The addresses with a search waiting. std Mutex: one set operation per search.
    waiting: Mutex<HashSet<IpAddr>>,
    max_waiting: usize,
}

/// Why a search may not wait for its turn; the reply is `limit_exceeded` with this text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum QueueFull {
    /// The address already has a search waiting.
    #[error(
        "your address already has a search waiting for its turn; send the next one once it is answered"
    )]
    Address,
    /// As many searches wait as may.
    #[error("the index server has {0} searches waiting; try again in a moment")]
    Server(usize),
}

/// A search's place in the queue, from its acceptance until it has its turn. Dropping it (the
/// search was given up) frees the place.
#[derive(Debug)]
pub(crate) struct Place<'a> {
    queue: &'a SearchQueue,
    ip: IpAddr,
}

/// The turn to run a search; the next search waiting gets it when this is dropped.
pub(crate) type Turn = OwnedSemaphorePermit;

impl SearchQueue {
    pub(crate) fn new() -> Self {
        Self {
            turns: Arc::new(Semaphore::new(CONCURRENT_SEARCHES)),
            waiting: Mutex::default(),
            max_waiting: MAX_WAITING_SEARCHES,
        }
    }

    /// A place in the queue for a search from `ip`, if it may wait.
    pub(crate) fn enter(&self, ip: IpAddr) -> Result<Place<'_>, QueueFull> {
        let ip = ip.to_canonical();
        let mut waiting = self.lock();
        if waiting.contains(&ip) {
            return Err(QueueFull::Address);
        }
        if waiting.len() >= self.max_waiting {
            return Err(QueueFull::Server(self.max_waiting));
        }
        waiting.insert(ip);
        Ok(Place { queue: self, ip })
    }

    /// Searches waiting now.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.lock().len()
    }

    /// The turn, taken outside the queue, so that a test can make searches wait.
    #[cfg(test)]
    pub(crate) async fn hold_turn(&self) -> Turn {
        self.turns
            .clone()
            .acquire_owned()
            .await
            .expect("never closed")
    }

    fn lock(&self) -> MutexGuard<'_, HashSet<IpAddr>> {
        // One set operation per critical section: the set is sound after a panic.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Place<'_> {
    /// Waits for the turn, in order of arrival, and leaves the queue with it.
    pub(crate) async fn turn(self) -> Turn {
        self.queue
            .turns
            .clone()
            .acquire_owned()
            .await
            .expect("the search semaphore is never closed")
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.queue.lock().remove(&self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[tokio::test]
    async fn one_search_per_address_waits_and_the_queue_is_bounded() {
        let queue = SearchQueue::new();
        let turn = queue.hold_turn().await;
        let first = queue.enter(ip(0)).unwrap();
        // The same address again, also as an IPv4-mapped IPv6 address: refused.
        assert_eq!(queue.enter(ip(0)).unwrap_err(), QueueFull::Address);
        let mapped: IpAddr = "::ffff:10.0.0.0".parse().unwrap();
        assert_eq!(queue.enter(mapped).unwrap_err(), QueueFull::Address);
        let others: Vec<_> = (1..MAX_WAITING_SEARCHES as u8)
            .map(|i| queue.enter(ip(i)).unwrap())
            .collect();
        assert_eq!(
            queue.enter(ip(255)).unwrap_err(),
            QueueFull::Server(MAX_WAITING_SEARCHES)
        );
        // A search given up frees its place.
        drop(others);
        assert_eq!(queue.waiting(), 1);
        // Waiting for the turn still counts; having it does not.
        let waiting = first.turn();
        tokio::pin!(waiting);
        assert!(futures_poll_once(&mut waiting).is_none());
        assert_eq!(queue.waiting(), 1);
        drop(turn);
        let _turn = waiting.await;
        assert_eq!(queue.waiting(), 0);
        let again = queue.enter(ip(0));
        assert!(again.is_ok(), "the address may queue its next search");
    }

    fn futures_poll_once<F: Future + Unpin>(future: &mut F) -> Option<F::Output> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::pin::Pin::new(future).poll(&mut cx) {
            std::task::Poll::Ready(output) => Some(output),
            std::task::Poll::Pending => None,
        }
    }
}
