//! Replication: one openraft group per shard over the node's one RocksDB.
//!
//! Owns the Raft log store ([`log_store`]), the state machine that applies
//! committed [`ObjectWrite`](crate::storage::ObjectWrite)s ([`state_machine`]),
//! the network adaptation ([`network`]), each shard's proposer with group
//! commit ([`shard`]) and the set of shards of a node ([`Replicas`]).
//!
//! Decides *when* writes reach RocksDB (after a quorum commit), never *what*
//! they are: the bytes come from the object layer, the layout from
//! [`crate::storage`]. Never imports from the layers above.

mod leadership;
mod lease;
pub mod liveness;
pub mod log_store;
pub mod network;
mod observe;
mod options;
mod pipeline;
mod pulse;
mod quiet;
mod replicas;
pub mod shard;
pub mod state_machine;
pub mod types;

#[cfg(test)]
mod tests;

pub use liveness::Pong;
pub use network::{NoPeers, Peer, Transport};
pub use options::ReplicationOptions;
pub use pipeline::epoch_term;
pub use replicas::Replicas;
pub use shard::{Commit, ShardHandle};
pub use types::{NodeId, Raft, ShardCommand, ShardReply, TypeConfig};

use crate::storage;

/// Errors of the replication layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This node does not lead the shard; the write was not and will not be
    /// committed. `leader` is the current leader, if known.
    #[error("this node is not the shard's leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// The leader could not confirm its leadership with a quorum (a read
    /// barrier failed); retry later.
    #[error("the shard's leader cannot reach a quorum: {0}")]
    NoQuorum(String),
    /// The shard is shutting down; the outcome of a write in flight is unknown.
    #[error("replication is shutting down")]
    ShuttingDown,
    #[error("storage: {0}")]
    Storage(#[from] storage::Error),
    /// A fatal or unexpected openraft error.
    #[error("raft: {0}")]
    Raft(String),
    #[error("timed out")]
    Timeout,
    #[error("invalid replication options: {0}")]
    Config(String),
}
