//! The public gRPC object API (`roost.v1.Objects`) in a cluster, from a
//! plain tonic client that is not an edge: through an edge's gRPC port
//! (`Fetch` and a chat room's `Socket`, routed to each object's owner and
//! still served after that owner is SIGKILLed), and straight at the nodes,
//! where only the shard's leader runs a call and the others refuse it with
//! FAILED_PRECONDITION and the shard in `roost-shard`.

use std::time::{Duration, Instant};

use roost::rpc::pb::objects_client::ObjectsClient;
use roost::rpc::pb::{self, socket_up};
use serde_json::json;
use tonic::Code;
use tonic::transport::Channel;

use crate::grpc_common::{
    by_name, fetch, json_body, metadata, next_text_json as next_json, open_room,
};
use crate::harness::{SHARDS, groups, json_of, wait_balanced};
use crate::procs;

async fn connect(addr: &str) -> ObjectsClient<Channel> {
    ObjectsClient::connect(format!("http://{addr}"))
        .await
        .expect("gRPC connects")
}

async fn increment(grpc: &mut ObjectsClient<Channel>, name: &str) -> Result<i64, tonic::Status> {
    let resp = grpc
        .fetch(fetch(by_name("COUNTER", name), "POST", "/increment"))
        .await?
        .into_inner();
    assert_eq!(resp.status, 200, "{}", json_body(&resp));
    Ok(json_body(&resp)["value"].as_i64().expect("a value"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_grpc_client_calls_objects_through_the_edge_and_the_nodes() {
    let _turn = crate::harness::one_at_a_time().await;
    let root = tempfile::tempdir().expect("temp dir");
    let mut nodes = procs::cluster(root.path(), 3, SHARDS);
    let addrs: Vec<String> = nodes.values().map(|p| p.addr.clone()).collect();
    wait_balanced(&addrs, 3, Duration::from_secs(90)).await;
    let edge = procs::edge(&addrs);
    let mut grpc = connect(&edge.grpc).await;
    let http = reqwest::Client::new();

    // Fetch through the edge, on counters spread over every shard; HTTP
    // through the same edge reads what gRPC wrote.
    for i in 0..16 {
        let name = format!("g-{i}");
        assert_eq!(increment(&mut grpc, &name).await.expect("fetch"), 1);
        let (s, b) = json_of(
            http.get(format!("{}/counter/{name}", edge.addr))
                .send()
                .await
                .expect("answered"),
        )
        .await;
        assert_eq!((s, b), (200, json!({"value": 1})));
    }

    // Straight at each node: only the leader of the counter's shard runs
    // the increment; the others refuse it without running it.
    let mut ran = 0;
    for addr in &addrs {
        match increment(&mut connect(addr).await, "g-0").await {
            Ok(v) => {
                ran += 1;
                assert_eq!(v, 2);
            }
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert!(metadata(&status, "roost-shard").is_some(), "{status:?}");
            }
        }
    }
    assert_eq!(ran, 1, "exactly one node (the leader) runs the call");
    assert_eq!(increment(&mut grpc, "g-0").await.expect("fetch"), 3);

    // A chat room's socket as a gRPC stream through the edge.
    let (up, mut down) = open_room(&mut grpc, "g-room", "Grace").await;
    assert_eq!(next_json(&mut down).await["type"], "history");
    assert_eq!(next_json(&mut down).await["name"], "Grace");
    let text = json!({"type": "message", "text": "over grpc"}).to_string();
    up.send(pb::SocketUp {
        kind: Some(socket_up::Kind::Message(pb::SocketMessage {
            data: Some(pb::socket_message::Data::Text(text)),
            seq: 0,
        })),
    })
    .await
    .expect("send");
    assert_eq!(next_json(&mut down).await["text"], "over grpc");
    let (s, b) = json_of(
        http.get(format!("{}/room/g-room/history", edge.addr))
            .send()
            .await
            .expect("answered"),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(b[0]["text"], "over grpc");
    drop(up);

    // SIGKILL the leader of g-0's shard: the same gRPC client keeps
    // calling through the edge, and g-0 keeps every acknowledged write.
    let g0 = roost::id::ObjectId::from_name("COUNTER", "g-0").shard(SHARDS);
    let leader = groups(&addrs).await[&u32::from(g0)].leader;
    nodes.remove(&leader).expect("the leader's process").kill9();
    let deadline = Instant::now() + Duration::from_secs(30);
    let value = loop {
        match increment(&mut grpc, "g-0").await {
            Ok(v) => break v,
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(Instant::now() < deadline, "g-0 writable again: {status:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // 3 acknowledged; a failed attempt's outcome is unknown, so it may or
    // may not have counted.
    assert!(value >= 4, "g-0 = {value} after 3 acknowledged increments");
    drop(edge);
    drop(nodes);
}
