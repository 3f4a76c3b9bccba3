//! The public gRPC object API from a plain tonic client (not the edge):
//! `Fetch` on the built-in Counter, `Call` on a class of this test, and bad
//! input refused without harm.

mod grpc_common;

use bytes::Bytes;
use grpc_common::{BODY_LIMIT, by_name, client, config, fetch, header, json_body, metadata};
use http::StatusCode;
use roost::app::{Counter, SeedApp};
use roost::id::{ObjectId, ObjectKey};
use roost::node::DevNode;
use roost::object::{
    self, Bindings, Context, DurableObject, HandlerError, ObjectClient, Request, Response,
};
use roost::rpc::pb::{self, object_ref, socket_up};
use roost::rpc::remote::{RemoteClient, RemoteOptions};
use serde_json::{Value, json};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_increments_and_reads_the_counter() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = DevNode::start(config(dir.path()))
        .await
        .expect("node starts");
    let mut grpc = client(&node).await;

    let resp = grpc
        .fetch(fetch(by_name("COUNTER", "visits"), "GET", "/"))
        .await
        .expect("fetch")
        .into_inner();
    assert_eq!((resp.status, json_body(&resp)), (200, json!({"value": 0})));
    assert!(
        resp.headers
            .iter()
            .any(|h| h.name == "content-type" && &h.value[..] == b"application/json")
    );

    for expected in [1, 6] {
        let path = if expected == 1 {
            "/increment"
        } else {
            "/increment?amount=5"
        };
        let resp = grpc
            .fetch(fetch(by_name("COUNTER", "visits"), "POST", path))
            .await
            .expect("fetch")
            .into_inner();
        assert_eq!(
            (resp.status, json_body(&resp)),
            (200, json!({"value": expected}))
        );
    }

    // The same object by id, and the handler's own errors as responses.
    let id = ObjectId::from_name("COUNTER", "visits").to_string();
    let by_id = Some(pb::ObjectRef {
        namespace: "COUNTER".into(),
        target: Some(object_ref::Target::Id(id)),
        id_name: None,
    });
    let resp = grpc
        .fetch(fetch(by_id.clone(), "", ""))
        .await
        .expect("fetch")
        .into_inner();
    assert_eq!((resp.status, json_body(&resp)), (200, json!({"value": 6})));
    let resp = grpc
        .fetch(fetch(by_id, "POST", "/increment?amount=abc"))
        .await
        .expect("fetch")
        .into_inner();
    assert_eq!(resp.status, 400);
    assert_eq!(json_body(&resp)["error"], "invalid_amount");

    // What gRPC wrote, HTTP reads: one object.
    let http = reqwest::get(format!("http://{}/counter/visits", node.http_addr()))
        .await
        .expect("HTTP answers");
    let body: Value = http.json().await.expect("JSON");
    assert_eq!(body, json!({"value": 6}));

    node.shutdown().await.expect("clean shutdown");
}

/// A class with a `call` handler: `echo`, `add` (a stored total), `fail`
/// (writes, then refuses), `total` (reads storage).
struct Adder {
    total: i64,
}

impl DurableObject for Adder {
    async fn new(ctx: &mut Context) -> object::Result<Self> {
        let total = ctx.storage().get_json::<i64>("total")?.unwrap_or(0);
        Ok(Adder { total })
    }

    async fn fetch(&mut self, _ctx: &mut Context, _req: Request) -> object::Result<Response> {
        Ok(object::text(StatusCode::OK, self.total.to_string()))
    }

    async fn call(
        &mut self,
        ctx: &mut Context,
        method: String,
        payload: Bytes,
    ) -> object::Result<Bytes> {
        match method.as_str() {
            "echo" => Ok(payload),
            "add" => {
                let n: i64 = std::str::from_utf8(&payload)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| HandlerError::bad_request("invalid_number", "not a number"))?;
                self.total += n;
                ctx.storage().put_json("total", &self.total)?;
                Ok(Bytes::from(self.total.to_string()))
            }
            "fail" => {
                ctx.storage().put_json("total", &(self.total + 1000))?;
                Err(HandlerError::bad_request("refused", "changed my mind"))
            }
            "total" => {
                let stored = ctx.storage().get_json::<i64>("total")?.unwrap_or(0);
                Ok(Bytes::from(stored.to_string()))
            }
            other => Err(HandlerError::new(
                StatusCode::NOT_FOUND,
                "unknown_method",
                format!("no method {other}"),
            )),
        }
    }
}

fn call(object: Option<pb::ObjectRef>, method: &str, payload: &[u8]) -> pb::CallRequest {
    pb::CallRequest {
        object,
        method: method.into(),
        payload: payload.to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_round_trips_bytes_and_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bindings = Bindings::new()
        .bind::<Adder>("ADDER")
        .bind::<Counter>("COUNTER");
    let node = DevNode::start_with(config(dir.path()), bindings, SeedApp)
        .await
        .expect("node starts");
    let mut grpc = client(&node).await;
    let adder = by_name("ADDER", "a");

    let binary: Vec<u8> = (0..=255).collect();
    let resp = grpc
        .call(call(adder.clone(), "echo", &binary))
        .await
        .expect("echo");
    assert_eq!(&resp.into_inner().payload[..], &binary[..]);
    for (n, total) in [("5", "5"), ("-2", "3")] {
        let resp = grpc
            .call(call(adder.clone(), "add", n.as_bytes()))
            .await
            .expect("add");
        assert_eq!(&resp.into_inner().payload[..], total.as_bytes());
    }

    // A handler error: its status and code travel; its writes do not.
    let err = grpc
        .call(call(adder.clone(), "fail", b""))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "changed my mind");
    assert_eq!(metadata(&err, "roost-error"), Some("refused"));
    assert_eq!(metadata(&err, "roost-http-status"), Some("400"));
    let total = grpc
        .call(call(adder.clone(), "total", b""))
        .await
        .expect("total");
    assert_eq!(&total.into_inner().payload[..], b"3");
    let err = grpc
        .call(call(adder.clone(), "nope", b""))
        .await
        .expect_err("unknown method");
    assert_eq!(err.code(), Code::NotFound);

    // A class without a call handler.
    let err = grpc
        .call(call(by_name("COUNTER", "c"), "get", b""))
        .await
        .expect_err("no call handler");
    assert_eq!(err.code(), Code::Unimplemented);
    assert_eq!(metadata(&err, "roost-error"), Some("not_implemented"));
    assert_eq!(metadata(&err, "roost-http-status"), Some("501"));

    // The same through `ObjectClient::call` of a remote client.
    let remote =
        RemoteClient::connect_lazy(node.grpc_addr(), RemoteOptions::default()).expect("client");
    let key = ObjectKey::new("ADDER", ObjectId::from_name("ADDER", "a"));
    let answer = remote
        .call(key.clone(), "add".into(), Bytes::from_static(b"10"))
        .await
        .expect("reaches the object");
    assert_eq!(answer, Ok(Bytes::from_static(b"13")));
    let refused = remote
        .call(key.clone(), "fail".into(), Bytes::new())
        .await
        .expect("reaches the object")
        .expect_err("the handler refuses");
    assert_eq!(
        (refused.status, refused.code.as_ref()),
        (StatusCode::BAD_REQUEST, "refused")
    );
    let counter = ObjectKey::new("COUNTER", ObjectId::from_name("COUNTER", "c"));
    let unimplemented = remote
        .call(counter, "get".into(), Bytes::new())
        .await
        .expect("reaches the object")
        .expect_err("no call handler");
    assert_eq!(unimplemented.status, StatusCode::NOT_IMPLEMENTED);
    let missing = ObjectKey::new("NOPE", ObjectId::from_name("NOPE", "x"));
    let err = remote
        .call(missing, "get".into(), Bytes::new())
        .await
        .expect_err("no such namespace");
    assert!(
        matches!(err, object::Error::UnknownNamespace(ref ns) if ns == "NOPE"),
        "{err:?}"
    );

    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_the_server_keeps_working() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = DevNode::start(config(dir.path()))
        .await
        .expect("node starts");
    let mut grpc = client(&node).await;
    let counter = by_name("COUNTER", "c");

    let bad_id = Some(pb::ObjectRef {
        namespace: "COUNTER".into(),
        target: Some(object_ref::Target::Id("not-hex".into())),
        id_name: None,
    });
    let no_namespace = by_name("", "c");
    let no_target = Some(pb::ObjectRef {
        namespace: "COUNTER".into(),
        target: None,
        id_name: None,
    });
    let mut bad_header = fetch(counter.clone(), "GET", "/");
    bad_header.headers.push(header("bad header", "x"));
    let mut bad_value = fetch(counter.clone(), "GET", "/");
    bad_value.headers.push(header("x-ok", "line\nbreak"));
    let mut upgrade = fetch(counter.clone(), "GET", "/");
    upgrade.headers.push(header("upgrade", "websocket"));
    let mut bad_ip = fetch(counter.clone(), "GET", "/");
    bad_ip.client_ip = "somewhere".into();
    let invalid = [
        fetch(bad_id.clone(), "GET", "/"),
        fetch(no_namespace.clone(), "GET", "/"),
        fetch(no_target, "GET", "/"),
        fetch(None, "GET", "/"),
        fetch(counter.clone(), "GE T", "/"),
        fetch(counter.clone(), "GET", "relative"),
        fetch(counter.clone(), "GET", "/with space"),
        bad_header,
        bad_value,
        upgrade,
        bad_ip,
    ];
    for req in invalid {
        let err = grpc.fetch(req.clone()).await.expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{req:?}: {err:?}");
    }

    let err = grpc
        .fetch(fetch(by_name("NOPE", "c"), "GET", "/"))
        .await
        .expect_err("unknown namespace");
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(metadata(&err, "roost-error"), Some("unknown_namespace"));

    let mut big = fetch(counter.clone(), "POST", "/increment");
    big.body = vec![b'x'; BODY_LIMIT + 1];
    let err = grpc.fetch(big).await.expect_err("too big");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(metadata(&err, "roost-error"), Some("body_too_large"));
    let mut huge = fetch(counter.clone(), "POST", "/increment");
    huge.body = vec![b'x'; 4 << 20];
    // Over the decoding limit (the larger of the body and socket message
    // limits, plus room for the envelope and for a FetchMany batch's other
    // calls): tonic refuses it before it is decoded.
    let err = grpc.fetch(huge).await.expect_err("over the decoding limit");
    assert_eq!(err.code(), Code::OutOfRange);

    for req in [
        call(counter.clone(), "", b""),
        call(counter.clone(), &"m".repeat(1025), b""),
        call(bad_id, "m", b""),
        call(no_namespace, "m", b""),
    ] {
        let err = grpc.call(req).await.expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    }
    let err = grpc
        .call(call(counter.clone(), "m", &vec![0; BODY_LIMIT + 1]))
        .await
        .expect_err("payload too big");
    assert_eq!(err.code(), Code::ResourceExhausted);

    // Socket: the first message must be an upgrade `open`.
    let not_open = pb::SocketUp {
        kind: Some(socket_up::Kind::Message(pb::SocketMessage {
            data: Some(pb::socket_message::Data::Text("hi".into())),
            seq: 0,
        })),
    };
    let open_plain = pb::SocketUp {
        kind: Some(socket_up::Kind::Open(fetch(counter.clone(), "GET", "/"))),
    };
    for first in [not_open, open_plain, pb::SocketUp { kind: None }] {
        let stream = tokio_stream::iter(vec![first]);
        let err = grpc.socket(stream).await.expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    }
    let err = grpc
        .socket(tokio_stream::iter(Vec::<pb::SocketUp>::new()))
        .await
        .expect_err("no open");
    assert_eq!(err.code(), Code::InvalidArgument);

    // Still serving, on the same connection and on a new one.
    let resp = grpc
        .fetch(fetch(counter.clone(), "POST", "/increment"))
        .await
        .expect("fetch")
        .into_inner();
    assert_eq!((resp.status, json_body(&resp)), (200, json!({"value": 1})));
    let mut fresh = client(&node).await;
    let resp = fresh
        .fetch(fetch(counter, "GET", "/"))
        .await
        .expect("fetch")
        .into_inner();
    assert_eq!(json_body(&resp), json!({"value": 1}));

    node.shutdown().await.expect("clean shutdown");
}

/// Every gRPC server also serves grpc.health.v1 (for Kubernetes gRPC
/// probes) and reflection (for grpcurl), and counts its calls by method
/// and code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_call_metrics_are_served() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let dir = tempfile::tempdir().expect("temp dir");
    let node = DevNode::start(config(dir.path()))
        .await
        .expect("node starts");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.grpc_addr()))
        .expect("uri")
        .connect()
        .await
        .expect("gRPC connects");

    let mut health = HealthClient::new(channel.clone());
    for service in ["", "roost.v1.Objects"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health answers")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .expect_err("an unknown service");
    assert_eq!(unknown.code(), Code::NotFound);

    let mut reflection = ServerReflectionClient::new(channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection answers")
        .into_inner();
    let answer = answers
        .message()
        .await
        .expect("a message")
        .expect("not the end");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for name in ["roost.v1.Objects", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
    }

    // A call and a refused call, counted by method and code.
    let mut grpc = client(&node).await;
    grpc.fetch(fetch(by_name("COUNTER", "metered"), "GET", "/"))
        .await
        .expect("fetch");
    let refused = grpc
        .fetch(fetch(by_name("NO_SUCH_BINDING", "x"), "GET", "/"))
        .await
        .expect_err("an unknown binding is refused");
    let code = match refused.code() {
        Code::NotFound => "NOT_FOUND",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        other => panic!("unexpected {other:?}"),
    };
    let text = reqwest::get(format!("http://{}/metrics", node.admin_addr()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    for series in [
        "roost_rpc_server_requests_total{service=\"roost.v1.Objects\",method=\"Fetch\",code=\"OK\"}"
            .to_owned(),
        format!(
            "roost_rpc_server_requests_total{{service=\"roost.v1.Objects\",method=\"Fetch\",code=\"{code}\"}}"
        ),
        "roost_rpc_server_requests_total{service=\"grpc.health.v1.Health\",method=\"Check\",code=\"NOT_FOUND\"}"
            .to_owned(),
        "process_resident_memory_bytes".to_owned(),
        "roost_disk_available_bytes".to_owned(),
    ] {
        assert!(text.contains(&series), "{series} in /metrics");
    }
    node.shutdown().await.expect("shutdown");
}
