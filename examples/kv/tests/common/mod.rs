//! Test helpers: an in-process node on port 0 with a temp data dir.
#![allow(dead_code)]

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use roost::config::Config;
use roost::node::DevNode;
use roost_example_kv::{KvWorker, bindings};
use serde_json::{Value, json};

pub mod ws;

/// Generous deadline for conditions that should hold within milliseconds.
pub const SOON: Duration = Duration::from_secs(10);

pub fn config(dir: &Path) -> Config {
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".parse().expect("loopback address");
    config.grpc.listen = "127.0.0.1:0".parse().expect("loopback address");
    config.admin.listen = "127.0.0.1:0".parse().expect("loopback address");
    config.node.data_dir = dir.to_path_buf();
    config.node.shards = 4;
    config
}

pub async fn start(config: Config) -> DevNode {
    DevNode::start_with(config, bindings(), KvWorker)
        .await
        .expect("node starts")
}

/// Polls `check` until it returns true or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
}

impl Client {
    pub fn new(node: &DevNode) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: format!("http://{}", node.http_addr()),
        }
    }

    /// Sends one op to object `name`; returns (status, body).
    pub async fn op(&self, name: &str, op: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}/kv/{name}", self.base))
            .json(&op)
            .send()
            .await
            .expect("request is sent");
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Posts `body` as is (no JSON encoding) to object `name`.
    pub async fn raw(&self, name: &str, body: &'static str) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}/kv/{name}", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request is sent");
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// The value of `key` in object `name` (`Value::Null` if absent); panics
    /// unless the request succeeds.
    pub async fn get(&self, name: &str, key: &str) -> Value {
        let (status, body) = self.op(name, json!({"op": "get", "key": key})).await;
        assert_eq!(status, 200, "get {key} on {name}: {body}");
        body["value"].clone()
    }

    /// Sends `op` to object `name` and asserts it succeeds; returns the body.
    pub async fn ok(&self, name: &str, op: Value) -> Value {
        let (status, body) = self.op(name, op.clone()).await;
        assert_eq!(status, 200, "{op} on {name}: {body}");
        body
    }
}

/// Milliseconds since the Unix epoch (the clock alarms are set against).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}
