//! `Objects.FetchMany`: many `Fetch` calls over one stream, each answered by
//! id as a unary `Fetch` would be; bounded batches; and the edge's client
//! (`RemoteClient`), which sends plain requests this way.

mod grpc_common;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use grpc_common::{by_name, client, config, fetch, json_body};
use roost::id::{ObjectId, ObjectKey};
use roost::node::DevNode;
use roost::object::{ObjectClient, Request};
use roost::rpc::pb::{self, fetch_result};
use roost::rpc::remote::{RemoteClient, RemoteOptions};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

/// Opens a `FetchMany` stream: its batches go in through the sender
/// (holding up to `capacity`), its results come out of the stream.
async fn open(
    grpc: &mut roost::rpc::pb::objects_client::ObjectsClient<tonic::transport::Channel>,
    capacity: usize,
) -> (
    mpsc::Sender<pb::FetchBatch>,
    tonic::Streaming<pb::FetchResults>,
) {
    let (tx, rx) = mpsc::channel(capacity);
    let results = grpc
        .fetch_many(ReceiverStream::new(rx))
        .await
        .expect("the stream opens")
        .into_inner();
    (tx, results)
}

fn call(id: u64, request: pb::FetchRequest) -> pb::FetchCall {
    pb::FetchCall {
        id,
        request: Some(request),
        trace_context: HashMap::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_call_is_answered_by_id_as_fetch_would_answer_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = DevNode::start(config(dir.path()))
        .await
        .expect("node starts");
    let mut grpc = client(&node).await;
    let (tx, mut results) = open(&mut grpc, 4).await;
    // 200 increments of one counter in two batches, and three calls that
    // fail as a unary Fetch would: an unknown namespace, a missing object
    // reference, a WebSocket upgrade.
    for first in [1u64, 101] {
        let calls = (first..first + 100)
            .map(|id| call(id, fetch(by_name("COUNTER", "many"), "POST", "/increment")))
            .collect();
        tx.send(pb::FetchBatch { calls }).await.expect("send");
    }
    let mut upgrade = fetch(by_name("CHAT_ROOM", "r"), "GET", "/websocket?name=a");
    upgrade
        .headers
        .push(grpc_common::header("upgrade", "websocket"));
    tx.send(pb::FetchBatch {
        calls: vec![
            call(1000, fetch(by_name("NO_SUCH_CLASS", "x"), "GET", "/")),
            call(1001, fetch(None, "GET", "/")),
            call(1002, upgrade),
        ],
    })
    .await
    .expect("send");

    let mut answers = HashMap::new();
    while answers.len() < 203 {
        let batch = tokio::time::timeout(Duration::from_secs(20), results.message())
            .await
            .expect("results in time")
            .expect("a healthy stream")
            .expect("the stream goes on while calls are owed");
        for result in batch.results {
            assert!(
                answers.insert(result.id, result.outcome).is_none(),
                "call {} answered twice",
                result.id
            );
        }
    }
    let mut values: Vec<i64> = (1..=200)
        .map(|id| match answers.remove(&id) {
            Some(Some(fetch_result::Outcome::Response(r))) => {
                assert_eq!(r.status, 200);
                json_body(&r)["value"].as_i64().expect("a value")
            }
            other => panic!("call {id}: {other:?}"),
        })
        .collect();
    values.sort_unstable();
    assert_eq!(values, (1..=200).collect::<Vec<_>>(), "each increment once");
    let mut code = |id| match answers.remove(&id) {
        Some(Some(fetch_result::Outcome::Status(s))) => (Code::from(s.code), s.metadata),
        other => panic!("call {id}: {other:?}"),
    };
    let (unknown, meta) = code(1000);
    assert_eq!(unknown, Code::NotFound);
    assert_eq!(
        meta.get("roost-error").map(String::as_str),
        Some("unknown_namespace")
    );
    assert_eq!(code(1001).0, Code::InvalidArgument);
    assert_eq!(code(1002).0, Code::InvalidArgument);

    // Our end of the stream ends it with OK once nothing is owed.
    drop(tx);
    let end = tokio::time::timeout(Duration::from_secs(10), results.message())
        .await
        .expect("the end in time");
    assert!(matches!(end, Ok(None)), "{end:?}");

    // What the stream wrote, a unary Fetch reads.
    let resp = grpc
        .fetch(fetch(by_name("COUNTER", "many"), "GET", "/"))
        .await
        .expect("fetch")
        .into_inner();
    assert_eq!(json_body(&resp), json!({"value": 200}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_the_limit_fails_its_stream_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = DevNode::start(config(dir.path()))
        .await
        .expect("node starts");
    let mut grpc = client(&node).await;
    let (tx, mut results) = open(&mut grpc, 1).await;
    let calls = (0..257)
        .map(|id| call(id, fetch(by_name("COUNTER", "big"), "POST", "/increment")))
        .collect();
    tx.send(pb::FetchBatch { calls }).await.expect("send");
    let end = tokio::time::timeout(Duration::from_secs(10), results.message())
        .await
        .expect("an answer in time");
    let status = end.expect_err("the stream fails");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // Nothing of the refused batch ran, and the node serves on.
    let resp = grpc
        .fetch(fetch(by_name("COUNTER", "big"), "GET", "/"))
        .await
        .expect("fetch")
        .into_inner();
    assert_eq!(json_body(&resp), json!({"value": 0}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_client_sends_concurrent_requests_over_one_stream() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = DevNode::start(config(dir.path()))
        .await
        .expect("node starts");
    let remote =
        RemoteClient::connect_lazy(node.grpc_addr(), RemoteOptions::default()).expect("client");
    let key = ObjectKey::new("COUNTER", ObjectId::from_name("COUNTER", "edge"));
    let post = || {
        let mut req = Request::new(Bytes::new());
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = "/increment".parse().expect("static uri");
        req
    };
    let calls: Vec<_> = (0..300)
        .map(|_| {
            let remote = remote.clone();
            let key = key.clone();
            let req = post();
            tokio::spawn(async move { remote.fetch(key, req).await })
        })
        .collect();
    for call in calls {
        let outcome = call.await.expect("task").expect("fetch");
        assert_eq!(outcome.response.status(), http::StatusCode::OK);
    }
    let mut get = Request::new(Bytes::new());
    *get.uri_mut() = "/".parse().expect("static uri");
    let outcome = remote.fetch(key, get).await.expect("fetch");
    let body: serde_json::Value =
        serde_json::from_slice(outcome.response.body()).expect("JSON body");
    assert_eq!(body, json!({"value": 300}));

    // Each request counts as a served Fetch (the recorder is the process's:
    // the other tests here count into it too).
    let metrics = reqwest::get(format!("http://{}/metrics", node.admin_addr()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let served = |method: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("roost_rpc_server_requests_total{")
                    && l.contains(&format!("method=\"{method}\""))
                    && l.contains("code=\"OK\"")
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    assert!(served("Fetch").is_some_and(|n| n >= 301.0), "{metrics}");
}
