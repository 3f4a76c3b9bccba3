//! The edge's counters: open connections (overall and per client
//! address) and the WebSocket upgrade rate per client address.
//!
//! Pure bookkeeping behind a mutex: no I/O, no timers of its own (the
//! caller passes the time), so every rule is unit-tested here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::client_ip::{IpBucket, TrustedProxies};

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The server holds `max_connections` already (503).
    Full { max: usize },
    /// This client address holds `max_connections_per_ip` already (429).
    PerIp { max: usize },
}

/// Counts open connections. Cheap to clone.
#[derive(Clone)]
pub struct Connections {
    inner: Arc<Inner>,
}

struct Inner {
    max: usize,
    per_ip: usize,
    /// Peers not capped per address (trusted proxies carry many clients).
    exempt: TrustedProxies,
    state: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_ip: HashMap<IpBucket, usize>,
}

/// An admitted connection's place; dropping it frees it.
pub struct Slot {
    inner: Arc<Inner>,
    bucket: Option<IpBucket>,
}

impl Connections {
    /// At most `max` connections, `per_ip` of them from one client address
    /// (an IPv6 /64), except from `exempt` peers.
    pub fn new(max: usize, per_ip: usize, exempt: TrustedProxies) -> Connections {
        Connections {
            inner: Arc::new(Inner {
                max,
                per_ip,
                exempt,
                state: Mutex::default(),
            }),
        }
    }

    /// A slot for a connection from `peer`, or why not.
    pub fn admit(&self, peer: IpAddr) -> Result<Slot, Refusal> {
        let mut s = self.inner.lock();
        if s.total >= self.inner.max {
            return Err(Refusal::Full {
                max: self.inner.max,
            });
        }
        let bucket = (!self.inner.exempt.contains(peer)).then(|| IpBucket::of(peer));
        if let Some(bucket) = bucket {
            let n = s.by_ip.entry(bucket).or_default();
            if *n >= self.inner.per_ip {
                return Err(Refusal::PerIp {
                    max: self.inner.per_ip,
                });
            }
            *n += 1;
        }
        s.total += 1;
        Ok(Slot {
            inner: self.inner.clone(),
            bucket,
        })
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.inner.lock().total
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.inner.lock();
        s.total = s.total.saturating_sub(1);
        if let Some(bucket) = self.bucket
            && let Some(n) = s.by_ip.get_mut(&bucket)
        {
            *n -= 1;
            if *n == 0 {
                s.by_ip.remove(&bucket);
            }
        }
    }
}

/// A token bucket per client address: `per_minute` tokens a minute, as
/// many in a burst. Buckets that have refilled are dropped (they hold
/// nothing a new bucket would not), at most once per `PRUNE_EVERY`.
pub struct RateLimit {
    per_minute: u32,
    state: Mutex<Buckets>,
}

struct Buckets {
    by_ip: HashMap<IpBucket, (f64, Instant)>,
    pruned: Instant,
}

/// How often full buckets are dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

impl RateLimit {
    /// `per_minute` 0 allows everything.
    pub fn new(per_minute: u32, now: Instant) -> RateLimit {
        RateLimit {
            per_minute,
            state: Mutex::new(Buckets {
                by_ip: HashMap::new(),
                pruned: now,
            }),
        }
    }

    /// Takes a token for `ip`; `false` if its bucket is empty.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        let capacity = f64::from(self.per_minute);
        let rate = capacity / 60.0;
        let refill = |tokens: f64, at: Instant| {
            (tokens + now.saturating_duration_since(at).as_secs_f64() * rate).min(capacity)
        };
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if now.saturating_duration_since(s.pruned) >= PRUNE_EVERY {
            s.by_ip
                .retain(|_, (tokens, at)| refill(*tokens, *at) < capacity);
            s.pruned = now;
        }
        let (tokens, at) = s.by_ip.entry(IpBucket::of(ip)).or_insert((capacity, now));
        let available = refill(*tokens, *at);
        *at = now;
        if available >= 1.0 {
            *tokens = available - 1.0;
            true
        } else {
            *tokens = available;
            false
        }
    }

    /// Buckets held now.
    pub fn buckets(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_ip
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn connections_are_capped_overall_and_per_address() {
        let exempt = TrustedProxies::parse(&["10.0.0.0/8"]).expect("cidr");
        let c = Connections::new(4, 2, exempt);
        let a1 = c.admit(ip("203.0.113.1")).expect("a1");
        let _a2 = c.admit(ip("203.0.113.1")).expect("a2");
        assert_eq!(
            c.admit(ip("203.0.113.1")).err(),
            Some(Refusal::PerIp { max: 2 })
        );
        // Same /64: the same client.
        let _v6 = c.admit(ip("2001:db8::1")).expect("v6");
        let _v6b = c.admit(ip("2001:db8::2")).expect("v6b");
        assert_eq!(c.open(), 4);
        assert_eq!(
            c.admit(ip("198.51.100.1")).err(),
            Some(Refusal::Full { max: 4 })
        );
        drop(a1);
        assert_eq!(c.open(), 3);
        // A trusted proxy is not capped per address, only overall.
        let _p = c.admit(ip("10.0.0.1")).expect("proxy");
        assert_eq!(
            c.admit(ip("10.0.0.1")).err(),
            Some(Refusal::Full { max: 4 })
        );
    }

    #[test]
    fn per_ip_counts_are_released() {
        let c = Connections::new(10, 1, TrustedProxies::default());
        for _ in 0..5 {
            let s = c.admit(ip("2001:db8:0:1::5")).expect("slot");
            assert!(c.admit(ip("2001:db8:0:1::6")).is_err());
            drop(s);
        }
        assert_eq!(c.open(), 0);
        assert!(c.inner.lock().by_ip.is_empty());
    }

    #[test]
    fn upgrades_are_rate_limited_per_address_and_refill() {
        let t0 = Instant::now();
        let r = RateLimit::new(60, t0);
        for _ in 0..60 {
            assert!(r.allow(ip("203.0.113.1"), t0));
        }
        assert!(!r.allow(ip("203.0.113.1"), t0));
        assert!(
            r.allow(ip("203.0.113.2"), t0),
            "another client is not affected"
        );
        // One token a second.
        assert!(r.allow(ip("203.0.113.1"), t0 + Duration::from_millis(1100)));
        assert!(!r.allow(ip("203.0.113.1"), t0 + Duration::from_millis(1200)));
    }

    #[test]
    fn refilled_buckets_are_pruned() {
        let t0 = Instant::now();
        let r = RateLimit::new(60, t0);
        for i in 0..100u8 {
            assert!(r.allow(IpAddr::from([198, 51, 100, i]), t0));
        }
        assert_eq!(r.buckets(), 100);
        // A minute later every bucket is full again and goes at the next prune.
        assert!(r.allow(ip("203.0.113.1"), t0 + Duration::from_secs(61)));
        assert_eq!(r.buckets(), 1);
        assert!(RateLimit::new(0, t0).allow(ip("203.0.113.1"), t0));
    }
}
