//! The serving subcommands: `dev`, `node` and `edge`. Each builds the
//! configuration (defaults < file < `ROOST_*` < flags), starts logging, asks
//! the app for its classes and router, starts the node, prints its
//! addresses, and stops it on SIGTERM or SIGINT (a second signal stops it at
//! once).

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use super::App;
use super::args::{DevArgs, EdgeArgs, NodeAction, NodeArgs};
use super::ops;
use crate::config::{Config, Overrides};
use crate::node::DevNode;
use crate::node::cluster::{ClusterArgs, ClusterNode};
use crate::node::edge::EdgeNode;

/// Raises the soft limit on open files to the hard limit: each socket a
/// process holds (a client's WebSocket at an edge, a connection) is a file.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open file limit"),
    }
}

pub(super) async fn dev<A: App>(app: &A, args: DevArgs) -> anyhow::Result<()> {
    let flags = Overrides {
        listen: args.listen,
        grpc_listen: args.grpc_listen,
        admin_listen: args.admin_listen,
        data_dir: args.data_dir,
        shards: args.shards,
        log_format: args.log_format,
        ..Overrides::default()
    };
    let config = Config::build(args.file.config.as_deref(), flags).context("load configuration")?;
    let telemetry = crate::telemetry::init(&config.log).context("start logging")?;
    raise_open_file_limit();
    if !config.tls.has_files() && !config.grpc.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %config.grpc.listen,
            "roost dev serves gRPC without TLS on a non-loopback address: anyone who reaches it can call every object"
        );
    }
    let result = serve(app, config).await;
    // The last spans leave before the process does.
    telemetry.shutdown().await;
    result
}

async fn serve<A: App>(app: &A, config: Config) -> anyhow::Result<()> {
    let mut signals = Signals::listen()?;

    let data_dir = config.node.data_dir.clone();
    let (bindings, worker) = app.build(&config);
    let node = DevNode::start_with(config, bindings, worker)
        .await
        .context("start node")?;
    println!(
        "roost dev: serving http://{} (data in {})",
        node.http_addr(),
        data_dir.display()
    );
    println!("roost dev: grpc on {}", node.grpc_addr());
    println!("roost dev: admin on http://{}", node.admin_addr());

    signals.first("shutting down").await;
    signals
        .during(async { node.shutdown().await.context("shut down node") })
        .await
}

pub(super) async fn node<A: App>(app: &A, args: NodeArgs) -> anyhow::Result<()> {
    match args.action {
        Some(NodeAction::Drain(drain)) => return ops::drain_node(drain).await,
        Some(NodeAction::Undrain(undrain)) => return ops::undrain_node(undrain).await,
        None => {}
    }
    let flags = Overrides {
        grpc_listen: args.grpc_listen,
        admin_listen: args.admin_listen,
        data_dir: args.data_dir,
        shards: args.shards,
        log_format: args.log_format,
        insecure: args.insecure.insecure,
        ..Overrides::default()
    };
    let mut config =
        Config::build(args.file.config.as_deref(), flags).context("load configuration")?;
    config
        .tls
        .check_cluster("roost node")
        .context("load configuration")?;
    if let Some(id) = args.id {
        config.node.id = id;
    }
    if let Some(ordinal) = args.ordinal {
        config.node.id = ordinal
            .checked_add(1)
            .context("load configuration: --ordinal is too large")?;
    }
    config.validate().context("load configuration")?;
    let telemetry = crate::telemetry::init(&config.log).context("start logging")?;
    raise_open_file_limit();
    warn_if_insecure(&config, "roost node");
    let cluster = ClusterArgs {
        grpc_listen: config.grpc.listen,
        advertise: args.advertise,
        seeds: args.join,
        replication: args.replication,
    };
    let result = serve_node(app, config, cluster).await;
    // The last spans leave before the process does.
    telemetry.shutdown().await;
    result
}

async fn serve_node<A: App>(app: &A, config: Config, cluster: ClusterArgs) -> anyhow::Result<()> {
    let mut signals = Signals::listen()?;
    // A node serves no HTTP: only the classes.
    let (bindings, _) = app.build(&config);
    let node = ClusterNode::start_with(config, cluster, bindings)
        .await
        .context("start node")?;
    println!("roost node: grpc on {}", node.grpc_addr());
    println!("roost node: admin on http://{}", node.admin_addr());
    signals.first("draining and shutting down").await;
    signals
        .during(async { node.shutdown().await.context("shut down node") })
        .await
}

pub(super) async fn edge<A: App>(app: &A, args: EdgeArgs) -> anyhow::Result<()> {
    let flags = Overrides {
        listen: args.listen,
        admin_listen: args.admin_listen,
        grpc_listen: args.grpc_listen,
        log_format: args.log_format,
        insecure: args.insecure.insecure,
        ..Overrides::default()
    };
    let config = Config::build(args.file.config.as_deref(), flags).context("load configuration")?;
    config
        .tls
        .check_cluster("roost edge")
        .context("load configuration")?;
    let telemetry = crate::telemetry::init(&config.log).context("start logging")?;
    raise_open_file_limit();
    warn_if_insecure(&config, "roost edge");
    let result = serve_edge(app, config, args.join).await;
    telemetry.shutdown().await;
    result
}

async fn serve_edge<A: App>(app: &A, config: Config, join: Vec<String>) -> anyhow::Result<()> {
    let mut signals = Signals::listen()?;
    // An edge runs no objects: only the router, and the classes' names.
    let (bindings, worker) = app.build(&config);
    let namespaces = crate::node::with_config_migrations(bindings, &config)?.namespaces()?;
    let edge = EdgeNode::start_with(config, join, worker, namespaces)
        .await
        .context("start edge")?;
    println!("roost edge: serving http://{}", edge.http_addr());
    println!("roost edge: admin on http://{}", edge.admin_addr());
    println!("roost edge: gRPC on {}", edge.grpc_addr());
    signals.first("shutting down").await;
    signals
        .during(async {
            edge.shutdown().await;
            Ok(())
        })
        .await
}

/// The loud warning of a node or edge started with `--insecure`, in the
/// log and on `/readyz`.
fn warn_if_insecure(config: &Config, what: &str) {
    if config.tls.mode != crate::config::TlsMode::Insecure {
        return;
    }
    let warning = format!(
        "{what} runs INSECURE (--insecure / tls.mode = \"insecure\"): its gRPC has no TLS and no \
         authentication; anyone who reaches it can rewrite the cluster's membership and data"
    );
    tracing::warn!("{warning}");
    eprintln!("roost: WARNING: {warning}");
    crate::telemetry::admin::set_readyz_warning(warning);
}

/// SIGTERM and SIGINT: the first stops the process cleanly, a second one
/// during that shutdown stops it at once.
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    /// Listens before anything starts, so that a signal arriving during
    /// startup stops the process as soon as it is up.
    fn listen() -> anyhow::Result<Signals> {
        Ok(Signals {
            terminate: signal(SignalKind::terminate()).context("listen for SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("listen for SIGINT")?,
        })
    }

    /// Waits for the first signal.
    async fn first(&mut self, then: &str) {
        tokio::select! {
            _ = self.terminate.recv() => tracing::info!("SIGTERM: {then}"),
            _ = self.interrupt.recv() => tracing::info!("SIGINT: {then}"),
        }
    }

    /// Runs `shutdown` unless a second signal comes first.
    async fn during(
        &mut self,
        shutdown: impl std::future::Future<Output = anyhow::Result<()>>,
    ) -> anyhow::Result<()> {
        tokio::select! {
            stopped = shutdown => stopped,
            _ = self.terminate.recv() => anyhow::bail!("second SIGTERM: stopped without a clean shutdown"),
            _ = self.interrupt.recv() => anyhow::bail!("second SIGINT: stopped without a clean shutdown"),
        }
    }
}
