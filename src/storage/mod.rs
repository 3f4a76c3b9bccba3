//! RocksDB and the typed keyspace.
//!
//! Owns: opening the node's one database, the key layout of every kind of
//! record ([`keys`]), and how an object's mutations become RocksDB writes
//! ([`mutation`]). Knows nothing of Raft's rules or of object executors: the
//! replication layer decides *when* to write, this layer only *how*.

mod db;
pub mod keys;
pub mod mutation;
pub mod reclaim;
mod wal_sync;

pub use db::{Db, Entry};
pub use mutation::{Mutation, ObjectWrite};

/// Errors from the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("corrupt data: {0}")]
    Corrupt(String),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
}
