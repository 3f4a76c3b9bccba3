//! What the control plane observes of the Raft groups on this node: the
//! metadata leader, the groups it leads, and each shard's leader with its
//! members (what `Cluster.Watch` reports). Reads Raft metrics only; never
//! changes anything.

use std::sync::Arc;

use crate::id::ShardId;
use crate::ring::{NodeId, Placement};

use super::Control;

impl Control {
    /// The address of the metadata group's leader, if known.
    pub fn meta_leader_addr(&self) -> Option<String> {
        let metrics = self.inner.meta.raft().metrics();
        let m = metrics.borrow();
        let leader = m.current_leader?;
        m.membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
    }

    /// Every Raft group on this node: the metadata group first, then the
    /// object shards.
    pub fn groups(&self) -> Vec<crate::replication::ShardHandle> {
        std::iter::once(&self.inner.meta)
            .chain(self.inner.replicas.shards())
            .cloned()
            .collect()
    }

    /// Shards this node leads right now (the metadata group included).
    pub fn led_shards(&self) -> Vec<(ShardId, Vec<NodeId>)> {
        std::iter::once(&self.inner.meta)
            .chain(self.inner.replicas.shards())
            .filter(|g| g.is_leader())
            .map(|g| {
                let metrics = g.raft().metrics();
                let voters = metrics
                    .borrow()
                    .membership_config
                    .membership()
                    .voter_ids()
                    .collect();
                (g.id(), voters)
            })
            .collect()
    }

    /// The leader of every object shard this node has a view of, with the
    /// voters and learners of the groups this node leads. A node that has
    /// left a shard's group (its replica moved away) hears nothing more
    /// from that group and its last-known leader goes stale (often itself,
    /// if it led the change that removed it), so it names no leader for it.
    /// Nor does a learner the ring does not want in the group: it is on
    /// its way out, and once removed it is never told (a removed learner,
    /// unlike a removed voter, never campaigns, so its stale leader would
    /// otherwise stay forever).
    pub fn leaders(&self) -> Vec<ShardStatus> {
        let me = self.inner.opts.node_id;
        let placement = self.placement();
        self.inner
            .replicas
            .shards()
            .iter()
            .filter_map(|g| {
                let metrics = g.raft().metrics();
                let m = metrics.borrow();
                let membership = m.membership_config.membership();
                let voter = membership.voter_ids().any(|v| v == me);
                let wanted_learner = membership.learner_ids().any(|l| l == me)
                    && placement.replicas(g.id()).contains(&me);
                if !voter && !wanted_learner {
                    return None;
                }
                let leader = m.current_leader?;
                if leader == me && !g.is_leader() {
                    // Raft still says us, but no quorum acknowledged us
                    // within the lease (cut off from the group): whoever
                    // leads now, it is not certain to be this node.
                    return None;
                }
                let (voters, learners) = if leader == me && g.is_leader() {
                    (
                        membership.voter_ids().collect(),
                        membership.learner_ids().collect(),
                    )
                } else {
                    (Vec::new(), Vec::new())
                };
                Some(ShardStatus {
                    shard: g.id(),
                    leader,
                    voters,
                    learners,
                })
            })
            .collect()
    }
}

/// One object shard's group as a node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardStatus {
    pub shard: ShardId,
    /// The leader this node knows of (a hint: may be stale).
    pub leader: NodeId,
    /// The group's voters and learners, when this node is its leader;
    /// empty otherwise.
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
}

/// This node's place in one shard group it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    pub shard: ShardId,
    /// The group's leader as this node last heard.
    pub leader: Option<NodeId>,
    /// A voter (else a learner still catching up).
    pub voter: bool,
}

/// How far one follower is behind in a group this node leads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowerProgress {
    pub shard: ShardId,
    pub leader_last_index: u64,
    /// The last index the leader knows the follower holds.
    pub matched_index: Option<u64>,
}

impl Control {
    /// Where the ring places every object shard's replicas among the
    /// directory's active nodes now.
    fn placement(&self) -> Arc<Placement> {
        let active = self.inner.directory.borrow().active();
        self.placement_over(active)
    }

    /// The placement of every shard over `active`, computed again only when
    /// the active nodes change.
    pub(super) fn placement_over(
        &self,
        active: std::collections::BTreeSet<NodeId>,
    ) -> Arc<Placement> {
        let mut cached = self
            .inner
            .placement
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((nodes, placement)) = cached.as_ref()
            && *nodes == active
        {
            return placement.clone();
        }
        let placement = Arc::new(Placement::compute(
            &active,
            self.inner.replicas.shard_count(),
            self.inner.opts.replication,
        ));
        *cached = Some((active, placement.clone()));
        placement
    }

    /// Whether each group this node's Raft leads has a quorum behind it
    /// (the one sign of a leader cut off from its peers), as gauges set
    /// when they change.
    pub(super) fn report_quorum_acked(&self) {
        let mut acked = self.inner.acked.lock().unwrap_or_else(|p| p.into_inner());
        for group in std::iter::once(&self.inner.meta).chain(self.inner.replicas.shards()) {
            let now = group.is_leader();
            if acked.insert(group.id(), now) != Some(now) {
                crate::telemetry::metrics::raft_quorum_acked(group.id(), now);
            }
        }
    }

    /// The object shard groups this node is a member of.
    pub fn memberships(&self) -> Vec<Membership> {
        let me = self.inner.opts.node_id;
        self.inner
            .replicas
            .shards()
            .iter()
            .filter_map(|g| {
                let metrics = g.raft().metrics();
                let m = metrics.borrow();
                let membership = m.membership_config.membership();
                let voter = membership.voter_ids().any(|v| v == me);
                if !voter && !membership.learner_ids().any(|l| l == me) {
                    return None;
                }
                Some(Membership {
                    shard: g.id(),
                    leader: m.current_leader,
                    voter,
                })
            })
            .collect()
    }

    /// Which object shards the ring places on this node now.
    pub fn placed_here(&self) -> Vec<ShardId> {
        let me = self.inner.opts.node_id;
        let placement = self.placement();
        (0..self.inner.replicas.shard_count())
            .filter(|s| placement.replicas(*s).contains(&me))
            .collect()
    }

    /// How far `node` is behind in each object shard group this node leads.
    pub fn progress_of(&self, node: NodeId) -> Vec<FollowerProgress> {
        self.inner
            .replicas
            .shards()
            .iter()
            .filter(|g| g.is_leader())
            .map(|g| {
                let metrics = g.raft().metrics();
                let m = metrics.borrow();
                let matched_index = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&node).cloned().flatten())
                    .map(|log| log.index);
                FollowerProgress {
                    shard: g.id(),
                    leader_last_index: m.last_log_index.unwrap_or(0),
                    matched_index,
                }
            })
            .collect()
    }
}
