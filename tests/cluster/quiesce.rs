//! Idle shards quiesce (`raft.quiesce_ms`): no Raft traffic while nothing
//! happens, a request wakes its shard and reads what was committed before,
//! and the SIGKILL of the node leading them moves every quiesced shard to
//! another node with no acknowledged write lost.

use std::time::{Duration, Instant};

use crate::harness::{SHARDS, busiest_leader, wait_converged};
use crate::procs;

const COUNTERS: usize = 24;

async fn metrics_text(admin: &str) -> String {
    match reqwest::get(format!("{admin}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        // A killed node has no metrics.
        Err(_) => String::new(),
    }
}

/// The sum over `lines` of the samples of series starting with `prefix`
/// whose labels contain every one of `labels`.
fn sum_of(text: &str, prefix: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix) && labels.iter().all(|s| l.contains(s)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn quiesced(admins: &[String]) -> f64 {
    let mut n = 0.0;
    for a in admins {
        n += sum_of(&metrics_text(a).await, "roost_raft_quiesced_shards", &[]);
    }
    n
}

/// AppendEntries received for object shards (the metadata group never
/// quiesces), by all nodes.
async fn appends_received(admins: &[String]) -> f64 {
    let mut n = 0.0;
    for a in admins {
        n += sum_of(
            &metrics_text(a).await,
            "roost_raft_appends_received_total",
            &[],
        );
    }
    n
}

async fn wait_all_quiesced(admins: &[String], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let n = quiesced(admins).await;
        if n == f64::from(SHARDS) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} of {SHARDS} shards quiesced after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Increments counter `i` through the edge until it answers 200 (retrying
/// what the edge refuses while leadership moves), and returns its value.
async fn increment(http: &reqwest::Client, edge: &str, i: usize, timeout: Duration) -> i64 {
    let deadline = Instant::now() + timeout;
    loop {
        let resp = http
            .post(format!("{edge}/counter/q-{i}/increment"))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        if let Ok(r) = resp
            && r.status() == 200
        {
            let body: serde_json::Value = r.json().await.expect("counter JSON");
            return body["value"].as_i64().expect("counter value");
        }
        assert!(
            Instant::now() < deadline,
            "counter q-{i} not writable within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_shards_quiesce_wake_on_a_request_and_fail_over_after_a_sigkill() {
    let _turn = crate::harness::one_at_a_time().await;
    let root = tempfile::tempdir().expect("temp dir");
    // Quiescence is on by default (`raft.quiesce_ms`); set here all the same.
    let env = [("ROOST_RAFT_QUIESCE_MS".to_owned(), "2000".to_owned())];
    let start = |id, join: &[String]| {
        procs::node_wrapped_env(&[], root.path(), id, "127.0.0.1:0", join, SHARDS, &env)
    };
    let first = start(1, &[]);
    let seeds = vec![first.addr.clone()];
    let mut nodes = std::collections::BTreeMap::from([(1, first)]);
    for id in 2..=3 {
        nodes.insert(id, start(id, &seeds));
    }
    let addrs: Vec<String> = nodes.values().map(|p| p.addr.clone()).collect();
    let admins: Vec<String> = nodes.values().map(|p| p.admin.clone()).collect();
    wait_converged(&addrs, 3, Duration::from_secs(90)).await;
    let edge = procs::edge(&addrs);
    let edge_url = edge.addr.clone();
    let http = reqwest::Client::new();
    for i in 0..COUNTERS {
        // At least: a retried increment whose first answer was lost counts
        // twice; fewer would be a lost acknowledged write.
        assert!(increment(&http, &edge_url, i, Duration::from_secs(60)).await >= 1);
    }

    // Idle: every shard quiesces, and then no AppendEntries is sent at all.
    wait_all_quiesced(&admins, Duration::from_secs(60)).await;
    let before = appends_received(&admins).await;
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(quiesced(&admins).await, f64::from(SHARDS));
    }
    assert_eq!(
        appends_received(&admins).await,
        before,
        "AppendEntries were served while every shard was quiet"
    );

    // A request wakes its shard and sees every earlier write.
    for i in 0..COUNTERS {
        assert!(increment(&http, &edge_url, i, Duration::from_secs(30)).await >= 2);
    }

    // Quiet again, the busiest leader dies: its shards' followers notice by
    // their pings alone, elect, and serve every counter with its value.
    wait_all_quiesced(&admins, Duration::from_secs(60)).await;
    let victim = busiest_leader(&addrs).await;
    let killed = Instant::now();
    nodes.remove(&victim).expect("victim is running").kill9();
    for i in 0..COUNTERS {
        assert!(increment(&http, &edge_url, i, Duration::from_secs(60)).await >= 3);
    }
    eprintln!(
        "SIGKILL of node {victim} with every shard quiesced: all {COUNTERS} counters written again after {:?}",
        killed.elapsed()
    );
    drop(edge);
    drop(nodes);
}
