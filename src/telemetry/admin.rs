//! The admin HTTP server, on its own listener (`admin.listen`), apart from
//! user traffic: `GET /metrics` (Prometheus text format),
//! `GET /admin/hot-objects` (the busiest objects, with their ids, as JSON),
//! `GET /admin/cluster` on a cluster node (`roost cluster status --json`),
//! and the probes: `GET /healthz` (200 while the process serves this
//! listener: liveness) and `GET /readyz` (200 when the node's own readiness
//! check passes, else 503 with the reason).
//!
//! It knows nothing of the layers: the node hands it [`AdminSources`],
//! closures that sample what is read at scrape time and rank the busiest
//! objects, and the [`Serve`] that runs the router on the listener (the
//! edge's server, with its timeouts and connection cap).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::metrics::{self, RankedObject};

/// How often histograms are folded and descriptions published, between
/// scrapes (so memory stays bounded when nobody scrapes).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The `Content-Type` of the Prometheus text format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One of the busiest objects, as `/admin/hot-objects` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HotObject {
    /// 1 = busiest.
    pub rank: usize,
    pub binding: String,
    /// The object id (hex).
    pub id: String,
    /// Events counted in the window (an upper bound; at most `error` of
    /// them may belong to other objects).
    pub events: u64,
    pub error: u64,
    pub events_per_second: f64,
    /// Fraction of the window its executor was busy, 0..1.
    pub busy_ratio: f64,
    /// The length of the window the counts are from.
    pub window_seconds: f64,
}

/// What the admin server shows, supplied by the node.
pub struct AdminSources {
    /// Sets the gauges that are sampled rather than recorded (live objects,
    /// RocksDB properties); called before each render of `/metrics`.
    pub sample: Box<dyn Fn() + Send + Sync>,
    /// The busiest objects now, at most this many, busiest first.
    pub hot: Box<dyn Fn(usize) -> Vec<HotObject> + Send + Sync>,
    /// Whether the process is ready for traffic: `Err(reason)` when not.
    /// What "ready" means is the owner's: see `/readyz` in the README.
    pub ready: Box<dyn Fn() -> Result<(), String> + Send + Sync>,
}

/// The cluster's status as JSON (`/admin/cluster` on a cluster node):
/// asks the other nodes, so it is async; `Err` when it cannot be had.
pub type ClusterSource = Box<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<serde_json::Value, String>> + Send>>
        + Send
        + Sync,
>;

/// Runs a router on a listener until the token is cancelled.
pub type Serve = Box<
    dyn FnOnce(
            TcpListener,
            Router,
            CancellationToken,
        ) -> futures_util::future::BoxFuture<'static, std::io::Result<()>>
        + Send,
>;

struct Shared {
    handle: PrometheusHandle,
    sources: AdminSources,
    cluster: Option<ClusterSource>,
}

/// A running admin server.
pub struct Admin {
    addr: SocketAddr,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

impl Admin {
    /// Serves `/metrics` from `handle` and the `sources` on `listener`,
    /// with `serve`.
    pub fn start(
        listener: TcpListener,
        handle: PrometheusHandle,
        sources: AdminSources,
        serve: Serve,
    ) -> std::io::Result<Admin> {
        Self::start_with_cluster(listener, handle, sources, serve, None)
    }

    /// [`Admin::start`], also serving `/admin/cluster` from `cluster`.
    pub fn start_with_cluster(
        listener: TcpListener,
        handle: PrometheusHandle,
        sources: AdminSources,
        serve: Serve,
        cluster: Option<ClusterSource>,
    ) -> std::io::Result<Admin> {
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            handle,
            sources,
            cluster,
        });
        let app = router(shared.clone());
        let server = tokio::spawn({
            let stop = stop.clone();
            async move {
                let serve = serve(listener, app, stop.clone());
                let upkeep = async {
                    let mut every = tokio::time::interval(UPKEEP_EVERY);
                    loop {
                        every.tick().await;
                        shared.handle.run_upkeep();
                    }
                };
                tokio::select! {
                    served = serve => {
                        if let Err(e) = served {
                            tracing::warn!(error = %e, "admin server failed");
                        }
                    }
                    () = upkeep => {}
                }
            }
        });
        Ok(Admin { addr, stop, server })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and waits for the server (and the sources it holds) to
    /// be dropped.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.server.await;
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/admin/hot-objects", get(hot_objects))
        .route("/admin/cluster", get(cluster_status))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(shared)
}

/// CPU, memory, open files and threads of this process (`process_*`),
/// described once.
fn process_metrics() {
    static COLLECTOR: std::sync::OnceLock<metrics_process::Collector> = std::sync::OnceLock::new();
    COLLECTOR
        .get_or_init(|| {
            let c = metrics_process::Collector::default();
            c.describe();
            c
        })
        .collect();
}

async fn metrics_text(State(shared): State<Arc<Shared>>) -> Response {
    (shared.sources.sample)();
    process_metrics();
    let ranked: Vec<RankedObject> = (shared.sources.hot)(super::hot::TOP_N)
        .into_iter()
        .map(|o| RankedObject {
            rank: o.rank,
            binding: o.binding,
            events_per_second: o.events_per_second,
            busy_ratio: o.busy_ratio,
        })
        .collect();
    let body = metrics::render(&shared.handle, &ranked);
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], body).into_response()
}

#[derive(Serialize)]
struct HotObjects {
    objects: Vec<HotObject>,
}

async fn hot_objects(State(shared): State<Arc<Shared>>) -> Response {
    let objects = (shared.sources.hot)(super::hot::TOP_N);
    axum::Json(HotObjects { objects }).into_response()
}

/// A warning `/readyz` adds to every answer: a fact about the whole
/// process that an operator must not miss (it runs without
/// authentication). Set once, by the `roost` command.
static READYZ_WARNING: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Makes `/readyz` carry `warning` (a later call changes nothing).
pub fn set_readyz_warning(warning: String) {
    let _ = READYZ_WARNING.set(warning);
}

/// The cluster's status (nodes, shards, warnings) as JSON; 404 on a
/// process that is not a cluster node, 503 when no node answered.
async fn cluster_status(State(shared): State<Arc<Shared>>) -> Response {
    let Some(cluster) = &shared.cluster else {
        return (
            axum::http::StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"error": "not a cluster node"})),
        )
            .into_response();
    };
    match cluster().await {
        Ok(status) => axum::Json(status).into_response(),
        Err(e) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "error": e })),
        )
            .into_response(),
    }
}

/// Liveness: answering at all is the signal.
async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let warning = READYZ_WARNING
        .get()
        .map(|w| format!("warning: {w}\n"))
        .unwrap_or_default();
    match (shared.sources.ready)() {
        Ok(()) => format!("ready\n{warning}").into_response(),
        Err(reason) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n{warning}"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources() -> AdminSources {
        AdminSources {
            sample: Box::new(|| {}),
            hot: Box::new(|n| {
                let one = HotObject {
                    rank: 1,
                    binding: "COUNTER".into(),
                    id: "ab".repeat(32),
                    events: 50,
                    error: 0,
                    events_per_second: 5.0,
                    busy_ratio: 0.25,
                    window_seconds: 10.0,
                };
                vec![one].into_iter().take(n).collect()
            }),
            ready: Box::new(|| Err("no view yet".into())),
        }
    }

    /// An admin server on port 0 over a recorder of its own.
    async fn start() -> Admin {
        let recorder = metrics::builder().build_recorder();
        let handle = recorder.handle();
        ::metrics::with_local_recorder(&recorder, || {
            metrics::describe();
            metrics::objects_live(3);
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let serve: Serve = Box::new(|listener, app, stop| {
            Box::pin(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            })
        });
        Admin::start(listener, handle, sources(), serve).expect("start")
    }

    async fn get_body(admin: &Admin, path: &str) -> (String, String) {
        let resp = reqwest::get(format!("http://{}{path}", admin.local_addr()))
            .await
            .expect("response");
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        let content_type = resp.headers()[header::CONTENT_TYPE]
            .to_str()
            .expect("ascii")
            .to_owned();
        (content_type, resp.text().await.expect("body"))
    }

    #[tokio::test]
    async fn metrics_are_prometheus_text_with_hot_objects_by_rank() {
        let admin = start().await;
        let (content_type, body) = get_body(&admin, "/metrics").await;
        assert_eq!(content_type, PROMETHEUS_TEXT);
        assert!(body.contains("roost_objects_live 3"), "{body}");
        assert!(
            body.contains("roost_hot_object_busy_ratio{rank=\"1\",binding=\"COUNTER\"} 0.25"),
            "{body}"
        );
        assert!(!body.contains(&"ab".repeat(32)), "no object id on /metrics");
        admin.shutdown().await;
    }

    #[tokio::test]
    async fn hot_objects_are_json_with_ids() {
        let admin = start().await;
        let (content_type, body) = get_body(&admin, "/admin/hot-objects").await;
        assert_eq!(content_type, "application/json");
        let value: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(value["objects"][0]["id"], "ab".repeat(32));
        assert_eq!(value["objects"][0]["rank"], 1);
        admin.shutdown().await;
    }

    #[tokio::test]
    async fn healthz_is_ok_and_readyz_reports_the_reason() {
        let admin = start().await;
        let (_, body) = get_body(&admin, "/healthz").await;
        assert_eq!(body, "ok\n");
        let resp = reqwest::get(format!("http://{}/readyz", admin.local_addr()))
            .await
            .expect("response");
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.text().await.expect("body"), "not ready: no view yet\n");
        let resp = reqwest::get(format!("http://{}/admin/cluster", admin.local_addr()))
            .await
            .expect("response");
        assert_eq!(resp.status(), 404, "not a cluster node");
        admin.shutdown().await;
    }
}
