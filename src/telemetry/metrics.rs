//! Every Prometheus metric Roost exports, in one place: its name, kind,
//! unit, label keys, help text and histogram buckets ([`ALL`]), and the
//! one-line recording calls the layers use (`metrics/record.rs`, re-exported
//! here).
//!
//! A leaf: every layer may record through this module, and it imports no
//! other module of the crate (only the `metrics` facade and its Prometheus
//! exporter). Labels are bounded by construction: a binding (namespace), a
//! route template, a status code, a shard number, a small enum. Never an
//! object id: the busiest objects are ranked by [`super::hot`] and shown by
//! rank, with their ids only on the admin JSON endpoint.
//!
//! Naming, so that the cluster's metrics slot in: `roost_<area>_<what>[_unit]`
//! with `_total` on counters. Areas: `http` (the edge), `object`, `websocket`,
//! `storage`, `alarms`, `raft` (per `shard`; the cluster adds `peer` for
//! replication), `rocksdb`, `rpc` (gRPC servers: every call by service,
//! method and code), `disk` (the data directory's filesystem),
//! `forward` (edge → owner forwarding latency and failures).

use std::fmt::Write as _;
use std::sync::OnceLock;

use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// What kind of metric a [`Def`] is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Counter,
    Gauge,
    /// A histogram with these bucket upper bounds.
    Histogram(&'static [f64]),
}

/// One exported metric.
#[derive(Clone, Copy, Debug)]
pub struct Def {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Unit,
    /// The label keys every series of it carries.
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

/// Latencies from half a millisecond to half a minute, in seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Object writes per Raft log entry.
pub const BATCH_WRITES_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];
/// Bytes per Raft log entry.
pub const BATCH_BYTES_BUCKETS: &[f64] = &[
    256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
];

// Label keys.
pub const BINDING: &str = "binding";
pub const ROUTE: &str = "route";
pub const METHOD: &str = "method";
pub const STATUS: &str = "status";
pub const EVENT: &str = "event";
pub const OUTCOME: &str = "outcome";
pub const GATE: &str = "gate";
pub const REASON: &str = "reason";
pub const DIRECTION: &str = "direction";
pub const END: &str = "end";
pub const OP: &str = "op";
pub const SHARD: &str = "shard";
pub const KIND: &str = "kind";
pub const CF: &str = "cf";
pub const RANK: &str = "rank";
pub const VERSION: &str = "version";
pub const SERVICE: &str = "service";
pub const ROLE: &str = "role";
pub const CODE: &str = "code";

/// The route label of a request the worker did not classify (or never saw).
pub const OTHER_ROUTE: &str = "other";

pub const BUILD_INFO: &str = "roost_build_info";
pub const HTTP_REQUESTS: &str = "roost_http_requests_total";
pub const HTTP_DURATION: &str = "roost_http_request_duration_seconds";
pub const HTTP_IN_FLIGHT: &str = "roost_http_requests_in_flight";
pub const OBJECT_EVENTS: &str = "roost_object_events_total";
pub const OBJECT_QUEUE_WAIT: &str = "roost_object_queue_wait_seconds";
pub const OBJECT_HANDLER_DURATION: &str = "roost_object_handler_duration_seconds";
pub const OBJECT_COMMIT_WAIT: &str = "roost_object_commit_wait_seconds";
pub const FORWARD_DURATION: &str = "roost_forward_duration_seconds";
pub const FORWARD_RETRIES: &str = "roost_forward_retries_total";
pub const OBJECTS_LIVE: &str = "roost_objects_live";
pub const OBJECT_ACTIVATIONS: &str = "roost_object_activations_total";
pub const OBJECT_EVICTIONS: &str = "roost_object_evictions_total";
pub const OBJECT_OVERLOADED: &str = "roost_object_overloaded_total";
pub const MIGRATION_DELETED: &str = "roost_migration_deleted_records_total";
pub const MIGRATION_PENDING_SHARDS: &str = "roost_migration_pending_shards";
pub const MIGRATION_RECLAIMED_SHARDS: &str = "roost_migration_reclaimed_shards_total";
pub const OBJECTS_LIVE_MAX: &str = "roost_objects_live_max";
pub const HTTP_CONNECTIONS_REFUSED: &str = "roost_http_connections_refused_total";
pub const HTTP_CONNECTIONS_TIMED_OUT: &str = "roost_http_connections_timed_out_total";
pub const HTTP_RATE_LIMITED: &str = "roost_http_rate_limited_total";
pub const HOT_OBJECT_RATE: &str = "roost_hot_object_events_per_second";
pub const HOT_OBJECT_BUSY: &str = "roost_hot_object_busy_ratio";
pub const WEBSOCKETS_OPEN: &str = "roost_websockets_open";
pub const WEBSOCKET_FRAMES: &str = "roost_websocket_frames_total";
pub const WEBSOCKET_BYTES: &str = "roost_websocket_bytes_total";
pub const WEBSOCKET_CLOSES: &str = "roost_websocket_closes_total";
pub const STORAGE_OPERATIONS: &str = "roost_storage_operations_total";
pub const STORAGE_BYTES: &str = "roost_storage_bytes_total";
pub const ALARMS_SCHEDULED: &str = "roost_alarms_scheduled_total";
pub const ALARMS_FIRED: &str = "roost_alarms_fired_total";
pub const ALARMS_RETRIED: &str = "roost_alarms_retried_total";
pub const ALARMS_FAILED: &str = "roost_alarms_failed_total";
pub const ALARMS_PENDING: &str = "roost_alarms_pending";
pub const RAFT_IS_LEADER: &str = "roost_raft_is_leader";
pub const RAFT_QUORUM_ACKED: &str = "roost_raft_quorum_acked";
pub const RAFT_QUIESCED: &str = "roost_raft_quiesced_shards";
pub const RAFT_APPENDS_RECEIVED: &str = "roost_raft_appends_received_total";
pub const RAFT_TERM: &str = "roost_raft_term";
pub const RAFT_LAST_LOG_INDEX: &str = "roost_raft_last_log_index";
pub const RAFT_COMMIT_INDEX: &str = "roost_raft_commit_index";
pub const RAFT_APPLIED_INDEX: &str = "roost_raft_applied_index";
pub const RAFT_APPLY_LAG: &str = "roost_raft_apply_lag_entries";
pub const RAFT_LOG_ENTRIES: &str = "roost_raft_log_entries";
pub const RAFT_SNAPSHOT_INDEX: &str = "roost_raft_snapshot_index";
pub const RAFT_LEADER_CHANGES: &str = "roost_raft_leader_changes_total";
pub const RAFT_SNAPSHOTS: &str = "roost_raft_snapshots_total";
pub const RAFT_SNAPSHOT_DURATION: &str = "roost_raft_snapshot_duration_seconds";
pub const RAFT_BATCH_WRITES: &str = "roost_raft_batch_writes";
pub const RAFT_BATCH_BYTES: &str = "roost_raft_batch_bytes";
pub const RAFT_REJECTED: &str = "roost_raft_rejected_total";
pub const RPC_DENIED: &str = "roost_rpc_denied_total";
pub const RAFT_PROPOSALS: &str = "roost_raft_proposals_total";
pub const RAFT_COMMIT_DURATION: &str = "roost_raft_commit_duration_seconds";
pub const ROCKSDB_SYNC_DURATION: &str = "roost_rocksdb_sync_write_duration_seconds";
pub const ROCKSDB_WRITE_STOPPED: &str = "roost_rocksdb_write_stopped";
pub const ROCKSDB_DELAYED_WRITE_RATE: &str = "roost_rocksdb_delayed_write_rate_bytes";
pub const ROCKSDB_PENDING_COMPACTION: &str = "roost_rocksdb_pending_compaction_bytes";
pub const ROCKSDB_SST_FILES: &str = "roost_rocksdb_sst_files_bytes";
pub const ROCKSDB_MEMTABLES: &str = "roost_rocksdb_memtable_bytes";
pub const ROCKSDB_RUNNING_COMPACTIONS: &str = "roost_rocksdb_running_compactions";
pub const RPC_SERVER_REQUESTS: &str = "roost_rpc_server_requests_total";
pub const RPC_SERVER_DURATION: &str = "roost_rpc_server_duration_seconds";
pub const DISK_SIZE: &str = "roost_disk_size_bytes";
pub const DISK_AVAILABLE: &str = "roost_disk_available_bytes";

const fn def(
    name: &'static str,
    kind: Kind,
    unit: Unit,
    labels: &'static [&'static str],
    help: &'static str,
) -> Def {
    Def {
        name,
        kind,
        unit,
        labels,
        help,
    }
}

use Kind::{Counter as C, Gauge as G, Histogram as H};

/// Every metric, with its documentation.
#[rustfmt::skip]
pub const ALL: &[Def] = &[
    def(BUILD_INFO, G, Unit::Count, &[VERSION],
        "Always 1; the version label is the running Roost's version."),
    def(HTTP_REQUESTS, C, Unit::Count, &[ROUTE, METHOD, STATUS],
        "HTTP requests answered by the edge, by the worker's route template (\"other\" if it set none), method and status code."),
    def(HTTP_DURATION, H(LATENCY_BUCKETS), Unit::Seconds, &[ROUTE, METHOD],
        "Time from a request's arrival at the edge to its response (for a WebSocket, to the 101)."),
    def(HTTP_IN_FLIGHT, G, Unit::Count, &[],
        "HTTP requests the edge is working on right now."),
    def(HTTP_CONNECTIONS_REFUSED, C, Unit::Count, &[REASON],
        "Connections answered with a refusal and closed (HTTP listeners: the edge's and the admin's): reason max_connections (503) or max_connections_per_ip (429)."),
    def(HTTP_CONNECTIONS_TIMED_OUT, C, Unit::Count, &[KIND],
        "Connections closed by a timeout: kind header (no complete request within http.header_read_timeout_ms), idle (no request for http.idle_timeout_ms) or body (a request body slower than http.body_read_timeout_ms)."),
    def(HTTP_RATE_LIMITED, C, Unit::Count, &[KIND],
        "Requests the edge refused with 429 before they reached the app: kind websocket_upgrade (websocket.max_upgrades_per_ip_per_minute)."),
    def(OBJECT_EVENTS, C, Unit::Count, &[BINDING, EVENT, OUTCOME],
        "Events run by object executors (fetch, socket_message, socket_close, socket_error, alarm, alarm_give_up), by outcome (ok, error, panic)."),
    def(OBJECT_QUEUE_WAIT, H(LATENCY_BUCKETS), Unit::Seconds, &[BINDING],
        "Time an event waited in its object's mailbox before the executor took it (the input gate)."),
    def(OBJECT_HANDLER_DURATION, H(LATENCY_BUCKETS), Unit::Seconds, &[BINDING, EVENT],
        "Time an executor spent on one event: the handler, then handing its writes to the shard's proposer (not the commit wait)."),
    def(OBJECT_COMMIT_WAIT, H(LATENCY_BUCKETS), Unit::Seconds, &[BINDING, GATE],
        "Time an event's outputs waited at the output gate: for its writes to commit (gate=write) or for a read barrier (gate=read_barrier)."),
    def(FORWARD_DURATION, H(LATENCY_BUCKETS), Unit::Seconds, &[BINDING, OUTCOME],
        "Time an edge spent forwarding one object call to its owner over gRPC, retries included, by outcome (ok, error)."),
    def(FORWARD_RETRIES, C, Unit::Count, &[BINDING, REASON],
        "Object calls an edge sent again, to another node: the first could not have run them (not_owner, unreachable), or they are safe to repeat (idempotent: GET, HEAD, OPTIONS)."),
    def(OBJECTS_LIVE, G, Unit::Count, &[],
        "Objects with a running executor on this node."),
    def(OBJECTS_LIVE_MAX, G, Unit::Count, &[],
        "The cap on objects with a running executor on this node (limits.max_live_objects)."),
    def(OBJECT_ACTIVATIONS, C, Unit::Count, &[BINDING],
        "Executors started (objects brought into memory)."),
    def(OBJECT_EVICTIONS, C, Unit::Count, &[BINDING, REASON],
        "Executors that left memory: idle (nothing to do for objects.idle_timeout_ms) or reset (a failed commit, a failed constructor, or a lost leadership)."),
    def(OBJECT_OVERLOADED, C, Unit::Count, &[BINDING],
        "Events refused because the object's mailbox was full: the object is at its throughput ceiling."),
    def(MIGRATION_DELETED, C, Unit::Count, &[BINDING],
        "Records of a deleted class (stored values and alarms) this node deleted as a shard's leader; binding: the class's storage identity, its first name (objects.deleted_classes)."),
    def(MIGRATION_PENDING_SHARDS, G, Unit::Count, &[BINDING],
        "Shards this node leads whose records of a deleted class are still being deleted (0 on every node once the class is reclaimed and leadership settled)."),
    def(MIGRATION_RECLAIMED_SHARDS, C, Unit::Count, &[BINDING],
        "Times a leader found a shard holding nothing of a deleted class any more (once per shard and leadership term)."),
    def(HOT_OBJECT_RATE, G, Unit::Count, &[RANK, BINDING],
        "Events per second of the busiest objects in the last complete window, by rank (1 = busiest); ids are on /admin/hot-objects."),
    def(HOT_OBJECT_BUSY, G, Unit::Percent, &[RANK, BINDING],
        "Fraction of the last complete window (0..1) the executor of the object at this rank was busy; near 1 means near its throughput ceiling."),
    def(WEBSOCKETS_OPEN, G, Unit::Count, &[BINDING],
        "Client WebSockets bridged by the edge right now."),
    def(WEBSOCKET_FRAMES, C, Unit::Count, &[BINDING, DIRECTION],
        "WebSocket messages from clients (direction=in) and to clients (direction=out)."),
    def(WEBSOCKET_BYTES, C, Unit::Bytes, &[BINDING, DIRECTION],
        "Payload bytes of WebSocket messages from clients (in) and to clients (out)."),
    def(WEBSOCKET_CLOSES, C, Unit::Count, &[BINDING, END],
        "WebSockets that ended, by how: client, too_big (1009), dead (heartbeat), shutdown (1001), object."),
    def(STORAGE_OPERATIONS, C, Unit::Count, &[BINDING, OP],
        "Storage API calls by objects: get, put, delete, list, delete_all, get_alarm, set_alarm, delete_alarm."),
    def(STORAGE_BYTES, C, Unit::Bytes, &[BINDING, DIRECTION],
        "Bytes of keys and values objects read from storage (direction=read) and wrote (direction=write)."),
    def(ALARMS_SCHEDULED, C, Unit::Count, &[BINDING],
        "Alarms set by committed events."),
    def(ALARMS_FIRED, C, Unit::Count, &[BINDING],
        "Alarm handler runs started (first runs and retries)."),
    def(ALARMS_RETRIED, C, Unit::Count, &[BINDING],
        "Alarm runs that failed and were scheduled again with backoff."),
    def(ALARMS_FAILED, C, Unit::Count, &[BINDING],
        "Alarms dropped after their last retry failed."),
    def(ALARMS_PENDING, G, Unit::Count, &[],
        "Alarms in this node's timetable (of the shards it leads)."),
    def(RAFT_IS_LEADER, G, Unit::Count, &[SHARD],
        "1 if this node leads the shard's Raft group, else 0."),
    def(RAFT_QUORUM_ACKED, G, Unit::Count, &[SHARD],
        "1 if this node leads the shard and a quorum of its group acknowledged it within the lease (election_timeout_max), else 0. A leader cut off from its peers keeps roost_raft_is_leader 1 but drops this to 0: its writes settle as no_quorum (shard=\"65535\" is the metadata group)."),
    def(RAFT_QUIESCED, G, Unit::Count, &[],
        "Shards this node leads that are quiesced: idle, no heartbeats until their next request (raft.quiesce_ms); node-level pings stand in for them."),
    def(RAFT_APPENDS_RECEIVED, C, Unit::Count, &[SHARD],
        "AppendEntries (entries or heartbeats) this node received for the object shard from its leader; flat while the shard is quiesced."),
    def(RAFT_TERM, G, Unit::Count, &[SHARD],
        "The shard's current Raft term as this node sees it."),
    def(RAFT_LAST_LOG_INDEX, G, Unit::Count, &[SHARD],
        "Index of the last entry in this node's log of the shard."),
    def(RAFT_COMMIT_INDEX, G, Unit::Count, &[SHARD],
        "Index of the last entry this node knows committed by a quorum."),
    def(RAFT_APPLIED_INDEX, G, Unit::Count, &[SHARD],
        "Index of the last entry applied to this node's state machine."),
    def(RAFT_APPLY_LAG, G, Unit::Count, &[SHARD],
        "Committed entries not yet applied on this node (commit index - applied index)."),
    def(RAFT_LOG_ENTRIES, G, Unit::Count, &[SHARD],
        "Entries in this node's log of the shard (last index - purged index)."),
    def(RAFT_SNAPSHOT_INDEX, G, Unit::Count, &[SHARD],
        "Last log index covered by the shard's current snapshot (0: none)."),
    def(RAFT_LEADER_CHANGES, C, Unit::Count, &[SHARD],
        "Times the leader this node knows for the shard changed (including to none)."),
    def(RAFT_SNAPSHOTS, C, Unit::Count, &[SHARD, KIND],
        "Snapshots of the shard built by this node or installed from a leader (kind=built, installed)."),
    def(RAFT_SNAPSHOT_DURATION, H(LATENCY_BUCKETS), Unit::Seconds, &[KIND],
        "Time to build or install a shard snapshot."),
    def(RAFT_BATCH_WRITES, H(BATCH_WRITES_BUCKETS), Unit::Count, &[],
        "Object writes (events) packed into one Raft log entry by group commit."),
    def(RAFT_BATCH_BYTES, H(BATCH_BYTES_BUCKETS), Unit::Bytes, &[],
        "Approximate bytes of object writes in one Raft log entry."),
    def(RAFT_REJECTED, C, Unit::Count, &[REASON],
        "Raft messages from peers refused before openraft saw them, by reason: term (too far ahead of this node's), log_term (a log id ahead of the sender's term), snapshot_gap (a chunk not contiguous with what arrived), snapshot_size (above raft.max_snapshot_bytes)."),
    def(RPC_DENIED, C, Unit::Count, &[SERVICE, ROLE],
        "gRPC calls refused with PERMISSION_DENIED because the caller's certificate role may not make them, by service (raft, cluster, objects, other) and role (node, operator, edge, client; none: no certificate)."),
    def(RAFT_PROPOSALS, C, Unit::Count, &[KIND, OUTCOME],
        "Log entries (kind=write) and read-barrier rounds (kind=barrier) proposed, by outcome: applied, not_leader, no_quorum, shutting_down, error."),
    def(RAFT_COMMIT_DURATION, H(LATENCY_BUCKETS), Unit::Seconds, &[KIND],
        "Time from handing a log entry (or barrier round) to Raft until it is committed and applied."),
    def(ROCKSDB_SYNC_DURATION, H(LATENCY_BUCKETS), Unit::Seconds, &[],
        "Time of a synced RocksDB write (the Raft log append and its fsync)."),
    def(ROCKSDB_WRITE_STOPPED, G, Unit::Count, &[],
        "1 while RocksDB has stopped writes (rocksdb.is-write-stopped)."),
    def(ROCKSDB_DELAYED_WRITE_RATE, G, Unit::Bytes, &[],
        "Write rate RocksDB throttles writes to while it delays them, in bytes per second; 0 when not delayed (rocksdb.actual-delayed-write-rate)."),
    def(ROCKSDB_PENDING_COMPACTION, G, Unit::Bytes, &[CF],
        "Bytes RocksDB estimates compaction must rewrite (rocksdb.estimate-pending-compaction-bytes)."),
    def(ROCKSDB_SST_FILES, G, Unit::Bytes, &[CF],
        "Size of all SST files of the column family (rocksdb.total-sst-files-size)."),
    def(ROCKSDB_MEMTABLES, G, Unit::Bytes, &[CF],
        "Size of the column family's memtables (rocksdb.cur-size-all-mem-tables)."),
    def(ROCKSDB_RUNNING_COMPACTIONS, G, Unit::Count, &[],
        "Compactions running right now (rocksdb.num-running-compactions)."),
    def(RPC_SERVER_REQUESTS, C, Unit::Count, &[SERVICE, METHOD, CODE],
        "gRPC calls this process served, by service, method (\"unknown\" for a path no service has) and status code name (OK, UNAVAILABLE, ...)."),
    def(RPC_SERVER_DURATION, H(LATENCY_BUCKETS), Unit::Seconds, &[SERVICE, METHOD],
        "Time from a gRPC call's arrival to its end (the last message or status of a stream)."),
    def(DISK_SIZE, G, Unit::Bytes, &[],
        "Size of the filesystem holding the node's data directory."),
    def(DISK_AVAILABLE, G, Unit::Bytes, &[],
        "Bytes an unprivileged process may still write on the filesystem holding the node's data directory."),
];

mod record;

pub use record::*;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once; later calls return
/// the same handle) and describes every metric. If another recorder is
/// already installed, Roost's metrics go there and the handle renders
/// nothing but what is sampled at scrape time.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = builder().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    "a metrics recorder is already installed; /metrics will be incomplete"
                );
            }
            describe();
            handle
        })
        .clone()
}

/// The exporter's configuration: a histogram's buckets as in [`ALL`].
pub fn builder() -> PrometheusBuilder {
    let mut builder = PrometheusBuilder::new();
    for def in ALL {
        if let Kind::Histogram(buckets) = def.kind {
            builder = match builder.set_buckets_for_metric(Matcher::Full(def.name.into()), buckets)
            {
                Ok(b) => b,
                // Only for empty buckets, which a test rules out.
                Err(_) => PrometheusBuilder::new(),
            };
        }
    }
    builder
}

/// Registers the help text and unit of every metric with the current
/// recorder, and sets `roost_build_info`.
pub fn describe() {
    for def in ALL {
        match def.kind {
            Kind::Counter => metrics::describe_counter!(def.name, def.unit, def.help),
            Kind::Gauge => metrics::describe_gauge!(def.name, def.unit, def.help),
            Kind::Histogram(_) => metrics::describe_histogram!(def.name, def.unit, def.help),
        }
    }
    metrics::gauge!(BUILD_INFO, VERSION => env!("CARGO_PKG_VERSION")).set(1.0);
}

// --- rendering --------------------------------------------------------------

/// One ranked busy object, as rendered on `/metrics` (without its id).
#[derive(Clone, Debug, PartialEq)]
pub struct RankedObject {
    pub rank: usize,
    pub binding: String,
    pub events_per_second: f64,
    pub busy_ratio: f64,
}

/// What `/metrics` serves: the recorder's metrics, then the hot-object
/// gauges, which are rendered here so that a rank's series disappears as
/// soon as no object holds that rank.
pub fn render(handle: &PrometheusHandle, hot: &[RankedObject]) -> String {
    let mut out = handle.render();
    render_hot(&mut out, hot);
    out
}

fn render_hot(out: &mut String, hot: &[RankedObject]) {
    for (name, value) in [
        (
            HOT_OBJECT_RATE,
            (|o: &RankedObject| o.events_per_second) as fn(&RankedObject) -> f64,
        ),
        (HOT_OBJECT_BUSY, |o: &RankedObject| o.busy_ratio),
    ] {
        let help = ALL.iter().find(|d| d.name == name).map_or("", |d| d.help);
        let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(out, "# TYPE {name} gauge");
        for o in hot {
            let _ = writeln!(
                out,
                "{name}{{{RANK}=\"{}\",{BINDING}=\"{}\"}} {}",
                o.rank,
                escape_label(&o.binding),
                value(o)
            );
        }
        out.push('\n');
    }
}

/// A label value in the text format: `\`, `"` and newlines escaped.
fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
