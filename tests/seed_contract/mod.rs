//! The seed app's observable contract, as checks against any base URL: a
//! `roost dev` (tests/seed_app.rs, tests/chat.rs) or an edge in front of a
//! three-node cluster (tests/cluster/main.rs) must pass the same checks.
//! Each check uses its own object names, so they can share one server;
//! [`api_is_rate_limited_per_client_ip`] needs the client's fresh budget,
//! so run it first.

#![allow(dead_code)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Where the app is served: `http://host:port`.
#[derive(Clone)]
pub struct Base {
    root: String,
    pub http: reqwest::Client,
}

impl Base {
    pub fn new(root: impl Into<String>) -> Base {
        Base {
            root: root.into(),
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.root)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws{}{path}", self.root.trim_start_matches("http"))
    }

    /// Status, headers and body (JSON, or the text as a JSON string).
    pub async fn call(&self, method: &str, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let resp = self
            .http
            .request(method, self.url(path))
            .send()
            .await
            .expect("request is answered");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, body)
    }
}

pub fn is_json(headers: &reqwest::header::HeaderMap) -> bool {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

pub fn error_code(body: &Value) -> Option<&str> {
    body.get("error").and_then(Value::as_str)
}

/// Every check below, in an order that lets them share one server.
pub async fn all(base: &Base) {
    api_is_rate_limited_per_client_ip(base).await;
    counter_routes(base).await;
    counter_bad_input(base).await;
    unknown_routes_are_json_404(base).await;
    request_bodies_over_the_limit_get_413(base).await;
    room_history_over_http(base).await;
    let _alice = chat_session(base).await;
}

pub async fn counter_routes(app: &Base) {
    let (s, h, b) = app.call("GET", "/counter/visits").await;
    assert_eq!((s, b), (200, json!({"value": 0})));
    assert!(is_json(&h));
    let (s, _, b) = app.call("POST", "/counter/visits/increment").await;
    assert_eq!((s, b), (200, json!({"value": 1})));
    let (s, _, b) = app.call("POST", "/counter/visits/increment?amount=5").await;
    assert_eq!((s, b), (200, json!({"value": 6})));
    let (s, _, b) = app.call("POST", "/counter/visits/decrement?amount=2").await;
    assert_eq!((s, b), (200, json!({"value": 4})));
    let (s, _, b) = app.call("POST", "/counter/visits/decrement").await;
    assert_eq!((s, b), (200, json!({"value": 3})));
    let (s, _, b) = app.call("GET", "/counter/visits").await;
    assert_eq!((s, b), (200, json!({"value": 3})));
    let (s, _, b) = app.call("GET", "/counter/other").await;
    assert_eq!(
        (s, b),
        (200, json!({"value": 0})),
        "counters are independent"
    );
    let (s, _, b) = app.call("POST", "/counter/visits/reset").await;
    assert_eq!((s, b), (200, json!({"value": 0})));
    let (s, _, b) = app
        .call("POST", "/counter/visits/increment?amount=-7")
        .await;
    assert_eq!((s, b), (200, json!({"value": -7})));
}

pub async fn counter_bad_input(app: &Base) {
    for amount in ["abc", "1.5", "5abc", "NaN", "99999999999999999999"] {
        let (s, h, b) = app
            .call("POST", &format!("/counter/c/increment?amount={amount}"))
            .await;
        assert_eq!(s, 400, "amount={amount:?} → {b}");
        assert!(
            is_json(&h) && error_code(&b).is_some(),
            "JSON error body: {b}"
        );
    }
    let (_, _, b) = app.call("GET", "/counter/c").await;
    assert_eq!(b, json!({"value": 0}), "nothing was stored by bad requests");
    // Overflow is refused and stores nothing.
    let max = i64::MAX;
    let (s, _, _) = app
        .call("POST", &format!("/counter/big/increment?amount={max}"))
        .await;
    assert_eq!(s, 200);
    let (s, h, b) = app.call("POST", "/counter/big/increment").await;
    assert_eq!(s, 400, "{b}");
    assert!(is_json(&h));
    let (_, _, b) = app.call("GET", "/counter/big").await;
    assert_eq!(b, json!({"value": max}));
    // Unknown action: the counter's 404.
    let (s, h, b) = app.call("POST", "/counter/c/explode").await;
    assert_eq!(s, 404);
    assert!(is_json(&h) && error_code(&b).is_some(), "{b}");
    // Wrong methods on counter routes.
    let (s, _, _) = app.call("POST", "/counter/c").await;
    assert_eq!(s, 404);
    let (s, _, _) = app.call("GET", "/counter/c/increment").await;
    assert_eq!(s, 404);
}

pub async fn unknown_routes_are_json_404(app: &Base) {
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/nope"),
        ("DELETE", "/counter/x"),
        ("PUT", "/api/ping"),
    ] {
        let (s, h, b) = app.call(method, path).await;
        assert_eq!(s, 404, "{method} {path}");
        assert!(
            is_json(&h) && error_code(&b).is_some(),
            "{method} {path}: {b}"
        );
    }
}

/// The client's first 100 `/api` requests pass, the 101st is limited.
pub async fn api_is_rate_limited_per_client_ip(app: &Base) {
    for i in 0..100 {
        let (s, h, b) = app.call("GET", "/api/ping").await;
        assert_eq!((s, &b), (200, &json!({"ok": true})), "request {i}");
        let remaining = h
            .get("x-ratelimit-remaining")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok())
            .expect("X-RateLimit-Remaining header");
        assert_eq!(remaining, 99 - i);
    }
    let (s, h, b) = app.call("GET", "/api/ping").await;
    assert_eq!((s, b), (429, json!({"error": "Rate limited"})));
    assert!(is_json(&h));
    // Other /api paths are limited too, and do not exist.
    let (s, _, _) = app.call("GET", "/api/other").await;
    assert_eq!(s, 429);
}

pub async fn request_bodies_over_the_limit_get_413(app: &Base) {
    let resp = app
        .http
        .post(app.url("/counter/x/increment"))
        .body(vec![b'x'; 2 << 20])
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status().as_u16(), 413);
    let body: Value = resp.json().await.expect("JSON body");
    assert!(error_code(&body).is_some());
}

pub async fn room_history_over_http(app: &Base) {
    let (s, h, b) = app.call("GET", "/room/lobby/history").await;
    assert_eq!((s, b), (200, json!([])));
    assert!(is_json(&h));
    let (s, h, b) = app.call("GET", "/room/lobby/anything-else").await;
    assert_eq!(s, 400, "not a WebSocket request: {b}");
    assert!(is_json(&h) && error_code(&b).is_some());
    let (s, _, _) = app.call("POST", "/room/lobby").await;
    assert_eq!(s, 400);
}

pub async fn connect(app: &Base, path: &str) -> Ws {
    let (ws, resp) = tokio_tungstenite::connect_async(app.ws_url(path))
        .await
        .expect("WebSocket connects");
    assert_eq!(resp.status().as_u16(), 101);
    ws
}

/// The next data or close frame, within a deadline.
pub async fn next(ws: &mut Ws) -> Message {
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

pub async fn next_json(ws: &mut Ws) -> Value {
    match next(ws).await {
        Message::Text(t) => serde_json::from_str(t.as_str()).expect("a JSON frame"),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

pub async fn send_json(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .expect("send");
}

/// Two members chat in `test-room`, one leaves, a third sees the history.
/// Returns the first member's socket, still open.
pub async fn chat_session(app: &Base) -> Ws {
    let mut alice = connect(app, "/room/test-room?name=Alice").await;
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

    let mut bob = connect(app, "/room/test-room/websocket?name=Bob").await;
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
    let (s, _, history) = app.call("GET", "/room/test-room/history").await;
    assert_eq!(s, 200);
    let texts: Vec<&str> = history
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(texts, ["still here", "hello"]);

    // A new member sees the history oldest first.
    let mut carol = connect(app, "/room/test-room?name=Carol").await;
    let h = next_json(&mut carol).await;
    let texts: Vec<&str> = h["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(texts, ["hello", "still here"]);
    alice
}
