//! The seed app's HTTP contract against the real binary: every route, its
//! status codes, JSON shapes and headers, and bad input on every route. The
//! checks live in tests/seed_contract/ so that the cluster tests run the
//! same ones through an edge.

mod common;
mod seed_contract;

use common::Roost;
use seed_contract::Base;

/// A `roost dev` on a temp dir, and its base URL.
struct App {
    base: Base,
    _roost: Roost,
    _dir: tempfile::TempDir,
}

impl App {
    fn start() -> App {
        let dir = tempfile::tempdir().expect("temp dir");
        let roost = Roost::start(dir.path(), &[]);
        App {
            base: Base::new(roost.url("")),
            _roost: roost,
            _dir: dir,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_routes() {
    seed_contract::counter_routes(&App::start().base).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_bad_input() {
    seed_contract::counter_bad_input(&App::start().base).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_are_json_404() {
    seed_contract::unknown_routes_are_json_404(&App::start().base).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_is_rate_limited_per_client_ip() {
    seed_contract::api_is_rate_limited_per_client_ip(&App::start().base).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_over_the_limit_get_413() {
    seed_contract::request_bodies_over_the_limit_get_413(&App::start().base).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_history_over_http() {
    seed_contract::room_history_over_http(&App::start().base).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_header_is_believed_only_when_trusted() {
    // Untrusted: a spoofed header does not give a fresh budget.
    let app = App::start();
    for _ in 0..100 {
        let (s, _, _) = app.base.call("GET", "/api/ping").await;
        assert_eq!(s, 200);
    }
    let resp = app
        .base
        .http
        .get(app.base.url("/api/ping"))
        .header("CF-Connecting-IP", "203.0.113.9")
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status().as_u16(), 429);
    drop(app);

    // Trusted (from the proxies named, here loopback): each header value is
    // its own client.
    let dir = tempfile::tempdir().expect("temp dir");
    let roost = Roost::start_with_env(
        dir.path(),
        &[
            ("ROOST_HTTP_TRUSTED_PROXY_HEADER", "CF-Connecting-IP"),
            ("ROOST_HTTP_TRUSTED_PROXIES", r#"["127.0.0.0/8"]"#),
        ],
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
