//! Layered configuration of a Roost node.
//!
//! Owns: the [`Config`] struct (every field documented with its unit and
//! default), how its layers combine — defaults < config file < `ROOST_*`
//! environment variables < command-line flags ([`Config::build`]) — and the
//! one [`Config::validate`] that every path ends in. `roost.example.toml` at
//! the repository root documents the same fields as a file; it is embedded as
//! [`DOCUMENTED_DEFAULTS`] and a test keeps it equal to `Config::default()`.
//!
//! Never does: start anything, touch the data directory, or read the
//! environment outside [`Config::build`]. What needs the disk (e.g. that
//! `node.shards` matches an existing data directory) the node checks.

mod documented;
mod layers;
#[cfg(test)]
mod tests;
mod validate;

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use documented::DOCUMENTED_DEFAULTS;

/// The config file read when no `--config` (or `ROOST_CONFIG`) names one,
/// relative to the working directory, and only if it exists.
pub const DEFAULT_FILE: &str = "roost.toml";

/// The most shards a node may be created with.
pub const MAX_SHARDS: u16 = 4096;

/// Why a configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("read config file {}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parse config file {}", path.display())]
    ParseFile {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("invalid configuration: {}", join(.0))]
    Invalid(Vec<Problem>),
    #[error("convert configuration to TOML: {0}")]
    Render(String),
}

/// One reason a configuration is invalid: the field's path and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field's path as in the config file, e.g. `node.shards`.
    pub field: &'static str,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn join(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
    lines.join("; ")
}

/// Everything a node is configured with. See `roost.example.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// How long shutdown waits for in-flight requests and writes to finish
    /// before the node stops anyway, in milliseconds. Default 10000.
    pub shutdown_grace_ms: u64,
    pub node: NodeConfig,
    pub http: HttpConfig,
    pub grpc: GrpcConfig,
    pub tls: TlsConfig,
    pub admin: AdminConfig,
    pub objects: ObjectsConfig,
    pub limits: LimitsConfig,
    pub websocket: WebSocketConfig,
    pub raft: RaftConfig,
    pub log: LogConfig,
}

/// `[node]`: this node's identity and storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id within its cluster: positive, unique per node.
    /// Default 1.
    pub id: u64,
    /// Directory holding the node's RocksDB database; created if missing.
    /// Default `./roost-data`.
    pub data_dir: PathBuf,
    /// Number of shards (Raft groups) the object id space is split into,
    /// 1..=4096. Fixed when the data directory is created: the node refuses
    /// to start when it differs from the count recorded there. Default 16
    /// (measured on 3 nodes: more shards cost idle CPU and group commits
    /// too small to batch, fewer would leave nodes of a larger cluster
    /// leading nothing; see BENCHMARKS.md). Data directories created before
    /// this default (64) need `shards = 64`.
    pub shards: u16,
}

/// `[http]`: the HTTP and WebSocket front door.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address the HTTP and WebSocket server listens on. Default
    /// `127.0.0.1:8787`.
    pub listen: SocketAddr,
    /// Request header carrying the client's IP address behind a proxy you
    /// trust, e.g. `CF-Connecting-IP` or `X-Forwarded-For`, believed only
    /// from peers in `trusted_proxies` (read from the right: the rightmost
    /// address that is not a trusted proxy). Default none: the client IP is
    /// the TCP peer address.
    pub trusted_proxy_header: Option<String>,
    /// The proxies (CIDRs or addresses) whose `trusted_proxy_header` is
    /// believed; they are also exempt from `max_connections_per_ip`.
    /// Default none.
    pub trusted_proxies: Vec<String>,
    /// Largest HTTP request body accepted, in bytes. Default 1 MiB.
    pub max_request_body_bytes: usize,
    /// Time a client gets to send a request's headers (also a new
    /// connection's first request, and the wait for the next request on a
    /// kept-alive HTTP/1.1 connection), in milliseconds. Default 10000.
    pub header_read_timeout_ms: u64,
    /// Time a client gets to send a request's whole body, in milliseconds;
    /// slower requests get 408. Default 30000.
    pub body_read_timeout_ms: u64,
    /// A connection with no request in progress for this long is closed,
    /// in milliseconds (WebSockets are kept alive by their heartbeats
    /// instead). Default 60000.
    pub idle_timeout_ms: u64,
    /// Most open client connections (WebSockets included); more are
    /// answered 503 and closed. Default 10000.
    pub max_connections: usize,
    /// Most open connections from one client address (an IPv6 /64), except
    /// from `trusted_proxies`; more are answered 429 and closed.
    /// Default 256.
    pub max_connections_per_ip: usize,
}

/// `[admin]`: the admin HTTP server (metrics and diagnostics), apart from
/// user traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Address the admin server listens on: Prometheus metrics on
    /// `/metrics`, the busiest objects on `/admin/hot-objects`. Default
    /// `127.0.0.1:9787`.
    pub listen: SocketAddr,
    /// Most open connections to the admin server; it shares `[http]`'s
    /// timeouts. Default 64.
    pub max_connections: usize,
}

/// `[grpc]`: the gRPC object API (Fetch, Call, Connect) that other services
/// inside the cluster network, and edges, call objects through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    /// Address the gRPC object API listens on. Without `[tls]` it has no
    /// authentication: keep it on a private network. Default
    /// `127.0.0.1:8789`.
    pub listen: SocketAddr,
}

/// `[tls]`: mutual TLS on node gRPC (Raft, the object API, the cluster
/// service) and on every gRPC client a node or edge opens. `roost node` and
/// `roost edge` refuse to start without the three files unless `mode` is
/// `insecure`; `roost dev` runs plain HTTP/2 without them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// `mutual` (the default): node gRPC needs the files below, and every
    /// call is checked against its certificate's role. `insecure`: plain
    /// HTTP/2 with no authentication at all (`--insecure`).
    pub mode: TlsMode,
    /// PEM file of the CA that signs every node's and edge's certificate;
    /// servers accept only clients with a certificate it signed, clients
    /// only servers. Default none.
    pub ca_file: Option<PathBuf>,
    /// PEM file of this process's certificate (chain), presented both as a
    /// server and as a client. Default none.
    pub cert_file: Option<PathBuf>,
    /// PEM file of the certificate's private key. Default none.
    pub key_file: Option<PathBuf>,
    /// The name clients check in every node's certificate instead of the
    /// host of the address they dial (a DNS name or IP address). Default
    /// none: the host of each node's address.
    pub server_name: Option<String>,
}

/// Whether a cluster's gRPC is authenticated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Mutual TLS with the `[tls]` files, required by `roost node` and
    /// `roost edge`.
    #[default]
    Mutual,
    /// No TLS and no authentication: anyone who reaches a node's gRPC port
    /// can change the cluster's state. For tests and closed networks only.
    Insecure,
}

/// `[objects]`: the object executors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectsConfig {
    /// An executor with no events and no pending writes for this long is
    /// evicted from memory (its state stays on disk), in milliseconds.
    /// Default 30000.
    pub idle_timeout_ms: u64,
    /// How long a call from one object to another may take before the
    /// caller gets `call_timeout`, in milliseconds. Objects run one event
    /// at a time, so a call cycle (A calls B, which calls A) ends only by
    /// this deadline. Default 30000.
    pub call_timeout_ms: u64,
    /// Classes renamed, as `"OLD=NEW"` (wrangler's `renamed_classes`):
    /// the app binds `NEW`, whose objects keep the ids, storage and alarms
    /// they had under `OLD`; `OLD` is no longer served. Chains resolve
    /// (`A=B`, `B=C`). Every node and edge must declare the same ones.
    /// Default none.
    pub renamed_classes: Vec<String>,
    /// Classes deleted (wrangler's `deleted_classes`; not bound by the
    /// app): each shard's leader deletes their objects' storage and alarms
    /// in the background, in batches through the shard's Raft log. Every
    /// node and edge must declare the same ones. Default none.
    pub deleted_classes: Vec<String>,
}

impl ObjectsConfig {
    /// The class migrations declared here.
    pub fn migrations(
        &self,
    ) -> Result<crate::object::Migrations, crate::object::migrations::Error> {
        let mut migrations = crate::object::Migrations::default();
        for spec in &self.renamed_classes {
            migrations.rename_spec(spec)?;
        }
        for name in &self.deleted_classes {
            migrations.delete(name);
        }
        Ok(migrations)
    }
}

/// `[limits]`: sizes the storage API refuses to exceed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest storage key, in bytes. Default 2048.
    pub max_key_bytes: usize,
    /// Largest storage value, in bytes (serialized). Default 131072.
    pub max_value_bytes: usize,
    /// Most keys one storage get/put/delete call may name. Default 128.
    pub max_keys_per_call: usize,
    /// Largest WebSocket attachment (the small value an object keeps with
    /// each of its sockets), in bytes (serialized). Default 2048.
    pub max_attachment_bytes: usize,
    /// Most objects with a live executor on this node; at the cap the least
    /// recently used idle ones are evicted first, and a request that still
    /// finds no room gets 503 `overloaded`. Default 100000.
    pub max_live_objects: usize,
    /// Most bytes of events (request bodies, socket messages, call
    /// payloads) queued for one object; more get 503 `overloaded`.
    /// Default 16 MiB.
    pub max_mailbox_bytes: usize,
    /// Built-in chat room: most sockets in one room; more get 503
    /// `room_full`. Default 1000.
    pub chat_max_sockets: usize,
    /// Built-in chat room: longest message text, in bytes; longer ones get
    /// an error frame. Default 4096.
    pub chat_max_message_bytes: usize,
    /// Built-in chat room: messages kept per room (the newest; older ones
    /// are deleted). Default 1000.
    pub chat_history_messages: usize,
    /// Built-in chat room: `/room/*` requests (WebSocket upgrades included)
    /// one client may make a minute; more get 429. 0: no limit.
    /// Default 100.
    pub chat_requests_per_minute: u64,
}

/// `[websocket]`: WebSocket connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Largest WebSocket message accepted or sent, in bytes. Default 1 MiB.
    pub max_message_bytes: usize,
    /// How often the server pings each socket, in milliseconds.
    /// Default 30000.
    pub heartbeat_interval_ms: u64,
    /// How long the server waits for the pong before closing the socket, in
    /// milliseconds. Default 10000.
    pub heartbeat_timeout_ms: u64,
    /// Outgoing frames queued per socket; a socket whose client reads too
    /// slowly to keep its queue under this is closed, in frames.
    /// Default 1024.
    pub max_socket_buffer: usize,
    /// WebSocket upgrades one client address (an IPv6 /64) may make a
    /// minute, as a burst or spread out; more get 429. 0: no limit.
    /// Default 120.
    pub max_upgrades_per_ip_per_minute: u32,
    /// When an object's owner changes (its node shuts down, drains or dies,
    /// or its shard's leadership moves), an edge keeps each of its sockets
    /// open and re-attaches it to the new owner. Client messages it holds
    /// meanwhile (with those sent to the old owner and not yet handled),
    /// in frames; more close the socket with 1013. Default 1024.
    pub reattach_buffer_frames: usize,
    /// The same bound in bytes. Default 1 MiB.
    pub reattach_buffer_bytes: usize,
    /// How long a socket may wait for a new owner before the edge closes
    /// it with 1012 (the client reconnects), in milliseconds. Default 30000.
    /// On a node: how long the new owner keeps listing a socket that has
    /// not come back (frames to it held) before its object is told it
    /// closed (1006).
    pub reattach_timeout_ms: u64,
    /// On a cluster node: frames each object keeps for its sockets (the
    /// newest, one per message however many sockets it went to), so that a
    /// socket whose owner died gets from the new owner the frames the old
    /// one released but its edge never received. 0 keeps none; at most
    /// 65535. Each is a write in the object's Raft entry. Default 256.
    /// (`roost dev` keeps none: its edge dies with its node.)
    pub replay_frames: usize,
}

/// `[raft]`: replication timing and batching, the same for every shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftConfig {
    /// How often a shard's leader sends heartbeats (each a round that
    /// renews its lease), in milliseconds. Default 100.
    pub heartbeat_ms: u64,
    /// Shortest election timeout, in milliseconds; must exceed
    /// `heartbeat_ms`. Default 150.
    pub election_timeout_min_ms: u64,
    /// Longest election timeout, in milliseconds; must exceed
    /// `election_timeout_min_ms`. Default 300. It is also the leader lease
    /// a follower grants (and so the lease a leader serves on, renewed by
    /// every heartbeat round a quorum answers): after a leader dies, its
    /// followers start an election once they have not heard from it for
    /// this long plus their own random timeout (checked every 1.5 × the
    /// larger of `heartbeat_ms` and half `election_timeout_min_ms`,
    /// openraft's tick), so failover takes about 0.5–0.8 s with the
    /// defaults. The larger of `heartbeat_ms` and half the shortest
    /// election timeout is also how long one AppendEntries may take: the
    /// largest entry (a group commit plus one event's writes) must reach a
    /// follower and be fsynced within it, so raise these for large events
    /// on slow links or disks.
    pub election_timeout_max_ms: u64,
    /// A shard takes a snapshot after this many log entries since its last
    /// one, in entries. Default 20000.
    pub snapshot_logs_since_last: u64,
    /// Largest group commit: the writes of many events packed into one
    /// Raft log entry, in bytes. Default 4 MiB.
    pub max_batch_bytes: usize,
    /// Log entries a shard keeps in flight at once (pipelining): more helps
    /// load spread over many objects, fewer makes bigger group commits for
    /// one hot object. Default 4.
    pub max_in_flight: usize,
    /// The largest snapshot a node accepts from a shard's leader (held in
    /// memory while it arrives), in bytes. Default 1 GiB.
    pub max_snapshot_bytes: u64,
    /// A shard leader with no request for this long (its followers caught
    /// up) quiesces: no heartbeats until the next request, and one ping per
    /// pair of nodes stands in for them, so an idle cluster's CPU does not
    /// grow with its shards. In milliseconds; 0 never quiesces. Default
    /// 2000 (ARCHITECTURE.md: "Idle shards quiesce").
    pub quiesce_ms: u64,
}

/// `[log]`: what the node logs and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Log line format. Default `text`.
    pub format: LogFormat,
    /// Which logs to emit, as a tracing filter (`info`,
    /// `roost=debug,info`, ...); `RUST_LOG`, when set, replaces it.
    /// Default `info`.
    pub filter: String,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people: one aligned line per event.
    Text,
    /// For machines: one JSON object per line.
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            shutdown_grace_ms: 10_000,
            node: NodeConfig::default(),
            http: HttpConfig::default(),
            grpc: GrpcConfig::default(),
            tls: TlsConfig::default(),
            admin: AdminConfig::default(),
            objects: ObjectsConfig::default(),
            limits: LimitsConfig::default(),
            websocket: WebSocketConfig::default(),
            raft: RaftConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: 1,
            data_dir: PathBuf::from("./roost-data"),
            shards: 16,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
            trusted_proxy_header: None,
            trusted_proxies: Vec::new(),
            max_request_body_bytes: 1024 * 1024,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            max_connections: 10_000,
            max_connections_per_ip: 256,
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9787)),
            max_connections: 64,
        }
    }
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8789)),
        }
    }
}

impl Default for ObjectsConfig {
    fn default() -> Self {
        ObjectsConfig {
            idle_timeout_ms: 30_000,
            call_timeout_ms: 30_000,
            renamed_classes: Vec::new(),
            deleted_classes: Vec::new(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_key_bytes: 2048,
            max_value_bytes: 128 * 1024,
            max_keys_per_call: 128,
            max_attachment_bytes: 2048,
            max_live_objects: 100_000,
            max_mailbox_bytes: 16 * 1024 * 1024,
            chat_max_sockets: 1000,
            chat_max_message_bytes: 4096,
            chat_history_messages: 1000,
            chat_requests_per_minute: 100,
        }
    }
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            max_message_bytes: 1024 * 1024,
            heartbeat_interval_ms: 30_000,
            heartbeat_timeout_ms: 10_000,
            max_socket_buffer: 1024,
            max_upgrades_per_ip_per_minute: 120,
            reattach_buffer_frames: 1024,
            reattach_buffer_bytes: 1024 * 1024,
            reattach_timeout_ms: 30_000,
            replay_frames: 256,
        }
    }
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            heartbeat_ms: 100,
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
            snapshot_logs_since_last: 20_000,
            max_batch_bytes: 4 * 1024 * 1024,
            max_in_flight: 4,
            max_snapshot_bytes: 1 << 30,
            quiesce_ms: 2_000,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            filter: "info".to_owned(),
        }
    }
}

/// The command-line layer: each `Some` replaces what the lower layers gave.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`: `http.listen`.
    pub listen: Option<SocketAddr>,
    /// `--grpc-listen`: `grpc.listen`.
    pub grpc_listen: Option<SocketAddr>,
    /// `--admin-listen`: `admin.listen`.
    pub admin_listen: Option<SocketAddr>,
    /// `--data-dir`: `node.data_dir`.
    pub data_dir: Option<PathBuf>,
    /// `--shards`: `node.shards`.
    pub shards: Option<u16>,
    /// `--log-format`: `log.format`.
    pub log_format: Option<LogFormat>,
    /// `--insecure`: `tls.mode = "insecure"`.
    pub insecure: bool,
}

impl Overrides {
    fn apply(self, config: &mut Config) {
        if let Some(listen) = self.listen {
            config.http.listen = listen;
        }
        if let Some(listen) = self.grpc_listen {
            config.grpc.listen = listen;
        }
        if let Some(listen) = self.admin_listen {
            config.admin.listen = listen;
        }
        if let Some(data_dir) = self.data_dir {
            config.node.data_dir = data_dir;
        }
        if let Some(shards) = self.shards {
            config.node.shards = shards;
        }
        if let Some(format) = self.log_format {
            config.log.format = format;
        }
        if self.insecure {
            config.tls.mode = TlsMode::Insecure;
        }
    }
}

impl Config {
    /// The effective configuration: defaults, then the config file (`file`,
    /// or `./roost.toml` if it exists), then every `ROOST_<SECTION>_<FIELD>`
    /// environment variable that is set, then `flags`; validated.
    pub fn build(file: Option<&Path>, flags: Overrides) -> Result<Config, Error> {
        Self::build_from(
            file,
            Path::new(DEFAULT_FILE),
            &|var| std::env::var_os(var),
            flags,
        )
    }

    /// [`Config::build`] with the default file and the environment given.
    fn build_from(
        file: Option<&Path>,
        default_file: &Path,
        env: &dyn Fn(&str) -> Option<OsString>,
        flags: Overrides,
    ) -> Result<Config, Error> {
        let mut config = layers::load(file, default_file, env)?;
        flags.apply(&mut config);
        config.validate()?;
        Ok(config)
    }

    /// This configuration as TOML, each field under its documentation from
    /// `roost.example.toml`: what `roost config` prints.
    pub fn to_documented_toml(&self) -> Result<String, Error> {
        documented::render(self)
    }
}

impl TlsConfig {
    /// Whether mutual TLS is configured: the three files are set.
    pub fn has_files(&self) -> bool {
        self.ca_file.is_some() && self.cert_file.is_some() && self.key_file.is_some()
    }

    /// What `roost node` and `roost edge` (`what`) require: the files, or
    /// `insecure` said out loud.
    pub fn check_cluster(&self, what: &str) -> Result<(), Error> {
        if self.mode == TlsMode::Mutual && !self.has_files() {
            return Err(Error::Invalid(vec![Problem {
                field: "tls",
                message: format!(
                    "{what} needs mutual TLS: set tls.ca_file, tls.cert_file and tls.key_file \
                     (`roost certs` makes a CA and certificates), or pass --insecure \
                     (tls.mode = \"insecure\", ROOST_TLS_MODE=insecure) to let anyone who \
                     reaches its gRPC port change the cluster"
                ),
            }]));
        }
        Ok(())
    }
}
