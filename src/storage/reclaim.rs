//! What a namespace still holds in a shard, read a bounded batch at a time,
//! and the writes that delete exactly that (for deleted classes: the
//! runtime's `reclaim` proposes them through the shard's Raft log).
//!
//! Reads only; it never writes RocksDB itself.

use std::collections::BTreeMap;

use super::keys::{self, StateKind};
use super::{Db, Error, Mutation, ObjectWrite};
use crate::id::{ObjectKey, ShardId};

/// One record of an object of the namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A stored value, by its user key.
    Data { object: ObjectKey, key: Vec<u8> },
    /// The object's alarm (its key and its entry in the due index).
    Alarm { object: ObjectKey },
    /// One of the object's socket registrations.
    Socket { object: ObjectKey, socket: u128 },
    /// One of the frames the object keeps for its sockets.
    Frame { object: ObjectKey },
}

impl Db {
    /// Up to `limit` records stored under `namespace` in `shard`: data
    /// first, then alarms, then socket registrations, then kept frames, in
    /// key order.
    pub fn namespace_records(
        &self,
        shard: ShardId,
        namespace: &str,
        limit: usize,
    ) -> Result<Vec<Record>, Error> {
        let mut out = Vec::new();
        let kinds = [
            StateKind::Data,
            StateKind::Alarm,
            StateKind::Socket,
            StateKind::Frame,
        ];
        for kind in kinds {
            let (lo, hi) = keys::namespace_range(shard, kind, namespace);
            for item in self.scan_state(lo, Some(hi), false) {
                if out.len() >= limit {
                    return Ok(out);
                }
                let (k, _) = item?;
                let (object, rest) = keys::decode_object_key(&k)
                    .ok_or_else(|| Error::Corrupt(format!("bad object key {k:?}")))?;
                out.push(match kind {
                    StateKind::Data => Record::Data {
                        object,
                        key: rest.to_vec(),
                    },
                    StateKind::Socket => {
                        let socket: [u8; 16] = rest.try_into().map_err(|_| {
                            Error::Corrupt(format!("bad socket registration key {k:?}"))
                        })?;
                        Record::Socket {
                            object,
                            socket: u128::from_be_bytes(socket),
                        }
                    }
                    StateKind::Frame => Record::Frame { object },
                    _ => Record::Alarm { object },
                });
            }
        }
        Ok(out)
    }
}

/// The writes that delete `records`, one per object: each stored value by
/// its key, the alarm with its index entry, each socket registration, and
/// the kept frames (all of an object's at once). A user key that is not
/// UTF-8 (never written by the storage API) deletes all the object's data.
pub fn deletions(records: Vec<Record>) -> Vec<ObjectWrite> {
    let mut by_object: BTreeMap<ObjectKey, Vec<Mutation>> = BTreeMap::new();
    for record in records {
        let (object, mutation) = match record {
            Record::Data { object, key } => match String::from_utf8(key) {
                Ok(key) => (object, Mutation::Delete { key }),
                Err(_) => (object, Mutation::DeleteAll),
            },
            Record::Alarm { object } => (object, Mutation::DeleteAlarm),
            Record::Socket { object, socket } => (object, Mutation::DeleteSocket { socket }),
            Record::Frame { object } => (object, Mutation::DeleteFrames),
        };
        let mutations = by_object.entry(object).or_default();
        if mutation != Mutation::DeleteFrames || !mutations.contains(&mutation) {
            mutations.push(mutation);
        }
    }
    by_object
        .into_iter()
        .map(|(object, mutations)| ObjectWrite { object, mutations })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ObjectId;

    fn obj(name: &str) -> ObjectKey {
        ObjectKey::new("GONE", ObjectId::from_name("GONE", name))
    }

    #[test]
    fn deletions_group_records_by_object() {
        let (a, b) = (obj("a"), obj("b"));
        let writes = deletions(vec![
            Record::Data {
                object: a.clone(),
                key: b"x".to_vec(),
            },
            Record::Data {
                object: b.clone(),
                key: vec![0xff],
            },
            Record::Data {
                object: a.clone(),
                key: b"y".to_vec(),
            },
            Record::Alarm { object: a.clone() },
            Record::Socket {
                object: a.clone(),
                socket: 3,
            },
            Record::Frame { object: a.clone() },
            Record::Frame { object: a.clone() },
        ]);
        let find = |o: &ObjectKey| writes.iter().find(|w| &w.object == o).map(|w| &w.mutations);
        assert_eq!(writes.len(), 2);
        assert_eq!(
            find(&a),
            Some(&vec![
                Mutation::Delete { key: "x".into() },
                Mutation::Delete { key: "y".into() },
                Mutation::DeleteAlarm,
                Mutation::DeleteSocket { socket: 3 },
                Mutation::DeleteFrames,
            ])
        );
        assert_eq!(find(&b), Some(&vec![Mutation::DeleteAll]));
    }
}
