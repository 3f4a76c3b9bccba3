//! Object identity: a namespace (the class binding, e.g. `COUNTER`) and a
//! 32-byte id, and the shard that id maps to.
//!
//! Pure: no I/O, no async. Every layer may use it.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Length of an object id in bytes (64 hex characters as a string).
pub const ID_LEN: usize = 32;

/// The index of a shard: a Raft group that owns a slice of the id space.
pub type ShardId = u16;

/// Why a string is not an object id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("an object id is {expected} hex characters, got {got}")]
    Length { expected: usize, got: usize },
    #[error("an object id is hexadecimal: {0}")]
    NotHex(String),
}

/// A Durable Object id, unique within its namespace.
///
/// `from_name` is deterministic (the same name always gives the same id),
/// `new_unique` is random, and `parse` validates the 64-hex-character form
/// that `Display` prints.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectId([u8; ID_LEN]);

impl ObjectId {
    /// The id a name maps to in a namespace (Cloudflare's `idFromName`).
    pub fn from_name(namespace: &str, name: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"roost/v1/id-from-name\0");
        hasher.update((namespace.len() as u64).to_be_bytes());
        hasher.update(namespace.as_bytes());
        hasher.update(name.as_bytes());
        ObjectId(hasher.finalize().into())
    }

    /// A fresh random id (Cloudflare's `newUniqueId`).
    pub fn new_unique() -> Self {
        ObjectId(rand::random())
    }

    /// Validate and parse the 64-hex-character form (Cloudflare's `idFromString`).
    pub fn parse(s: &str) -> Result<Self, Error> {
        if s.len() != ID_LEN * 2 {
            return Err(Error::Length {
                expected: ID_LEN * 2,
                got: s.len(),
            });
        }
        let mut bytes = [0u8; ID_LEN];
        hex::decode_to_slice(s, &mut bytes).map_err(|e| Error::NotHex(e.to_string()))?;
        Ok(ObjectId(bytes))
    }

    pub fn from_bytes(bytes: [u8; ID_LEN]) -> Self {
        ObjectId(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }

    /// The shard this id belongs to, out of `shards` (fixed at cluster creation).
    pub fn shard(&self, shards: u16) -> ShardId {
        let mut head = [0u8; 8];
        head.copy_from_slice(&self.0[..8]);
        (u64::from_be_bytes(head) % u64::from(shards.max(1))) as ShardId
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({self})")
    }
}

/// The full address of an object: its namespace and its id.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectKey {
    pub namespace: Arc<str>,
    pub id: ObjectId,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<Arc<str>>, id: ObjectId) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            id,
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.id)
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectKey({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_name_is_deterministic_and_namespaced() {
        let a = ObjectId::from_name("COUNTER", "visits");
        assert_eq!(a, ObjectId::from_name("COUNTER", "visits"));
        assert_ne!(a, ObjectId::from_name("CHAT_ROOM", "visits"));
        assert_ne!(a, ObjectId::from_name("COUNTER", "visits2"));
    }

    #[test]
    fn parse_round_trips_and_validates() {
        let id = ObjectId::new_unique();
        assert_eq!(ObjectId::parse(&id.to_string()), Ok(id));
        assert!(matches!(ObjectId::parse("abc"), Err(Error::Length { .. })));
        let bad = "z".repeat(64);
        assert!(matches!(ObjectId::parse(&bad), Err(Error::NotHex(_))));
    }

    #[test]
    fn shards_cover_the_range() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..2000 {
            let s = ObjectId::from_name("N", &i.to_string()).shard(16);
            assert!(s < 16);
            seen.insert(s);
        }
        assert_eq!(seen.len(), 16);
    }
}
