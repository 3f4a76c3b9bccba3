mod common;

use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_then_get_over_http() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = common::start(common::config(dir.path())).await;
    let c = common::Client::new(&node);
    let (s, _) = c
        .op("a", json!({"op": "put", "key": "k", "value": "v"}))
        .await;
    assert_eq!(s, 200);
    let (s, body) = c.op("a", json!({"op": "get", "key": "k"})).await;
    assert_eq!((s, body), (200, json!({"value": "v"})));
    let (s, body) = c.op("b", json!({"op": "get", "key": "k"})).await;
    assert_eq!((s, body), (200, json!({"value": null})));
    node.shutdown().await.expect("clean shutdown");
}
