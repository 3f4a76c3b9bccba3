//! Roost's benchmark suite: a load generator for its HTTP and WebSocket API
//! (the seed app's routes), and the peers it is compared with.
//!
//! Owns: argument parsing, which scenarios run against which targets (an
//! already running server via `--url`, a `roost dev` or 3-node cluster it
//! starts itself, the seed on workerd via `--peer-url`, an etcd cluster it
//! starts), the order they run in, and the process exit code. The scenarios
//! live in their own modules: `workload` (counters: hot and many), `chat`,
//! `cold`, `failover`, `sockets`, `etcd`. It measures only: it never asserts
//! anything about timing. The hard checks are correctness (counters hold
//! exactly what was acknowledged; chat members saw every message, in one
//! order per room).
//!
//! Run it with `cargo bench --bench load -- [ARGS]` (see `--help`), or the
//! whole suite with `make bench`. Cargo passes `--bench` to the binary;
//! without that flag (as under `cargo test --all-targets`) the binary does
//! nothing and exits 0, so test runs never start a server. To run a
//! dev-profile build by hand, pass `--bench` yourself.

mod chat;
mod cluster;
mod cold;
mod etcd;
mod failover;
mod idle;
mod markdown;
mod report;
mod server;
mod sockets;
mod suite;
mod sys;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScenarioArg {
    /// Every client increments one counter.
    Hot,
    /// Clients increment counters picked at random among `--counters`.
    Many,
    /// `hot` and `many`.
    Both,
    /// Chat fan-out: rooms × members, all sending.
    Chat,
    /// First request to an evicted object with 1 KiB / 100 KiB / 1 MiB.
    Cold,
    /// SIGKILL of a 3-node cluster's busiest leader under load.
    Failover,
    /// Idle WebSockets: RSS per socket at the edge and the owners.
    Sockets,
    /// A 3-member etcd cluster under Put load (the replicated-write peer).
    Etcd,
    /// An idle 3-node cluster's CPU at each of --idle-shards.
    Idle,
}

/// Load generator and benchmark suite for Roost (and any server speaking
/// the seed app's HTTP/WebSocket contract, such as the seed on workerd).
#[derive(Parser, Debug)]
#[command(name = "load")]
pub struct Args {
    /// Base URL of an already running server (e.g. http://127.0.0.1:8791)
    /// for the hot, many and chat scenarios. Without it, `roost dev` is
    /// started on 127.0.0.1:0 with a temporary data directory.
    #[arg(long)]
    pub url: Option<String>,

    /// Scenarios to run, comma-separated. Default: hot,many (with --smoke:
    /// all but etcd; with --suite: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub scenario: Vec<ScenarioArg>,

    /// The whole suite with its peers side by side: counters and chat on
    /// `roost dev` and on --peer-url, counters, idle sockets and failover on
    /// a 3-node cluster, cold activation, etcd. Use with --markdown.
    #[arg(long)]
    pub suite: bool,

    /// The seed app on workerd (e.g. http://127.0.0.1:8791), measured beside
    /// `roost dev` in --suite runs.
    #[arg(long)]
    pub peer_url: Option<String>,

    /// Drive hot, many and sockets through a 3-node cluster's edge (started
    /// here) instead of `roost dev`.
    #[arg(long)]
    pub cluster: bool,

    /// Also measure the cluster's counters over plain gRPC (`--insecure`),
    /// beside the mutual-TLS cluster every other cluster figure comes from
    /// (--suite does this too).
    #[arg(long)]
    pub plaintext: bool,

    /// Write the results as Markdown (BENCHMARKS.md) to this path.
    #[arg(long)]
    pub markdown: Option<PathBuf>,

    /// The command line to record in the Markdown (the script's).
    #[arg(long)]
    pub command: Option<String>,

    /// The `roost` binary [default: the one built with this bench, or one
    /// next to this executable].
    #[arg(long)]
    pub roost_bin: Option<PathBuf>,

    /// The etcd binary.
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: PathBuf,

    /// Concurrent clients, each with one request in flight (closed loop).
    /// Default 64 (2 with --smoke).
    #[arg(long)]
    pub clients: Option<usize>,

    /// Measured seconds per scenario. Default 10 (1 with --smoke).
    #[arg(long)]
    pub duration: Option<f64>,

    /// Counters in the `many` scenario. Default 1000 (10 with --smoke).
    #[arg(long)]
    pub counters: Option<usize>,

    /// Unmeasured seconds before each measurement. Default 1 (0 with --smoke).
    #[arg(long)]
    pub warmup: Option<f64>,

    /// Chat rooms. Default 10 (2 with --smoke).
    #[arg(long)]
    pub chat_rooms: Option<usize>,

    /// WebSocket members per chat room, each a sender. Default 10 (3 with
    /// --smoke).
    #[arg(long)]
    pub chat_members: Option<usize>,

    /// Messages each chat member keeps in flight (sent, own echo not yet
    /// received).
    #[arg(long, default_value_t = 2)]
    pub chat_window: usize,

    /// Objects per state size in the cold scenario. Default 20 (2 with
    /// --smoke).
    #[arg(long)]
    pub cold_objects: Option<usize>,

    /// Idle WebSockets to open. Default 50000 (100 with --smoke).
    #[arg(long)]
    pub sockets: Option<usize>,

    /// Idle WebSockets per chat room.
    #[arg(long, default_value_t = 10)]
    pub sockets_per_room: usize,

    /// Shards of a cluster started here. Default 16, the product's default
    /// (8 with --smoke).
    #[arg(long)]
    pub cluster_shards: Option<u16>,

    /// Shard counts the idle scenario measures, comma-separated. Default
    /// 16,64,256,1024 (8 with --smoke).
    #[arg(long, value_delimiter = ',')]
    pub idle_shards: Vec<u16>,

    /// Seconds the idle scenario samples each cluster's CPU over. Default
    /// 20 (1 with --smoke).
    #[arg(long)]
    pub idle_window: Option<f64>,

    /// Counters under load in the failover scenario, each driven by its own
    /// closed-loop client (so one counter's stuck request never delays
    /// another's recovery). Default 128 (16 with --smoke).
    #[arg(long)]
    pub failover_counters: Option<usize>,

    /// Longest load after the SIGKILL in the failover scenario, in seconds:
    /// it stops 1 s after every affected counter took a write again, and
    /// a counter that did not within this time is a failure. Default 30.
    #[arg(long)]
    pub failover_after: Option<f64>,

    /// Tiny sizes for CI; any request error also makes the run fail.
    #[arg(long)]
    pub smoke: bool,

    /// Per-request timeout in seconds (a timed-out request is an error).
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,

    /// Counter-name prefix to use instead of a fresh random one. Reusing the
    /// id of an earlier run against the same server makes the correctness
    /// check fail (the counters no longer start at 0): that is how the check
    /// itself is verified.
    #[arg(long)]
    pub run_id: Option<String>,

    /// Set by `cargo bench`; the binary does nothing without it.
    #[arg(long, hide = true)]
    pub bench: bool,

    /// Bench-name filters that `cargo bench FILTER` passes along; ignored.
    #[arg(hide = true)]
    pub filters: Vec<String>,
}

/// What the arguments resolve to once the `--smoke` defaults are applied.
pub struct Settings {
    pub clients: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub counters: usize,
    pub timeout: Duration,
    pub chat_rooms: usize,
    pub chat_members: usize,
    pub cold_objects: usize,
    pub sockets: usize,
    pub cluster_shards: u16,
    pub idle_shards: Vec<u16>,
    pub idle_window: Duration,
    pub failover_counters: usize,
    pub failover_after: Duration,
    pub scenarios: Vec<ScenarioArg>,
}

impl Args {
    fn settings(&self) -> Result<Settings, String> {
        let smoke = self.smoke;
        let pick = |v: Option<usize>, full: usize, tiny: usize| {
            v.unwrap_or(if smoke { tiny } else { full })
        };
        let clients = pick(self.clients, 64, 2);
        let counters = pick(self.counters, 1000, 10);
        let duration = self.duration.unwrap_or(if smoke { 1.0 } else { 10.0 });
        let warmup = self.warmup.unwrap_or(if smoke { 0.0 } else { 1.0 });
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
        let mut scenarios = Vec::new();
        let chosen = if !self.scenario.is_empty() {
            self.scenario.clone()
        } else if self.suite {
            vec![
                ScenarioArg::Both,
                ScenarioArg::Chat,
                ScenarioArg::Cold,
                ScenarioArg::Etcd,
                ScenarioArg::Sockets,
                ScenarioArg::Failover,
                ScenarioArg::Idle,
            ]
        } else if smoke {
            vec![
                ScenarioArg::Both,
                ScenarioArg::Chat,
                ScenarioArg::Cold,
                ScenarioArg::Sockets,
                ScenarioArg::Failover,
                ScenarioArg::Idle,
            ]
        } else {
            vec![ScenarioArg::Both]
        };
        for s in chosen {
            let expanded = match s {
                ScenarioArg::Both => vec![ScenarioArg::Hot, ScenarioArg::Many],
                s => vec![s],
            };
            for e in expanded {
                if !scenarios.contains(&e) {
                    scenarios.push(e);
                }
            }
        }
        let members = pick(self.chat_members, 10, 3);
        if members == 0 || self.chat_window == 0 || self.sockets_per_room == 0 {
            return Err("--chat-members, --chat-window and --sockets-per-room must be >= 1".into());
        }
        Ok(Settings {
            clients,
            duration,
            warmup: secs("--warmup", warmup)?,
            counters,
            timeout: secs("--timeout", self.timeout)?,
            chat_rooms: pick(self.chat_rooms, 10, 2).max(1),
            chat_members: members,
            cold_objects: pick(self.cold_objects, 20, 2).max(1),
            sockets: pick(self.sockets, 50_000, 100).max(1),
            cluster_shards: self
                .cluster_shards
                .unwrap_or(if smoke { 8 } else { 16 })
                .max(1),
            idle_shards: if !self.idle_shards.is_empty() {
                self.idle_shards.iter().map(|n| (*n).max(1)).collect()
            } else if smoke {
                vec![8]
            } else {
                vec![16, 64, 256, 1024]
            },
            idle_window: secs(
                "--idle-window",
                self.idle_window.unwrap_or(if smoke { 1.0 } else { 20.0 }),
            )?,
            failover_counters: pick(self.failover_counters, 128, 16).max(1),
            failover_after: secs(
                "--failover-after",
                self.failover_after
                    .unwrap_or(if smoke { 5.0 } else { 10.0 }),
            )?,
            scenarios,
        })
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
    match runtime.block_on(suite::run(&args, &settings)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("load: {e}");
            ExitCode::FAILURE
        }
    }
}
