//! `roost cluster status` and a node's `/admin/cluster` on a real cluster:
//! every node, shard leader and log position while it is healthy; a
//! warning for the node that does not answer once one is SIGKILLed. And a
//! node started with other cluster-wide settings is refused when it joins.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{SHARDS, wait_agreed};
use crate::procs;

fn status_json(join: &str) -> (Value, String) {
    let out = procs::run(&[
        "cluster".into(),
        "status".into(),
        "--join".into(),
        join.into(),
        "--json".into(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "roost cluster status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (serde_json::from_str(&text).expect("JSON"), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_shows_nodes_shards_and_warnings() {
    let _turn = crate::harness::one_at_a_time().await;
    let root = tempfile::tempdir().expect("temp dir");
    let mut nodes = procs::cluster(root.path(), 3, SHARDS);
    let addrs: Vec<String> = nodes.values().map(|p| p.addr.clone()).collect();
    wait_agreed(&addrs, 3, Duration::from_secs(90)).await;

    // Healthy: once every group's followers have caught up, no warnings.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let (status, text) = status_json(&addrs[1]);
        if status["warnings"].as_array().is_some_and(Vec::is_empty) {
            break status;
        }
        assert!(Instant::now() < deadline, "warnings stay: {text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status["shards"], u32::from(SHARDS));
    assert_eq!(status["nodes"].as_array().expect("nodes").len(), 3);
    for n in status["nodes"].as_array().expect("nodes") {
        assert_eq!(n["state"], "active");
        assert_eq!(n["reachable"], true);
        assert_eq!(n["version"], env!("CARGO_PKG_VERSION"));
    }
    let groups = status["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), usize::from(SHARDS));
    for g in groups {
        assert!(g["leader"].as_u64().is_some(), "{g}");
        assert_eq!(g["voters"].as_array().expect("voters").len(), 3, "{g}");
        assert!(g["term"].as_u64() > Some(0), "{g}");
        assert!(g["commit_index"].as_u64() > Some(0), "{g}");
    }
    assert!(status["metadata"]["leader"].as_u64().is_some());

    // The table, and the same JSON from a node's admin endpoint.
    let out = procs::run(&[
        "cluster".into(),
        "status".into(),
        "--join".into(),
        addrs[0].clone(),
    ]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("NODE") && table.contains("SHARD") && table.contains("LAG"),
        "{table}"
    );
    let admin = &nodes.values().next().expect("node").admin;
    let body: Value = reqwest::get(format!("{admin}/admin/cluster"))
        .await
        .expect("admin answers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(body["nodes"].as_array().map(Vec::len), Some(3), "{body}");

    // A node with other cluster-wide settings is refused, and says why.
    let out = procs::run(&[
        "node".into(),
        "--insecure".into(),
        "--id".into(),
        "9".into(),
        "--grpc-listen".into(),
        "127.0.0.1:0".into(),
        "--admin-listen".into(),
        "127.0.0.1:0".into(),
        "--shards".into(),
        (SHARDS * 2).to_string(),
        "--data-dir".into(),
        procs::data_dir(root.path(), 9).display().to_string(),
        "--join".into(),
        addrs[0].clone(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a node with other shards joins: {stderr}"
    );
    assert!(
        stderr.contains(&format!("shards {}, the cluster {SHARDS}", SHARDS * 2)),
        "{stderr}"
    );
    let (status, _) = status_json(&addrs[0]);
    assert_eq!(
        status["nodes"].as_array().map(Vec::len),
        Some(3),
        "not admitted"
    );

    // A node gone: it does not answer, and the shards it led get leaders
    // elsewhere.
    let victim = nodes.remove(&3).expect("node 3");
    victim.kill9();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, text) = status_json(&addrs[0]);
        let warned = status["warnings"]
            .as_array()
            .expect("warnings")
            .iter()
            .any(|w| w.as_str().is_some_and(|w| w.starts_with("node 3 ")));
        let led = status["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .all(|g| g["leader"].as_u64().is_some_and(|l| l != 3));
        if warned && led && status["nodes"][2]["reachable"] == false {
            break;
        }
        assert!(Instant::now() < deadline, "status after SIGKILL: {text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(nodes);
}
