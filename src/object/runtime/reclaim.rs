//! Deleted classes' storage, reclaimed by each shard's leader: a bounded
//! batch of the shard's records under the deleted identity is read, one
//! write per object deletes exactly those records through the shard's Raft
//! log, and so on until a read finds none.
//!
//! Restart-safe and leadership-safe by construction: nothing is
//! remembered between batches, each batch deletes only what a fresh read
//! found, and only the leader of the term proposes (a write of an ended
//! term is refused, `propose_in`); the next leader starts over from a read.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;

use super::Runtime;
use crate::replication::{self, ShardHandle};
use crate::storage::reclaim;
use crate::telemetry::metrics;

/// How long a failed batch waits before it is read again.
const RETRY: Duration = Duration::from_millis(200);

/// How a shard's reclaim of one namespace ended.
enum Ended {
    /// The shard holds nothing of it any more.
    Done,
    /// The term ended, or the node is shutting down.
    Stopped,
}

impl Runtime {
    /// Reclaims every deleted class's records in `shard` while this node
    /// leads it in leadership epoch `term` (after a fence of the term, so
    /// that everything committed before is applied and seen).
    pub(super) async fn reclaim_deleted(
        self,
        shard: ShardHandle,
        term: u64,
        stop: CancellationToken,
    ) {
        let deleted: Vec<Arc<str>> = self.inner.namespaces.deleted().cloned().collect();
        if deleted.is_empty() {
            return;
        }
        let pending: Vec<_> = deleted.iter().map(metrics::migration_pending).collect();
        loop {
            let fenced = match shard.fence(term).await {
                Ok(commit) => commit.await,
                Err(e) => Err(e),
            };
            match fenced {
                Ok(()) => break,
                Err(replication::Error::NotLeader { .. })
                | Err(replication::Error::ShuttingDown) => {
                    return;
                }
                Err(e) => {
                    tracing::debug!(shard = shard.id(), error = %e, "reclaim waits for a fence");
                    if pause(&stop).await.is_err() {
                        return;
                    }
                }
            }
        }
        for (namespace, pending) in deleted.iter().zip(pending) {
            match self.reclaim_namespace(&shard, term, namespace, &stop).await {
                Ended::Done => drop(pending),
                Ended::Stopped => return,
            }
        }
    }

    async fn reclaim_namespace(
        &self,
        shard: &ShardHandle,
        term: u64,
        namespace: &Arc<str>,
        stop: &CancellationToken,
    ) -> Ended {
        let batch = self.inner.opts.reclaim_batch.max(1);
        let mut total = 0;
        loop {
            if stop.is_cancelled() {
                return Ended::Stopped;
            }
            let records = match self
                .inner
                .db
                .namespace_records(shard.id(), namespace, batch)
            {
                Ok(records) => records,
                Err(e) => {
                    tracing::error!(shard = shard.id(), %namespace, error = %e, "read a deleted class's records");
                    if pause(stop).await.is_err() {
                        return Ended::Stopped;
                    }
                    continue;
                }
            };
            if records.is_empty() {
                if total > 0 {
                    tracing::info!(shard = shard.id(), %namespace, records = total, "reclaimed a deleted class");
                }
                metrics::migration_reclaimed(namespace);
                return Ended::Done;
            }
            let (deleted, outcome) = propose_all(shard, term, reclaim::deletions(records)).await;
            total += deleted;
            metrics::migration_deleted(namespace, deleted);
            match outcome {
                Ok(()) => {}
                Err(replication::Error::NotLeader { .. })
                | Err(replication::Error::ShuttingDown) => {
                    return Ended::Stopped;
                }
                Err(e) => {
                    tracing::warn!(shard = shard.id(), %namespace, error = %e, "delete a batch of a deleted class");
                    if pause(stop).await.is_err() {
                        return Ended::Stopped;
                    }
                }
            }
        }
    }
}

/// Proposes `writes` in epoch `term` (the proposer groups them into few
/// log entries) and waits until all are applied. Returns the records
/// (mutations) of the writes known to be applied, and the first failure.
async fn propose_all(
    shard: &ShardHandle,
    term: u64,
    writes: Vec<crate::storage::ObjectWrite>,
) -> (usize, Result<(), replication::Error>) {
    let mut commits = Vec::with_capacity(writes.len());
    let mut failed = Ok(());
    for write in writes {
        let records = write.mutations.len();
        match shard.propose_in(term, write).await {
            Ok(commit) => commits.push(async move { (records, commit.await) }),
            Err(e) => {
                failed = Err(e);
                break;
            }
        }
    }
    let mut applied = 0;
    for (records, outcome) in join_all(commits).await {
        match outcome {
            Ok(()) => applied += records,
            Err(e) if failed.is_ok() => failed = Err(e),
            Err(_) => {}
        }
    }
    (applied, failed)
}

/// Waits [`RETRY`]; `Err` if `stop` fires first.
async fn pause(stop: &CancellationToken) -> Result<(), ()> {
    tokio::select! {
        _ = tokio::time::sleep(RETRY) => Ok(()),
        _ = stop.cancelled() => Err(()),
    }
}
