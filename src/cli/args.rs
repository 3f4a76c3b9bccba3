//! The command line: every subcommand and flag of `roost` (and of any
//! binary built on [`super::main`]), parsed by clap. Only parsing lives
//! here; `serve.rs` and `ops.rs` act on it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::LogFormat;

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
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a single-node Roost for development, until SIGTERM or Ctrl-C.
    ///
    /// Serves the app over HTTP and WebSocket on --listen, the gRPC
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
    /// Run a stateless edge: serves the app's router over HTTP and
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
pub(crate) struct BackupArgs {
    /// The config file whose `[tls]` section (or ROOST_TLS_*) says how to
    /// reach the cluster's gRPC
    #[command(flatten)]
    pub(crate) file: FileArgs,

    /// Cluster nodes to reach the cluster through, comma-separated host:port
    #[arg(long, value_name = "ADDRS", value_delimiter = ',', required = true)]
    pub(crate) join: Vec<String>,

    /// Directory to write the backup into (created; must not hold a backup)
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "under",
        conflicts_with = "under"
    )]
    pub(crate) out: Option<PathBuf>,

    /// Write the backup into a new directory DIR/backup-YYYYMMDDTHHMMSSZ
    /// (UTC, when it began): for scheduled backups into one volume
    #[arg(long, value_name = "DIR")]
    pub(crate) under: Option<PathBuf>,

    /// Only these shards: N or A-B (inclusive) [default: all]
    #[arg(long, value_name = "RANGE", value_parser = crate::cluster::backup::parse_range)]
    pub(crate) shards: Option<std::ops::RangeInclusive<u32>>,

    /// Give up on a shard whose leader has not answered after this many seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub(crate) timeout: u64,
}

#[derive(Debug, Args)]
pub(crate) struct RestoreArgs {
    #[command(flatten)]
    pub(crate) file: FileArgs,

    /// The backup directory (the one holding manifest.json)
    #[arg(long, value_name = "DIR")]
    pub(crate) from: PathBuf,

    /// The new node's data directory; must not exist or be empty
    /// [default: ./roost-data] [env: ROOST_NODE_DATA_DIR]
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,

    /// The new node's id [default: 1] [env: ROOST_NODE_ID]
    #[arg(long, value_name = "N")]
    pub(crate) id: Option<u64>,

    /// The address the new node will advertise (its gRPC host:port, as
    /// other nodes reach it)
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) advertise: String,

    /// The new cluster's number of shards; must be the backup's
    /// [default: 16] [env: ROOST_NODE_SHARDS]
    #[arg(long, value_name = "N")]
    pub(crate) shards: Option<u16>,

    /// The new cluster's replicas per shard; must be the backup's
    #[arg(long, value_name = "R", default_value_t = 3)]
    pub(crate) replication: u32,
}

/// Operator commands on a whole cluster.
#[derive(Debug, Subcommand)]
pub(crate) enum ClusterAction {
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
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) file: FileArgs,

    /// Cluster nodes to ask, comma-separated host:port (the first that
    /// answers lists the others)
    #[arg(long, value_name = "ADDRS", value_delimiter = ',', required = true)]
    pub(crate) join: Vec<String>,

    /// Print JSON instead of tables
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct CertsArgs {
    /// Directory for the files, created if missing
    #[arg(long, value_name = "DIR", default_value = "roost-certs")]
    pub(crate) out: PathBuf,

    /// DNS names the certificates serve as besides localhost,
    /// comma-separated (every name clients dial: node hosts, Services)
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub(crate) dns: Vec<String>,

    /// IP addresses the certificates serve as besides loopback,
    /// comma-separated
    #[arg(long, value_name = "IPS", value_delimiter = ',')]
    pub(crate) ip: Vec<std::net::IpAddr>,

    /// Roles to issue a certificate for, comma-separated
    #[arg(
        long,
        value_name = "ROLES",
        value_delimiter = ',',
        default_value = "node,edge,operator"
    )]
    pub(crate) roles: Vec<CertRole>,

    /// Validity of the certificates in days (a new CA: twice as long)
    #[arg(long, value_name = "DAYS", default_value_t = 365)]
    pub(crate) days: u32,
}

/// A role `roost certs` issues a certificate for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum CertRole {
    Node,
    Edge,
    Operator,
}

/// Accepting unauthenticated cluster traffic, said out loud.
#[derive(Debug, Args)]
pub(crate) struct InsecureArg {
    /// Run without mutual TLS: plain gRPC that anyone who reaches it can
    /// use to change the cluster's state (tests, closed networks). Without
    /// it, [tls] must name a CA, a certificate and a key
    /// [env: ROOST_TLS_MODE=insecure]
    #[arg(long)]
    pub(crate) insecure: bool,
}

#[derive(Debug, Args)]
pub(crate) struct FileArgs {
    /// Config file to read [default: ./roost.toml if it exists, else none]
    #[arg(long, value_name = "PATH", env = "ROOST_CONFIG")]
    pub(crate) config: Option<PathBuf>,
}

// The flags below are not read from the environment by clap: the
// configuration layer reads ROOST_* itself (and names a variable whose value
// is bad), so their help only names the variable.
#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    #[command(flatten)]
    pub(crate) file: FileArgs,

    /// Address to serve HTTP and WebSocket on [default: 127.0.0.1:8787]
    /// [env: ROOST_HTTP_LISTEN]
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Option<SocketAddr>,

    /// Address to serve the gRPC object API on (unauthenticated without
    /// [tls]: keep it private) [default: 127.0.0.1:8789] [env:
    /// ROOST_GRPC_LISTEN]
    #[arg(long, value_name = "ADDR")]
    pub(crate) grpc_listen: Option<SocketAddr>,
    /// Address to serve /metrics and /admin/hot-objects on [default:
    /// 127.0.0.1:9787] [env: ROOST_ADMIN_LISTEN]
    #[arg(long, value_name = "ADDR")]
    pub(crate) admin_listen: Option<SocketAddr>,

    /// Directory for the node's data, created if missing [default:
    /// ./roost-data] [env: ROOST_NODE_DATA_DIR]
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,

    /// Number of shards, 1..=4096; fixed when the data directory is created
    /// [default: 16] [env: ROOST_NODE_SHARDS]
    #[arg(long, value_name = "N")]
    pub(crate) shards: Option<u16>,

    /// Log line format [default: text] [env: ROOST_LOG_FORMAT]
    #[arg(long, value_name = "FORMAT")]
    pub(crate) log_format: Option<LogFormat>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct NodeArgs {
    #[command(subcommand)]
    pub(crate) action: Option<NodeAction>,

    #[command(flatten)]
    pub(crate) file: FileArgs,

    /// This node's id, unique in the cluster, ≥ 1 [default: 1]
    /// [env: ROOST_NODE_ID]
    #[arg(long, value_name = "N", conflicts_with = "ordinal")]
    pub(crate) id: Option<u64>,

    /// Sets the id to ORDINAL + 1: for a Kubernetes StatefulSet, whose pods
    /// are numbered from 0 (the `apps.kubernetes.io/pod-index` label)
    #[arg(long, value_name = "ORDINAL")]
    pub(crate) ordinal: Option<u64>,

    /// Address to serve gRPC on [default: 127.0.0.1:8789]
    /// [env: ROOST_GRPC_LISTEN]
    #[arg(long, value_name = "ADDR")]
    pub(crate) grpc_listen: Option<SocketAddr>,

    /// Address to serve /metrics and /admin/hot-objects on [default:
    /// 127.0.0.1:9787] [env: ROOST_ADMIN_LISTEN]
    #[arg(long, value_name = "ADDR")]
    pub(crate) admin_listen: Option<SocketAddr>,

    /// Address other nodes and edges reach this node at [default: the
    /// bound --grpc-listen address]. A --join address equal to it is
    /// skipped, so all nodes may share one --join list
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) advertise: Option<String>,

    /// Nodes to join the cluster through, comma-separated host:port
    /// [default: none: start a new cluster]
    #[arg(long, value_name = "ADDRS", value_delimiter = ',')]
    pub(crate) join: Vec<String>,

    /// Replicas per shard; the same on every node (a node with another
    /// value is refused when it joins)
    #[arg(long, value_name = "R", default_value_t = 3)]
    pub(crate) replication: usize,

    /// Directory for the node's data, created if missing [default:
    /// ./roost-data] [env: ROOST_NODE_DATA_DIR]
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,

    /// Number of shards, 1..=4096; the same on every node, fixed when the
    /// cluster is created [default: 16] [env: ROOST_NODE_SHARDS]
    #[arg(long, value_name = "N")]
    pub(crate) shards: Option<u16>,

    /// Log line format [default: text] [env: ROOST_LOG_FORMAT]
    #[arg(long, value_name = "FORMAT")]
    pub(crate) log_format: Option<LogFormat>,

    #[command(flatten)]
    pub(crate) insecure: InsecureArg,
}

/// Operator commands on a running cluster's nodes.
#[derive(Debug, Subcommand)]
pub(crate) enum NodeAction {
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
pub(crate) struct DrainArgs {
    /// The config file whose `[tls]` section (or ROOST_TLS_*) says how to
    /// reach the cluster's gRPC
    #[command(flatten)]
    pub(crate) file: FileArgs,

    /// Cluster nodes to reach the cluster through, comma-separated
    /// host:port (any of them; the drained node too, on a first run: the
    /// command learns the others from it before it drains)
    #[arg(long, value_name = "ADDRS", value_delimiter = ',', required = true)]
    pub(crate) join: Vec<String>,

    /// The id of the node to drain
    #[arg(long, value_name = "N")]
    pub(crate) id: u64,

    /// Give up after this many seconds (the node stays draining; run the
    /// command again to keep waiting)
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub(crate) timeout: u64,

    /// Leave the drained node in the directory (draining) instead of
    /// removing it
    #[arg(long)]
    pub(crate) keep: bool,
}

#[derive(Debug, Args)]
pub(crate) struct UndrainArgs {
    #[command(flatten)]
    pub(crate) file: FileArgs,

    /// Cluster nodes to reach the cluster through, comma-separated
    /// host:port (any of them)
    #[arg(long, value_name = "ADDRS", value_delimiter = ',', required = true)]
    pub(crate) join: Vec<String>,

    /// The id of the node to make active again
    #[arg(long, value_name = "N")]
    pub(crate) id: u64,
}

#[derive(Debug, Args)]
pub(crate) struct EdgeArgs {
    #[command(flatten)]
    pub(crate) file: FileArgs,

    /// Address to serve HTTP and WebSocket on [default: 127.0.0.1:8787]
    /// [env: ROOST_HTTP_LISTEN]
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Option<SocketAddr>,

    /// Address to serve /metrics on [default: 127.0.0.1:9787]
    /// [env: ROOST_ADMIN_LISTEN]
    #[arg(long, value_name = "ADDR")]
    pub(crate) admin_listen: Option<SocketAddr>,

    /// Address to serve the gRPC object API (roost.v1.Objects) on, for
    /// other services [default: 127.0.0.1:8789] [env: ROOST_GRPC_LISTEN]
    #[arg(long, value_name = "ADDR")]
    pub(crate) grpc_listen: Option<SocketAddr>,

    /// Cluster nodes to learn the cluster from, comma-separated host:port
    #[arg(long, value_name = "ADDRS", value_delimiter = ',', required = true)]
    pub(crate) join: Vec<String>,

    /// Log line format [default: text] [env: ROOST_LOG_FORMAT]
    #[arg(long, value_name = "FORMAT")]
    pub(crate) log_format: Option<LogFormat>,

    #[command(flatten)]
    pub(crate) insecure: InsecureArg,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::config::Config;

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
