//! A shard as the object layer sees it: a [`ShardHandle`] that enqueues
//! writes and read barriers, and the proposer task that turns the queue into
//! group-committed Raft entries.
//!
//! The proposer drains whatever is queued into ONE [`ShardCommand`], hands it
//! to openraft in queue order (so log order is proposal order), and keeps up
//! to `max_in_flight` entries submitted at once; each waiter is told the
//! outcome once its entry is committed and applied. Outcomes are delivered in
//! queue order too. It never touches storage itself.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use openraft::error::{CheckIsLeaderError, ClientWriteError, Fatal, RaftError};
use openraft::{BasicNode, RaftMetrics, ServerState};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::Error;
use super::lease::Lease;
use super::pipeline::{self, Batch, Limits, Settler, epoch_term};
use super::quiet::Quiet;
use super::types::{NodeId, Raft, ShardCommand};
use crate::id::ShardId;
use crate::storage::ObjectWrite;
use crate::telemetry::metrics;

type Waiter = oneshot::Sender<Result<(), Error>>;

/// What a shard's queue holds (see [`pipeline::Request`]).
pub(crate) type Request = pipeline::Request<Waiter>;

/// Resolves once the proposed write (or barrier) is committed by a quorum and
/// applied to RocksDB, or with the reason it was not. An `Err` other than
/// [`Error::NotLeader`] leaves the write's fate unknown (it may still commit).
#[must_use = "a Commit does nothing unless awaited; dropping it does not cancel the write"]
pub struct Commit(oneshot::Receiver<Result<(), Error>>);

impl Future for Commit {
    type Output = Result<(), Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Error::ShuttingDown)))
    }
}

/// A cheap handle to one shard of this node. Clones share the shard.
#[derive(Clone)]
pub struct ShardHandle {
    inner: Arc<Inner>,
}

struct Inner {
    id: ShardId,
    raft: Raft,
    /// The proposer's queue; its order is the log's order.
    queue: mpsc::Sender<Request>,
    /// This node's leadership epoch of the shard, if it leads it.
    leadership: watch::Receiver<Option<u64>>,
    /// Until when no other node can lead the shard.
    lease: Arc<Lease>,
    /// Whether the shard is idle; every request touches it.
    quiet: Arc<Quiet>,
    /// The followers' leader lease (`election_timeout_max`).
    lease_len: Duration,
}

/// How long after waking a quiesced shard keeps its epoch without a lease:
/// a lease and the leadership watch's grace of one more.
pub(super) fn excuse_window(lease: Duration) -> Duration {
    lease * 2
}

impl ShardHandle {
    pub(crate) fn new(
        id: ShardId,
        raft: Raft,
        queue: mpsc::Sender<Request>,
        leadership: watch::Receiver<Option<u64>>,
        lease: Arc<Lease>,
        quiet: Arc<Quiet>,
        lease_len: Duration,
    ) -> ShardHandle {
        ShardHandle {
            inner: Arc::new(Inner {
                id,
                raft,
                queue,
                leadership,
                lease,
                quiet,
                lease_len,
            }),
        }
    }

    pub fn id(&self) -> ShardId {
        self.inner.id
    }

    /// Enqueues `write` for the shard's next log entry. Writes enqueued by
    /// one caller reach the log in call order. Awaiting this is only
    /// backpressure; the returned [`Commit`] resolves once the write is
    /// committed and applied.
    pub async fn propose(&self, write: ObjectWrite) -> Result<Commit, Error> {
        self.request(|done| Request::Write {
            write,
            term: None,
            done,
        })
        .await
    }

    /// Like [`propose`](Self::propose), but only while this node leads the
    /// shard in leadership epoch `term` (see [`epoch_term`]): if the epoch
    /// ended before the write left the queue, it is refused (`NotLeader`)
    /// and certainly never committed.
    pub async fn propose_in(&self, term: u64, write: ObjectWrite) -> Result<Commit, Error> {
        self.request(|done| Request::Write {
            write,
            term: Some(term),
            done,
        })
        .await
    }

    /// Enqueues a linearizable read barrier: its [`Commit`] resolves once this
    /// node confirmed it still leads the shard after the call and applied
    /// everything committed before it, and after every write enqueued before
    /// it has resolved.
    pub async fn barrier(&self) -> Result<Commit, Error> {
        self.request(|done| Request::Barrier { term: None, done })
            .await
    }

    /// A read barrier refused (`NotLeader`) unless this node still leads
    /// the shard in leadership epoch `term`.
    pub async fn barrier_in(&self, term: u64) -> Result<Commit, Error> {
        self.request(|done| Request::Barrier {
            term: Some(term),
            done,
        })
        .await
    }

    /// A leader-completeness barrier for leadership epoch `term`: proposes an
    /// empty log entry and resolves once it is applied. By then every entry
    /// proposed before it (in any earlier term, or by an executor that was
    /// reset with its writes' outcome unknown) is decided and applied. A
    /// read barrier is not enough for that: it waits only for entries
    /// already committed when it was issued.
    pub async fn fence(&self, term: u64) -> Result<Commit, Error> {
        self.request(|done| Request::Fence {
            term: Some(term),
            done,
        })
        .await
    }

    async fn request(&self, make: impl FnOnce(Waiter) -> Request) -> Result<Commit, Error> {
        self.inner.quiet.touch(std::time::Instant::now());
        let (done, rx) = oneshot::channel();
        self.inner
            .queue
            .send(make(done))
            .await
            .map_err(|_| Error::ShuttingDown)?;
        Ok(Commit(rx))
    }

    /// Whether this node currently leads the shard (as last reported by Raft).
    pub fn is_leader(&self) -> bool {
        self.inner.leadership.borrow().is_some()
    }

    /// This node's leadership epoch of the shard ([`epoch_term`]), if it
    /// leads it now: the leadership watch shows the epoch *and* the lease
    /// holds by the clock read here ([`Lease`]), so a stale view (a paused
    /// process, metrics not yet republished) never passes.
    ///
    /// Asking touches the shard: an idle shard that quiesced wakes, and its
    /// first heartbeat round renews the lease (until then this is `None`).
    pub fn leader_epoch(&self) -> Option<u64> {
        let epoch = *self.inner.leadership.borrow();
        let now = std::time::Instant::now();
        self.inner.quiet.touch(now);
        epoch.filter(|e| self.inner.lease.holds(now, epoch_term(*e)))
    }

    /// The epoch calls may be routed here in: [`leader_epoch`](Self::leader_epoch),
    /// or the watched epoch while the shard is quiet or waking (its lease
    /// lapsed by design; the executor waits for the renewal before it runs
    /// anything). Touches the shard like `leader_epoch`.
    pub fn serving_epoch(&self) -> Option<u64> {
        self.leader_epoch().or_else(|| {
            let epoch = self.watched_epoch()?;
            let window = excuse_window(self.inner.lease_len);
            self.inner
                .quiet
                .phase()
                .excuses(std::time::Instant::now(), epoch_term(epoch), window)
                .then_some(epoch)
        })
    }

    /// The leadership epoch the shard's watch shows, without the lease's
    /// check: whether the epoch goes on (its lease may have lapsed for a
    /// moment the watch has not published).
    pub fn watched_epoch(&self) -> Option<u64> {
        *self.inner.leadership.borrow()
    }

    /// Changes of this node's leadership of the shard: its leadership epoch
    /// ([`epoch_term`]), or `None`. Turns `None` when the shard shuts down.
    pub fn leadership(&self) -> watch::Receiver<Option<u64>> {
        self.inner.leadership.clone()
    }

    /// Waits until this node's state machine has applied an entry of Raft
    /// term `term` (a new leader's first entry): by then every entry
    /// committed in an earlier term is applied. `false` after `timeout`.
    /// No write and no round to the peers.
    pub async fn applied_in_term(&self, term: u64, timeout: Duration) -> bool {
        let mut metrics = self.inner.raft.metrics();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let applied = metrics
                .borrow_and_update()
                .last_applied
                .is_some_and(|l| l.leader_id.term >= term);
            if applied {
                return true;
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                _ => return false,
            }
        }
    }

    /// The shard's openraft instance: for the RPC layer to deliver peers'
    /// messages, for membership changes and for metrics.
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }
}

/// How a group commit (or a barrier round) ended; shared by its waiters.
#[derive(Clone, Debug)]
enum Outcome {
    Applied,
    NotLeader(Option<NodeId>),
    NoQuorum(String),
    ShuttingDown,
    Raft(String),
}

impl Outcome {
    fn to_result(&self) -> Result<(), Error> {
        match self {
            Outcome::Applied => Ok(()),
            Outcome::NotLeader(leader) => Err(Error::NotLeader { leader: *leader }),
            Outcome::NoQuorum(e) => Err(Error::NoQuorum(e.clone())),
            Outcome::ShuttingDown => Err(Error::ShuttingDown),
            Outcome::Raft(e) => Err(Error::Raft(e.clone())),
        }
    }

    /// The `outcome` label of `roost_raft_proposals_total`.
    fn label(&self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::NotLeader(_) => "not_leader",
            Outcome::NoQuorum(_) => "no_quorum",
            Outcome::ShuttingDown => "shutting_down",
            Outcome::Raft(_) => "error",
        }
    }

    fn from_fatal(fatal: &Fatal<NodeId>) -> Outcome {
        match fatal {
            Fatal::Stopped => Outcome::ShuttingDown,
            other => Outcome::Raft(other.to_string()),
        }
    }

    fn from_check(e: RaftError<NodeId, CheckIsLeaderError<NodeId, BasicNode>>) -> Outcome {
        match e {
            RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => {
                Outcome::NotLeader(f.leader_id)
            }
            RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)) => {
                Outcome::NoQuorum(q.to_string())
            }
            RaftError::Fatal(f) => Outcome::from_fatal(&f),
        }
    }
}

/// How a submitted batch ended, for its waiters.
struct Settled {
    waiters: Vec<Waiter>,
    /// Per waiter: whether its request was made for a leadership epoch.
    guarded: Vec<bool>,
    outcome: Outcome,
    /// The batch was applied (or its round confirmed leadership) in
    /// another Raft term than its guarded requests were admitted for:
    /// those had no effect (`Mutation::InTerm`), and their waiters hear
    /// `NotLeader` with this leader.
    stale: Option<Option<NodeId>>,
}

/// A submitted batch: resolves to its id and how it ended.
type Settling = Pin<Box<dyn Future<Output = (u64, Settled)> + Send>>;

/// The task that owns a shard's queue.
pub(crate) struct Proposer {
    pub shard: ShardId,
    pub raft: Raft,
    pub queue: mpsc::Receiver<Request>,
    pub stop: CancellationToken,
    /// The shard's leadership watch: guarded requests are admitted only in
    /// the epoch it shows (and Raft's metrics confirm).
    pub leadership: watch::Receiver<Option<u64>>,
    pub limits: Limits,
    /// The followers' leader lease (`election_timeout_max`).
    pub lease: Duration,
}

impl Proposer {
    pub(crate) async fn run(self) {
        let Proposer {
            shard,
            raft,
            mut queue,
            stop,
            leadership,
            limits,
            lease,
        } = self;
        let mut in_flight: FuturesUnordered<Settling> = FuturesUnordered::new();
        let mut order: Settler<Settled> = Settler::default();
        let metrics = raft.metrics();
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                Some((id, settled)) = in_flight.next(), if !in_flight.is_empty() => {
                    for settled in order.settled(id, settled) {
                        settle(settled);
                    }
                }
                request = queue.recv(), if order.in_flight() < limits.max_in_flight => {
                    let Some(first) = request else { break };
                    let leading = leading_epoch(&metrics.borrow(), *leadership.borrow());
                    let (batch, refused) =
                        pipeline::collect(first, || queue.try_recv().ok(), limits, leading);
                    if !refused.is_empty() {
                        let leader = metrics.borrow().current_leader;
                        notify(refused, &Outcome::NotLeader(leader));
                    }
                    if batch.waiters.is_empty() {
                        continue;
                    }
                    let id = order.submit();
                    let settling = submit(shard, &raft, lease, id, batch).await;
                    in_flight.push(settling);
                }
            }
        }
        // Nothing still queued will be proposed.
        queue.close();
        while let Ok(request) = queue.try_recv() {
            let _ = request.into_waiter().send(Err(Error::ShuttingDown));
        }
        // What was submitted settles as Raft decides, or as it shuts down.
        while let Some((id, settled)) = in_flight.next().await {
            for settled in order.settled(id, settled) {
                settle(settled);
            }
        }
        tracing::debug!("proposer stopped");
    }
}

/// The leadership epoch guarded requests are admitted in: the one the
/// leadership watch shows, if Raft's metrics agree this node leads in its
/// term. A successor executor is created, and queues its fence, only after
/// the watch showed its epoch, so a request of an older epoch that leaves
/// the queue after that fence is refused.
fn leading_epoch(m: &RaftMetrics<NodeId, BasicNode>, watched: Option<u64>) -> Option<u64> {
    let leads = m.state == ServerState::Leader && m.current_leader == Some(m.id);
    watched.filter(|e| leads && epoch_term(*e) == m.current_term)
}

/// Hands `batch` to Raft and returns the future of its outcome. A batch with
/// writes is one log entry; its commit also answers the barriers queued with
/// it (it proves leadership after they were queued). A batch of barriers only
/// is one read-index round.
///
/// A write whose leader goes a whole `lease` without a quorum's
/// acknowledgement settles as `NoQuorum` (outcome unknown) instead of
/// waiting for a commit that a cut-off leader may never see: its caller
/// answers 503 rather than hang for as long as the partition lasts.
async fn submit(
    shard: ShardId,
    raft: &Raft,
    lease: Duration,
    id: u64,
    batch: Batch<Waiter>,
) -> Settling {
    let entry = batch.is_entry();
    let Batch {
        writes,
        waiters,
        guarded,
        bytes,
        term,
        ..
    } = batch;
    let started = std::time::Instant::now();
    let (count, writes_in) = (waiters.len(), writes.len());
    let metrics = raft.metrics();
    // What the waiters hear, given the term the batch landed in.
    let settled = move |kind: &'static str, outcome: Outcome, landed_in: Option<u64>| {
        metrics::raft_proposal(kind, outcome.label(), started.elapsed());
        let stale = (matches!(outcome, Outcome::Applied) && !pipeline::landed(term, landed_in))
            .then(|| {
                tracing::debug!(shard, admitted = ?term, landed = ?landed_in, "batch landed in a later term");
                metrics.borrow().current_leader
            });
        Settled {
            waiters,
            guarded,
            outcome,
            stale,
        }
    };
    if !entry {
        tracing::trace!(shard, barriers = count, "read barrier");
        let raft = raft.clone();
        return Box::pin(async move {
            let (outcome, landed_in) = match raft.ensure_linearizable().await {
                // The read log id is at least this leader's first entry of
                // its term: its term is the one leadership was confirmed in.
                Ok(read) => (Outcome::Applied, read.map(|id| id.leader_id.term)),
                Err(e) => (Outcome::from_check(e), None),
            };
            (id, settled("barrier", outcome, landed_in))
        });
    }
    metrics::raft_batch(writes.len(), bytes);
    tracing::trace!(shard, writes = writes_in, waiters = count, "group commit");
    let lease_metrics = raft.metrics();
    match raft.client_write_ff(ShardCommand { writes }).await {
        Ok(applied) => Box::pin(async move {
            let (outcome, landed_in) = tokio::select! {
                result = applied => match result {
                    Ok(Ok(resp)) => (Outcome::Applied, Some(resp.log_id.leader_id.term)),
                    Ok(Err(ClientWriteError::ForwardToLeader(f))) => {
                        (Outcome::NotLeader(f.leader_id), None)
                    }
                    Ok(Err(e)) => (Outcome::Raft(e.to_string()), None),
                    Err(_) => (Outcome::ShuttingDown, None),
                },
                // Twice the lease, as the leadership watch's grace: a
                // starved leader's rounds come back late without it being
                // cut off, and each NoQuorum resets an object.
                () = lease_expired(lease_metrics, lease * 2) => (Outcome::NoQuorum(format!(
                    "no quorum acknowledged this leader for over {} ms",
                    (lease * 2).as_millis()
                )), None),
            };
            (id, settled("write", outcome, landed_in))
        }),
        Err(fatal) => {
            let outcome = Outcome::from_fatal(&fatal);
            Box::pin(std::future::ready((id, settled("write", outcome, None))))
        }
    }
}

/// Resolves once this node still leads by Raft's account but no quorum
/// acknowledged it within `lease` (it is cut off, and its peers may have
/// elected another leader). Never resolves once Raft stops.
async fn lease_expired(
    mut metrics: watch::Receiver<RaftMetrics<NodeId, BasicNode>>,
    lease: Duration,
) {
    let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
    // Not before the write itself waited that long: a leader that wakes
    // from quiescence reports its last acknowledgement as long ago until
    // its first round after the wake comes back.
    tokio::time::sleep(lease).await;
    loop {
        {
            let m = metrics.borrow_and_update();
            let shared = m.membership_config.membership().voter_ids().count() > 1;
            if shared
                && m.state == ServerState::Leader
                && m.millis_since_quorum_ack.is_some_and(|ms| ms > lease_ms)
            {
                return;
            }
        }
        if metrics.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Tells a settled batch's waiters how it ended: a guarded request of a
/// batch that landed in a later term had no effect (`NotLeader`).
fn settle(settled: Settled) {
    let Settled {
        waiters,
        guarded,
        outcome,
        stale,
    } = settled;
    let Some(leader) = stale else {
        return notify(waiters, &outcome);
    };
    let not_run = Outcome::NotLeader(leader);
    for (waiter, guarded) in waiters.into_iter().zip(guarded) {
        let outcome = if guarded { &not_run } else { &outcome };
        let _ = waiter.send(outcome.to_result());
    }
}

fn notify(waiters: Vec<Waiter>, outcome: &Outcome) {
    if let Outcome::Raft(e) | Outcome::NoQuorum(e) = outcome {
        tracing::warn!(error = %e, waiters = waiters.len(), "group commit failed");
    }
    for waiter in waiters {
        // The caller may have stopped waiting; the write stands regardless.
        let _ = waiter.send(outcome.to_result());
    }
}
