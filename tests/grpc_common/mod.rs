//! Helpers for the tests of the gRPC object API: a dev node on port 0 and
//! request builders.
#![allow(dead_code)]

use roost::config::Config;
use roost::node::DevNode;
use roost::rpc::pb::objects_client::ObjectsClient;
use std::time::Duration;

use roost::rpc::pb::{self, object_ref, socket_down, socket_up};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

/// The body limit the tests' nodes run with.
pub const BODY_LIMIT: usize = 4096;

pub fn config(dir: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".parse().expect("loopback address");
    config.grpc.listen = "127.0.0.1:0".parse().expect("loopback address");
    config.admin.listen = "127.0.0.1:0".parse().expect("loopback address");
    config.http.max_request_body_bytes = BODY_LIMIT;
    config.node.data_dir = dir.to_path_buf();
    config.node.shards = 4;
    config
}

pub async fn client(node: &DevNode) -> ObjectsClient<Channel> {
    ObjectsClient::connect(format!("http://{}", node.grpc_addr()))
        .await
        .expect("gRPC connects")
}

pub fn by_name(namespace: &str, name: &str) -> Option<pb::ObjectRef> {
    Some(pb::ObjectRef {
        namespace: namespace.into(),
        target: Some(object_ref::Target::Name(name.into())),
        id_name: None,
    })
}

pub fn fetch(object: Option<pb::ObjectRef>, method: &str, path: &str) -> pb::FetchRequest {
    pb::FetchRequest {
        object,
        method: method.into(),
        path: path.into(),
        headers: Vec::new(),
        body: Vec::new(),
        client_ip: String::new(),
    }
}

pub fn header(name: &str, value: &str) -> pb::Header {
    pb::Header {
        name: name.into(),
        value: value.as_bytes().to_vec(),
    }
}

pub fn json_body(resp: &pb::FetchResponse) -> Value {
    serde_json::from_slice(&resp.body).expect("a JSON body")
}

pub fn metadata<'a>(status: &'a tonic::Status, key: &str) -> Option<&'a str> {
    status.metadata().get(key).and_then(|v| v.to_str().ok())
}

/// The next message of a `Socket` stream (within 10 s); `None` at its end.
pub async fn next_down(down: &mut Streaming<pb::SocketDown>) -> Option<socket_down::Kind> {
    tokio::time::timeout(Duration::from_secs(10), down.message())
        .await
        .expect("a message in time")
        .expect("a healthy stream")
        .and_then(|m| m.kind)
}

/// The next message of a `Socket` stream, which must be a JSON text frame.
pub async fn next_text_json(down: &mut Streaming<pb::SocketDown>) -> Value {
    match next_down(down).await {
        Some(socket_down::Kind::Message(pb::SocketMessage {
            data: Some(pb::socket_message::Data::Text(text)),
            ..
        })) => serde_json::from_str(&text).expect("JSON frame"),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// Opens a `Socket` stream to chat room `room` as `name` and checks it was
/// accepted (101); returns where to send and what comes back.
pub async fn open_room(
    grpc: &mut ObjectsClient<Channel>,
    room: &str,
    name: &str,
) -> (mpsc::Sender<pb::SocketUp>, Streaming<pb::SocketDown>) {
    let mut open = fetch(
        by_name("CHAT_ROOM", room),
        "GET",
        &format!("/websocket?name={name}"),
    );
    open.headers.push(header("upgrade", "websocket"));
    open.headers.push(header("connection", "Upgrade"));
    let (up, rx) = mpsc::channel(16);
    up.send(pb::SocketUp {
        kind: Some(socket_up::Kind::Open(open)),
    })
    .await
    .expect("queue open");
    let mut down = grpc
        .socket(ReceiverStream::new(rx))
        .await
        .expect("connect")
        .into_inner();
    match next_down(&mut down).await {
        Some(socket_down::Kind::Accepted(accepted)) => {
            let response = accepted.response.expect("the 101 response");
            assert_eq!(response.status, 101);
        }
        other => panic!("expected accepted, got {other:?}"),
    }
    (up, down)
}
