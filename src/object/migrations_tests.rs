//! Class migrations and `id.name` on one node over a real RocksDB and Raft
//! group, restarted (database closed and reopened) between steps.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::http::StatusCode;

use super::tests::{SHARDS, get};
use super::*;
use crate::id::{ObjectId, ObjectKey};
use crate::replication::Replicas;
use crate::storage::Db;

const WAIT: Duration = Duration::from_secs(20);

/// Stores `n` keys (`/fill?n=&alarm_in_ms=`), sets an alarm that records
/// it fired, and reports what it holds (`/state`).
struct Filler;

impl DurableObject for Filler {
    async fn new(_: &mut Context) -> Result<Self> {
        Ok(Filler)
    }

    async fn fetch(&mut self, ctx: &mut Context, req: Request) -> Result<Response> {
        let param = |name| query_param(&req, name).and_then(|v| v.parse::<u64>().ok());
        if req.uri().path() == "/fill" {
            for i in 0..param("n").unwrap_or(0) {
                ctx.storage().put(&format!("k-{i:04}"), i.to_string())?;
            }
            if let Some(after) = param("alarm_in_ms") {
                ctx.storage().set_alarm(now_ms() + after)?;
            }
            return Ok(text(StatusCode::OK, "filled"));
        }
        let keys = ctx.storage().list(&ListOptions::default())?;
        let fired = ctx.storage().get("fired")?.is_some();
        let state = serde_json::json!({
            "keys": keys.iter().filter(|(k, _)| k.starts_with("k-")).count(),
            "fired": fired,
            "name": ctx.name(),
            "namespace": ctx.namespace(),
        });
        Ok(json(StatusCode::OK, &state))
    }

    async fn alarm(&mut self, ctx: &mut Context, _: AlarmInfo) -> Result<()> {
        ctx.storage().put("fired", "yes")?;
        Ok(())
    }
}

struct Node {
    db: Db,
    replicas: Arc<Replicas>,
    runtime: Runtime,
}

async fn open(dir: &Path, bindings: Bindings, opts: RuntimeOptions) -> Node {
    // The last handle of a stopped node's database may take a moment to
    // drop (background tasks finishing): wait until the lock is free.
    let deadline = Instant::now() + WAIT;
    let db = loop {
        match Db::open(dir) {
            Ok(db) => break db,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "database still open");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("open db: {e}"),
        }
    };
    let (replicas, runtime) = super::tests::serve(&db, bindings, opts).await;
    Node {
        db,
        replicas,
        runtime,
    }
}

/// [`open`] with a `Filler` bound as `binding` and default options.
async fn open_with(dir: &Path, binding: &str) -> Node {
    let bindings = Bindings::new().bind::<Filler>(binding);
    open(dir, bindings, RuntimeOptions::default()).await
}

impl Node {
    /// Shuts the node down and closes its database.
    async fn stop(self) {
        self.runtime.shutdown().await;
        self.replicas.shutdown().await;
    }

    fn env(&self) -> Env {
        self.runtime.object_env()
    }

    /// The state `/state` reports of `name` in `binding`.
    async fn state(&self, binding: &str, name: &str) -> serde_json::Value {
        let stub = self
            .env()
            .namespace(binding)
            .expect("bound")
            .get_by_name(name);
        let resp = stub.fetch(get("/state")).await.expect("state");
        serde_json::from_slice(resp.body()).expect("json")
    }

    async fn fill(&self, binding: &str, name: &str, n: usize, alarm_in_ms: u64) {
        let stub = self
            .env()
            .namespace(binding)
            .expect("bound")
            .get_by_name(name);
        let path = format!("/fill?n={n}&alarm_in_ms={alarm_in_ms}");
        let resp = stub.fetch(get(&path)).await.expect("fill");
        assert_eq!(resp.status(), StatusCode::OK);
    }

    /// Records (values and alarms) stored under `identity`, all shards.
    fn records(&self, identity: &str) -> usize {
        (0..SHARDS)
            .map(|s| {
                self.db
                    .namespace_records(s, identity, usize::MAX)
                    .expect("scan")
                    .len()
            })
            .sum()
    }

    /// Alarms stored under `identity`, all shards.
    fn alarms(&self, identity: &str) -> usize {
        (0..SHARDS)
            .flat_map(|s| self.db.shard_alarms(s).expect("alarms"))
            .filter(|(_, key)| &*key.namespace == identity)
            .count()
    }
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_class_keeps_every_objects_storage_and_alarm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = open_with(dir.path(), "OLD").await;
    let names: Vec<String> = (0..12).map(|i| format!("obj-{i}")).collect();
    for name in &names {
        node.fill("OLD", name, 5, 4_000).await;
    }
    for name in &names {
        assert_eq!(node.state("OLD", name).await["fired"], false, "not yet");
    }
    let stored = node.records("OLD");
    assert_eq!(stored, 12 * 6, "5 values and an alarm each");
    node.stop().await;

    let renamed = Bindings::new().bind::<Filler>("NEW").renamed("OLD", "NEW");
    let node = open(dir.path(), renamed, RuntimeOptions::default()).await;
    let ns = node.env().namespace("NEW").expect("NEW is bound");
    assert_eq!(
        ns.id_from_name("obj-0").id(),
        ObjectId::from_name("OLD", "obj-0"),
        "ids made from names keep their value"
    );
    for name in &names {
        let state = node.state("NEW", name).await;
        assert_eq!(state["keys"], 5, "{name}: {state}");
        assert_eq!(state["namespace"], "NEW");
        assert_eq!(state["name"], name.as_str());
    }
    // The alarms set under the old name fire in the renamed class.
    for name in &names {
        let deadline = Instant::now() + WAIT;
        while node.state("NEW", name).await["fired"] != true {
            assert!(Instant::now() < deadline, "the alarm of {name} fired");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(node.records("NEW"), 0, "nothing moved to the new name");
    // The old name is no longer served.
    assert!(matches!(
        node.env().namespace("OLD"),
        Err(Error::UnknownNamespace(_))
    ));
    let old = ObjectKey::new("OLD", ObjectId::from_name("OLD", "obj-0"));
    assert!(matches!(
        node.runtime.fetch(old, get("/state")).await,
        Err(Error::UnknownNamespace(_))
    ));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_class_is_reclaimed_in_batches_and_resumes_after_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let both = Bindings::new()
        .bind::<Filler>("GONE")
        .bind::<Filler>("KEEP");
    let node = open(dir.path(), both, RuntimeOptions::default()).await;
    let hour = 3_600_000;
    for i in 0..40 {
        node.fill("GONE", &format!("g-{i}"), 25, hour).await;
    }
    for i in 0..3 {
        node.fill("KEEP", &format!("k-{i}"), 5, hour).await;
    }
    let gone = node.records("GONE");
    assert_eq!(gone, 40 * 26);
    assert_eq!(node.records("KEEP"), 3 * 6);
    node.stop().await;

    // Deleted, 4 records a batch: stopped as soon as some are gone.
    let opts = RuntimeOptions {
        reclaim_batch: 4,
        ..RuntimeOptions::default()
    };
    let deleted = || Bindings::new().bind::<Filler>("KEEP").deleted("GONE");
    let node = open(dir.path(), deleted(), opts.clone()).await;
    wait_until("the reclaim started", || node.records("GONE") < gone).await;
    node.stop().await;
    let node = open(
        dir.path(),
        Bindings::new().bind::<Filler>("KEEP"),
        opts.clone(),
    )
    .await;
    let left = node.records("GONE");
    assert!(
        left > 0 && left < gone,
        "stopped midway: {left} of {gone} left"
    );
    node.stop().await;

    // Restarted with the delete: it resumes from what is left.
    let node = open(dir.path(), deleted(), opts).await;
    wait_until("the class is reclaimed", || node.records("GONE") == 0).await;
    assert_eq!(node.alarms("GONE"), 0, "the alarm index too");
    assert_eq!(node.records("KEEP"), 3 * 6, "other classes untouched");
    assert_eq!(node.alarms("KEEP"), 3);
    for i in 0..3 {
        assert_eq!(node.state("KEEP", &format!("k-{i}")).await["keys"], 5);
    }
    assert!(matches!(
        node.env().namespace("GONE"),
        Err(Error::UnknownNamespace(_))
    ));
    node.stop().await;
}

#[tokio::test]
async fn conflicting_migrations_refuse_to_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open(dir.path()).expect("open db");
    let replicas = Arc::new(
        Replicas::open_single_node(db.clone(), 1, "local".into(), 1, Default::default())
            .await
            .expect("open replicas"),
    );
    let bound_and_deleted = Bindings::new().bind::<Filler>("A").deleted("A");
    let err = Runtime::start(
        db.clone(),
        replicas.clone(),
        bound_and_deleted,
        RuntimeOptions::default(),
    )
    .err()
    .expect("refused");
    assert_eq!(
        err.to_string(),
        "class migrations: class `A` is deleted, so it cannot be bound"
    );
    let renamed_but_bound = Bindings::new()
        .bind::<Filler>("A")
        .bind::<Filler>("B")
        .renamed("A", "B");
    assert!(matches!(
        Runtime::start(
            db,
            replicas.clone(),
            renamed_but_bound,
            RuntimeOptions::default()
        ),
        Err(Error::Migration(migrations::Error::RenamedButBound(_)))
    ));
    replicas.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_sees_the_name_its_id_was_made_from() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = open_with(dir.path(), "N").await;
    let ns = node.env().namespace("N").expect("bound");
    let unique = ns.get(ns.new_unique_id());
    assert_eq!(unique.name(), None);
    let resp = unique.fetch(get("/state")).await.expect("state");
    let state: serde_json::Value = serde_json::from_slice(resp.body()).expect("json");
    assert_eq!(state["name"], serde_json::Value::Null);

    // By id first: no name yet; then by name: the object learns it.
    let id = ns.id_from_name("alice");
    assert_eq!(id.name(), Some("alice"));
    let by_id = ns.get(id.id());
    let resp = by_id.fetch(get("/state")).await.expect("state");
    let state: serde_json::Value = serde_json::from_slice(resp.body()).expect("json");
    assert_eq!(state["name"], serde_json::Value::Null);
    assert_eq!(node.state("N", "alice").await["name"], "alice");
    let resp = by_id.fetch(get("/state")).await.expect("state");
    let state: serde_json::Value = serde_json::from_slice(resp.body()).expect("json");
    assert_eq!(
        state["name"], "alice",
        "known for the rest of the activation"
    );

    // A name that is not the id's is not believed.
    let liar = ObjectKey::new("N", ObjectId::from_name("N", "bob")).with_name("mallory");
    let outcome = node
        .runtime
        .fetch(liar, get("/state"))
        .await
        .expect("state");
    let state: serde_json::Value = serde_json::from_slice(outcome.response.body()).expect("json");
    assert_eq!(state["name"], serde_json::Value::Null);
    node.stop().await;
}
