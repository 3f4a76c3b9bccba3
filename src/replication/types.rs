//! The openraft type configuration shared by every shard group, the log's
//! payload ([`ShardCommand`]), and the one encoding used for everything this
//! layer stores (postcard).

use std::io::Cursor;

use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::storage::ObjectWrite;

/// The payload of one Raft log entry: the writes of one group commit, in
/// proposal order. Applied atomically.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardCommand {
    pub writes: Vec<ObjectWrite>,
}

/// What applying a [`ShardCommand`] returns. Nothing: a write either lands
/// or the state machine fails (which stops the group).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardReply;

openraft::declare_raft_types!(
    /// The openraft type configuration of every shard group.
    pub TypeConfig:
        D = ShardCommand,
        R = ShardReply,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A node's id in every shard group it belongs to.
pub type NodeId = u64;
/// One shard's openraft instance.
pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StoredMembership = openraft::StoredMembership<NodeId, BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, BasicNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_stdvec(value)
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}
