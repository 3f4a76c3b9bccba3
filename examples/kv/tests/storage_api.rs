//! The storage API over HTTP: single and batch calls, list options,
//! transactions, limits, bad input, and durability across a restart.

mod common;

use common::Client;
use serde_json::{Value, json};

async fn node() -> (tempfile::TempDir, roost::node::DevNode, Client) {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = common::start(common::config(dir.path())).await;
    let client = Client::new(&node);
    (dir, node, client)
}

/// The keys of a `list` answer, in the order returned.
fn keys(body: &Value) -> Vec<String> {
    body["entries"]
        .as_array()
        .expect("entries is an array")
        .iter()
        .map(|e| e[0].as_str().expect("key is a string").to_owned())
        .collect()
}

fn list(opts: Value) -> Value {
    let mut op = json!({"op": "list"});
    if let (Some(op), Some(opts)) = (op.as_object_mut(), opts.as_object()) {
        op.extend(opts.clone());
    }
    op
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_key_get_put_delete() {
    let (_dir, node, c) = node().await;
    assert_eq!(c.get("o", "k").await, Value::Null);
    c.ok("o", json!({"op": "put", "key": "k", "value": "v1"}))
        .await;
    assert_eq!(c.get("o", "k").await, json!("v1"));
    c.ok("o", json!({"op": "put", "key": "k", "value": "v2"}))
        .await;
    assert_eq!(c.get("o", "k").await, json!("v2"), "put overwrites");
    let body = c.ok("o", json!({"op": "delete", "key": "k"})).await;
    assert_eq!(body, json!({"deleted": true}));
    let body = c.ok("o", json!({"op": "delete", "key": "k"})).await;
    assert_eq!(body, json!({"deleted": false}), "deleting twice");
    assert_eq!(c.get("o", "k").await, Value::Null);
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_get_put_delete() {
    let (_dir, node, c) = node().await;
    c.ok(
        "o",
        json!({"op": "put_many", "entries": [["a", "1"], ["b", "2"], ["c", "3"]]}),
    )
    .await;
    let body = c
        .ok(
            "o",
            json!({"op": "get_many", "keys": ["a", "c", "missing"]}),
        )
        .await;
    assert_eq!(
        body,
        json!({"values": {"a": "1", "c": "3"}}),
        "missing keys are absent"
    );
    let body = c
        .ok(
            "o",
            json!({"op": "delete_many", "keys": ["a", "b", "missing"]}),
        )
        .await;
    assert_eq!(body, json!({"deleted": 2}));
    let body = c
        .ok("o", json!({"op": "get_many", "keys": ["a", "b", "c"]}))
        .await;
    assert_eq!(body, json!({"values": {"c": "3"}}));
    let body = c.ok("o", json!({"op": "get_many", "keys": []})).await;
    assert_eq!(body, json!({"values": {}}));
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_options_alone_and_combined() {
    let (_dir, node, c) = node().await;
    let all = ["a", "b", "c", "p:1", "p:2", "p:3", "q"];
    let entries: Vec<Value> = all.iter().map(|k| json!([k, format!("v-{k}")])).collect();
    c.ok("o", json!({"op": "put_many", "entries": entries}))
        .await;

    let cases = [
        (json!({}), vec!["a", "b", "c", "p:1", "p:2", "p:3", "q"]),
        (json!({"prefix": "p:"}), vec!["p:1", "p:2", "p:3"]),
        (json!({"start": "c"}), vec!["c", "p:1", "p:2", "p:3", "q"]),
        (json!({"start_after": "c"}), vec!["p:1", "p:2", "p:3", "q"]),
        (json!({"end": "c"}), vec!["a", "b"]),
        (
            json!({"reverse": true}),
            vec!["q", "p:3", "p:2", "p:1", "c", "b", "a"],
        ),
        (json!({"limit": 2}), vec!["a", "b"]),
        (json!({"limit": 0}), vec![]),
        (json!({"start": "b", "end": "p:2"}), vec!["b", "c", "p:1"]),
        (
            json!({"start": "b", "end": "p:2", "reverse": true}),
            vec!["p:1", "c", "b"],
        ),
        (
            json!({"start_after": "b", "end": "p:2", "reverse": true, "limit": 2}),
            vec!["p:1", "c"],
        ),
        (
            json!({"prefix": "p:", "reverse": true, "limit": 2}),
            vec!["p:3", "p:2"],
        ),
        (json!({"prefix": "p:", "start": "p:2"}), vec!["p:2", "p:3"]),
        (
            json!({"prefix": "p:", "start_after": "p:1"}),
            vec!["p:2", "p:3"],
        ),
        (
            json!({"prefix": "p:", "start": "a"}),
            vec!["p:1", "p:2", "p:3"],
        ),
        (json!({"prefix": "p:", "end": "p:3"}), vec!["p:1", "p:2"]),
        (
            json!({"prefix": "p:", "end": "z"}),
            vec!["p:1", "p:2", "p:3"],
        ),
        (json!({"prefix": "zz"}), vec![]),
        (json!({"start": "c", "end": "c"}), vec![]),
        (json!({"start": "d", "end": "b"}), vec![]),
    ];
    for (opts, want) in cases {
        let body = c.ok("o", list(opts.clone())).await;
        assert_eq!(keys(&body), want, "list {opts}");
    }
    let body = c.ok("o", list(json!({"prefix": "p:", "limit": 1}))).await;
    assert_eq!(body, json!({"entries": [["p:1", "v-p:1"]]}), "values too");

    let (status, body) = c
        .op("o", list(json!({"start": "a", "start_after": "a"})))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_list_options");
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_sees_writes_of_the_same_transaction() {
    let (_dir, node, c) = node().await;
    c.ok(
        "o",
        json!({"op": "put_many", "entries": [["n:1", "x"], ["n:3", "x"]]}),
    )
    .await;
    let body = c
        .ok(
            "o",
            json!({"op": "txn", "ops": [
                {"op": "put", "key": "n:2", "value": "y"},
                {"op": "delete", "key": "n:1"},
                {"op": "list", "prefix": "n:"},
                {"op": "list", "prefix": "n:", "reverse": true, "limit": 1},
                {"op": "get", "key": "n:2"},
            ]}),
        )
        .await;
    let results = &body["results"];
    assert_eq!(keys(&results[2]), vec!["n:2", "n:3"]);
    assert_eq!(keys(&results[3]), vec!["n:3"]);
    assert_eq!(results[4], json!({"value": "y"}));
    let body = c.ok("o", list(json!({"prefix": "n:"}))).await;
    assert_eq!(keys(&body), vec!["n:2", "n:3"], "committed");
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_all_empties_the_object() {
    let (_dir, node, c) = node().await;
    c.ok(
        "o",
        json!({"op": "put_many", "entries": [["a", "1"], ["b", "2"]]}),
    )
    .await;
    c.ok("other", json!({"op": "put", "key": "a", "value": "kept"}))
        .await;
    c.ok("o", json!({"op": "delete_all"})).await;
    assert_eq!(
        keys(&c.ok("o", list(json!({}))).await),
        Vec::<String>::new()
    );
    assert_eq!(c.get("o", "a").await, Value::Null);
    assert_eq!(c.get("other", "a").await, json!("kept"), "only this object");

    // A put after delete_all in the same transaction survives it.
    c.ok("o", json!({"op": "put", "key": "old", "value": "1"}))
        .await;
    let body = c
        .ok(
            "o",
            json!({"op": "txn", "ops": [
                {"op": "put", "key": "before", "value": "1"},
                {"op": "delete_all"},
                {"op": "put", "key": "after", "value": "2"},
                {"op": "list"},
            ]}),
        )
        .await;
    assert_eq!(keys(&body["results"][3]), vec!["after"]);
    assert_eq!(keys(&c.ok("o", list(json!({}))).await), vec!["after"]);
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_transaction_rolls_back() {
    let (_dir, node, c) = node().await;
    c.ok("o", json!({"op": "put", "key": "kept", "value": "1"}))
        .await;
    let (status, body) = c
        .op(
            "o",
            json!({"op": "txn", "fail": true, "ops": [
                {"op": "put", "key": "new", "value": "x"},
                {"op": "delete", "key": "kept"},
                {"op": "delete_all"},
            ]}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "transaction_aborted");
    assert_eq!(c.get("o", "new").await, Value::Null);
    assert_eq!(c.get("o", "kept").await, json!("1"));

    // Nested: an inner transaction commits into the outer one...
    c.ok(
        "o",
        json!({"op": "txn", "ops": [
            {"op": "put", "key": "outer", "value": "1"},
            {"op": "txn", "ops": [{"op": "put", "key": "inner", "value": "1"}]},
        ]}),
    )
    .await;
    assert_eq!(c.get("o", "outer").await, json!("1"));
    assert_eq!(c.get("o", "inner").await, json!("1"));
    // ...and is undone with it when the outer one fails.
    let (status, _) = c
        .op(
            "o",
            json!({"op": "txn", "fail": true, "ops": [
                {"op": "txn", "ops": [{"op": "put", "key": "inner2", "value": "1"}]},
                {"op": "put", "key": "outer2", "value": "1"},
            ]}),
        )
        .await;
    assert_eq!(status, 409);
    // A failing inner transaction fails the whole request.
    let (status, _) = c
        .op(
            "o",
            json!({"op": "txn", "ops": [
                {"op": "put", "key": "outer3", "value": "1"},
                {"op": "txn", "fail": true, "ops": [{"op": "put", "key": "inner3", "value": "1"}]},
            ]}),
        )
        .await;
    assert_eq!(status, 409);
    let body = c
        .ok(
            "o",
            json!({"op": "get_many", "keys": ["inner2", "outer2", "inner3", "outer3"]}),
        )
        .await;
    assert_eq!(body, json!({"values": {}}));
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_limit_is_128_keys() {
    let (_dir, node, c) = node().await;
    let names = |n: usize| (0..n).map(|i| format!("k{i:03}")).collect::<Vec<_>>();
    let entries = |n: usize| {
        names(n)
            .into_iter()
            .map(|k| json!([k, "v"]))
            .collect::<Vec<_>>()
    };

    let (status, body) = c
        .op("o", json!({"op": "put_many", "entries": entries(129)}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "too_many_keys");
    let body = c.ok("o", list(json!({}))).await;
    assert_eq!(keys(&body), Vec::<String>::new(), "nothing written");

    for op in ["get_many", "delete_many"] {
        let (status, body) = c.op("o", json!({"op": op, "keys": names(129)})).await;
        assert_eq!(status, 400, "{op}: {body}");
        assert_eq!(body["error"], "too_many_keys", "{op}");
    }

    c.ok("o", json!({"op": "put_many", "entries": entries(128)}))
        .await;
    let body = c
        .ok("o", json!({"op": "get_many", "keys": names(128)}))
        .await;
    assert_eq!(body["values"].as_object().map(|m| m.len()), Some(128));
    let body = c
        .ok("o", json!({"op": "delete_many", "keys": names(128)}))
        .await;
    assert_eq!(body, json!({"deleted": 128}));
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_and_value_size_limits() {
    let (_dir, node, c) = node().await;
    let max_key = "k".repeat(2048);
    let max_value = "v".repeat(131_072);

    let (status, body) = c
        .op(
            "o",
            json!({"op": "put", "key": "k".repeat(2049), "value": "v"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "key_too_large");
    let (status, body) = c
        .op("o", json!({"op": "get", "key": "k".repeat(2049)}))
        .await;
    assert_eq!((status, &body["error"]), (400, &json!("key_too_large")));
    let (status, body) = c
        .op(
            "o",
            json!({"op": "put", "key": "big", "value": "v".repeat(131_073)}),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"], "value_too_large");
    let (status, body) = c
        .op(
            "o",
            json!({"op": "put_many", "entries": [["ok", "1"], ["big", "v".repeat(131_073)]]}),
        )
        .await;
    assert_eq!((status, &body["error"]), (413, &json!("value_too_large")));
    assert_eq!(
        keys(&c.ok("o", list(json!({}))).await),
        Vec::<String>::new()
    );

    c.ok(
        "o",
        json!({"op": "put", "key": max_key.clone(), "value": max_value.clone()}),
    )
    .await;
    assert_eq!(c.get("o", &max_key).await, json!(max_value));
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_400_with_a_json_error() {
    let (_dir, node, c) = node().await;
    for body in ["{not json", "", "[]", r#"{"op": "put", "key": "k"}"#] {
        let (status, err) = c.raw("o", body).await;
        assert_eq!(status, 400, "body {body:?}");
        assert_eq!(err["error"], "invalid_op", "body {body:?}: {err}");
        assert!(err["message"].is_string(), "body {body:?}: {err}");
    }
    let (status, err) = c.op("o", json!({"op": "frobnicate"})).await;
    assert_eq!(status, 400);
    assert_eq!(err["error"], "invalid_op");
    let (status, err) = c
        .op("o", json!({"op": "txn", "ops": [{"op": "instance"}]}))
        .await;
    assert_eq!((status, &err["error"]), (400, &json!("not_a_storage_op")));
    // The object is still fine afterwards.
    c.ok("o", json!({"op": "put", "key": "k", "value": "v"}))
        .await;
    assert_eq!(c.get("o", "k").await, json!("v"));
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_persist_across_a_clean_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = common::start(common::config(dir.path())).await;
    let c = Client::new(&node);
    for name in ["a", "b", "c"] {
        c.ok(
            name,
            json!({"op": "put_many", "entries": [["x", name], ["y", "2"]]}),
        )
        .await;
    }
    c.ok("a", json!({"op": "delete", "key": "y"})).await;
    node.shutdown().await.expect("clean shutdown");

    let node = common::start(common::config(dir.path())).await;
    let c = Client::new(&node);
    assert_eq!(
        keys(&c.ok("a", list(json!({}))).await),
        vec!["x"],
        "the delete persisted too"
    );
    for name in ["a", "b", "c"] {
        assert_eq!(c.get(name, "x").await, json!(name));
    }
    assert_eq!(c.get("b", "y").await, json!("2"));
    node.shutdown().await.expect("clean shutdown");
}
