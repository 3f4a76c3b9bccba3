//! A whole-cluster crash: every node is killed at once (SIGKILL) under
//! load, then all of them are started again concurrently, in a random
//! order, none waiting for another to be ready (what a StatefulSet with
//! `podManagementPolicy: Parallel` does). Every node must reach `/readyz`
//! 200 and the history must check out (every acknowledged write present).

use std::time::{Duration, Instant};

use rand::seq::SliceRandom;

use crate::harness::{SHARDS, wait_agreed, wait_converged};
use crate::load::Load;
use crate::procs;

/// Restarts node `id` as a rolling upgrade does: SIGTERM (it must exit 0),
/// then it starts again on the same address and data and turns ready.
/// Returns the new process and how long the old one took to stop.
pub async fn sigterm_and_restart(
    root: &std::path::Path,
    id: u64,
    proc: procs::Proc,
) -> (procs::Proc, Duration) {
    let addr = proc.addr.clone();
    let began = Instant::now();
    let code = tokio::task::spawn_blocking(move || proc.terminate())
        .await
        .expect("terminate task");
    assert_eq!(code, Some(0), "node {id} stops cleanly on SIGTERM");
    let stopped = began.elapsed();
    let root_dir = root.to_owned();
    let back = tokio::task::spawn_blocking(move || procs::node(&root_dir, id, &addr, &[], SHARDS))
        .await
        .expect("restart task");
    wait_ready(&back.admin, Duration::from_secs(120))
        .await
        .unwrap_or_else(|last| panic!("node {id} is not ready again: {last}"));
    (back, stopped)
}

/// Waits until `GET {admin}/readyz` answers 200; returns the last body
/// when the deadline passes first.
pub async fn wait_ready(admin: &str, timeout: Duration) -> Result<(), String> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        match http
            .get(format!("{admin}/readyz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => return Ok(()),
            Ok(r) => last = r.text().await.unwrap_or_default(),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_killed_at_once_restarts_in_any_order_and_keeps_every_write() {
    let _turn = crate::harness::one_at_a_time().await;
    let root = tempfile::tempdir().expect("temp dir");
    let mut nodes = procs::cluster(root.path(), 3, SHARDS);
    let addrs: Vec<String> = nodes.values().map(|p| p.addr.clone()).collect();
    wait_converged(&addrs, 3, Duration::from_secs(90)).await;
    for p in nodes.values() {
        wait_ready(&p.admin, Duration::from_secs(60))
            .await
            .expect("ready before the crash");
    }
    let edge = procs::edge(&addrs);
    let load = Load::start(&edge.addr, "r", 6, 16);
    load.wait_acked(200, Duration::from_secs(60)).await;

    // SIGKILL to every node before waiting for any of them.
    let addr_of: Vec<(u64, String)> = nodes.iter().map(|(id, p)| (*id, p.addr.clone())).collect();
    for p in nodes.values_mut() {
        let _ = p.child.kill();
    }
    nodes.clear();
    let crashed_at = load.history.now();

    // A node alone is not ready: the shards it led before the crash are
    // its Raft's again at once, but no quorum acknowledges it.
    let mut order = addr_of.clone();
    order.shuffle(&mut rand::rng());
    eprintln!(
        "restarting nodes in the order {:?}",
        order.iter().map(|(id, _)| *id).collect::<Vec<_>>()
    );
    let (first_id, first_addr) = order[0].clone();
    let first = procs::node(root.path(), first_id, &first_addr, &[], SHARDS);
    // Every shard placed on it counts as behind (a shard its Raft leads
    // without a quorum's acknowledgement counts from the second check on).
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let alone = loop {
        let r = http
            .get(format!("{}/readyz", first.admin))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .expect("admin answers");
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        assert_eq!(status, 503, "a lone node of three is not ready: {body}");
        if body.contains(&format!("{SHARDS} of the {SHARDS} shards placed here")) {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "no shard counts as caught up without a quorum: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("node {first_id} alone: {}", alone.trim());

    // The rest start concurrently, each on its old address and data dir.
    let root_path = root.path().to_owned();
    let starting: Vec<_> = order[1..]
        .iter()
        .cloned()
        .map(|(id, addr)| {
            let root = root_path.clone();
            std::thread::spawn(move || (id, procs::node(&root, id, &addr, &[], SHARDS)))
        })
        .collect();
    nodes.insert(first_id, first);
    for t in starting {
        let (id, p) = t.join().expect("node starts");
        nodes.insert(id, p);
    }
    for (id, p) in &nodes {
        if let Err(last) = wait_ready(&p.admin, Duration::from_secs(120)).await {
            panic!("node {id} is not ready after the restart: {last}");
        }
    }
    wait_agreed(&addrs, 3, Duration::from_secs(90)).await;
    let took = load
        .wait_all_writable(crashed_at, Duration::from_secs(90))
        .await;
    eprintln!("after the whole-cluster crash every counter was writable again after {took:?}");
    load.finish_and_check().await;
    drop(edge);
    drop(nodes);
}
