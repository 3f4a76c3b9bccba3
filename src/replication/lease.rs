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
//! A lease belongs to the Raft term its rounds were acknowledged in, and
//! holds only for that term. A round confirms that no other node leads
//! *from then on*; it says nothing of the terms this node missed. An
//! executor of term `t` whose node lost leadership and regained it in
//! `t + 2` (its leadership watch not yet re-evaluated) would otherwise pass
//! the check on the new term's lease and run on a state that term `t + 1`
//! changed.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub(crate) struct Lease {
    /// The origin of the deadline.
    base: Instant,
    /// The term of the lease, and the nanoseconds after `base` before which
    /// no other node can lead (0: none known).
    held: Mutex<(u64, u64)>,
    /// The group has one voter: this node leads without anyone's
    /// acknowledgement.
    alone: AtomicBool,
}

impl Lease {
    pub fn new() -> Lease {
        Lease {
            base: Instant::now(),
            held: Mutex::new((0, 0)),
            alone: AtomicBool::new(false),
        }
    }

    fn held(&self) -> (u64, u64) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A quorum acknowledged a round of heartbeats started at `started`,
    /// this node leading in Raft term `term`: no other node leads before
    /// `started + lease`. A newer term's lease replaces an older one; in
    /// one term the deadline never moves back (rounds may end out of
    /// order); an older term's round changes nothing.
    pub fn extend(&self, started: Instant, lease: Duration, term: u64) {
        let until = started.saturating_duration_since(self.base) + lease;
        let ns = u64::try_from(until.as_nanos()).unwrap_or(u64::MAX).max(1);
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if term > held.0 {
            *held = (term, ns);
        } else if term == held.0 {
            held.1 = held.1.max(ns);
        }
    }

    /// Whether the group has a single voter (then the lease always holds).
    pub fn set_alone(&self, alone: bool) {
        self.alone.store(alone, Ordering::Release);
    }

    /// Whether this node holds the lease of Raft term `term` at `now`: no
    /// other node can lead then, and none led since the term's rounds.
    pub fn holds(&self, now: Instant, term: u64) -> bool {
        if self.alone.load(Ordering::Acquire) {
            return true;
        }
        let (held_term, deadline) = self.held();
        let now =
            u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX);
        held_term == term && deadline != 0 && now < deadline
    }

    /// When the lease of `term` ends, if one is known.
    pub fn deadline(&self, term: u64) -> Option<Instant> {
        match self.held() {
            (t, ns) if t == term && ns != 0 => Some(self.base + Duration::from_nanos(ns)),
            _ => None,
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
        assert!(!lease.holds(t0, 1), "no acknowledged round yet");
        lease.extend(t0, LEASE, 1);
        assert!(lease.holds(t0 + Duration::from_millis(399), 1));
        assert!(
            !lease.holds(t0 + Duration::from_millis(400), 1),
            "a successor may lead from the deadline on"
        );
        // A process paused for 3 s resumes past its deadline.
        assert!(!lease.holds(t0 + Duration::from_secs(3), 1));
    }

    /// A lease earned in a later term does not vouch for an earlier one:
    /// another node may have led in between.
    #[test]
    fn a_lease_holds_only_for_its_own_term() {
        let lease = Lease::new();
        let t0 = Instant::now();
        lease.extend(t0, LEASE, 5);
        assert!(lease.holds(t0, 5));
        lease.extend(t0 + Duration::from_millis(50), LEASE, 7);
        assert!(
            !lease.holds(t0 + Duration::from_millis(60), 5),
            "term 6 may have led between 5 and 7"
        );
        assert!(lease.holds(t0 + Duration::from_millis(60), 7));
        // A late round of the old term changes nothing.
        lease.extend(t0 + Duration::from_millis(100), LEASE, 5);
        assert!(!lease.holds(t0 + Duration::from_millis(110), 5));
        assert_eq!(
            lease.deadline(7),
            Some(t0 + Duration::from_millis(50) + LEASE)
        );
        assert_eq!(lease.deadline(5), None);
    }

    #[test]
    fn a_late_round_never_shortens_the_lease() {
        let lease = Lease::new();
        let t0 = Instant::now();
        lease.extend(t0 + Duration::from_millis(100), LEASE, 3);
        lease.extend(t0, LEASE, 3);
        assert!(lease.holds(t0 + Duration::from_millis(450), 3));
        assert_eq!(
            lease.deadline(3),
            Some(t0 + Duration::from_millis(100) + LEASE)
        );
    }

    #[test]
    fn a_single_voter_always_holds_its_lease() {
        let lease = Lease::new();
        lease.set_alone(true);
        assert!(lease.holds(Instant::now() + Duration::from_secs(60), 1));
    }
}
