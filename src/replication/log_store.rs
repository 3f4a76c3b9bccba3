//! One shard's Raft log, vote and log pointers in the `raft` column family.
//!
//! Owns the `RaftKind::{Log, Vote, Committed, Purged}` records of its shard
//! and nothing else; never touches the state machine. Every write that Raft
//! relies on for safety (entries, vote, truncation, purge) is fsynced before
//! it is reported done; only the committed pointer is written lazily, since
//! losing it just means re-learning it from the leader.

// openraft's traits return its (large) StorageError; the helpers here match them.
#![allow(clippy::result_large_err)]

use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, RaftLogId, RaftLogReader, StorageIOError};
use rocksdb::WriteBatch;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::types::{Entry, LogId, StorageError, TypeConfig, Vote, decode, encode};
use crate::id::ShardId;
use crate::storage::keys::{self, RaftKind};
use crate::storage::{self, Db};

/// The log store of one shard. Clones share the database and serve as
/// openraft's log readers (replication streams read concurrently).
#[derive(Clone)]
pub struct LogStore {
    db: Db,
    shard: ShardId,
}

impl LogStore {
    pub fn new(db: Db, shard: ShardId) -> LogStore {
        LogStore { db, shard }
    }

    /// The first key past every log entry of this shard.
    fn log_end(&self) -> Vec<u8> {
        let prefix = keys::raft_key(RaftKind::Log, self.shard);
        keys::prefix_end(&prefix).unwrap_or_else(|| vec![0xff; 12])
    }

    fn read_record<T: DeserializeOwned>(&self, kind: RaftKind) -> Result<Option<T>, StorageError> {
        let key = keys::raft_key(kind, self.shard);
        let Some(bytes) = self.db.get_raft(&key).map_err(read)? else {
            return Ok(None);
        };
        let value = decode(&bytes)
            .map_err(|e| read(format!("decode {kind:?} of shard {}: {e}", self.shard)))?;
        Ok(Some(value))
    }

    fn put_record<T: Serialize>(
        &self,
        batch: &mut WriteBatch,
        kind: RaftKind,
        value: &T,
    ) -> Result<(), StorageError> {
        let bytes = encode(value).map_err(write)?;
        batch.put_cf(&self.db.raft_cf(), keys::raft_key(kind, self.shard), bytes);
        Ok(())
    }

    /// Entries with index in `[lo, hi)`, `hi = None` meaning to the end.
    fn read_entries(&self, lo: u64, hi: Option<u64>) -> Result<Vec<Entry>, StorageError> {
        let upper = match hi {
            Some(hi) => keys::log_key(self.shard, hi),
            None => self.log_end(),
        };
        let mut out = Vec::new();
        for item in self
            .db
            .scan_raft(keys::log_key(self.shard, lo), Some(upper), false)
        {
            let (key, value) = item.map_err(read)?;
            let entry: Entry = decode(&value).map_err(|e| {
                read(format!(
                    "decode log entry {:?} of shard {}: {e}",
                    keys::log_index(&key),
                    self.shard
                ))
            })?;
            out.push(entry);
        }
        Ok(out)
    }

    /// The id of the last entry present, if any.
    fn last_entry_id(&self) -> Result<Option<LogId>, StorageError> {
        let lo = keys::log_key(self.shard, 0);
        let Some(item) = self.db.scan_raft(lo, Some(self.log_end()), true).next() else {
            return Ok(None);
        };
        let (_, value) = item.map_err(read)?;
        let entry: Entry =
            decode(&value).map_err(|e| read(format!("decode last log entry: {e}")))?;
        Ok(Some(*entry.get_log_id()))
    }
}

fn read(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::read_logs(AnyError::error(e)).into()
}

fn write(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_logs(AnyError::error(e)).into()
}

fn range_to_bounds(range: &impl RangeBounds<u64>) -> (u64, Option<u64>) {
    let lo = match range.start_bound() {
        Bound::Included(&n) => n,
        Bound::Excluded(&n) => n.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let hi = match range.end_bound() {
        Bound::Included(&n) => n.checked_add(1),
        Bound::Excluded(&n) => Some(n),
        Bound::Unbounded => None,
    };
    (lo, hi)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (lo, hi) = range_to_bounds(&range);
        if hi.is_some_and(|hi| hi <= lo) {
            return Ok(Vec::new());
        }
        self.read_entries(lo, hi)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.read_record(RaftKind::Purged)?;
        let last_log_id = self.last_entry_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        self.put_record(&mut batch, RaftKind::Vote, vote)?;
        self.db
            .write_synced(batch)
            .await
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_record(RaftKind::Vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not synced: after a crash the committed pointer is re-learnt; the
        // next synced write (any shard's) makes it durable anyway.
        let mut batch = WriteBatch::default();
        self.put_record(&mut batch, RaftKind::Committed, &committed)?;
        self.db.write(batch).map_err(write)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self
            .read_record::<Option<LogId>>(RaftKind::Committed)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        // One batch for all the entries.
        let mut batch = WriteBatch::default();
        let cf = self.db.raft_cf();
        for entry in entries {
            let bytes = encode(&entry).map_err(write)?;
            batch.put_cf(
                &cf,
                keys::log_key(self.shard, entry.get_log_id().index),
                bytes,
            );
        }
        drop(cf);
        // Written (and readable) now; durable, and reported to Raft as
        // flushed, after the next WAL fsync, which other shards' appends
        // share. RaftCore goes on meanwhile.
        self.db
            .write_then_sync(batch, move |result| {
                callback.log_io_completed(result.map_err(|e| std::io::Error::other(e.to_string())));
            })
            .map_err(write)
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(shard = self.shard, since = %log_id, "truncate log");
        let mut batch = WriteBatch::default();
        let from = keys::log_key(self.shard, log_id.index);
        batch.delete_range_cf(&self.db.raft_cf(), from, self.log_end());
        self.db.write_synced(batch).await.map_err(write)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(shard = self.shard, upto = %log_id, "purge log");
        let mut batch = WriteBatch::default();
        self.put_record(&mut batch, RaftKind::Purged, &log_id)?;
        let upto = match log_id.index.checked_add(1) {
            Some(next) => keys::log_key(self.shard, next),
            None => self.log_end(),
        };
        batch.delete_range_cf(&self.db.raft_cf(), keys::log_key(self.shard, 0), upto);
        self.db.write_synced(batch).await.map_err(write)
    }
}

/// Reads a shard's log state without a running Raft (tests, diagnostics).
pub fn log_bounds(db: &Db, shard: ShardId) -> Result<(Option<u64>, Option<u64>), storage::Error> {
    let prefix = keys::raft_key(RaftKind::Log, shard);
    let end = keys::prefix_end(&prefix);
    let first = db
        .scan_raft(keys::log_key(shard, 0), end.clone(), false)
        .next()
        .transpose()?
        .and_then(|(k, _)| keys::log_index(&k));
    let last = db
        .scan_raft(keys::log_key(shard, 0), end, true)
        .next()
        .transpose()?
        .and_then(|(k, _)| keys::log_index(&k));
    Ok((first, last))
}
