//! The cluster's membership directory: which nodes exist, where they
//! listen, and whether they still take replicas.
//!
//! It lives in the metadata Raft group ([`META_SHARD`]) as the storage of
//! one system object, so it is replicated, durable and linearizable with
//! the same machinery as every object's state. Every node and edge derives
//! the same shard placement from it (`ring`).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::id::{ObjectId, ObjectKey, ShardId};
use crate::ring::NodeId;
use crate::storage::{self, Db, Mutation, ObjectWrite, keys};

/// The Raft group that holds the directory. Object shards are numbered
/// from 0 and never reach it.
pub const META_SHARD: ShardId = u16::MAX;

/// The namespace of system objects; never bound to a user class.
pub const SYSTEM_NAMESPACE: &str = "roost.system";

/// The system object whose storage is the directory.
pub fn directory_object() -> ObjectKey {
    ObjectKey::new(
        SYSTEM_NAMESPACE,
        ObjectId::from_name(SYSTEM_NAMESPACE, "directory"),
    )
}

/// Whether a node takes replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Holds the replicas the ring gives it.
    Active,
    /// Leaving: the ring gives it no replicas, so every shard group moves
    /// its replica elsewhere (replacement first), and it hands off every
    /// leadership. Once no group has it as a member it can be removed from
    /// the directory and stopped.
    Draining,
}

/// One node, as the directory records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: NodeId,
    /// The address other nodes and edges reach its gRPC services at.
    pub addr: String,
    pub state: NodeState,
}

fn record_key(id: NodeId) -> String {
    format!("node/{id:020}")
}

/// The write that records `node` in the directory.
pub fn put_node(node: &NodeRecord) -> Result<ObjectWrite, serde_json::Error> {
    Ok(ObjectWrite {
        object: directory_object(),
        mutations: vec![Mutation::Put {
            key: record_key(node.id),
            value: Bytes::from(serde_json::to_vec(node)?),
        }],
    })
}

/// The write that forgets node `id`.
pub fn remove_node(id: NodeId) -> ObjectWrite {
    ObjectWrite {
        object: directory_object(),
        mutations: vec![Mutation::Delete {
            key: record_key(id),
        }],
    }
}

/// A snapshot of the directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directory {
    pub nodes: BTreeMap<NodeId, NodeRecord>,
}

impl Directory {
    /// Reads the directory from this node's replica of the metadata group.
    pub fn read(db: &Db) -> Result<Directory, storage::Error> {
        let object = directory_object();
        let prefix = keys::data_prefix(META_SHARD, &object);
        let hi = keys::prefix_end(&prefix);
        let mut nodes = BTreeMap::new();
        for item in db.scan_state(prefix, hi, false) {
            let (_, value) = item?;
            let record: NodeRecord = serde_json::from_slice(&value)
                .map_err(|e| storage::Error::Corrupt(format!("directory record: {e}")))?;
            nodes.insert(record.id, record);
        }
        Ok(Directory { nodes })
    }

    /// Nodes that take replicas.
    pub fn active(&self) -> BTreeSet<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.state == NodeState::Active)
            .map(|n| n.id)
            .collect()
    }

    /// Whether `id` is listed and draining.
    pub fn is_draining(&self, id: NodeId) -> bool {
        self.nodes
            .get(&id)
            .is_some_and(|n| n.state == NodeState::Draining)
    }

    /// Whether `id` is listed and active.
    pub fn is_active(&self, id: NodeId) -> bool {
        self.nodes
            .get(&id)
            .is_some_and(|n| n.state == NodeState::Active)
    }

    pub fn addr(&self, id: NodeId) -> Option<&str> {
        self.nodes.get(&id).map(|n| n.addr.as_str())
    }
}
