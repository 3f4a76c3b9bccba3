//! The leader lease of one shard on this node, kept by the clock at the
//! moment it is read.
//!
//! A follower that acknowledged this node's heartbeat does not vote for
//! anyone else until its own leader lease (`election_timeout_max`) has run
//! from when it heard the heartbeat. So once a quorum acknowledged a round
//! of heartbeats that this node started at `t`, no other node can lead the
//! shard before `t + lease`: every quorum another candidate needs contains
//! one of those followers. [`Lease`] keeps that deadline; an executor admits
//! an event only while `now < deadline`, reading `now` at the moment of the
//! check. A view of leadership that went stale — Raft's metrics not yet
//! republished, a leadership watch not yet re-evaluated, a process paused
//! with SIGSTOP and resumed seconds later — cannot let an old leader run an
//! event after a successor began: its deadline has passed by then.
//!
//! The deadline is a property of the node, not of a term: it says no
//! *other* node leads before it. Whether this node leads in the executor's
//! term is the leadership watch's part.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub(crate) struct Lease {
    /// The origin of `deadline_ns`.
    base: Instant,
    /// Nanoseconds after `base` before which no other node can lead; 0:
    /// none known.
    deadline_ns: AtomicU64,
    /// The group has one voter: this node leads without anyone's
    /// acknowledgement.
    alone: AtomicBool,
}

impl Lease {
    pub fn new() -> Lease {
        Lease {
            base: Instant::now(),
            deadline_ns: AtomicU64::new(0),
            alone: AtomicBool::new(false),
        }
    }

    /// A quorum acknowledged a round of heartbeats started at `started`:
    /// no other node leads before `started + lease`. Never moves the
    /// deadline back (rounds may end out of order).
    pub fn extend(&self, started: Instant, lease: Duration) {
        let until = started.saturating_duration_since(self.base) + lease;
        let ns = u64::try_from(until.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.deadline_ns.fetch_max(ns, Ordering::AcqRel);
    }

    /// Whether the group has a single voter (then the lease always holds).
    pub fn set_alone(&self, alone: bool) {
        self.alone.store(alone, Ordering::Release);
    }

    /// Whether no other node can lead at `now`.
    pub fn holds(&self, now: Instant) -> bool {
        if self.alone.load(Ordering::Acquire) {
            return true;
        }
        let deadline = self.deadline_ns.load(Ordering::Acquire);
        let now =
            u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX);
        deadline != 0 && now < deadline
    }

    /// When the lease ends, if one is known.
    pub fn deadline(&self) -> Option<Instant> {
        match self.deadline_ns.load(Ordering::Acquire) {
            0 => None,
            ns => Some(self.base + Duration::from_nanos(ns)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_millis(400);

    /// Issue 13's overlap: a lease is judged by the clock when it is read,
    /// so a view from before a pause never admits an event after it.
    #[test]
    fn a_lease_holds_only_until_its_deadline_read_now() {
        let lease = Lease::new();
        let t0 = Instant::now();
        assert!(!lease.holds(t0), "no acknowledged round yet");
        lease.extend(t0, LEASE);
        assert!(lease.holds(t0 + Duration::from_millis(399)));
        assert!(
            !lease.holds(t0 + Duration::from_millis(400)),
            "a successor may lead from the deadline on"
        );
        // A process paused for 3 s resumes past its deadline.
        assert!(!lease.holds(t0 + Duration::from_secs(3)));
    }

    #[test]
    fn a_late_round_never_shortens_the_lease() {
        let lease = Lease::new();
        let t0 = Instant::now();
        lease.extend(t0 + Duration::from_millis(100), LEASE);
        lease.extend(t0, LEASE);
        assert!(lease.holds(t0 + Duration::from_millis(450)));
        assert_eq!(
            lease.deadline(),
            Some(t0 + Duration::from_millis(100) + LEASE)
        );
    }

    #[test]
    fn a_single_voter_always_holds_its_lease() {
        let lease = Lease::new();
        lease.set_alone(true);
        assert!(lease.holds(Instant::now() + Duration::from_secs(60)));
    }
}
