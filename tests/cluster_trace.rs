//! One trace through a real cluster: a client's `traceparent` continues
//! through the edge, over gRPC metadata to the owner node, into the
//! object's handler and its Raft commit.

mod otlp;
#[path = "cluster/procs.rs"]
mod procs;

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use roost::rpc::pb;
use roost::rpc::pb::cluster_client::ClusterClient;

const SHARDS: u16 = 4;

async fn converged(nodes: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut full = 0;
        for addr in nodes {
            let Ok(mut c) = ClusterClient::connect(format!("http://{addr}")).await else {
                continue;
            };
            let Ok(resp) = c.watch(pb::WatchRequest {}).await else {
                continue;
            };
            if let Ok(Ok(Some(view))) =
                tokio::time::timeout(Duration::from_secs(2), resp.into_inner().message()).await
            {
                full += view.leaders.iter().filter(|l| l.voters.len() == 3).count();
            }
        }
        if full == usize::from(SHARDS) {
            return;
        }
        assert!(Instant::now() < deadline, "cluster converges");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_traced_from_the_edge_to_the_owners_commit() {
    let receiver = otlp::Receiver::default();
    let endpoint = otlp::start_receiver(receiver.clone()).await;
    // Every process this test starts exports to the receiver, and only at
    // shutdown (the batch delay is a minute).
    // SAFETY: set before any other thread of this test binary reads the
    // environment; the binary holds this one test.
    unsafe {
        std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint);
        std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "60000");
    }
    let root = tempfile::tempdir().expect("temp dir");
    let n1 = procs::node(root.path(), 1, "127.0.0.1:0", &[], SHARDS);
    let seeds = vec![n1.addr.clone()];
    let n2 = procs::node(root.path(), 2, "127.0.0.1:0", &seeds, SHARDS);
    let n3 = procs::node(root.path(), 3, "127.0.0.1:0", &seeds, SHARDS);
    let addrs = vec![n1.addr.clone(), n2.addr.clone(), n3.addr.clone()];
    converged(&addrs).await;
    let edge = procs::edge(&addrs);

    let trace_id = "5cf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "10f067aa0ba902b7";
    let response = reqwest::Client::new()
        .post(format!("{}/counter/traced/increment", edge.addr))
        .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
        .send()
        .await
        .expect("request is sent");
    assert_eq!(response.status(), 200);

    // Graceful exits flush every process's spans.
    tokio::task::spawn_blocking(move || {
        edge.terminate();
        for n in [n1, n2, n3] {
            n.terminate();
        }
    })
    .await
    .expect("processes stop");
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.in_trace(trace_id).len() < 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let spans = receiver.in_trace(trace_id);
    let named = |name: &str| {
        spans
            .iter()
            .find(|r| r.span.name == name)
            .map(|r| r.span.clone())
            .unwrap_or_else(|| panic!("no span {name:?} in {spans:#?}"))
    };
    let server = named("POST /counter/:name/:action");
    assert_eq!(hex::encode(&server.parent_span_id), client_span);
    let rpc = named("roost.v1.Objects/Fetch");
    assert_eq!(rpc.kind, SpanKind::Server as i32);
    assert_eq!(
        rpc.parent_span_id, server.span_id,
        "owner continues the edge's trace"
    );
    let handler = named("COUNTER fetch");
    assert_eq!(handler.parent_span_id, rpc.span_id);
    let commit = named("raft.commit");
    assert_eq!(commit.parent_span_id, handler.span_id);
}
