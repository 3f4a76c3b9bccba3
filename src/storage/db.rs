//! The node's one RocksDB instance and the few ways the layers above use it.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{
    BoundColumnFamily, ColumnFamilyDescriptor, DBCompressionType, IteratorMode, MultiThreaded,
    Options, ReadOptions, WriteBatch, WriteOptions,
};

use super::wal_sync::WalSync;
use super::{Error, keys};
use crate::id::{ObjectKey, ShardId};

const CF_RAFT: &str = "raft";
const CF_STATE: &str = "state";

pub(super) type Rocks = rocksdb::DBWithThreadMode<MultiThreaded>;

/// A cheap handle to the node's RocksDB. Clones share one instance.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Rocks>,
    /// Shares one WAL fsync among appends (see `wal_sync`).
    wal_sync: Arc<WalSync>,
}

/// A key and value read back from a scan.
pub type Entry = (Box<[u8]>, Box<[u8]>);

impl Db {
    /// Opens (or creates) the database under `path` and checks its format.
    pub fn open(path: &Path) -> Result<Db, Error> {
        std::fs::create_dir_all(path).map_err(|e| Error::Io(path.display().to_string(), e))?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.increase_parallelism(2);
        opts.set_max_background_jobs(2);
        // Concurrent synced writes from many shards share one WAL fsync.
        opts.set_enable_pipelined_write(true);
        let mut cf_opts = Options::default();
        cf_opts.set_compression_type(DBCompressionType::Lz4);
        cf_opts.set_write_buffer_size(32 << 20);
        let cfs = [CF_RAFT, CF_STATE]
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, cf_opts.clone()));
        let inner = Rocks::open_cf_descriptors(&opts, path, cfs)?;
        let inner = Arc::new(inner);
        let wal_sync =
            WalSync::start(&inner).map_err(|e| Error::Io("start WAL sync thread".into(), e))?;
        let db = Db {
            inner,
            wal_sync: Arc::new(wal_sync),
        };
        db.check_format()?;
        Ok(db)
    }

    fn check_format(&self) -> Result<(), Error> {
        let key = keys::format_key();
        match self.get_raft(&key)? {
            None => {
                let mut batch = WriteBatch::default();
                batch.put_cf(&self.raft_cf(), key, keys::FORMAT_VERSION.to_be_bytes());
                self.write(batch)
            }
            Some(v) if v.as_slice() == keys::FORMAT_VERSION.to_be_bytes() => Ok(()),
            Some(v) => Err(Error::Corrupt(format!(
                "data directory has on-disk format {v:?}, this build reads version {}",
                keys::FORMAT_VERSION
            ))),
        }
    }

    /// Records the shard count of a new data directory, or checks that an
    /// existing one was created with the same count (it cannot change).
    pub fn check_shard_count(&self, shards: u16) -> Result<(), Error> {
        let key = vec![keys::RaftKind::ShardCount as u8];
        match self.get_raft(&key)? {
            None => {
                let mut batch = WriteBatch::default();
                batch.put_cf(&self.raft_cf(), key, shards.to_be_bytes());
                self.write(batch)
            }
            Some(v) if v.as_slice() == shards.to_be_bytes() => Ok(()),
            Some(v) => {
                let recorded = v.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
                Err(Error::Corrupt(format!(
                    "data directory was created with {recorded} shards, not {shards}; the shard count cannot change: start with node.shards = {recorded} (--shards {recorded}, ROOST_NODE_SHARDS={recorded})"
                )))
            }
        }
    }

    /// How many handles share this instance (the database closes when the
    /// last one is dropped).
    pub fn handles(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// Closes this handle once it is the last one, waiting up to `within`
    /// for background tasks (Raft's state machine worker among them) to let
    /// go, so that the data directory can be reopened as soon as this
    /// returns. Returns whether the database was closed.
    pub async fn close(self, within: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while self.handles() > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let closed = self.handles() == 1;
        if !closed {
            tracing::warn!(handles = self.handles(), "data store still in use at exit");
        }
        closed
    }

    pub(crate) fn raft_cf(&self) -> Arc<BoundColumnFamily<'_>> {
        self.inner
            .cf_handle(CF_RAFT)
            .expect("column family `raft` is created at open")
    }

    pub(crate) fn state_cf(&self) -> Arc<BoundColumnFamily<'_>> {
        self.inner
            .cf_handle(CF_STATE)
            .expect("column family `state` is created at open")
    }

    pub fn get_raft(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.inner.get_cf(&self.raft_cf(), key)?)
    }

    pub fn get_state(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.inner.get_cf(&self.state_cf(), key)?)
    }

    /// Reads the values of `keys_` in the state column family, in order.
    pub fn multi_get_state(&self, keys_: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        let cf = self.state_cf();
        self.inner
            .multi_get_cf(keys_.iter().map(|k| (&cf, k.as_slice())))
            .into_iter()
            .map(|r| r.map_err(Error::from))
            .collect()
    }

    /// Iterates the state column family over `[lo, hi)`, backwards if `reverse`.
    pub fn scan_state(
        &self,
        lo: Vec<u8>,
        hi: Option<Vec<u8>>,
        reverse: bool,
    ) -> impl Iterator<Item = Result<Entry, Error>> + '_ {
        self.scan(self.state_cf(), lo, hi, reverse)
    }

    /// Iterates the raft column family over `[lo, hi)`, backwards if `reverse`.
    pub fn scan_raft(
        &self,
        lo: Vec<u8>,
        hi: Option<Vec<u8>>,
        reverse: bool,
    ) -> impl Iterator<Item = Result<Entry, Error>> + '_ {
        self.scan(self.raft_cf(), lo, hi, reverse)
    }

    fn scan<'a>(
        &'a self,
        cf: Arc<BoundColumnFamily<'a>>,
        lo: Vec<u8>,
        hi: Option<Vec<u8>>,
        reverse: bool,
    ) -> impl Iterator<Item = Result<Entry, Error>> + 'a {
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(lo);
        if let Some(hi) = hi {
            ro.set_iterate_upper_bound(hi);
        }
        let mode = if reverse {
            IteratorMode::End
        } else {
            IteratorMode::Start
        };
        self.inner
            .iterator_cf_opt(&cf, ro, mode)
            .map(|r| r.map_err(Error::from))
    }

    /// Reads `raft_key` in the raft column family and every entry of the
    /// state column family in `[lo, hi)` at one point in time (a RocksDB
    /// snapshot), so that a Raft snapshot sees a shard's state and the log
    /// position it was applied up to together, while writes go on.
    pub fn read_consistent(
        &self,
        raft_key: &[u8],
        lo: Vec<u8>,
        hi: Vec<u8>,
    ) -> Result<(Option<Vec<u8>>, Vec<Entry>), Error> {
        let snapshot = self.inner.snapshot();
        let meta = snapshot.get_cf(&self.raft_cf(), raft_key)?;
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(lo);
        ro.set_iterate_upper_bound(hi);
        let entries = snapshot
            .iterator_cf_opt(&self.state_cf(), ro, IteratorMode::Start)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((meta, entries))
    }

    /// Writes without waiting for the WAL to reach the disk. Used for state
    /// that can be rebuilt from the (synced) Raft log.
    pub fn write(&self, batch: WriteBatch) -> Result<(), Error> {
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        Ok(self.inner.write_opt(batch, &wo)?)
    }

    /// Writes and fsyncs the WAL before returning. Runs on a blocking thread
    /// so that concurrent callers (many shards) are grouped by RocksDB into
    /// one fsync.
    pub async fn write_synced(&self, batch: WriteBatch) -> Result<(), Error> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut wo = WriteOptions::default();
            wo.set_sync(true);
            let started = std::time::Instant::now();
            let written = inner.write_opt(batch, &wo);
            crate::telemetry::metrics::rocksdb_sync(started.elapsed());
            written
        })
        .await
        .map_err(|e| Error::Io("synced write task".into(), std::io::Error::other(e)))??;
        Ok(())
    }

    /// Writes `batch` at once (readable as soon as this returns) and calls
    /// `done` when it is durable. The fsync is shared with every other
    /// write waiting for one: group commit across the node's shards. If
    /// the write itself fails, `done` is called with the error too.
    pub fn write_then_sync(
        &self,
        batch: WriteBatch,
        done: impl FnOnce(Result<(), Error>) + Send + 'static,
    ) -> Result<(), Error> {
        if let Err(e) = self.write(batch) {
            let message = e.to_string();
            done(Err(Error::Io(
                "write".into(),
                std::io::Error::other(message),
            )));
            return Err(e);
        }
        self.wal_sync.after_next_sync(Box::new(done))
    }

    /// An integer RocksDB property (e.g. `rocksdb.is-write-stopped`) of
    /// each column family, by name; `None` where RocksDB does not know it.
    /// DB-wide properties give the same value for every column family.
    pub fn int_property(&self, name: &str) -> Result<Vec<(&'static str, Option<u64>)>, Error> {
        let mut out = Vec::with_capacity(2);
        for (cf_name, cf) in [(CF_RAFT, self.raft_cf()), (CF_STATE, self.state_cf())] {
            out.push((cf_name, self.inner.property_int_value_cf(&cf, name)?));
        }
        Ok(out)
    }

    /// The alarm time of `object`, if it has one.
    pub fn read_alarm(&self, shard: ShardId, object: &ObjectKey) -> Result<Option<u64>, Error> {
        match self.get_state(&keys::alarm_key(shard, object))? {
            None => Ok(None),
            Some(v) => {
                let bytes: [u8; 8] = v.as_slice().try_into().map_err(|_| {
                    Error::Corrupt(format!("alarm of {object} is {} bytes", v.len()))
                })?;
                Ok(Some(u64::from_be_bytes(bytes)))
            }
        }
    }

    /// The socket registrations of `object` (at most `limit`), by socket.
    pub fn object_sockets(
        &self,
        shard: ShardId,
        object: &ObjectKey,
        limit: usize,
    ) -> Result<Vec<(u128, Vec<u8>)>, Error> {
        let lo = keys::socket_prefix(shard, object);
        let hi = keys::prefix_end(&lo);
        let mut out = Vec::new();
        for item in self.scan_state(lo.clone(), hi, false).take(limit) {
            let (k, v) = item?;
            let socket = keys::socket_of(&k, lo.len())
                .ok_or_else(|| Error::Corrupt(format!("bad socket registration key {k:?}")))?;
            out.push((socket, v.to_vec()));
        }
        Ok(out)
    }

    /// Up to `limit` of the frames `object` keeps for its sockets (the
    /// values of its ring slots, in slot order).
    pub fn object_frames(
        &self,
        shard: ShardId,
        object: &ObjectKey,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, Error> {
        let lo = keys::frame_prefix(shard, object);
        let hi = keys::prefix_end(&lo);
        let mut out = Vec::new();
        for item in self.scan_state(lo, hi, false).take(limit) {
            let (_, v) = item?;
            out.push(v.to_vec());
        }
        Ok(out)
    }

    /// Every alarm of `shard`, in due order.
    pub fn shard_alarms(&self, shard: ShardId) -> Result<Vec<(u64, ObjectKey)>, Error> {
        let (lo, hi) = keys::alarm_due_range(shard);
        let mut out = Vec::new();
        for item in self.scan_state(lo, Some(hi), false) {
            let (k, _) = item?;
            let decoded = keys::decode_alarm_due(&k)
                .ok_or_else(|| Error::Corrupt(format!("bad alarm index key {k:?}")))?;
            out.push(decoded);
        }
        Ok(out)
    }
}
