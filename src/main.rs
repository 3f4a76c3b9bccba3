//! The `roost` command: parses flags, builds the configuration, starts
//! logging and a node, and stops the node on SIGTERM or SIGINT. Nothing else
//! happens here; the node does the work.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use roost::config::{Config, LogFormat, Overrides};
use tokio::signal::unix::{SignalKind, signal};

/// Roost: Durable Objects, self-hosted.
///
/// Strongly consistent, single-threaded objects with transactional storage,
/// alarms and WebSockets, replicated by Raft on RocksDB.
///
/// Settings come from, lowest first: defaults < the config file
/// (--config, else ./roost.toml if it exists) < ROOST_<SECTION>_<FIELD>
/// environment variables < flags. Every setting is documented in
/// roost.example.toml; `roost config` prints the effective ones.
#[derive(Debug, Parser)]
#[command(name = "roost", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a single-node Roost for development, until SIGTERM or Ctrl-C.
    ///
    /// Serves the built-in app over HTTP and WebSocket on --listen, the gRPC
    /// object API on --grpc-listen and metrics on --admin-listen, and keeps
    /// its data in --data-dir. Prints `roost dev: serving http://ADDR (data
    /// in DIR)`, `roost dev: grpc on ADDR` and `roost dev: admin on
    /// http://ADDR` once it is ready. Traces are exported over OTLP when
    /// OTEL_EXPORTER_OTLP_ENDPOINT is set.
    Dev(DevArgs),
    /// Run a cluster node: hosts shard replicas, runs the objects of the
    /// shards it leads, and serves gRPC (Raft, the object API, the cluster
    /// service) on --grpc-listen. Without --join it starts a new cluster;
    /// with --join it joins one through those nodes. On SIGTERM it moves its
    /// leaderships to other nodes before it stops. Prints
    /// `roost node: grpc on ADDR` once it is up.
    ///
    /// `roost node drain` takes a node out of the cluster for good (scale
    /// in); `roost node undrain` cancels a drain.
    Node(NodeArgs),
    /// Run a stateless edge: serves the built-in app over HTTP and
    /// WebSocket on --listen and the gRPC object API on --grpc-listen, and
    /// sends each object call to the node that leads the object's shard,
    /// learning the cluster from the --join nodes. Prints `roost edge:
    /// serving http://ADDR` once it is up.
    Edge(EdgeArgs),
    /// Print the effective configuration as TOML, with each field's
    /// documentation, and exit (fails if it is invalid).
    Config(FileArgs),
    /// Create a CA and certificates for a cluster's mutual TLS.
    ///
    /// Writes ca.crt and ca.key (kept if they exist: a second run issues new
    /// certificates under the same CA), and ROLE.crt and ROLE.key for each
    /// role, into --out. Each certificate names its role
    /// (spiffe://roost/role/ROLE), localhost, 127.0.0.1, ::1 and the --dns
    /// and --ip names, and serves as server and client. Point [tls] at
    /// ca.crt and a role's pair: node.* for `roost node`, edge.* for `roost
    /// edge`, operator.* for `roost node drain`/`undrain`.
    Certs(CertsArgs),
    /// Look at a running cluster (`roost cluster status`)
    #[command(subcommand)]
    Cluster(ClusterAction),
    /// Take an online, consistent backup of a running cluster into a directory
    ///
    /// Asks each shard's leader for a copy of the shard taken after a fence
    /// of its term, so the backup holds every write acknowledged before the
    /// command began (writes made while it runs may or may not be in it,
    /// shard by shard). Writes one file per shard and, last, manifest.json
    /// (the cluster's shards, replication and storage format; per shard its
    /// log index, term, size and SHA-256). Prints `roost backup: N shards
    /// into DIR` when done. Needs a node or operator certificate under mTLS.
    Backup(BackupArgs),
    /// Seed the first node of a new cluster from a backup
    ///
    /// Checks the manifest (storage format; --shards and --replication must
    /// be the backup's) and every file's size and SHA-256, then writes each
    /// shard into a new --data-dir as a group with this node (--id,
    /// --advertise) as its only voter. Then start that node with the same
    /// --id, --advertise, --data-dir, --shards and --replication and without
    /// --join; the other nodes join it empty and receive the shards.
    Restore(RestoreArgs),
}

#[derive(Debug, Args)]
struct BackupArgs {
    /// The config file whose `[tls]` section (or ROOST_TLS_*) says how to
    /// reach the cluster's gRPC
    #[command(flatten)]
    file: FileArgs,

    /// Cluster nodes to reach the cluster through, comma-separated host:port
    #[arg(long, value_name = "ADDRS", value_delimiter = ',', required = true)]
    join: Vec<String>,

    /// Directory to write the backup into (created; must not hold a backup)
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "under",
        conflicts_with = "under"
    )]
    out: Option<PathBuf>,

    /// Write the backup into a new directory DIR/backup-YYYYMMDDTHHMMSSZ
    /// (UTC, when it began): for scheduled backups into one volume
    #[arg(long, value_name = "DIR")]
    under: Option<PathBuf>,

    /// Only these shards: N or A-B (inclusive) [default: all]
    #[arg(long, value_name = "RANGE", value_parser = roost::cluster::backup::parse_range)]
    shards: Option<std::ops::RangeInclusive<u32>>,

    /// Give up on a shard whose leader has not answered after this many seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    timeout: u64,
}

#[derive(Debug, Args)]
struct RestoreArgs {
    #[command(flatten)]
    file: FileArgs,

    /// The backup directory (the one holding manifest.json)
    #[arg(long, value_name = "DIR")]
    from: PathBuf,

    /// The new node's data directory; must not exist or be empty
    /// [default: ./roost-data] [env: ROOST_NODE_DATA_DIR]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// The new node's id [default: 1] [env: ROOST_NODE_ID]
    #[arg(long, value_name = "N")]
    id: Option<u64>,

    /// The address the new node will advertise (its gRPC host:port, as
    /// other nodes reach it)
    #[arg(long, value_name = "HOST:PORT")]
    advertise: String,

    /// The new cluster's number of shards; must be the backup's
    /// [default: 64] [env: ROOST_NODE_SHARDS]
    #[arg(long, value_name = "N")]
    shards: Option<u16>,

    /// The new cluster's replicas per shard; must be the backup's
    #[arg(long, value_name = "R", default_value_t = 3)]
    replication: u32,
}

/// Operator commands on a whole cluster.
#[derive(Debug, Subcommand)]
enum ClusterAction {
    /// Print the cluster's nodes, shards, leaders, lag and warnings
    ///
    /// Asks a --join node for the directory, then every node for its Raft
    /// groups: nodes (state, address, version, shards led), each shard's
    /// leader, term, voters, learners, commit and apply index and lag, the
    /// draining nodes, and warnings (a node that does not answer, a shard
    /// without a leader backed by a quorum, a replica more than 100 entries
    /// behind). The same JSON as a node's admin endpoint /admin/cluster.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
struct StatusArgs {
    #[command(flatten)]
    file: FileArgs,

    /// Cluster nodes to ask, comma-separated host:port (the first that
    /// answers lists the others)
    #[arg(long, value_name = "ADDRS", value_delimiter = ',', required = true)]
    join: Vec<String>,

    /// Print JSON instead of tables
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct CertsArgs {
    /// Directory for the files, created if missing
    #[arg(long, value_name = "DIR", default_value = "roost-certs")]
    out: PathBuf,

    /// DNS names the certificates serve as besides localhost,
    /// comma-separated (every name clients dial: node hosts, Services)
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    dns: Vec<String>,

    /// IP addresses the certificates serve as besides loopback,
    /// comma-separated
    #[arg(long, value_name = "IPS", value_delimiter = ',')]
    ip: Vec<std::net::IpAddr>,

    /// Roles to issue a certificate for, comma-separated
    #[arg(
        long,
        value_name = "ROLES",
        value_delimiter = ',',
        default_value = "node,edge,operator"
    )]
    roles: Vec<CertRole>,

    /// Validity of the certificates in days (a new CA: twice as long)
    #[arg(long, value_name = "DAYS", default_value_t = 365)]
    days: u32,
}

/// A role `roost certs` issues a certificate for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CertRole {
    Node,
    Edge,
    Operator,
}

/// Accepting unauthenticated cluster traffic, said out loud.
#[derive(Debug, Args)]
struct InsecureArg {
    /// Run without mutual TLS: plain gRPC that anyone who reaches it can
    /// use to change the cluster's state (tests, closed networks). Without
    /// it, [tls] must name a CA, a certificate and a key
    /// [env: ROOST_TLS_MODE=insecure]
    #[arg(long)]
    insecure: bool,
}

#[derive(Debug, Args)]
struct FileArgs {
    /// Config file to read [default: ./roost.toml if it exists, else none]
    #[arg(long, value_name = "PATH", env = "ROOST_CONFIG")]
    config: Option<PathBuf>,
}

// The flags below are not read from the environment by clap: the
// configuration layer reads ROOST_* itself (and names a variable whose value
// is bad), so their help only names the variable.
#[derive(Debug, Args)]
struct DevArgs {
    #[command(flatten)]
    file: FileArgs,

    /// Address to serve HTTP and WebSocket on [default: 127.0.0.1:8787]
    /// [env: ROOST_HTTP_LISTEN]
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,

    /// Address to serve the gRPC object API on (unauthenticated without
    /// [tls]: keep it private) [default: 127.0.0.1:8789] [env:
    /// ROOST_GRPC_LISTEN]
    #[arg(long, value_name = "ADDR")]
    grpc_listen: Option<SocketAddr>,
    /// Address to serve /metrics and /admin/hot-objects on [default:
    /// 127.0.0.1:9787] [env: ROOST_ADMIN_LISTEN]
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<SocketAddr>,

    /// Directory for the node's data, created if missing [default:
    /// ./roost-data] [env: ROOST_NODE_DATA_DIR]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Number of shards, 1..=4096; fixed when the data directory is created
    /// [default: 64] [env: ROOST_NODE_SHARDS]
    #[arg(long, value_name = "N")]
    shards: Option<u16>,

    /// Log line format [default: text] [env: ROOST_LOG_FORMAT]
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
struct NodeArgs {
    #[command(subcommand)]
    action: Option<NodeAction>,

    #[command(flatten)]
    file: FileArgs,

    /// This node's id, unique in the cluster, ≥ 1 [default: 1]
    /// [env: ROOST_NODE_ID]
    #[arg(long, value_name = "N", conflicts_with = "ordinal")]
    id: Option<u64>,

    /// Sets the id to ORDINAL + 1: for a Kubernetes StatefulSet, whose pods
    /// are numbered from 0 (the `apps.kubernetes.io/pod-index` label)
    #[arg(long, value_name = "ORDINAL")]
    ordinal: Option<u64>,

    /// Address to serve gRPC on [default: 127.0.0.1:8789]
    /// [env: ROOST_GRPC_LISTEN]
    #[arg(long, value_name = "ADDR")]
    grpc_listen: Option<SocketAddr>,

    /// Address to serve /metrics and /admin/hot-objects on [default:
    /// 127.0.0.1:9787] [env: ROOST_ADMIN_LISTEN]
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<SocketAddr>,

    /// Address other nodes and edges reach this node at [default: the
    /// bound --grpc-listen address]. A --join address equal to it is
    /// skipped, so all nodes may share one --join list
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,

    /// Nodes to join the cluster through, comma-separated host:port
    /// [default: none: start a new cluster]
    #[arg(long, value_name = "ADDRS", value_delimiter = ',')]
    join: Vec<String>,

    /// Replicas per shard; the same on every node (a node with another
    /// value is refused when it joins)
    #[arg(long, value_name = "R", default_value_t = 3)]
    replication: usize,

    /// Directory for the node's data, created if missing [default:
    /// ./roost-data] [env: ROOST_NODE_DATA_DIR]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Number of shards, 1..=4096; the same on every node, fixed when the
    /// cluster is created [default: 64] [env: ROOST_NODE_SHARDS]
    #[arg(long, value_name = "N")]
    shards: Option<u16>,

    /// Log line format [default: text] [env: ROOST_LOG_FORMAT]
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<LogFormat>,

    #[command(flatten)]
    insecure: InsecureArg,
}

/// Operator commands on a running cluster's nodes.
#[derive(Debug, Subcommand)]
enum NodeAction {
    /// Take a node out of the cluster for good (scale in)
    ///
    /// Marks the node draining, waits until every shard has moved its
    /// replica elsewhere (a replacement catches up and gets a vote before
    /// the drained replica leaves; the node leads nothing), then removes it
    /// from the cluster directory. Prints progress and `roost node drain:
    /// node N removed` when done; stop the node's process afterwards. Safe
    /// to run again after a timeout. Refused if fewer active nodes than the
    /// replication factor would remain.
    Drain(DrainArgs),
    /// Make a draining node (not yet removed) active again
    ///
    /// The ring gives it replicas as before.
    Undrain(UndrainArgs),
}

#[derive(Debug, Args)]
struct DrainArgs {
    /// The config file whose `[tls]` section (or ROOST_TLS_*) says how to
    /// reach the cluster's gRPC
    #[command(flatten)]
    file: FileArgs,

    /// Cluster nodes to reach the cluster through, comma-separated
    /// host:port (any of them; the drained node too, on a first run: the
    /// command learns the others from it before it drains)
    #[arg(long, value_name = "ADDRS", value_delimiter = ',', required = true)]
    join: Vec<String>,

    /// The id of the node to drain
    #[arg(long, value_name = "N")]
    id: u64,

    /// Give up after this many seconds (the node stays draining; run the
    /// command again to keep waiting)
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    timeout: u64,

    /// Leave the drained node in the directory (draining) instead of
    /// removing it
    #[arg(long)]
    keep: bool,
}

#[derive(Debug, Args)]
struct UndrainArgs {
    #[command(flatten)]
    file: FileArgs,

    /// Cluster nodes to reach the cluster through, comma-separated
    /// host:port (any of them)
    #[arg(long, value_name = "ADDRS", value_delimiter = ',', required = true)]
    join: Vec<String>,

    /// The id of the node to make active again
    #[arg(long, value_name = "N")]
    id: u64,
}

#[derive(Debug, Args)]
struct EdgeArgs {
    #[command(flatten)]
    file: FileArgs,

    /// Address to serve HTTP and WebSocket on [default: 127.0.0.1:8787]
    /// [env: ROOST_HTTP_LISTEN]
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,

    /// Address to serve /metrics on [default: 127.0.0.1:9787]
    /// [env: ROOST_ADMIN_LISTEN]
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<SocketAddr>,

    /// Address to serve the gRPC object API (roost.v1.Objects) on, for
    /// other services [default: 127.0.0.1:8789] [env: ROOST_GRPC_LISTEN]
    #[arg(long, value_name = "ADDR")]
    grpc_listen: Option<SocketAddr>,

    /// Cluster nodes to learn the cluster from, comma-separated host:port
    #[arg(long, value_name = "ADDRS", value_delimiter = ',', required = true)]
    join: Vec<String>,

    /// Log line format [default: text] [env: ROOST_LOG_FORMAT]
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<LogFormat>,

    #[command(flatten)]
    insecure: InsecureArg,
}

/// Raises the soft limit on open files to the hard limit: each socket a
/// process holds (a client's WebSocket at an edge, a connection) is a file.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open file limit"),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dev(args) => dev(args).await,
        Command::Node(args) => node(args).await,
        Command::Edge(args) => edge(args).await,
        Command::Config(args) => print_config(args),
        Command::Certs(args) => certs(args),
        Command::Cluster(ClusterAction::Status(args)) => cluster_status(args).await,
        Command::Backup(args) => backup(args).await,
        Command::Restore(args) => restore(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roost: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dev(args: DevArgs) -> anyhow::Result<()> {
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
    let telemetry = roost::telemetry::init(&config.log).context("start logging")?;
    raise_open_file_limit();
    if !config.tls.has_files() && !config.grpc.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %config.grpc.listen,
            "roost dev serves gRPC without TLS on a non-loopback address: anyone who reaches it can call every object"
        );
    }
    let result = serve(config).await;
    // The last spans leave before the process does.
    telemetry.shutdown().await;
    result
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let mut signals = Signals::listen()?;

    let data_dir = config.node.data_dir.clone();
    let node = roost::node::DevNode::start(config)
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

async fn node(args: NodeArgs) -> anyhow::Result<()> {
    match args.action {
        Some(NodeAction::Drain(drain)) => return drain_node(drain).await,
        Some(NodeAction::Undrain(undrain)) => return undrain_node(undrain).await,
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
    let telemetry = roost::telemetry::init(&config.log).context("start logging")?;
    raise_open_file_limit();
    warn_if_insecure(&config, "roost node");
    let result = serve_node(config, args.advertise, args.join, args.replication).await;
    // The last spans leave before the process does.
    telemetry.shutdown().await;
    result
}

async fn serve_node(
    config: Config,
    advertise: Option<String>,
    join: Vec<String>,
    replication: usize,
) -> anyhow::Result<()> {
    let mut signals = Signals::listen()?;
    let cluster = roost::node::cluster::ClusterArgs {
        grpc_listen: config.grpc.listen,
        advertise,
        seeds: join,
        replication,
    };
    let node = roost::node::cluster::ClusterNode::start(config, cluster)
        .await
        .context("start node")?;
    println!("roost node: grpc on {}", node.grpc_addr());
    println!("roost node: admin on http://{}", node.admin_addr());
    signals.first("draining and shutting down").await;
    signals
        .during(async { node.shutdown().await.context("shut down node") })
        .await
}

async fn drain_node(args: DrainArgs) -> anyhow::Result<()> {
    use roost::cluster::drain;
    let id = args.id;
    let opts = drain::DrainOptions {
        seeds: args.join,
        node: id,
        timeout: std::time::Duration::from_secs(args.timeout),
        remove: !args.keep,
        tls: cluster_tls(&args.file)?,
    };
    println!("roost node drain: marking node {id} draining");
    drain::drain(&opts, |progress| {
        if progress.done() {
            println!("roost node drain: node {id} holds no replicas");
        } else {
            println!("roost node drain: node {id}: {progress}");
        }
    })
    .await
    .context("drain")?;
    if args.keep {
        println!("roost node drain: node {id} drained (kept in the directory)");
    } else {
        println!("roost node drain: node {id} removed; stop its process");
    }
    Ok(())
}

/// How an operator command reaches the cluster's gRPC: plain, or mutual
/// TLS with the `[tls]` files of the configuration (file and ROOST_TLS_*).
fn cluster_tls(file: &FileArgs) -> anyhow::Result<roost::rpc::tls::Tls> {
    let config = Config::build(file.config.as_deref(), Overrides::default())
        .context("load configuration")?;
    roost::node::rpc_tls(&config).context("load TLS files")
}

async fn cluster_status(args: StatusArgs) -> anyhow::Result<()> {
    let tls = cluster_tls(&args.file)?;
    let status = roost::cluster::status::gather(&args.join, &tls)
        .await
        .map_err(anyhow::Error::msg)
        .context("cluster status")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.table());
    }
    Ok(())
}

async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let tls = cluster_tls(&args.file)?;
    let out = match (args.out, args.under) {
        (Some(out), _) => out,
        (None, Some(under)) => {
            let t = time::OffsetDateTime::now_utc();
            under.join(format!(
                "backup-{:04}{:02}{:02}T{:02}{:02}{:02}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            ))
        }
        (None, None) => anyhow::bail!("--out or --under is required"),
    };
    let opts = roost::cluster::backup::BackupOptions {
        seeds: args.join,
        out,
        shards: args.shards,
        timeout: std::time::Duration::from_secs(args.timeout),
    };
    let manifest = roost::cluster::backup::run(&opts, &tls)
        .await
        .context("backup")?;
    println!(
        "roost backup: {} shards into {}",
        manifest.shards.len(),
        opts.out.display()
    );
    Ok(())
}

async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let flags = Overrides {
        data_dir: args.data_dir,
        shards: args.shards,
        ..Overrides::default()
    };
    let mut config =
        Config::build(args.file.config.as_deref(), flags).context("load configuration")?;
    if let Some(id) = args.id {
        config.node.id = id;
    }
    let opts = roost::cluster::restore::RestoreOptions {
        from: args.from,
        data_dir: config.node.data_dir.clone(),
        node_id: config.node.id,
        advertise: args.advertise,
        shards: config.node.shards,
        replication: args.replication,
    };
    let manifest = roost::cluster::restore::run(&opts)
        .await
        .context("restore")?;
    println!(
        "roost restore: {} shards into {}; start node {} there without --join",
        manifest.shards.len(),
        opts.data_dir.display(),
        opts.node_id
    );
    Ok(())
}

async fn undrain_node(args: UndrainArgs) -> anyhow::Result<()> {
    roost::cluster::drain::set_state(
        &args.join,
        args.id,
        false,
        std::time::Duration::from_secs(60),
        &cluster_tls(&args.file)?,
    )
    .await
    .context("undrain")?;
    println!("roost node undrain: node {} is active", args.id);
    Ok(())
}

async fn edge(args: EdgeArgs) -> anyhow::Result<()> {
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
    let telemetry = roost::telemetry::init(&config.log).context("start logging")?;
    raise_open_file_limit();
    warn_if_insecure(&config, "roost edge");
    let result = serve_edge(config, args.join).await;
    telemetry.shutdown().await;
    result
}

async fn serve_edge(config: Config, join: Vec<String>) -> anyhow::Result<()> {
    let mut signals = Signals::listen()?;
    let edge = roost::node::edge::EdgeNode::start(config, join)
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
    if config.tls.mode != roost::config::TlsMode::Insecure {
        return;
    }
    let warning = format!(
        "{what} runs INSECURE (--insecure / tls.mode = \"insecure\"): its gRPC has no TLS and no \
         authentication; anyone who reaches it can rewrite the cluster's membership and data"
    );
    tracing::warn!("{warning}");
    eprintln!("roost: WARNING: {warning}");
    roost::telemetry::admin::set_readyz_warning(warning);
}

/// `roost certs`.
fn certs(args: CertsArgs) -> anyhow::Result<()> {
    use roost::rpc::auth::Role;
    let roles = args
        .roles
        .iter()
        .map(|r| match r {
            CertRole::Node => Role::Node,
            CertRole::Edge => Role::Edge,
            CertRole::Operator => Role::Operator,
        })
        .collect();
    let written = roost::rpc::certs::issue(&roost::rpc::certs::CertsRequest {
        dir: args.out,
        roles,
        dns: args.dns,
        ips: args.ip,
        days: args.days,
    })
    .context("roost certs")?;
    for path in written {
        println!("roost certs: wrote {}", path.display());
    }
    Ok(())
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

fn print_config(args: FileArgs) -> anyhow::Result<()> {
    let config = Config::build(args.config.as_deref(), Overrides::default())
        .context("load configuration")?;
    print!("{}", config.to_documented_toml()?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// The defaults written in the flags' help match the real ones.
    #[test]
    fn help_shows_the_real_defaults() {
        let mut command = Cli::command();
        let help = command
            .find_subcommand_mut("dev")
            .expect("dev subcommand")
            .render_long_help()
            .to_string();
        let defaults = Config::default();
        for shown in [
            format!("[default: {}]", defaults.http.listen),
            format!("[default: {}]", defaults.grpc.listen),
            format!("[default: {}]", defaults.admin.listen),
            format!("[default: {}]", defaults.node.data_dir.display()),
            format!("[default: {}]", defaults.node.shards),
            "[default: text]".to_owned(),
        ] {
            let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(flat.contains(&shown), "{shown} missing from:\n{help}");
        }
    }
}
