//! The busiest objects, without a series per object: a Space-Saving
//! heavy-hitters sketch per shard, over fixed time windows.
//!
//! Space-Saving (Metwally, Agrawal, El Abbadi, 2005) keeps `capacity`
//! counters. A key it tracks counts exactly from when it was admitted; a new
//! key replaces the key with the smallest count and inherits that count as
//! its possible overestimate (`error`). Any key that occurred more than
//! `events / capacity` times in the window is tracked, so with one sketch per
//! shard the busiest objects of a node are never missed.
//!
//! A leaf like [`super::metrics`]: generic over the key, no I/O; the clock
//! is passed in, so the tests need no time.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A tracked key's counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Events counted, an upper bound of the true count.
    pub events: u64,
    /// How much of `events` may belong to keys this one replaced.
    pub error: u64,
    /// Time the key's executor was busy, counted only while tracked.
    pub busy: Duration,
}

/// The Space-Saving sketch.
#[derive(Clone, Debug)]
pub struct SpaceSaving<K> {
    capacity: usize,
    counters: HashMap<K, Counts>,
}

impl<K: Hash + Eq + Clone> SpaceSaving<K> {
    /// A sketch of `capacity` counters (at least 1).
    pub fn new(capacity: usize) -> Self {
        SpaceSaving {
            capacity: capacity.max(1),
            counters: HashMap::with_capacity(capacity.max(1)),
        }
    }

    /// Counts one event of `key` that kept its executor busy for `busy`.
    pub fn record(&mut self, key: &K, busy: Duration) {
        if let Some(c) = self.counters.get_mut(key) {
            c.events += 1;
            c.busy += busy;
            return;
        }
        let mut admitted = Counts {
            events: 1,
            error: 0,
            busy,
        };
        if self.counters.len() >= self.capacity {
            // O(capacity), only when a key that is not tracked shows up.
            let smallest = self
                .counters
                .iter()
                .min_by_key(|(_, c)| c.events)
                .map(|(k, c)| (k.clone(), c.events));
            if let Some((victim, min)) = smallest {
                self.counters.remove(&victim);
                admitted.events = min + 1;
                admitted.error = min;
            }
        }
        self.counters.insert(key.clone(), admitted);
    }

    /// The `n` keys with the highest counts, highest first.
    pub fn top(&self, n: usize) -> Vec<(K, Counts)> {
        let mut all: Vec<(K, Counts)> =
            self.counters.iter().map(|(k, c)| (k.clone(), *c)).collect();
        all.sort_by_key(|(_, c)| std::cmp::Reverse(c.events));
        all.truncate(n);
        all
    }

    /// Events counted in all (the sum of the counts, an upper bound).
    pub fn total(&self) -> u64 {
        self.counters.values().map(|c| c.events).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.counters.is_empty()
    }
}

/// One sketch over consecutive windows: the one being filled and the last
/// complete one, which is what is reported.
#[derive(Debug)]
pub struct Windowed<K> {
    window: Duration,
    started: Instant,
    current: SpaceSaving<K>,
    /// The last complete window and how long it lasted.
    last: Option<(SpaceSaving<K>, Duration)>,
}

impl<K: Hash + Eq + Clone> Windowed<K> {
    pub fn new(capacity: usize, window: Duration, now: Instant) -> Self {
        Windowed {
            window,
            started: now,
            current: SpaceSaving::new(capacity),
            last: None,
        }
    }

    /// Closes the current window if it is at least `window` old. A window
    /// in which nothing happened for a while simply lasts longer, so its
    /// rates stay true averages.
    fn roll(&mut self, now: Instant) {
        let age = now.saturating_duration_since(self.started);
        if age < self.window {
            return;
        }
        let fresh = SpaceSaving::new(self.current.capacity);
        let done = std::mem::replace(&mut self.current, fresh);
        self.last = Some((done, age));
        self.started = now;
    }

    pub fn record(&mut self, key: &K, busy: Duration, now: Instant) {
        self.roll(now);
        self.current.record(key, busy);
    }

    /// The last complete window's top `n` and its length.
    pub fn last_window(&mut self, n: usize, now: Instant) -> Option<(Vec<(K, Counts)>, Duration)> {
        self.roll(now);
        let (sketch, length) = self.last.as_ref()?;
        Some((sketch.top(n), *length))
    }
}

/// A busy object, as reported.
#[derive(Clone, Debug, PartialEq)]
pub struct Hot<K> {
    pub key: K,
    pub counts: Counts,
    /// The length of the window the counts are from.
    pub window: Duration,
}

impl<K> Hot<K> {
    pub fn events_per_second(&self) -> f64 {
        self.counts.events as f64 / self.window.as_secs_f64().max(1e-9)
    }

    /// Fraction of the window the executor was busy, 0..=1.
    pub fn busy_ratio(&self) -> f64 {
        (self.counts.busy.as_secs_f64() / self.window.as_secs_f64().max(1e-9)).min(1.0)
    }
}

/// The sketches of a node: one per shard, each behind its own lock, so that
/// executors of different shards never contend.
#[derive(Debug)]
pub struct HotObjects<K> {
    shards: Vec<Mutex<Windowed<K>>>,
}

/// Counters per shard sketch.
pub const CAPACITY_PER_SHARD: usize = 32;
/// How long one window lasts.
pub const WINDOW: Duration = Duration::from_secs(10);
/// How many objects are ranked on `/metrics` and `/admin/hot-objects`.
pub const TOP_N: usize = 20;

impl<K: Hash + Eq + Clone> HotObjects<K> {
    pub fn new(shards: usize, capacity: usize, window: Duration) -> Self {
        Self::starting(shards, capacity, window, Instant::now())
    }

    fn starting(shards: usize, capacity: usize, window: Duration, now: Instant) -> Self {
        HotObjects {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(Windowed::new(capacity, window, now)))
                .collect(),
        }
    }

    /// Counts one event of `key` (of `shard`) that took `busy`.
    pub fn record(&self, shard: usize, key: &K, busy: Duration) {
        self.record_at(shard, key, busy, Instant::now());
    }

    fn record_at(&self, shard: usize, key: &K, busy: Duration, now: Instant) {
        if let Some(s) = self.shards.get(shard % self.shards.len()) {
            s.lock()
                .unwrap_or_else(|p| p.into_inner())
                .record(key, busy, now);
        }
    }

    /// The `n` busiest keys of the node in the last complete window of each
    /// shard, busiest first. (A key lives in one shard, so merging the
    /// shards' tops loses nothing.)
    pub fn top(&self, n: usize) -> Vec<Hot<K>> {
        self.top_at(n, Instant::now())
    }

    fn top_at(&self, n: usize, now: Instant) -> Vec<Hot<K>> {
        let mut all = Vec::new();
        for s in &self.shards {
            let mut s = s.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((top, window)) = s.last_window(n, now) {
                all.extend(top.into_iter().map(|(key, counts)| Hot {
                    key,
                    counts,
                    window,
                }));
            }
        }
        all.sort_by(|a, b| b.events_per_second().total_cmp(&a.events_per_second()));
        all.truncate(n);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_while_keys_fit() {
        let mut s = SpaceSaving::new(4);
        for (key, times) in [("a", 5), ("b", 3), ("c", 1)] {
            for _ in 0..times {
                s.record(&key, Duration::from_millis(1));
            }
        }
        let top = s.top(10);
        let keys: Vec<_> = top.iter().map(|(k, c)| (*k, c.events, c.error)).collect();
        assert_eq!(keys, [("a", 5, 0), ("b", 3, 0), ("c", 1, 0)]);
        assert_eq!(top[0].1.busy, Duration::from_millis(5));
        assert_eq!(s.total(), 9);
    }

    #[test]
    fn a_new_key_replaces_the_smallest_and_inherits_its_count_as_error() {
        let mut s = SpaceSaving::new(2);
        for key in ["a", "a", "a", "b", "c"] {
            s.record(&key, Duration::ZERO);
        }
        let top = s.top(2);
        assert_eq!(
            top[0],
            (
                "a",
                Counts {
                    events: 3,
                    error: 0,
                    busy: Duration::ZERO
                }
            )
        );
        assert_eq!(
            top[1],
            (
                "c",
                Counts {
                    events: 2,
                    error: 1,
                    busy: Duration::ZERO
                }
            )
        );
    }

    /// The guarantee: every key with more than total/capacity events is
    /// tracked, and no count is below the true one.
    #[test]
    fn heavy_hitters_survive_a_long_tail() {
        let mut s = SpaceSaving::new(16);
        let mut truth: HashMap<u32, u64> = HashMap::new();
        for i in 0..20_000u32 {
            // Keys 0..3 are hot (a third of the stream); 10_000 keys are cold.
            let key = if i % 3 == 0 {
                i % 4
            } else {
                100 + (i * 7919) % 10_000
            };
            s.record(&key, Duration::ZERO);
            *truth.entry(key).or_default() += 1;
        }
        let top = s.top(4);
        let mut hot: Vec<u32> = top.iter().map(|(k, _)| *k).collect();
        hot.sort_unstable();
        assert_eq!(hot, [0, 1, 2, 3]);
        for (key, counts) in s.top(16) {
            assert!(counts.events >= truth[&key], "{key}: {counts:?}");
            assert!(
                counts.events - counts.error <= truth[&key],
                "{key}: {counts:?}"
            );
        }
    }

    #[test]
    fn windows_report_the_last_complete_one() {
        let t0 = Instant::now();
        let window = Duration::from_secs(10);
        let mut w = Windowed::new(4, window, t0);
        w.record(&"a", Duration::from_secs(1), t0);
        assert!(w.last_window(5, t0 + Duration::from_secs(5)).is_none());
        // The window closes when it is read (or written) after 10 s.
        let (top, length) = w.last_window(5, t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(length, window);
        assert_eq!(top[0].0, "a");
        // Nothing since: the next complete window is empty.
        let (top, _) = w.last_window(5, t0 + Duration::from_secs(25)).unwrap();
        assert!(top.is_empty());
    }

    #[test]
    fn rates_and_busy_ratio_come_from_the_window_length() {
        let hot = Hot {
            key: "a",
            counts: Counts {
                events: 50,
                error: 0,
                busy: Duration::from_secs(4),
            },
            window: Duration::from_secs(10),
        };
        assert!((hot.events_per_second() - 5.0).abs() < 1e-9);
        assert!((hot.busy_ratio() - 0.4).abs() < 1e-9);
    }

    #[test]
    fn shards_merge_into_one_ranking() {
        let t0 = Instant::now();
        let hot = HotObjects::starting(2, 4, Duration::from_secs(10), t0);
        for _ in 0..3 {
            hot.record_at(0, &"a", Duration::ZERO, t0);
        }
        hot.record_at(1, &"b", Duration::ZERO, t0 + Duration::from_secs(1));
        hot.record_at(1, &"c", Duration::ZERO, t0 + Duration::from_secs(1));
        assert!(hot.top_at(10, t0 + Duration::from_secs(9)).is_empty());
        let top = hot.top_at(2, t0 + Duration::from_secs(10));
        let ranked: Vec<_> = top.iter().map(|h| (h.key, h.counts.events)).collect();
        assert_eq!(ranked[0], ("a", 3));
        assert_eq!(ranked.len(), 2);
        assert!((top[0].events_per_second() - 0.3).abs() < 1e-9);
    }
}
