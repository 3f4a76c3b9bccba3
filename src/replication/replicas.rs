//! All shards of a node: opening their Raft groups over the one database,
//! bootstrapping single-node groups, waiting for leaders, and shutting down.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{InitializeError, RaftError};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::leadership;
use super::lease::Lease;
use super::liveness::{self, Announced, Liveness};
use super::log_store::LogStore;
use super::network::{NetworkFactory, NoPeers, Transport};
use super::observe;
use super::pipeline::Limits;
use super::pulse::Pulse;
use super::quiet::Quiet;
use super::shard::{Proposer, ShardHandle};
use super::state_machine::StateMachine;
use super::types::{NodeId, Raft};
use super::{Error, ReplicationOptions};
use crate::id::ShardId;
use crate::storage::Db;

/// How long shutdown lets submitted entries settle before stopping Raft.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Every shard group of this node.
pub struct Replicas {
    node_id: NodeId,
    shards: Vec<ShardHandle>,
    /// Groups outside the object shard range (the cluster's metadata).
    extra: Vec<ShardHandle>,
    /// The tasks of each shard; taken by `shutdown`.
    tasks: Mutex<Vec<ShardTasks>>,
    /// What this node's pings of its peers said (`liveness.rs`).
    liveness: Arc<Liveness>,
    /// The object shards this node announces quiesced.
    announced: Arc<Announced>,
    /// `raft.quiesce_ms` > 0: shards may quiesce, and the liveness probe
    /// sets followers' timers.
    quiesces: bool,
    /// Stops the liveness probe.
    stop: CancellationToken,
}

struct ShardTasks {
    raft: Raft,
    /// Stops the proposer and the leadership watcher.
    stop: CancellationToken,
    proposer: JoinHandle<()>,
    watcher: JoinHandle<()>,
}

impl Replicas {
    /// Opens `shards` groups on this node as single voters (`roost dev`):
    /// creates each Raft instance and initializes pristine groups with
    /// `{node_id: BasicNode::new(addr)}`; a group that has state (a restart)
    /// is never initialized again.
    pub async fn open_single_node(
        db: Db,
        node_id: NodeId,
        addr: String,
        shards: u16,
        opts: ReplicationOptions,
    ) -> Result<Replicas, Error> {
        let replicas = Replicas::open(db, node_id, shards, Arc::new(NoPeers), opts).await?;
        if let Err(e) = replicas.initialize_single(node_id, &addr).await {
            replicas.shutdown().await;
            return Err(e);
        }
        Ok(replicas)
    }

    async fn initialize_single(&self, node_id: NodeId, addr: &str) -> Result<(), Error> {
        for handle in &self.shards {
            let raft = handle.raft();
            let initialized = raft
                .is_initialized()
                .await
                .map_err(|e| Error::Raft(e.to_string()))?;
            if initialized {
                continue;
            }
            tracing::info!(
                shard = handle.id(),
                node_id,
                "initializing pristine shard group"
            );
            let members = BTreeMap::from([(node_id, BasicNode::new(addr))]);
            match raft.initialize(members).await {
                Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(Error::Raft(e.to_string())),
            }
        }
        Ok(())
    }

    /// Opens `shards` groups on this node over `transport`, without
    /// initializing any membership (the cluster layer does that).
    pub async fn open<T: Transport>(
        db: Db,
        node_id: NodeId,
        shards: u16,
        transport: Arc<T>,
        opts: ReplicationOptions,
    ) -> Result<Replicas, Error> {
        Self::open_with_groups(db, node_id, shards, &[], transport, opts).await
    }

    /// Like [`open`](Self::open), plus groups with ids outside `0..shards`
    /// (e.g. the cluster's metadata group), reached with [`group`](Self::group).
    pub async fn open_with_groups<T: Transport>(
        db: Db,
        node_id: NodeId,
        shards: u16,
        extra: &[ShardId],
        transport: Arc<T>,
        opts: ReplicationOptions,
    ) -> Result<Replicas, Error> {
        if shards == 0 {
            return Err(Error::Config("a node needs at least one shard".into()));
        }
        let mut replicas = Replicas {
            node_id,
            shards: Vec::with_capacity(usize::from(shards)),
            extra: Vec::new(),
            tasks: Mutex::new(Vec::new()),
            liveness: Arc::new(Liveness::new(opts.suspect_after())),
            announced: Arc::new(Announced::new(shards)),
            quiesces: opts.quiesce_after().is_some(),
            stop: CancellationToken::new(),
        };
        let live = replicas.liveness.clone();
        for &group in extra {
            if group < shards {
                replicas.shutdown().await;
                return Err(Error::Config(format!("group {group} is an object shard")));
            }
            // The extra groups (the cluster's metadata) never quiesce: the
            // pings name object shards only.
            let always_on = ReplicationOptions {
                quiesce_ms: 0,
                ..opts.clone()
            };
            match open_shard(
                &db,
                node_id,
                group,
                transport.clone(),
                &always_on,
                &live,
                None,
            )
            .await
            {
                Ok((handle, tasks)) => {
                    replicas.extra.push(handle);
                    replicas.lock_tasks().push(tasks);
                }
                Err(e) => {
                    replicas.shutdown().await;
                    return Err(e);
                }
            }
        }
        for shard in 0..shards {
            let announced = Some((replicas.announced.clone(), shard));
            match open_shard(
                &db,
                node_id,
                shard,
                transport.clone(),
                &opts,
                &live,
                announced,
            )
            .await
            {
                Ok((handle, tasks)) => {
                    replicas.shards.push(handle);
                    replicas.lock_tasks().push(tasks);
                }
                Err(e) => {
                    replicas.shutdown().await;
                    return Err(e);
                }
            }
        }
        // Without quiescence openraft's timers run as they always did.
        if replicas.quiesces {
            tokio::spawn(liveness::probe(
                node_id,
                live,
                replicas.shards.clone(),
                replicas.extra.clone(),
                transport,
                Duration::from_millis(opts.heartbeat_ms),
                replicas.stop.clone(),
            ));
        }
        tracing::info!(node_id, shards, "opened shard groups");
        Ok(replicas)
    }

    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, Vec<ShardTasks>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub fn shard(&self, shard: ShardId) -> Option<&ShardHandle> {
        self.shards.get(usize::from(shard))
    }

    /// Any group of this node: an object shard or an extra group.
    pub fn group(&self, id: ShardId) -> Option<&ShardHandle> {
        self.shard(id)
            .or_else(|| self.extra.iter().find(|g| g.id() == id))
    }

    /// Stops this node from starting elections in any of its groups (it
    /// still votes, replicates and answers). For a node that is going away:
    /// once its gRPC listener closes it no longer hears its leaders, and an
    /// election it started could only disrupt theirs (openraft 0.9 has no
    /// pre-vote), leaving a shard leaderless until the process exits.
    pub fn stop_campaigning(&self) {
        for group in self.shards.iter().chain(self.extra.iter()) {
            group.raft().runtime_config().elect(false);
        }
    }

    /// A peer pinged this node: the shards this node leads and has
    /// quiesced (their followers' timers may stop), as a bitmap
    /// (as [`liveness::has`] reads it), and whether this node quiesces at all (it
    /// stops its followers' timers only then).
    pub fn pong(&self, from: NodeId) -> (Vec<u8>, bool) {
        // The time first: an announcement made after it is not yet seen.
        let at = std::time::Instant::now();
        let bits = self.announced.bitmap();
        self.liveness.pinged_by(from, at);
        (bits, self.quiesces)
    }

    /// Every shard, indexed by shard id.
    pub fn shards(&self) -> &[ShardHandle] {
        &self.shards
    }

    pub fn shard_count(&self) -> u16 {
        self.shards.len() as u16
    }

    /// Waits until every shard knows a leader, or `timeout` passes.
    pub async fn wait_for_leaders(&self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        for handle in &self.shards {
            let mut metrics = handle.raft().metrics();
            let node_id = self.node_id;
            let mut leadership = handle.leadership();
            let settled = async move {
                let leader = metrics
                    .wait_for(|m| m.current_leader.is_some())
                    .await?
                    .current_leader;
                // When the leader is this node, also wait for the leadership
                // watch to say so, so that routing agrees with Raft at once.
                if leader == Some(node_id) {
                    leadership.wait_for(|l| l.is_some()).await?;
                }
                Ok::<_, tokio::sync::watch::error::RecvError>(())
            };
            match tokio::time::timeout_at(deadline, settled).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Error::ShuttingDown),
                Err(_) => {
                    tracing::warn!(shard = handle.id(), "no leader before the deadline");
                    return Err(Error::Timeout);
                }
            }
        }
        Ok(())
    }

    /// Shuts every shard down: stops taking proposals (queued ones fail
    /// with `ShuttingDown`), lets submitted entries settle for a while, then
    /// stops each Raft. Idempotent.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let tasks = std::mem::take(&mut *self.lock_tasks());
        if tasks.is_empty() {
            return;
        }
        tracing::info!(
            node_id = self.node_id,
            shards = tasks.len(),
            "shutting down shard groups"
        );
        for t in &tasks {
            t.stop.cancel();
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        let mut rest = Vec::with_capacity(tasks.len());
        for mut t in tasks {
            let settled = tokio::time::timeout_at(deadline, &mut t.proposer)
                .await
                .is_ok();
            rest.push((t, settled));
        }
        let stops = rest.iter().map(|(t, _)| t.raft.shutdown());
        for result in futures_util::future::join_all(stops).await {
            if let Err(e) = result {
                tracing::warn!(error = %e, "raft task ended abnormally");
            }
        }
        for (t, settled) in rest {
            if !settled {
                let _ = t.proposer.await;
            }
            let _ = t.watcher.await;
        }
        tracing::info!(node_id = self.node_id, "shard groups stopped");
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        // Without `shutdown`, at least stop taking proposals.
        self.stop.cancel();
        for t in self.lock_tasks().iter() {
            t.stop.cancel();
        }
    }
}

async fn open_shard<T: Transport>(
    db: &Db,
    node_id: NodeId,
    shard: ShardId,
    transport: Arc<T>,
    opts: &ReplicationOptions,
    liveness: &Arc<Liveness>,
    announced: Option<(Arc<Announced>, ShardId)>,
) -> Result<(ShardHandle, ShardTasks), Error> {
    let span = tracing::info_span!("shard", shard, node_id);
    let config = Arc::new(opts.raft_config(shard)?);
    let log = LogStore::new(db.clone(), shard);
    let sm = StateMachine::open(db.clone(), shard).map_err(|e| Error::Raft(e.to_string()))?;
    let network = NetworkFactory::new(shard, transport);
    let raft = Raft::new(node_id, config, network, log, sm)
        .instrument(span.clone())
        .await
        .map_err(|e| Error::Raft(format!("start raft of shard {shard}: {e}")))?;

    let stop = CancellationToken::new();
    let (queue_tx, queue_rx) = mpsc::channel(opts.queue_capacity);
    let (leader_tx, leader_rx) = watch::channel(None);
    let lease = Arc::new(Lease::new());
    let quiet = Arc::new(Quiet::new(announced));
    let lease_len = Duration::from_millis(opts.election_timeout_max_ms);
    let proposer = Proposer {
        shard,
        raft: raft.clone(),
        queue: queue_rx,
        stop: stop.clone(),
        leadership: leader_rx.clone(),
        limits: Limits {
            max_batch_bytes: opts.max_batch_bytes,
            max_batch_writes: opts.max_batch_writes,
            max_in_flight: opts.max_in_flight,
        },
        lease: Duration::from_millis(opts.election_timeout_max_ms),
    };
    let proposer = tokio::spawn(proposer.run().instrument(span.clone()));
    let watcher = tokio::spawn(
        leadership::watch_leadership(
            node_id,
            raft.metrics(),
            lease_len,
            lease.clone(),
            leader_tx,
            quiet.subscribe(),
            stop.clone(),
        )
        .instrument(span.clone()),
    );
    let pulse = Pulse {
        me: node_id,
        raft: raft.clone(),
        every: Duration::from_millis(opts.heartbeat_ms),
        held: lease.clone(),
        lease: lease_len,
        quiet: quiet.clone(),
        quiesce_after: opts.quiesce_after(),
        liveness: liveness.clone(),
    };
    tokio::spawn(pulse.run(stop.clone()).instrument(span.clone()));
    tokio::spawn(observe::observe(shard, node_id, raft.clone(), stop.clone()).instrument(span));
    let handle = ShardHandle::new(
        shard,
        raft.clone(),
        queue_tx,
        leader_rx,
        lease,
        quiet,
        lease_len,
    );
    Ok((
        handle,
        ShardTasks {
            raft,
            stop,
            proposer,
            watcher,
        },
    ))
}
