//! Traces end to end: a request carrying a W3C `traceparent` goes through
//! the real binary's HTTP edge, and its spans reach an in-process OTLP
//! receiver (a tonic `TraceService`) linked client → edge → handler →
//! commit, all in the client's trace. The exporter's batch delay is a
//! minute, so the spans can only arrive through the flush at shutdown.

mod common;
mod otlp;

use std::time::Duration;

use common::{Roost, wait_until};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use otlp::{Received, Receiver, int_attr, start_receiver, string_attr};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_traced_from_the_edge_to_the_commit() {
    let receiver = Receiver::default();
    let endpoint = start_receiver(receiver.clone()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let roost = Roost::start_with_env(
        dir.path(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_SERVICE_NAME", "roost-under-test"),
            ("OTEL_BSP_SCHEDULE_DELAY", "60000"),
        ],
    );

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let response = reqwest::Client::new()
        .post(roost.url("/counter/traced/increment"))
        .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
        .send()
        .await
        .expect("request is sent");
    assert_eq!(response.status(), 200);

    // SIGTERM: the node shuts down and flushes its spans before exiting.
    let exit = tokio::task::spawn_blocking(move || roost.terminate())
        .await
        .expect("terminate");
    assert_eq!(exit, Some(0), "clean exit");
    let in_trace = || -> Vec<Received> { receiver.in_trace(trace_id) };
    let arrived = wait_until(Duration::from_secs(10), || {
        let n = in_trace().len();
        async move { n >= 3 }
    })
    .await;
    let spans = in_trace();
    assert!(arrived, "spans of the trace: {spans:#?}");

    let named = |name: &str| -> Span {
        spans
            .iter()
            .find(|r| r.span.name == name)
            .map(|r| r.span.clone())
            .unwrap_or_else(|| panic!("no span {name:?} in {spans:#?}"))
    };
    // Edge: an HTTP server span, the child of the client's span.
    let server = named("POST /counter/:name/:action");
    assert_eq!(server.kind, SpanKind::Server as i32);
    assert_eq!(hex::encode(&server.parent_span_id), client_span);
    assert_eq!(
        string_attr(&server.attributes, "http.route").as_deref(),
        Some("/counter/:name/:action")
    );
    assert_eq!(
        string_attr(&server.attributes, "http.request.method").as_deref(),
        Some("POST")
    );
    assert_eq!(
        string_attr(&server.attributes, "url.path").as_deref(),
        Some("/counter/traced/increment")
    );
    assert_eq!(
        int_attr(&server.attributes, "http.response.status_code"),
        Some(200)
    );

    // Handler: the object's event, across the executor's task boundary.
    let handler = named("COUNTER fetch");
    assert_eq!(handler.parent_span_id, server.span_id);
    assert_eq!(
        string_attr(&handler.attributes, "roost.event").as_deref(),
        Some("fetch")
    );

    // Commit: waiting for the event's write to be committed by Raft.
    let commit = named("raft.commit");
    assert_eq!(commit.parent_span_id, handler.span_id);
    assert_eq!(
        string_attr(&commit.attributes, "roost.gate").as_deref(),
        Some("write")
    );

    assert!(spans.iter().all(|r| r.service == "roost-under-test"));
}
