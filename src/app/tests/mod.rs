//! In-process tests of the seed app: a single-node runtime over a temp
//! RocksDB, with requests handed straight to [`SeedApp`].

mod chat;
mod counter;
mod limiter;
mod list_model;
mod routes;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode, header};
use serde_json::Value;
use tempfile::TempDir;

use super::SeedApp;
use crate::object::{
    self, Bindings, ClientIp, Env, Message, Request, Response, Runtime, RuntimeOptions,
    ServerFrame, SocketLink, UpgradeLink, Worker,
};
use crate::replication::Replicas;
use crate::storage::Db;

/// How long a test waits for an expected frame.
const FRAME_WAIT: Duration = Duration::from_secs(5);

/// A node's worth of runtime: storage, one replica, the app's classes.
pub(super) struct Harness {
    /// Keeps the database directory alive for the test.
    _dir: TempDir,
    pub db: Db,
    pub replicas: Arc<Replicas>,
    pub opts: RuntimeOptions,
    pub runtime: Runtime,
    pub env: Env,
}

impl Harness {
    pub async fn new() -> Harness {
        Self::with_options(RuntimeOptions::default()).await
    }

    pub async fn with_options(opts: RuntimeOptions) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(dir.path()).expect("open db");
        let replicas =
            Replicas::open_single_node(db.clone(), 1, "local".into(), 4, Default::default())
                .await
                .expect("open replicas");
        replicas
            .wait_for_leaders(std::time::Duration::from_secs(10))
            .await
            .expect("every shard elects itself");
        let replicas = Arc::new(replicas);
        let (runtime, env) = start(&db, &replicas, super::bindings(), opts.clone());
        Harness {
            _dir: dir,
            db,
            replicas,
            opts,
            runtime,
            env,
        }
    }

    /// Stops the runtime and starts a fresh one with `bindings` over the
    /// same storage (a node restart, as far as objects can tell).
    pub async fn restart(&mut self, bindings: Bindings) {
        self.runtime.shutdown().await;
        let (runtime, env) = start(&self.db, &self.replicas, bindings, self.opts.clone());
        self.runtime = runtime;
        self.env = env;
    }

    /// Sends `req` through the router.
    pub async fn send(&self, req: Request) -> Response {
        SeedApp.fetch(req, &self.env).await
    }

    pub async fn call(&self, method: Method, uri: &str) -> Response {
        self.send(request(method, uri)).await
    }

    pub async fn get(&self, uri: &str) -> Response {
        self.call(Method::GET, uri).await
    }

    pub async fn post(&self, uri: &str) -> Response {
        self.call(Method::POST, uri).await
    }

    /// Sends `req` to the object `name` of `binding` directly, bypassing
    /// the router.
    pub async fn direct(&self, binding: &str, name: &str, req: Request) -> Response {
        let ns = self.env.namespace(binding).expect("namespace");
        ns.get(ns.id_from_name(name))
            .fetch(req)
            .await
            .expect("object fetch")
    }

    /// Opens a WebSocket through the router; panics unless it is accepted.
    pub async fn connect(&self, uri: &str) -> SocketLink {
        let resp = self.send(upgrade_request(uri)).await;
        assert_eq!(
            resp.status(),
            StatusCode::SWITCHING_PROTOCOLS,
            "{}",
            body_text(&resp)
        );
        resp.extensions()
            .get::<UpgradeLink>()
            .expect("101 carries the socket")
            .take()
            .expect("socket link not taken yet")
    }

    pub fn send_text(&self, link: &SocketLink, text: &str) {
        self.runtime
            .socket_message(&link.object, link.socket, Message::Text(text.to_owned()))
            .expect("deliver message");
    }

    /// Waits (up to [`FRAME_WAIT`]) until `cond` holds.
    pub async fn wait_until(&self, cond: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + FRAME_WAIT;
        while !cond() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "condition not met in time"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn close(&self, link: &SocketLink) {
        self.runtime
            .socket_closed(&link.object, link.socket, 1000, String::new())
            .expect("deliver close");
    }
}

fn start(
    db: &Db,
    replicas: &Arc<Replicas>,
    bindings: Bindings,
    opts: RuntimeOptions,
) -> (Runtime, Env) {
    let runtime =
        Runtime::start(db.clone(), replicas.clone(), bindings, opts).expect("start runtime");
    let env = Env::new(Arc::new(runtime.clone()), runtime.namespaces());
    (runtime, env)
}

pub(super) fn request(method: Method, uri: &str) -> Request {
    http::Request::builder()
        .method(method)
        .uri(uri)
        .body(Bytes::new())
        .expect("valid request")
}

pub(super) fn request_from(method: Method, uri: &str, ip: &str) -> Request {
    let mut req = request(method, uri);
    let ip: IpAddr = ip.parse().expect("ip");
    req.extensions_mut().insert(ClientIp(ip));
    req
}

pub(super) fn upgrade_request(uri: &str) -> Request {
    http::Request::builder()
        .method(Method::GET)
        .uri(uri)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .body(Bytes::new())
        .expect("valid request")
}

pub(super) fn body_text(resp: &Response) -> String {
    String::from_utf8_lossy(resp.body()).into_owned()
}

pub(super) fn body_json(resp: &Response) -> Value {
    serde_json::from_slice(resp.body())
        .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", body_text(resp)))
}

/// Asserts a JSON error response with `status` and `code`.
pub(super) fn assert_error(resp: &Response, status: StatusCode, code: &str) {
    assert_eq!(resp.status(), status, "{}", body_text(resp));
    assert_eq!(
        resp.headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.as_bytes()),
        Some(&b"application/json"[..])
    );
    let body = body_json(resp);
    assert_eq!(body["error"], code, "{body}");
    assert!(body["message"].is_string(), "{body}");
}

/// The next frame sent to the socket, as JSON; fails after [`FRAME_WAIT`].
/// Attachment changes (state for the bridge) are skipped.
pub(super) async fn next_frame(link: &mut SocketLink) -> Value {
    loop {
        match tokio::time::timeout(FRAME_WAIT, link.outgoing.recv()).await {
            Ok(Some(ServerFrame::Attachment(_))) => continue,
            Ok(Some(ServerFrame::Message {
                message: Message::Text(text),
                ..
            })) => {
                return serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("frame is not JSON ({e}): {text}"));
            }
            Ok(other) => panic!("expected a text frame, got {other:?}"),
            Err(_) => panic!("no frame within {FRAME_WAIT:?}"),
        }
    }
}

pub(super) use object::now_ms;
