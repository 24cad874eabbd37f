//! [`PerIpLimit`]: how many connections one source address may hold on a listener at once, so
//! one misbehaving host can't take every slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Counts open connections per source IP.
#[derive(Clone, Debug)]
pub struct PerIpLimit {
    max: usize,
    /// std Mutex: one map update per connection opened or closed.
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One admitted connection; dropping it frees the slot.
#[derive(Debug)]
pub struct PerIpGuard {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerIpLimit {
    /// At most `max` connections per address.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            open: Arc::default(),
        }
    }

    /// Admits a connection from `ip`, or `None` if that address already holds `max`.
    ///
    /// ```
    /// use p2p_protocol::limits::PerIpLimit;
    /// let limit = PerIpLimit::new(1);
    /// let ip = "10.0.0.1".parse().unwrap();
    /// let first = limit.try_admit(ip).unwrap();
    /// assert!(limit.try_admit(ip).is_none());
    /// drop(first);
    /// assert!(limit.try_admit(ip).is_some());
    /// ```
    pub fn try_admit(&self, ip: IpAddr) -> Option<PerIpGuard> {
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(PerIpGuard {
            ip,
            open: self.open.clone(),
        })
    }
}

impl Drop for PerIpGuard {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}
