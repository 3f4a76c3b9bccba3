//! BENCHMARKS.md: the machine, the command, one table per scenario with
//! Roost's figure beside its peer's from the same run and their ratio, and
//! each target of issue 6 as met or not met.
//!
//! Owns: the document's layout and the targets' thresholds. It reads only
//! the figures it is given (and the clock, for the date).

use std::fmt::Write;

use crate::report::Figures;
use crate::{Args, Settings, sys};

fn find<'a>(all: &'a [Figures], scenario: &str, target: &str) -> Option<&'a Figures> {
    all.iter()
        .find(|f| f.scenario == scenario && f.target == target)
}

fn val(f: Option<&Figures>, name: &str) -> Option<f64> {
    f.and_then(|f| f.get(name))
}

fn num(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "—".into(),
    }
}

fn date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// A table comparing `metrics` of (scenario a on target a) with (scenario
/// b on target b).
fn compare(
    out: &mut String,
    all: &[Figures],
    (sa, ta): (&str, &str),
    (sb, tb): (&str, &str),
    metrics: &[(&str, &str, &str)],
) {
    let (a, b) = (find(all, sa, ta), find(all, sb, tb));
    let _ = writeln!(out, "| metric | {ta} | {tb} | ratio ({ta} ÷ {tb}) |");
    let _ = writeln!(out, "|---|---:|---:|---:|");
    for (label, ma, mb) in metrics {
        let (x, y) = (val(a, ma), val(b, mb));
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} |",
            num(x),
            num(y),
            ratio(x, y)
        );
    }
    let _ = writeln!(out);
}

/// A two-column table of every figure of one run.
fn listing(out: &mut String, f: Option<&Figures>) {
    let Some(f) = f else {
        let _ = writeln!(out, "Not measured in this run.\n");
        return;
    };
    let _ = writeln!(out, "| figure | {} |", f.target);
    let _ = writeln!(out, "|---|---:|");
    for (n, v) in &f.values {
        let _ = writeln!(out, "| {n} | {} |", num(Some(*v)));
    }
    let _ = writeln!(out);
}

struct Goal {
    what: &'static str,
    measured: String,
    met: Option<bool>,
}

fn goals(all: &[Figures]) -> Vec<Goal> {
    let mut g = Vec::new();
    let cl_many = find(all, "counters-many", "roost cluster");
    let etcd = find(all, "etcd-put", "etcd");
    let (rate, p99, etcd_rate) = (
        val(cl_many, "incr_per_s"),
        val(cl_many, "p99_ms"),
        val(etcd, "puts_per_s"),
    );
    g.push(Goal {
        what: "3 nodes + edge, 64 clients, 1,000 counters: ≥ 2× etcd's replicated writes/s, p99 ≤ 20 ms",
        measured: format!(
            "{} incr/s = {} etcd's {} puts/s; p99 {} ms",
            num(rate),
            ratio(rate, etcd_rate),
            num(etcd_rate),
            num(p99)
        ),
        met: match (rate, etcd_rate, p99) {
            (Some(r), Some(e), Some(p)) => Some(r >= 2.0 * e && p <= 20.0),
            _ => None,
        },
    });
    let hot = val(find(all, "counters-hot", "roost cluster"), "incr_per_s");
    g.push(Goal {
        what: "one hot counter through the edge: ≥ 10,000 acknowledged increments/s",
        measured: format!("{} incr/s", num(hot)),
        met: hot.map(|h| h >= 10_000.0),
    });
    for (sc, label) in [
        ("counters-many", "many counters"),
        ("counters-hot", "one hot counter"),
    ] {
        let (r, w) = (
            val(find(all, sc, "roost dev"), "incr_per_s"),
            val(find(all, sc, "workerd"), "incr_per_s"),
        );
        g.push(Goal {
            what: if sc == "counters-many" {
                "`roost dev` vs the seed on workerd: ≥ 5× the increments/s (many counters)"
            } else {
                "`roost dev` vs the seed on workerd: ≥ 5× the increments/s (one hot counter)"
            },
            measured: format!("{} vs {} incr/s ({label}): {}", num(r), num(w), ratio(r, w)),
            met: match (r, w) {
                (Some(r), Some(w)) if w > 0.0 => Some(r >= 5.0 * w),
                _ => None,
            },
        });
    }
    let (r, w) = (
        val(find(all, "chat", "roost dev"), "deliveries_per_s"),
        val(find(all, "chat", "workerd"), "deliveries_per_s"),
    );
    g.push(Goal {
        what: "`roost dev` vs the seed on workerd: ≥ 5× the chat deliveries/s",
        measured: format!("{} vs {} deliveries/s: {}", num(r), num(w), ratio(r, w)),
        met: match (r, w) {
            (Some(r), Some(w)) if w > 0.0 => Some(r >= 5.0 * w),
            _ => None,
        },
    });
    let fo = find(all, "failover", "roost cluster");
    let (med, max) = (val(fo, "recovery_p50_ms"), val(fo, "recovery_max_ms"));
    g.push(Goal {
        what: "failover: affected objects writable again ≤ 1.5 s after SIGKILL of their leader",
        measured: format!("median {} ms, max {} ms", num(med), num(max)),
        met: max.map(|m| m <= 1500.0),
    });
    let cold = find(all, "cold-1MiB", "roost dev");
    let (a50, a99) = (val(cold, "activate_p50_ms"), val(cold, "activate_p99_ms"));
    let (c50, c99) = (val(cold, "cold_p50_ms"), val(cold, "cold_p99_ms"));
    g.push(Goal {
        what: "cold activation of an object with 1 MiB of state ≤ 10 ms (judged on the p99 of a \
               first request that activates it; a first request reading all 1 MiB shown beside)",
        measured: format!(
            "activation p50 {} ms, p99 {} ms; reading all of it: p50 {} ms, p99 {} ms",
            num(a50),
            num(a99),
            num(c50),
            num(c99)
        ),
        met: a99.map(|c| c <= 10.0),
    });
    let sock =
        find(all, "idle-sockets", "roost cluster").or(find(all, "idle-sockets", "roost dev"));
    let n = val(sock, "sockets");
    let (rss, measured) = match n {
        Some(n) if n >= 50_000.0 => (
            val(sock, "edge_rss_mib"),
            format!(
                "{} MiB at {} sockets",
                num(val(sock, "edge_rss_mib")),
                num(Some(n))
            ),
        ),
        _ => (
            val(sock, "edge_rss_at_50k_mib"),
            format!(
                "{} MiB extrapolated from {} sockets ({} KiB each)",
                num(val(sock, "edge_rss_at_50k_mib")),
                num(n),
                num(val(sock, "edge_kib_per_socket"))
            ),
        ),
    };
    g.push(Goal {
        what: "an edge holds 50,000 idle WebSockets in ≤ 1 GiB RSS",
        measured,
        met: rss.map(|r| r <= 1024.0),
    });
    g
}

pub fn render(all: &[Figures], args: &Args, s: &Settings) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# Benchmarks\n");
    let _ = writeln!(
        o,
        "Regenerated by `make bench` (`scripts/bench.sh`); do not edit by hand. \
         The machine is shared and absolute figures drift between runs: compare the \
         ratios, each measured in this same run.\n"
    );
    let _ = writeln!(o, "- Date: {}", date());
    let _ = writeln!(o, "- Machine: {}", sys::machine());
    if let Some(c) = &args.command {
        let _ = writeln!(o, "- Command: `{c}`");
    }
    let profile = all.first().map_or("release", |f| f.client_profile);
    let _ = writeln!(
        o,
        "- Load generator build: {profile}; {} clients, {:.1} s measured after {:.1} s warmup per load scenario",
        s.clients,
        s.duration.as_secs_f64(),
        s.warmup.as_secs_f64()
    );
    let _ = writeln!(
        o,
        "- Peers: the seed app on workerd (`/work/shared/peer/start.sh`, one process, SQLite on the same disk, not replicated); \
         etcd from Debian's etcd-server (3 members on loopback, same disk)\n"
    );

    let _ = writeln!(
        o,
        "- Roost cluster: 3 `roost node` + 1 `roost edge` on loopback with mutual TLS on every \
         gRPC hop (the default); its counters also over plain gRPC (`--insecure`), below, for TLS's cost\n"
    );
    let _ = writeln!(o, "## Targets (issue 6)\n");
    let _ = writeln!(o, "| target | measured | met |");
    let _ = writeln!(o, "|---|---|---|");
    for g in goals(all) {
        let met = match g.met {
            Some(true) => "met",
            Some(false) => "**not met**",
            None => "not measured",
        };
        let _ = writeln!(o, "| {} | {} | {met} |", g.what, g.measured);
    }
    let _ = writeln!(o);

    let counter_metrics = [
        ("increments/s", "incr_per_s", "incr_per_s"),
        ("p50 ms", "p50_ms", "p50_ms"),
        ("p99 ms", "p99_ms", "p99_ms"),
        ("max ms", "max_ms", "max_ms"),
        ("errors", "errors", "errors"),
    ];
    let _ = writeln!(o, "## Counters: `roost dev` vs the seed on workerd\n");
    for sc in ["counters-many", "counters-hot"] {
        let _ = writeln!(o, "### {sc}\n");
        compare(
            &mut o,
            all,
            (sc, "roost dev"),
            (sc, "workerd"),
            &counter_metrics,
        );
    }
    let _ = writeln!(
        o,
        "## Replicated writes: 3-node cluster through the edge vs etcd\n"
    );
    compare(
        &mut o,
        all,
        ("counters-many", "roost cluster"),
        ("etcd-put", "etcd"),
        &[
            ("writes/s", "incr_per_s", "puts_per_s"),
            ("p50 ms", "p50_ms", "p50_ms"),
            ("p99 ms", "p99_ms", "p99_ms"),
            ("max ms", "max_ms", "max_ms"),
            ("errors", "errors", "errors"),
            (
                "CPU-ms per acknowledged write (all processes: 3 nodes + edge; 3 members)",
                "cpu_ms_per_write",
                "cpu_ms_per_write",
            ),
            ("CPU cores busy", "cpu_cores", "cpu_cores"),
        ],
    );
    let _ = writeln!(o, "### One hot counter through the edge\n");
    listing(&mut o, find(all, "counters-hot", "roost cluster"));
    let _ = writeln!(
        o,
        "## What mutual TLS costs: the same cluster over plain gRPC\n\n\
         Every other cluster figure in this document is measured with mutual TLS on \
         every gRPC hop (edge → node, node ↔ node), as `roost node` and `roost edge` \
         run by default. These are the same counters on a cluster started with \
         `--insecure`, in the same run.\n"
    );
    for sc in ["counters-many", "counters-hot"] {
        let _ = writeln!(o, "### {sc}: mutual TLS vs plain gRPC\n");
        compare(
            &mut o,
            all,
            (sc, "roost cluster"),
            (sc, "roost cluster, plaintext"),
            &counter_metrics,
        );
    }
    let idle: Vec<&Figures> = all
        .iter()
        .filter(|f| f.scenario.starts_with("idle-cpu-"))
        .collect();
    if !idle.is_empty() {
        let _ = writeln!(
            o,
            "## An idle cluster's CPU by shard count\n\n\
             3 nodes and an edge (mutual TLS) with no request at all, after they formed, \
             settled and every shard quiesced (`raft.quiesce_ms = 2000`, the default: \
             no heartbeats; one ping per pair of nodes stands in for them): CPU time of the four processes over the window, \
             in % of one core.\n"
        );
        let _ = writeln!(
            o,
            "| shards | startup s | all quiet after s | nodes % | edge % | total % of a core |"
        );
        let _ = writeln!(o, "|---:|---:|---:|---:|---:|---:|");
        for f in idle {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} |",
                num(f.get("shards")),
                num(f.get("startup_s")),
                num(f.get("quiet_after_s")),
                num(f.get("nodes_cpu_pct")),
                num(f.get("edge_cpu_pct")),
                num(f.get("total_cpu_pct"))
            );
        }
        let _ = writeln!(o);
    }
    let _ = writeln!(o, "## Chat fan-out: `roost dev` vs the seed on workerd\n");
    compare(
        &mut o,
        all,
        ("chat", "roost dev"),
        ("chat", "workerd"),
        &[
            ("deliveries/s", "deliveries_per_s", "deliveries_per_s"),
            ("messages sent/s", "messages_per_s", "messages_per_s"),
            ("broadcast p50 ms", "p50_ms", "p50_ms"),
            ("broadcast p99 ms", "p99_ms", "p99_ms"),
            ("broadcast max ms", "max_ms", "max_ms"),
            ("missing deliveries", "missing", "missing"),
            ("order mismatches", "order_mismatches", "order_mismatches"),
        ],
    );
    let _ = writeln!(o, "## Cold activation (Roost only)\n");
    let _ = writeln!(
        o,
        "| state | objects | activation p50 ms | activation p99 ms | cold read-all p50 ms | \
         cold read-all p99 ms | cold read-all max ms | warm read-all p50 ms | response bytes |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for label in ["1KiB", "100KiB", "1MiB"] {
        let f = find(all, &format!("cold-{label}"), "roost dev");
        let _ = writeln!(
            o,
            "| {label} | {} | {} | {} | {} | {} | {} | {} | {} |",
            num(val(f, "objects")),
            num(val(f, "activate_p50_ms")),
            num(val(f, "activate_p99_ms")),
            num(val(f, "cold_p50_ms")),
            num(val(f, "cold_p99_ms")),
            num(val(f, "cold_max_ms")),
            num(val(f, "warm_p50_ms")),
            num(val(f, "history_body_bytes")),
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "## Failover (Roost only)\n");
    listing(&mut o, find(all, "failover", "roost cluster"));
    let _ = writeln!(o, "## Idle WebSockets (Roost only)\n");
    listing(
        &mut o,
        find(all, "idle-sockets", "roost cluster").or(find(all, "idle-sockets", "roost dev")),
    );

    let _ = writeln!(o, "## How each figure is measured\n");
    let mut seen = Vec::new();
    for f in all {
        for n in &f.notes {
            let line = format!("- {} ({}): {n}", f.scenario, f.target);
            if !seen.contains(&line) {
                seen.push(line);
            }
        }
    }
    for line in &seen {
        let _ = writeln!(o, "{line}");
    }
    let _ = writeln!(o);
    let problems: Vec<&Figures> = all.iter().filter(|f| f.problem.is_some()).collect();
    let _ = writeln!(o, "## Problems in this run\n");
    if problems.is_empty() {
        let _ = writeln!(o, "None: every correctness check passed.");
    }
    for f in problems {
        let _ = writeln!(
            o,
            "- {} on {}: {}",
            f.scenario,
            f.target,
            f.problem.as_deref().unwrap_or_default()
        );
    }
    o
}
