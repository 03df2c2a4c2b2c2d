//! Attestation attempts per peer address: a token bucket per IP, so one misbehaving node (or
//! an attacker guessing join tokens) cannot exhaust the server, while an agent fleet
//! restarting together is not held up.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Attempts allowed in a burst from one address.
pub(super) const BURST: u32 = 10;
/// One more attempt is allowed per this interval.
pub(super) const REFILL_EVERY: Duration = Duration::from_secs(1);
/// At this many tracked addresses, full buckets are forgotten (they hold no state worth
/// keeping); if that does not free half the table, all of it is (a client spraying addresses
/// then gets fresh buckets, which it could have had from new addresses anyway). Memory stays
/// bounded and the sweep costs O(1) per attempt amortized.
const MAX_TRACKED: usize = 10_000;

/// A token bucket per IP address.
#[derive(Debug)]
pub(super) struct RateLimiter {
    burst: u32,
    refill_every: Duration,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u32,
    /// When the bucket was last refilled.
    refilled: Instant,
}

impl RateLimiter {
    /// A limiter allowing `burst` attempts at once and one more per `refill_every`.
    pub(super) fn new(burst: u32, refill_every: Duration) -> Self {
        Self {
            burst,
            refill_every: refill_every.max(Duration::from_nanos(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one attempt for `addr` at `now`; false when its bucket is empty.
    pub(super) fn allow(&self, addr: IpAddr, now: Instant) -> bool {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&addr) {
            buckets.retain(|_, bucket| self.refill(*bucket, now).tokens < self.burst);
            if buckets.len() > MAX_TRACKED / 2 {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(addr).or_insert(Bucket {
            tokens: self.burst,
            refilled: now,
        });
        *bucket = self.refill(*bucket, now);
        if bucket.tokens == 0 {
            return false;
        }
        bucket.tokens -= 1;
        true
    }

    fn refill(&self, bucket: Bucket, now: Instant) -> Bucket {
        let elapsed = now.saturating_duration_since(bucket.refilled);
        let earned = elapsed.as_nanos() / self.refill_every.as_nanos();
        if earned == 0 {
            return bucket;
        }
        let earned = u32::try_from(earned).unwrap_or(u32::MAX).min(self.burst);
        let tokens = bucket.tokens.saturating_add(earned).min(self.burst);
        Bucket {
            tokens,
            // A full bucket starts earning from now; otherwise the remainder is kept, so a
            // steady one-per-interval client is never refused.
            refilled: if tokens == self.burst {
                now
            } else {
                bucket.refilled + self.refill_every * earned
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_burst_then_one_per_interval_per_address() {
        let limiter = RateLimiter::new(BURST, REFILL_EVERY);
        let t0 = Instant::now();
        for _ in 0..BURST {
            assert!(limiter.allow(ip(1), t0));
        }
        assert!(!limiter.allow(ip(1), t0));
        // Another address is not affected.
        assert!(limiter.allow(ip(2), t0));
        // Half an interval earns nothing; a whole one earns one attempt.
        assert!(!limiter.allow(ip(1), t0 + REFILL_EVERY / 2));
        assert!(limiter.allow(ip(1), t0 + REFILL_EVERY));
        assert!(!limiter.allow(ip(1), t0 + REFILL_EVERY));
        // A long pause refills to the burst, never above it.
        let later = t0 + REFILL_EVERY * 1000;
        for _ in 0..BURST {
            assert!(limiter.allow(ip(1), later));
        }
        assert!(!limiter.allow(ip(1), later));
    }

    #[test]
    fn tracked_addresses_are_bounded() {
        let limiter = RateLimiter::new(BURST, REFILL_EVERY);
        let t0 = Instant::now();
        // Every address busy at once: the table is cleared rather than grown.
        for i in 0..(2 * MAX_TRACKED as u32) {
            assert!(limiter.allow(IpAddr::from(i.to_be_bytes()), t0));
            assert!(limiter.buckets.lock().unwrap().len() <= MAX_TRACKED);
        }
        // Idle addresses (full buckets) are the ones forgotten first.
        let limiter = RateLimiter::new(BURST, REFILL_EVERY);
        for i in 0..(MAX_TRACKED as u32 - 1) {
            assert!(limiter.allow(IpAddr::from(i.to_be_bytes()), t0));
        }
        let busy = ip(200);
        for _ in 0..BURST {
            assert!(limiter.allow(busy, t0 + REFILL_EVERY * 100));
        }
        assert!(!limiter.allow(busy, t0 + REFILL_EVERY * 100));
        assert!(limiter.allow(ip(201), t0 + REFILL_EVERY * 100));
        assert_eq!(limiter.buckets.lock().unwrap().len(), 2);
        assert!(
            !limiter.allow(busy, t0 + REFILL_EVERY * 100),
            "the busy bucket was kept"
        );
    }
}
