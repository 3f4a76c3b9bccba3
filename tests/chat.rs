//! The seed's chat room over real WebSockets against the binary. The
//! session itself is in tests/seed_contract/, shared with the cluster tests.

mod common;

mod seed_contract;

use common::Roost;
use seed_contract::{Base, Ws, next, next_json, send_json};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

async fn connect(roost: &Roost, path: &str) -> Ws {
    seed_contract::connect(&Base::new(roost.url("")), path).await
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
    let mut alice = seed_contract::chat_session(&Base::new(roost.url(""))).await;

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
