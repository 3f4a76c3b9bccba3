//! The control loop every node runs: bootstrap or join, then keep the
//! metadata group and every shard group it leads in line with the
//! directory and the ring, and hand leadership to preferred leaders.
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

/// How often the loop looks at the cluster.
const TICK: Duration = Duration::from_millis(200);
/// A node waits this long after start before it claims preferred leadership.
const SETTLE: Duration = Duration::from_secs(2);
/// At most one election per shard this often.
const ELECT_EVERY: Duration = Duration::from_secs(5);

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
        let _ = tokio::time::timeout(Duration::from_secs(10), leader.wait_for(|l| *l)).await;
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
    pub async fn set_state(&self, id: NodeId, state: NodeState) -> Result<(), Error> {
        if !self.inner.meta.is_leader() {
            return Err(Error::NotLeader {
                leader: self.meta_leader_addr(),
            });
        }
        let Some(mut node) = self.inner.directory.borrow().nodes.get(&id).cloned() else {
            return Ok(());
        };
        node.state = state;
        self.record(node).await
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

    /// Runs the loop until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.tick() {
                tracing::warn!(error = %e, "control loop");
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    fn tick(&self) -> Result<(), Error> {
        let dir = self.refresh()?;
        if dir.nodes.is_empty() {
            return Ok(());
        }
        let alive: BTreeSet<NodeId> = dir.nodes.keys().copied().collect();
        // The metadata group: the lowest-numbered active nodes vote.
        if self.inner.meta.is_leader() {
            let desired: Vec<NodeId> = dir
                .active()
                .into_iter()
                .take(self.inner.opts.meta_voters.max(1))
                .collect();
            self.reconcile(&self.inner.meta, &desired, &alive, &dir);
        }
        let placement = Placement::compute(
            &dir.active(),
            self.inner.replicas.shard_count(),
            self.inner.opts.replication,
        );
        for handle in self.inner.replicas.shards() {
            if handle.is_leader() {
                self.reconcile(handle, placement.replicas(handle.id()), &alive, &dir);
            } else {
                self.claim_if_preferred(handle, &placement);
            }
        }
        Ok(())
    }

    /// Starts the next membership step of `group` towards `desired`,
    /// unless one is already running.
    fn reconcile(
        &self,
        group: &ShardHandle,
        desired: &[NodeId],
        alive: &BTreeSet<NodeId>,
        dir: &Directory,
    ) {
        let (voters, learners) = {
            let metrics = group.raft().metrics();
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
            let learners: BTreeSet<NodeId> = membership.learner_ids().collect();
            (voters, learners)
        };
        let step = plan::next_step(&voters, &learners, desired, alive);
        if step == Step::Done {
            return;
        }
        let shard = group.id();
        {
            let mut busy = self.inner.busy.lock().unwrap_or_else(|p| p.into_inner());
            if !busy.insert(shard) {
                return;
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
                Step::SetVoters(v) => raft
                    .change_membership(ChangeMembers::ReplaceAllVoters(v.clone()), false)
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
    }

    /// A preferred leader that is a caught-up voter takes its shard back.
    fn claim_if_preferred(&self, group: &ShardHandle, placement: &Placement) {
        let me = self.inner.opts.node_id;
        if placement.preferred_leader(group.id()) != Some(me)
            || self.inner.started.elapsed() < SETTLE
        {
            return;
        }
        let ready = {
            let metrics = group.raft().metrics();
            let m = metrics.borrow();
            let is_voter = m
                .membership_config
                .membership()
                .voter_ids()
                .any(|v| v == me);
            let leader_elsewhere = m.current_leader.is_some_and(|l| l != me);
            // Caught up: everything the leader told us is applied.
            let caught_up = m.last_applied.map(|l| l.index) >= m.last_log_index;
            is_voter && leader_elsewhere && caught_up
        };
        if !ready {
            return;
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
                .is_some_and(|t| now.duration_since(*t) < ELECT_EVERY)
            {
                return;
            }
            last.insert(group.id(), now);
        }
        let raft = group.raft().clone();
        let shard = group.id();
        tokio::spawn(async move {
            tracing::info!(shard, "claiming preferred leadership");
            if let Err(e) = raft.trigger().elect().await {
                tracing::warn!(shard, error = %e, "election trigger failed");
            }
        });
    }

    /// Asks Raft to hold an election for `shard` on this node (used to move
    /// leadership here from a draining node).
    pub async fn elect(&self, shard: ShardId) -> Result<(), Error> {
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
    /// voters of the groups this node leads. A node that has left a
    /// shard's group (its replica moved away) hears nothing more from that
    /// group and its last-known leader goes stale (often itself, if it led
    /// the change that removed it), so it names no leader for it.
    pub fn leaders(&self) -> Vec<(ShardId, NodeId, Vec<NodeId>)> {
        let me = self.inner.opts.node_id;
        self.inner
            .replicas
            .shards()
            .iter()
            .filter_map(|g| {
                let metrics = g.raft().metrics();
                let m = metrics.borrow();
                let membership = m.membership_config.membership();
                if !membership.voter_ids().any(|v| v == me)
                    && !membership.learner_ids().any(|l| l == me)
                {
                    return None;
                }
                let leader = m.current_leader?;
                if leader == me && !g.is_leader() {
                    // Raft still says us, but no quorum acknowledged us
                    // within the lease (cut off from the group): whoever
                    // leads now, it is not certain to be this node.
                    return None;
                }
                let voters = if leader == me && g.is_leader() {
                    m.membership_config.membership().voter_ids().collect()
                } else {
                    Vec::new()
                };
                Some((g.id(), leader, voters))
            })
            .collect()
    }
}
