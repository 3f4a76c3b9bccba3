//! Wires the layers of a node together and runs them: a narrated startup
//! and an ordered shutdown. `roost dev` is one [`DevNode`]: every shard a
//! single-voter Raft group on this process, the edge and the gRPC object
//! API on the same process.
//! single-voter Raft group on this process, the edge on the same process,
//! and the admin server (`/metrics`) on its own listener.

mod admin;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderName;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::edge::{Edge, EdgeOptions, ServerOptions, TrustedProxies};
use crate::object::{Bindings, Limits, Runtime, RuntimeOptions, Worker};
use crate::replication::{Replicas, ReplicationOptions};
use crate::rpc::objects::{ObjectsLimits, ObjectsService};
use crate::rpc::tls::{Tls, TlsFiles};
use crate::storage::Db;
use crate::telemetry::admin::Admin;

pub mod cluster;
pub mod edge;
pub mod router;

/// Why a node could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    #[error("open data store: {0}")]
    Storage(#[from] crate::storage::Error),
    #[error("start replication: {0}")]
    Replication(#[from] crate::replication::Error),
    #[error("start object runtime: {0}")]
    Runtime(#[from] crate::object::Error),
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid trusted proxy setting: {0}")]
    ProxyHeader(String),
    #[error("cluster: {0}")]
    Cluster(String),
    #[error("node gRPC TLS")]
    Tls(#[source] crate::rpc::Error),
}

/// A running all-in-one node (`roost dev`).
pub struct DevNode {
    db: Db,
    edge: Edge,
    grpc: Grpc,
    admin: Admin,
    runtime: Runtime,
    replicas: Arc<Replicas>,
    data_dir: PathBuf,
    grace: Duration,
}

impl DevNode {
    /// Starts a node serving the built-in app (the seed's classes and router).
    pub async fn start(config: Config) -> Result<DevNode, Error> {
        crate::app::configure(app_options(&config));
        Self::start_with(config, crate::app::bindings(), crate::app::SeedApp).await
    }

    /// Starts a node serving `worker` and the classes in `bindings`.
    pub async fn start_with<W: Worker>(
        config: Config,
        bindings: Bindings,
        worker: W,
    ) -> Result<DevNode, Error> {
        config.validate()?;
        // First, so that every layer's metrics reach the recorder.
        let metrics = crate::telemetry::metrics::install();
        let tls = rpc_tls(&config)?;
        let data_dir = config.node.data_dir.clone();
        tracing::info!(dir = %data_dir.display(), "opening data store");
        let db = Db::open(&data_dir.join("db"))?;
        db.check_shard_count(config.node.shards)?;

        tracing::info!(shards = config.node.shards, "starting raft groups");
        let replicas = Replicas::open_single_node(
            db.clone(),
            config.node.id,
            config.http.listen.to_string(),
            config.node.shards,
            replication_options(&config),
        )
        .await?;
        replicas.wait_for_leaders(Duration::from_secs(30)).await?;
        let replicas = Arc::new(replicas);

        tracing::info!("starting object runtime");
        let runtime = Runtime::start(
            db.clone(),
            replicas.clone(),
            with_config_migrations(bindings, &config)?,
            runtime_options(&config),
        )?;

        let addr = config.http.listen;
        let (listener, _) = bind(addr).await?;
        let grpc_addr = config.grpc.listen;
        let (grpc_listener, _) = bind(grpc_addr).await?;
        let edge = Edge::start(
            listener,
            worker,
            Arc::new(runtime.clone()),
            runtime.namespace_table().clone(),
            edge_options(&config)?,
        )
        .map_err(|source| Error::Listen { addr, source })?;
        tracing::info!(addr = %edge.local_addr(), "serving HTTP and WebSockets");

        let service = ObjectsService::new(Arc::new(runtime.clone()), objects_limits(&config))
            .with_namespaces(runtime.namespace_table().clone());
        let grpc =
            Grpc::start(grpc_listener, service, tls.clone()).map_err(|source| Error::Listen {
                addr: grpc_addr,
                source,
            })?;
        tracing::info!(addr = %grpc.addr, tls = %tls.describe(), "serving the gRPC object API");
        let admin = admin::start(
            &config,
            metrics,
            &config.node.data_dir,
            &db,
            &runtime,
            // A single node is ready once it serves.
            Box::new(|| Ok(())),
            None,
        )
        .await?;
        tracing::info!(addr = %admin.local_addr(), "serving metrics and admin endpoints");
        Ok(DevNode {
            db,
            edge,
            grpc,
            admin,
            runtime,
            replicas,
            data_dir,
            grace: Duration::from_millis(config.shutdown_grace_ms),
        })
    }

    /// The address the edge listens on (useful with port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.edge.local_addr()
    }

    /// The address the gRPC object API listens on (useful with port 0).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.addr
    }

    /// The address of the admin server: `/metrics`, `/admin/hot-objects`.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr()
    }

    /// Objects with a running executor right now.
    pub fn live_objects(&self) -> usize {
        self.runtime.live_objects()
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// Shuts down in order: stop accepting HTTP and gRPC and close sockets
    /// (1001), let executors finish and release committed outputs, stop
    /// Raft, close the store. Acknowledged writes are already durable; this
    /// only makes the exit clean.
    pub async fn shutdown(self) -> Result<(), Error> {
        let DevNode {
            db,
            edge,
            grpc,
            admin,
            runtime,
            replicas,
            grace,
            ..
        } = self;
        tracing::info!("shutting down: closing client connections");
        edge.shutdown(grace).await;
        grpc.shutdown(grace).await;
        tracing::info!("shutting down: draining objects");
        if tokio::time::timeout(grace, runtime.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("objects did not drain in time");
        }
        tracing::info!("shutting down: stopping raft groups");
        replicas.shutdown().await;
        // Last, so that metrics are served while the node drains.
        admin.shutdown().await;
        drop((runtime, replicas));
        db.close(grace).await;
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// The gRPC object API server of a node.
struct Grpc {
    addr: SocketAddr,
    stop: CancellationToken,
    server: JoinHandle<Result<(), crate::rpc::Error>>,
}

impl Grpc {
    fn start(listener: TcpListener, service: ObjectsService, tls: Tls) -> std::io::Result<Grpc> {
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let shutdown = stop.clone();
        let server = tokio::spawn(async move {
            crate::rpc::objects::serve(listener, service, &tls, shutdown).await
        });
        Ok(Grpc { addr, stop, server })
    }

    /// Closes the bridged sockets (1001), stops accepting, and waits (up to
    /// `grace`) for in-flight calls.
    async fn shutdown(self, grace: Duration) {
        tracing::info!("shutting down: closing gRPC streams");
        self.stop.cancel();
        let abort = self.server.abort_handle();
        match tokio::time::timeout(grace, self.server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "gRPC server failed"),
            Ok(Err(e)) => tracing::error!(error = %e, "gRPC server task failed"),
            Err(_) => {
                tracing::warn!(?grace, "gRPC server did not drain in time");
                abort.abort();
            }
        }
    }
}

/// Binds `addr` (port 0: one the OS picks) and returns the listener with
/// the address it got.
pub(crate) async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), Error> {
    let listen = |source| Error::Listen { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(listen)?;
    let local = listener.local_addr().map_err(listen)?;
    Ok((listener, local))
}

pub(crate) fn objects_limits(config: &Config) -> ObjectsLimits {
    ObjectsLimits {
        max_request_body_bytes: config.http.max_request_body_bytes,
        max_message_bytes: config.websocket.max_message_bytes,
    }
}

/// Plain node gRPC, or mutual TLS with the `[tls]` files (read now, so that
/// a bad file stops the process at startup).
pub fn rpc_tls(config: &Config) -> Result<Tls, Error> {
    let t = &config.tls;
    // `Config::validate` holds that the three files are set together.
    let (Some(ca), Some(cert), Some(key)) = (&t.ca_file, &t.cert_file, &t.key_file) else {
        return Ok(Tls::plain());
    };
    Tls::load(&TlsFiles {
        ca_file: ca.clone(),
        cert_file: cert.clone(),
        key_file: key.clone(),
        server_name: t.server_name.clone(),
    })
    .map_err(Error::Tls)
}

pub(crate) fn replication_options(config: &Config) -> ReplicationOptions {
    let r = &config.raft;
    ReplicationOptions {
        heartbeat_ms: r.heartbeat_ms,
        election_timeout_min_ms: r.election_timeout_min_ms,
        election_timeout_max_ms: r.election_timeout_max_ms,
        snapshot_logs_since_last: r.snapshot_logs_since_last,
        max_batch_bytes: r.max_batch_bytes,
        max_in_flight: r.max_in_flight,
        quiesce_ms: r.quiesce_ms,
        ..ReplicationOptions::default()
    }
}

/// `bindings` with the class migrations of the config's `[objects]`.
pub(crate) fn with_config_migrations(
    bindings: Bindings,
    config: &Config,
) -> Result<Bindings, Error> {
    let migrations = config
        .objects
        .migrations()
        .map_err(crate::object::Error::from)?;
    Ok(bindings.with_migrations(&migrations))
}

pub(crate) fn runtime_options(config: &Config) -> RuntimeOptions {
    let l = &config.limits;
    RuntimeOptions {
        idle_timeout: Duration::from_millis(config.objects.idle_timeout_ms),
        call_timeout: Duration::from_millis(config.objects.call_timeout_ms),
        socket_buffer: config.websocket.max_socket_buffer,
        socket_return_wait: Duration::from_millis(config.websocket.reattach_timeout_ms),
        max_live: l.max_live_objects,
        mailbox_bytes: l.max_mailbox_bytes,
        limits: Limits {
            max_key_bytes: l.max_key_bytes,
            max_value_bytes: l.max_value_bytes,
            max_keys_per_call: l.max_keys_per_call,
            max_attachment_bytes: l.max_attachment_bytes,
            ..Limits::default()
        },
        ..RuntimeOptions::default()
    }
}

/// The built-in app's limits.
pub fn app_options(config: &Config) -> crate::app::AppOptions {
    let l = &config.limits;
    crate::app::AppOptions {
        chat_max_sockets: l.chat_max_sockets,
        chat_max_message_bytes: l.chat_max_message_bytes,
        chat_history_messages: l.chat_history_messages,
        chat_requests_per_minute: l.chat_requests_per_minute,
    }
}

/// The timeouts every HTTP listener of a process keeps (`[http]`).
pub(crate) fn server_options(config: &Config) -> ServerOptions {
    let http = &config.http;
    ServerOptions {
        header_read_timeout: Duration::from_millis(http.header_read_timeout_ms),
        idle_timeout: Duration::from_millis(http.idle_timeout_ms),
        ..ServerOptions::default()
    }
}

pub(crate) fn edge_options(config: &Config) -> Result<EdgeOptions, Error> {
    let trusted_proxy_header = match &config.http.trusted_proxy_header {
        None => None,
        Some(h) if h.is_empty() => None,
        Some(h) => {
            Some(HeaderName::try_from(h.as_str()).map_err(|_| Error::ProxyHeader(h.clone()))?)
        }
    };
    let http = &config.http;
    let trusted_proxies =
        TrustedProxies::parse(&http.trusted_proxies).map_err(Error::ProxyHeader)?;
    Ok(EdgeOptions {
        trusted_proxy_header,
        max_request_body_bytes: http.max_request_body_bytes,
        body_read_timeout: Duration::from_millis(http.body_read_timeout_ms),
        max_upgrades_per_ip_per_minute: config.websocket.max_upgrades_per_ip_per_minute,
        server: ServerOptions {
            max_connections: http.max_connections,
            max_connections_per_ip: http.max_connections_per_ip,
            exempt: trusted_proxies.clone(),
            ..server_options(config)
        },
        trusted_proxies,
        max_message_bytes: config.websocket.max_message_bytes,
        heartbeat_interval: Duration::from_millis(config.websocket.heartbeat_interval_ms),
        heartbeat_timeout: Duration::from_millis(config.websocket.heartbeat_timeout_ms),
    })
}
