//! The leadership watch of a shard: whether, and in which epoch, this node
//! leads it, from Raft's metrics and the leader lease (see
//! [`watch_leadership`]). The object layer starts and ends executors, and
//! moves sockets, by the epoch it publishes.

use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, RaftMetrics, ServerState};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::lease::Lease;
use super::pipeline;
use super::quiet::Phase;
use super::shard::excuse_window;
use super::types::NodeId;

/// Mirrors Raft's metrics into `leadership` until `stop` or Raft ends: this
/// node's leadership epoch ([`epoch_term`]), or `None`.
///
/// A leader counts as one only while a quorum of its group acknowledged it
/// within `lease` (its followers' leader lease: after that long without
/// hearing from it they may elect another). openraft 0.9 has no
/// check-quorum, so a leader cut off from its peers would otherwise go on
/// believing it leads, taking calls it can never commit; this way it
/// refuses them (`NotOwner`, which callers retry elsewhere) and stops naming
/// itself leader. Safety does not depend on it: its writes cannot commit and
/// its reads wait for a quorum either way.
///
/// The value is an epoch, not a flag: leadership lost and regained (a new
/// term, or the lease regained in the same term) is a new epoch, which ends
/// everything bound to the old one (executors, and with them the sockets
/// they hold, which move).
///
/// A lapse of the lease shorter than `lease` more (a starved process, a
/// round that came back late) is not published: the epoch goes on, and the
/// lease regained in the same term continues it. That is safe because
/// nothing relies on the watch for safety: an executor admits an event only
/// while the lease holds, read with the clock (`ShardHandle::leader_epoch`;
/// it waits out a lapse), and writes and reads commit through a quorum. A
/// lease regained in the same term means no other node led in between (a
/// quorum acknowledged this node's term after the lapse; a candidate of a
/// later term needs a quorum that would have refused it). Publishing every
/// lapse ended every executor of the shard and moved all its sockets each
/// time, which on an oversubscribed machine meant several times a second.
pub(crate) async fn watch_leadership(
    node_id: NodeId,
    mut metrics: watch::Receiver<RaftMetrics<NodeId, BasicNode>>,
    lease: Duration,
    held: Arc<Lease>,
    leadership: watch::Sender<Option<u64>>,
    mut quiet: watch::Receiver<Phase>,
    stop: CancellationToken,
) {
    let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
    let window = excuse_window(lease);
    // The last epoch published, to number regains of the same term.
    let mut last: Option<u64> = None;
    loop {
        let now = std::time::Instant::now();
        let phase = *quiet.borrow_and_update();
        let raft_leads;
        let term;
        let leader = {
            let m = metrics.borrow_and_update();
            raft_leads = m.state == ServerState::Leader;
            term = m.current_term;
            let alone = m.membership_config.membership().voter_ids().count() <= 1;
            held.set_alone(alone);
            // Within the grace of an epoch already published, a lapse
            // does not end it (see above).
            let publishing = leadership
                .borrow()
                .is_some_and(|e| pipeline::epoch_term(e) == m.current_term);
            let grace = if publishing { lease_ms } else { 0 };
            // A quiesced shard's lease lapses by design (`quiet.rs`).
            let excused = publishing && phase.excuses(now, m.current_term, window);
            let leads = m.state == ServerState::Leader
                && m.current_leader == Some(node_id)
                && (alone
                    || excused
                    || (m
                        .millis_since_quorum_ack
                        .is_some_and(|ms| ms <= lease_ms + grace)
                        && held.holds(
                            now.checked_sub(Duration::from_millis(grace)).unwrap_or(now),
                            m.current_term,
                        )));
            leads.then_some(m.current_term)
        };
        let leader = pipeline::next_epoch(leader, *leadership.borrow(), &mut last);
        leadership.send_if_modified(|current| {
            let changed = *current != leader;
            *current = leader;
            changed
        });
        // While Raft says this node leads, look again when the lease would
        // run out (or, not leading by the lease alone, soon: a renewal may
        // bring it back). A follower waits for Raft's metrics alone.
        let recheck = match held.deadline(term) {
            _ if !raft_leads => None,
            Some(d) if leader.is_some() => {
                let grace = match *leadership.borrow() {
                    Some(_) => lease,
                    None => Duration::ZERO,
                };
                Some((d + grace).max(now) + Duration::from_millis(1))
            }
            _ => Some(now + lease / 4),
        };
        // Quiet, nothing changes until a wake; woken, the excuse holds for
        // its window.
        let recheck = match phase {
            Phase::Quiet { .. } if leader.is_some() => None,
            Phase::Active { woke: Some(w) } if w + window > now => {
                recheck.map(|r| r.max(w + window + Duration::from_millis(1)))
            }
            _ => recheck,
        };
        let timer = async move {
            match recheck {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            changed = metrics.changed() => if changed.is_err() { break },
            changed = quiet.changed() => if changed.is_err() { break },
            () = timer => {}
        }
    }
    leadership.send_if_modified(|current| current.take().is_some());
}
