//! A planned leadership move costs callers nothing: under steady counter
//! load through the edge, the node leading the most shards gets SIGTERM (as
//! a rolling upgrade does). It hands its leaderships to the other voters
//! before it stops; every request sent meanwhile is answered with a value
//! (events refused on the old leader when its term ended certainly did not
//! run, so the edge runs them again on the new one), and the history stays
//! linearizable with no acknowledged write lost. Then a rolling restart of
//! every node in turn (SIGTERM, start again, ready) to the same standard.
//! (`scale_in.rs` holds a drain to it too.)

use std::time::Duration;

use crate::harness::{SHARDS, busiest_leader, wait_converged};
use crate::load::Load;
use crate::procs;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_hand_off_under_load_answers_every_request() {
    let _turn = crate::harness::one_at_a_time().await;
    let root = tempfile::tempdir().expect("temp dir");
    let mut nodes = procs::cluster(root.path(), 3, SHARDS);
    let addrs: Vec<String> = nodes.values().map(|p| p.addr.clone()).collect();
    wait_converged(&addrs, 3, Duration::from_secs(120)).await;
    let edge = procs::edge(&addrs);

    let load = Load::start(&edge.addr, "h", 8, 24);
    load.wait_acked(200, Duration::from_secs(60)).await;

    let victim = busiest_leader(&addrs).await;
    let proc = nodes.remove(&victim).expect("victim process");
    let rest: Vec<String> = nodes.values().map(|p| p.addr.clone()).collect();
    let stopping = load.history.now();
    let code = tokio::task::spawn_blocking(move || proc.terminate())
        .await
        .expect("terminate task");
    assert_eq!(code, Some(0), "node {victim} stops cleanly on SIGTERM");
    let stopped = load.history.now();
    // Every counter takes writes from the two remaining nodes, and the
    // load runs on a while.
    load.wait_all_writable(stopped, Duration::from_secs(60))
        .await;
    let acked = load.acked();
    load.wait_acked(acked + 500, Duration::from_secs(60)).await;
    // Every shard has a leader among them (its voters still name the
    // stopped node: it may come back, as after an upgrade).
    wait_converged(&rest, 3, Duration::from_secs(60)).await;

    let (during, failed) = load.outcomes_since(stopping);
    eprintln!(
        "hand-off: node {victim} stopped in {:.2} s; {} operations since SIGTERM, {failed} without a value",
        (stopped - stopping) as f64 / 1e6,
        during
    );
    assert!(during > 50, "the load kept running: {}", during);
    assert_eq!(
        failed,
        0,
        "requests answered with an error during a SIGTERM hand-off: {:?}",
        load.errors_since(stopping)
    );
    load.finish_and_check().await;
    drop(edge);
    drop(nodes);
}

/// A rolling restart, as `helm upgrade` does it: each node in turn gets
/// SIGTERM, comes back on the same address and data, and turns ready
/// before the next one goes. Every request sent meanwhile is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_answers_every_request() {
    let _turn = crate::harness::one_at_a_time().await;
    let root = tempfile::tempdir().expect("temp dir");
    let mut nodes = procs::cluster(root.path(), 3, SHARDS);
    let addrs: Vec<String> = nodes.values().map(|p| p.addr.clone()).collect();
    wait_converged(&addrs, 3, Duration::from_secs(120)).await;
    let edge = procs::edge(&addrs);

    let load = Load::start(&edge.addr, "r", 8, 24);
    load.wait_acked(200, Duration::from_secs(60)).await;
    let started = load.history.now();
    let ids: Vec<u64> = nodes.keys().copied().collect();
    for id in ids {
        let proc = nodes.remove(&id).expect("node process");
        let (back, _) = crate::restart::sigterm_and_restart(root.path(), id, proc).await;
        nodes.insert(id, back);
        let acked = load.acked();
        load.wait_acked(acked + 100, Duration::from_secs(60)).await;
    }
    wait_converged(&addrs, 3, Duration::from_secs(60)).await;

    let (during, failed) = load.outcomes_since(started);
    eprintln!(
        "rolling restart: {} operations while every node restarted in turn, {failed} without a value",
        during
    );
    assert_eq!(
        failed,
        0,
        "requests answered with an error during a rolling restart: {:?}",
        load.errors_since(started)
    );
    load.finish_and_check().await;
    drop(edge);
    drop(nodes);
}
