//! The cluster control plane: the membership directory (replicated in the
//! metadata Raft group), and how each shard's group follows the placement
//! the ring derives from it.
//!
//! Never runs objects or serves clients; it only changes who replicates
//! and who leads.

pub mod directory;
pub mod plan;

pub use directory::{Directory, META_SHARD, NodeRecord, NodeState};
