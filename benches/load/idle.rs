//! What an idle cluster costs, by shard count: 3 nodes and an edge (mutual
//! TLS, as deployed) started with N shards and left without a single
//! request; the CPU time the four processes use over a window, as a
//! percentage of one core, read from `/proc/PID/stat` (utime + stime). Each
//! shard is its own Raft group whose leader heartbeats its followers, so
//! this is the per-group overhead a multi-Raft design has to remove.
//!
//! Owns: the sampling. The cluster comes from `cluster.rs`.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::report::Figures;
use crate::sys;

/// Idle time after the cluster has formed and spread its leaders, before
/// the window: joins and leadership claims have settled.
const SETTLE: Duration = Duration::from_secs(5);
/// `raft.quiesce_ms` of the measured clusters (the default, set explicitly).
const QUIESCE_MS: &str = "2000";
/// How long the shards get to quiesce after that (`raft.quiesce_ms`).
const QUIET_WITHIN: Duration = Duration::from_secs(120);

/// Starts a cluster with `shards` shards, waits for it to settle, and
/// measures its CPU over `window`.
pub async fn run(bin: &Path, shards: u16, window: Duration, spread: Duration) -> Figures {
    let mut f = Figures::new(format!("idle-cpu-{shards}"), "roost cluster");
    let started = Instant::now();
    // Quiescence is what this measures; it is off by default.
    let quiet = [("ROOST_RAFT_QUIESCE_MS", QUIESCE_MS)];
    let c = match Cluster::start_env(bin, 3, shards, spread, true, &quiet).await {
        Ok(c) => c,
        Err(e) => {
            f.fail(format!("cluster with {shards} shards: {e}"));
            return f;
        }
    };
    f.set("shards", f64::from(shards));
    f.set("startup_s", started.elapsed().as_secs_f64());
    tokio::time::sleep(SETTLE).await;
    // Measured once every shard is quiet (the steady state of an idle
    // cluster); how long that took after SETTLE is reported beside it.
    let http = reqwest::Client::new();
    match c.wait_quiet(&http, shards, QUIET_WITHIN).await {
        Ok(took) => {
            f.set("quiet_after_s", took.as_secs_f64());
        }
        Err(e) => f
            .notes
            .push(format!("measured before every shard was quiet: {e}")),
    }
    let nodes = c.node_pids();
    let edge = c.edge_pid();
    let sample = || {
        let n = sys::cpu_seconds_of(&nodes);
        let e = edge.and_then(sys::cpu_seconds);
        (n, e)
    };
    let (n0, e0) = sample();
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let (n1, e1) = sample();
    let secs = t0.elapsed().as_secs_f64();
    match (n0, n1, e0, e1) {
        (Some(n0), Some(n1), Some(e0), Some(e1)) => {
            let nodes_pct = (n1 - n0) / secs * 100.0;
            let edge_pct = (e1 - e0) / secs * 100.0;
            f.set("nodes_cpu_pct", nodes_pct);
            f.set("edge_cpu_pct", edge_pct);
            f.set("total_cpu_pct", nodes_pct + edge_pct);
            f.set("window_s", secs);
        }
        _ => f.fail("cannot read the processes' CPU time from /proc"),
    }
    c.stop().await;
    f
}
