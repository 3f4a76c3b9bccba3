//! Load generator for Roost's HTTP API, driving the seed app's counter routes.
//!
//! Owns: argument parsing, choosing the target (an already running server via
//! `--url`, or a `roost dev` it starts and stops itself), running the
//! scenarios in order and the process exit code. It measures only: it never
//! asserts anything about timing. The one hard check is correctness — after a
//! run every counter must hold exactly the increments acknowledged to it.
//!
//! Run it with `cargo bench --bench load -- [ARGS]` (see `--help`). Cargo
//! passes `--bench` to the binary; without that flag (as under
//! `cargo test --all-targets`) the binary does nothing and exits 0, so test
//! runs never start a server. To run a dev-profile build by hand, pass
//! `--bench` yourself.

mod report;
mod server;
mod workload;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::report::{Check, ScenarioReport};
use crate::server::RoostDev;
use crate::workload::{Plan, Scenario};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum ScenarioArg {
    Hot,
    Many,
    Both,
}

/// Load generator for the counter routes of Roost (or any server speaking
/// the same HTTP contract, such as the seed app on workerd).
#[derive(Parser, Debug)]
#[command(name = "load")]
struct Args {
    /// Base URL of an already running server (e.g. http://127.0.0.1:8791).
    /// Without it, `roost dev` is started on 127.0.0.1:0 with a temporary
    /// data directory and stopped at the end.
    #[arg(long)]
    url: Option<String>,

    /// `hot`: every client increments one counter; `many`: clients pick
    /// uniformly at random among `--counters` counters.
    #[arg(long, value_enum, default_value = "both")]
    scenario: ScenarioArg,

    /// Concurrent clients, each with one request in flight (closed loop).
    /// Default 64 (2 with --smoke).
    #[arg(long)]
    clients: Option<usize>,

    /// Measured seconds per scenario. Default 10 (1 with --smoke).
    #[arg(long)]
    duration: Option<f64>,

    /// Counters in the `many` scenario. Default 1000 (10 with --smoke).
    #[arg(long)]
    counters: Option<usize>,

    /// Unmeasured seconds before each measurement. Default 1 (0 with --smoke).
    #[arg(long)]
    warmup: Option<f64>,

    /// Tiny sizes for CI; any request error also makes the run fail.
    #[arg(long)]
    smoke: bool,

    /// Per-request timeout in seconds (a timed-out request is an error).
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,

    /// Counter-name prefix to use instead of a fresh random one. Reusing the
    /// id of an earlier run against the same server makes the correctness
    /// check fail (the counters no longer start at 0): that is how the check
    /// itself is verified.
    #[arg(long)]
    run_id: Option<String>,

    /// Set by `cargo bench`; the binary does nothing without it.
    #[arg(long, hide = true)]
    bench: bool,

    /// Bench-name filters that `cargo bench FILTER` passes along; ignored.
    #[arg(hide = true)]
    filters: Vec<String>,
}

/// What the arguments resolve to once `--smoke` defaults are applied.
struct Settings {
    clients: usize,
    duration: Duration,
    warmup: Duration,
    counters: usize,
    timeout: Duration,
}

impl Args {
    fn settings(&self) -> Result<Settings, String> {
        let (clients, duration, counters, warmup) = if self.smoke {
            (2, 1.0, 10, 0.0)
        } else {
            (64, 10.0, 1000, 1.0)
        };
        let clients = self.clients.unwrap_or(clients);
        let counters = self.counters.unwrap_or(counters);
        let duration = self.duration.unwrap_or(duration);
        let warmup = self.warmup.unwrap_or(warmup);
        if clients == 0 || counters == 0 {
            return Err("--clients and --counters must be at least 1".into());
        }
        if let Some(id) = &self.run_id
            && (id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            return Err("--run-id must be non-empty ASCII letters, digits, '-' or '_'".into());
        }
        let secs = |name: &str, v: f64| {
            Duration::try_from_secs_f64(v)
                .map_err(|_| format!("{name} must be a number of seconds >= 0"))
        };
        let duration = secs("--duration", duration)?;
        if duration.is_zero() {
            return Err("--duration must be > 0".into());
        }
        Ok(Settings {
            clients,
            duration,
            warmup: secs("--warmup", warmup)?,
            counters,
            timeout: secs("--timeout", self.timeout)?,
        })
    }

    fn scenarios(&self) -> Vec<Scenario> {
        match self.scenario {
            ScenarioArg::Hot => vec![Scenario::Hot],
            ScenarioArg::Many => vec![Scenario::Many],
            ScenarioArg::Both => vec![Scenario::Hot, Scenario::Many],
        }
    }
}

fn main() -> ExitCode {
    if !std::env::args().skip(1).any(|a| a == "--bench") {
        println!("load: skipped (not run by `cargo bench`; pass --bench to run it by hand)");
        return ExitCode::SUCCESS;
    }
    let args = Args::parse();
    let settings = match args.settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("load: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("load: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args, &settings)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("load: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args, settings: &Settings) -> Result<ExitCode, String> {
    let (base, target, mut server) = match &args.url {
        Some(url) => (url.trim_end_matches('/').to_owned(), url.clone(), None),
        None => {
            let dev = RoostDev::start(env!("CARGO_BIN_EXE_roost"))
                .await
                .map_err(|e| e.to_string())?;
            let base = dev.base_url();
            eprintln!(
                "load: started roost dev at {base} (temp dir {})",
                dev.temp_dir().display()
            );
            (base, "roost dev".to_owned(), Some(dev))
        }
    };
    let result = run_scenarios(args, settings, &base, &target).await;
    if let Some(dev) = server.take()
        && let Err(e) = dev.stop().await
    {
        eprintln!("load: stopping roost dev: {e}");
    }
    let reports = result?;

    report::print_table(&reports);
    for r in &reports {
        println!("{}", r.json_line());
    }
    let mut failed = false;
    for r in &reports {
        if let Check::Mismatch { .. } = r.check_result {
            let bar = "!".repeat(72);
            eprintln!(
                "{bar}\n!!! MISMATCH in scenario {}: counters disagree with the",
                r.scenario
            );
            eprintln!("!!! increments acknowledged to them.\n{bar}");
        }
        if !matches!(r.check_result, Check::Ok { .. }) {
            eprintln!(
                "load: {} in scenario {}: {}",
                r.check, r.scenario, r.check_result
            );
            failed = true;
        }
        if r.acked == 0 {
            eprintln!(
                "load: scenario {} got no acknowledged increment at all",
                r.scenario
            );
            failed = true;
        }
        if args.smoke && (r.errors > 0 || r.warmup_errors > 0) {
            eprintln!("load: --smoke: scenario {} had request errors", r.scenario);
            failed = true;
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn run_scenarios(
    args: &Args,
    settings: &Settings,
    base: &str,
    target: &str,
) -> Result<Vec<ScenarioReport>, String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(settings.clients)
        .tcp_nodelay(true)
        .timeout(settings.timeout)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let run_id = args.run_id.clone().unwrap_or_else(workload::run_id);
    let mut reports = Vec::new();
    for scenario in args.scenarios() {
        let counters = match scenario {
            Scenario::Hot => 1,
            Scenario::Many => settings.counters,
        };
        let plan = Plan {
            scenario,
            base: base.to_owned(),
            run_id: run_id.clone(),
            clients: settings.clients,
            counters,
            warmup: settings.warmup,
            duration: settings.duration,
        };
        eprintln!(
            "load: {} — {} clients, {} counter(s), {:.1}s warmup + {:.1}s measured, run id {}",
            scenario,
            plan.clients,
            plan.counters,
            plan.warmup.as_secs_f64(),
            plan.duration.as_secs_f64(),
            run_id
        );
        let outcome = workload::run(&client, &plan).await;
        report::print_errors(&scenario.to_string(), &outcome.error_samples, 5);
        let check = workload::check(&client, &plan, &outcome).await;
        reports.push(ScenarioReport::new(target, &plan, &outcome, check));
    }
    Ok(reports)
}
