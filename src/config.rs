//! PLACEHOLDER — replaced by the layered configuration (branch `cli`).

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Clone, Debug)]
pub struct Config {
    pub node: NodeConfig,
    pub http: HttpConfig,
    pub objects: ObjectsConfig,
    pub limits: LimitsConfig,
    pub websocket: WebSocketConfig,
    pub raft: RaftConfig,
    pub shutdown_grace_ms: u64,
}
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: u64,
    pub data_dir: PathBuf,
    pub shards: u16,
}
#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub trusted_proxy_header: Option<String>,
    pub max_request_body_bytes: usize,
}
#[derive(Clone, Debug)]
pub struct ObjectsConfig {
    pub idle_timeout_ms: u64,
}
#[derive(Clone, Debug)]
pub struct LimitsConfig {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub max_keys_per_call: usize,
    pub max_attachment_bytes: usize,
}
#[derive(Clone, Debug)]
pub struct WebSocketConfig {
    pub max_message_bytes: usize,
    pub heartbeat_interval_ms: u64,
    pub heartbeat_timeout_ms: u64,
    pub max_socket_buffer: usize,
}
#[derive(Clone, Debug)]
pub struct RaftConfig {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub snapshot_logs_since_last: u64,
    pub max_batch_bytes: usize,
    pub max_in_flight: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct Error(String);

impl Config {
    pub fn validate(&self) -> Result<(), Error> {
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node: NodeConfig {
                id: 1,
                data_dir: "./roost-data".into(),
                shards: 64,
            },
            http: HttpConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
                trusted_proxy_header: None,
                max_request_body_bytes: 1 << 20,
            },
            objects: ObjectsConfig {
                idle_timeout_ms: 30_000,
            },
            limits: LimitsConfig {
                max_key_bytes: 2048,
                max_value_bytes: 131_072,
                max_keys_per_call: 128,
                max_attachment_bytes: 2048,
            },
            websocket: WebSocketConfig {
                max_message_bytes: 1 << 20,
                heartbeat_interval_ms: 30_000,
                heartbeat_timeout_ms: 10_000,
                max_socket_buffer: 1024,
            },
            raft: RaftConfig {
                heartbeat_ms: 100,
                election_timeout_min_ms: 300,
                election_timeout_max_ms: 600,
                snapshot_logs_since_last: 20_000,
                max_batch_bytes: 4 << 20,
                max_in_flight: 8,
            },
            shutdown_grace_ms: 10_000,
        }
    }
}
