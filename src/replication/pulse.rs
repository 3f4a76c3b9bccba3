//! A shard leader's pulse: the heartbeat rounds that renew its lease, and
//! quiescence when the shard is idle (`quiet.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;
use openraft::error::RaftError;
use tokio_util::sync::CancellationToken;

use super::lease::Lease;
use super::liveness::Liveness;
use super::quiet::{self, Phase, Quiet, Readiness};
use super::types::{NodeId, Raft};

/// How a shard's pulse runs.
pub(crate) struct Pulse {
    pub me: NodeId,
    pub raft: Raft,
    /// The period of the heartbeat rounds.
    pub every: Duration,
    pub held: Arc<Lease>,
    /// The followers' leader lease (`election_timeout_max`).
    pub lease: Duration,
    pub quiet: Arc<Quiet>,
    /// Quiesce after this long without requests (`None`: never).
    pub quiesce_after: Option<Duration>,
    pub liveness: Arc<Liveness>,
}

impl Pulse {
    /// Confirms this node's leadership with a quorum every `every` while
    /// Raft says it leads, until `stop`, and extends its [`Lease`] by each
    /// round a quorum acknowledged: `lease` from the moment the round began.
    /// Between rounds it decides whether the shard quiesces; while quiet it
    /// sends nothing and waits for a request.
    ///
    /// A round is openraft's read-index check (`get_read_log_id`):
    /// heartbeats to every voter, answered once a quorum acknowledged them
    /// in this term. Those heartbeats also keep the followers' election
    /// timers from firing. openraft 0.9 uses its `heartbeat_interval` both
    /// as the heartbeat period and as the timeout of every AppendEntries
    /// (and read-index round); Roost sets that to the replication timeout
    /// (`ReplicationOptions::raft_timeout_ms`, half the shortest election
    /// timeout), so these rounds are the heartbeats at the short period;
    /// openraft's own still go out at the longer one.
    pub(crate) async fn run(self, stop: CancellationToken) {
        let mut server = self.raft.server_metrics();
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut led = false;
        loop {
            // A follower waits for Raft to make it leader, with no timer.
            let leading = server.borrow_and_update().state == ServerState::Leader;
            if !leading {
                led = false;
                self.quiet.set(Phase::Active { woke: None });
                tokio::select! {
                    _ = stop.cancelled() => return,
                    changed = server.changed() => if changed.is_err() { return },
                }
                continue;
            }
            if !led {
                // A new leader's timers run (a follower's may have been
                // stopped for its quiet predecessor).
                led = true;
                self.raft.runtime_config().tick(true);
            }
            match self.quiet.phase() {
                Phase::Quiet { .. } => {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        () = self.quiet.woken() => {}
                        changed = server.changed() => if changed.is_err() { return },
                    }
                    self.wake();
                    tick.reset();
                }
                Phase::Quiescing { .. } => tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                    () = self.quiet.woken() => {}
                },
                Phase::Active { .. } => tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                },
            }
            // Raft's own state, not the lease-checked leadership: a leader
            // that lost its quorum's acknowledgement must keep trying.
            if server.borrow().state != ServerState::Leader {
                continue;
            }
            if !self.round(&stop).await {
                return;
            }
            self.decide();
        }
    }

    /// Leaves quiet: openraft's timers run again (its own heartbeats), and
    /// the round that follows at once renews the lease.
    fn wake(&self) {
        if let Phase::Quiet { .. } = self.quiet.phase() {
            self.quiet.set(Phase::Active {
                woke: Some(Instant::now()),
            });
        }
        self.raft.runtime_config().tick(true);
    }

    /// One heartbeat round; `false` once Raft has stopped.
    async fn round(&self, stop: &CancellationToken) -> bool {
        let started = Instant::now();
        let round = tokio::select! {
            _ = stop.cancelled() => return false,
            round = self.raft.get_read_log_id() => round,
        };
        match round {
            // The read log id is at least this leader's first entry of its
            // term: the term the round confirmed leadership in.
            Ok((Some(read), _)) => self.held.extend(started, self.lease, read.leader_id.term),
            Ok((None, _)) => {}
            Err(RaftError::Fatal(_)) => return false,
            Err(_) => {}
        }
        true
    }

    /// Moves the shard's phase after a round; going quiet stops openraft's
    /// timers here (the followers stop theirs on their next ping).
    fn decide(&self) {
        let Some(after) = self.quiesce_after else {
            return;
        };
        let now = Instant::now();
        let phase = self.quiet.phase();
        let readiness = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let leading = (m.state == ServerState::Leader && m.current_leader == Some(self.me))
                .then_some(m.current_term);
            let peers: Vec<NodeId> = m
                .membership_config
                .membership()
                .voter_ids()
                .filter(|id| *id != self.me)
                .collect();
            let last = m.last_log_index;
            let caught_up = m.last_applied.map(|l| l.index) == last
                && m.replication
                    .as_ref()
                    .is_some_and(|r| r.values().all(|matched| matched.map(|l| l.index) == last));
            Readiness {
                leading,
                idle: self.quiet.idle(now),
                caught_up,
                peers_ready: self.liveness.ready(peers.iter().copied(), now),
                heard_since: match phase {
                    Phase::Quiescing { since, .. } => self.liveness.heard_since(peers, since),
                    _ => false,
                },
            }
        };
        let next = quiet::next(phase, now, after, &readiness);
        if next == phase {
            return;
        }
        self.quiet.set(next);
        if let Phase::Quiet { .. } = next {
            tracing::debug!("shard quiesced");
            self.raft.runtime_config().tick(false);
        }
    }
}
