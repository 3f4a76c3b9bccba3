//! A steady load of increments and reads on many counters through the
//! edge, every operation recorded in a [`history::Recorder`], and the
//! waits and final checks built on that history.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::history::{self, Kind, Op, Outcome, Recorder};

/// How long a client waits for one answer (longer than the edge's
/// failover window, so a slow answer is still recorded).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Concurrent clients incrementing and reading `counters` counters.
pub struct Load {
    pub history: Recorder,
    /// What the failed operations got (status and body, or the client's
    /// error), with when each was sent; the first 100.
    pub errors: Arc<std::sync::Mutex<Vec<(u64, String)>>>,
    pub counters: usize,
    prefix: String,
    edge: String,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn value_of(body: &str) -> Option<i64> {
    serde_json::from_str::<serde_json::Value>(body).ok()?["value"].as_i64()
}

impl Load {
    /// Starts `clients` clients on counters `{prefix}-0 .. {prefix}-{counters}`
    /// behind the edge at `edge` (an `http://` URL). One operation in five
    /// is a read.
    pub fn start(edge: &str, prefix: &str, clients: usize, counters: usize) -> Load {
        let history = Recorder::new();
        let errors: Arc<std::sync::Mutex<Vec<(u64, String)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let http = reqwest::Client::new();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (http, history, stop) = (http.clone(), history.clone(), stop.clone());
            let errors = errors.clone();
            let (edge, prefix) = (edge.to_owned(), prefix.to_owned());
            tasks.push(tokio::spawn(async move {
                let mut i = c;
                while !stop.load(Ordering::Relaxed) {
                    let counter = i % counters;
                    let kind = if (i / clients) % 5 == 4 {
                        Kind::Read
                    } else {
                        Kind::Incr
                    };
                    i += clients;
                    let req = match kind {
                        Kind::Incr => {
                            http.post(format!("{edge}/counter/{prefix}-{counter}/increment"))
                        }
                        Kind::Read => http.get(format!("{edge}/counter/{prefix}-{counter}")),
                    };
                    let start = history.now();
                    let resp = req.timeout(REQUEST_TIMEOUT).send().await;
                    let (outcome, error) = match resp {
                        Ok(r) if r.status() == 200 => match r.text().await {
                            Ok(body) => match value_of(&body) {
                                Some(v) => (Outcome::Ok(v), None),
                                None => (Outcome::Unknown, Some(format!("200 {body}"))),
                            },
                            Err(e) => (Outcome::Unknown, Some(format!("200, body: {e}"))),
                        },
                        Ok(r) => {
                            let status = r.status();
                            let body = r.text().await.unwrap_or_default();
                            (Outcome::Unknown, Some(format!("{status} {body}")))
                        }
                        Err(e) => (Outcome::Unknown, Some(format!("{e:?}"))),
                    };
                    if let Some(e) = error {
                        let mut errors = errors.lock().unwrap_or_else(|p| p.into_inner());
                        if errors.len() < 100 {
                            errors.push((start, format!("{kind:?} of counter {counter}: {e}")));
                        }
                    }
                    let end = history.now();
                    history.push(Op {
                        counter,
                        kind,
                        start,
                        end,
                        outcome,
                    });
                    if outcome == Outcome::Unknown {
                        // Do not spin on a failing edge.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }));
        }
        Load {
            history,
            errors,
            counters,
            prefix: prefix.to_owned(),
            edge: edge.to_owned(),
            stop,
            tasks,
        }
    }

    /// Operations sent at or after `since`, and how many of them got no
    /// value (an error or a timeout).
    pub fn outcomes_since(&self, since: u64) -> (usize, usize) {
        self.history
            .ops()
            .iter()
            .filter(|o| o.start >= since)
            .fold((0, 0), |(n, f), o| {
                (n + 1, f + usize::from(o.outcome == Outcome::Unknown))
            })
    }

    /// What the operations sent at or after `since` that failed got.
    pub fn errors_since(&self, since: u64) -> Vec<String> {
        let errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        errors
            .iter()
            .filter(|(t, _)| *t >= since)
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// Acknowledged increments so far.
    pub fn acked(&self) -> usize {
        self.history
            .ops()
            .iter()
            .filter(|o| o.kind == Kind::Incr && matches!(o.outcome, Outcome::Ok(_)))
            .count()
    }

    /// Waits until `n` increments have been acknowledged.
    pub async fn wait_acked(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.acked() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} increments acknowledged",
                self.acked()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every counter acknowledged an increment that started at
    /// or after `since` (a [`Recorder::now`] time); returns how long after
    /// `since` the last of them was acknowledged.
    pub async fn wait_all_writable(&self, since: u64, timeout: Duration) -> Duration {
        let all: Vec<usize> = (0..self.counters).collect();
        self.wait_writable(since, &all, timeout).await
    }

    /// [`Load::wait_all_writable`] for the counters `which`.
    pub async fn wait_writable(&self, since: u64, which: &[usize], timeout: Duration) -> Duration {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(took) = self.writable_after(since, which) {
                return took;
            }
            if Instant::now() >= deadline {
                let ops = self.history.ops();
                let after: Vec<&Op> = ops.iter().filter(|o| o.start >= since).collect();
                let failed = after
                    .iter()
                    .filter(|o| o.outcome == Outcome::Unknown)
                    .count();
                let written = self.written_since(since, which).len();
                panic!(
                    "only {written} of {} counters writable again; since then {} operations finished, {failed} without an answer",
                    which.len(),
                    after.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// If each counter of `which` acknowledged an increment that started at
    /// or after `since`: how long after `since` the last of them was.
    pub fn writable_after(&self, since: u64, which: &[usize]) -> Option<Duration> {
        let first = self.written_since(since, which);
        (first.len() == which.len()).then(|| {
            let last = first.values().copied().max().unwrap_or(since);
            Duration::from_micros(last.saturating_sub(since))
        })
    }

    /// For each counter of `which` that acknowledged an increment started
    /// at or after `since`, when the first of those ended.
    fn written_since(&self, since: u64, which: &[usize]) -> BTreeMap<usize, u64> {
        let mut first: BTreeMap<usize, u64> = BTreeMap::new();
        for o in self.history.ops() {
            if o.kind == Kind::Incr
                && o.start >= since
                && which.contains(&o.counter)
                && matches!(o.outcome, Outcome::Ok(_))
            {
                let e = first.entry(o.counter).or_insert(o.end);
                *e = (*e).min(o.end);
            }
        }
        first
    }

    /// Stops the clients, reads every counter once more, and checks the
    /// whole history; panics with the violations if there are any.
    pub async fn finish_and_check(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks.drain(..) {
            // Every request has a timeout, so this is bounded.
            let _ = tokio::time::timeout(REQUEST_TIMEOUT * 2, t).await;
        }
        let http = reqwest::Client::new();
        let mut finals = BTreeMap::new();
        for counter in 0..self.counters {
            let url = format!("{}/counter/{}-{counter}", self.edge, self.prefix);
            let deadline = Instant::now() + Duration::from_secs(30);
            let value = loop {
                let resp = http.get(&url).timeout(REQUEST_TIMEOUT).send().await;
                if let Ok(r) = resp
                    && r.status() == 200
                    && let Some(v) = value_of(&r.text().await.unwrap_or_default())
                {
                    break v;
                }
                assert!(Instant::now() < deadline, "final read of counter {counter}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            finals.insert(counter, value);
        }
        let ops = self.history.ops();
        let acked = ops
            .iter()
            .filter(|o| o.kind == Kind::Incr && matches!(o.outcome, Outcome::Ok(_)))
            .count();
        let unknown = ops.iter().filter(|o| o.outcome == Outcome::Unknown).count();
        eprintln!(
            "history: {} operations, {acked} increments acknowledged, {unknown} without an answer, finals sum {}",
            ops.len(),
            finals.values().sum::<i64>()
        );
        let errors = history::check(&ops, &finals);
        assert!(
            errors.is_empty(),
            "{} violations, first ones:\n{}",
            errors.len(),
            errors
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
    }
}
