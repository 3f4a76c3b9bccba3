//! What a node's admin server shows: the metrics sampled at scrape time
//! (live objects, RocksDB properties) and the busiest objects, wired from
//! the node's parts into [`telemetry::admin`](crate::telemetry::admin).

use std::path::Path;

use metrics_exporter_prometheus::PrometheusHandle;

use super::Error;
use crate::config::Config;
use crate::edge::ServerOptions;
use crate::object::Runtime;
use crate::storage::Db;
use crate::telemetry::admin::{Admin, AdminSources, ClusterSource, HotObject, Serve};
use crate::telemetry::metrics::{self, ColumnFamilySample, RocksDbSample};

/// Serves the admin endpoints on `admin.listen`, rendering the recorder of
/// `handle`; `/readyz` answers with `ready`.
pub(super) async fn start(
    config: &Config,
    handle: PrometheusHandle,
    data_dir: &Path,
    db: &Db,
    runtime: &Runtime,
    ready: Box<dyn Fn() -> Result<(), String> + Send + Sync>,
    cluster: Option<ClusterSource>,
) -> Result<Admin, Error> {
    let addr = config.admin.listen;
    let (listener, _) = super::bind(addr).await?;
    let sample = {
        let (db, runtime, data_dir) = (db.clone(), runtime.clone(), data_dir.to_owned());
        move || {
            metrics::objects_live(runtime.live_objects());
            metrics::objects_live_max(runtime.max_live_objects());
            metrics::rocksdb(&rocksdb_sample(&db));
            disk_sample(&data_dir);
        }
    };
    let hot = {
        let runtime = runtime.clone();
        move |n| hot_objects(&runtime, n)
    };
    let sources = AdminSources {
        sample: Box::new(sample),
        hot: Box::new(hot),
        ready,
    };
    Admin::start_with_cluster(listener, handle, sources, serve(config), cluster)
        .map_err(|source| Error::Listen { addr, source })
}

/// The admin server's listener, with `[http]`'s timeouts and
/// `admin.max_connections` (no per-address cap: its clients are a few
/// scrapers and probes).
pub(super) fn serve(config: &Config) -> Serve {
    let opts = ServerOptions {
        max_connections: config.admin.max_connections,
        max_connections_per_ip: config.admin.max_connections,
        ..super::server_options(config)
    };
    Box::new(move |listener, app, stop| {
        Box::pin(crate::edge::server::serve(listener, app, opts, stop))
    })
}

fn hot_objects(runtime: &Runtime, n: usize) -> Vec<HotObject> {
    runtime
        .hot_objects(n)
        .into_iter()
        .enumerate()
        .map(|(i, hot)| HotObject {
            rank: i + 1,
            binding: hot.key.namespace.to_string(),
            id: hot.key.id.to_string(),
            events: hot.counts.events,
            error: hot.counts.error,
            events_per_second: hot.events_per_second(),
            busy_ratio: hot.busy_ratio(),
            window_seconds: hot.window.as_secs_f64(),
        })
        .collect()
}

/// The RocksDB properties that matter to an operator. A property RocksDB
/// cannot read leaves its gauge as it was (and is logged at debug).
fn rocksdb_sample(db: &Db) -> RocksDbSample {
    let read = |name: &str| match db.int_property(name) {
        Ok(values) => values,
        Err(e) => {
            tracing::debug!(property = name, error = %e, "read rocksdb property");
            Vec::new()
        }
    };
    // DB-wide properties: every column family reports the same value.
    let first = |name: &str| read(name).first().and_then(|(_, v)| *v);
    let pending = read("rocksdb.estimate-pending-compaction-bytes");
    let sst = read("rocksdb.total-sst-files-size");
    let memtables = read("rocksdb.cur-size-all-mem-tables");
    let of = |values: &[(&'static str, Option<u64>)], cf: &str| {
        values
            .iter()
            .find(|(name, _)| *name == cf)
            .and_then(|(_, v)| *v)
    };
    let column_families = sst
        .iter()
        .map(|&(name, size)| ColumnFamilySample {
            name,
            pending_compaction_bytes: of(&pending, name),
            sst_files_bytes: size,
            memtable_bytes: of(&memtables, name),
        })
        .collect();
    RocksDbSample {
        write_stopped: first("rocksdb.is-write-stopped"),
        delayed_write_rate: first("rocksdb.actual-delayed-write-rate"),
        running_compactions: first("rocksdb.num-running-compactions"),
        column_families,
    }
}

/// The data directory's filesystem: size and space left (`roost_disk_*`).
fn disk_sample(dir: &Path) {
    match rustix::fs::statvfs(dir) {
        Ok(s) => metrics::disk(
            s.f_blocks.saturating_mul(s.f_frsize),
            s.f_bavail.saturating_mul(s.f_frsize),
        ),
        Err(e) => {
            tracing::debug!(dir = %dir.display(), error = %e, "statvfs of the data directory")
        }
    }
}
