//! The typed keyspace: every RocksDB key Roost writes is built here.
//!
//! Two column families:
//! - `raft`: per-shard Raft state, `[kind][shard: u16 BE][...]`.
//! - `state`: the replicated state machine, `[shard: u16 BE][kind][...]`, so
//!   one range covers everything a shard owns (snapshots, deleteAll).
//!
//! Each kind byte is a variant below and is never reused once retired.
//! Integers are big-endian so byte order is numeric order.

use crate::id::{ID_LEN, ObjectId, ObjectKey, ShardId};

/// Kinds in the `raft` column family.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RaftKind {
    /// `[0x01][shard][index: u64]` → serialized log entry.
    Log = 0x01,
    /// `[0x02][shard]` → the last vote.
    Vote = 0x02,
    /// `[0x03][shard]` → the last known committed log id.
    Committed = 0x03,
    /// `[0x04][shard]` → the last purged log id.
    Purged = 0x04,
    /// `[0x05][shard]` → the state machine's last applied log id and membership.
    Applied = 0x05,
    /// `[0x06][shard]` → the current snapshot (meta and data).
    Snapshot = 0x06,
    /// `[0x7e]` (no shard) → the number of shards, fixed at creation.
    ShardCount = 0x7e,
    /// `[0x7f]` (no shard) → the on-disk format version.
    Format = 0x7f,
}

/// Kinds in the `state` column family, after the shard.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateKind {
    /// `[shard][0x01][ns len: u8][ns][id][user key]` → user value.
    Data = 0x01,
    /// `[shard][0x02][ns len][ns][id]` → alarm time (ms since epoch, u64).
    Alarm = 0x02,
    /// `[shard][0x03][time: u64][ns len][ns][id]` → empty; alarms by due time.
    AlarmDue = 0x03,
    /// `[shard][0x04][ns len][ns][id][socket: u128]` → the registration of
    /// one of the object's hibernatable WebSockets (tags, attachment): the
    /// object layer's encoding, opaque here.
    Socket = 0x04,
    /// `[shard][0x05][ns len][ns][id][slot: u16]` → one of the newest
    /// frames the object sent its sockets (a ring of slots, the object
    /// layer's encoding, opaque here): what a new owner re-sends to a
    /// socket whose old owner died before the frame reached its edge.
    Frame = 0x05,
}

/// The on-disk format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

pub fn format_key() -> Vec<u8> {
    vec![RaftKind::Format as u8]
}

pub fn raft_key(kind: RaftKind, shard: ShardId) -> Vec<u8> {
    let mut k = Vec::with_capacity(3);
    k.push(kind as u8);
    k.extend_from_slice(&shard.to_be_bytes());
    k
}

pub fn log_key(shard: ShardId, index: u64) -> Vec<u8> {
    let mut k = raft_key(RaftKind::Log, shard);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// Reads the index back out of a [`log_key`].
pub fn log_index(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(3..11)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// Everything a shard owns in the `state` column family: `[lo, hi)`.
pub fn shard_state_range(shard: ShardId) -> (Vec<u8>, Vec<u8>) {
    let lo = shard.to_be_bytes().to_vec();
    let hi = match shard.checked_add(1) {
        Some(next) => next.to_be_bytes().to_vec(),
        None => vec![0xff, 0xff, 0xff],
    };
    (lo, hi)
}

fn push_object(k: &mut Vec<u8>, object: &ObjectKey) {
    let ns = object.namespace.as_bytes();
    // Namespaces are validated to be at most 255 bytes when a class is bound.
    k.push(ns.len().min(255) as u8);
    k.extend_from_slice(&ns[..ns.len().min(255)]);
    k.extend_from_slice(object.id.as_bytes());
}

fn state_key(shard: ShardId, kind: StateKind, object: &ObjectKey, extra: usize) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + 1 + object.namespace.len() + ID_LEN + extra);
    k.extend_from_slice(&shard.to_be_bytes());
    k.push(kind as u8);
    push_object(&mut k, object);
    k
}

/// The prefix under which all of one object's values live.
pub fn data_prefix(shard: ShardId, object: &ObjectKey) -> Vec<u8> {
    state_key(shard, StateKind::Data, object, 0)
}

pub fn data_key(shard: ShardId, object: &ObjectKey, user_key: &str) -> Vec<u8> {
    let mut k = state_key(shard, StateKind::Data, object, user_key.len());
    k.extend_from_slice(user_key.as_bytes());
    k
}

/// The prefix under which all of one object's socket registrations live.
pub fn socket_prefix(shard: ShardId, object: &ObjectKey) -> Vec<u8> {
    state_key(shard, StateKind::Socket, object, 16)
}

pub fn socket_key(shard: ShardId, object: &ObjectKey, socket: u128) -> Vec<u8> {
    let mut k = socket_prefix(shard, object);
    k.extend_from_slice(&socket.to_be_bytes());
    k
}

/// Reads the socket back out of a [`socket_key`] given its object's
/// prefix length.
pub fn socket_of(key: &[u8], prefix_len: usize) -> Option<u128> {
    let tail: [u8; 16] = key.get(prefix_len..)?.try_into().ok()?;
    Some(u128::from_be_bytes(tail))
}

/// The prefix under which one object's kept frames live.
pub fn frame_prefix(shard: ShardId, object: &ObjectKey) -> Vec<u8> {
    state_key(shard, StateKind::Frame, object, 2)
}

pub fn frame_key(shard: ShardId, object: &ObjectKey, slot: u16) -> Vec<u8> {
    let mut k = frame_prefix(shard, object);
    k.extend_from_slice(&slot.to_be_bytes());
    k
}

pub fn alarm_key(shard: ShardId, object: &ObjectKey) -> Vec<u8> {
    state_key(shard, StateKind::Alarm, object, 0)
}

pub fn alarm_due_key(shard: ShardId, at_ms: u64, object: &ObjectKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + 8 + 1 + object.namespace.len() + ID_LEN);
    k.extend_from_slice(&shard.to_be_bytes());
    k.push(StateKind::AlarmDue as u8);
    k.extend_from_slice(&at_ms.to_be_bytes());
    push_object(&mut k, object);
    k
}

/// The range of a shard's alarm index: `[lo, hi)`.
pub fn alarm_due_range(shard: ShardId) -> (Vec<u8>, Vec<u8>) {
    let mut lo = shard.to_be_bytes().to_vec();
    lo.push(StateKind::AlarmDue as u8);
    let mut hi = shard.to_be_bytes().to_vec();
    hi.push(StateKind::AlarmDue as u8 + 1);
    (lo, hi)
}

/// Everything of kind `kind` stored under namespace `namespace` in
/// `shard` (every object's data, or every object's alarm): `[lo, hi)`.
/// Kinds keyed by object first only (not [`StateKind::AlarmDue`]).
pub fn namespace_range(shard: ShardId, kind: StateKind, namespace: &str) -> (Vec<u8>, Vec<u8>) {
    let ns = namespace.as_bytes();
    let ns = &ns[..ns.len().min(255)];
    let mut lo = Vec::with_capacity(4 + ns.len());
    lo.extend_from_slice(&shard.to_be_bytes());
    lo.push(kind as u8);
    lo.push(ns.len() as u8);
    lo.extend_from_slice(ns);
    // The prefix ends in the namespace's length byte and name, so it
    // never matches a longer namespace; and a successor always exists
    // below the next kind.
    let hi = prefix_end(&lo).unwrap_or_else(|| {
        let mut hi = shard.to_be_bytes().to_vec();
        hi.push(kind as u8 + 1);
        hi
    });
    (lo, hi)
}

/// Decodes a key of a kind keyed by object first ([`data_key`],
/// [`alarm_key`]) into its object and what follows it (the user key of a
/// data key, nothing for an alarm).
pub fn decode_object_key(key: &[u8]) -> Option<(ObjectKey, &[u8])> {
    let ns_len = usize::from(*key.get(3)?);
    let ns = std::str::from_utf8(key.get(4..4 + ns_len)?).ok()?;
    let id: [u8; ID_LEN] = key.get(4 + ns_len..4 + ns_len + ID_LEN)?.try_into().ok()?;
    let rest = key.get(4 + ns_len + ID_LEN..)?;
    Some((ObjectKey::new(ns, ObjectId::from_bytes(id)), rest))
}

/// Decodes an [`alarm_due_key`] into its time and object.
pub fn decode_alarm_due(key: &[u8]) -> Option<(u64, ObjectKey)> {
    let time: [u8; 8] = key.get(3..11)?.try_into().ok()?;
    let ns_len = usize::from(*key.get(11)?);
    let ns = std::str::from_utf8(key.get(12..12 + ns_len)?).ok()?;
    let id: [u8; ID_LEN] = key
        .get(12 + ns_len..12 + ns_len + ID_LEN)?
        .try_into()
        .ok()?;
    if key.len() != 12 + ns_len + ID_LEN {
        return None;
    }
    Some((
        u64::from_be_bytes(time),
        ObjectKey::new(ns, ObjectId::from_bytes(id)),
    ))
}

/// The smallest key greater than every key that starts with `prefix`, or
/// `None` if there is none (a prefix of only 0xff bytes).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(ns: &str, name: &str) -> ObjectKey {
        ObjectKey::new(ns, ObjectId::from_name(ns, name))
    }

    #[test]
    fn log_keys_sort_by_index_and_decode() {
        assert!(log_key(3, 9) < log_key(3, 10));
        assert!(log_key(3, u64::MAX) < log_key(4, 0));
        assert_eq!(log_index(&log_key(7, 42)), Some(42));
    }

    #[test]
    fn data_keys_stay_inside_their_object_prefix() {
        let a = obj("COUNTER", "a");
        let p = data_prefix(5, &a);
        let k = data_key(5, &a, "value");
        assert!(k.starts_with(&p));
        let end = prefix_end(&p).expect("prefix has a successor");
        assert!(k < end);
        let (lo, hi) = shard_state_range(5);
        assert!(k >= lo && k < hi);
    }

    #[test]
    fn frame_keys_stay_inside_their_object_and_apart_from_its_sockets() {
        let a = obj("ROOM", "a");
        let p = frame_prefix(2, &a);
        assert!(frame_key(2, &a, 0) < frame_key(2, &a, 1));
        assert!(frame_key(2, &a, u16::MAX).starts_with(&p));
        assert!(!frame_key(2, &a, 1).starts_with(&socket_prefix(2, &a)));
        assert!(!frame_key(2, &a, 1).starts_with(&data_prefix(2, &a)));
        let (lo, hi) = namespace_range(2, StateKind::Frame, "ROOM");
        assert!(frame_key(2, &a, 7) >= lo && frame_key(2, &a, 7) < hi);
        let k = frame_key(2, &a, 7);
        let (object, rest) = decode_object_key(&k).expect("decodes");
        assert_eq!((object, rest), (a, &7u16.to_be_bytes()[..]));
    }

    #[test]
    fn socket_keys_stay_inside_their_object_and_apart_from_its_data() {
        let a = obj("ROOM", "a");
        let p = socket_prefix(2, &a);
        let k = socket_key(2, &a, 7 << 64 | 9);
        assert!(k.starts_with(&p));
        assert_eq!(socket_of(&k, p.len()), Some(7 << 64 | 9));
        assert_eq!(socket_of(&k[..k.len() - 1], p.len()), None);
        assert!(
            !k.starts_with(&data_prefix(2, &a)),
            "deleteAll keeps sockets"
        );
        assert!(!socket_key(2, &obj("ROOM", "b"), 1).starts_with(&p));
        let (lo, hi) = namespace_range(2, StateKind::Socket, "ROOM");
        assert!(k >= lo && k < hi);
        assert_eq!(decode_object_key(&k).map(|(o, _)| o), Some(a));
    }

    #[test]
    fn alarm_due_keys_round_trip_and_sort_by_time() {
        let a = obj("NS", "x");
        let k = alarm_due_key(9, 1234, &a);
        assert_eq!(decode_alarm_due(&k), Some((1234, a.clone())));
        assert!(alarm_due_key(9, 5, &a) < alarm_due_key(9, 6, &obj("A", "b")));
        let (lo, hi) = alarm_due_range(9);
        assert!(k >= lo && k < hi);
    }

    #[test]
    fn a_namespace_range_holds_its_objects_and_no_other_namespace() {
        let a = obj("NS", "x");
        let (lo, hi) = namespace_range(4, StateKind::Data, "NS");
        let k = data_key(4, &a, "user");
        assert!(k >= lo && k < hi);
        for other in ["NS2", "N", "NT"] {
            let k = data_key(4, &obj(other, "x"), "user");
            assert!(k < lo || k >= hi, "{other}");
        }
        assert!(alarm_key(4, &a) >= hi, "alarms are another range");
        let (lo, hi) = namespace_range(4, StateKind::Alarm, "NS");
        assert!(alarm_key(4, &a) >= lo && alarm_key(4, &a) < hi);
        assert_eq!(decode_object_key(&k), Some((a.clone(), &b"user"[..])));
        assert_eq!(decode_object_key(&alarm_key(4, &a)), Some((a, &b""[..])));
        assert_eq!(decode_object_key(&k[..10]), None);
    }

    #[test]
    fn prefix_end_handles_ff() {
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
    }
}
