//! Bounded object state against the real binary (`roost dev`): the
//! live-executor cap under 100,000 distinct counters, the chat room's caps
//! and history trimming, and the per-address WebSocket upgrade rate.

mod common;

mod seed_contract;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::Roost;
use futures_util::StreamExt as _;
use seed_contract::{Base, next_json, send_json};
use serde_json::{Value, json};

/// `roost_objects_live` from `/metrics`.
async fn live_objects(http: &reqwest::Client, roost: &Roost) -> usize {
    let text = http
        .get(format!("http://{}/metrics", roost.admin))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    text.lines()
        .find_map(|l| l.strip_prefix("roost_objects_live "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(usize::MAX, |v| v as usize)
}

/// 100,000 distinct counters, 128 at a time, against a cap of 64 live
/// executors: every request is answered 200, or 503 `overloaded` (the
/// documented answer when no executor slot frees in time), and the live
/// count read from `/metrics` never passes the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_counters_keep_live_executors_at_the_cap() {
    const CAP: usize = 64;
    const COUNTERS: usize = 100_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let roost = Roost::start_with_env(
        dir.path(),
        &[
            ("ROOST_LIMITS_MAX_LIVE_OBJECTS", "64"),
            ("ROOST_NODE_SHARDS", "4"),
        ],
    );
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .build()
        .expect("client");
    let ok = Arc::new(AtomicUsize::new(0));
    let overloaded = Arc::new(AtomicUsize::new(0));
    let mut max_seen = 0;
    for chunk in 0..COUNTERS / 5_000 {
        futures_util::stream::iter(chunk * 5_000..(chunk + 1) * 5_000)
            .for_each_concurrent(128, |i| {
                let (http, ok, overloaded) = (&http, ok.clone(), overloaded.clone());
                let url = roost.url(&format!("/counter/c{i}"));
                async move {
                    let resp = http.get(&url).send().await.expect("answered");
                    match resp.status().as_u16() {
                        200 => {
                            let body: Value = resp.json().await.expect("json");
                            assert_eq!(body, json!({"value": 0}));
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        503 => {
                            let body: Value = resp.json().await.expect("json");
                            assert_eq!(body["error"], "overloaded", "{body}");
                            overloaded.fetch_add(1, Ordering::Relaxed);
                        }
                        other => panic!("counter c{i}: status {other}"),
                    }
                }
            })
            .await;
        let live = live_objects(&http, &roost).await;
        assert!(live <= CAP, "{live} live executors, cap {CAP}");
        max_seen = max_seen.max(live);
    }
    let (ok, overloaded) = (
        ok.load(Ordering::Relaxed),
        overloaded.load(Ordering::Relaxed),
    );
    assert_eq!(ok + overloaded, COUNTERS);
    assert!(ok > 0 && max_seen > 0, "ok {ok}, max live {max_seen}");
    eprintln!("{ok} answered 200, {overloaded} answered 503; at most {max_seen} live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_rooms_are_capped_and_trimmed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let roost = Roost::start_with_env(
        dir.path(),
        &[
            ("ROOST_LIMITS_CHAT_MAX_SOCKETS", "2"),
            ("ROOST_LIMITS_CHAT_HISTORY_MESSAGES", "5"),
            ("ROOST_LIMITS_CHAT_MAX_MESSAGE_BYTES", "16"),
        ],
    );
    let base = Base::new(roost.url(""));
    let mut alice = seed_contract::connect(&base, "/room/r/websocket?name=alice").await;
    assert_eq!(next_json(&mut alice).await["type"], "history");
    assert_eq!(next_json(&mut alice).await["type"], "join");
    let mut bob = seed_contract::connect(&base, "/room/r/websocket?name=bob").await;
    assert_eq!(next_json(&mut bob).await["type"], "history");

    // A third socket finds the room full: 503 with a JSON body.
    let third = tokio_tungstenite::connect_async(base.ws_url("/room/r/websocket?name=eve")).await;
    match third {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503);
            let body: Value =
                serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).expect("json");
            assert_eq!(body["error"], "room_full");
        }
        other => panic!("expected 503, got {other:?}"),
    }

    // A text over the size cap gets an error frame; the socket stays open.
    send_json(
        &mut alice,
        json!({"type": "message", "text": "x".repeat(17)}),
    )
    .await;
    let mut frame = next_json(&mut alice).await;
    while frame["type"] == "join" {
        frame = next_json(&mut alice).await;
    }
    assert_eq!(frame["type"], "error");
    assert_eq!(frame["error"], "message_too_large");

    // Eight messages; the room keeps the newest five.
    for i in 0..8 {
        send_json(
            &mut alice,
            json!({"type": "message", "text": format!("m{i}")}),
        )
        .await;
        loop {
            let f = next_json(&mut alice).await;
            if f["type"] == "message" {
                assert_eq!(f["text"], format!("m{i}"));
                break;
            }
        }
    }
    let history: Value = reqwest::get(roost.url("/room/r/history"))
        .await
        .expect("history")
        .json()
        .await
        .expect("json");
    let texts: Vec<&str> = history
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(texts, ["m7", "m6", "m5", "m4", "m3"]);
    // A newcomer (after a socket left) gets the same five.
    drop(bob);
    let joined = common::wait_until(Duration::from_secs(10), || async {
        tokio_tungstenite::connect_async(base.ws_url("/room/r/websocket?name=carol"))
            .await
            .is_ok()
    })
    .await;
    assert!(joined, "a place frees when a socket leaves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_are_rate_limited_per_address() {
    let dir = tempfile::tempdir().expect("temp dir");
    let roost = Roost::start_with_env(
        dir.path(),
        &[("ROOST_WEBSOCKET_MAX_UPGRADES_PER_IP_PER_MINUTE", "3")],
    );
    let base = Base::new(roost.url(""));
    let mut open = Vec::new();
    for i in 0..3 {
        let path = format!("/room/u{i}/websocket");
        open.push(seed_contract::connect(&base, &path).await);
    }
    match tokio_tungstenite::connect_async(base.ws_url("/room/u9/websocket")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 429);
            let body: Value =
                serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).expect("json");
            assert_eq!(body["error"], "rate_limited");
        }
        other => panic!("expected 429, got {other:?}"),
    }
    // Plain requests from the same client are not upgrades: still served.
    let resp = reqwest::get(roost.url("/room/u9/history"))
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
}
