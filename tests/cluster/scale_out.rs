//! Adding a 4th node under load: it receives replicas (learner, then
//! voter, then the old replica leaves), every shard keeps 3 voters, and
//! the history checks out. The new node's `/readyz` turns ready only once
//! its replicas have caught up with their leaders.

use std::time::{Duration, Instant};

use crate::harness::{SHARDS, wait_agreed, wait_converged};
use crate::load::Load;
use crate::procs;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_node_joins_under_load_and_receives_replicas() {
    let _turn = crate::harness::one_at_a_time().await;
    let root = tempfile::tempdir().expect("temp dir");
    let mut nodes = procs::cluster(root.path(), 3, SHARDS);
    let mut addrs: Vec<String> = nodes.values().map(|p| p.addr.clone()).collect();
    let before = wait_converged(&addrs, 3, Duration::from_secs(90)).await;
    let edge = procs::edge(&addrs);

    let load = Load::start(&edge.addr, "o", 8, 24);
    load.wait_acked(200, Duration::from_secs(60)).await;

    let joined_at = load.history.now();
    let n4 = procs::node(root.path(), 4, "127.0.0.1:0", &addrs, SHARDS);
    // Just started: it holds no replica yet, so it is not ready.
    let (status, why) = readyz(&n4.admin).await;
    assert_eq!(
        status, 503,
        "a node with no replicas yet is not ready: {why}"
    );
    eprintln!("scale out: node 4 at start: {why}");
    let admin4 = n4.admin.clone();
    addrs.push(n4.addr.clone());
    nodes.insert(4, n4);

    // Some shard's leader reports node 4 among its voters, every shard has
    // 3 voters, and all four nodes agree on the leaders.
    let deadline = Instant::now() + Duration::from_secs(120);
    let after = loop {
        let g = wait_agreed(&addrs, 3, Duration::from_secs(120)).await;
        if g.values().any(|x| x.voters.contains(&4)) {
            break g;
        }
        assert!(
            Instant::now() < deadline,
            "node 4 received no replica: {g:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let moved: Vec<u32> = after
        .iter()
        .filter(|(_, x)| x.voters.contains(&4))
        .map(|(s, _)| *s)
        .collect();
    eprintln!(
        "scale out: node 4 votes in shards {moved:?} ({:?} after it started)",
        Duration::from_micros(load.history.now().saturating_sub(joined_at))
    );
    for (shard, x) in &after {
        let mut voters = x.voters.clone();
        voters.sort_unstable();
        eprintln!(
            "shard {shard}: voters {:?} -> {voters:?}, leader {}",
            before.get(shard).map(|b| &b.voters),
            x.leader
        );
    }
    // Ready once the replicas the ring placed on it have caught up.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, why) = readyz(&admin4).await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 4 never became ready: {why}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Writes keep flowing on every counter after the move.
    let now = load.history.now();
    load.wait_all_writable(now, Duration::from_secs(60)).await;
    // The cluster settles with 3 voters per shard (a shard may be in the
    // middle of an election or a membership change at any one instant).
    wait_converged(&addrs, 3, Duration::from_secs(60)).await;
    load.finish_and_check().await;
    drop(edge);
    drop(nodes);
}

/// `GET /readyz` on an admin server: the status and the body.
async fn readyz(admin: &str) -> (u16, String) {
    let resp = reqwest::get(format!("{admin}/readyz"))
        .await
        .expect("the admin server answers");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}
