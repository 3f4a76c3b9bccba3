//! The `roost` command line, for any app: [`main`] gives a binary every
//! subcommand and flag of `roost` — `dev`, `node` (with `--ordinal`, `drain`,
//! `undrain`), `edge`, `config`, `certs`, `cluster status`, `backup`,
//! `restore` — with the same configuration layers (defaults < file <
//! `ROOST_*` < flags), logging, traces and signal handling, serving the
//! [`App`] it is given. The shipped `roost` binary is
//! `roost::cli::main(roost::cli::BuiltIn)`; a binary built the same way with
//! its own classes is deployable with the chart as it is (set the image).
//!
//! ```no_run
//! use roost::cli::App;
//! use roost::config::Config;
//! use roost::object::Bindings;
//!
//! struct MyApp;
//!
//! impl App for MyApp {
//!     type Worker = roost::app::SeedApp; // your router (a `Worker`)
//!     fn build(&self, _config: &Config) -> (Bindings, Self::Worker) {
//!         (roost::app::bindings(), roost::app::SeedApp) // your classes
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     roost::cli::main(MyApp)
//! }
//! ```
//!
//! What each process takes from the app: `dev` the classes and the router;
//! `node` the classes (nodes serve no HTTP); `edge` the router and the
//! classes' binding names (an edge runs no object: its stubs forward every
//! call to the node that leads the object's shard). Every node and edge of
//! one cluster must run the same app.
//!
//! The lines the serving commands print (`roost node: grpc on ADDR`, …) keep
//! the `roost` prefix in every binary: the chart's probes and the tests read
//! them.

mod args;
mod ops;
mod serve;

use std::process::ExitCode;

use clap::Parser;

use crate::config::Config;
use crate::object::{Bindings, Worker};
use args::{Cli, ClusterAction, Command};

/// What a binary built on [`main`] serves: its Durable Object classes and
/// its router.
pub trait App: Send + Sync + 'static {
    /// The stateless router every HTTP request and WebSocket upgrade goes
    /// through (the Worker's `fetch`).
    type Worker: Worker;

    /// The classes (bound to their names) and the router, for the
    /// process's effective configuration. Called once per serving process,
    /// after the configuration is built and before anything is served.
    fn build(&self, config: &Config) -> (Bindings, Self::Worker);
}

/// The built-in app: the seed's `CHAT_ROOM`, `RATE_LIMITER` and `COUNTER`
/// and its router ([`crate::app`]), with the `[limits]` `chat_*` options.
pub struct BuiltIn;

impl App for BuiltIn {
    type Worker = crate::app::SeedApp;

    fn build(&self, config: &Config) -> (Bindings, Self::Worker) {
        crate::app::configure(crate::node::app_options(config));
        (crate::app::bindings(), crate::app::SeedApp)
    }
}

/// Parses the command line, runs the subcommand on a multi-threaded tokio
/// runtime, and returns the process's exit code (an error is printed as
/// `roost: …` on stderr).
pub fn main<A: App>(app: A) -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("roost: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&app, cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roost: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run<A: App>(app: &A, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Dev(args) => serve::dev(app, args).await,
        Command::Node(args) => serve::node(app, args).await,
        Command::Edge(args) => serve::edge(app, args).await,
        Command::Config(args) => ops::print_config(args),
        Command::Certs(args) => ops::certs(args),
        Command::Cluster(ClusterAction::Status(args)) => ops::cluster_status(args).await,
        Command::Backup(args) => ops::backup(args).await,
        Command::Restore(args) => ops::restore(args).await,
    }
}
