//! The storage API an object sees (Cloudflare's `state.storage`).
//!
//! Reads are served locally (the event's writes, the pending overlay, the
//! leader's RocksDB replica) and are therefore synchronous. Writes are
//! buffered in the event and committed atomically through Raft when the
//! event ends; nothing here waits for a commit.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::http::HandlerError;
use super::view::{AlarmChange, Layer, Pending, Range, Reader, entry_size};
use crate::id::{ObjectKey, ShardId};
use crate::storage::{self, Db};
use crate::telemetry::metrics;

/// Size limits on what objects store, enforced on every call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest key, in bytes of UTF-8 (Cloudflare: 2 KiB).
    pub max_key_bytes: usize,
    /// Largest value, in bytes (Cloudflare: 128 KiB).
    pub max_value_bytes: usize,
    /// Most keys in one `get_many` / `put_many` / `delete_many` (Cloudflare: 128).
    pub max_keys_per_call: usize,
    /// Most bytes one event may write: keys and values, deletes included,
    /// plus a small overhead per key. Its log entry (with a group commit of
    /// other events, `raft.max_batch_bytes`) stays below the Raft message
    /// limit (`rpc::raft::MAX_MESSAGE_BYTES`, 64 MiB).
    pub max_event_write_bytes: usize,
    /// Largest WebSocket attachment, in bytes of its serialized form.
    pub max_attachment_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 2048,
            max_value_bytes: 128 * 1024,
            max_keys_per_call: 128,
            max_event_write_bytes: 16 * 1024 * 1024,
            max_attachment_bytes: 2048,
        }
    }
}

/// Why a storage call failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("key is {len} bytes; the limit is {max}")]
    KeyTooLarge { len: usize, max: usize },
    #[error("value is {len} bytes; the limit is {max}")]
    ValueTooLarge { len: usize, max: usize },
    #[error("{n} keys in one call; the limit is {max}")]
    TooManyKeys { n: usize, max: usize },
    #[error("this event writes {len} bytes; the limit is {max}")]
    EventTooLarge { len: usize, max: usize },
    #[error("invalid list options: {0}")]
    InvalidOptions(&'static str),
    #[error("stored value is not valid JSON for this type: {0}")]
    Decode(String),
    #[error("value cannot be serialized: {0}")]
    Encode(String),
    #[error(transparent)]
    Backend(#[from] storage::Error),
}

impl From<StorageError> for HandlerError {
    fn from(e: StorageError) -> Self {
        let (status, code) = match &e {
            StorageError::KeyTooLarge { .. } => (StatusCode::BAD_REQUEST, "key_too_large"),
            StorageError::ValueTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "value_too_large")
            }
            StorageError::TooManyKeys { .. } => (StatusCode::BAD_REQUEST, "too_many_keys"),
            StorageError::EventTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "write_too_large")
            }
            StorageError::InvalidOptions(_) => (StatusCode::BAD_REQUEST, "invalid_list_options"),
            StorageError::Encode(_) => (StatusCode::BAD_REQUEST, "invalid_value"),
            StorageError::Decode(_) | StorageError::Backend(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "storage")
            }
        };
        HandlerError::new(status, code, e)
    }
}

/// Options of [`Storage::list`], as in Cloudflare.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// Keys at or after this one.
    pub start: Option<String>,
    /// Keys strictly after this one (exclusive with `start`).
    pub start_after: Option<String>,
    /// Keys strictly before this one.
    pub end: Option<String>,
    /// Only keys with this prefix.
    pub prefix: Option<String>,
    /// Descending order.
    pub reverse: bool,
    /// At most this many entries.
    pub limit: Option<usize>,
}

/// One object's transactional storage, for the running event.
pub struct Storage {
    pub(crate) db: Db,
    pub(crate) shard: ShardId,
    /// Where the object's state lives (under its class's identity).
    pub(crate) object: ObjectKey,
    /// The object's binding: the label of its metrics.
    pub(crate) binding: Arc<str>,
    pub(crate) limits: Arc<Limits>,
    pub(crate) pending: Pending,
    /// The event's layer, then one per open transaction.
    pub(crate) layers: Vec<Layer>,
}

impl Storage {
    pub(crate) fn new(
        db: Db,
        shard: ShardId,
        object: ObjectKey,
        binding: Arc<str>,
        limits: Arc<Limits>,
    ) -> Self {
        Storage {
            db,
            shard,
            object,
            binding,
            limits,
            pending: Pending::default(),
            layers: vec![Layer::default()],
        }
    }

    fn reader(&self) -> Reader<'_> {
        Reader {
            db: &self.db,
            shard: self.shard,
            object: &self.object,
            pending: &self.pending,
            layers: &self.layers,
        }
    }

    pub(crate) fn top_layer(&mut self) -> &mut Layer {
        if self.layers.is_empty() {
            self.layers.push(Layer::default());
        }
        let last = self.layers.len() - 1;
        &mut self.layers[last]
    }

    fn check_key(&self, key: &str) -> Result<(), StorageError> {
        if key.len() > self.limits.max_key_bytes {
            return Err(StorageError::KeyTooLarge {
                len: key.len(),
                max: self.limits.max_key_bytes,
            });
        }
        Ok(())
    }

    fn check_count(&self, n: usize) -> Result<(), StorageError> {
        if n > self.limits.max_keys_per_call {
            return Err(StorageError::TooManyKeys {
                n,
                max: self.limits.max_keys_per_call,
            });
        }
        Ok(())
    }

    fn check_event_size(&self, adding: usize) -> Result<(), StorageError> {
        let len = self.layers.iter().map(Layer::size).sum::<usize>() + adding;
        if len > self.limits.max_event_write_bytes {
            return Err(StorageError::EventTooLarge {
                len,
                max: self.limits.max_event_write_bytes,
            });
        }
        Ok(())
    }

    /// The value of `key`, if any.
    pub fn get(&self, key: &str) -> Result<Option<Bytes>, StorageError> {
        self.check_key(key)?;
        let value = self.reader().get(key)?;
        let bytes = key.len() + value.as_ref().map_or(0, Bytes::len);
        metrics::storage_op(&self.binding, "get", "read", bytes);
        Ok(value)
    }

    /// The values of up to `max_keys_per_call` keys; missing keys are absent.
    pub fn get_many(&self, keys: &[&str]) -> Result<BTreeMap<String, Bytes>, StorageError> {
        self.check_count(keys.len())?;
        let mut out = BTreeMap::new();
        for key in keys {
            if let Some(v) = self.get(key)? {
                out.insert((*key).to_owned(), v);
            }
        }
        Ok(out)
    }

    /// Stores `value` under `key`.
    pub fn put(&mut self, key: &str, value: impl Into<Bytes>) -> Result<(), StorageError> {
        let value = value.into();
        self.check_key(key)?;
        if value.len() > self.limits.max_value_bytes {
            return Err(StorageError::ValueTooLarge {
                len: value.len(),
                max: self.limits.max_value_bytes,
            });
        }
        self.check_event_size(entry_size(key, value.len()))?;
        let bytes = key.len() + value.len();
        metrics::storage_op(&self.binding, "put", "write", bytes);
        self.top_layer().map.insert(key.to_owned(), Some(value));
        Ok(())
    }

    /// Stores several entries atomically: all or none.
    pub fn put_many(&mut self, entries: Vec<(String, Bytes)>) -> Result<(), StorageError> {
        self.check_count(entries.len())?;
        self.transaction(|s| {
            for (k, v) in entries {
                s.put(&k, v)?;
            }
            Ok(())
        })
    }

    /// Deletes `key`; returns whether it existed. A delete counts toward
    /// the event's write limit like a write of an empty value.
    pub fn delete(&mut self, key: &str) -> Result<bool, StorageError> {
        self.check_key(key)?;
        self.check_event_size(entry_size(key, 0))?;
        let existed = self.get(key)?.is_some();
        metrics::storage_op(&self.binding, "delete", "write", key.len());
        self.top_layer().map.insert(key.to_owned(), None);
        Ok(existed)
    }

    /// Deletes several keys; returns how many existed.
    pub fn delete_many(&mut self, keys: &[&str]) -> Result<usize, StorageError> {
        self.check_count(keys.len())?;
        for key in keys {
            self.check_key(key)?;
        }
        // All or none: the limit is checked before the first delete.
        self.check_event_size(keys.iter().map(|k| entry_size(k, 0)).sum())?;
        let mut n = 0;
        for key in keys {
            n += usize::from(self.delete(key)?);
        }
        Ok(n)
    }

    /// Entries in key order (or reverse), as selected by `opts`.
    pub fn list(&self, opts: &ListOptions) -> Result<Vec<(String, Bytes)>, StorageError> {
        let Some(range) = self.range(opts)? else {
            return Ok(Vec::new());
        };
        let entries = self.reader().list(&range)?;
        let bytes = entries.iter().map(|(k, v)| k.len() + v.len()).sum();
        metrics::storage_op(&self.binding, "list", "read", bytes);
        Ok(entries)
    }

    fn range(&self, opts: &ListOptions) -> Result<Option<Range>, StorageError> {
        if opts.start.is_some() && opts.start_after.is_some() {
            return Err(StorageError::InvalidOptions(
                "`start` and `start_after` cannot both be set",
            ));
        }
        for k in [&opts.start, &opts.start_after, &opts.end, &opts.prefix]
            .into_iter()
            .flatten()
        {
            self.check_key(k)?;
        }
        let mut lo = match (&opts.start, &opts.start_after) {
            (Some(s), _) => Bound::Included(s.clone()),
            (_, Some(s)) => Bound::Excluded(s.clone()),
            _ => Bound::Unbounded,
        };
        let mut hi = opts.end.clone().map_or(Bound::Unbounded, Bound::Excluded);
        if let Some(prefix) = &opts.prefix {
            let below = match &lo {
                Bound::Included(s) | Bound::Excluded(s) => s.as_str() < prefix.as_str(),
                Bound::Unbounded => true,
            };
            if below {
                lo = Bound::Included(prefix.clone());
            }
            if let Some(end) = prefix_successor(prefix) {
                let above = match &hi {
                    Bound::Excluded(s) | Bound::Included(s) => s.as_str() > end.as_str(),
                    Bound::Unbounded => true,
                };
                if above {
                    hi = Bound::Excluded(end);
                }
            }
        }
        let empty = match (&lo, &hi) {
            (Bound::Included(a), Bound::Excluded(b)) => a >= b,
            (Bound::Excluded(a), Bound::Excluded(b)) => a >= b,
            _ => false,
        };
        if empty || opts.limit == Some(0) {
            return Ok(None);
        }
        Ok(Some(Range {
            lo,
            hi,
            reverse: opts.reverse,
            limit: opts.limit,
        }))
    }

    /// Deletes every key of the object (its alarm stays, as in Cloudflare).
    pub fn delete_all(&mut self) -> Result<(), StorageError> {
        metrics::storage_op(&self.binding, "delete_all", "write", 0);
        let top = self.top_layer();
        top.map.clear();
        top.cleared = true;
        Ok(())
    }

    /// Runs `f` as a transaction: its writes apply together if it returns
    /// `Ok`, and are rolled back if it returns `Err`.
    pub fn transaction<T, E>(
        &mut self,
        f: impl FnOnce(&mut Storage) -> Result<T, E>,
    ) -> Result<T, E> {
        let depth = self.layers.len();
        self.layers.push(Layer::default());
        let result = f(self);
        // Anything `f` left open above our layer folds into it first.
        while self.layers.len() > depth + 1 {
            if let Some(inner) = self.layers.pop() {
                self.top_layer().absorb(inner);
            }
        }
        let ours = self.layers.pop().unwrap_or_default();
        if result.is_ok() {
            self.top_layer().absorb(ours);
        }
        result
    }

    /// The alarm time (ms since the Unix epoch), if one is set.
    pub fn get_alarm(&self) -> Result<Option<u64>, StorageError> {
        metrics::storage_op(&self.binding, "get_alarm", "read", 0);
        Ok(self.reader().alarm()?)
    }

    /// Sets the object's one alarm, replacing any other.
    pub fn set_alarm(&mut self, at_ms: u64) -> Result<(), StorageError> {
        metrics::storage_op(&self.binding, "set_alarm", "write", 0);
        self.top_layer().alarm = Some(AlarmChange::Set(at_ms));
        Ok(())
    }

    /// Removes the object's alarm, if any.
    pub fn delete_alarm(&mut self) -> Result<(), StorageError> {
        metrics::storage_op(&self.binding, "delete_alarm", "write", 0);
        self.top_layer().alarm = Some(AlarmChange::Delete);
        Ok(())
    }

    /// Reads `key` as JSON.
    pub fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError> {
        match self.get(key)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StorageError::Decode(e.to_string())),
        }
    }

    /// Stores `value` as JSON under `key`.
    pub fn put_json<T: Serialize + ?Sized>(
        &mut self,
        key: &str,
        value: &T,
    ) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StorageError::Encode(e.to_string()))?;
        self.put(key, bytes)
    }

    /// Lists entries and decodes each value as JSON.
    pub fn list_json<T: DeserializeOwned>(
        &self,
        opts: &ListOptions,
    ) -> Result<Vec<(String, T)>, StorageError> {
        self.list(opts)?
            .into_iter()
            .map(|(k, v)| {
                serde_json::from_slice(&v)
                    .map(|t| (k, t))
                    .map_err(|e| StorageError::Decode(e.to_string()))
            })
            .collect()
    }

    /// Takes the event's writes, leaving an empty layer for the next event.
    pub(crate) fn take_event_layer(&mut self) -> Layer {
        let mut event = std::mem::take(&mut self.layers).into_iter();
        let mut layer = event.next().unwrap_or_default();
        for inner in event {
            layer.absorb(inner);
        }
        self.layers.push(Layer::default());
        layer
    }

    /// Drops the event's writes (the handler failed).
    pub(crate) fn discard_event_layer(&mut self) {
        self.layers.clear();
        self.layers.push(Layer::default());
    }
}

/// The smallest string greater than every string starting with `prefix`.
fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        // Skip the surrogate gap.
        if (0xD800..=0xDFFF).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}
