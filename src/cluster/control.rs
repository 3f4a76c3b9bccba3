//! The control loop every node runs: bootstrap or join, then keep the
//! metadata group and every shard group it leads in line with the
//! directory and the ring, and hand leadership to preferred leaders.
//!
//! Draining (scale-in): a draining node is not on the ring, so every group
//! it is in replaces it (learner first, then one joint change), and a
//! caught-up active voter of each group it leads takes the leadership
//! (the successor triggers the election itself) before the change that
//! votes the draining node out, so that no group is left without a leader
//! and the drain fails no request. `remove` then forgets
//! it, which only a draining node that no longer votes in the metadata
//! group may be.
//!
//! Decisions come from `plan` (pure); this file only observes Raft and
//! carries the steps out, one per shard at a time.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::directory::{self, Directory, NodeRecord, NodeState};
use super::plan::{self, Step};
use crate::id::ShardId;
use crate::replication::{Replicas, ShardHandle};
use crate::ring::{NodeId, Placement};
use crate::storage::Db;

mod observe;

pub use observe::{FollowerProgress, Membership, ShardStatus};

/// How often the loop looks at the cluster while a membership step or a
/// leadership claim is under way.
const TICK: Duration = Duration::from_millis(200);
/// How often it looks when nothing was left to do (the directory is still
/// read every `TICK`, and a change of it is looked at at once): every look
/// reads every shard's membership, a large part of an idle node's CPU at
/// 1,024 shards.
const SETTLED_TICK: Duration = Duration::from_secs(1);
/// A node waits this long after start before it claims preferred leadership.
const SETTLE: Duration = Duration::from_secs(2);
/// At most one election per shard this often.
const ELECT_EVERY: Duration = Duration::from_secs(5);
/// At most one election per shard this often to take it from a draining
/// leader.
const TAKE_OVER_EVERY: Duration = Duration::from_secs(1);
/// Membership steps of object shards in flight at once: a node joining a
/// cluster of 1,024 shards is added to them a few at a time, so the shards
/// not being changed stay quiet (`replication/quiet.rs`) instead of all
/// heartbeating at once and timing out each other's calls.
const MAX_STEPS: usize = 16;
/// Preferred-leadership claims of object shards started per tick, for the
/// same reason.
const MAX_CLAIMS_PER_TICK: usize = 16;
/// How long a draining leader holds back the change that votes it out of a
/// group, waiting for an active voter to take the leadership over; then it
/// goes ahead (a group whose other voters cannot take over, e.g. none has
/// caught up, still drains).
const HAND_OVER_WAIT: Duration = Duration::from_secs(10);

/// Errors of the control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not the metadata leader (leader: {leader:?})")]
    NotLeader { leader: Option<String> },
    #[error("replication: {0}")]
    Replication(#[from] crate::replication::Error),
    #[error("raft: {0}")]
    Raft(String),
    #[error("storage: {0}")]
    Storage(#[from] crate::storage::Error),
    #[error("encode directory record: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("node {0} is not in the directory")]
    UnknownNode(NodeId),
    /// The request can never succeed as it stands.
    #[error("refused: {0}")]
    Refused(String),
    /// The request may succeed once the cluster has moved on.
    #[error("not yet: {0}")]
    NotYet(String),
}

/// The control plane's settings.
#[derive(Clone, Debug)]
pub struct ControlOptions {
    pub node_id: NodeId,
    /// Where other nodes and edges reach this node's gRPC services.
    pub advertise: String,
    /// Replicas per shard (R).
    pub replication: usize,
    /// Voters of the metadata group (the rest of the nodes are learners).
    pub meta_voters: usize,
}

/// The node's control plane.
#[derive(Clone)]
pub struct Control {
    inner: Arc<Inner>,
}

struct Inner {
    opts: ControlOptions,
    db: Db,
    replicas: Arc<Replicas>,
    meta: ShardHandle,
    directory: watch::Sender<Directory>,
    started: Instant,
    /// Shards with a membership step in progress.
    busy: Mutex<HashSet<ShardId>>,
    last_elect: Mutex<HashMap<ShardId, Instant>>,
    /// Since when this (draining) node has held back voting itself out of
    /// each group it leads, and whether it said it gave up waiting.
    holding: Mutex<HashMap<ShardId, (Instant, bool)>>,
    /// The placement of the last tick, by the active nodes it was computed for.
    placement: Mutex<Option<(BTreeSet<NodeId>, Arc<Placement>)>>,
    /// Each group's last `roost_raft_quorum_acked`, set only on change.
    acked: Mutex<HashMap<ShardId, bool>>,
}

impl Control {
    pub fn new(
        opts: ControlOptions,
        db: Db,
        replicas: Arc<Replicas>,
        meta: ShardHandle,
    ) -> Control {
        let (directory, _) = watch::channel(Directory::default());
        Control {
            inner: Arc::new(Inner {
                opts,
                db,
                replicas,
                meta,
                directory,
                started: Instant::now(),
                busy: Mutex::new(HashSet::new()),
                last_elect: Mutex::new(HashMap::new()),
                holding: Mutex::new(HashMap::new()),
                placement: Mutex::new(None),
                acked: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The directory as this node last read it; changes are pushed.
    pub fn directory(&self) -> watch::Receiver<Directory> {
        self.inner.directory.subscribe()
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.opts.node_id
    }

    pub fn replication(&self) -> usize {
        self.inner.opts.replication
    }

    /// Whether this node has joined a cluster before (its metadata group
    /// has state), so it must neither bootstrap nor join again.
    pub async fn is_member(&self) -> Result<bool, Error> {
        self.inner
            .meta
            .raft()
            .is_initialized()
            .await
            .map_err(|e| Error::Raft(e.to_string()))
    }

    /// Starts a new cluster with this node as its only member: the
    /// metadata group and every shard group get this node as sole voter.
    pub async fn bootstrap(&self) -> Result<(), Error> {
        let me = self.inner.opts.node_id;
        let members = BTreeMap::from([(me, BasicNode::new(&self.inner.opts.advertise))]);
        let groups = std::iter::once(&self.inner.meta).chain(self.inner.replicas.shards());
        for group in groups {
            match group.raft().initialize(members.clone()).await {
                Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(Error::Raft(e.to_string())),
            }
        }
        let mut leader = self.inner.meta.leadership();
        let _ =
            tokio::time::timeout(Duration::from_secs(10), leader.wait_for(|l| l.is_some())).await;
        self.record(NodeRecord {
            id: me,
            addr: self.inner.opts.advertise.clone(),
            state: NodeState::Active,
        })
        .await?;
        tracing::info!(node_id = me, "bootstrapped a new cluster");
        Ok(())
    }

    /// Admits `node` (run on the metadata leader): it becomes a learner of
    /// the metadata group, then a member of the directory.
    pub async fn admit(&self, node: NodeRecord) -> Result<(), Error> {
        if !self.inner.meta.is_leader() {
            return Err(Error::NotLeader {
                leader: self.meta_leader_addr(),
            });
        }
        let known = self.inner.directory.borrow().nodes.get(&node.id).cloned();
        if known.as_ref().is_some_and(|k| k.addr == node.addr) {
            return Ok(());
        }
        self.inner
            .meta
            .raft()
            .add_learner(node.id, BasicNode::new(&node.addr), false)
            .await
            .map_err(|e| self.raft_error(e))?;
        self.record(node).await
    }

    /// Marks `id` as draining (its replicas move away) or active again.
    /// Refuses to drain a node when fewer than R active nodes would remain,
    /// so that every shard can keep R voters.
    pub async fn set_state(&self, id: NodeId, state: NodeState) -> Result<(), Error> {
        if !self.inner.meta.is_leader() {
            return Err(Error::NotLeader {
                leader: self.meta_leader_addr(),
            });
        }
        let dir = self.refresh()?;
        let Some(mut node) = dir.nodes.get(&id).cloned() else {
            return Err(Error::UnknownNode(id));
        };
        if node.state == state {
            return Ok(());
        }
        if state == NodeState::Draining {
            let remaining = dir.active().len().saturating_sub(1);
            if remaining < self.inner.opts.replication {
                return Err(Error::Refused(format!(
                    "draining node {id} would leave {remaining} active nodes, fewer than the {} replicas every shard keeps",
                    self.inner.opts.replication
                )));
            }
        }
        node.state = state;
        tracing::info!(node_id = id, ?state, "node state changes");
        self.record(node).await
    }

    /// Forgets node `id` (run on the metadata leader): it leaves the
    /// directory, then the metadata group. Only a draining node that no
    /// longer votes in the metadata group may go; the caller first waits
    /// until no shard group has it as a member (`drain`). Forgetting an
    /// unknown node succeeds, so a retried call is harmless.
    pub async fn remove(&self, id: NodeId) -> Result<(), Error> {
        if !self.inner.meta.is_leader() {
            return Err(Error::NotLeader {
                leader: self.meta_leader_addr(),
            });
        }
        let dir = self.refresh()?;
        let Some(node) = dir.nodes.get(&id) else {
            return Ok(());
        };
        if node.state != NodeState::Draining {
            return Err(Error::Refused(format!(
                "node {id} is active: drain it before removing it"
            )));
        }
        let meta_voter = {
            let metrics = self.inner.meta.raft().metrics();
            let m = metrics.borrow();
            m.membership_config
                .membership()
                .voter_ids()
                .any(|v| v == id)
        };
        if meta_voter {
            return Err(Error::NotYet(format!(
                "node {id} still votes in the metadata group; retry once it is replaced"
            )));
        }
        let commit = self.inner.meta.propose(directory::remove_node(id)).await?;
        commit.await?;
        self.refresh()?;
        tracing::info!(node_id = id, "node removed from the directory");
        Ok(())
    }

    async fn record(&self, node: NodeRecord) -> Result<(), Error> {
        let commit = self.inner.meta.propose(directory::put_node(&node)?).await?;
        commit.await?;
        self.refresh()?;
        Ok(())
    }

    fn raft_error<E: std::fmt::Display>(&self, e: E) -> Error {
        if !self.inner.meta.is_leader() {
            Error::NotLeader {
                leader: self.meta_leader_addr(),
            }
        } else {
            Error::Raft(e.to_string())
        }
    }

    /// Re-reads the directory from this node's replica of the metadata
    /// group and publishes it if it changed.
    fn refresh(&self) -> Result<Directory, Error> {
        let dir = Directory::read(&self.inner.db)?;
        self.inner.directory.send_if_modified(|current| {
            if *current == dir {
                false
            } else {
                *current = dir.clone();
                true
            }
        });
        Ok(dir)
    }

    /// Runs the loop until `shutdown`: reads the directory every [`TICK`],
    /// and looks at every group then too while anything is under way or
    /// the directory changed, else every [`SETTLED_TICK`].
    pub async fn run(self, shutdown: CancellationToken) {
        let mut directory = self.inner.directory.subscribe();
        let mut busy = true;
        let mut looked = Instant::now();
        loop {
            if let Err(e) = self.refresh() {
                tracing::warn!(error = %e, "control loop: read the directory");
            }
            let moved = directory.has_changed().unwrap_or(false);
            directory.borrow_and_update();
            if busy || moved || looked.elapsed() >= SETTLED_TICK {
                looked = Instant::now();
                // Whether each group this node's Raft leads has a quorum
                // behind it: the one sign of a leader cut off from its peers.
                self.report_quorum_acked();
                busy = match self.tick() {
                    Ok(busy) => busy,
                    Err(e) => {
                        tracing::warn!(error = %e, "control loop");
                        true
                    }
                };
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// One look at the cluster; whether anything is still under way
    /// (a membership step to take or running, a leadership claimed).
    fn tick(&self) -> Result<bool, Error> {
        let dir = self.refresh()?;
        if dir.nodes.is_empty() {
            return Ok(true);
        }
        let alive: BTreeSet<NodeId> = dir.nodes.keys().copied().collect();
        // A draining (or removed) node never campaigns, so it cannot win
        // back a leadership it handed off; it still votes, so its groups
        // keep their quorum while it is a member.
        let campaigns = dir.is_active(self.inner.opts.node_id);
        for group in std::iter::once(&self.inner.meta).chain(self.inner.replicas.shards()) {
            group.raft().runtime_config().elect(campaigns);
        }
        // The metadata group: the lowest-numbered active nodes vote; every
        // other member of the directory (draining ones too) follows as a
        // learner until it is removed, so its copy of the directory stays
        // current.
        let meta_desired: Vec<NodeId> = dir
            .active()
            .into_iter()
            .take(self.inner.opts.meta_voters.max(1))
            .collect();
        let mut busy = if self.inner.meta.is_leader() {
            self.reconcile(&self.inner.meta, &meta_desired, &alive, &alive, &dir)
        } else {
            self.claim_leadership(&self.inner.meta, &meta_desired, false, &dir)
        };
        let placement = self.placement_over(dir.active());
        let none = BTreeSet::new();
        let mut claims = MAX_CLAIMS_PER_TICK;
        for handle in self.inner.replicas.shards() {
            let desired = placement.replicas(handle.id());
            if handle.is_leader() {
                busy |= self.reconcile(handle, desired, &alive, &none, &dir);
            } else if claims == 0 {
                busy = true;
            } else if self.claim_leadership(handle, desired, true, &dir) {
                claims -= 1;
                busy = true;
            }
        }
        Ok(busy)
    }

    /// Starts the next membership step of `group` towards `desired`,
    /// unless one is already running. Learners in `keep` stay; a group
    /// that keeps learners also keeps a voter it drops as a learner.
    /// Whether a step remains (to take, held back, or running).
    fn reconcile(
        &self,
        group: &ShardHandle,
        desired: &[NodeId],
        alive: &BTreeSet<NodeId>,
        keep: &BTreeSet<NodeId>,
        dir: &Directory,
    ) -> bool {
        let (voters, learners) = {
            let metrics = group.raft().metrics();
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
            let learners: BTreeSet<NodeId> = membership.learner_ids().collect();
            (voters, learners)
        };
        // A leader that voted itself out of the group (a drained replica)
        // leads only until that change is applied, then steps down: it
        // changes nothing more (openraft refuses membership changes from a
        // leader outside the membership, and the group's next leader
        // carries on).
        if !voters.contains(&self.inner.opts.node_id) {
            return false;
        }
        let step = plan::next_step(&voters, &learners, desired, alive, keep);
        let retain = !keep.is_empty();
        if step == Step::Done {
            return false;
        }
        let shard = group.id();
        if self.holds_for_successor(shard, &step, dir) {
            return true;
        }
        {
            let mut busy = self.inner.busy.lock().unwrap_or_else(|p| p.into_inner());
            let full = shard != directory::META_SHARD && busy.len() >= MAX_STEPS;
            if full || !busy.insert(shard) {
                return true;
            }
        }
        let this = self.clone();
        let group = group.clone();
        let addr_of: BTreeMap<NodeId, String> =
            dir.nodes.values().map(|n| (n.id, n.addr.clone())).collect();
        tokio::spawn(async move {
            tracing::info!(shard, ?step, "membership step");
            let raft = group.raft();
            let result = match &step {
                Step::Done => Ok(()),
                Step::AddLearner(n) => match addr_of.get(n) {
                    Some(addr) => raft
                        .add_learner(*n, BasicNode::new(addr), true)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    None => Ok(()),
                },
                Step::Follow(n) => match addr_of.get(n) {
                    Some(addr) => raft
                        .add_learner(*n, BasicNode::new(addr), false)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    None => Ok(()),
                },
                Step::SetVoters(v) => raft
                    .change_membership(ChangeMembers::ReplaceAllVoters(v.clone()), retain)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Step::RemoveLearners(l) => raft
                    .change_membership(ChangeMembers::RemoveNodes(l.clone()), false)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            };
            if let Err(e) = result {
                tracing::warn!(shard, ?step, error = %e, "membership step failed; will retry");
            }
            this.inner
                .busy
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&shard);
        });
        true
    }

    /// Whether this node, draining, holds `step` back so that an active
    /// voter takes `shard`'s leadership first ([`plan::waits_for_successor`]),
    /// for at most [`HAND_OVER_WAIT`].
    fn holds_for_successor(&self, shard: ShardId, step: &Step, dir: &Directory) -> bool {
        let me = self.inner.opts.node_id;
        let mut holding = self.inner.holding.lock().unwrap_or_else(|p| p.into_inner());
        if !dir.is_draining(me) || !plan::waits_for_successor(step, me) {
            holding.remove(&shard);
            return false;
        }
        let (since, warned) = holding
            .entry(shard)
            .or_insert_with(|| (Instant::now(), false));
        let hold = since.elapsed() < HAND_OVER_WAIT;
        if !hold && !*warned {
            *warned = true;
            tracing::warn!(
                shard,
                "no voter took the leadership over from this draining node; voting it out while it leads"
            );
        }
        hold
    }

    /// Takes `group`'s leadership when this node should have it and is a
    /// caught-up voter: from a draining leader, the first active voter in
    /// `order` (the ring's order for the shard; then by id) takes over; from
    /// any other leader, the preferred leader (`order`'s first) takes its
    /// shard back, when `prefer`. Whether it started an election.
    fn claim_leadership(
        &self,
        group: &ShardHandle,
        order: &[NodeId],
        prefer: bool,
        dir: &Directory,
    ) -> bool {
        let me = self.inner.opts.node_id;
        if self.inner.started.elapsed() < SETTLE || dir.is_draining(me) {
            return false;
        }
        let (ready, leader, voters) = {
            let metrics = group.raft().metrics();
            let m = metrics.borrow();
            let voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
            let leader_elsewhere = m.current_leader.is_some_and(|l| l != me);
            // Caught up: everything the leader told us is applied.
            let caught_up = m.last_applied.map(|l| l.index) >= m.last_log_index;
            (
                voters.contains(&me) && leader_elsewhere && caught_up,
                m.current_leader,
                voters,
            )
        };
        if !ready {
            return false;
        }
        let leader_leaving = leader.is_some_and(|l| !dir.is_active(l));
        let (claim, every) = if leader_leaving {
            let successor = order
                .iter()
                .chain(voters.iter())
                .find(|n| voters.contains(n) && dir.is_active(**n));
            (successor == Some(&me), TAKE_OVER_EVERY)
        } else {
            (prefer && order.first() == Some(&me), ELECT_EVERY)
        };
        if !claim {
            return false;
        }
        {
            let mut last = self
                .inner
                .last_elect
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if last
                .get(&group.id())
                .is_some_and(|t| now.duration_since(*t) < every)
            {
                return false;
            }
            last.insert(group.id(), now);
        }
        let raft = group.raft().clone();
        let shard = group.id();
        tokio::spawn(async move {
            if leader_leaving {
                tracing::info!(shard, ?leader, "taking leadership from a draining node");
            } else {
                tracing::info!(shard, "claiming preferred leadership");
            }
            if let Err(e) = raft.trigger().elect().await {
                tracing::warn!(shard, error = %e, "election trigger failed");
            }
        });
        true
    }

    /// Asks Raft to hold an election for `shard` on this node (used to move
    /// leadership here from a node that stops). A draining node refuses:
    /// it must lead nothing.
    pub async fn elect(&self, shard: ShardId) -> Result<(), Error> {
        let me = self.inner.opts.node_id;
        if self.inner.directory.borrow().is_draining(me) {
            return Err(Error::Refused(format!(
                "node {me} is draining and takes no leadership"
            )));
        }
        let group = if shard == directory::META_SHARD {
            Some(&self.inner.meta)
        } else {
            self.inner.replicas.shard(shard)
        };
        let Some(group) = group else {
            return Ok(());
        };
        group
            .raft()
            .trigger()
            .elect()
            .await
            .map_err(|e| Error::Raft(e.to_string()))
    }
}
