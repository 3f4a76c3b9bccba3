//! The seed app's HTTP contract against the real binary: every route, its
//! status codes, JSON shapes and headers, and bad input on every route.

mod common;

use common::Roost;
use serde_json::{Value, json};

struct App {
    roost: Roost,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl App {
    fn start(extra: &[&str]) -> App {
        let dir = tempfile::tempdir().expect("temp dir");
        let roost = Roost::start(dir.path(), extra);
        App {
            roost,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    async fn call(&self, method: &str, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let resp = self
            .http
            .request(method, self.roost.url(path))
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

fn is_json(headers: &reqwest::header::HeaderMap) -> bool {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

fn error_code(body: &Value) -> Option<&str> {
    body.get("error").and_then(Value::as_str)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_routes() {
    let app = App::start(&[]);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_bad_input() {
    let app = App::start(&[]);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_are_json_404() {
    let app = App::start(&[]);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_is_rate_limited_per_client_ip() {
    let app = App::start(&[]);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_header_is_believed_only_when_trusted() {
    // Untrusted: a spoofed header does not give a fresh budget.
    let app = App::start(&[]);
    for _ in 0..100 {
        let (s, _, _) = app.call("GET", "/api/ping").await;
        assert_eq!(s, 200);
    }
    let resp = app
        .http
        .get(app.roost.url("/api/ping"))
        .header("CF-Connecting-IP", "203.0.113.9")
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status().as_u16(), 429);
    drop(app);

    // Trusted: each header value is its own client.
    let dir = tempfile::tempdir().expect("temp dir");
    let roost = Roost::start_with_env(
        dir.path(),
        &[("ROOST_HTTP_TRUSTED_PROXY_HEADER", "CF-Connecting-IP")],
    );
    let http = reqwest::Client::new();
    for ip in ["203.0.113.1", "203.0.113.2"] {
        let resp = http
            .get(roost.url("/api/ping"))
            .header("CF-Connecting-IP", ip)
            .send()
            .await
            .expect("answered");
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(
            resp.headers()
                .get("x-ratelimit-remaining")
                .and_then(|v| v.to_str().ok()),
            Some("99"),
            "a fresh budget for {ip}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_over_the_limit_get_413() {
    let app = App::start(&[]);
    let resp = app
        .http
        .post(app.roost.url("/counter/x/increment"))
        .body(vec![b'x'; 2 << 20])
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status().as_u16(), 413);
    let body: Value = resp.json().await.expect("JSON body");
    assert!(error_code(&body).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_history_over_http() {
    let app = App::start(&[]);
    let (s, h, b) = app.call("GET", "/room/lobby/history").await;
    assert_eq!((s, b), (200, json!([])));
    assert!(is_json(&h));
    let (s, h, b) = app.call("GET", "/room/lobby/anything-else").await;
    assert_eq!(s, 400, "not a WebSocket request: {b}");
    assert!(is_json(&h) && error_code(&b).is_some());
    let (s, _, _) = app.call("POST", "/room/lobby").await;
    assert_eq!(s, 400);
}
