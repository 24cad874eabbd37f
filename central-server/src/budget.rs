//! `BufferBudget`: how many bytes of large frames the server holds at once, in all and per
//! source address.
//!
//! A connection buffers a frame's body only after the frame has room here (requests: before
//! the body is read; replies: before the reply is encoded), and gives the room back once it has
//! handled the frame and shrunk its buffers. Frames up to [`FREE_FRAME_LEN`] need no room,
//! which covers every request a peer sends except the `AddFile` of a file over about 1.9 GiB.
//! So a client that announces big frames and then stalls costs the server a few bytes per
//! connection, and all of them together at most the budget.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
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

/// Byte budgets for buffered frames, shared by every connection.
#[derive(Debug)]
pub(crate) struct BufferBudget {
    total: Arc<Semaphore>,
    per_ip: usize,
    /// std Mutex: one map operation per large frame. An entry exists while some connection of
    /// that address holds or waits for room.
    by_ip: Arc<Mutex<HashMap<IpAddr, Arc<Semaphore>>>>,
}

/// Room for one frame; dropping it gives the room back.
#[derive(Debug)]
pub(crate) struct Room {
    _total: OwnedSemaphorePermit,
    ip: IpAddr,
    ip_permit: Option<OwnedSemaphorePermit>,
    by_ip: Arc<Mutex<HashMap<IpAddr, Arc<Semaphore>>>>,
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

    /// Waits until a frame of `len` bytes from `ip` fits: first in the address's share (so an
    /// address waits behind itself without holding any of the total), then in the total.
    /// Waiters are served in order.
    pub(crate) async fn reserve(&self, ip: IpAddr, len: usize) -> Room {
        let ip = ip.to_canonical();
        let len = (len + HEADER_LEN).min(self.per_ip) as u32;
        let share = self
            .lock()
            .entry(ip)
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_ip)))
            .clone();
        let ip_permit = share
            .acquire_many_owned(len)
            .await
            .expect("budget semaphores are never closed");
        let total = self
            .total
            .clone()
            .acquire_many_owned(len)
            .await
            .expect("budget semaphores are never closed");
        Room {
            _total: total,
            ip,
            ip_permit: Some(ip_permit),
            by_ip: self.by_ip.clone(),
        }
    }

    /// Bytes of the total budget free right now.
    #[cfg(test)]
    pub(crate) fn available(&self) -> usize {
        self.total.available_permits()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Arc<Semaphore>>> {
        self.by_ip.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        self.ip_permit = None;
        let mut by_ip = self.by_ip.lock().unwrap_or_else(|e| e.into_inner());
        // Nobody else holds or waits for this address's share: forget it.
        if by_ip
            .get(&self.ip)
            .is_some_and(|share| Arc::strong_count(share) == 1)
        {
            by_ip.remove(&self.ip);
        }
    }
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
        assert!(budget.lock().is_empty(), "shares are forgotten when unused");
    }
}
