//! SIGSTOP of the node leading the most shards, under load: the majority
//! elects new leaders and keeps serving; after SIGCONT the paused node
//! (which still believes it leads until it hears otherwise) acknowledges
//! nothing that contradicts the history, and the cluster converges.

use std::time::Duration;

use crate::harness::{SHARDS, busiest_leader, wait_agreed, wait_converged};
use crate::load::Load;
use crate::procs;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_replaced_and_acknowledges_nothing_stale() {
    let _turn = crate::harness::one_at_a_time().await;
    let root = tempfile::tempdir().expect("temp dir");
    let nodes = procs::cluster(root.path(), 3, SHARDS);
    let addrs: Vec<String> = nodes.values().map(|p| p.addr.clone()).collect();
    wait_converged(&addrs, 3, Duration::from_secs(90)).await;
    let edge = procs::edge(&addrs);

    let load = Load::start(&edge.addr, "s", 8, 24);
    load.wait_acked(200, Duration::from_secs(60)).await;

    let victim = busiest_leader(&addrs).await;
    let paused = &nodes[&victim];
    let paused_at = load.history.now();
    paused.pause();
    let took = load
        .wait_all_writable(paused_at, Duration::from_secs(90))
        .await;
    eprintln!("SIGSTOP of node {victim}: every counter writable again after {took:?}");
    // Let the majority serve a while longer without it.
    let before = load.acked();
    load.wait_acked(before + 200, Duration::from_secs(60)).await;

    let resumed_at = load.history.now();
    paused.resume();
    wait_agreed(&addrs, 3, Duration::from_secs(90)).await;
    let took = load
        .wait_all_writable(resumed_at, Duration::from_secs(60))
        .await;
    eprintln!("SIGCONT of node {victim}: cluster agreed, every counter written after {took:?}");

    load.finish_and_check().await;
    drop(edge);
    drop(nodes);
}
