//! `Counter` through the router.

use http::{Method, StatusCode};
use serde_json::json;

use super::{Harness, assert_error, body_json};
use crate::app;

#[tokio::test]
async fn counts_up_and_down_and_resets() {
    let h = Harness::new().await;
    assert_eq!(
        body_json(&h.get("/counter/visits").await),
        json!({"value": 0})
    );

    let steps = [
        ("/counter/visits/increment", 1),
        ("/counter/visits/increment?amount=5", 6),
        ("/counter/visits/decrement?amount=2", 4),
        ("/counter/visits/increment?amount=-3", 1),
        // A query `+` is a space (form encoding): send a plus sign as %2B.
        ("/counter/visits/increment?amount=%2B2", 3),
        // An empty amount means 1, as the seed's `parseInt(x || '1')`.
        ("/counter/visits/decrement?amount=", 2),
        ("/counter/visits/decrement", 1),
    ];
    for (uri, value) in steps {
        let resp = h.post(uri).await;
        assert_eq!(resp.status(), StatusCode::OK, "{uri}");
        assert_eq!(body_json(&resp), json!({"value": value}), "{uri}");
    }
    assert_eq!(
        body_json(&h.get("/counter/visits").await),
        json!({"value": 1})
    );
    // Counters are independent.
    assert_eq!(
        body_json(&h.get("/counter/other").await),
        json!({"value": 0})
    );

    let resp = h.post("/counter/visits/reset").await;
    assert_eq!(body_json(&resp), json!({"value": 0}));
    assert_eq!(
        body_json(&h.get("/counter/visits").await),
        json!({"value": 0})
    );
}

#[tokio::test]
async fn rejects_bad_amounts_without_storing() {
    let h = Harness::new().await;
    h.post("/counter/c/increment?amount=10").await;
    for amount in [
        "abc", "5abc", "1.5", "1e3", "%205", "+5", "0x10", "NaN", "-",
    ] {
        let resp = h
            .post(&format!("/counter/c/increment?amount={amount}"))
            .await;
        assert_error(&resp, StatusCode::BAD_REQUEST, "invalid_amount");
    }
    assert_eq!(body_json(&h.get("/counter/c").await), json!({"value": 10}));
}

#[tokio::test]
async fn overflow_is_refused_and_nothing_is_stored() {
    let h = Harness::new().await;
    let max = i64::MAX;
    let resp = h.post(&format!("/counter/o/increment?amount={max}")).await;
    assert_eq!(body_json(&resp), json!({"value": max}));
    let resp = h.post("/counter/o/increment").await;
    assert_error(&resp, StatusCode::BAD_REQUEST, "value_out_of_range");
    // An amount beyond i64 itself.
    let resp = h
        .post("/counter/o/decrement?amount=99999999999999999999")
        .await;
    assert_error(&resp, StatusCode::BAD_REQUEST, "value_out_of_range");
    h.post("/counter/o/reset").await;
    // 0 - i64::MIN does not fit either.
    let resp = h
        .post(&format!("/counter/o/decrement?amount={}", i64::MIN))
        .await;
    assert_error(&resp, StatusCode::BAD_REQUEST, "value_out_of_range");
    assert_eq!(body_json(&h.get("/counter/o").await), json!({"value": 0}));
}

#[tokio::test]
async fn unknown_actions_and_methods_are_404() {
    let h = Harness::new().await;
    assert_error(
        &h.post("/counter/c/explode").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    // The router has no POST /counter/:name or GET /counter/:name/:action.
    assert_error(
        &h.post("/counter/c").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &h.get("/counter/c/increment").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &h.call(Method::DELETE, "/counter/c").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &h.get("/counter/").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    // Nothing above changed the value.
    assert_eq!(body_json(&h.get("/counter/c").await), json!({"value": 0}));
}

#[tokio::test]
async fn value_survives_a_restart() {
    let mut h = Harness::new().await;
    h.post("/counter/kept/increment?amount=42").await;
    h.restart(app::bindings()).await;
    assert_eq!(
        body_json(&h.get("/counter/kept").await),
        json!({"value": 42})
    );
    let resp = h.post("/counter/kept/increment").await;
    assert_eq!(body_json(&resp), json!({"value": 43}));
}

#[tokio::test]
async fn head_is_routed_as_get_without_a_body() {
    let h = Harness::new().await;
    let resp = h.call(Method::HEAD, "/counter/h").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.body().is_empty());
}

/// The live-executor cap: distinct counters one after another, more than
/// the cap. The least recently used idle executors make room, so every
/// request is answered, the live count never passes the cap, and values
/// survive eviction.
#[tokio::test]
async fn live_executors_stay_within_the_cap() {
    let h = Harness::with_options(crate::object::RuntimeOptions {
        max_live: 3,
        ..crate::object::RuntimeOptions::default()
    })
    .await;
    for round in 0..2 {
        for i in 0..12 {
            let resp = h.post(&format!("/counter/c{i}/increment")).await;
            assert_eq!(resp.status(), StatusCode::OK, "c{i}");
            assert_eq!(body_json(&resp), json!({"value": round + 1}));
            assert!(
                h.runtime.live_objects() <= 3,
                "{}",
                h.runtime.live_objects()
            );
        }
    }
    assert_eq!(h.runtime.max_live_objects(), 3);
}

/// Mailboxes are bounded in bytes: calls queued at once for one object
/// beyond `mailbox_bytes` are refused `Overloaded`, the rest run.
#[tokio::test]
async fn mailbox_bytes_are_bounded() {
    use crate::id::{ObjectId, ObjectKey};
    let h = Harness::with_options(crate::object::RuntimeOptions {
        mailbox_bytes: 4_000,
        ..crate::object::RuntimeOptions::default()
    })
    .await;
    let key = ObjectKey::new("COUNTER", ObjectId::from_name("COUNTER", "big"));
    let payload = bytes::Bytes::from(vec![b'x'; 1_000]);
    let calls = (0..12).map(|_| h.runtime.call(key.clone(), "m".into(), payload.clone()));
    let answers = futures_util::future::join_all(calls).await;
    let overloaded = answers
        .iter()
        .filter(|a| matches!(a, Err(crate::object::Error::Overloaded)))
        .count();
    // The counter has no `call`: the ones that ran answer 501 not_implemented.
    let ran = answers.iter().filter(|a| matches!(a, Ok(Err(_)))).count();
    assert!(overloaded > 0, "nothing refused");
    assert!(ran > 0, "nothing ran");
    assert_eq!(overloaded + ran, 12);
}
