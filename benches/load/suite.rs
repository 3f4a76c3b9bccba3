//! Running the chosen scenarios against their targets, in an order that
//! keeps at most one Roost deployment (plus the peers) running at a time:
//! `roost dev` (or `--url`, or `--peer-url`) for counters, chat and idle
//! sockets; a `roost dev` with a short idle timeout for cold activation;
//! etcd; then a 3-node cluster over mutual TLS for counters, idle sockets
//! and failover; then (in --suite runs, or with --plaintext) the same
//! cluster over plain gRPC for the counters, to report what TLS costs;
//! then idle clusters of each --idle-shards count, one at a time.
//!
//! Owns: the targets' lifetimes and the verdict (all checks passed, or
//! not). It never measures anything itself.

use std::path::PathBuf;
use std::time::Duration;

use crate::chat::{self, ChatPlan};
use crate::cluster::Cluster;
use crate::cold::{self, ColdPlan};
use crate::etcd::{self, Etcd, EtcdPlan};
use crate::failover::{self, FailoverPlan};
use crate::idle;
use crate::report::{self, Check, Figures, ScenarioReport};
use crate::server::RoostDev;
use crate::sockets::{self, SocketsPlan};
use crate::workload::{self, Plan, Scenario};
use crate::{Args, ScenarioArg, Settings, markdown, sys};

/// File descriptors kept for everything but idle sockets, per process.
const SPARE_FDS: u64 = 1024;

/// The idle timeout of the `roost dev` the cold scenario starts, in ms.
const COLD_IDLE_TIMEOUT_MS: u64 = 300;

/// A server speaking the seed app's contract.
struct Target {
    label: String,
    base: String,
    /// The process serving clients, when started here.
    edge_pid: Option<u32>,
    /// The processes running objects, when not the edge.
    owner_pids: Vec<u32>,
}

/// Runs everything; `Ok(false)` when some check failed.
pub async fn run(args: &Args, s: &Settings) -> Result<bool, String> {
    let has = |x: ScenarioArg| s.scenarios.contains(&x);
    let bin = sys::roost_bin(args.roost_bin.as_deref())?;
    // The bench holds one end of each idle socket and the server (which
    // inherits this limit) the other, plus what each needs besides.
    let mut socket_cap = s.sockets;
    if has(ScenarioArg::Sockets) {
        let want = s.sockets as u64 + SPARE_FDS;
        match sys::raise_nofile(want) {
            Ok(n) if n < want => {
                socket_cap = n.saturating_sub(SPARE_FDS) as usize;
                eprintln!(
                    "load: the open-file limit is {n} (its hard limit cannot be raised here): \
                     idle sockets capped at {socket_cap}"
                );
            }
            Ok(_) => {}
            Err(e) => eprintln!("load: cannot raise the open-file limit: {e}"),
        }
    }
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(s.clients.max(64))
        .tcp_nodelay(true)
        .timeout(s.timeout)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let run_id = args.run_id.clone().unwrap_or_else(workload::run_id);
    let mut all: Vec<Figures> = Vec::new();
    let mut ok = true;

    let on_cluster = args.cluster || args.suite;
    let dev_counters = (has(ScenarioArg::Hot) || has(ScenarioArg::Many)) && !args.cluster;
    let dev_chat = has(ScenarioArg::Chat);
    let dev_sockets = has(ScenarioArg::Sockets) && !on_cluster;
    if dev_counters || dev_chat || dev_sockets {
        let mut targets = Vec::new();
        let mut dev = None;
        match &args.url {
            Some(url) => targets.push(Target {
                label: url.clone(),
                base: url.trim_end_matches('/').to_owned(),
                edge_pid: None,
                owner_pids: Vec::new(),
            }),
            None => {
                let d = RoostDev::start(&bin, &[])
                    .await
                    .map_err(|e| e.to_string())?;
                eprintln!(
                    "load: started roost dev at {} (temp dir {})",
                    d.base_url(),
                    d.temp_dir().display()
                );
                targets.push(Target {
                    label: "roost dev".into(),
                    base: d.base_url(),
                    edge_pid: d.pid(),
                    owner_pids: Vec::new(),
                });
                dev = Some(d);
            }
        }
        if args.suite
            && let Some(peer) = &args.peer_url
        {
            targets.push(Target {
                label: "workerd".into(),
                base: peer.trim_end_matches('/').to_owned(),
                edge_pid: None,
                owner_pids: Vec::new(),
            });
        }
        let result = async {
            let mut figs = Vec::new();
            for (i, t) in targets.iter().enumerate() {
                if dev_counters {
                    figs.extend(counters(args, s, &http, &run_id, t, &mut ok).await?);
                }
                if dev_chat {
                    figs.push(chat_on(s, args, &run_id, t).await);
                }
                // Not on the peer: its memory is not this bench's to read.
                if dev_sockets && i == 0 {
                    figs.push(sockets_on((socket_cap, s.sockets), args, &run_id, t).await);
                }
            }
            Ok::<_, String>(figs)
        }
        .await;
        if let Some(d) = dev
            && let Err(e) = d.stop().await
        {
            eprintln!("load: stopping roost dev: {e}");
        }
        all.extend(result?);
    }

    if has(ScenarioArg::Cold) {
        let env = [(
            "ROOST_OBJECTS_IDLE_TIMEOUT_MS",
            COLD_IDLE_TIMEOUT_MS.to_string(),
        )];
        let d = RoostDev::start(&bin, &env)
            .await
            .map_err(|e| e.to_string())?;
        let plan = ColdPlan {
            base: d.base_url(),
            admin: d.admin_url(),
            run_id: run_id.clone(),
            objects: s.cold_objects,
            sizes: vec![1024, 100 * 1024, 1024 * 1024],
        };
        eprintln!(
            "load: cold — {} objects per size, idle timeout {COLD_IDLE_TIMEOUT_MS} ms",
            plan.objects
        );
        let figs = cold::run(&http, &plan, "roost dev").await;
        if let Err(e) = d.stop().await {
            eprintln!("load: stopping roost dev: {e}");
        }
        all.extend(figs);
    }

    if has(ScenarioArg::Etcd) {
        eprintln!("load: etcd — 3 members, {} clients", s.clients);
        let e = Etcd::start(&args.etcd_bin).await?;
        let plan = EtcdPlan {
            clients: s.clients,
            keys: s.counters,
            warmup: s.warmup,
            duration: s.duration,
        };
        let fig = etcd::run(&e, &plan).await;
        e.stop().await;
        all.push(fig);
    }

    let cluster_counters = on_cluster && (has(ScenarioArg::Hot) || has(ScenarioArg::Many));
    let cluster_sockets = on_cluster && has(ScenarioArg::Sockets);
    if cluster_counters || cluster_sockets || has(ScenarioArg::Failover) {
        // Mutual TLS, as deployed: every scenario.
        let plan = ClusterRun {
            mtls: true,
            label: CLUSTER,
            counters: cluster_counters,
            sockets: cluster_sockets,
            failover: has(ScenarioArg::Failover),
        };
        all.extend(
            on_cluster_run(&plan, &bin, (args, s), &http, &run_id, socket_cap, &mut ok).await?,
        );
    }
    if cluster_counters && (args.suite || args.plaintext) && !args.smoke {
        // The same counters over plain gRPC: what TLS costs.
        let plan = ClusterRun {
            mtls: false,
            label: CLUSTER_PLAINTEXT,
            counters: true,
            sockets: false,
            failover: false,
        };
        all.extend(
            on_cluster_run(&plan, &bin, (args, s), &http, &run_id, socket_cap, &mut ok).await?,
        );
    }

    if has(ScenarioArg::Idle) {
        let spread = Duration::from_secs(if args.smoke { 5 } else { 60 });
        for shards in &s.idle_shards {
            eprintln!(
                "load: idle — a 3-node cluster with {shards} shards, CPU over {:?}",
                s.idle_window
            );
            all.push(idle::run(&bin, *shards, s.idle_window, spread).await);
        }
    }

    report::print_figures(&all);
    for f in &all {
        println!("{}", f.json_line());
        if let Some(p) = &f.problem {
            eprintln!("load: {} on {}: {p}", f.scenario, f.target);
            ok = false;
        }
    }
    if let Some(path) = &args.markdown {
        write_markdown(path, args, s, &all)?;
    }
    Ok(ok)
}

/// The label of the cluster's figures (mutual TLS, as deployed).
pub const CLUSTER: &str = "roost cluster";
/// The label of the same cluster's figures over plain gRPC.
pub const CLUSTER_PLAINTEXT: &str = "roost cluster, plaintext";

/// One start of a 3-node cluster and what runs on it.
struct ClusterRun {
    mtls: bool,
    label: &'static str,
    counters: bool,
    sockets: bool,
    failover: bool,
}

/// Starts a 3-node cluster and an edge, runs `plan`'s scenarios through
/// the edge, and stops it (keeping its logs if a scenario failed).
async fn on_cluster_run(
    plan: &ClusterRun,
    bin: &std::path::Path,
    (args, s): (&Args, &Settings),
    http: &reqwest::Client,
    run_id: &str,
    socket_cap: usize,
    ok: &mut bool,
) -> Result<Vec<Figures>, String> {
    eprintln!(
        "load: starting a 3-node cluster ({} shards, {})",
        s.cluster_shards,
        if plan.mtls {
            "mutual TLS"
        } else {
            "plain gRPC"
        }
    );
    let spread = Duration::from_secs(if args.smoke { 5 } else { 60 });
    let mut c = Cluster::start(bin, 3, s.cluster_shards, spread, plan.mtls).await?;
    eprintln!(
        "load: cluster edge at {} (logs in {})",
        c.edge_url,
        c.log_dir().display()
    );
    let t = Target {
        label: plan.label.into(),
        base: c.edge_url.clone(),
        edge_pid: c.edge_pid(),
        owner_pids: c.node_pids(),
    };
    let run_id = run_id.to_owned();
    let result = async {
        let mut figs = Vec::new();
        if plan.counters {
            figs.extend(counters(args, s, http, &run_id, &t, ok).await?);
        }
        if plan.sockets {
            let mut f = sockets_on((socket_cap, s.sockets), args, &run_id, &t).await;
            // The next scenario must not share the cluster with the
            // closing of these sockets.
            if let Err(e) = c.wait_sockets_closed(http, Duration::from_secs(300)).await {
                f.fail(e);
            }
            figs.push(f);
        }
        if plan.failover {
            let fplan = FailoverPlan {
                run_id: run_id.clone(),
                clients: s.failover_counters,
                counters: s.failover_counters,
                before: s.warmup.max(Duration::from_secs(1)),
                after: s.failover_after,
            };
            eprintln!(
                "load: failover — {} clients on {} counters, SIGKILL of the busiest leader",
                fplan.clients, fplan.counters
            );
            figs.push(failover::run(http, &mut c, &fplan, plan.label).await);
        }
        Ok::<_, String>(figs)
    }
    .await;
    let failed = match &result {
        Ok(figs) => figs.iter().any(|f| f.problem.is_some()),
        Err(_) => true,
    };
    if failed {
        c.keep_logs();
        eprintln!("load: cluster logs kept in {}", c.log_dir().display());
    }
    c.stop().await;
    result
}

fn write_markdown(
    path: &PathBuf,
    args: &Args,
    s: &Settings,
    all: &[Figures],
) -> Result<(), String> {
    let text = markdown::render(all, args, s);
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
    eprintln!("load: wrote {}", path.display());
    Ok(())
}

/// The counter scenarios (hot, many) against one target.
async fn counters(
    args: &Args,
    s: &Settings,
    http: &reqwest::Client,
    run_id: &str,
    t: &Target,
    ok: &mut bool,
) -> Result<Vec<Figures>, String> {
    let mut reports = Vec::new();
    for (arg, scenario) in [
        (ScenarioArg::Hot, Scenario::Hot),
        (ScenarioArg::Many, Scenario::Many),
    ] {
        if !s.scenarios.contains(&arg) {
            continue;
        }
        let plan = Plan {
            scenario,
            base: t.base.clone(),
            run_id: run_id.to_owned(),
            clients: s.clients,
            counters: if scenario == Scenario::Hot {
                1
            } else {
                s.counters
            },
            warmup: s.warmup,
            duration: s.duration,
        };
        eprintln!(
            "load: {scenario} on {} — {} clients, {} counter(s), {:.1}s warmup + {:.1}s measured",
            t.label,
            plan.clients,
            plan.counters,
            plan.warmup.as_secs_f64(),
            plan.duration.as_secs_f64(),
        );
        // The CPU of every process serving the run (edge and owners), over
        // the measured window: from the end of the warmup to the last
        // measured answer.
        let pids: Vec<u32> = t.edge_pid.iter().chain(&t.owner_pids).copied().collect();
        let warmup = plan.warmup;
        let cpu_pids = pids.clone();
        let cpu_at_start = tokio::spawn(async move {
            tokio::time::sleep(warmup).await;
            sys::cpu_seconds_of(&cpu_pids)
        });
        let outcome = workload::run(http, &plan).await;
        let cpu_at_end = sys::cpu_seconds_of(&pids);
        let cpu = match (cpu_at_start.await.ok().flatten(), cpu_at_end) {
            (Some(a), Some(b)) if !pids.is_empty() => Some(b - a),
            _ => None,
        };
        report::print_errors(&scenario.to_string(), &outcome.error_samples, 5);
        let check = workload::check(http, &plan, &outcome).await;
        reports.push((
            ScenarioReport::new(&t.label, &plan, &outcome, check),
            cpu.map(|c| (c, outcome.acked, outcome.window)),
        ));
    }
    let (reports, cpus): (Vec<_>, Vec<_>) = reports.into_iter().unzip();
    report::print_table(&reports);
    let mut figs = Vec::new();
    for (r, cpu) in reports.iter().zip(cpus) {
        println!("{}", r.json_line());
        if let Check::Mismatch { .. } = r.check_result {
            let bar = "!".repeat(72);
            eprintln!(
                "{bar}\n!!! MISMATCH in scenario {}: counters disagree with the",
                r.scenario
            );
            eprintln!("!!! increments acknowledged to them.\n{bar}");
        }
        let mut f = Figures::from_counters(r, &t.label);
        if let Some((cpu_s, acked, window)) = cpu {
            f.cpu(cpu_s, acked, window);
        }
        if args.smoke && (r.errors > 0 || r.warmup_errors > 0) {
            f.fail("--smoke: request errors");
        }
        if f.problem.is_some() {
            *ok = false;
        }
        figs.push(f);
    }
    Ok(figs)
}

async fn chat_on(s: &Settings, args: &Args, run_id: &str, t: &Target) -> Figures {
    let plan = ChatPlan {
        base: t.base.clone(),
        run_id: run_id.to_owned(),
        rooms: s.chat_rooms,
        members: s.chat_members,
        window: args.chat_window,
        duration: s.duration,
    };
    eprintln!(
        "load: chat on {} — {} rooms × {} members, window {}, {:.1}s",
        t.label,
        plan.rooms,
        plan.members,
        plan.window,
        plan.duration.as_secs_f64()
    );
    chat::run(&plan, &t.label).await
}

/// Idle sockets on `t`: `cap` of the `wanted` sockets (the open-file limit
/// may allow fewer).
async fn sockets_on(
    (cap, wanted): (usize, usize),
    args: &Args,
    run_id: &str,
    t: &Target,
) -> Figures {
    let Some(edge_pid) = t.edge_pid else {
        let mut f = Figures::new("idle-sockets", &t.label);
        f.fail("needs a server started here (its RSS is read from /proc)");
        return f;
    };
    let plan = SocketsPlan {
        base: t.base.clone(),
        run_id: run_id.to_owned(),
        sockets: cap.clamp(1, wanted),
        per_room: args.sockets_per_room,
        edge_pid,
        owner_pids: t.owner_pids.clone(),
    };
    eprintln!(
        "load: idle sockets on {} — {} sockets, {} per room",
        t.label, plan.sockets, plan.per_room
    );
    let mut f = sockets::run(&plan, &t.label).await;
    if plan.sockets < wanted {
        f.notes.push(format!(
            "{} of the {wanted} sockets asked for: the open-file hard limit allows no more \
             (raising it needs CAP_SYS_RESOURCE); the 50,000 figure is extrapolated",
            plan.sockets
        ));
    }
    f
}
