//! An object's view of its storage: the event's uncommitted writes over the
//! writes still waiting for their commit, over the applied state in RocksDB.
//!
//! Reads see, from the top down: the open transaction layers of the running
//! event, then the [`Pending`] overlay of earlier events' writes that are
//! proposed but not yet applied, then RocksDB. That is what lets the next
//! event run against the cached state while earlier writes commit.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;

use crate::id::{ObjectKey, ShardId};
use crate::storage::{self, Db, Mutation, keys};

/// A change to the object's alarm made by an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AlarmChange {
    Set(u64),
    Delete,
    /// The alarm that fired at this time is done (unless replaced).
    Fired(u64),
}

impl AlarmChange {
    /// The alarm as the object sees it after this change.
    pub(crate) fn visible(self) -> Option<u64> {
        match self {
            AlarmChange::Set(at) => Some(at),
            AlarmChange::Delete | AlarmChange::Fired(_) => None,
        }
    }
}

/// What one key written or deleted adds to a log entry beyond the key and
/// value bytes (its mutation's tag and lengths, with room to spare), so
/// that many small writes or deletes count too.
pub(crate) const ENTRY_OVERHEAD: usize = 16;

/// What writing `value_len` bytes under `key` (0 for a delete) adds to a
/// log entry.
pub(crate) fn entry_size(key: &str, value_len: usize) -> usize {
    key.len() + value_len + ENTRY_OVERHEAD
}

/// Writes of one event (or one open transaction inside it).
#[derive(Default, Debug)]
pub(crate) struct Layer {
    /// Key → new value (`None` = deleted).
    pub map: BTreeMap<String, Option<Bytes>>,
    /// `deleteAll` ran: nothing below this layer is visible.
    pub cleared: bool,
    pub alarm: Option<AlarmChange>,
    /// Socket registrations put (`Some`) or deleted (`None`), by stable
    /// id. Only the executor adds these, to an event's outermost layer,
    /// never a transaction: the object does not see them.
    pub sockets: BTreeMap<u128, Option<Bytes>>,
    /// Frames the event sent its sockets, kept by ring slot (`replay.rs`).
    /// Only the executor adds these, with the registrations.
    pub frames: BTreeMap<u16, Bytes>,
}

impl Layer {
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
            && !self.cleared
            && self.alarm.is_none()
            && self.sockets.is_empty()
            && self.frames.is_empty()
    }

    /// Folds a committed inner transaction into this layer.
    pub fn absorb(&mut self, inner: Layer) {
        if inner.cleared {
            self.map.clear();
            self.cleared = true;
        }
        self.map.extend(inner.map);
        if inner.alarm.is_some() {
            self.alarm = inner.alarm;
        }
        self.sockets.extend(inner.sockets);
        self.frames.extend(inner.frames);
    }

    /// The mutations that reproduce this layer, coalesced: one per key.
    pub fn to_mutations(&self) -> Vec<Mutation> {
        let mut out = Vec::with_capacity(self.map.len() + 2);
        if self.cleared {
            out.push(Mutation::DeleteAll);
        }
        for (key, value) in &self.map {
            match value {
                Some(value) => out.push(Mutation::Put {
                    key: key.clone(),
                    value: value.clone(),
                }),
                // After a clear the key is already gone.
                None if self.cleared => {}
                None => out.push(Mutation::Delete { key: key.clone() }),
            }
        }
        match self.alarm {
            Some(AlarmChange::Set(at_ms)) => out.push(Mutation::SetAlarm { at_ms }),
            Some(AlarmChange::Delete) => out.push(Mutation::DeleteAlarm),
            Some(AlarmChange::Fired(at_ms)) => out.push(Mutation::DeleteAlarmIf { at_ms }),
            None => {}
        }
        for (&socket, value) in &self.sockets {
            out.push(match value {
                Some(value) => Mutation::PutSocket {
                    socket,
                    value: value.clone(),
                },
                None => Mutation::DeleteSocket { socket },
            });
        }
        out.extend(self.frames.iter().map(|(&slot, value)| Mutation::PutFrame {
            slot,
            value: value.clone(),
        }));
        out
    }

    /// Bytes this layer adds to a log entry (for the per-event write
    /// limit): each key and value, deletes included, plus
    /// [`ENTRY_OVERHEAD`] per key.
    pub fn size(&self) -> usize {
        self.map
            .iter()
            .map(|(k, v)| entry_size(k, v.as_ref().map_or(0, Bytes::len)))
            .sum()
    }
}

/// Writes proposed to Raft but not yet applied, tagged with the sequence
/// number of the proposal that carries them.
#[derive(Default, Debug)]
pub(crate) struct Pending {
    map: BTreeMap<String, (u64, Option<Bytes>)>,
    cleared: Option<u64>,
    alarm: Option<(u64, AlarmChange)>,
}

impl Pending {
    /// Records an event's layer, proposed as sequence `seq`.
    pub fn push(&mut self, seq: u64, layer: &Layer) {
        if layer.cleared {
            self.map.clear();
            self.cleared = Some(seq);
        }
        for (k, v) in &layer.map {
            self.map.insert(k.clone(), (seq, v.clone()));
        }
        if let Some(change) = layer.alarm {
            self.alarm = Some((seq, change));
        }
    }

    /// Forgets what RocksDB now has: everything up to `committed`.
    pub fn prune(&mut self, committed: u64) {
        self.map.retain(|_, (seq, _)| *seq > committed);
        if self.cleared.is_some_and(|s| s <= committed) {
            self.cleared = None;
        }
        if self.alarm.is_some_and(|(s, _)| s <= committed) {
            self.alarm = None;
        }
    }
}

/// Range bounds of a list, in user-key space.
#[derive(Clone, Debug)]
pub(crate) struct Range {
    pub lo: Bound<String>,
    pub hi: Bound<String>,
    pub reverse: bool,
    pub limit: Option<usize>,
}

/// Reads through the layers for one object.
pub(crate) struct Reader<'a> {
    pub db: &'a Db,
    pub shard: ShardId,
    pub object: &'a ObjectKey,
    pub pending: &'a Pending,
    /// The running event's layers, outermost first.
    pub layers: &'a [Layer],
}

impl Reader<'_> {
    pub fn get(&self, key: &str) -> Result<Option<Bytes>, storage::Error> {
        for layer in self.layers.iter().rev() {
            if let Some(v) = layer.map.get(key) {
                return Ok(v.clone());
            }
            if layer.cleared {
                return Ok(None);
            }
        }
        if let Some((_, v)) = self.pending.map.get(key) {
            return Ok(v.clone());
        }
        if self.pending.cleared.is_some() {
            return Ok(None);
        }
        let value = self
            .db
            .get_state(&keys::data_key(self.shard, self.object, key))?;
        Ok(value.map(Bytes::from))
    }

    pub fn alarm(&self) -> Result<Option<u64>, storage::Error> {
        for layer in self.layers.iter().rev() {
            if let Some(change) = layer.alarm {
                return Ok(change.visible());
            }
        }
        if let Some((_, change)) = self.pending.alarm {
            return Ok(change.visible());
        }
        self.db.read_alarm(self.shard, self.object)
    }

    /// Lists keys in `range`, merging the layers over RocksDB.
    pub fn list(&self, range: &Range) -> Result<Vec<(String, Bytes)>, storage::Error> {
        // What the layers above RocksDB say about keys in range; the
        // topmost layer wins.
        let mut upper: BTreeMap<&str, Option<&Bytes>> = BTreeMap::new();
        let mut base_visible = true;
        for layer in self.layers.iter().rev() {
            for (k, v) in layer
                .map
                .range::<String, _>((range.lo.as_ref(), range.hi.as_ref()))
            {
                upper.entry(k.as_str()).or_insert(v.as_ref());
            }
            if layer.cleared {
                base_visible = false;
                break;
            }
        }
        if base_visible {
            for (k, (_, v)) in self
                .pending
                .map
                .range::<String, _>((range.lo.as_ref(), range.hi.as_ref()))
            {
                upper.entry(k.as_str()).or_insert(v.as_ref());
            }
            base_visible = self.pending.cleared.is_none();
        }

        let limit = range.limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        let mut upper_iter: Box<dyn Iterator<Item = (&&str, &Option<&Bytes>)>> = if range.reverse {
            Box::new(upper.iter().rev())
        } else {
            Box::new(upper.iter())
        };
        let mut next_upper = upper_iter.next();
        let mut base = if base_visible {
            Some(self.base_scan(range))
        } else {
            None
        };
        let mut next_base = match base.as_mut() {
            Some(it) => it.next().transpose()?,
            None => None,
        };
        while out.len() < limit {
            // Pick whichever side comes first in scan order.
            let take_upper = match (&next_upper, &next_base) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((uk, _)), Some((bk, _))) => {
                    if range.reverse {
                        **uk >= bk.as_str()
                    } else {
                        **uk <= bk.as_str()
                    }
                }
            };
            if take_upper {
                let Some((uk, uv)) = next_upper else { break };
                if next_base.as_ref().is_some_and(|(bk, _)| bk.as_str() == *uk) {
                    next_base = match base.as_mut() {
                        Some(it) => it.next().transpose()?,
                        None => None,
                    };
                }
                if let Some(v) = uv {
                    out.push(((*uk).to_owned(), (*v).clone()));
                }
                next_upper = upper_iter.next();
            } else {
                let Some(entry) = next_base.take() else { break };
                out.push(entry);
                next_base = match base.as_mut() {
                    Some(it) => it.next().transpose()?,
                    None => None,
                };
            }
        }
        Ok(out)
    }

    /// RocksDB's side of a list: `(user key, value)` in scan order.
    fn base_scan(
        &self,
        range: &Range,
    ) -> impl Iterator<Item = Result<(String, Bytes), storage::Error>> + '_ {
        let prefix = keys::data_prefix(self.shard, self.object);
        let prefix_len = prefix.len();
        let lo = match &range.lo {
            Bound::Included(k) => keys::data_key(self.shard, self.object, k),
            Bound::Excluded(k) => {
                // The smallest key after `k` is `k` followed by a zero byte.
                let mut key = keys::data_key(self.shard, self.object, k);
                key.push(0);
                key
            }
            Bound::Unbounded => prefix.clone(),
        };
        let hi = match &range.hi {
            Bound::Excluded(k) => Some(keys::data_key(self.shard, self.object, k)),
            Bound::Included(k) => {
                let mut key = keys::data_key(self.shard, self.object, k);
                key.push(0);
                Some(key)
            }
            Bound::Unbounded => keys::prefix_end(&prefix),
        };
        self.db.scan_state(lo, hi, range.reverse).map(move |item| {
            let (k, v) = item?;
            let user = k.get(prefix_len..).unwrap_or_default();
            let user = std::str::from_utf8(user)
                .map_err(|_| storage::Error::Corrupt("stored key is not UTF-8".into()))?;
            Ok((user.to_owned(), Bytes::from(v.into_vec())))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ObjectId;
    use crate::storage::mutation::stage;

    struct Fixture {
        _dir: tempfile::TempDir,
        db: Db,
        object: ObjectKey,
    }

    fn fixture(stored: &[(&str, &str)]) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(dir.path()).expect("open db");
        let object = ObjectKey::new("NS", ObjectId::from_name("NS", "x"));
        let write = storage::ObjectWrite {
            object: object.clone(),
            mutations: stored
                .iter()
                .map(|(k, v)| Mutation::Put {
                    key: (*k).to_owned(),
                    value: Bytes::from((*v).to_owned()),
                })
                .collect(),
        };
        let mut batch = rocksdb::WriteBatch::default();
        stage(&db, &mut batch, 0, &[write]).expect("stage");
        db.write(batch).expect("write");
        Fixture {
            _dir: dir,
            db,
            object,
        }
    }

    fn layer(entries: &[(&str, Option<&str>)], cleared: bool) -> Layer {
        Layer {
            map: entries
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.map(|v| Bytes::from(v.to_owned()))))
                .collect(),
            cleared,
            alarm: None,
            sockets: BTreeMap::new(),
            frames: BTreeMap::new(),
        }
    }

    fn all(reverse: bool, limit: Option<usize>) -> Range {
        Range {
            lo: Bound::Unbounded,
            hi: Bound::Unbounded,
            reverse,
            limit,
        }
    }

    fn keys(entries: Vec<(String, Bytes)>) -> Vec<String> {
        entries
            .into_iter()
            .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(&v)))
            .collect()
    }

    #[test]
    fn layers_shadow_pending_which_shadows_rocksdb() {
        let f = fixture(&[("a", "db"), ("b", "db"), ("d", "db")]);
        let mut pending = Pending::default();
        pending.push(
            1,
            &layer(&[("b", Some("pending")), ("c", Some("pending"))], false),
        );
        let layers = [layer(&[("a", None), ("e", Some("event"))], false)];
        let r = Reader {
            db: &f.db,
            shard: 0,
            object: &f.object,
            pending: &pending,
            layers: &layers,
        };
        assert_eq!(r.get("a").expect("get"), None);
        assert_eq!(r.get("b").expect("get").as_deref(), Some(&b"pending"[..]));
        assert_eq!(r.get("d").expect("get").as_deref(), Some(&b"db"[..]));
        let listed = keys(r.list(&all(false, None)).expect("list"));
        assert_eq!(listed, ["b=pending", "c=pending", "d=db", "e=event"]);
        let listed = keys(r.list(&all(true, Some(3))).expect("list"));
        assert_eq!(listed, ["e=event", "d=db", "c=pending"]);
    }

    #[test]
    fn a_pending_clear_hides_rocksdb_until_pruned() {
        let f = fixture(&[("a", "db"), ("b", "db")]);
        let mut pending = Pending::default();
        pending.push(1, &layer(&[("z", Some("new"))], true));
        let r = Reader {
            db: &f.db,
            shard: 0,
            object: &f.object,
            pending: &pending,
            layers: &[],
        };
        assert_eq!(r.get("a").expect("get"), None);
        assert_eq!(keys(r.list(&all(false, None)).expect("list")), ["z=new"]);
        pending.prune(1);
        let r = Reader {
            db: &f.db,
            shard: 0,
            object: &f.object,
            pending: &pending,
            layers: &[],
        };
        // Not applied in this test: pruning trusts RocksDB to have it.
        assert_eq!(r.get("a").expect("get").as_deref(), Some(&b"db"[..]));
    }

    #[test]
    fn bounds_are_respected_on_both_sides() {
        let f = fixture(&[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]);
        let pending = Pending::default();
        let layers = [layer(&[("bb", Some("x"))], false)];
        let r = Reader {
            db: &f.db,
            shard: 0,
            object: &f.object,
            pending: &pending,
            layers: &layers,
        };
        let range = Range {
            lo: Bound::Excluded("a".into()),
            hi: Bound::Excluded("d".into()),
            reverse: false,
            limit: None,
        };
        assert_eq!(keys(r.list(&range).expect("list")), ["b=2", "bb=x", "c=3"]);
    }

    #[test]
    fn to_mutations_coalesces_and_orders_clear_first() {
        let mut l = layer(&[("a", Some("1")), ("b", None)], true);
        l.alarm = Some(AlarmChange::Fired(5));
        let m = l.to_mutations();
        assert_eq!(m[0], Mutation::DeleteAll);
        assert!(matches!(&m[1], Mutation::Put { key, .. } if key == "a"));
        assert_eq!(m[2], Mutation::DeleteAlarmIf { at_ms: 5 });
        assert_eq!(m.len(), 3);
    }
}
