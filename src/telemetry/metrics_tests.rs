//! The metric table's rules, and what `/metrics` renders.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::*;

#[test]
fn names_are_unique_and_follow_prometheus_conventions() {
    let mut seen = BTreeSet::new();
    for def in ALL {
        assert!(seen.insert(def.name), "{} defined twice", def.name);
        assert!(def.name.starts_with("roost_"), "{}", def.name);
        assert!(
            def.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{}",
            def.name
        );
        assert_eq!(
            def.name.ends_with("_total"),
            def.kind == Kind::Counter,
            "{}: only counters end in _total",
            def.name
        );
        if def.unit == Unit::Seconds {
            assert!(def.name.ends_with("_seconds"), "{}", def.name);
        }
        assert!(!def.help.is_empty(), "{} has no help", def.name);
    }
}

/// Labels come from a closed list of bounded keys; an object id is never one.
#[test]
fn labels_are_bounded() {
    let allowed = [
        BINDING, ROUTE, METHOD, STATUS, EVENT, OUTCOME, GATE, REASON, DIRECTION, END, OP, SHARD,
        KIND, CF, RANK, VERSION, SERVICE, CODE, ROLE,
    ];
    for def in ALL {
        for label in def.labels {
            assert!(allowed.contains(label), "{}: label {label}", def.name);
        }
    }
    for forbidden in ["id", "object", "object_id", "key", "path", "ip"] {
        assert!(!allowed.contains(&forbidden));
    }
}

#[test]
fn histogram_buckets_increase() {
    for def in ALL {
        if let Kind::Histogram(buckets) = def.kind {
            assert!(!buckets.is_empty(), "{}", def.name);
            assert!(
                buckets.windows(2).all(|w| w[0] < w[1]),
                "{}: buckets must increase",
                def.name
            );
        }
    }
}

fn rendered(record: impl FnOnce()) -> String {
    let recorder = builder().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        describe();
        record();
    });
    render(&handle, &[])
}

#[test]
fn recorded_metrics_render_with_help_type_and_labels() {
    let binding: Arc<str> = Arc::from("COUNTER");
    let text = rendered(|| {
        http_request(
            "/counter/:name",
            &http::Method::POST,
            200,
            Duration::from_millis(3),
        );
        object_event(&binding, "fetch", "ok", Duration::from_micros(300));
        object_commit_wait(&binding, "write", Duration::from_millis(2));
        storage_op(&binding, "put", "write", 12);
        alarm(&binding, AlarmEvent::Retried);
        raft_batch(3, 700);
        ShardMetrics::new(7).log(LogPositions {
            last_log: 10,
            committed: 9,
            applied: 6,
            purged: 2,
            snapshot: 0,
        });
    });
    for expected in [
        "# HELP roost_http_requests_total HTTP requests answered",
        "# TYPE roost_http_requests_total counter",
        "roost_http_requests_total{route=\"/counter/:name\",method=\"POST\",status=\"200\"} 1",
        "# TYPE roost_http_request_duration_seconds histogram",
        "roost_http_request_duration_seconds_bucket{route=\"/counter/:name\",method=\"POST\",le=\"0.005\"} 1",
        "roost_object_events_total{binding=\"COUNTER\",event=\"fetch\",outcome=\"ok\"} 1",
        "roost_object_commit_wait_seconds_count{binding=\"COUNTER\",gate=\"write\"} 1",
        "roost_storage_bytes_total{binding=\"COUNTER\",direction=\"write\"} 12",
        "roost_alarms_retried_total{binding=\"COUNTER\"} 1",
        "roost_raft_batch_writes_bucket{le=\"4\"} 1",
        "roost_raft_apply_lag_entries{shard=\"7\"} 3",
        "roost_raft_log_entries{shard=\"7\"} 8",
        "roost_build_info{version=\"",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(
        !text.contains("quantile="),
        "histograms, not summaries:\n{text}"
    );
}

#[test]
fn hot_objects_render_by_rank_with_escaped_bindings() {
    let mut out = String::new();
    render_hot(
        &mut out,
        &[RankedObject {
            rank: 1,
            binding: "A\"B\\C".into(),
            events_per_second: 12.5,
            busy_ratio: 0.5,
        }],
    );
    assert!(out.contains("# TYPE roost_hot_object_events_per_second gauge"));
    assert!(
        out.contains("roost_hot_object_events_per_second{rank=\"1\",binding=\"A\\\"B\\\\C\"} 12.5"),
        "{out}"
    );
    assert!(out.contains("roost_hot_object_busy_ratio{rank=\"1\",binding=\"A\\\"B\\\\C\"} 0.5"));
}
