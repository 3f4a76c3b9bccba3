//! The live-executor budget of a node: at most `max` objects have an
//! executor at once, and the ones asked to make room are the least
//! recently used.
//!
//! A slot is a semaphore permit an executor's task holds until it ends
//! (after it left the registry and released its outputs), so the count of
//! live executors never exceeds the cap, not even while one leaves and
//! another arrives. Making room is cooperative: the registry asks the least
//! recently used executors that have nothing queued to leave
//! ([`Budget::victims`]), and each leaves only if it is idle (no event
//! running, no writes in flight: the executor's own rule), so eviction never
//! breaks "one executor per object". A request that finds no slot within
//! its wait gets `Overloaded` (503).
//!
//! Mailboxes are bounded in bytes as well as in events: each queued
//! event carries a [`Charge`] of its size against its object's
//! [`MailboxBytes`], returned when the event is taken or dropped.
//!
//! The recency order ([`Lru`]) is pure and unit-tested; this file does no
//! I/O.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::executor::Event;
use super::socket::Message;
use crate::id::ObjectKey;

/// Keys in order of last use: a logical clock per touch.
#[derive(Debug)]
pub(crate) struct Lru<K> {
    tick: u64,
    by_key: HashMap<K, u64>,
    order: BTreeMap<u64, K>,
}

impl<K> Default for Lru<K> {
    fn default() -> Self {
        Lru {
            tick: 0,
            by_key: HashMap::new(),
            order: BTreeMap::new(),
        }
    }
}

impl<K: Hash + Eq + Clone> Lru<K> {
    /// Marks `key` as used now (adding it if new).
    pub fn touch(&mut self, key: &K) {
        self.tick += 1;
        if let Some(old) = self.by_key.insert(key.clone(), self.tick) {
            self.order.remove(&old);
        }
        self.order.insert(self.tick, key.clone());
    }

    /// Forgets `key`.
    pub fn remove(&mut self, key: &K) {
        if let Some(old) = self.by_key.remove(key) {
            self.order.remove(&old);
        }
    }

    /// Up to `n` keys, least recently used first.
    pub fn oldest(&self, n: usize) -> Vec<K> {
        self.order.values().take(n).cloned().collect()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_key.len()
    }
}

/// Executors asked to leave at once when a slot is needed: a few, so that
/// one busy victim does not leave the caller waiting.
const VICTIMS: usize = 4;

/// The node's live-executor slots and their recency. Cheap to share.
pub(crate) struct Budget {
    max: usize,
    slots: Arc<Semaphore>,
    lru: Mutex<Lru<ObjectKey>>,
}

/// A live executor's place in the budget; freed when dropped.
pub(crate) type Slot = OwnedSemaphorePermit;

impl Budget {
    pub fn new(max: usize) -> Budget {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Budget {
            max,
            slots: Arc::new(Semaphore::new(max)),
            lru: Mutex::new(Lru::default()),
        }
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A free slot, if there is one now.
    pub fn try_slot(&self) -> Option<Slot> {
        self.slots.clone().try_acquire_owned().ok()
    }

    /// A slot freed within `wait` (the caller has asked victims to leave).
    pub async fn wait_slot(&self, wait: Duration) -> Option<Slot> {
        match tokio::time::timeout(wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(slot)) => Some(slot),
            _ => None,
        }
    }

    /// `key` was used (an event was dispatched to it).
    pub fn touch(&self, key: &ObjectKey) {
        self.lock().touch(key);
    }

    /// `key` has no executor any more.
    pub fn forget(&self, key: &ObjectKey) {
        self.lock().remove(key);
    }

    /// The least recently used objects, to be asked to leave.
    pub fn victims(&self) -> Vec<ObjectKey> {
        self.lock().oldest(VICTIMS)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru<ObjectKey>> {
        self.lru.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The bytes queued in one object's mailbox. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct MailboxBytes(Arc<AtomicUsize>);

/// One queued event's bytes; uncounted when dropped.
pub(crate) struct Charge {
    bytes: usize,
    queued: MailboxBytes,
}

impl MailboxBytes {
    /// Counts `bytes` more, unless that would pass `max` while something is
    /// queued already (one event larger than `max` is let into an empty
    /// mailbox: the body and message limits bound it).
    pub fn charge(&self, bytes: usize, max: usize) -> Option<Charge> {
        let mut now = self.0.load(Ordering::Relaxed);
        loop {
            if now > 0 && now.saturating_add(bytes) > max {
                return None;
            }
            match self.0.compare_exchange_weak(
                now,
                now.saturating_add(bytes),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(Charge {
                        bytes,
                        queued: self.clone(),
                    });
                }
                Err(actual) => now = actual,
            }
        }
    }

    #[cfg(test)]
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.queued.0.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// What an event weighs in its object's mailbox: its payload, plus a
/// little for the rest.
pub(crate) fn event_bytes(event: &Event) -> usize {
    const OVERHEAD: usize = 64;
    OVERHEAD
        + match event {
            Event::Fetch { req, .. } => {
                let headers: usize = req
                    .headers()
                    .iter()
                    .map(|(k, v)| k.as_str().len() + v.len())
                    .sum();
                req.body().len() + headers + req.uri().to_string().len()
            }
            Event::Call {
                method, payload, ..
            } => method.len() + payload.len(),
            Event::SocketMessage { msg, .. } => match msg {
                Message::Text(t) => t.len(),
                Message::Binary(b) => b.len(),
            },
            Event::SocketClose { reason, .. } => reason.len(),
            Event::SocketError { error, .. } => error.len(),
            Event::Alarm { .. } | Event::AlarmGiveUp { .. } | Event::AlarmSync { .. } => 0,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_recently_used_come_first() {
        let mut lru = Lru::default();
        for k in ["a", "b", "c", "d"] {
            lru.touch(&k);
        }
        assert_eq!(lru.oldest(2), vec!["a", "b"]);
        lru.touch(&"a");
        assert_eq!(lru.oldest(4), vec!["b", "c", "d", "a"]);
        lru.remove(&"c");
        assert_eq!(lru.oldest(4), vec!["b", "d", "a"]);
        assert_eq!(lru.len(), 3);
        lru.remove(&"zz");
        assert_eq!(lru.len(), 3);
    }

    #[test]
    fn touching_many_times_keeps_one_entry_per_key() {
        let mut lru = Lru::default();
        for i in 0..1000u32 {
            lru.touch(&(i % 7));
        }
        assert_eq!(lru.len(), 7);
        assert_eq!(lru.order.len(), 7);
        // 1000 % 7 = 6: the last touched was 999 % 7 = 5, the oldest 6.
        assert_eq!(lru.oldest(1), vec![6]);
    }

    #[test]
    fn mailbox_bytes_are_bounded_and_returned() {
        let queued = MailboxBytes::default();
        let big = queued
            .charge(100, 10)
            .expect("an empty mailbox takes one big event");
        assert!(queued.charge(1, 10).is_none());
        drop(big);
        let a = queued.charge(6, 10).expect("a");
        assert!(queued.charge(5, 10).is_none());
        let b = queued.charge(4, 10).expect("b");
        assert_eq!(queued.get(), 10);
        drop((a, b));
        assert_eq!(queued.get(), 0);
    }

    #[tokio::test]
    async fn slots_are_capped_and_freed_on_drop() {
        let budget = Budget::new(2);
        let a = budget.try_slot().expect("first");
        let _b = budget.try_slot().expect("second");
        assert!(budget.try_slot().is_none());
        assert!(budget.wait_slot(Duration::from_millis(20)).await.is_none());
        let waiter = budget.wait_slot(Duration::from_secs(5));
        drop(a);
        assert!(waiter.await.is_some());
        assert_eq!(budget.max(), 2);
    }
}
