//! Consistent-hash placement of shards on nodes.
//!
//! Each node contributes [`VNODES`] points to a hash ring (crate
//! `hashring`); a shard's replica set is the next `replication` distinct
//! nodes clockwise from the shard's own point, and the first of them is its
//! preferred leader. Adding or removing a node therefore moves only about
//! 1/N of the replicas, and preferred leaders spread evenly.
//!
//! Pure: no I/O, no async, no clock. Same input, same placement, on every
//! node and edge.

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};

use hashring::HashRing;

use crate::id::ShardId;

/// A node's id in the cluster.
pub type NodeId = u64;

/// Ring points per node: enough for an even spread with a handful of nodes.
pub const VNODES: u16 = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct VNode {
    node: NodeId,
    index: u16,
}

impl Hash for VNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        b"roost/vnode".hash(state);
        self.node.hash(state);
        self.index.hash(state);
    }
}

/// Where every shard's replicas live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Per shard, its replicas; the first is the preferred leader.
    replicas: Vec<Vec<NodeId>>,
}

impl Placement {
    /// Places `shards` shards on `nodes` with `replication` replicas each
    /// (fewer when there are fewer nodes).
    pub fn compute(nodes: &BTreeSet<NodeId>, shards: u16, replication: usize) -> Placement {
        let mut ring: HashRing<VNode> = HashRing::new();
        for &node in nodes {
            for index in 0..VNODES {
                ring.add(VNode { node, index });
            }
        }
        let want = replication.min(nodes.len());
        let replicas = (0..shards)
            .map(|shard| {
                let mut out: Vec<NodeId> = Vec::with_capacity(want);
                if want == 0 {
                    return out;
                }
                let walk = ring
                    .get_with_replicas(&ShardPoint(shard), ring.len())
                    .unwrap_or_default();
                for v in walk {
                    if !out.contains(&v.node) {
                        out.push(v.node);
                        if out.len() == want {
                            break;
                        }
                    }
                }
                out
            })
            .collect();
        Placement { replicas }
    }

    /// The replicas of `shard`, preferred leader first.
    pub fn replicas(&self, shard: ShardId) -> &[NodeId] {
        self.replicas
            .get(usize::from(shard))
            .map_or(&[], Vec::as_slice)
    }

    /// The node that should lead `shard` when it is healthy.
    pub fn preferred_leader(&self, shard: ShardId) -> Option<NodeId> {
        self.replicas(shard).first().copied()
    }

    /// The shards `node` holds a replica of.
    pub fn shards_of(&self, node: NodeId) -> impl Iterator<Item = ShardId> + '_ {
        self.replicas
            .iter()
            .enumerate()
            .filter(move |(_, r)| r.contains(&node))
            .map(|(s, _)| s as ShardId)
    }

    pub fn shard_count(&self) -> u16 {
        self.replicas.len() as ShardId
    }
}

/// A shard's point on the ring.
struct ShardPoint(ShardId);

impl Hash for ShardPoint {
    fn hash<H: Hasher>(&self, state: &mut H) {
        b"roost/shard".hash(state);
        self.0.hash(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn every_shard_gets_distinct_replicas() {
        let p = Placement::compute(&nodes(&[1, 2, 3, 4, 5]), 64, 3);
        for s in 0..64 {
            let r = p.replicas(s);
            assert_eq!(r.len(), 3);
            let distinct: BTreeSet<_> = r.iter().collect();
            assert_eq!(distinct.len(), 3, "shard {s}: {r:?}");
        }
    }

    #[test]
    fn fewer_nodes_than_replicas_uses_them_all() {
        let p = Placement::compute(&nodes(&[7]), 8, 3);
        assert!((0..8).all(|s| p.replicas(s) == [7]));
        let p = Placement::compute(&nodes(&[]), 8, 3);
        assert!(p.replicas(0).is_empty());
        assert_eq!(p.preferred_leader(0), None);
    }

    #[test]
    fn placement_is_deterministic() {
        let a = Placement::compute(&nodes(&[3, 1, 2]), 64, 3);
        let b = Placement::compute(&nodes(&[1, 2, 3]), 64, 3);
        assert_eq!(a, b);
    }

    #[test]
    fn adding_a_node_moves_a_fair_share() {
        let before = Placement::compute(&nodes(&[1, 2, 3, 4]), 256, 3);
        let after = Placement::compute(&nodes(&[1, 2, 3, 4, 5]), 256, 3);
        let mut moved = 0;
        for s in 0..256 {
            let old: BTreeSet<_> = before.replicas(s).iter().collect();
            moved += after
                .replicas(s)
                .iter()
                .filter(|n| !old.contains(n))
                .count();
        }
        let total = 256 * 3;
        // The new node should take about 1/5 of the replicas; nothing else moves.
        let share = moved as f64 / total as f64;
        assert!((0.1..0.32).contains(&share), "moved {moved} of {total}");
        assert_eq!(after.shards_of(5).count(), moved);
    }

    #[test]
    fn preferred_leaders_spread_evenly() {
        let p = Placement::compute(&nodes(&[1, 2, 3]), 64, 3);
        for n in [1, 2, 3] {
            let led = (0..64)
                .filter(|&s| p.preferred_leader(s) == Some(n))
                .count();
            assert!((10..=35).contains(&led), "node {n} leads {led} of 64");
        }
    }
}
