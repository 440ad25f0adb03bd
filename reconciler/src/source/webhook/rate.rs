//! Per-client token buckets of the webhook receiver. Pure: the clock is an argument.
//!
//! A client is a peer IPv4 address or an IPv6 /64. The map holds at most `max_clients`
//! buckets; when it is full, clients whose buckets have refilled are forgotten, and new
//! clients beyond the bound share one overflow bucket, so memory stays bounded however
//! many addresses send.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Instant;

/// How fast a client may send: `burst` requests at once, refilled at `per_second`.
/// `per_second <= 0` turns the limit off.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

impl RateLimit {
    fn is_off(&self) -> bool {
        self.per_second <= 0.0
    }

    fn capacity(&self) -> f64 {
        f64::from(self.burst.max(1))
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(limit: &RateLimit, now: Instant) -> Bucket {
        Bucket {
            tokens: limit.capacity(),
            at: now,
        }
    }

    fn refill(&mut self, limit: &RateLimit, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * limit.per_second).min(limit.capacity());
        self.at = now;
    }

    fn take(&mut self, limit: &RateLimit, now: Instant) -> bool {
        self.refill(limit, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn is_full_at(mut self, limit: &RateLimit, now: Instant) -> bool {
        self.refill(limit, now);
        self.tokens >= limit.capacity()
    }
}

/// The client a request is counted against: the IPv4 address (an IPv4-mapped IPv6
/// address counts as its IPv4 address), or the IPv6 /64, which one host usually holds
/// whole.
pub fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Token buckets keyed by client, bounded to `max_clients` entries.
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    max_clients: usize,
    clients: HashMap<IpAddr, Bucket>,
    overflow: Bucket,
}

impl RateLimiter {
    pub fn new(limit: RateLimit, max_clients: usize, now: Instant) -> RateLimiter {
        RateLimiter {
            limit,
            max_clients: max_clients.max(1),
            clients: HashMap::new(),
            overflow: Bucket::full(&limit, now),
        }
    }

    /// Takes one token for `peer`'s client: false when its bucket is empty.
    pub fn allow(&mut self, peer: IpAddr, now: Instant) -> bool {
        if self.limit.is_off() {
            return true;
        }
        let client = client_of(peer);
        if let Some(b) = self.clients.get_mut(&client) {
            return b.take(&self.limit, now);
        }
        if self.clients.len() >= self.max_clients {
            self.forget_idle(now);
        }
        if self.clients.len() < self.max_clients {
            let mut b = Bucket::full(&self.limit, now);
            let ok = b.take(&self.limit, now);
            self.clients.insert(client, b);
            return ok;
        }
        self.overflow.take(&self.limit, now)
    }

    /// How many clients have a bucket of their own.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// Drops the buckets that have refilled: those clients are as if never seen.
    fn forget_idle(&mut self, now: Instant) {
        let limit = self.limit;
        self.clients.retain(|_, b| !b.is_full_at(&limit, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const LIMIT: RateLimit = RateLimit {
        per_second: 2.0,
        burst: 3,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn a_client_gets_its_burst_then_the_refill_rate() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(LIMIT, 16, t0);
        let a = ip("192.0.2.1");
        let allowed: Vec<bool> = (0..5).map(|_| rl.allow(a, t0)).collect();
        assert_eq!(allowed, [true, true, true, false, false]);
        // 2 per second: one token after 500 ms, not before.
        assert!(!rl.allow(a, t0 + Duration::from_millis(400)));
        assert!(rl.allow(a, t0 + Duration::from_millis(500)));
        assert!(!rl.allow(a, t0 + Duration::from_millis(500)));
        // Another client has its own bucket.
        assert!(rl.allow(ip("192.0.2.2"), t0));
    }

    #[test]
    fn ipv6_clients_are_counted_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            client_of(ip("2001:db8:1:2:aaaa::1")),
            client_of(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            client_of(ip("2001:db8:1:2::1")),
            client_of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(client_of(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(LIMIT, 16, t0);
        for n in 0..3 {
            assert!(rl.allow(ip(&format!("2001:db8::{n}")), t0));
        }
        assert!(
            !rl.allow(ip("2001:db8::ff"), t0),
            "one /64 shares one bucket"
        );
    }

    #[test]
    fn the_map_is_bounded_and_clients_beyond_it_share_the_overflow_bucket() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(LIMIT, 4, t0);
        for n in 0..4 {
            assert!(rl.allow(ip(&format!("198.51.100.{n}")), t0));
        }
        // Full, and nobody is idle: the next clients draw from the overflow bucket.
        let beyond: Vec<bool> = (10..15)
            .map(|n| rl.allow(ip(&format!("198.51.100.{n}")), t0))
            .collect();
        assert_eq!(beyond, [true, true, true, false, false]);
        assert_eq!(rl.clients(), 4);
        // Once the first clients' buckets have refilled they are forgotten and the new
        // client gets a bucket of its own.
        let later = t0 + Duration::from_secs(2);
        assert!(rl.allow(ip("198.51.100.99"), later));
        assert_eq!(rl.clients(), 1);
        for n in 0..100_000u32 {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from(n));
            rl.allow(addr, later);
        }
        assert!(rl.clients() <= 4, "{} buckets", rl.clients());
    }

    #[test]
    fn a_zero_rate_turns_the_limit_off() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(
            RateLimit {
                per_second: 0.0,
                burst: 1,
            },
            1,
            t0,
        );
        assert!((0..1000).all(|_| rl.allow(ip("192.0.2.1"), t0)));
        assert_eq!(rl.clients(), 0);
    }
}
