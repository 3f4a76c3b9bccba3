//! Failover: increments on many counters through the edge (one closed-loop
//! client per counter), SIGKILL of the node leading the most shards, and
//! how long the counters of its shards stayed unwritable.
//!
//! Per affected counter (its shard was led by the killed node just before
//! the kill): recovery = kill → completion of its first acknowledged
//! increment that was sent after the kill; error window = first failure →
//! last failure its clients saw. Both are reported as median and max. The
//! counters are read back afterwards: acknowledged ≤ value ≤ acknowledged +
//! failed, as in the counters' own check.
//!
//! Owns: the load during the kill and those figures. It never prints.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use roost::id::ObjectId;

use crate::cluster::Cluster;
use crate::report::Figures;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Pause after a failed request, so a failing edge is not spun on.
const BACKOFF: Duration = Duration::from_millis(10);
/// Load kept up after the last affected counter recovered.
const TAIL: Duration = Duration::from_secs(1);

/// What the clients share: when to stop, when the kill happened, and
/// which counters have had a write acknowledged since.
struct Shared {
    stop: AtomicBool,
    kill: OnceLock<Instant>,
    recovered: Vec<AtomicBool>,
}

pub struct FailoverPlan {
    pub run_id: String,
    pub clients: usize,
    pub counters: usize,
    /// Load before the kill.
    pub before: Duration,
    /// Longest load after the kill (it ends earlier once every affected
    /// counter has recovered and 1 s passed).
    pub after: Duration,
}

#[derive(Clone, Copy)]
struct Op {
    counter: usize,
    start: Instant,
    end: Instant,
    value: Option<i64>,
}

fn name(run_id: &str, i: usize) -> String {
    format!("failover-{run_id}-{i}")
}

pub async fn run(
    http: &reqwest::Client,
    cluster: &mut Cluster,
    plan: &FailoverPlan,
    target: &str,
) -> Figures {
    let mut fig = Figures::new("failover", target);
    if let Err(e) = run_inner(http, cluster, plan, &mut fig).await {
        fig.fail(e);
    }
    fig
}

async fn run_inner(
    http: &reqwest::Client,
    cluster: &mut Cluster,
    plan: &FailoverPlan,
    fig: &mut Figures,
) -> Result<(), String> {
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        kill: OnceLock::new(),
        recovered: (0..plan.counters).map(|_| AtomicBool::new(false)).collect(),
    });
    let mut tasks = Vec::new();
    for c in 0..plan.clients {
        let (http, shared) = (http.clone(), shared.clone());
        let urls: Vec<(usize, String)> = (c..plan.counters)
            .step_by(plan.clients)
            .map(|i| {
                let url = format!(
                    "{}/counter/{}/increment",
                    cluster.edge_url,
                    name(&plan.run_id, i)
                );
                (i, url)
            })
            .collect();
        tasks.push(tokio::spawn(client(http, urls, shared)));
    }
    tokio::time::sleep(plan.before).await;
    let leaders = cluster.leaders().await;
    let mut led: std::collections::BTreeMap<u64, usize> = Default::default();
    for node in leaders.values() {
        *led.entry(*node).or_default() += 1;
    }
    let Some((&victim, &shards_led)) = led.iter().max_by_key(|(_, n)| **n) else {
        shared.stop.store(true, Ordering::Relaxed);
        return Err("no shard has a leader before the kill".into());
    };
    let affected: Vec<usize> = (0..plan.counters)
        .filter(|&i| {
            let shard =
                ObjectId::from_name("COUNTER", &name(&plan.run_id, i)).shard(cluster.shards);
            leaders.get(&u32::from(shard)) == Some(&victim)
        })
        .collect();
    let kill = Instant::now();
    let _ = shared.kill.set(kill);
    let killed = cluster.kill9(victim).await;
    let kill_took = kill.elapsed();
    // Keep the load up until every affected counter took a write (then
    // TAIL more), or `after` passed; the figures are computed afterwards.
    let mut all_back: Option<Instant> = None;
    while killed.is_ok() && kill.elapsed() < plan.after {
        if all_back.is_none()
            && affected
                .iter()
                .all(|&i| shared.recovered[i].load(Ordering::Relaxed))
        {
            all_back = Some(Instant::now());
        }
        if all_back.is_some_and(|t| t.elapsed() >= TAIL) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shared.stop.store(true, Ordering::Relaxed);
    killed?;
    let mut ops = Vec::new();
    for t in tasks {
        ops.extend(t.await.map_err(|e| format!("client task: {e}"))?);
    }

    let mut recovery = Vec::new();
    let mut windows = Vec::new();
    let mut unrecovered = 0usize;
    for &c in &affected {
        let mine: Vec<&Op> = ops.iter().filter(|o| o.counter == c).collect();
        match mine
            .iter()
            .filter(|o| o.start >= kill && o.value.is_some())
            .map(|o| o.end)
            .min()
        {
            Some(end) => recovery.push(end.duration_since(kill)),
            None => unrecovered += 1,
        }
        let failures: Vec<&&Op> = mine.iter().filter(|o| o.value.is_none()).collect();
        let first = failures.iter().map(|o| o.start).min();
        let last = failures.iter().map(|o| o.end).max();
        windows.push(match (first, last) {
            (Some(f), Some(l)) => l.duration_since(f),
            _ => Duration::ZERO,
        });
    }
    let all_failures: Vec<&Op> = ops.iter().filter(|o| o.value.is_none()).collect();
    let overall = match (
        all_failures.iter().map(|o| o.start).min(),
        all_failures.iter().map(|o| o.end).max(),
    ) {
        (Some(f), Some(l)) => l.duration_since(f),
        _ => Duration::ZERO,
    };
    recovery.sort();
    windows.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = |v: &[Duration]| {
        v.get(v.len().saturating_sub(1) / 2)
            .copied()
            .map_or(0.0, ms)
    };
    let max = |v: &[Duration]| v.last().copied().map_or(0.0, ms);
    let acked = ops.iter().filter(|o| o.value.is_some()).count();
    fig.set("clients", plan.clients as f64)
        .set("counters", plan.counters as f64)
        .set("shards", f64::from(cluster.shards))
        .set("killed_node", victim as f64)
        .set("shards_led", shards_led as f64)
        .set("affected_counters", affected.len() as f64)
        .set("recovery_p50_ms", median(&recovery))
        .set("recovery_max_ms", max(&recovery))
        .set("error_window_p50_ms", median(&windows))
        .set("error_window_max_ms", max(&windows))
        .set("error_window_all_ms", ms(overall))
        .set("failed_requests", all_failures.len() as f64)
        .set("acked", acked as f64)
        .set("kill_ms", ms(kill_took));
    fig.notes.push(
        "recovery = SIGKILL → first acknowledged increment sent after it, per counter of the \
         killed leader's shards; error window = first → last failed request of that counter"
            .into(),
    );
    if affected.is_empty() {
        fig.fail("no counter was on the killed node's shards");
    }
    if unrecovered > 0 {
        fig.fail(format!(
            "{unrecovered} affected counters had no acknowledged write within {:?} after the kill",
            plan.after
        ));
    }
    if let Err(e) = check(http, &cluster.edge_url, plan, &ops).await {
        fig.fail(e);
    }
    Ok(())
}

/// One closed-loop client over its counters, round-robin, until `stop`.
async fn client(http: reqwest::Client, urls: Vec<(usize, String)>, shared: Arc<Shared>) -> Vec<Op> {
    let mut ops = Vec::new();
    if urls.is_empty() {
        return ops;
    }
    let mut k = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        let (counter, url) = &urls[k % urls.len()];
        k += 1;
        let start = Instant::now();
        let value = match http.post(url).timeout(REQUEST_TIMEOUT).send().await {
            Ok(r) if r.status() == reqwest::StatusCode::OK => r
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|v| v["value"].as_i64()),
            _ => None,
        };
        if value.is_some()
            && let Some(kill) = shared.kill.get()
            && start >= *kill
        {
            shared.recovered[*counter].store(true, Ordering::Relaxed);
        }
        ops.push(Op {
            counter: *counter,
            start,
            end: Instant::now(),
            value,
        });
        if value.is_none() {
            tokio::time::sleep(BACKOFF).await;
        }
    }
    ops
}

/// Every counter holds between its acknowledged and its attempted
/// increments, and no two acknowledgements answered the same value.
async fn check(
    http: &reqwest::Client,
    edge: &str,
    plan: &FailoverPlan,
    ops: &[Op],
) -> Result<(), String> {
    let mut bad = Vec::new();
    for i in 0..plan.counters {
        let mine: Vec<&Op> = ops.iter().filter(|o| o.counter == i).collect();
        let acked = mine.iter().filter(|o| o.value.is_some()).count() as i64;
        let failed = mine.len() as i64 - acked;
        let mut values: Vec<i64> = mine.iter().filter_map(|o| o.value).collect();
        values.sort_unstable();
        let url = format!("{edge}/counter/{}", name(&plan.run_id, i));
        let mut value = None;
        for _ in 0..5 {
            if let Ok(r) = http.get(&url).timeout(REQUEST_TIMEOUT).send().await
                && r.status() == reqwest::StatusCode::OK
                && let Ok(v) = r.json::<serde_json::Value>().await
            {
                value = v["value"].as_i64();
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let Some(value) = value else {
            return Err(format!("cannot read {url} back"));
        };
        if value < acked || value > acked + failed || values.windows(2).any(|w| w[0] == w[1]) {
            bad.push(format!(
                "counter {i}: value {value}, acked {acked}, failed {failed}"
            ));
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "MISMATCH on {} counters, e.g. {}",
            bad.len(),
            bad[0]
        ))
    }
}
