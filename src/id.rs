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

/// Longest name an id carries as its `name` ([`ObjectKey::with_name`]), in
/// bytes. A longer name still makes an id; it just does not travel with it.
pub const MAX_NAME_BYTES: usize = 1024;

/// The full address of an object: its namespace and its id; and, when the
/// caller made the id from a name, that name (Cloudflare's `id.name`).
///
/// The name is not part of the address: equality, order, hashing and the
/// serialized form (what the Raft log stores) ignore it, as Cloudflare's
/// `id.equals` does. It only travels with a call so the object can see it.
#[derive(Clone, Serialize, Deserialize)]
pub struct ObjectKey {
    pub namespace: Arc<str>,
    pub id: ObjectId,
    #[serde(skip)]
    name: Option<Arc<str>>,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<Arc<str>>, id: ObjectId) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            id,
            name: None,
        }
    }

    /// The same key, carrying `name` (the name its id was made from) if it
    /// is at most [`MAX_NAME_BYTES`]; whether it is the id's name is
    /// checked where the object runs.
    pub fn with_name(mut self, name: impl Into<Arc<str>>) -> Self {
        let name = name.into();
        self.name = (name.len() <= MAX_NAME_BYTES).then_some(name);
        self
    }

    /// The name the caller made the id from, if it said.
    pub fn name(&self) -> Option<&Arc<str>> {
        self.name.as_ref()
    }

    fn address(&self) -> (&str, &ObjectId) {
        (&self.namespace, &self.id)
    }
}

impl PartialEq for ObjectKey {
    fn eq(&self, other: &Self) -> bool {
        self.address() == other.address()
    }
}

impl Eq for ObjectKey {}

impl std::hash::Hash for ObjectKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.address().hash(state)
    }
}

impl PartialOrd for ObjectKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ObjectKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.address().cmp(&other.address())
    }
}

/// An id with the name it was made from, if any: what
/// `Namespace::id_from_name` returns (Cloudflare's `DurableObjectId`, whose
/// `name` is set only by `idFromName`). Compares by id only.
#[derive(Clone, Debug)]
pub struct NamedId {
    id: ObjectId,
    name: Option<Arc<str>>,
}

impl NamedId {
    /// `id`, made from `name`.
    pub fn new(id: ObjectId, name: &str) -> Self {
        NamedId {
            id,
            name: Some(Arc::from(name)),
        }
    }

    pub fn id(&self) -> ObjectId {
        self.id
    }

    /// The name the id was made from; `None` for a unique or parsed id.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The object's key in `namespace`, carrying the name.
    pub fn key(&self, namespace: Arc<str>) -> ObjectKey {
        let key = ObjectKey::new(namespace, self.id);
        match &self.name {
            Some(name) => key.with_name(name.clone()),
            None => key,
        }
    }
}

impl From<ObjectId> for NamedId {
    fn from(id: ObjectId) -> Self {
        NamedId { id, name: None }
    }
}

impl From<NamedId> for ObjectId {
    fn from(named: NamedId) -> Self {
        named.id
    }
}

impl std::ops::Deref for NamedId {
    type Target = ObjectId;

    fn deref(&self) -> &ObjectId {
        &self.id
    }
}

impl PartialEq for NamedId {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for NamedId {}

impl PartialEq<ObjectId> for NamedId {
    fn eq(&self, other: &ObjectId) -> bool {
        self.id == *other
    }
}

impl fmt::Display for NamedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.id.fmt(f)
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
    fn a_key_is_its_namespace_and_id_whatever_name_it_carries() {
        let id = ObjectId::from_name("N", "alice");
        let plain = ObjectKey::new("N", id);
        let named = ObjectKey::new("N", id).with_name("alice");
        assert_eq!(named.name().map(|n| &**n), Some("alice"));
        assert_eq!(plain, named);
        let mut set = std::collections::HashSet::new();
        set.insert(plain.clone());
        assert!(set.contains(&named));
        assert_eq!(
            postcard::to_allocvec(&plain).ok(),
            postcard::to_allocvec(&named).ok()
        );
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        assert_eq!(ObjectKey::new("N", id).with_name(long).name(), None);
        let named_id = NamedId::new(id, "alice");
        assert_eq!(named_id, NamedId::from(id));
        assert_eq!(named_id.key("N".into()).name().map(|n| &**n), Some("alice"));
        assert_eq!(NamedId::from(id).name(), None);
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
