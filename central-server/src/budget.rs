//! `BufferBudget`: how many bytes of large frames the server holds at once, in all and per
//! source address.
//!
//! A connection buffers a frame's body only after the frame has room here (requests: before
//! the body is read; replies: before the reply is encoded), and gives the room back once it has
//! handled the frame and given back its buffers. Frames up to [`FREE_FRAME_LEN`] need no room,
//! which covers every request a peer sends except the `AddFile` of a file over about 1.9 GiB.
//! So a client that announces big frames and then stalls costs the server a few bytes per
//! connection, and all of them together at most the budget.
//!
//! Room is taken in two steps, each waiting in arrival order: first in the address's share
//! (`BufferBudget::share`), so an address waits behind itself without holding any of the
//! total, then in the total (`Share::room`). A search waits for its address's share before
//! it queues for its turn, and for the total only once it has the turn (see `server.rs`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use p2p_protocol::MAX_CONTROL_FRAME_LEN;
use p2p_protocol::codec::HEADER_LEN;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Largest frame a connection may buffer without room in the budget.
pub const FREE_FRAME_LEN: usize = 16 * 1024;

/// Once a request frame has room, its body must arrive within this long; a client that
/// trickles it is cut off so it can't sit on the room.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest frame, header included: no budget may be smaller, or it could never be read.
const LARGEST_FRAME: usize = MAX_CONTROL_FRAME_LEN + HEADER_LEN;

/// The shares of the addresses that hold or wait for room, with how many do.
type Shares = Arc<Mutex<HashMap<IpAddr, (Arc<Semaphore>, usize)>>>;

/// Byte budgets for buffered frames, shared by every connection.
#[derive(Debug)]
pub(crate) struct BufferBudget {
    total: Arc<Semaphore>,
    per_ip: usize,
    /// std Mutex: one map operation per large frame. An entry exists while some connection of
    /// that address holds or waits for room ([`ShareUser`]).
    by_ip: Shares,
}

/// Room in one address's share, not yet in the total; dropping it gives the room back.
#[derive(Debug)]
pub(crate) struct Share {
    permit: OwnedSemaphorePermit,
    total: Arc<Semaphore>,
    _user: ShareUser,
}

/// Room for one frame; dropping it gives the room back.
#[derive(Debug)]
pub(crate) struct Room {
    _total: OwnedSemaphorePermit,
    _share: Share,
}

/// Counts one user of an address's share for as long as it holds or waits for room there,
/// however that ends (room given back, or a wait dropped by a timeout or a closed
/// connection); the last one out forgets the address.
#[derive(Debug)]
struct ShareUser {
    ip: IpAddr,
    by_ip: Shares,
}

impl BufferBudget {
    /// `total` bytes in all and `per_ip` per source address, each raised to what the largest
    /// frame needs.
    pub(crate) fn new(total: usize, per_ip: usize) -> Self {
        let per_ip = per_ip.max(LARGEST_FRAME);
        let total = total.max(2 * LARGEST_FRAME).max(per_ip);
        Self {
            total: Arc::new(Semaphore::new(total)),
            per_ip,
            by_ip: Arc::default(),
        }
    }

    /// Waits until a frame of `len` bytes from `ip` fits: first in the address's share, then
    /// in the total.
    pub(crate) async fn reserve(&self, ip: IpAddr, len: usize) -> Room {
        let share = self.share(ip, len).await;
        share.room(len).await
    }

    /// Waits until a frame of `len` bytes from `ip` fits in the address's share (waiters are
    /// served in order); [`Share::room`] then waits for the total.
    pub(crate) async fn share(&self, ip: IpAddr, len: usize) -> Share {
        let ip = ip.to_canonical();
        let share = {
            let mut by_ip = lock(&self.by_ip);
            let (share, users) = by_ip
                .entry(ip)
                .or_insert_with(|| (Arc::new(Semaphore::new(self.per_ip)), 0));
            *users += 1;
            share.clone()
        };
        // From here on, however this future ends, the count goes down again.
        let user = ShareUser {
            ip,
            by_ip: self.by_ip.clone(),
        };
        let permit = share
            .acquire_many_owned(self.permits(len))
            .await
            .expect("budget semaphores are never closed");
        Share {
            permit,
            total: self.total.clone(),
            _user: user,
        }
    }

    /// Permits for a frame of `len` bytes: its header too, and never more than the share.
    fn permits(&self, len: usize) -> u32 {
        (len + HEADER_LEN).min(self.per_ip) as u32
    }

    /// Bytes of the total budget free right now.
    #[cfg(test)]
    pub(crate) fn available(&self) -> usize {
        self.total.available_permits()
    }

    /// Connections of `ip` that hold or wait for room.
    #[cfg(test)]
    pub(crate) fn users(&self, ip: IpAddr) -> usize {
        lock(&self.by_ip)
            .get(&ip.to_canonical())
            .map_or(0, |(_, users)| *users)
    }
}

impl Share {
    /// Waits until a frame of `len` bytes fits in the total too (waiters are served in
    /// order). Any of the share beyond `len` is given back first, so a share taken for the
    /// largest frame of a kind can shrink to the frame at hand.
    pub(crate) async fn room(mut self, len: usize) -> Room {
        let len = (len + HEADER_LEN).min(self.permit.num_permits());
        drop(self.permit.split(self.permit.num_permits() - len));
        let total = self
            .total
            .clone()
            .acquire_many_owned(len as u32)
            .await
            .expect("budget semaphores are never closed");
        Room {
            _total: total,
            _share: self,
        }
    }
}

impl Drop for ShareUser {
    fn drop(&mut self) {
        let mut by_ip = lock(&self.by_ip);
        if let Some((_, users)) = by_ip.get_mut(&self.ip) {
            *users -= 1;
            if *users == 0 {
                by_ip.remove(&self.ip);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is one map operation; the map is sound after a panic.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_address_waits_behind_itself_and_others_still_get_room() {
        let budget = BufferBudget::new(0, 0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        // The share is one largest frame: a second one from the same address waits.
        let first = budget.reserve(a, MAX_CONTROL_FRAME_LEN).await;
        let second = budget.reserve(a, MAX_CONTROL_FRAME_LEN);
        tokio::pin!(second);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut second)
                .await
                .is_err()
        );
        // Another address is served meanwhile.
        let other = budget.reserve(b, MAX_CONTROL_FRAME_LEN).await;
        drop(first);
        let second = second.await;
        drop((second, other));
        assert_eq!(budget.available(), 2 * LARGEST_FRAME);
        assert!(
            lock(&budget.by_ip).is_empty(),
            "shares are forgotten when unused"
        );
    }

    /// Polls `future` once.
    fn now_or_never<F: Future>(future: F) -> Option<F::Output> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::pin::pin!(future).poll(&mut cx) {
            std::task::Poll::Ready(output) => Some(output),
            std::task::Poll::Pending => None,
        }
    }

    /// A wait for room given up (a timeout, or the connection closed) leaves nothing behind:
    /// otherwise every address that ever waited would keep an entry.
    #[tokio::test]
    async fn a_wait_given_up_forgets_the_address() {
        let budget = BufferBudget::new(0, 0);
        let (a, b, c): (IpAddr, IpAddr, IpAddr) = (
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            "10.0.0.3".parse().unwrap(),
        );
        let held = budget.reserve(a, MAX_CONTROL_FRAME_LEN).await;
        // Given up while waiting in its address's share.
        assert!(now_or_never(budget.reserve(a, MAX_CONTROL_FRAME_LEN)).is_none());
        drop(held);
        assert!(lock(&budget.by_ip).is_empty(), "{:?}", lock(&budget.by_ip));
        // Given up while waiting in the total, which two other addresses fill.
        let full = (
            budget.reserve(a, MAX_CONTROL_FRAME_LEN).await,
            budget.reserve(b, MAX_CONTROL_FRAME_LEN).await,
        );
        assert!(now_or_never(budget.reserve(c, MAX_CONTROL_FRAME_LEN)).is_none());
        assert_eq!(budget.users(c), 0);
        drop(full);
        assert!(lock(&budget.by_ip).is_empty(), "{:?}", lock(&budget.by_ip));
        assert_eq!(budget.available(), 2 * LARGEST_FRAME);
    }

    /// A share taken for a large frame shrinks to the frame at hand when it takes room in the
    /// total, and gives the difference back to its address.
    #[tokio::test]
    async fn a_share_shrinks_to_the_room_it_takes() {
        let budget = BufferBudget::new(0, 0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let share = budget.share(a, MAX_CONTROL_FRAME_LEN).await;
        let room = share.room(1000).await;
        assert_eq!(budget.available(), 2 * LARGEST_FRAME - 1000 - HEADER_LEN);
        // The rest of the address's share is free again: a frame that needs all but that
        // fits at once.
        let rest = budget.share(a, LARGEST_FRAME - 1000 - 2 * HEADER_LEN);
        assert!(now_or_never(rest).is_some());
        drop(room);
    }
}
