//! Micro-benchmarks of Roost's hot paths (divan), each on the real code
//! through the crate's public API:
//!
//! - `ring`: an object id's shard and its owner on rings of 3, 10 and 100
//!   nodes (`ObjectId::from_name`, `ObjectId::shard`, `Placement::*`).
//! - `keyspace`: the typed RocksDB keyspace (data, alarm and Raft log keys,
//!   encoded and decoded), staging an entry's writes into a RocksDB batch
//!   (`storage::mutation::stage`), and the postcard encoding of a log
//!   entry's payload (`ShardCommand`).
//! - `dispatch`: one event through an object's executor on a single-node
//!   setup (RocksDB in a temp dir, single-voter Raft groups, the object
//!   runtime; no HTTP): a read-only `fetch` (dispatch + read barrier) and
//!   one that writes one key (dispatch + group commit + WAL fsync), alone
//!   and with 64 objects writing at once (their puts share group commits).
//! - `commit`: N writes (1, 64, 1024) proposed to one shard's group commit
//!   and awaited, so the per-write cost of batching shows (items/s).
//!
//! Setup (databases, Raft elections, activation, building inputs) is never
//! timed. It measures only and asserts nothing about timing.
//!
//! `cargo bench --bench micro` runs them all (pass divan's flags after
//! `--`, e.g. a filter: `cargo bench --bench micro -- dispatch`). Without
//! `--bench` (under `cargo test --bench micro` or `--all-targets`) divan
//! runs each benchmark once, as a smoke test. `cargo bench` builds the
//! optimized `bench` profile (its own RocksDB build, ~20 min the first
//! time); `cargo bench --profile dev --bench micro` reuses the debug build
//! to check that the benchmarks run, but its numbers mean little.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use divan::counter::ItemsCount;
use divan::{Bencher, black_box};
use futures_util::future::join_all;
use http::StatusCode;
use roost::id::{ObjectId, ObjectKey};
use roost::object::{self, Bindings, Context, DurableObject, Request, Response, Runtime};
use roost::replication::{Replicas, ReplicationOptions, ShardCommand};
use roost::ring::Placement;
use roost::storage::{Db, Mutation, ObjectWrite, keys, mutation};
use tempfile::TempDir;

fn main() {
    divan::main();
}

/// `node.shards` of a default config.
const SHARDS: u16 = 64;
/// Replicas per shard in a cluster.
const REPLICATION: usize = 3;

fn object(namespace: &str, name: &str) -> ObjectKey {
    ObjectKey::new(namespace, ObjectId::from_name(namespace, name))
}

fn put(object: &ObjectKey, key: &str, value: &'static [u8]) -> ObjectWrite {
    ObjectWrite {
        object: object.clone(),
        mutations: vec![Mutation::Put {
            key: key.into(),
            value: Bytes::from_static(value),
        }],
    }
}

/// Nanosecond-scale benchmarks get a fixed sample size: divan's automatic
/// one is thrown off by a single slow first sample on a busy machine.
#[divan::bench_group(sample_size = 256)]
mod ring {
    use super::*;

    const NODES: [u64; 3] = [3, 10, 100];

    fn nodes(n: u64) -> BTreeSet<u64> {
        (1..=n).collect()
    }

    /// 1024 ids to look up in turn, so no single id's cache luck counts.
    fn ids() -> Vec<ObjectId> {
        (0..1024)
            .map(|i| ObjectId::from_name("COUNTER", &format!("c{i}")))
            .collect()
    }

    /// The whole placement of 64 shards, as a node or edge recomputes it on
    /// every membership change. Slow (it walks the whole ring per shard):
    /// one call per sample, at most 2 s per ring size.
    #[divan::bench(args = NODES, sample_size = 1, max_time = 2)]
    fn placement_compute(bencher: Bencher, n: u64) {
        let nodes = nodes(n);
        bencher.bench_local(|| Placement::compute(black_box(&nodes), SHARDS, REPLICATION));
    }

    /// An id to the preferred leader of its shard (an edge's routing step).
    #[divan::bench(args = NODES)]
    fn owner_of_id(bencher: Bencher, n: u64) {
        let placement = Placement::compute(&nodes(n), SHARDS, REPLICATION);
        let ids = ids();
        let mut i = 0;
        bencher.bench_local(|| {
            i = (i + 1) % ids.len();
            let shard = black_box(&ids[i]).shard(SHARDS);
            placement.preferred_leader(shard)
        });
    }

    /// An id to all replicas of its shard.
    #[divan::bench(args = NODES)]
    fn replicas_of_id(bencher: Bencher, n: u64) {
        let placement = Placement::compute(&nodes(n), SHARDS, REPLICATION);
        let ids = ids();
        let mut i = 0;
        bencher.bench_local(|| {
            i = (i + 1) % ids.len();
            let shard = black_box(&ids[i]).shard(SHARDS);
            placement.replicas(shard).len()
        });
    }

    /// A name to its id (SHA-256), as `idFromName` on every request.
    #[divan::bench]
    fn id_from_name() -> ObjectId {
        ObjectId::from_name(black_box("COUNTER"), black_box("visits-12345"))
    }
}

#[divan::bench_group(sample_size = 256)]
mod keyspace {
    use super::*;

    fn counter() -> ObjectKey {
        object("COUNTER", "visits")
    }

    #[divan::bench]
    fn data_key_encode(bencher: Bencher) {
        let obj = counter();
        bencher.bench_local(|| keys::data_key(black_box(7), black_box(&obj), black_box("value")));
    }

    #[divan::bench]
    fn alarm_key_encode(bencher: Bencher) {
        let obj = counter();
        bencher.bench_local(|| keys::alarm_key(black_box(7), black_box(&obj)));
    }

    #[divan::bench]
    fn alarm_due_key_encode(bencher: Bencher) {
        let obj = counter();
        bencher.bench_local(|| {
            keys::alarm_due_key(black_box(7), black_box(1_700_000_000_000), black_box(&obj))
        });
    }

    #[divan::bench]
    fn alarm_due_key_decode(bencher: Bencher) {
        let key = keys::alarm_due_key(7, 1_700_000_000_000, &counter());
        bencher.bench_local(|| keys::decode_alarm_due(black_box(&key)));
    }

    #[divan::bench]
    fn log_key_encode() -> Vec<u8> {
        keys::log_key(black_box(7), black_box(123_456))
    }

    #[divan::bench]
    fn log_key_decode(bencher: Bencher) {
        let key = keys::log_key(7, 123_456);
        bencher.bench_local(|| keys::log_index(black_box(&key)));
    }

    fn writes(n: usize) -> Vec<ObjectWrite> {
        (0..n)
            .map(|i| put(&object("COUNTER", &format!("c{i}")), "value", b"12345678"))
            .collect()
    }

    /// An applied entry's writes (one put each, on distinct objects) staged
    /// into a RocksDB batch; nothing is written.
    #[divan::bench(args = [1, 64])]
    fn stage_puts(bencher: Bencher, n: usize) {
        let dir = TempDir::new().expect("temp dir");
        let db = Db::open(&dir.path().join("db")).expect("open db");
        let writes = writes(n);
        bencher
            .counter(ItemsCount::new(n))
            .with_inputs(rocksdb::WriteBatch::default)
            .bench_local_refs(|batch| {
                mutation::stage(&db, batch, 0, black_box(&writes)).expect("stage")
            });
    }

    /// The payload of a log entry, encoded as the log store does (postcard).
    #[divan::bench(args = [1, 64])]
    fn log_payload_encode(bencher: Bencher, n: usize) {
        let command = ShardCommand { writes: writes(n) };
        bencher
            .counter(ItemsCount::new(n))
            .bench_local(|| postcard::to_stdvec(black_box(&command)).expect("encode"));
    }
}

/// A single node's storage, shard groups and (optionally) object runtime,
/// on a tokio runtime the benchmarks block on.
struct Node {
    rt: tokio::runtime::Runtime,
    db: Option<Db>,
    replicas: Arc<Replicas>,
    runtime: Option<Runtime>,
    _dir: TempDir,
}

impl Node {
    /// `shards` single-voter groups, each with an elected leader.
    fn start(shards: u16, bindings: Option<Bindings>) -> Node {
        let dir = TempDir::new().expect("temp dir");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let (db, replicas, runtime) = rt.block_on(async {
            let db = Db::open(&dir.path().join("db")).expect("open db");
            let opts = ReplicationOptions {
                election_timeout_min_ms: 150,
                election_timeout_max_ms: 300,
                ..Default::default()
            };
            let replicas =
                Replicas::open_single_node(db.clone(), 1, "127.0.0.1:0".into(), shards, opts)
                    .await
                    .expect("open replicas");
            replicas
                .wait_for_leaders(Duration::from_secs(30))
                .await
                .expect("every shard elects a leader");
            let replicas = Arc::new(replicas);
            let runtime = bindings.map(|b| {
                Runtime::start(db.clone(), replicas.clone(), b, Default::default())
                    .expect("start runtime")
            });
            (db, replicas, runtime)
        });
        Node {
            rt,
            db: Some(db),
            replicas,
            runtime,
            _dir: dir,
        }
    }
}

impl Drop for Node {
    /// The same order as `DevNode::shutdown`: objects, groups, database.
    fn drop(&mut self) {
        let runtime = self.runtime.take();
        let replicas = self.replicas.clone();
        let db = self.db.take();
        self.rt.block_on(async move {
            if let Some(runtime) = runtime {
                runtime.shutdown().await;
            }
            replicas.shutdown().await;
            drop(replicas);
            if let Some(db) = db {
                db.close(Duration::from_secs(5)).await;
            }
        });
    }
}

mod dispatch {
    use super::*;

    /// Reads one key and answers it; never writes.
    struct Reader;

    impl DurableObject for Reader {
        async fn new(_: &mut Context) -> object::Result<Self> {
            Ok(Reader)
        }

        async fn fetch(&mut self, ctx: &mut Context, _: Request) -> object::Result<Response> {
            let n = ctx.storage().get("n")?.unwrap_or_default();
            Ok(Response::new(n))
        }
    }

    /// Writes one key per request.
    struct Writer(u64);

    impl DurableObject for Writer {
        async fn new(_: &mut Context) -> object::Result<Self> {
            Ok(Writer(0))
        }

        async fn fetch(&mut self, ctx: &mut Context, _: Request) -> object::Result<Response> {
            self.0 += 1;
            ctx.storage().put("n", self.0.to_be_bytes().to_vec())?;
            Ok(Response::new(Bytes::new()))
        }
    }

    /// Few groups: what is timed is one object's path, not the node's
    /// background work.
    const SHARDS: u16 = 4;

    /// Runs `fetch` events on one activated object of `binding`.
    fn bench_fetch(bencher: Bencher, binding: &str) {
        let node = Node::start(
            SHARDS,
            Some(
                Bindings::new()
                    .bind::<Reader>("READER")
                    .bind::<Writer>("WRITER"),
            ),
        );
        let runtime = node.runtime.clone().expect("node has a runtime");
        let key = object(binding, "bench");
        let fetch = |req: Request| {
            let status = node
                .rt
                .block_on(runtime.fetch(key.clone(), req))
                .expect("fetch")
                .response
                .status();
            assert_eq!(status, StatusCode::OK);
        };
        // Activation is not what is measured.
        fetch(Request::new(Bytes::new()));
        bencher
            .with_inputs(|| Request::new(Bytes::new()))
            .bench_local_values(fetch);
    }

    /// `n` writers, one event each in flight at once: executors run in
    /// parallel and their puts share group commits (items/s).
    #[divan::bench(args = [64], max_time = 3)]
    fn fetch_write_one_key_concurrent(bencher: Bencher, n: usize) {
        let node = Node::start(SHARDS, Some(Bindings::new().bind::<Writer>("WRITER")));
        let runtime = node.runtime.clone().expect("node has a runtime");
        let keys: Vec<ObjectKey> = (0..n).map(|i| object("WRITER", &format!("w{i}"))).collect();
        let fetch_all = || {
            let calls = keys
                .iter()
                .map(|key| runtime.fetch(key.clone(), Request::new(Bytes::new())));
            for outcome in node.rt.block_on(join_all(calls)) {
                assert_eq!(outcome.expect("fetch").response.status(), StatusCode::OK);
            }
        };
        // Activation is not what is measured.
        fetch_all();
        bencher.counter(ItemsCount::new(n)).bench_local(fetch_all);
    }

    /// Dispatch, the handler, and the read barrier that releases a
    /// read-only event's response.
    #[divan::bench(max_time = 3)]
    fn fetch_read_only(bencher: Bencher) {
        bench_fetch(bencher, "READER");
    }

    /// Dispatch, the handler, the shard's group commit of one put and its
    /// WAL fsync.
    #[divan::bench(max_time = 3)]
    fn fetch_write_one_key(bencher: Bencher) {
        bench_fetch(bencher, "WRITER");
    }
}

mod commit {
    use super::*;

    /// N writes (one put each, on N objects) proposed back to back to one
    /// shard and all awaited: the proposer packs them into as few entries
    /// as its limits allow (one WAL fsync each).
    #[divan::bench(args = [1, 64, 1024], max_time = 3)]
    fn propose_and_await(bencher: Bencher, n: usize) {
        let node = Node::start(1, None);
        let shard = node.replicas.shard(0).expect("shard 0").clone();
        let objects: Vec<ObjectKey> = (0..n).map(|i| object("BENCH", &format!("o{i}"))).collect();
        bencher
            .counter(ItemsCount::new(n))
            .with_inputs(|| {
                objects
                    .iter()
                    .map(|o| put(o, "k", b"12345678"))
                    .collect::<Vec<_>>()
            })
            .bench_local_values(|writes| {
                node.rt.block_on(async {
                    let mut commits = Vec::with_capacity(writes.len());
                    for write in writes {
                        commits.push(shard.propose(write).await.expect("enqueue"));
                    }
                    for commit in commits {
                        commit.await.expect("commit");
                    }
                })
            });
    }
}
