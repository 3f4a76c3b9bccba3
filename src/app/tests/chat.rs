//! `ChatRoom` over WebSockets and `/history`, through the router.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Harness, assert_error, body_json, next_frame, now_ms, request};
use crate::app;
use crate::object::{
    self, Bindings, Context, DurableObject, Request, Response, RuntimeOptions, query_param,
};

fn msg(text: &str) -> String {
    json!({"type": "message", "text": text}).to_string()
}

/// Asserts a `message` broadcast and returns it.
async fn expect_message(link: &mut object::SocketLink, name: &str, text: &str) -> Value {
    let frame = next_frame(link).await;
    assert_eq!(frame["type"], "message", "{frame}");
    assert_eq!(frame["name"], name, "{frame}");
    assert_eq!(frame["text"], text, "{frame}");
    assert!(
        frame["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("message:")),
        "{frame}"
    );
    assert!(frame["timestamp"].is_u64(), "{frame}");
    frame
}

async fn expect_event(link: &mut object::SocketLink, kind: &str, name: &str) {
    let frame = next_frame(link).await;
    assert_eq!(frame["type"], kind, "{frame}");
    assert_eq!(frame["name"], name, "{frame}");
    assert!(frame["timestamp"].is_u64(), "{frame}");
}

async fn expect_error(link: &mut object::SocketLink, code: &str) {
    let frame = next_frame(link).await;
    assert_eq!(frame["type"], "error", "{frame}");
    assert_eq!(frame["error"], code, "{frame}");
    assert!(frame["message"].is_string(), "{frame}");
}

#[tokio::test]
async fn join_chat_bad_frames_and_leave() {
    let h = Harness::new().await;
    let mut alice = h.connect("/room/r1?name=Alice").await;
    assert_eq!(
        next_frame(&mut alice).await,
        json!({"type": "history", "messages": []})
    );
    expect_event(&mut alice, "join", "Alice").await;

    let mut bob = h.connect("/room/r1?name=Bob").await;
    assert_eq!(next_frame(&mut bob).await["type"], "history");
    expect_event(&mut bob, "join", "Bob").await;
    expect_event(&mut alice, "join", "Bob").await;

    h.send_text(&alice, &msg("hi"));
    let hi = expect_message(&mut alice, "Alice", "hi").await;
    assert_eq!(expect_message(&mut bob, "Alice", "hi").await, hi);

    // Bad frames: an error to the sender only; the socket stays usable.
    let bad = [
        ("not json", "invalid_json"),
        ("[1,2]", "invalid_message"),
        ("{\"text\":\"no type\"}", "invalid_message"),
        ("{\"type\":\"shout\",\"text\":\"x\"}", "unknown_type"),
        ("{\"type\":\"message\"}", "invalid_message"),
        ("{\"type\":\"message\",\"text\":5}", "invalid_message"),
    ];
    for (frame, code) in bad {
        h.send_text(&bob, frame);
        expect_error(&mut bob, code).await;
    }
    h.runtime
        .socket_message(
            &bob.object,
            bob.socket,
            object::Message::Binary(vec![1u8].into()),
        )
        .expect("deliver");
    expect_error(&mut bob, "binary_not_supported").await;
    h.send_text(&bob, &msg("still here"));
    // Alice's next frame is Bob's message: none of his errors reached her.
    let still = expect_message(&mut alice, "Bob", "still here").await;
    expect_message(&mut bob, "Bob", "still here").await;

    h.close(&alice);
    expect_event(&mut bob, "leave", "Alice").await;

    let stored = |mut frame: Value| {
        frame.as_object_mut().map(|m| m.remove("type"));
        frame
    };
    let history = body_json(&h.get("/room/r1/history").await);
    assert_eq!(history, json!([stored(still), stored(hi)]), "newest first");
}

#[tokio::test]
async fn history_is_capped_and_ordered() {
    let h = Harness::new().await;
    let mut writer = h.connect("/room/busy").await;
    next_frame(&mut writer).await;
    expect_event(&mut writer, "join", "Anonymous").await;
    for i in 0..55 {
        h.send_text(&writer, &msg(&format!("m{i}")));
        expect_message(&mut writer, "Anonymous", &format!("m{i}")).await;
    }
    let mut reader = h.connect("/room/busy?name=").await;
    let history = next_frame(&mut reader).await;
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    let expected: Vec<String> = (5..55).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, expected, "the last 50, oldest first");
    expect_event(&mut reader, "join", "Anonymous").await;

    let all = body_json(&h.get("/room/busy/history").await);
    let all = all.as_array().expect("array");
    assert_eq!(all.len(), 55);
    assert_eq!(all[0]["text"], "m54");
    let ids: Vec<&str> = all.iter().filter_map(|m| m["id"].as_str()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "ids strictly decrease: {ids:?}"
    );
}

#[tokio::test]
async fn http_requests_and_names() {
    let h = Harness::new().await;
    for uri in ["/room/r", "/room/r/", "/room/r/other", "/room/r?name=x"] {
        let resp = h.get(uri).await;
        assert_error(&resp, StatusCode::BAD_REQUEST, "expected_websocket");
        assert_eq!(body_json(&resp)["message"], "Expected WebSocket");
    }
    // The seed serves /history for any method.
    let resp = h.call(Method::PUT, "/room/r/history").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body_json(&resp), json!([]));

    let long = "x".repeat(65);
    let resp = h
        .send(super::upgrade_request(&format!("/room/r?name={long}")))
        .await;
    assert_error(&resp, StatusCode::BAD_REQUEST, "invalid_name");
    let ok = "é".repeat(64);
    let mut link = h
        .connect(&format!("/room/r?name={}", ok.replace('é', "%C3%A9")))
        .await;
    next_frame(&mut link).await;
    expect_event(&mut link, "join", &ok).await;
}

#[tokio::test]
async fn encoded_room_ids_keep_the_path() {
    let h = Harness::new().await;
    let mut link = h.connect("/room/a%20b/anything?name=Zed").await;
    next_frame(&mut link).await;
    expect_event(&mut link, "join", "Zed").await;
    h.send_text(&link, &msg("spaced"));
    expect_message(&mut link, "Zed", "spaced").await;
    let history = body_json(&h.get("/room/a%20b/history").await);
    assert_eq!(history[0]["text"], "spaced");
    // `+` in a path is not a space: a different room.
    assert_eq!(body_json(&h.get("/room/a+b/history").await), json!([]));
}

#[tokio::test]
async fn text_too_large_to_store_gets_an_error_frame() {
    let h = Harness::new().await;
    let mut link = h.connect("/room/big").await;
    next_frame(&mut link).await;
    next_frame(&mut link).await;
    h.send_text(&link, &msg(&"y".repeat(130 * 1024)));
    expect_error(&mut link, "message_too_large").await;
    h.send_text(&link, &msg("small"));
    expect_message(&mut link, "Anonymous", "small").await;
    assert_eq!(
        body_json(&h.get("/room/big/history").await)
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

#[tokio::test]
async fn sockets_and_names_survive_eviction() {
    let h = Harness::with_options(RuntimeOptions {
        idle_timeout: Duration::from_millis(50),
        ..RuntimeOptions::default()
    })
    .await;
    let mut alice = h.connect("/room/sleepy?name=Alice").await;
    let mut bob = h.connect("/room/sleepy?name=Bob").await;
    // Alice: history, her join, Bob's join. Bob: history, his join.
    for _ in 0..3 {
        next_frame(&mut alice).await;
    }
    for _ in 0..2 {
        next_frame(&mut bob).await;
    }
    h.wait_until(|| h.runtime.live_objects() == 0).await;

    h.send_text(&alice, &msg("wake up"));
    expect_message(&mut bob, "Alice", "wake up").await;
    expect_message(&mut alice, "Alice", "wake up").await;

    h.wait_until(|| h.runtime.live_objects() == 0).await;
    h.close(&bob);
    expect_event(&mut alice, "leave", "Bob").await;
}

/// Writes a stored message with a chosen id time into a room, standing in
/// for history written by an earlier run of the node.
struct Planter;

impl DurableObject for Planter {
    async fn new(_ctx: &mut Context) -> object::Result<Self> {
        Ok(Planter)
    }

    async fn fetch(&mut self, ctx: &mut Context, req: Request) -> object::Result<Response> {
        let ms: u64 = query_param(&req, "ms")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let id = format!("message:{ms}");
        let message = json!({"id": id, "name": "Past", "text": "planted", "timestamp": ms});
        ctx.storage().put_json(&id, &message)?;
        Ok(object::text(StatusCode::OK, "planted"))
    }
}

#[tokio::test]
async fn id_clock_is_restored_after_a_restart() {
    let mut h = Harness::new().await;
    let planted = now_ms() + 600_000;
    h.restart(Bindings::new().bind::<Planter>("CHAT_ROOM"))
        .await;
    let resp = h
        .direct(
            "CHAT_ROOM",
            "clock",
            request(Method::POST, &format!("/?ms={planted}")),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);

    h.restart(app::bindings()).await;
    let mut link = h.connect("/room/clock?name=Now").await;
    let history = next_frame(&mut link).await;
    assert_eq!(history["messages"][0]["text"], "planted");
    next_frame(&mut link).await;
    h.send_text(&link, &msg("after restart"));
    let frame = expect_message(&mut link, "Now", "after restart").await;
    assert_eq!(frame["id"], format!("message:{}", planted + 1));
    let history = body_json(&h.get("/room/clock/history").await);
    assert_eq!(history[0]["text"], "after restart", "the new id sorts last");
}
