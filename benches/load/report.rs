//! Turning a scenario's outcome into figures: a human table and one JSON line
//! per scenario (stable field names, for a future BENCHMARKS.md generator).
//!
//! Owns: percentiles, rates and formatting. It never talks to the server.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::workload::{Outcome, Plan};

/// Result of reading the counters back after a run.
#[derive(Debug)]
pub enum Check {
    /// Every counter matched; `ambiguous` failed increments were allowed to
    /// have been applied or not.
    Ok { counters: usize, ambiguous: u64 },
    /// `bad` of `counters` counters disagreed with the acknowledgements.
    Mismatch {
        bad: usize,
        counters: usize,
        examples: Vec<String>,
    },
    /// The counters could not be read back.
    Unverified(String),
}

impl Check {
    /// A few words for the table.
    fn short(&self) -> String {
        match self {
            Check::Ok { .. } => "ok".to_owned(),
            Check::Mismatch { bad, counters, .. } => {
                format!("MISMATCH ({bad}/{counters} counters)")
            }
            Check::Unverified(_) => "UNVERIFIED".to_owned(),
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Check::Ok { .. } => "ok",
            Check::Mismatch { .. } => "MISMATCH",
            Check::Unverified(_) => "UNVERIFIED",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Check::Ok {
                counters,
                ambiguous: 0,
            } => write!(f, "ok ({counters} counters exact)"),
            Check::Ok {
                counters,
                ambiguous,
            } => {
                write!(
                    f,
                    "ok ({counters} counters; {ambiguous} failed increments within bounds)"
                )
            }
            Check::Mismatch {
                bad,
                counters,
                examples,
            } => {
                write!(
                    f,
                    "MISMATCH: {bad} of {counters} counters wrong; e.g. {}",
                    examples.join("; ")
                )
            }
            Check::Unverified(e) => write!(f, "UNVERIFIED: could not read counters back: {e}"),
        }
    }
}

/// One scenario's figures; serialised as its JSON line.
#[derive(Serialize)]
pub struct ScenarioReport {
    pub bench: &'static str,
    pub scenario: String,
    /// `--url` as given, or "roost dev".
    pub target: String,
    /// Build profile of this load generator: "release" (`cargo bench`) or
    /// "debug" (a dev-profile build run by hand; its figures are not
    /// comparable).
    pub client_profile: &'static str,
    /// Counter-name prefix of this run.
    pub run_id: String,
    pub clients: usize,
    pub counters: usize,
    pub warmup_s: f64,
    /// Measured window actually elapsed (slightly over --duration).
    pub window_s: f64,
    /// Acknowledged increments in the measured window.
    pub acked: u64,
    pub incr_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Failed increments in the measured window (http + transport).
    pub errors: u64,
    pub errors_http: u64,
    pub errors_transport: u64,
    pub warmup_acked: u64,
    pub warmup_errors: u64,
    /// "ok", "MISMATCH" or "UNVERIFIED".
    pub check: &'static str,
    pub check_detail: String,
    /// The check itself (its label and detail are the serialised fields).
    #[serde(skip)]
    pub check_result: Check,
}

fn round(v: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (v * scale).round() / scale
}

/// Nearest-rank percentile of sorted µs latencies, in ms (0 when empty).
fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = (p / 100.0 * sorted_us.len() as f64).ceil() as usize;
    let idx = rank.clamp(1, sorted_us.len()) - 1;
    f64::from(sorted_us[idx]) / 1000.0
}

impl ScenarioReport {
    pub fn new(target: &str, plan: &Plan, o: &Outcome, check: Check) -> Self {
        let window_s = o.window.as_secs_f64();
        let lat = &o.latencies_us;
        ScenarioReport {
            bench: "load",
            scenario: plan.scenario.to_string(),
            target: target.to_owned(),
            client_profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            run_id: plan.run_id.clone(),
            clients: plan.clients,
            counters: plan.counters,
            warmup_s: plan.warmup.as_secs_f64(),
            window_s: round(window_s, 3),
            acked: o.acked,
            incr_per_s: if window_s > 0.0 {
                round(o.acked as f64 / window_s, 1)
            } else {
                0.0
            },
            p50_ms: percentile_ms(lat, 50.0),
            p90_ms: percentile_ms(lat, 90.0),
            p99_ms: percentile_ms(lat, 99.0),
            max_ms: lat.last().map_or(0.0, |&us| f64::from(us) / 1000.0),
            errors: o.errors.total(),
            errors_http: o.errors.http,
            errors_transport: o.errors.transport,
            warmup_acked: o.warmup_acked,
            warmup_errors: o.warmup_errors.total(),
            check: check.label(),
            check_detail: check.to_string(),
            check_result: check,
        }
    }

    pub fn json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// Print up to `limit` distinct error messages seen in a scenario.
pub fn print_errors(scenario: &str, samples: &[String], limit: usize) {
    let mut seen: Vec<&String> = Vec::new();
    for s in samples {
        if !seen.contains(&s) {
            seen.push(s);
        }
    }
    for s in seen.iter().take(limit) {
        eprintln!("load: {scenario}: error: {s}");
    }
}

/// The compact human table (stdout).
pub fn print_table(reports: &[ScenarioReport]) {
    println!();
    println!(
        "{:<8} {:>7} {:>8} {:>11} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10}  check",
        "scenario",
        "clients",
        "counters",
        "incr/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "errors",
        "acked"
    );
    for r in reports {
        println!(
            "{:<8} {:>7} {:>8} {:>11.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8} {:>10}  {}",
            r.scenario,
            r.clients,
            r.counters,
            r.incr_per_s,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.max_ms,
            r.errors,
            r.acked,
            r.check_result.short()
        );
    }
    println!();
}

/// The figures of one scenario run against one target, for the scenarios
/// beyond the counters (and the counters too, once converted): named
/// values, a correctness verdict and notes. Serialised as its JSON line.
#[derive(Serialize, Clone, Debug)]
pub struct Figures {
    pub bench: &'static str,
    /// e.g. "chat", "cold-1MiB", "failover".
    pub scenario: String,
    /// "roost dev", "roost cluster", "workerd", "etcd", or a `--url`.
    pub target: String,
    pub client_profile: &'static str,
    /// Named figures, in the order they were added.
    pub values: Vec<(String, f64)>,
    /// `None` when the run's own checks passed; else what failed.
    pub problem: Option<String>,
    /// What the figures mean or how they were obtained.
    pub notes: Vec<String>,
}

impl Figures {
    pub fn new(scenario: impl Into<String>, target: impl Into<String>) -> Self {
        Figures {
            bench: "load",
            scenario: scenario.into(),
            target: target.into(),
            client_profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            values: Vec::new(),
            problem: None,
            notes: Vec::new(),
        }
    }

    pub fn set(&mut self, name: &str, value: f64) -> &mut Self {
        self.values.push((name.to_owned(), value));
        self
    }

    /// Adds what serving the run cost: `cpu_cores` (CPU-seconds per second
    /// of `window`, of every process serving) and `cpu_ms_per_write`
    /// (CPU-milliseconds per acknowledged write).
    pub fn cpu(&mut self, cpu_seconds: f64, writes: u64, window: Duration) -> &mut Self {
        let secs = window.as_secs_f64();
        if secs > 0.0 {
            self.set("cpu_cores", cpu_seconds / secs);
        }
        if writes > 0 {
            self.set("cpu_ms_per_write", cpu_seconds * 1000.0 / writes as f64);
        }
        self
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.values.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// Adds `{prefix}p50_ms`, `p99_ms` and `max_ms` from sorted µs samples.
    pub fn latencies(&mut self, prefix: &str, sorted_us: &[u32]) -> &mut Self {
        self.set(&format!("{prefix}p50_ms"), percentile_ms(sorted_us, 50.0));
        self.set(&format!("{prefix}p99_ms"), percentile_ms(sorted_us, 99.0));
        self.set(
            &format!("{prefix}max_ms"),
            sorted_us.last().map_or(0.0, |&us| f64::from(us) / 1000.0),
        )
    }

    pub fn fail(&mut self, problem: impl Into<String>) {
        let p = problem.into();
        self.problem = Some(match self.problem.take() {
            Some(old) => format!("{old}; {p}"),
            None => p,
        });
    }

    pub fn json_line(&self) -> String {
        let mut v = serde_json::json!({
            "bench": self.bench,
            "scenario": self.scenario,
            "target": self.target,
            "client_profile": self.client_profile,
            "problem": self.problem,
            "notes": self.notes,
        });
        for (name, value) in &self.values {
            v[name] = serde_json::json!(round(*value, 3));
        }
        v.to_string()
    }

    /// The counter scenarios' report as figures.
    pub fn from_counters(r: &ScenarioReport, target: &str) -> Figures {
        let mut f = Figures::new(format!("counters-{}", r.scenario), target);
        f.set("clients", r.clients as f64)
            .set("counters", r.counters as f64)
            .set("incr_per_s", r.incr_per_s)
            .set("p50_ms", r.p50_ms)
            .set("p90_ms", r.p90_ms)
            .set("p99_ms", r.p99_ms)
            .set("max_ms", r.max_ms)
            .set("errors", r.errors as f64);
        if !matches!(r.check_result, Check::Ok { .. }) {
            f.fail(r.check_detail.clone());
        }
        if r.acked == 0 {
            f.fail("no acknowledged increment");
        }
        f
    }
}

/// Sorts µs samples and returns them (helper for the scenario modules).
pub fn sorted(mut v: Vec<u32>) -> Vec<u32> {
    v.sort_unstable();
    v
}

/// A duration in µs, saturating, as the scenarios record latencies.
pub fn micros(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// The generic figures, one block per run (stdout).
pub fn print_figures(all: &[Figures]) {
    for f in all {
        let values: Vec<String> = f
            .values
            .iter()
            .map(|(n, v)| format!("{n}={}", round(*v, 3)))
            .collect();
        println!("{:<16} {:<14} {}", f.scenario, f.target, values.join(" "));
        if let Some(p) = &f.problem {
            println!("{:<16} {:<14} PROBLEM: {p}", "", "");
        }
    }
}
