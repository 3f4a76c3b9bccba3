//! The workload: concurrent clients, several per object, each operation
//! through one of the edges at random: increments (`POST
//! /counter/:name/increment`) and reads (`GET /counter/:name`) of the seed
//! app's counters. Every operation is recorded with its interval and
//! outcome ([`checker::classify`]); a status the API does not document is
//! recorded as a violation on the spot.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::checker::{self, Kind, Op, Outcome};

/// How long a client waits for an answer before the outcome is unknown
/// (longer than the edge's failover window).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The run's clock and everything recorded on it. Cheap to clone.
#[derive(Clone)]
pub struct History {
    epoch: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
    /// Undocumented answers, as they came.
    pub violations: Arc<Mutex<Vec<String>>>,
    /// Keys of violations reported once only ([`History::violation_once`]).
    once: Arc<Mutex<std::collections::BTreeSet<String>>>,
}

impl History {
    pub fn new() -> History {
        History {
            epoch: Instant::now(),
            ops: Arc::default(),
            violations: Arc::default(),
            once: Arc::default(),
        }
    }

    /// Microseconds since the epoch.
    pub fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().expect("history lock").clone()
    }

    pub fn record(&self, op: Op) {
        self.ops.lock().expect("history lock").push(op);
    }

    /// [`History::violation`], unless one with the same `key` was recorded
    /// (a broken invariant in stored state shows in every later answer).
    pub fn violation_once(&self, key: String, v: String) {
        if self.once.lock().expect("lock").insert(key) {
            self.violation(v);
        }
    }

    /// Records a violation seen by a client (printed at once, too).
    pub fn violation(&self, v: String) {
        eprintln!("nemesis: VIOLATION: {v}");
        self.violations.lock().expect("lock").push(v);
    }
}

/// One request, recorded.
pub async fn run_op(
    http: &reqwest::Client,
    history: &History,
    edges: &[String],
    (client, edge): (usize, usize),
    (object, name): (usize, &str),
    kind: Kind,
) -> Op {
    let base = &edges[edge];
    let req = match kind {
        Kind::Incr => http.post(format!("{base}/counter/{name}/increment")),
        Kind::Read => http.get(format!("{base}/counter/{name}")),
    };
    let start = history.now();
    let answer = match req.timeout(REQUEST_TIMEOUT).send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            resp.text().await.ok().map(|body| (status, body))
        }
        Err(_) => None,
    };
    let end = history.now();
    let status = match &answer {
        Some((s, body)) => {
            let code = serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned));
            match code {
                Some(c) => format!("{s} {c}"),
                None => s.to_string(),
            }
        }
        None => "no answer".into(),
    };
    let outcome = match checker::classify(kind, answer.as_ref().map(|(s, b)| (*s, b.as_str()))) {
        Ok(o) => o,
        Err(e) => {
            history
                .violations
                .lock()
                .expect("lock")
                .push(format!("object {object} ({name}) via edge {edge}: {e}"));
            match kind {
                Kind::Incr => Outcome::Unknown,
                Kind::Read => Outcome::Failed,
            }
        }
    };
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

/// The lab's share of the workload (`NEMESIS_APP=lab`).
pub struct LabLoad {
    /// The edges' gRPC object API addresses.
    pub grpc: Vec<String>,
    /// `LAB` objects; their object ids follow the counters'.
    pub names: Vec<String>,
    /// Alarm objects are `{alarm_prefix}-{n}`.
    pub alarm_prefix: String,
}

/// Running clients.
pub struct Clients {
    pub history: History,
    /// Alarms set so far (lab only).
    pub alarms: Arc<Mutex<Vec<crate::lab_clients::Alarm>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Clients {
    /// Starts `clients` clients on `names` (object `i` is `names[i]`),
    /// half reads, each request through a random edge.
    pub fn start(
        history: History,
        edges: Vec<String>,
        names: Vec<String>,
        clients: usize,
        seed: u64,
        lab: Option<&LabLoad>,
    ) -> Clients {
        let stop = Arc::new(AtomicBool::new(false));
        let alarms: Arc<Mutex<Vec<crate::lab_clients::Alarm>>> = Arc::default();
        let http = reqwest::Client::new();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (http, history, stop) = (http.clone(), history.clone(), stop.clone());
            let (edges, names) = (edges.clone(), names.clone());
            tasks.push(tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed ^ (c as u64 + 1) << 32);
                while !stop.load(Ordering::Relaxed) {
                    let object = rng.random_range(0..names.len());
                    let edge = rng.random_range(0..edges.len());
                    let kind = if rng.random_bool(0.5) {
                        Kind::Read
                    } else {
                        Kind::Incr
                    };
                    let op = run_op(
                        &http,
                        &history,
                        &edges,
                        (c, edge),
                        (object, &names[object]),
                        kind,
                    )
                    .await;
                    if !matches!(op.outcome, Outcome::Ok(_)) {
                        // Do not spin on a failing cluster.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }));
        }
        if let Some(lab) = lab {
            tasks.extend(crate::lab_clients::start(
                history.clone(),
                lab.grpc.clone(),
                lab.names.clone(),
                names.len(),
                clients,
                seed,
                stop.clone(),
            ));
            tasks.push(crate::lab_clients::alarm_setter(
                lab.grpc.clone(),
                lab.alarm_prefix.clone(),
                seed,
                stop.clone(),
                alarms.clone(),
                history.clone(),
            ));
        }
        Clients {
            history,
            alarms,
            stop,
            tasks,
        }
    }

    /// Stops every client and waits for its last request (bounded by the
    /// request timeout). A client that panicked fails the run.
    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks.drain(..) {
            match tokio::time::timeout(REQUEST_TIMEOUT * 2, t).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("a client task failed: {e}"),
                Err(_) => panic!("a client did not stop within {:?}", REQUEST_TIMEOUT * 2),
            }
        }
    }

    /// Whether every object has an acknowledged increment started at or
    /// after `since`.
    pub fn all_written_since(&self, since: u64, objects: usize) -> bool {
        let mut seen = vec![false; objects];
        for o in self.history.ops.lock().expect("lock").iter().rev() {
            if o.start < since {
                continue;
            }
            if o.kind == Kind::Incr && matches!(o.outcome, Outcome::Ok(_)) {
                seen[o.object] = true;
            }
        }
        seen.iter().all(|s| *s)
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// After the run: reads every object through every edge until each
/// answers (up to `timeout` per object), recorded in the history like any
/// other read. Returns each object's value as last read.
pub async fn final_reads(
    history: &History,
    edges: &[String],
    names: &[String],
    lab: Option<&LabLoad>,
    timeout: Duration,
) -> Result<BTreeMap<usize, i64>, String> {
    let http = reqwest::Client::new();
    let mut finals = BTreeMap::new();
    if let Some(lab) = lab {
        let grpc: Vec<_> = lab
            .grpc
            .iter()
            .map(|e| crate::lab_clients::client(e))
            .collect();
        for (i, name) in lab.names.iter().enumerate() {
            let object = names.len() + i;
            for edge in 0..grpc.len() {
                let deadline = Instant::now() + timeout;
                loop {
                    let op = crate::lab_clients::run_op(
                        &grpc,
                        history,
                        (usize::MAX, edge),
                        (object, name),
                        Kind::Read,
                        (0, 0),
                    )
                    .await;
                    if let Outcome::Ok(v) = op.outcome {
                        finals.insert(object, v);
                        break;
                    }
                    if Instant::now() >= deadline {
                        return Err(format!(
                            "final read of lab object {object} via edge {edge}: no answer within {timeout:?} (last: {})",
                            op.status
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    for (object, name) in names.iter().enumerate() {
        for edge in 0..edges.len() {
            let deadline = Instant::now() + timeout;
            loop {
                let op = run_op(
                    &http,
                    history,
                    edges,
                    (usize::MAX, edge),
                    (object, name),
                    Kind::Read,
                )
                .await;
                if let Outcome::Ok(v) = op.outcome {
                    finals.insert(object, v);
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "final read of object {object} via edge {edge}: no answer within {timeout:?} (last: {})",
                        op.status
                    ));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    Ok(finals)
}
