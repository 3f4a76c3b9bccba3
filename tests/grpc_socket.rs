//! The `Socket` RPC from a plain tonic client: a chat room's WebSocket as a
//! bidirectional stream, its end without a close (1006), and shutdown (1001).

mod grpc_common;

use grpc_common::{by_name, client, config, fetch, header, next_down, next_text_json, open_room};
use roost::node::DevNode;
use roost::rpc::pb::objects_client::ObjectsClient;
use roost::rpc::pb::{self, socket_down, socket_up};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tonic::Streaming;
use tonic::transport::Channel;

/// One `Socket` stream: what we send and what we get.
struct Socket {
    up: mpsc::Sender<pb::SocketUp>,
    down: Streaming<pb::SocketDown>,
}

async fn connect_room(grpc: &mut ObjectsClient<Channel>, room: &str, name: &str) -> Socket {
    let (up, down) = open_room(grpc, room, name).await;
    Socket { up, down }
}

/// The next text frame, as JSON.
async fn next_json(socket: &mut Socket) -> Value {
    next_text_json(&mut socket.down).await
}

async fn send_text(socket: &Socket, text: String) {
    socket
        .up
        .send(pb::SocketUp {
            kind: Some(socket_up::Kind::Message(pb::SocketMessage {
                data: Some(pb::socket_message::Data::Text(text)),
                seq: 0,
            })),
        })
        .await
        .expect("send");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_bridges_a_chat_room() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = DevNode::start(config(dir.path()))
        .await
        .expect("node starts");
    let mut grpc = client(&node).await;

    // A non-101 answer is the first and last message.
    let mut open = fetch(by_name("CHAT_ROOM", "r"), "GET", "/websocket?name=x");
    open.headers.push(header("upgrade", "websocket"));
    open.path = format!("/websocket?name={}", "n".repeat(65));
    let stream = tokio_stream::iter(vec![pb::SocketUp {
        kind: Some(socket_up::Kind::Open(open)),
    }]);
    let mut down = grpc.socket(stream).await.expect("connect").into_inner();
    match next_down(&mut down).await {
        Some(socket_down::Kind::Response(resp)) => assert_eq!(resp.status, 400),
        other => panic!("expected a response, got {other:?}"),
    }
    assert!(next_down(&mut down).await.is_none());

    let mut alice = connect_room(&mut grpc, "r", "Alice").await;
    assert_eq!(
        next_json(&mut alice).await,
        json!({"type": "history", "messages": []})
    );
    assert_eq!(next_json(&mut alice).await["type"], "join");
    let mut bob = connect_room(&mut grpc, "r", "Bob").await;
    assert_eq!(next_json(&mut bob).await["type"], "history");
    assert_eq!(next_json(&mut bob).await["name"], "Bob");
    assert_eq!(next_json(&mut alice).await["name"], "Bob");

    let text = json!({"type": "message", "text": "hi"}).to_string();
    send_text(&alice, text).await;
    for socket in [&mut alice, &mut bob] {
        let frame = next_json(socket).await;
        assert_eq!(
            (frame["type"].as_str(), frame["text"].as_str()),
            (Some("message"), Some("hi"))
        );
    }

    // Bob's stream ends without a close: the room sees him leave (1006).
    drop(bob);
    let leave = next_json(&mut alice).await;
    assert_eq!(
        (leave["type"].as_str(), leave["name"].as_str()),
        (Some("leave"), Some("Bob"))
    );

    // Alice closes: the node ends her stream.
    alice
        .up
        .send(pb::SocketUp {
            kind: Some(socket_up::Kind::Close(pb::SocketClose {
                code: 1000,
                reason: "bye".into(),
            })),
        })
        .await
        .expect("send close");
    assert!(next_down(&mut alice.down).await.is_none());

    // A socket open at shutdown is closed with 1001.
    let mut carol = connect_room(&mut grpc, "r", "Carol").await;
    assert_eq!(next_json(&mut carol).await["type"], "history");
    assert_eq!(next_json(&mut carol).await["name"], "Carol");
    let shutdown = tokio::spawn(node.shutdown());
    match next_down(&mut carol.down).await {
        Some(socket_down::Kind::Close(close)) => assert_eq!(close.code, 1001),
        other => panic!("expected a close, got {other:?}"),
    }
    shutdown
        .await
        .expect("shutdown task")
        .expect("clean shutdown");
}

/// Opens a `Socket` stream as a caller that re-attaches (request metadata
/// `roost-socket-reattach`), its first message `first`.
async fn open_reattaching(grpc: &mut ObjectsClient<Channel>, first: socket_up::Kind) -> Socket {
    let (up, rx) = mpsc::channel(16);
    up.send(pb::SocketUp { kind: Some(first) })
        .await
        .expect("queue the first message");
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    request.metadata_mut().insert(
        roost::rpc::objects::REATTACH_HEADER,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    let down = grpc.socket(request).await.expect("connect").into_inner();
    Socket { up, down }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reattached_socket_joins_its_room_as_it_was() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = DevNode::start(config(dir.path()))
        .await
        .expect("node starts");
    let mut grpc = client(&node).await;

    // A caller that re-attaches is sent the socket's tags and committed
    // attachment (the chat room keeps the member's name there).
    let mut open = fetch(
        by_name("CHAT_ROOM", "moves"),
        "GET",
        "/websocket?name=Alice",
    );
    open.headers.push(header("upgrade", "websocket"));
    open.headers.push(header("connection", "Upgrade"));
    let mut alice = open_reattaching(&mut grpc, socket_up::Kind::Open(open)).await;
    match next_down(&mut alice.down).await {
        Some(socket_down::Kind::Accepted(a)) => {
            assert!(a.tags.is_empty(), "{a:?}");
            assert_eq!(a.stable.len(), 16, "its registration id: {a:?}");
        }
        other => panic!("expected accepted, got {other:?}"),
    }
    match next_down(&mut alice.down).await {
        Some(socket_down::Kind::Attachment(a)) => {
            let name: Value = serde_json::from_slice(&a.value).expect("JSON attachment");
            assert_eq!(name, json!({"name": "Alice"}));
        }
        other => panic!("expected the attachment, got {other:?}"),
    }
    assert_eq!(next_json(&mut alice).await["type"], "history");
    assert_eq!(next_json(&mut alice).await["name"], "Alice");

    // A socket another owner had comes back: no fetch and no open event
    // (nobody is told Zed joined), and the room counts it as a member.
    let reattach = pb::SocketReattach {
        object: by_name("CHAT_ROOM", "moves"),
        tags: Vec::new(),
        attachment: Some(serde_json::to_vec(&json!({"name": "Zed"})).expect("JSON")),
        stable: Vec::new(),
        delivered: None,
    };
    let mut zed = open_reattaching(&mut grpc, socket_up::Kind::Reattach(reattach)).await;
    match next_down(&mut zed.down).await {
        Some(socket_down::Kind::Attached(a)) => assert!(a.socket > 0),
        other => panic!("expected attached, got {other:?}"),
    }
    send_text(&zed, json!({"type": "message", "text": "back"}).to_string()).await;
    for socket in [&mut alice, &mut zed] {
        let frame = next_json(socket).await;
        assert_eq!(
            (
                frame["type"].as_str(),
                frame["name"].as_str(),
                frame["text"].as_str()
            ),
            (Some("message"), Some("Zed"), Some("back")),
            "the re-attached socket's name is its attachment; no join came first"
        );
    }

    // At shutdown both are told their owner moved (no close: the object
    // goes on with them elsewhere).
    let shutdown = tokio::spawn(node.shutdown());
    for socket in [&mut alice, &mut zed] {
        match next_down(&mut socket.down).await {
            Some(socket_down::Kind::Moved(_)) => {}
            other => panic!("expected moved, got {other:?}"),
        }
    }
    shutdown
        .await
        .expect("shutdown task")
        .expect("clean shutdown");
}
