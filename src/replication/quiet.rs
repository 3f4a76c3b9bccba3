//! Quiescence of idle shards: a shard leader with nothing to do stops its
//! heartbeats and openraft's timers, and its followers stop theirs, so an
//! idle cluster's CPU does not grow with its number of shards (issue 11;
//! CockroachDB's quiesced ranges and TiKV's hibernating regions do the same).
//!
//! This module is the pure core: [`Phase`] and [`next`] (when a leader
//! quiesces), [`follower_ticks`] (when a follower runs its election timer),
//! and [`Quiet`], the shard's shared state that requests touch. The I/O
//! shells are `pulse.rs` (the leader's heartbeat rounds) and `liveness.rs`
//! (node-level pings between peers that stand in for every quiesced shard's
//! heartbeats).
//!
//! # Why the leases and the elections stay correct
//!
//! Quiescence changes only *when* openraft's timers run, never what a vote
//! or an append does, so Raft's safety is untouched. The leader lease
//! (`lease.rs`) rests on followers refusing votes within their lease after
//! acknowledging a round; a quiesced leader simply lets its lease lapse, and
//! an event that finds it lapsed wakes the shard and waits for a new round
//! (`ShardHandle::leader_epoch`). Nothing is admitted on an old lease.
//!
//! Liveness: a follower's election timer is off only while the leader's
//! node answers its pings *and* names the shard quiesced; once that node
//! stops answering for `suspect_after`, the follower's timer runs again and,
//! having heard nothing for long, it campaigns at its next tick. A leader
//! quiesces only when every voter peer answers pings in this protocol and
//! has pinged it since it announced the quiescence (so no follower's timer
//! fires while heartbeats stop), and only with every follower caught up.
//! Any request (a proposal, a barrier, a lease check by an executor) wakes
//! the shard; the leader's first round after waking renews its lease, and
//! its appends reach followers whose next ping turns their timers back on.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use super::liveness::Announced;
use super::types::NodeId;
use crate::id::ShardId;

/// One shard's quiescence as its leader sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Heartbeats go out. `woke` is when the shard last left [`Phase::Quiet`]:
    /// its lease lapsed while quiet, and until a round renews it the
    /// leadership watch keeps the epoch (see [`Phase::excuses`]).
    Active { woke: Option<Instant> },
    /// Announced to the peers (their pings see it) in Raft term `term`;
    /// heartbeats still go out until every voter peer pinged this node
    /// after `since`.
    Quiescing { since: Instant, term: u64 },
    /// No heartbeats, no openraft timers, leader in Raft term `term`.
    Quiet { term: u64 },
}

impl Phase {
    /// Whether a lapsed lease of Raft term `term` is quiescence's doing at
    /// `now`, not a sign of a leader cut off from its peers: the shard is
    /// quiet in that term, or woke less than `window` ago.
    pub fn excuses(self, now: Instant, term: u64, window: Duration) -> bool {
        match self {
            Phase::Quiet { term: t } => t == term,
            Phase::Active { woke: Some(w) } => now < w + window,
            _ => false,
        }
    }

    /// Whether peers are told the shard is quiesced.
    pub fn announced(self) -> bool {
        !matches!(self, Phase::Active { .. })
    }
}

/// What the leader knows when it decides whether to quiesce.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Readiness {
    /// Raft says this node leads, in `term`.
    pub leading: Option<u64>,
    /// Time since the last request touched the shard.
    pub idle: Duration,
    /// Every follower and learner holds the whole log, and all of it is
    /// applied here.
    pub caught_up: bool,
    /// Every voter peer answers pings in this protocol now.
    pub peers_ready: bool,
    /// Every voter peer pinged this node after the `since` of
    /// [`Phase::Quiescing`] (ignored in other phases).
    pub heard_since: bool,
}

/// The leader's next phase after a heartbeat round, quiescing after `after`
/// without requests. Leaving [`Phase::Quiet`] is the pulse's (a wake).
pub(crate) fn next(phase: Phase, now: Instant, after: Duration, r: &Readiness) -> Phase {
    let Some(term) = r.leading else {
        return Phase::Active { woke: None };
    };
    let ready = r.idle >= after && r.caught_up && r.peers_ready;
    match phase {
        Phase::Active { .. } if ready => Phase::Quiescing { since: now, term },
        Phase::Active { woke } => Phase::Active { woke },
        Phase::Quiescing { term: t, .. } if t != term || !ready => Phase::Active { woke: None },
        Phase::Quiescing { .. } if r.heard_since => Phase::Quiet { term },
        Phase::Quiescing { since, term } => Phase::Quiescing { since, term },
        Phase::Quiet { term: t } if t != term => Phase::Active { woke: None },
        Phase::Quiet { term } => Phase::Quiet { term },
    }
}

/// What this node knows of a peer from its pings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PeerState {
    /// Not answered yet, and not for long enough to suspect it.
    Unknown,
    /// Answered within the suspicion window; `quiesced` when its last answer
    /// named the shard in question quiesced.
    Alive { quiesced: bool },
    /// No answer for the suspicion window.
    Suspect,
}

/// Whether a node that does not lead a shard (by Raft's state) runs its
/// election timer: always, unless the leader it knows of is another node
/// that answers pings and names the shard quiesced, or has not been heard
/// from yet (at start, until its first answer or suspicion).
pub(crate) fn follower_ticks(
    me: NodeId,
    alone: bool,
    leader: Option<NodeId>,
    peer: impl Fn(NodeId) -> PeerState,
) -> bool {
    match leader {
        _ if alone => true,
        None => true,
        Some(l) if l == me => true,
        Some(l) => match peer(l) {
            PeerState::Unknown => false,
            PeerState::Alive { quiesced } => !quiesced,
            PeerState::Suspect => true,
        },
    }
}

/// A shard's quiescence, shared by its handle (which touches it on every
/// request), its pulse (which moves the phase) and the node's liveness
/// (which reads it for peers).
pub(crate) struct Quiet {
    base: Instant,
    /// Milliseconds after `base` of the last request.
    touched_ms: AtomicU64,
    /// The phase is not `Active` (read on every request).
    asleep: AtomicBool,
    wake: Notify,
    phase: watch::Sender<Phase>,
    /// Where this shard's announcement is kept for the pings' answers.
    announced: Option<(std::sync::Arc<Announced>, ShardId)>,
}

impl Quiet {
    /// A shard's quiescence; `announced` keeps its announcement for the
    /// node's ping answers (none for a group that never quiesces).
    pub fn new(announced: Option<(std::sync::Arc<Announced>, ShardId)>) -> Quiet {
        Quiet {
            base: Instant::now(),
            touched_ms: AtomicU64::new(0),
            asleep: AtomicBool::new(false),
            wake: Notify::new(),
            phase: watch::Sender::new(Phase::Active { woke: None }),
            announced,
        }
    }

    /// A request reached the shard at `now`: it is not idle, and wakes if it
    /// quiesced.
    pub fn touch(&self, now: Instant) {
        let ms = u64::try_from(now.saturating_duration_since(self.base).as_millis()).unwrap_or(0);
        self.touched_ms.store(ms, Ordering::Relaxed);
        if self.asleep.load(Ordering::Acquire) {
            self.wake.notify_one();
        }
    }

    /// How long before `now` the last request came.
    pub fn idle(&self, now: Instant) -> Duration {
        let touched = self.base + Duration::from_millis(self.touched_ms.load(Ordering::Relaxed));
        now.saturating_duration_since(touched)
    }

    /// Resolves on the next wake (a request while asleep).
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Changes of the phase, for the leadership watch.
    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// Moves to `phase`. A [`Phase::Quiescing`] gets its `since` here,
    /// after peers can see the announcement: a ping answered later than
    /// `since` (its time read before the answer) saw it.
    pub fn set(&self, mut phase: Phase) {
        if let Phase::Quiescing { term, .. } = phase {
            self.store(phase);
            phase = Phase::Quiescing {
                since: Instant::now(),
                term,
            };
        }
        self.store(phase);
    }

    fn store(&self, phase: Phase) {
        self.asleep.store(phase.announced(), Ordering::Release);
        if let Some((set, shard)) = &self.announced {
            set.set(*shard, phase.announced());
        }
        self.phase.send_if_modified(|p| {
            let was = matches!(p, Phase::Quiet { .. });
            let is = matches!(phase, Phase::Quiet { .. });
            if was != is {
                crate::telemetry::metrics::raft_quiesced(is);
            }
            let changed = *p != phase;
            *p = phase;
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: Duration = Duration::from_secs(1);

    fn ready(term: u64) -> Readiness {
        Readiness {
            leading: Some(term),
            idle: AFTER,
            caught_up: true,
            peers_ready: true,
            heard_since: false,
        }
    }

    #[test]
    fn an_idle_caught_up_leader_announces_before_it_goes_quiet() {
        let t0 = Instant::now();
        let p = next(Phase::Active { woke: None }, t0, AFTER, &ready(3));
        assert_eq!(p, Phase::Quiescing { since: t0, term: 3 });
        // Not every peer heard of it yet: heartbeats go on.
        let p = next(p, t0 + AFTER, AFTER, &ready(3));
        assert_eq!(p, Phase::Quiescing { since: t0, term: 3 });
        let heard = Readiness {
            heard_since: true,
            ..ready(3)
        };
        assert_eq!(next(p, t0 + AFTER, AFTER, &heard), Phase::Quiet { term: 3 });
    }

    #[test]
    fn a_leader_with_requests_lagging_followers_or_silent_peers_stays_active() {
        let t0 = Instant::now();
        let active = Phase::Active { woke: None };
        for r in [
            Readiness {
                idle: AFTER / 2,
                ..ready(1)
            },
            Readiness {
                caught_up: false,
                ..ready(1)
            },
            Readiness {
                peers_ready: false,
                ..ready(1)
            },
        ] {
            assert_eq!(next(active, t0, AFTER, &r), active);
            // And an announcement is taken back.
            let announced = Phase::Quiescing { since: t0, term: 1 };
            let r = Readiness {
                heard_since: true,
                ..r
            };
            assert_eq!(next(announced, t0, AFTER, &r), active);
        }
    }

    #[test]
    fn leadership_lost_or_a_new_term_ends_quiescence() {
        let t0 = Instant::now();
        let not_leading = Readiness {
            leading: None,
            ..ready(2)
        };
        for p in [
            Phase::Quiet { term: 2 },
            Phase::Quiescing { since: t0, term: 2 },
        ] {
            assert_eq!(
                next(p, t0, AFTER, &not_leading),
                Phase::Active { woke: None }
            );
            assert_eq!(next(p, t0, AFTER, &ready(3)), Phase::Active { woke: None });
        }
        assert_eq!(
            next(Phase::Quiet { term: 2 }, t0, AFTER, &ready(2)),
            Phase::Quiet { term: 2 }
        );
    }

    #[test]
    fn only_quiet_in_the_same_term_or_a_recent_wake_excuses_a_lapse() {
        let t0 = Instant::now();
        let w = Duration::from_millis(600);
        assert!(Phase::Quiet { term: 4 }.excuses(t0, 4, w));
        assert!(!Phase::Quiet { term: 4 }.excuses(t0, 5, w));
        let woke = Phase::Active { woke: Some(t0) };
        assert!(woke.excuses(t0 + w / 2, 4, w));
        assert!(!woke.excuses(t0 + w, 4, w));
        assert!(!Phase::Active { woke: None }.excuses(t0, 4, w));
        // Announcing is not quiet yet: heartbeats still renew the lease.
        assert!(!Phase::Quiescing { since: t0, term: 4 }.excuses(t0, 4, w));
    }

    #[test]
    fn a_follower_stops_its_timer_only_for_a_live_leader_that_quiesced() {
        let me = 1;
        let peer = |state| move |_| state;
        let quiet = PeerState::Alive { quiesced: true };
        let busy = PeerState::Alive { quiesced: false };
        assert!(!follower_ticks(me, false, Some(2), peer(quiet)));
        assert!(follower_ticks(me, false, Some(2), peer(busy)));
        assert!(follower_ticks(me, false, Some(2), peer(PeerState::Suspect)));
        // Not yet heard from: wait for its answer rather than campaign
        // against a leader that may be quiet (a restarted node).
        assert!(!follower_ticks(
            me,
            false,
            Some(2),
            peer(PeerState::Unknown)
        ));
        // No leader, this node as leader by its vote, a single voter: tick.
        assert!(follower_ticks(me, false, None, peer(quiet)));
        assert!(follower_ticks(me, false, Some(me), peer(quiet)));
        assert!(follower_ticks(me, true, Some(2), peer(quiet)));
    }

    #[test]
    fn a_touch_wakes_only_an_asleep_shard_and_resets_idleness() {
        let q = Quiet::new(None);
        let t = Instant::now() + Duration::from_secs(5);
        q.touch(t);
        assert!(q.idle(t) < Duration::from_millis(2));
        assert!(q.idle(t + AFTER) >= AFTER - Duration::from_millis(1));
        q.set(Phase::Quiet { term: 1 });
        q.touch(t);
        // The wake was stored as a permit: it resolves at once.
        let woken = futures_util::FutureExt::now_or_never(q.woken());
        assert!(woken.is_some());
    }
}
