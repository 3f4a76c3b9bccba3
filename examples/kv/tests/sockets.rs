//! WebSockets end to end: messages, tags, broadcast, hibernation
//! (attachments and auto-responses across eviction), close codes, and the
//! edge's limits and heartbeats.

mod common;

use common::ws::{Got, Pumped, Ws};
use common::{Client, SOON, wait_until};
use futures_util::SinkExt;
use roost::config::Config;
use roost::node::DevNode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

async fn start(tune: impl FnOnce(&mut Config)) -> (tempfile::TempDir, DevNode, Client) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = common::config(dir.path());
    tune(&mut config);
    let node = common::start(config).await;
    let client = Client::new(&node);
    (dir, node, client)
}

/// Waits until object `name` recorded that the socket with `attach` closed
/// with `code`.
async fn closed_with(c: &Client, name: &str, attach: &str, code: u16) -> bool {
    let key = format!("closed:{attach}");
    let want = json!(code.to_string());
    wait_until(SOON, || async { c.get(name, &key).await == want }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_and_binary() {
    let (_dir, node, _c) = start(|_| {}).await;
    let mut ws = Ws::connect(&node, "room", "").await;
    assert_eq!(ws.ask("hello").await, "echo:hello");
    assert_eq!(ws.ask("").await, "echo:");
    ws.stream
        .send(Message::binary(vec![1, 2, 3]))
        .await
        .expect("binary is sent");
    assert_eq!(ws.text().await, "binary ignored");
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_select_sockets() {
    let (_dir, node, c) = start(|_| {}).await;
    let mut ab = Ws::connect(&node, "room", "tags=a,b&attach=ab").await;
    let _a = Ws::connect(&node, "room", "tags=a&attach=a").await;
    let mut none = Ws::connect(&node, "room", "attach=none").await;
    let _elsewhere = Ws::connect(&node, "other", "tags=a").await;
    assert_eq!(none.ask("count:a").await, "2");
    assert_eq!(none.ask("count:b").await, "1");
    assert_eq!(none.ask("count:c").await, "0");
    let me = ab.ask_json("whoami").await;
    assert_eq!(me["tags"], json!(["a", "b"]));
    assert_eq!(me["attach"], "ab");

    ab.close(1000, "bye").await;
    assert!(closed_with(&c, "room", "ab", 1000).await);
    assert_eq!(none.ask("count:a").await, "1", "a closed socket is gone");
    assert_eq!(none.ask("count:b").await, "0");
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_reaches_every_socket() {
    let (_dir, node, _c) = start(|_| {}).await;
    let mut sockets = Vec::new();
    for i in 0..3 {
        sockets.push(Ws::connect(&node, "room", &format!("attach=s{i}")).await);
    }
    let mut outsider = Ws::connect(&node, "other", "").await;
    sockets[1].send("broadcast:hi all").await;
    for ws in &mut sockets {
        assert_eq!(ws.text().await, "hi all");
    }
    // The other object's socket got nothing: its next frame is our echo.
    assert_eq!(outsider.ask("x").await, "echo:x");
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachment_and_tags_survive_eviction() {
    let (_dir, node, _c) = start(|c| c.objects.idle_timeout_ms = 200).await;
    let mut ws = Ws::connect(&node, "room", "tags=t1,t2&attach=alice").await;
    let before = ws.ask_json("whoami").await;
    assert_eq!(before["attach"], "alice");
    assert_eq!(before["tags"], json!(["t1", "t2"]));
    assert!(
        wait_until(SOON, || async { node.live_objects() == 0 }).await,
        "the idle object is evicted while its socket stays open"
    );
    let after = ws.ask_json("whoami").await;
    assert_ne!(after["instance"], before["instance"], "a new instance");
    assert_eq!(after["attach"], "alice");
    assert_eq!(after["tags"], json!(["t1", "t2"]));
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_response_does_not_wake_the_object() {
    let (_dir, node, c) = start(|c| c.objects.idle_timeout_ms = 200).await;
    let mut ws = Ws::connect(&node, "room", "attach=alice").await;
    c.ok(
        "room",
        json!({"op": "set_auto_response", "request": "ping", "response": "pong"}),
    )
    .await;
    assert_eq!(ws.ask("ping").await, "pong");
    assert!(wait_until(SOON, || async { node.live_objects() == 0 }).await);
    for _ in 0..3 {
        assert_eq!(ws.ask("ping").await, "pong");
        assert_eq!(node.live_objects(), 0, "answered without activation");
    }
    assert_eq!(ws.ask("ping!").await, "echo:ping!", "other texts wake it");
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_closes_with_1009() {
    let (_dir, node, c) = start(|c| c.websocket.max_message_bytes = 1024).await;
    let mut ws = Ws::connect(&node, "room", "attach=big").await;
    let at_limit = "x".repeat(1024);
    assert_eq!(ws.ask(&at_limit).await, format!("echo:{at_limit}"));
    ws.send(&"x".repeat(2000)).await;
    assert_eq!(ws.next().await, Got::Close(1009));
    assert!(closed_with(&c, "room", "big", 1009).await);
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_initiated_close_reaches_the_client() {
    let (_dir, node, c) = start(|_| {}).await;
    let mut ws = Ws::connect(&node, "room", "tags=t&attach=leaver").await;
    let mut other = Ws::connect(&node, "room", "tags=t").await;
    ws.send("close").await;
    assert_eq!(ws.next().await, Got::Close(4000));
    assert_eq!(other.ask("count:t").await, "1", "the socket left the list");
    // The object closed it itself, so it is not told of the close.
    assert_eq!(c.get("room", "closed:leaver").await, Value::Null);
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_close_code_reaches_the_object() {
    let (_dir, node, c) = start(|_| {}).await;
    let mut ws = Ws::connect(&node, "room", "attach=alice").await;
    assert_eq!(ws.ask("hi").await, "echo:hi");
    ws.close(4321, "leaving").await;
    assert_eq!(ws.next().await, Got::Close(4321), "the close is answered");
    assert!(closed_with(&c, "room", "alice", 4321).await);
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_writes_are_visible_over_http() {
    let (_dir, node, c) = start(|_| {}).await;
    let mut ws = Ws::connect(&node, "room", "").await;
    assert_eq!(ws.ask("put:from-ws").await, "stored from-ws");
    // The reply left the output gate, so the write is committed.
    assert_eq!(c.get("room", "from-ws").await, json!("from-socket"));
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sockets_with_1001() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = common::start(common::config(dir.path())).await;
    let mut ws = Ws::connect(&node, "room", "attach=alice").await;
    assert_eq!(ws.ask("hi").await, "echo:hi");
    let reader = tokio::spawn(async move { ws.next().await });
    node.shutdown().await.expect("clean shutdown");
    assert_eq!(reader.await.expect("reader task"), Got::Close(1001));

    // The object was told before the node stopped.
    let node = common::start(common::config(dir.path())).await;
    let c = Client::new(&node);
    assert_eq!(c.get("room", "closed:alice").await, json!("1001"));
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_closed_by_heartbeat() {
    let (_dir, node, c) = start(|c| {
        // A silent client is dead ~500 ms after its last frame; the polled
        // one answers every 100 ms ping, with room to spare on a busy machine.
        c.websocket.heartbeat_interval_ms = 100;
        c.websocket.heartbeat_timeout_ms = 400;
    })
    .await;
    let mut alive = Pumped::start(Ws::connect(&node, "room", "tags=t&attach=alive").await);
    // Never polled again after this reply: it cannot answer pings.
    let mut silent = Ws::connect(&node, "room", "tags=t&attach=silent").await;
    assert_eq!(silent.ask("hi").await, "echo:hi");
    assert!(
        closed_with(&c, "room", "silent", 1006).await,
        "a client that does not answer pings is dead"
    );
    assert_eq!(alive.ask("still?").await, Got::Text("echo:still?".into()));
    assert_eq!(alive.ask("count:t").await, Got::Text("1".into()));
    assert_eq!(c.get("room", "closed:alive").await, Value::Null);
    drop(silent);
    node.shutdown().await.expect("clean shutdown");
}
