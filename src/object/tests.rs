//! In-process tests of the runtime with test classes: a single-node shard
//! group over a temp RocksDB, events handed straight to [`Runtime`].

use std::sync::Arc;
use std::time::Duration;

use ::http::StatusCode;
use bytes::Bytes;
use tempfile::TempDir;

use super::*;
use crate::id::{ObjectId, ObjectKey};
use crate::replication::Replicas;
use crate::storage::Db;

const WAIT: Duration = Duration::from_secs(5);

struct Node {
    _dir: TempDir,
    replicas: Arc<Replicas>,
    runtime: Runtime,
}

async fn node(bindings: Bindings, opts: RuntimeOptions) -> Node {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open(dir.path()).expect("open db");
    let replicas = Replicas::open_single_node(db.clone(), 1, "local".into(), 2, Default::default())
        .await
        .expect("open replicas");
    replicas
        .wait_for_leaders(WAIT)
        .await
        .expect("every shard elects itself");
    let replicas = Arc::new(replicas);
    let runtime = Runtime::start(db, replicas.clone(), bindings, opts).expect("start runtime");
    Node {
        _dir: dir,
        replicas,
        runtime,
    }
}

impl Node {
    async fn stop(self) {
        self.runtime.shutdown().await;
        self.replicas.shutdown().await;
    }
}

fn key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new(ns, ObjectId::from_name(ns, name))
}

fn get(path: &str) -> Request {
    let mut req = Request::new(Bytes::new());
    *req.uri_mut() = format!("http://o{path}").parse().expect("uri");
    req
}

/// Deletes `n` keys (in chunks of 100) in one event.
struct Deleter;

impl DurableObject for Deleter {
    async fn new(_: &mut Context) -> Result<Self> {
        Ok(Deleter)
    }

    async fn fetch(&mut self, ctx: &mut Context, req: Request) -> Result<Response> {
        let n: usize = query_param(&req, "n")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let keys: Vec<String> = (0..n).map(|i| format!("key-{i:08}")).collect();
        for chunk in keys.chunks(100) {
            let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
            ctx.storage().delete_many(&chunk)?;
        }
        Ok(text(StatusCode::OK, "deleted"))
    }
}

/// Defect 5: deletes count toward the event's write limit, so no event
/// builds a log entry larger than the limit allows (with a clear 413).
#[tokio::test]
async fn deletes_count_toward_the_event_write_limit() {
    let opts = RuntimeOptions {
        limits: Limits {
            max_event_write_bytes: 64 * 1024,
            ..Limits::default()
        },
        ..RuntimeOptions::default()
    };
    let node = node(Bindings::new().bind::<Deleter>("DELETER"), opts).await;
    let k = key("DELETER", "a");
    // 12-byte keys + 16 bytes each: 2000 fit in 64 KiB, 3000 do not.
    let ok = node.runtime.fetch(k.clone(), get("/?n=2000")).await;
    assert_eq!(ok.expect("fetch").response.status(), StatusCode::OK);
    let too_many = node.runtime.fetch(k, get("/?n=3000")).await;
    let response = too_many.expect("fetch").response;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: serde_json::Value = serde_json::from_slice(response.body()).expect("json body");
    assert_eq!(body["error"], "write_too_large", "{body}");
    node.stop().await;
}
