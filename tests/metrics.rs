//! `/metrics` and `/admin/hot-objects` of an in-process node: the admin
//! listener is apart from user traffic, and what a request does shows up
//! there by route, binding and shard — never by object id.

mod common;

use std::time::Duration;

use common::wait_until;
use roost::config::Config;
use roost::node::DevNode;

async fn scrape(node: &DevNode) -> String {
    let resp = reqwest::get(format!("http://{}/metrics", node.admin_addr()))
        .await
        .expect("scrape");
    assert!(resp.status().is_success());
    let content_type = resp.headers()["content-type"].to_str().unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    resp.text().await.expect("body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_shows_up_in_the_metrics() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".parse().expect("addr");
    config.admin.listen = "127.0.0.1:0".parse().expect("addr");
    config.node.data_dir = dir.path().to_path_buf();
    config.node.shards = 2;
    let node = DevNode::start(config).await.expect("node starts");
    assert_ne!(node.admin_addr(), node.http_addr());

    let http = reqwest::Client::new();
    let name = "metrics-test-counter";
    let resp = http
        .post(format!(
            "http://{}/counter/{name}/increment",
            node.http_addr()
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    // The admin endpoints are not on the user port.
    let resp = http
        .get(format!("http://{}/metrics", node.http_addr()))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 404);

    let expected = [
        r#"roost_http_requests_total{route="/counter/:name/:action",method="POST",status="200"}"#,
        r#"roost_object_events_total{binding="COUNTER",event="fetch",outcome="ok"}"#,
        r#"roost_object_commit_wait_seconds_count{binding="COUNTER",gate="write"}"#,
        r#"roost_storage_operations_total{binding="COUNTER",op="put"}"#,
        r#"roost_raft_is_leader{shard="0"} 1"#,
        r#"roost_raft_applied_index{shard="#,
        r#"roost_rocksdb_write_stopped 0"#,
        r#"roost_rocksdb_sst_files_bytes{cf="state"}"#,
        "roost_objects_live ",
        "# TYPE roost_hot_object_busy_ratio gauge",
    ];
    let last = std::sync::Mutex::new(String::new());
    let all_there = wait_until(Duration::from_secs(10), || async {
        let text = scrape(&node).await;
        let done = expected.iter().all(|e| text.contains(e));
        *last.lock().expect("lock") = text;
        done
    })
    .await;
    let text = last.into_inner().expect("lock");
    let missing: Vec<_> = expected.iter().filter(|e| !text.contains(*e)).collect();
    assert!(all_there, "missing {missing:?} in:\n{text}");
    let id = roost::id::ObjectId::from_name("COUNTER", name).to_string();
    assert!(!text.contains(&id), "an object id is never a label");

    let hot: serde_json::Value =
        reqwest::get(format!("http://{}/admin/hot-objects", node.admin_addr()))
            .await
            .expect("hot objects")
            .json()
            .await
            .expect("json");
    assert!(hot["objects"].is_array(), "{hot}");

    node.shutdown().await.expect("shutdown");
}
