//! The lab's workload (`NEMESIS_APP=lab`), through the edges' gRPC object
//! API: multi-key transfers and reads of `LAB` objects (recorded in the
//! same history as the counters: a transfer is an increment of `seq`),
//! and alarms, one object per alarm, set once each.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use roost::rpc::pb::objects_client::ObjectsClient;
use roost::rpc::pb::{self, object_ref};
use tonic::transport::{Channel, Endpoint};

use crate::checker::{self, Kind, Op, Outcome};
use crate::clients::{History, REQUEST_TIMEOUT};
use crate::lab::TOTAL;

/// A gRPC client of one edge's object API.
pub fn client(addr: &str) -> ObjectsClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("an edge address")
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy();
    ObjectsClient::new(channel)
}

/// `(status, body)` of a `LAB` call, or `None` with no trustworthy answer.
/// An object error comes back as a gRPC status whose `roost-error`
/// metadata names it: mapped to the HTTP answer the edge's HTTP side gives
/// (503 + that code) so [`checker::classify`] decides for both.
pub async fn call(
    client: &ObjectsClient<Channel>,
    name: &str,
    method: &str,
    path: &str,
) -> Option<(u16, String)> {
    let req = pb::FetchRequest {
        object: Some(pb::ObjectRef {
            namespace: "LAB".into(),
            target: Some(object_ref::Target::Name(name.to_owned())),
            id_name: None,
        }),
        method: method.into(),
        path: path.into(),
        headers: Vec::new(),
        body: Vec::new(),
        client_ip: String::new(),
    };
    let mut client = client.clone();
    match tokio::time::timeout(REQUEST_TIMEOUT, client.fetch(req)).await {
        Ok(Ok(resp)) => {
            let r = resp.into_inner();
            Some((
                u16::try_from(r.status).unwrap_or(0),
                String::from_utf8_lossy(&r.body).into_owned(),
            ))
        }
        Ok(Err(status)) => status
            .metadata()
            .get("roost-error")
            .and_then(|v| v.to_str().ok())
            .map(|code| {
                let http = if code == "unknown_namespace" {
                    500
                } else {
                    503
                };
                (http, serde_json::json!({ "error": code }).to_string())
            }),
        Err(_) => None,
    }
}

/// One transfer or read of lab object `object` (named `name`), recorded.
/// An answer whose balances do not sum to [`TOTAL`] is a violation.
#[allow(clippy::too_many_arguments)]
pub async fn run_op(
    clients: &[ObjectsClient<Channel>],
    history: &History,
    (client, edge): (usize, usize),
    (object, name): (usize, &str),
    kind: Kind,
    (from, to): (usize, usize),
) -> Op {
    let (method, path) = match kind {
        Kind::Incr => ("POST", format!("/transfer?from={from}&to={to}")),
        Kind::Read => ("GET", "/".to_owned()),
    };
    let start = history.now();
    let answer = call(&clients[edge], name, method, &path).await;
    let end = history.now();
    let status = match &answer {
        Some((s, b)) => format!("grpc {s} {}", b.chars().take(60).collect::<String>()),
        None => "no answer".into(),
    };
    let outcome = match checker::classify(kind, answer.as_ref().map(|(s, b)| (*s, b.as_str()))) {
        Ok(o) => o,
        Err(e) => {
            history.violation(format!("lab object {object} ({name}) via edge {edge}: {e}"));
            match kind {
                Kind::Incr => Outcome::Unknown,
                Kind::Read => Outcome::Failed,
            }
        }
    };
    if let (Outcome::Ok(_), Some((_, body))) = (outcome, &answer) {
        let sum: Option<i64> = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| {
                v["balances"]
                    .as_array()
                    .map(|a| a.iter().filter_map(serde_json::Value::as_i64).sum())
            });
        if sum != Some(TOTAL) {
            history.violation_once(
                format!("sum {object}"),
                format!(
                "lab object {object} ({name}): balances sum to {sum:?}, not {TOTAL} (an update lost or half applied; reported once per object): {body} from {status} at {:.3}s..{:.3}s",
                start as f64 / 1e6,
                end as f64 / 1e6
            ),
            );
        }
    }
    let op = Op {
        object,
        kind,
        start,
        end,
        outcome,
        client,
        edge,
        status,
    };
    history.record(op.clone());
    op
}

/// One alarm: set on its own object, once.
#[derive(Clone, Debug)]
pub struct Alarm {
    pub name: String,
    /// When it was set for (ms since the Unix epoch).
    pub due: u64,
    pub outcome: Outcome,
}

/// Sets alarms (each on a fresh object, due 0–3 s later) until stopped.
pub fn alarm_setter(
    edges: Vec<String>,
    prefix: String,
    seed: u64,
    stop: Arc<AtomicBool>,
    alarms: Arc<Mutex<Vec<Alarm>>>,
    history: History,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let clients: Vec<_> = edges.iter().map(|e| client(e)).collect();
        let mut rng = StdRng::seed_from_u64(seed ^ 0xa1a4);
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let name = format!("{prefix}-{n}");
            n += 1;
            let due = roost::object::now_ms() + rng.random_range(0..3_000);
            let edge = rng.random_range(0..clients.len());
            let answer = call(&clients[edge], &name, "POST", &format!("/alarm?at={due}")).await;
            let outcome =
                match checker::classify(Kind::Incr, answer.as_ref().map(|(s, b)| (*s, b.as_str())))
                {
                    Ok(Outcome::Ok(_)) => Outcome::Ok(0),
                    Ok(o) => o,
                    Err(_) if answer.as_ref().is_some_and(|(s, _)| *s == 200) => Outcome::Ok(0),
                    Err(e) => {
                        history.violation(format!("alarm {name}: {e}"));
                        Outcome::Unknown
                    }
                };
            alarms
                .lock()
                .expect("lock")
                .push(Alarm { name, due, outcome });
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
}

/// After the run: every alarm that was set (acknowledged, or unknown but
/// found stored) and is due must have fired at least once and never
/// before its time. Waits up to `timeout` for late ones. Returns the
/// violations, and (checked, fired) counts.
pub async fn check_alarms(
    edges: &[String],
    alarms: &[Alarm],
    timeout: Duration,
) -> (Vec<String>, usize, usize) {
    let clients: Vec<_> = edges.iter().map(|e| client(e)).collect();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut violations = Vec::new();
    let (mut checked, mut fired_n) = (0, 0);
    for (i, a) in alarms.iter().enumerate() {
        if a.outcome == Outcome::Failed {
            continue;
        }
        loop {
            let answer = call(&clients[i % clients.len()], &a.name, "GET", "/alarm").await;
            let Some((200, body)) = answer else {
                if tokio::time::Instant::now() >= deadline {
                    violations.push(format!("alarm {}: no answer to the final read", a.name));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let due = v["due"].as_u64();
            let fired: Vec<u64> = v["fired"]
                .as_array()
                .map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect())
                .unwrap_or_default();
            match due {
                None if matches!(a.outcome, Outcome::Ok(_)) => {
                    violations.push(format!(
                        "alarm {}: set was acknowledged but nothing is stored (a lost acknowledged write)",
                        a.name
                    ));
                    break;
                }
                None => break, // an unknown set that did not take effect
                Some(d) if d != a.due => {
                    violations.push(format!("alarm {}: stored due {d}, set {}", a.name, a.due));
                    break;
                }
                Some(_) => {}
            }
            if let Some(early) = fired.iter().find(|f| **f < a.due) {
                violations.push(format!(
                    "alarm {}: fired at {early}, {} ms before it was due",
                    a.name,
                    a.due - early
                ));
                break;
            }
            if !fired.is_empty() {
                checked += 1;
                fired_n += 1;
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                checked += 1;
                violations.push(format!(
                    "alarm {}: due at {} but never fired ({} ms overdue when the check gave up)",
                    a.name,
                    a.due,
                    roost::object::now_ms().saturating_sub(a.due)
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    (violations, checked, fired_n)
}

/// Concurrent transfer/read clients on `names` (object ids from `first`).
pub fn start(
    history: History,
    edges: Vec<String>,
    names: Vec<String>,
    first: usize,
    clients: usize,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|c| {
            let (history, stop, names) = (history.clone(), stop.clone(), names.clone());
            let grpc: Vec<_> = edges.iter().map(|e| client(e)).collect();
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed ^ ((c as u64 + 101) << 32));
                while !stop.load(Ordering::Relaxed) {
                    let i = rng.random_range(0..names.len());
                    let edge = rng.random_range(0..grpc.len());
                    let kind = if rng.random_bool(0.5) {
                        Kind::Read
                    } else {
                        Kind::Incr
                    };
                    let from = rng.random_range(0..crate::lab::ACCOUNTS);
                    let to =
                        (from + rng.random_range(1..crate::lab::ACCOUNTS)) % crate::lab::ACCOUNTS;
                    let op = run_op(
                        &grpc,
                        &history,
                        (1000 + c, edge),
                        (first + i, &names[i]),
                        kind,
                        (from, to),
                    )
                    .await;
                    if !matches!(op.outcome, Outcome::Ok(_)) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            })
        })
        .collect()
}
