//! The writes an object's event produces, and how they land in RocksDB.
//!
//! An [`ObjectWrite`] is the atomic unit: all mutations of one event of one
//! object. The replication layer carries them in its log and calls
//! [`stage`] when it applies an entry; staging is deterministic given the
//! state it reads, so every replica ends with the same bytes.

use std::collections::HashMap;

use bytes::Bytes;
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use super::{Db, Error, keys};
use crate::id::{ObjectKey, ShardId};

/// One change to an object's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mutation {
    Put {
        key: String,
        value: Bytes,
    },
    Delete {
        key: String,
    },
    /// Remove every stored key of the object (not its alarm, as in Cloudflare).
    DeleteAll,
    SetAlarm {
        at_ms: u64,
    },
    DeleteAlarm,
    /// Delete the alarm only if it is still the one that fired at `at_ms`
    /// (a handler that set a new alarm keeps it).
    DeleteAlarmIf {
        at_ms: u64,
    },
    /// A precondition, first in a write: the write takes effect only if
    /// the log entry that carries it belongs to Raft term `term` — the
    /// term of the executor that made it. Otherwise none of it does, on
    /// every replica alike ([`ObjectWrite::takes_effect_in`]). An executor's
    /// view is right only for the log of its own term; a write handed to
    /// Raft in that term but appended in a later one (leadership lost and
    /// regained before Raft took it) was computed on a state the later
    /// term may have changed.
    InTerm {
        term: u64,
    },
    // New variants go last: log entries are postcard, which numbers them.
    /// Register (or re-register, with a new attachment) one of the
    /// object's WebSockets: `value` is the object layer's encoding.
    PutSocket {
        socket: u128,
        value: Bytes,
    },
    /// The socket closed: forget its registration.
    DeleteSocket {
        socket: u128,
    },
    /// Keep a frame the object sent its sockets in ring slot `slot`
    /// (replacing the one there): `value` is the object layer's encoding.
    PutFrame {
        slot: u16,
        value: Bytes,
    },
    /// Forget every kept frame of the object.
    DeleteFrames,
}

/// All mutations of one event of one object, applied atomically and in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectWrite {
    pub object: ObjectKey,
    pub mutations: Vec<Mutation>,
}

impl ObjectWrite {
    /// Binds the write to Raft term `term` ([`Mutation::InTerm`]).
    pub fn bind_to_term(&mut self, term: u64) {
        self.mutations.insert(0, Mutation::InTerm { term });
    }

    /// Whether the write takes effect in a log entry of Raft term
    /// `entry_term`: unless it is bound to another term.
    pub fn takes_effect_in(&self, entry_term: u64) -> bool {
        match self.mutations.first() {
            Some(Mutation::InTerm { term }) => *term == entry_term,
            _ => true,
        }
    }

    /// Bytes this write adds to a log entry, roughly (for batching limits).
    pub fn approx_size(&self) -> usize {
        self.mutations
            .iter()
            .map(|m| match m {
                Mutation::Put { key, value } => key.len() + value.len() + 8,
                Mutation::Delete { key } => key.len() + 4,
                Mutation::PutSocket { value, .. } => value.len() + 24,
                Mutation::PutFrame { value, .. } => value.len() + 8,
                _ => 20,
            })
            .sum::<usize>()
            + self.object.namespace.len()
            + 40
    }
}

/// Stages `writes` for `shard` into `batch`, reading current alarms from
/// `db` where needed. Writes are staged in order; later ones win.
pub fn stage(
    db: &Db,
    batch: &mut WriteBatch,
    shard: ShardId,
    writes: &[ObjectWrite],
) -> Result<(), Error> {
    // Alarms changed earlier in this batch, which `db` cannot see yet.
    let mut alarms: HashMap<&ObjectKey, Option<u64>> = HashMap::new();
    let state = db.state_cf();
    for write in writes {
        let object = &write.object;
        for m in &write.mutations {
            match m {
                Mutation::Put { key, value } => {
                    batch.put_cf(&state, keys::data_key(shard, object, key), value)
                }
                Mutation::Delete { key } => {
                    batch.delete_cf(&state, keys::data_key(shard, object, key))
                }
                Mutation::DeleteAll => {
                    let lo = keys::data_prefix(shard, object);
                    if let Some(hi) = keys::prefix_end(&lo) {
                        batch.delete_range_cf(&state, lo, hi);
                    }
                }
                Mutation::PutSocket { socket, value } => {
                    batch.put_cf(&state, keys::socket_key(shard, object, *socket), value)
                }
                Mutation::DeleteSocket { socket } => {
                    batch.delete_cf(&state, keys::socket_key(shard, object, *socket))
                }
                Mutation::PutFrame { slot, value } => {
                    batch.put_cf(&state, keys::frame_key(shard, object, *slot), value)
                }
                Mutation::DeleteFrames => {
                    let lo = keys::frame_prefix(shard, object);
                    if let Some(hi) = keys::prefix_end(&lo) {
                        batch.delete_range_cf(&state, lo, hi);
                    }
                }
                Mutation::SetAlarm { at_ms } => {
                    let current = current_alarm(db, &alarms, shard, object)?;
                    if let Some(old) = current {
                        batch.delete_cf(&state, keys::alarm_due_key(shard, old, object));
                    }
                    batch.put_cf(&state, keys::alarm_key(shard, object), at_ms.to_be_bytes());
                    batch.put_cf(&state, keys::alarm_due_key(shard, *at_ms, object), []);
                    alarms.insert(object, Some(*at_ms));
                }
                Mutation::DeleteAlarm | Mutation::DeleteAlarmIf { .. } => {
                    let current = current_alarm(db, &alarms, shard, object)?;
                    let matches = match (m, current) {
                        (_, None) => false,
                        (Mutation::DeleteAlarmIf { at_ms }, Some(cur)) => cur == *at_ms,
                        _ => true,
                    };
                    if let (true, Some(old)) = (matches, current) {
                        batch.delete_cf(&state, keys::alarm_key(shard, object));
                        batch.delete_cf(&state, keys::alarm_due_key(shard, old, object));
                        alarms.insert(object, None);
                    }
                }
                // Checked by the caller ([`ObjectWrite::takes_effect_in`]).
                Mutation::InTerm { .. } => {}
            }
        }
    }
    Ok(())
}

fn current_alarm(
    db: &Db,
    staged: &HashMap<&ObjectKey, Option<u64>>,
    shard: ShardId,
    object: &ObjectKey,
) -> Result<Option<u64>, Error> {
    if let Some(v) = staged.get(object) {
        return Ok(*v);
    }
    db.read_alarm(shard, object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ObjectId;

    fn write() -> ObjectWrite {
        ObjectWrite {
            object: ObjectKey::new("T", ObjectId::from_name("T", "o")),
            mutations: vec![Mutation::Put {
                key: "k".into(),
                value: Bytes::from_static(b"v"),
            }],
        }
    }

    /// A write bound to the term of the executor that made it takes effect
    /// only in a log entry of that term; an unbound write in any.
    #[test]
    fn a_write_bound_to_a_term_takes_effect_only_in_it() {
        let free = write();
        assert!(free.takes_effect_in(3) && free.takes_effect_in(9));
        let mut bound = write();
        bound.bind_to_term(7);
        assert_eq!(bound.mutations[0], Mutation::InTerm { term: 7 });
        assert!(bound.takes_effect_in(7));
        assert!(!bound.takes_effect_in(8), "appended after a lost term");
        assert!(!bound.takes_effect_in(6));
    }

    /// Stages `mutations` of `object` in shard 1 and writes them.
    fn apply_to(db: &Db, object: &ObjectKey, mutations: Vec<Mutation>) {
        let mut batch = WriteBatch::default();
        let w = ObjectWrite {
            object: object.clone(),
            mutations,
        };
        stage(db, &mut batch, 1, &[w]).expect("stage");
        db.write(batch).expect("write");
    }

    /// Socket registrations live beside the object's data, not in it:
    /// `deleteAll` keeps them, and each is put and deleted on its own.
    #[test]
    fn socket_registrations_are_put_and_deleted_apart_from_data() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(dir.path()).expect("open db");
        let object = write().object;
        let apply = |mutations| apply_to(&db, &object, mutations);
        let reg = |s: &'static [u8]| Bytes::from_static(s);
        apply(vec![
            Mutation::PutSocket {
                socket: 2,
                value: reg(b"two"),
            },
            Mutation::PutSocket {
                socket: 1,
                value: reg(b"one"),
            },
        ]);
        apply(vec![Mutation::DeleteAll]);
        let listed = db.object_sockets(1, &object, 10).expect("list");
        assert_eq!(listed, vec![(1, b"one".to_vec()), (2, b"two".to_vec())]);
        assert_eq!(db.object_sockets(1, &object, 1).expect("list").len(), 1);
        apply(vec![Mutation::DeleteSocket { socket: 1 }]);
        let listed = db.object_sockets(1, &object, 10).expect("list");
        assert_eq!(listed, vec![(2, b"two".to_vec())]);
        assert!(db.object_sockets(0, &object, 10).expect("list").is_empty());
    }

    /// Kept frames are a ring: a slot's frame replaces the one there;
    /// `deleteAll` keeps them, and `DeleteFrames` forgets them all.
    #[test]
    fn kept_frames_replace_their_slot_and_go_all_at_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(dir.path()).expect("open db");
        let object = write().object;
        let apply = |mutations| apply_to(&db, &object, mutations);
        let put = |slot, value: &'static [u8]| Mutation::PutFrame {
            slot,
            value: Bytes::from_static(value),
        };
        apply(vec![put(0, b"a"), put(1, b"b")]);
        apply(vec![put(0, b"c"), Mutation::DeleteAll]);
        let kept = db.object_frames(1, &object, 10).expect("list");
        assert_eq!(kept, vec![b"c".to_vec(), b"b".to_vec()]);
        assert_eq!(db.object_frames(1, &object, 1).expect("list").len(), 1);
        apply(vec![Mutation::DeleteFrames]);
        assert!(db.object_frames(1, &object, 10).expect("list").is_empty());
    }

    /// Log entries on disk are postcard, which numbers enum variants: a
    /// variant's number never changes (new ones go last).
    #[test]
    fn mutation_variants_keep_their_numbers_on_disk() {
        let tag = |m: Mutation| postcard::to_stdvec(&m).expect("encode")[0];
        assert_eq!(tag(Mutation::DeleteAll), 2);
        assert_eq!(tag(Mutation::InTerm { term: 1 }), 6);
        assert_eq!(tag(Mutation::DeleteSocket { socket: 1 }), 8);
        let frame = Mutation::PutFrame {
            slot: 1,
            value: Bytes::new(),
        };
        assert_eq!(tag(frame), 9);
        assert_eq!(tag(Mutation::DeleteFrames), 10);
    }
}
