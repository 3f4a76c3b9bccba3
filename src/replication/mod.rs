//! SCAFFOLD ONLY — replaced by the openraft implementation (branch
//! `replication`). Same public API; applies each write directly with a
//! synced RocksDB write so the layers above can be built and tested.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::id::ShardId;
use crate::storage::{self, Db, ObjectWrite};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    #[error("shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Storage(#[from] storage::Error),
}

#[derive(Clone, Debug)]
pub struct ReplicationOptions {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub snapshot_logs_since_last: u64,
    pub max_batch_bytes: usize,
    pub max_in_flight: usize,
}

impl Default for ReplicationOptions {
    fn default() -> Self {
        ReplicationOptions {
            heartbeat_ms: 100,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            snapshot_logs_since_last: 20_000,
            max_batch_bytes: 4 << 20,
            max_in_flight: 8,
        }
    }
}

pub struct Commit(oneshot::Receiver<Result<(), Error>>);

impl Future for Commit {
    type Output = Result<(), Error>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Error::ShuttingDown)))
    }
}

type Item = (Option<ObjectWrite>, oneshot::Sender<Result<(), Error>>);

#[derive(Clone)]
pub struct ShardHandle {
    id: ShardId,
    tx: mpsc::Sender<Item>,
    leader: watch::Receiver<bool>,
}

impl ShardHandle {
    pub fn id(&self) -> ShardId {
        self.id
    }
    pub async fn propose(&self, write: ObjectWrite) -> Result<Commit, Error> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((Some(write), tx))
            .await
            .map_err(|_| Error::ShuttingDown)?;
        Ok(Commit(rx))
    }
    pub async fn barrier(&self) -> Result<Commit, Error> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((None, tx))
            .await
            .map_err(|_| Error::ShuttingDown)?;
        Ok(Commit(rx))
    }
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }
    pub fn leadership(&self) -> watch::Receiver<bool> {
        self.leader.clone()
    }
}

pub struct Replicas {
    shards: Vec<ShardHandle>,
    _leader: watch::Sender<bool>,
    /// Stops the shard tasks; they hold the store until they end.
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Replicas {
    pub async fn open_single_node(
        db: Db,
        _node_id: u64,
        _addr: String,
        shards: u16,
        _opts: ReplicationOptions,
    ) -> Result<Replicas, Error> {
        let (leader_tx, leader_rx) = watch::channel(true);
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let mut handles = Vec::new();
        for id in 0..shards {
            let (tx, mut rx) = mpsc::channel::<Item>(1024);
            let db = db.clone();
            let stop = stop.clone();
            tasks.spawn(async move {
                loop {
                    let item = tokio::select! {
                        item = rx.recv() => item,
                        _ = stop.cancelled() => None,
                    };
                    let Some((write, reply)) = item else { break };
                    let result = match write {
                        None => Ok(()),
                        Some(w) => {
                            let mut batch = rocksdb::WriteBatch::default();
                            match storage::mutation::stage(&db, &mut batch, id, &[w]) {
                                Ok(()) => db.write_synced(batch).await.map_err(Error::from),
                                Err(e) => Err(e.into()),
                            }
                        }
                    };
                    let _ = reply.send(result);
                }
            });
            handles.push(ShardHandle {
                id,
                tx,
                leader: leader_rx.clone(),
            });
        }
        Ok(Replicas {
            shards: handles,
            _leader: leader_tx,
            stop,
            tasks,
        })
    }
    pub fn shard(&self, shard: ShardId) -> Option<&ShardHandle> {
        self.shards.get(usize::from(shard))
    }
    pub fn shard_count(&self) -> u16 {
        self.shards.len() as u16
    }
    pub async fn wait_for_leaders(&self, _timeout: Duration) -> Result<(), Error> {
        Ok(())
    }
    /// Stops every shard task and waits for them: proposals still queued
    /// fail with `ShuttingDown`, and no task holds the store afterwards.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Arc<Replicas>>();
}
