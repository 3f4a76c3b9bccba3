//! Alarms: firing, retries, durability across a restart, deletion and
//! replacement. Time barriers are other objects' alarms, never sleeps.

mod common;

use std::time::{Duration, Instant};

use common::{Client, SOON, now_ms, wait_until};
use serde_json::{Value, json};

/// Waits until object `name` has run its alarm handler `n` times.
async fn fired(c: &Client, name: &str, n: u64, within: Duration) -> bool {
    let want = json!(n.to_string());
    wait_until(within, || async {
        c.get(name, "alarm:fired").await == want
    })
    .await
}

async fn alarm_of(c: &Client, name: &str) -> Value {
    c.ok(name, json!({"op": "get_alarm"})).await["at_ms"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_due_now_or_in_the_past_fires_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = common::start(common::config(dir.path())).await;
    let c = Client::new(&node);
    let past = now_ms() - 60_000;
    c.ok("past", json!({"op": "set_alarm", "at_ms": past}))
        .await;
    c.ok("now", json!({"op": "set_alarm", "at_ms": now_ms()}))
        .await;
    assert!(fired(&c, "past", 1, SOON).await, "past alarm fired");
    assert!(fired(&c, "now", 1, SOON).await, "alarm due now fired");
    assert_eq!(alarm_of(&c, "past").await, Value::Null, "no alarm left");
    assert_eq!(alarm_of(&c, "now").await, Value::Null);
    assert_eq!(
        c.get("past", "alarm:last_scheduled_ms").await,
        json!(past.to_string())
    );
    assert_eq!(c.get("past", "alarm:last_retry_count").await, json!("0"));
    // It does not fire again: a later alarm of another object is a barrier.
    c.ok(
        "barrier",
        json!({"op": "set_alarm", "at_ms": now_ms() + 200}),
    )
    .await;
    assert!(fired(&c, "barrier", 1, SOON).await);
    assert_eq!(c.get("past", "alarm:fired").await, json!("1"));
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_alarm_is_retried_after_backoff() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = common::start(common::config(dir.path())).await;
    let c = Client::new(&node);
    c.ok("o", json!({"op": "fail_alarms", "times": 1})).await;
    let at = now_ms();
    let set = Instant::now();
    c.ok("o", json!({"op": "set_alarm", "at_ms": at})).await;
    // Fired with the first run of `o`'s alarm: once it has, a request to
    // `o` queues behind that (failed) run.
    c.ok("barrier", json!({"op": "set_alarm", "at_ms": at}))
        .await;
    assert!(fired(&c, "barrier", 1, SOON).await);
    let seen = c
        .ok(
            "o",
            json!({"op": "txn", "ops": [{"op": "get", "key": "alarm:fired"}, {"op": "get_alarm"}]}),
        )
        .await;
    if seen["results"][0]["value"].is_null() {
        assert_eq!(
            seen["results"][1]["at_ms"],
            json!(at),
            "a failed alarm stays set while it waits for its retry"
        );
    }
    assert!(
        fired(&c, "o", 1, Duration::from_secs(15)).await,
        "retried alarm fired"
    );
    let took = set.elapsed();
    assert!(
        took >= Duration::from_millis(1900),
        "the retry waited for its 2 s backoff (took {took:?})"
    );
    assert_eq!(c.get("o", "alarm:last_retry_count").await, json!("1"));
    assert_eq!(
        c.get("o", "alarm:last_scheduled_ms").await,
        json!(at.to_string()),
        "a retry reports the alarm's own time"
    );
    assert_eq!(alarm_of(&c, "o").await, Value::Null);
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_survives_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = common::start(common::config(dir.path())).await;
    let c = Client::new(&node);
    let at = now_ms() + 1500;
    c.ok("o", json!({"op": "set_alarm", "at_ms": at})).await;
    assert_eq!(c.get("o", "alarm:fired").await, Value::Null);
    assert!(now_ms() < at, "still not due when the node stops");
    node.shutdown().await.expect("clean shutdown");

    let node = common::start(common::config(dir.path())).await;
    let c = Client::new(&node);
    assert!(
        fired(&c, "o", 1, SOON).await,
        "the alarm fired after restart"
    );
    assert!(now_ms() >= at, "not before its time");
    assert_eq!(
        c.get("o", "alarm:last_scheduled_ms").await,
        json!(at.to_string())
    );
    assert_eq!(alarm_of(&c, "o").await, Value::Null);
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_alarm_does_not_fire() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = common::start(common::config(dir.path())).await;
    let c = Client::new(&node);
    let now = now_ms();
    c.ok("deleted", json!({"op": "set_alarm", "at_ms": now + 300}))
        .await;
    assert_eq!(alarm_of(&c, "deleted").await, json!(now + 300));
    c.ok("deleted", json!({"op": "delete_alarm"})).await;
    assert_eq!(alarm_of(&c, "deleted").await, Value::Null);
    // The barrier's alarm is due after the deleted one would have been;
    // the scheduler fires in time order, and a request to `deleted` sent
    // after the barrier fired queues behind any alarm run it was given.
    c.ok("barrier", json!({"op": "set_alarm", "at_ms": now + 600}))
        .await;
    assert!(fired(&c, "barrier", 1, SOON).await);
    assert_eq!(c.get("deleted", "alarm:fired").await, Value::Null);
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_alarm_replaces_the_old_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = common::start(common::config(dir.path())).await;
    let c = Client::new(&node);
    let now = now_ms();
    let (first, second) = (now + 300, now + 900);
    c.ok("o", json!({"op": "set_alarm", "at_ms": first})).await;
    c.ok("o", json!({"op": "set_alarm", "at_ms": second})).await;
    assert_eq!(alarm_of(&c, "o").await, json!(second));
    c.ok("barrier", json!({"op": "set_alarm", "at_ms": now + 600}))
        .await;
    assert!(fired(&c, "barrier", 1, SOON).await);
    assert_eq!(
        c.get("o", "alarm:fired").await,
        Value::Null,
        "the replaced alarm did not fire"
    );
    assert!(fired(&c, "o", 1, SOON).await, "the new alarm fired");
    assert!(now_ms() >= second);
    assert_eq!(
        c.get("o", "alarm:last_scheduled_ms").await,
        json!(second.to_string())
    );
    // Only once: a later barrier passes without a second run.
    c.ok(
        "barrier2",
        json!({"op": "set_alarm", "at_ms": now_ms() + 200}),
    )
    .await;
    assert!(fired(&c, "barrier2", 1, SOON).await);
    assert_eq!(c.get("o", "alarm:fired").await, json!("1"));
    node.shutdown().await.expect("clean shutdown");
}
