//! One shard's Raft log, vote and log pointers in the `raft` column family.
//!
//! Owns the `RaftKind::{Log, Vote, Committed, Purged}` records of its shard
//! and nothing else; never touches the state machine. Every write that Raft
//! relies on for safety (entries, vote, truncation, purge) is fsynced before
//! it is reported done; only the committed pointer is written lazily, since
//! losing it just means re-learning it from the leader: not synced, and at
//! most every [`COMMITTED_EVERY`] (openraft reports every advance, on every
//! node; a stale pointer is still an index that was committed, and at
//! startup openraft applies up to the larger of it and the state machine's
//! applied index).
//!
//! The entries appended last are also kept in memory ([`Recent`]), because
//! openraft reads each entry back right after appending it: on the leader
//! once per follower to replicate it, and on every node to apply it. A read
//! the cache holds entirely is answered from it; any other from RocksDB.
//! The cache only ever holds entries that are in RocksDB too (it is filled
//! after the write and cut by truncation and purge), so it answers what a
//! RocksDB read at the same moment would.

// openraft's traits return its (large) StorageError; the helpers here match them.
#![allow(clippy::result_large_err)]

use std::collections::VecDeque;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, RaftLogId, RaftLogReader, StorageIOError};
use rocksdb::WriteBatch;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::types::{Entry, LogId, StorageError, TypeConfig, Vote, decode, encode};
use crate::id::ShardId;
use crate::storage::keys::{self, RaftKind};
use crate::storage::{self, Db};

/// The log store of one shard. Clones share the database and the cache of
/// recent entries, and serve as openraft's log readers (replication streams
/// read concurrently).
#[derive(Clone)]
pub struct LogStore {
    db: Db,
    shard: ShardId,
    recent: Arc<Mutex<Recent>>,
    /// When the committed pointer was last written (by the store RaftCore
    /// owns; its clones only read).
    committed_written: Option<Instant>,
}

/// Longest time between two writes of the committed pointer while it moves.
/// Written at every advance, it was one RocksDB write per entry on every
/// node: 0.7% of a cluster's CPU samples over 1,000 counters, plus its WAL
/// `write` (benches/profile.md).
const COMMITTED_EVERY: Duration = Duration::from_millis(100);

/// Most entries [`Recent`] keeps.
const RECENT_ENTRIES: usize = 256;
/// Most bytes (encoded) [`Recent`] keeps; a larger entry is not kept.
const RECENT_BYTES: usize = 1 << 20;

/// The last entries appended, with consecutive indexes, and their encoded
/// sizes. Profiled on a 3-node cluster (benches/profile.md): reading them
/// back from RocksDB (an iterator and a decode per read) was 4% of the
/// cluster's CPU samples over 1,000 counters.
#[derive(Default)]
struct Recent {
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl Recent {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.get_log_id().index)
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Keeps `entry` (just written) as the newest; starts over unless it
    /// follows the newest kept one.
    fn push(&mut self, entry: Entry, size: usize) {
        let index = entry.get_log_id().index;
        let follows = self
            .entries
            .back()
            .is_some_and(|(last, _)| last.get_log_id().index.checked_add(1) == Some(index));
        if !follows {
            self.clear();
        }
        if size > RECENT_BYTES {
            self.clear();
            return;
        }
        self.bytes += size;
        self.entries.push_back((entry, size));
        while self.entries.len() > RECENT_ENTRIES || self.bytes > RECENT_BYTES {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
        }
    }

    /// Forgets the entries from `index` on (a truncation).
    fn truncate(&mut self, index: u64) {
        while let Some((last, size)) = self.entries.back() {
            if last.get_log_id().index < index {
                break;
            }
            self.bytes -= *size;
            self.entries.pop_back();
        }
    }

    /// Forgets the entries up to `index` (a purge).
    fn purge(&mut self, index: u64) {
        while self.first_index().is_some_and(|first| first <= index) {
            self.pop_front();
        }
    }

    /// The entries `[lo, hi)` (`hi = None`: to the newest) if every one of
    /// them is kept, else `None`.
    fn get(&self, lo: u64, hi: Option<u64>) -> Option<Vec<Entry>> {
        let first = self.first_index()?;
        let next = first.checked_add(self.entries.len() as u64)?;
        let hi = hi.unwrap_or(next);
        if lo < first || hi > next {
            return None;
        }
        let from = usize::try_from(lo - first).ok()?;
        let to = usize::try_from(hi.saturating_sub(first)).ok()?;
        Some(
            self.entries
                .range(from..to.max(from))
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }
}

impl LogStore {
    pub fn new(db: Db, shard: ShardId) -> LogStore {
        LogStore {
            db,
            shard,
            recent: Arc::default(),
            committed_written: None,
        }
    }

    /// The cache, even if a thread panicked holding it (it only ever holds
    /// entries that are in RocksDB, so no state of it is wrong, only short).
    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        if let Some(entries) = self.recent().get(lo, hi) {
            return Ok(entries);
        }
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
        // next synced write (any shard's) makes it durable anyway. Skipped
        // within COMMITTED_EVERY of the last write: what is stored stays a
        // committed index, only an older one.
        let now = Instant::now();
        if self
            .committed_written
            .is_some_and(|at| now.duration_since(at) < COMMITTED_EVERY)
        {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        self.put_record(&mut batch, RaftKind::Committed, &committed)?;
        self.db.write(batch).map_err(write)?;
        self.committed_written = Some(now);
        Ok(())
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
        let mut written = Vec::new();
        let cf = self.db.raft_cf();
        for entry in entries {
            let bytes = encode(&entry).map_err(write)?;
            batch.put_cf(
                &cf,
                keys::log_key(self.shard, entry.get_log_id().index),
                &bytes,
            );
            written.push((entry, bytes.len()));
        }
        drop(cf);
        // Written (and readable) now; durable, and reported to Raft as
        // flushed, after the next WAL fsync, which other shards' appends
        // share. RaftCore goes on meanwhile. The cache takes the entries
        // only once RocksDB has them, so it is never ahead of a read of it.
        // (Appends, truncations and purges come one at a time from RaftCore;
        // only reads run beside them.)
        let result = self.db.write_then_sync(batch, move |result| {
            callback.log_io_completed(result.map_err(|e| std::io::Error::other(e.to_string())));
        });
        let mut recent = self.recent();
        match result {
            Ok(()) => {
                for (entry, size) in written {
                    recent.push(entry, size);
                }
                Ok(())
            }
            Err(e) => {
                recent.clear();
                Err(write(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(shard = self.shard, since = %log_id, "truncate log");
        let mut batch = WriteBatch::default();
        let from = keys::log_key(self.shard, log_id.index);
        batch.delete_range_cf(&self.db.raft_cf(), from, self.log_end());
        // Forgotten before the delete, so that no read finds in the cache
        // what RocksDB no longer holds.
        self.recent().truncate(log_id.index);
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
        self.recent().purge(log_id.index);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: openraft::EntryPayload::Blank,
        }
    }

    fn indexes(entries: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        entries.map(|es| es.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn recent_entries_answer_only_reads_they_hold_entirely() {
        let mut recent = Recent::default();
        assert_eq!(indexes(recent.get(0, None)), None);
        for i in 5..=9 {
            recent.push(entry(i), 10);
        }
        assert_eq!(indexes(recent.get(6, Some(8))), Some(vec![6, 7]));
        assert_eq!(indexes(recent.get(8, None)), Some(vec![8, 9]));
        assert_eq!(indexes(recent.get(10, None)), Some(vec![]));
        assert_eq!(indexes(recent.get(4, Some(6))), None, "5 is the first kept");
        assert_eq!(indexes(recent.get(9, Some(11))), None, "10 is not written");
        // A gap (or a rewrite without a truncation) starts over.
        recent.push(entry(12), 10);
        assert_eq!(indexes(recent.get(9, Some(10))), None);
        assert_eq!(indexes(recent.get(12, None)), Some(vec![12]));
    }

    #[test]
    fn truncation_and_purge_cut_the_recent_entries() {
        let mut recent = Recent::default();
        for i in 1..=6 {
            recent.push(entry(i), 10);
        }
        recent.truncate(5);
        assert_eq!(indexes(recent.get(1, None)), Some(vec![1, 2, 3, 4]));
        recent.push(entry(5), 10);
        recent.purge(2);
        assert_eq!(indexes(recent.get(3, None)), Some(vec![3, 4, 5]));
        assert_eq!(indexes(recent.get(2, None)), None);
        assert_eq!(recent.bytes, 30);
    }

    #[test]
    fn recent_entries_stay_within_their_bounds() {
        let mut recent = Recent::default();
        for i in 0..(RECENT_ENTRIES as u64 + 10) {
            recent.push(entry(i), 1);
        }
        assert_eq!(recent.entries.len(), RECENT_ENTRIES);
        assert_eq!(recent.first_index(), Some(10));
        recent.push(entry(RECENT_ENTRIES as u64 + 10), RECENT_BYTES);
        assert_eq!(recent.entries.len(), 1, "older entries make room");
        assert_eq!(recent.bytes, RECENT_BYTES);
        recent.push(entry(RECENT_ENTRIES as u64 + 11), RECENT_BYTES + 1);
        assert!(recent.entries.is_empty(), "too large to keep");
        assert_eq!(recent.bytes, 0);
    }
}
