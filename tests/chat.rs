//! The seed's chat room over real WebSockets against the binary.

mod common;

use std::time::Duration;

use common::Roost;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(roost: &Roost, path: &str) -> Ws {
    let (ws, resp) = tokio_tungstenite::connect_async(roost.ws_url(path))
        .await
        .expect("WebSocket connects");
    assert_eq!(resp.status().as_u16(), 101);
    ws
}

/// The next frame, within a deadline.
async fn next(ws: &mut Ws) -> Message {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame arrives in time")
            .expect("the socket is open")
            .expect("a valid frame");
        if !matches!(msg, Message::Ping(_) | Message::Pong(_)) {
            return msg;
        }
    }
}

async fn next_json(ws: &mut Ws) -> Value {
    match next(ws).await {
        Message::Text(t) => serde_json::from_str(t.as_str()).expect("a JSON frame"),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

async fn send_json(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .expect("send");
}

/// Skips data frames until the close frame; returns its code.
async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        match next(ws).await {
            Message::Close(Some(CloseFrame { code, .. })) => return code.into(),
            Message::Close(None) => return 1005,
            Message::Text(_) | Message::Binary(_) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_session() {
    let dir = tempfile::tempdir().expect("temp dir");
    let roost = Roost::start(dir.path(), &[]);

    let mut alice = connect(&roost, "/room/test-room?name=Alice").await;
    assert_eq!(
        next_json(&mut alice).await,
        json!({"type": "history", "messages": []})
    );
    let join = next_json(&mut alice).await;
    assert_eq!(
        (join["type"].as_str(), join["name"].as_str()),
        (Some("join"), Some("Alice"))
    );
    assert!(join["timestamp"].is_u64());

    let mut bob = connect(&roost, "/room/test-room/websocket?name=Bob").await;
    assert_eq!(next_json(&mut bob).await["type"], "history");
    assert_eq!(next_json(&mut bob).await["name"], "Bob");
    let join = next_json(&mut alice).await;
    assert_eq!(
        (join["type"].as_str(), join["name"].as_str()),
        (Some("join"), Some("Bob"))
    );

    send_json(&mut alice, json!({"type": "message", "text": "hello"})).await;
    for ws in [&mut alice, &mut bob] {
        let m = next_json(ws).await;
        assert_eq!(m["type"], "message");
        assert_eq!(m["name"], "Alice");
        assert_eq!(m["text"], "hello");
        assert!(
            m["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("message:"))
        );
    }

    // A malformed frame gets an error frame; the socket stays usable.
    alice
        .send(Message::Text("not json".into()))
        .await
        .expect("send");
    let err = next_json(&mut alice).await;
    assert_eq!(err["type"], "error");
    assert!(err["error"].is_string());
    send_json(&mut alice, json!({"type": "message", "text": "still here"})).await;
    assert_eq!(next_json(&mut alice).await["text"], "still here");
    assert_eq!(next_json(&mut bob).await["text"], "still here");

    // Bob leaves; Alice is told.
    bob.close(None).await.expect("close");
    let leave = next_json(&mut alice).await;
    assert_eq!(
        (leave["type"].as_str(), leave["name"].as_str()),
        (Some("leave"), Some("Bob"))
    );

    // History over HTTP: newest first.
    let history: Value = reqwest::get(roost.url("/room/test-room/history"))
        .await
        .expect("answered")
        .json()
        .await
        .expect("JSON");
    let texts: Vec<&str> = history
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(texts, ["still here", "hello"]);

    // A new member sees the history oldest first.
    let mut carol = connect(&roost, "/room/test-room?name=Carol").await;
    let h = next_json(&mut carol).await;
    let texts: Vec<&str> = h["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(texts, ["hello", "still here"]);

    // Graceful shutdown closes sockets with 1001; history survives restart.
    assert_eq!(roost.terminate(), Some(0));
    assert_eq!(close_code(&mut alice).await, 1001);
    let roost = Roost::start(dir.path(), &[]);
    let history: Value = reqwest::get(roost.url("/room/test-room/history"))
        .await
        .expect("answered")
        .json()
        .await
        .expect("JSON");
    assert_eq!(history.as_array().map(Vec::len), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_close_with_1009() {
    let dir = tempfile::tempdir().expect("temp dir");
    let roost = Roost::start_with_env(dir.path(), &[("ROOST_WEBSOCKET_MAX_MESSAGE_BYTES", "4096")]);
    let mut ws = connect(&roost, "/room/big?name=Al").await;
    assert_eq!(next_json(&mut ws).await["type"], "history");
    assert_eq!(next_json(&mut ws).await["type"], "join");
    let text = "x".repeat(10_000);
    send_json(&mut ws, json!({"type": "message", "text": text})).await;
    assert_eq!(close_code(&mut ws).await, 1009);
}
