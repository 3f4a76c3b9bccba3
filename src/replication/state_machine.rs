//! One shard's state machine: the shard's range of the `state` column family,
//! its applied position (`RaftKind::Applied`) and its current snapshot
//! (`RaftKind::Snapshot`).
//!
//! Applying an entry is one unsynced RocksDB write: the log is durable and
//! openraft replays it from the last applied position after a crash, and the
//! state and its applied position always land in the same batch. Never reads
//! or writes the log, and never decides what an object may write.

// openraft's traits return its (large) StorageError; the helpers here match them.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, StorageIOError};
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::types::{
    Entry, LogId, NodeId, ShardReply, Snapshot, SnapshotMeta, StorageError, StoredMembership,
    TypeConfig, decode, encode,
};
use crate::id::ShardId;
use crate::storage::keys::{self, RaftKind};
use crate::storage::{Db, ObjectWrite, mutation};
use crate::telemetry::metrics;

/// What `RaftKind::Applied` holds: how far the state has been applied.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct AppliedMeta {
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// What `RaftKind::Snapshot` holds: the snapshot's meta and its data, a
/// postcard `Vec<(key, value)>` of the shard's whole state range.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// The state machine of one shard.
pub struct StateMachine {
    db: Db,
    shard: ShardId,
    applied: AppliedMeta,
    /// Serializes writes of the current snapshot between a snapshot being
    /// built (in its own task) and one being installed.
    snapshot_lock: Arc<Mutex<()>>,
}

/// Builds a snapshot from a consistent view of the shard, while applies go on.
pub struct SnapshotBuilder {
    db: Db,
    shard: ShardId,
    snapshot_lock: Arc<Mutex<()>>,
}

fn read_sm(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::read_state_machine(AnyError::error(e)).into()
}

fn write_sm(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_state_machine(AnyError::error(e)).into()
}

fn read_snap(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::read_snapshot(None, AnyError::error(e)).into()
}

fn write_snap(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_snapshot(None, AnyError::error(e)).into()
}

impl StateMachine {
    /// Loads the applied position of `shard` (nothing applied if absent).
    pub fn open(db: Db, shard: ShardId) -> Result<StateMachine, StorageError> {
        let applied = match db
            .get_raft(&keys::raft_key(RaftKind::Applied, shard))
            .map_err(read_sm)?
        {
            Some(bytes) => decode(&bytes)
                .map_err(|e| read_sm(format!("decode applied state of shard {shard}: {e}")))?,
            None => AppliedMeta::default(),
        };
        Ok(StateMachine {
            db,
            shard,
            applied,
            snapshot_lock: Arc::new(Mutex::new(())),
        })
    }
}

/// Reads the current snapshot of `shard`.
fn read_snapshot(db: &Db, shard: ShardId) -> Result<Option<StoredSnapshot>, StorageError> {
    let Some(bytes) = db
        .get_raft(&keys::raft_key(RaftKind::Snapshot, shard))
        .map_err(read_snap)?
    else {
        return Ok(None);
    };
    let stored =
        decode(&bytes).map_err(|e| read_snap(format!("decode snapshot of shard {shard}: {e}")))?;
    Ok(Some(stored))
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let started = std::time::Instant::now();
        let (lo, hi) = keys::shard_state_range(self.shard);
        let applied_key = keys::raft_key(RaftKind::Applied, self.shard);
        let db = self.db.clone();
        let (meta_bytes, pairs) =
            tokio::task::spawn_blocking(move || db.read_consistent(&applied_key, lo, hi))
                .await
                .map_err(read_sm)?
                .map_err(read_sm)?;
        let applied: AppliedMeta = match meta_bytes {
            Some(bytes) => decode(&bytes).map_err(read_sm)?,
            None => AppliedMeta::default(),
        };
        let data = encode(&pairs).map_err(write_snap)?;
        let index = applied.last_applied.map(|id| id.index).unwrap_or(0);
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership,
            snapshot_id: format!("{}-{index}-{:016x}", self.shard, rand::random::<u64>()),
        };
        tracing::info!(shard = self.shard, snapshot = %meta, keys = pairs.len(), bytes = data.len(), "built snapshot");

        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let bytes = encode(&stored).map_err(write_snap)?;
        {
            let _guard = self.snapshot_lock.lock().await;
            // An installed snapshot may be newer than the one just built.
            let newer = read_snapshot(&self.db, self.shard)?
                .is_some_and(|cur| cur.meta.last_log_id > meta.last_log_id);
            if !newer {
                let mut batch = WriteBatch::default();
                batch.put_cf(
                    &self.db.raft_cf(),
                    keys::raft_key(RaftKind::Snapshot, self.shard),
                    bytes,
                );
                self.db.write(batch).map_err(write_snap)?;
            }
        }
        metrics::raft_snapshot(self.shard, "built", started.elapsed());
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.applied.last_applied, self.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ShardReply>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut next = self.applied.clone();
        let mut writes: Vec<ObjectWrite> = Vec::new();
        let mut replies = Vec::new();
        for entry in entries {
            next.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => {}
                // A write bound to another term than its entry's never
                // takes effect (`Mutation::InTerm`); the proposer tells its
                // waiter it was not run.
                EntryPayload::Normal(cmd) => writes.extend(
                    cmd.writes
                        .into_iter()
                        .filter(|w| w.takes_effect_in(entry.log_id.leader_id.term)),
                ),
                EntryPayload::Membership(m) => {
                    next.membership = StoredMembership::new(Some(entry.log_id), m)
                }
            }
            replies.push(ShardReply);
        }
        if replies.is_empty() {
            return Ok(replies);
        }
        // All entries' writes are staged by one call, so that alarms changed
        // by an earlier entry of this batch are seen by a later one.
        let mut batch = WriteBatch::default();
        mutation::stage(&self.db, &mut batch, self.shard, &writes).map_err(write_sm)?;
        batch.put_cf(
            &self.db.raft_cf(),
            keys::raft_key(RaftKind::Applied, self.shard),
            encode(&next).map_err(write_sm)?,
        );
        self.db.write(batch).map_err(write_sm)?;
        self.applied = next;
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            shard: self.shard,
            snapshot_lock: self.snapshot_lock.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let started = std::time::Instant::now();
        let data = snapshot.into_inner();
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = decode(&data)
            .map_err(|e| read_snap(format!("decode snapshot {}: {e}", meta.snapshot_id)))?;
        let (lo, hi) = keys::shard_state_range(self.shard);
        if let Some((k, _)) = pairs.iter().find(|(k, _)| *k < lo || *k >= hi) {
            return Err(read_snap(format!(
                "snapshot {} has key {k:?} outside shard {}",
                meta.snapshot_id, self.shard
            )));
        }
        let applied = AppliedMeta {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let mut batch = WriteBatch::default();
        {
            let state = self.db.state_cf();
            let raft = self.db.raft_cf();
            batch.delete_range_cf(&state, lo, hi);
            for (k, v) in &pairs {
                batch.put_cf(&state, k, v);
            }
            let applied_bytes = encode(&applied).map_err(write_sm)?;
            batch.put_cf(
                &raft,
                keys::raft_key(RaftKind::Applied, self.shard),
                applied_bytes,
            );
            let snapshot_bytes = encode(&stored).map_err(write_snap)?;
            batch.put_cf(
                &raft,
                keys::raft_key(RaftKind::Snapshot, self.shard),
                snapshot_bytes,
            );
        }
        {
            // Synced: the leader counts this node as holding the snapshot.
            let _guard = self.snapshot_lock.lock().await;
            self.db.write_synced(batch).await.map_err(write_snap)?;
        }
        tracing::info!(shard = self.shard, snapshot = %meta, keys = pairs.len(), "installed snapshot");
        metrics::raft_snapshot(self.shard, "installed", started.elapsed());
        self.applied = applied;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(read_snapshot(&self.db, self.shard)?.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

/// A shard's state as of one applied log position (for backups).
pub struct ShardExport {
    /// The log position the state was applied up to (index, term).
    pub index: u64,
    pub term: u64,
    /// Every key and value of the shard's state range, in key order.
    pub pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Reads `shard`'s state and the position it was applied up to at one
/// point in time (a RocksDB snapshot), while applies go on. Read-only.
pub fn export(db: &Db, shard: ShardId) -> Result<ShardExport, crate::storage::Error> {
    let (lo, hi) = keys::shard_state_range(shard);
    let (meta, entries) = db.read_consistent(&keys::raft_key(RaftKind::Applied, shard), lo, hi)?;
    let applied: AppliedMeta = match meta {
        Some(bytes) => decode(&bytes).map_err(|e| {
            crate::storage::Error::Corrupt(format!("applied state of shard {shard}: {e}"))
        })?,
        None => AppliedMeta::default(),
    };
    let last = applied.last_applied.unwrap_or_default();
    Ok(ShardExport {
        index: last.index,
        term: last.leader_id.term,
        pairs: entries
            .into_iter()
            .map(|(k, v)| (k.into_vec(), v.into_vec()))
            .collect(),
    })
}

/// Seeds `shard` of a data directory no Raft group has run on with
/// `pairs` (a backup's copy of its state), as if a group with `node` (at
/// `addr`) as its only voter had been initialized and had applied them:
/// the applied position is the one `Raft::initialize` would write (log
/// index 0), so the group starts with one voter and a state, and on its
/// first start openraft purges the log up to it and builds a snapshot of
/// it — which is what every replica added later receives. Refuses a shard
/// that already has state or an applied position, and keys outside it.
pub fn seed(
    db: &Db,
    shard: ShardId,
    node: NodeId,
    addr: &str,
    pairs: &[(Vec<u8>, Vec<u8>)],
) -> Result<WriteBatch, crate::storage::Error> {
    use crate::storage::Error as E;
    let applied_key = keys::raft_key(RaftKind::Applied, shard);
    let (lo, hi) = keys::shard_state_range(shard);
    if db.get_raft(&applied_key)?.is_some()
        || db
            .scan_state(lo.clone(), Some(hi.clone()), false)
            .next()
            .is_some()
    {
        return Err(E::Corrupt(format!("shard {shard} already has state")));
    }
    if let Some((k, _)) = pairs.iter().find(|(k, _)| *k < lo || *k >= hi) {
        return Err(E::Corrupt(format!("key {k:?} is outside shard {shard}")));
    }
    let initial = LogId::default();
    let membership = openraft::Membership::new(
        vec![std::collections::BTreeSet::from([node])],
        std::collections::BTreeMap::from([(node, openraft::BasicNode::new(addr))]),
    );
    let applied = AppliedMeta {
        last_applied: Some(initial),
        membership: StoredMembership::new(Some(initial), membership),
    };
    let mut batch = WriteBatch::default();
    let state = db.state_cf();
    for (k, v) in pairs {
        batch.put_cf(&state, k, v);
    }
    batch.put_cf(
        &db.raft_cf(),
        applied_key,
        encode(&applied).map_err(|e| E::Corrupt(e.to_string()))?,
    );
    Ok(batch)
}
