//! Mirrors each shard's Raft state into metrics (`roost_raft_*{shard}`).
//!
//! Leadership and term follow openraft's server-metrics watch, which changes
//! only on elections and membership changes, so every leader change is
//! counted. Log positions change with every write; they are sampled at most
//! every [`SAMPLE_EVERY`] instead (the commit index through a short request
//! to the Raft core, which does not publish it), and not at all while
//! nothing changes (a quiesced shard costs no wake-up here).

use std::time::Duration;

use openraft::ServerState;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::types::{NodeId, Raft};
use crate::id::ShardId;
use crate::telemetry::metrics::{LogPositions, ShardMetrics};

/// How often log positions are sampled.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Runs until `stop` is cancelled or the Raft instance shuts down.
pub(crate) async fn observe(shard: ShardId, node_id: NodeId, raft: Raft, stop: CancellationToken) {
    let metrics = ShardMetrics::new(shard);
    let mut server = raft.server_metrics();
    let mut known_leader = server.borrow().current_leader;
    let mut data = raft.data_metrics();
    // When the next sample is due: set once the log moved.
    let mut due = Some(Instant::now());
    let mut last = Instant::now();
    loop {
        {
            let s = server.borrow_and_update();
            if s.current_leader != known_leader {
                metrics.leader_changed();
                known_leader = s.current_leader;
            }
            let leads = s.state == ServerState::Leader && s.current_leader == Some(node_id);
            metrics.leadership(leads, s.vote.leader_id.term);
        }
        let sample = async move {
            match due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            changed = server.changed() => if changed.is_err() { break },
            changed = data.changed(), if due.is_none() => {
                if changed.is_err() { break }
                due = Some((last + SAMPLE_EVERY).max(Instant::now()));
            }
            () = sample => {
                data.borrow_and_update();
                due = None;
                last = Instant::now();
                if !sample_log(&raft, &metrics).await {
                    break;
                }
            }
        }
    }
    // A stopped shard is led by no one here.
    let term = server.borrow().vote.leader_id.term;
    metrics.leadership(false, term);
}

/// Samples the log positions; `false` once Raft has stopped.
async fn sample_log(raft: &Raft, metrics: &ShardMetrics) -> bool {
    // The commit index first: read after it, the applied index is never
    // older, so the lag is never overstated.
    let Ok(committed) = raft
        .with_raft_state(|st| st.committed.map(|l| l.index))
        .await
    else {
        return false;
    };
    let data = raft.data_metrics().borrow().clone();
    let index = |id: Option<openraft::LogId<NodeId>>| id.map_or(0, |l| l.index);
    metrics.log(LogPositions {
        last_log: index(data.last_log),
        committed: committed.unwrap_or(0),
        applied: index(data.last_applied),
        purged: index(data.purged),
        snapshot: index(data.snapshot),
    });
    true
}
