//! The closed-loop workload and the correctness check after it.
//!
//! Owns: the clients (one task each, one request in flight), counter naming,
//! phase accounting (warmup vs. measured), per-counter tallies of what was
//! acknowledged, and reading the counters back. It never judges timing and
//! never prints: it returns numbers for `report` to present.
//!
//! Counters get fresh names per run (`load-<run id>-<scenario>-<i>`), so they
//! start at 0 and no reset is needed; increments use the default amount 1.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use tokio::task::JoinSet;

use crate::report::Check;

/// Parallel readers used by the correctness check.
const CHECK_READERS: usize = 32;
/// Tries per counter read in the correctness check.
const CHECK_ATTEMPTS: u32 = 3;
/// Error messages kept per client, to show what went wrong.
const ERROR_SAMPLES_PER_CLIENT: usize = 3;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Every client increments the same counter.
    Hot,
    /// Every request picks one of `counters` counters uniformly at random.
    Many,
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scenario::Hot => "hot",
            Scenario::Many => "many",
        })
    }
}

/// One scenario run, fully specified.
pub struct Plan {
    pub scenario: Scenario,
    /// Base URL without a trailing slash.
    pub base: String,
    pub run_id: String,
    pub clients: usize,
    pub counters: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

impl Plan {
    fn counter_name(&self, i: usize) -> String {
        format!("load-{}-{}-{i}", self.run_id, self.scenario)
    }
}

/// A fresh, random run id, so counters of different runs never collide.
pub fn run_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// What a scenario run observed.
pub struct Outcome {
    /// Latencies of the measured, acknowledged increments, in µs, sorted.
    pub latencies_us: Vec<u32>,
    /// Acknowledged increments started inside the measured window.
    pub acked: u64,
    /// Failed increments started inside the measured window.
    pub errors: Errors,
    pub warmup_acked: u64,
    pub warmup_errors: Errors,
    /// From the end of the warmup to the last measured completion.
    pub window: Duration,
    /// Per counter, over warmup and measurement together.
    pub tallies: Vec<Tally>,
    pub error_samples: Vec<String>,
}

/// Request failures by kind.
#[derive(Clone, Copy, Default, Debug)]
pub struct Errors {
    /// Answered, but not with 200 (or with a body that is not `{"value":N}`).
    pub http: u64,
    /// No answer: connect, send, timeout or body read failed.
    pub transport: u64,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.http + self.transport
    }

    fn add(&mut self, other: Errors) {
        self.http += other.http;
        self.transport += other.transport;
    }
}

/// What one counter was told and what it answered.
#[derive(Default, Clone)]
pub struct Tally {
    /// Increments answered 200 `{"value":N}`.
    pub acked: u64,
    /// Increments that failed: they may or may not have been applied.
    pub unacked: u64,
    /// The `value` of each acknowledged increment, sorted.
    pub returned: Vec<i64>,
}

#[derive(Deserialize)]
struct ValueBody {
    value: i64,
}

enum RequestError {
    Http(String),
    Transport(String),
}

/// POST `url` and return the `value` it answers with.
async fn post_value(client: &reqwest::Client, url: &str) -> Result<i64, RequestError> {
    fetch_value(client.post(url)).await
}

async fn fetch_value(req: reqwest::RequestBuilder) -> Result<i64, RequestError> {
    let resp = req
        .send()
        .await
        .map_err(|e| RequestError::Transport(error_chain(&e)))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| RequestError::Transport(error_chain(&e)))?;
    if status != reqwest::StatusCode::OK {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        return Err(RequestError::Http(format!("HTTP {status}: {text}")));
    }
    serde_json::from_slice::<ValueBody>(&body)
        .map(|b| b.value)
        .map_err(|e| {
            RequestError::Http(format!(
                "bad body ({e}): {}",
                String::from_utf8_lossy(&body)
            ))
        })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// What one client task saw.
struct ClientResult {
    latencies_us: Vec<u32>,
    acked: u64,
    errors: Errors,
    warmup_acked: u64,
    warmup_errors: Errors,
    last_done: Instant,
    acked_per_counter: Vec<u64>,
    unacked_per_counter: Vec<u64>,
    /// (counter index, returned value) of every acknowledged increment.
    returned: Vec<(u32, i64)>,
    error_samples: Vec<String>,
}

struct Clock {
    measure_from: Instant,
    end: Instant,
}

async fn client_loop(
    client: reqwest::Client,
    urls: Arc<Vec<String>>,
    clock: Arc<Clock>,
    seed: u64,
) -> ClientResult {
    let n = urls.len();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut r = ClientResult {
        latencies_us: Vec::new(),
        acked: 0,
        errors: Errors::default(),
        warmup_acked: 0,
        warmup_errors: Errors::default(),
        last_done: clock.measure_from,
        acked_per_counter: vec![0; n],
        unacked_per_counter: vec![0; n],
        returned: Vec::new(),
        error_samples: Vec::new(),
    };
    loop {
        let start = Instant::now();
        if start >= clock.end {
            break;
        }
        let i = if n == 1 { 0 } else { rng.random_range(0..n) };
        let result = post_value(&client, &urls[i]).await;
        let done = Instant::now();
        let measured = start >= clock.measure_from;
        if measured {
            r.last_done = r.last_done.max(done);
        }
        match result {
            Ok(value) => {
                r.acked_per_counter[i] += 1;
                r.returned.push((i as u32, value));
                if measured {
                    r.acked += 1;
                    let us = done.duration_since(start).as_micros();
                    r.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                } else {
                    r.warmup_acked += 1;
                }
            }
            Err(e) => {
                r.unacked_per_counter[i] += 1;
                let errors = if measured {
                    &mut r.errors
                } else {
                    &mut r.warmup_errors
                };
                let msg = match e {
                    RequestError::Http(m) => {
                        errors.http += 1;
                        m
                    }
                    RequestError::Transport(m) => {
                        errors.transport += 1;
                        m
                    }
                };
                if r.error_samples.len() < ERROR_SAMPLES_PER_CLIENT {
                    r.error_samples.push(msg);
                }
            }
        }
    }
    r
}

/// Run one scenario: `plan.clients` closed-loop clients for warmup + duration.
pub async fn run(client: &reqwest::Client, plan: &Plan) -> Outcome {
    let urls: Arc<Vec<String>> = Arc::new(
        (0..plan.counters)
            .map(|i| format!("{}/counter/{}/increment", plan.base, plan.counter_name(i)))
            .collect(),
    );
    let start = Instant::now();
    let clock = Arc::new(Clock {
        measure_from: start + plan.warmup,
        end: start + plan.warmup + plan.duration,
    });
    let mut tasks = JoinSet::new();
    for _ in 0..plan.clients {
        tasks.spawn(client_loop(
            client.clone(),
            urls.clone(),
            clock.clone(),
            rand::random(),
        ));
    }
    let mut out = Outcome {
        latencies_us: Vec::new(),
        acked: 0,
        errors: Errors::default(),
        warmup_acked: 0,
        warmup_errors: Errors::default(),
        window: plan.duration,
        tallies: vec![Tally::default(); plan.counters],
        error_samples: Vec::new(),
    };
    let mut last_done = clock.end;
    while let Some(joined) = tasks.join_next().await {
        let r = match joined {
            Ok(r) => r,
            Err(e) => {
                // A client task panicked: its requests are unaccounted for,
                // which the correctness check may then flag.
                out.error_samples.push(format!("client task failed: {e}"));
                continue;
            }
        };
        out.latencies_us.extend_from_slice(&r.latencies_us);
        out.acked += r.acked;
        out.errors.add(r.errors);
        out.warmup_acked += r.warmup_acked;
        out.warmup_errors.add(r.warmup_errors);
        last_done = last_done.max(r.last_done);
        for (i, t) in out.tallies.iter_mut().enumerate() {
            t.acked += r.acked_per_counter[i];
            t.unacked += r.unacked_per_counter[i];
        }
        for (i, v) in r.returned {
            out.tallies[i as usize].returned.push(v);
        }
        out.error_samples.extend(r.error_samples);
    }
    out.window = last_done.duration_since(clock.measure_from);
    out.latencies_us.sort_unstable();
    for t in &mut out.tallies {
        t.returned.sort_unstable();
    }
    out
}

/// Read every counter back and compare it with what was acknowledged.
///
/// A counter passes when `acked <= value <= acked + unacked` (a failed
/// request may or may not have been applied; with no failures this is
/// equality) and the values returned by its acknowledged increments are
/// distinct and at most `value` (two increments answering the same value
/// would mean one of them was lost).
pub async fn check(client: &reqwest::Client, plan: &Plan, outcome: &Outcome) -> Check {
    let urls: Arc<Vec<String>> = Arc::new(
        (0..plan.counters)
            .map(|i| format!("{}/counter/{}", plan.base, plan.counter_name(i)))
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let mut readers = JoinSet::new();
    for _ in 0..CHECK_READERS.min(plan.counters) {
        let (client, urls, next) = (client.clone(), urls.clone(), next.clone());
        readers.spawn(async move {
            let mut values = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(url) = urls.get(i) else { break };
                values.push((i, read_counter(&client, url).await?));
            }
            Ok(values)
        });
    }
    let mut finals = vec![0i64; plan.counters];
    while let Some(joined) = readers.join_next().await {
        match joined {
            Ok(Ok(values)) => {
                for (i, v) in values {
                    finals[i] = v;
                }
            }
            Ok(Err(e)) => return Check::Unverified(e),
            Err(e) => return Check::Unverified(format!("reader task failed: {e}")),
        }
    }
    judge(plan, outcome, &finals)
}

/// GET a counter's value. A GET changes nothing, so transport errors (such
/// as a pooled connection the server just closed) are retried a few times.
async fn read_counter(client: &reqwest::Client, url: &str) -> Result<i64, String> {
    let mut attempt = 1;
    loop {
        match fetch_value(client.get(url)).await {
            Ok(v) => return Ok(v),
            Err(RequestError::Transport(m)) if attempt < CHECK_ATTEMPTS => {
                eprintln!("load: check: GET {url} failed (attempt {attempt}), retrying: {m}");
                attempt += 1;
            }
            Err(RequestError::Http(m) | RequestError::Transport(m)) => {
                return Err(format!("GET {url}: {m}"));
            }
        }
    }
}

fn judge(plan: &Plan, outcome: &Outcome, finals: &[i64]) -> Check {
    let mut bad = 0usize;
    let mut examples = Vec::new();
    let mut ambiguous = 0u64;
    for (i, (t, &value)) in outcome.tallies.iter().zip(finals).enumerate() {
        ambiguous += t.unacked;
        let lo = i128::from(t.acked);
        let hi = lo + i128::from(t.unacked);
        let mut problem = None;
        if !(lo..=hi).contains(&i128::from(value)) {
            problem = Some(if t.unacked == 0 {
                format!("value {value}, acknowledged increments {}", t.acked)
            } else {
                format!(
                    "value {value}, acknowledged {} (+ up to {} failed)",
                    t.acked, t.unacked
                )
            });
        } else if let Some(w) = t.returned.windows(2).find(|w| w[0] == w[1]) {
            problem = Some(format!("two increments both answered value {}", w[0]));
        } else if let Some(&max) = t.returned.last()
            && max > value
        {
            problem = Some(format!(
                "an increment answered {max} but the counter reads {value}"
            ));
        }
        if let Some(p) = problem {
            bad += 1;
            if examples.len() < 5 {
                examples.push(format!("{}: {p}", plan.counter_name(i)));
            }
        }
    }
    if bad == 0 {
        Check::Ok {
            counters: plan.counters,
            ambiguous,
        }
    } else {
        Check::Mismatch {
            bad,
            counters: plan.counters,
            examples,
        }
    }
}
