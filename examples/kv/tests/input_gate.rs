//! The input gate: events of one object run one at a time, even when the
//! handler awaits between its read and its write.

mod common;

use common::Client;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_slow_increments_run_serially() {
    const N: i64 = 50;
    let dir = tempfile::tempdir().expect("temp dir");
    let node = common::start(common::config(dir.path())).await;
    let c = Client::new(&node);
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..N {
        let http = c.http.clone();
        let url = format!("{}/kv/counter", c.base);
        requests.spawn(async move {
            let resp = http
                .post(url)
                .json(&json!({"op": "slow_increment", "key": "n"}))
                .send()
                .await
                .expect("request is sent");
            assert_eq!(resp.status().as_u16(), 200);
            let body: serde_json::Value = resp.json().await.expect("JSON body");
            body["value"].as_i64().expect("value is a number")
        });
    }
    let mut seen = Vec::new();
    while let Some(result) = requests.join_next().await {
        seen.push(result.expect("request task"));
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=N).collect::<Vec<_>>(),
        "each increment saw the previous one's write"
    );
    assert_eq!(c.get("counter", "n").await, json!(N.to_string()));
    node.shutdown().await.expect("clean shutdown");
}
