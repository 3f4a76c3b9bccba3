//! The largest writes an event may make replicate on a 3-node cluster
//! without a leader change (issue 13, defect 5): one event writing the
//! maximum allowed bytes in a group commit with other events' writes, and
//! one deleting as many keys as the limit allows. Nodes are in-process with
//! real gRPC on loopback and real RocksDB (the harness of
//! `tests/raft_grpc/`), in a test binary of its own so that no other test
//! competes for the two cores while tens of MiB are fsynced.

#[path = "raft_grpc/cluster.rs"]
#[allow(dead_code)]
mod cluster;

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use roost::object::Limits;
use roost::replication::ReplicationOptions;
use roost::storage::{Mutation, ObjectWrite};

use cluster::{Node, initialize, leader, object, put, wait_for_leaders, wait_until};
use tempfile::TempDir;

/// What one key adds to an event's size beyond its key and value bytes
/// (`object::view::ENTRY_OVERHEAD`).
const ENTRY_OVERHEAD: usize = 16;

/// Puts that add up to exactly `limit` bytes as the object layer counts.
fn largest_put(object: &roost::id::ObjectKey, limit: usize, max_value: usize) -> ObjectWrite {
    let mut mutations = Vec::new();
    let mut left = limit;
    let mut i = 0;
    while left > ENTRY_OVERHEAD + 8 {
        let key = format!("big-{i:04}");
        let value = (left - ENTRY_OVERHEAD - key.len()).min(max_value);
        left -= key.len() + value + ENTRY_OVERHEAD;
        mutations.push(Mutation::Put {
            key,
            value: Bytes::from(vec![b'x'; value]),
        });
        i += 1;
    }
    ObjectWrite {
        object: object.clone(),
        mutations,
    }
}

/// As many deletes of the longest keys as `limit` allows.
fn largest_delete(object: &roost::id::ObjectKey, limit: usize, max_key: usize) -> ObjectWrite {
    let n = limit / (max_key + ENTRY_OVERHEAD);
    let mutations = (0..n)
        .map(|i| Mutation::Delete {
            key: format!("{i:0>width$}", width = max_key),
        })
        .collect();
    ObjectWrite {
        object: object.clone(),
        mutations,
    }
}

/// Replication timing for a debug build on a shared 2-core machine, where
/// sending and fsyncing one 20 MiB entry takes a second or more (measured:
/// 1.3–6 s for the whole test's 36 MiB): election timeouts of 4–8 s, so an
/// AppendEntries may take up to 2 s (`raft_timeout_ms`). With the
/// AppendEntries timeout tied to the 50 ms heartbeat period (openraft's
/// `heartbeat_interval`, as before issue 13) the same entries never reach a
/// follower and leadership moves instead.
fn options() -> ReplicationOptions {
    ReplicationOptions {
        heartbeat_ms: 50,
        election_timeout_min_ms: 4_000,
        election_timeout_max_ms: 8_000,
        ..ReplicationOptions::default()
    }
}

/// (leader, term) of `shard` as each node sees it.
fn terms(nodes: &[Node], shard: u16) -> Vec<(Option<u64>, u64)> {
    nodes
        .iter()
        .map(|n| {
            let m = n.shard(shard).raft().metrics();
            let m = m.borrow();
            (m.current_leader, m.current_term)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_largest_writes_commit_on_three_nodes_without_a_leader_change() {
    const SHARDS: u16 = 1;
    let o = options();
    cluster::init_logging();
    let mut dirs = Vec::new();
    let mut nodes = Vec::new();
    for id in 1..=3 {
        let dir = TempDir::new().expect("temp dir");
        let bind: SocketAddr = "127.0.0.1:0".parse().expect("address");
        nodes.push(Node::start(id, dir.path(), bind, SHARDS, o.clone()).await);
        dirs.push(dir);
    }
    initialize(&nodes).await;
    wait_for_leaders(&nodes).await;
    let limits = Limits::default();
    let obj = object("large");
    let shard = obj.id.shard(SHARDS);
    // Settle: every node agrees on the leader and term.
    let before = wait_until("every node names the same leader", || {
        let t = terms(&nodes, shard);
        (t.iter().all(|x| *x == t[0] && x.0.is_some())).then_some(t[0])
    })
    .await;
    let lead = leader(&nodes, shard).await;

    // One event's largest write, proposed right behind a group commit's
    // worth of other events' writes, so they may share one entry.
    let fillers: Vec<ObjectWrite> = (0..o.max_batch_bytes / limits.max_value_bytes)
        .map(|i| {
            put(
                &object(&format!("filler-{i}")),
                "v",
                Bytes::from(vec![b'f'; limits.max_value_bytes - 64]),
            )
        })
        .collect();
    let big = largest_put(&obj, limits.max_event_write_bytes, limits.max_value_bytes);
    let deletes = largest_delete(&obj, limits.max_event_write_bytes, limits.max_key_bytes);
    let started = Instant::now();
    let mut commits = Vec::new();
    for w in fillers.into_iter().chain([big, deletes]) {
        commits.push(lead.shard(shard).propose(w).await.expect("enqueue"));
    }
    for c in commits {
        c.await.expect("the write commits");
    }
    let took = started.elapsed();
    eprintln!(
        "a {} MiB write and {} MiB of deletes behind {} MiB of other writes committed on 3 nodes in {took:?}",
        limits.max_event_write_bytes >> 20,
        limits.max_event_write_bytes >> 20,
        o.max_batch_bytes >> 20,
    );
    // Every node has the last put's neighbour and lost the deleted keys.
    for node in &nodes {
        wait_until(&format!("node {} applies the writes", node.id), || {
            cluster::value(&node.db, shard, &obj, "big-0000").map(|v| v.len())
        })
        .await;
    }
    assert_eq!(
        terms(&nodes, shard),
        vec![before; 3],
        "the leader and term stayed the same on every node"
    );
    for node in nodes {
        node.stop().await;
    }
}
