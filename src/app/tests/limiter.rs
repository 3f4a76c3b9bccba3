//! `RateLimiter`, called directly and through the `/api` middleware.

use std::time::Duration;

use http::{Method, StatusCode, header};
use serde_json::{Value, json};

use super::{Harness, assert_error, body_json, now_ms, request, request_from};

async fn check(h: &Harness, name: &str, query: &str) -> (StatusCode, Value) {
    let resp = h
        .direct(
            "RATE_LIMITER",
            name,
            request(Method::GET, &format!("http://limiter/{query}")),
        )
        .await;
    (resp.status(), body_json(&resp))
}

/// Waits until the wall clock reaches `ms` (the limiter's own `reset`).
async fn wait_for_wall_clock(ms: u64) {
    let now = now_ms();
    if ms > now {
        tokio::time::sleep(Duration::from_millis(ms - now)).await;
    }
}

#[tokio::test]
async fn allows_up_to_the_limit_then_429() {
    let h = Harness::new().await;
    let before = now_ms();
    let mut first_reset = 0;
    for remaining in [2, 1, 0] {
        let (status, body) = check(&h, "a", "?limit=3&window=60000").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["allowed"], true);
        assert_eq!(body["remaining"], remaining);
        let reset = body["reset"].as_u64().expect("reset");
        if first_reset == 0 {
            first_reset = reset;
        }
        // The oldest counted request stays the same, and so does reset.
        assert_eq!(reset, first_reset);
    }
    assert!(first_reset > before + 60_000 && first_reset <= now_ms() + 60_001);

    let (status, body) = check(&h, "a", "?limit=3&window=60000").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        body,
        json!({"allowed": false, "remaining": 0, "reset": first_reset})
    );
    // Denied requests are not recorded: a larger limit sees exactly 3.
    let (status, body) = check(&h, "a", "?limit=5&window=60000").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["remaining"], 1);
    // Another key has its own window.
    let (_, body) = check(&h, "b", "?limit=3&window=60000").await;
    assert_eq!(body["remaining"], 2);
}

#[tokio::test]
async fn requests_expire_after_the_window() {
    let h = Harness::new().await;
    for _ in 0..2 {
        assert_eq!(
            check(&h, "w", "?limit=2&window=200").await.0,
            StatusCode::OK
        );
    }
    let (status, body) = check(&h, "w", "?limit=2&window=200").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    wait_for_wall_clock(body["reset"].as_u64().expect("reset")).await;
    let (status, body) = check(&h, "w", "?limit=2&window=200").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn expired_entries_are_pruned_past_one_requests_budget() {
    // More entries than one request deletes (1024): the count stays exact
    // while the backlog is pruned over several requests.
    let h = Harness::new().await;
    let n = 1100;
    let mut last = json!(null);
    for _ in 0..n {
        let (status, body) = check(&h, "p", "?limit=1000000&window=86400000").await;
        assert_eq!(status, StatusCode::OK);
        last = body;
    }
    assert_eq!(last["remaining"], 1_000_000 - n);
    // A 1 ms window sees all of them expired once 2 ms have passed; each
    // request also expires the one before it.
    for _ in 0..3 {
        wait_for_wall_clock(now_ms() + 2).await;
        let (status, body) = check(&h, "p", "?limit=2&window=1").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["remaining"], 1, "{body}");
    }
    // Back to a day-long window: the seed's rule deleted what the 1 ms
    // window expired, so only the newest entry is left (plus this one).
    let (_, body) = check(&h, "p", "?limit=1000000&window=86400000").await;
    assert_eq!(body["remaining"], 1_000_000 - 2);
}

#[tokio::test]
async fn rejects_bad_limit_and_window() {
    let h = Harness::new().await;
    let cases = [
        ("?limit=0", "invalid_limit"),
        ("?limit=-5", "invalid_limit"),
        ("?limit=abc", "invalid_limit"),
        ("?limit=1.5", "invalid_limit"),
        ("?limit=1000001", "invalid_limit"),
        ("?limit=99999999999999999999999", "invalid_limit"),
        ("?window=0", "invalid_window"),
        ("?window=86400001", "invalid_window"),
        ("?window=1m", "invalid_window"),
    ];
    for (query, code) in cases {
        let resp = h
            .direct(
                "RATE_LIMITER",
                "bad",
                request(Method::GET, &format!("/{query}")),
            )
            .await;
        assert_error(&resp, StatusCode::BAD_REQUEST, code);
    }
    // Defaults: 100 per 60 s.
    let (status, body) = check(&h, "bad", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["remaining"], 99);
}

#[tokio::test]
async fn api_ping_is_limited_to_100_a_minute_per_ip() {
    let h = Harness::new().await;
    for i in 0..100u32 {
        let resp = h
            .send(request_from(Method::GET, "/api/ping", "10.0.0.1"))
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(body_json(&resp), json!({"ok": true}));
        let remaining = resp.headers().get("x-ratelimit-remaining").expect("header");
        assert_eq!(remaining.to_str().ok(), Some((99 - i).to_string().as_str()));
    }
    let resp = h
        .send(request_from(Method::GET, "/api/ping", "10.0.0.1"))
        .await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body_json(&resp), json!({"error": "Rate limited"}));
    assert!(resp.headers().get("x-ratelimit-remaining").is_none());
    // Other paths under /api are limited too (the seed's middleware).
    let resp = h
        .send(request_from(Method::GET, "/api/other", "10.0.0.1"))
        .await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);

    // Another client has its own budget.
    let resp = h
        .send(request_from(Method::GET, "/api/ping", "2001:db8::1"))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "99");
}

#[tokio::test]
async fn other_api_paths_are_404_after_the_limiter() {
    let h = Harness::new().await;
    for path in ["/api", "/api/", "/api/nope", "/api/ping/"] {
        let resp = h.send(request_from(Method::GET, path, "10.0.0.2")).await;
        assert_error(&resp, StatusCode::NOT_FOUND, "not_found");
        assert!(
            resp.headers().contains_key("x-ratelimit-remaining"),
            "{path}"
        );
    }
    // Not GET: no route and no limiter.
    let resp = h
        .send(request_from(Method::POST, "/api/ping", "10.0.0.2"))
        .await;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");
    assert!(!resp.headers().contains_key("x-ratelimit-remaining"));
    // HEAD is GET without the body.
    let resp = h
        .send(request_from(Method::HEAD, "/api/ping", "10.0.0.2"))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.body().is_empty());
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "95");
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
}

#[tokio::test]
async fn requests_without_a_client_ip_share_the_unknown_bucket() {
    let h = Harness::new().await;
    let resp = h.get("/api/ping").await;
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "99");
    let (_, body) = check(&h, "unknown", "?limit=100&window=60000").await;
    assert_eq!(body["remaining"], 98);
}

/// Methods the `/api` middleware used to reach the limiter (see below).
static LIMITER_METHODS: std::sync::Mutex<Vec<Method>> = std::sync::Mutex::new(Vec::new());

/// Stands in for the limiter: records the method of each check, allows it.
struct MethodProbe;

impl crate::object::DurableObject for MethodProbe {
    async fn new(_: &mut crate::object::Context) -> crate::object::Result<Self> {
        Ok(MethodProbe)
    }

    async fn fetch(
        &mut self,
        _: &mut crate::object::Context,
        req: crate::object::Request,
    ) -> crate::object::Result<crate::object::Response> {
        LIMITER_METHODS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(req.method().clone());
        Ok(crate::object::json(
            StatusCode::OK,
            &json!({"allowed": true, "remaining": 1, "reset": 0}),
        ))
    }
}

/// Defect 6: the limiter check records the request, so it must not be a
/// request an edge treats as safe to repeat when its outcome is unknown
/// (GET, HEAD, OPTIONS): a repeat would charge the client twice.
#[tokio::test]
async fn the_limiter_check_is_not_a_request_an_edge_repeats() {
    let mut h = Harness::new().await;
    h.restart(
        crate::object::Bindings::new()
            .bind::<crate::app::chat_room::ChatRoom>("CHAT_ROOM")
            .bind::<MethodProbe>("RATE_LIMITER")
            .bind::<crate::app::counter::Counter>("COUNTER"),
    )
    .await;
    let resp = h
        .send(request_from(Method::GET, "/api/ping", "10.9.9.9"))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let methods = LIMITER_METHODS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    assert!(!methods.is_empty(), "the middleware checked the limiter");
    for m in methods {
        assert!(
            !matches!(m, Method::GET | Method::HEAD | Method::OPTIONS),
            "the limiter check went out as {m}, which an edge may repeat"
        );
    }
}
/// A client that stops leaves nothing behind: the alarm set when its last
/// request stops counting deletes every entry. Probed with a one-request,
/// one-day window, which is refused (and records nothing) while any entry
/// is left, and allowed once they are gone.
#[tokio::test]
async fn idle_buckets_are_pruned_by_the_alarm() {
    let h = Harness::new().await;
    for _ in 0..3 {
        let (status, _) = check(&h, "gone", "?limit=10&window=200").await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _) = check(&h, "gone", "?limit=1&window=86400000").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "entries are stored");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = check(&h, "gone", "?limit=1&window=86400000").await;
        if status == StatusCode::OK {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the alarm never pruned the entries"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn ipv6_clients_share_a_limiter_per_slash_64() {
    use crate::app::rate_limiter::bucket_name;
    let a = bucket_name("2001:db8:1:2::1".parse().expect("ip"));
    let b = bucket_name("2001:db8:1:2:ffff::9".parse().expect("ip"));
    assert_eq!(a, b);
    assert_eq!(a, "2001:db8:1:2::/64");
    assert_eq!(
        bucket_name("203.0.113.7".parse().expect("ip")),
        "203.0.113.7"
    );
}
