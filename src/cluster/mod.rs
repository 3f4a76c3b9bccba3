//! The cluster control plane: the membership directory (replicated in the
//! metadata Raft group), how each shard's group follows the placement the
//! ring derives from it, and the `Cluster` gRPC service nodes and edges use
//! to join and to watch the cluster, and operators use to drain a node and
//! to see the cluster's status (`status.rs`), and online backups and the
//! restore of a new cluster from one (`backup.rs`, `restore.rs`).
//!
//! Never runs objects or serves clients; it only changes who replicates
//! and who leads.

pub mod backup;
pub mod catchup;
pub mod control;
pub mod directory;
pub mod drain;
pub mod plan;
pub mod restore;
pub mod service;
pub mod status;

pub use control::{Control, ControlOptions, ShardStatus};
pub use directory::{Directory, META_SHARD, NodeRecord, NodeState};
