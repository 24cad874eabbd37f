//! [`RateLimit`]: how often each source address may do something costly (register, search),
//! as a token bucket per address. Pure state: it takes `now`, so it is tested with synthetic
//! instants.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Buckets kept before full ones (which behave exactly like absent ones) are forgotten.
const PRUNE_ABOVE: usize = 1024;

/// A token bucket per source address: `burst` tokens at most, `per_second` added back each
/// second; each admitted request takes one.
#[derive(Debug)]
pub struct RateLimit {
    burst: f64,
    per_second: f64,
    buckets: HashMap<IpAddr, Bucket>,
    /// Prune when the map reaches this size, so it stays proportional to the addresses that
    /// were active within the last `burst / per_second` seconds.
    prune_at: usize,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    /// `per_second` requests a second on average per address, and up to `burst` at once. Both
    /// are at least 1.
    pub fn new(burst: u32, per_second: u32) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            per_second: f64::from(per_second.max(1)),
            buckets: HashMap::new(),
            prune_at: PRUNE_ABOVE,
        }
    }

    /// Takes a token for `ip` if it has one.
    ///
    /// ```
    /// # use p2p_central_server::rate::RateLimit;
    /// # use std::time::{Duration, Instant};
    /// let mut limit = RateLimit::new(2, 1);
    /// let (ip, t0) = ("10.0.0.1".parse().unwrap(), Instant::now());
    /// assert!(limit.try_take(ip, t0) && limit.try_take(ip, t0));
    /// assert!(!limit.try_take(ip, t0));
    /// assert!(limit.try_take(ip, t0 + Duration::from_secs(1)));
    /// ```
    pub fn try_take(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.buckets.len() >= self.prune_at {
            self.prune(now);
            self.prune_at = (2 * self.buckets.len()).max(PRUNE_ABOVE);
        }
        let (burst, rate) = (self.burst, self.per_second);
        let bucket = self.buckets.entry(ip.to_canonical()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + refill).min(burst);
        bucket.at = bucket.at.max(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Gives back a token taken for `ip` (what it was taken for was turned down for another
    /// reason), up to the burst.
    pub fn give_back(&mut self, ip: IpAddr) {
        let burst = self.burst;
        if let Some(bucket) = self.buckets.get_mut(&ip.to_canonical()) {
            bucket.tokens = (bucket.tokens + 1.0).min(burst);
        }
    }

    /// Forgets addresses whose bucket has filled up again.
    pub fn prune(&mut self, now: Instant) {
        let (burst, rate) = (self.burst, self.per_second);
        self.buckets.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
        });
    }

    /// Addresses with a bucket.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn each_address_has_its_own_bucket_that_refills() {
        let t0 = Instant::now();
        let mut limit = RateLimit::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "::ffff:10.0.0.2".parse().unwrap();
        assert_eq!((0..10).filter(|_| limit.try_take(a, t0)).count(), 3);
        // Another address is not affected; an IPv4-mapped address counts as IPv4.
        assert!(limit.try_take(b, t0));
        assert!(limit.try_take("10.0.0.2".parse().unwrap(), t0));
        // Two tokens a second.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!((0..10).filter(|_| limit.try_take(a, t1)).count(), 1);
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| limit.try_take(a, t2)).count(), 3);
    }

    #[test]
    fn many_addresses_do_not_grow_the_map_without_bound() {
        let t0 = Instant::now();
        let mut limit = RateLimit::new(1, 1);
        for i in 0..100_000u32 {
            // Each address is seen once; a second later its bucket is full again.
            let now = t0 + Duration::from_secs(u64::from(i));
            assert!(limit.try_take(IpAddr::from(i.to_be_bytes()), now));
        }
        assert!(limit.tracked() <= 2 * PRUNE_ABOVE, "{}", limit.tracked());
    }
}
