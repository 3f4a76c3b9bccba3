//! `roost edge`: the stateless front door of a cluster. It watches the
//! cluster view from any node, serves HTTP and WebSockets with the built-in
//! app and the public gRPC object API (`roost.v1.Objects`) for other
//! services, and sends each object call straight to the leader of the
//! object's shard, following redirects when leadership has moved
//! (`router.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Error;
use super::router::{ClusterClient, watch_view};
use crate::config::Config;
use crate::edge::Edge;
use crate::object::Namespaces;
use crate::object::Worker;
use crate::rpc::objects::ObjectsService;
use crate::rpc::reattach::{self, ReattachOptions};
use crate::rpc::remote::RemoteOptions;
use crate::telemetry::admin::{Admin, AdminSources};

/// A running edge.
pub struct EdgeNode {
    edge: Edge,
    admin: Admin,
    /// The gRPC object API server, stopped by `grpc_stop`.
    grpc: tokio::task::JoinHandle<Result<(), crate::rpc::Error>>,
    grpc_addr: SocketAddr,
    grpc_stop: CancellationToken,
    stop: CancellationToken,
    grace: Duration,
}

impl EdgeNode {
    /// Starts an edge of the built-in app that reaches the cluster through
    /// `seeds`.
    pub async fn start(config: Config, seeds: Vec<String>) -> Result<EdgeNode, Error> {
        crate::app::configure(super::app_options(&config));
        let namespaces =
            super::with_config_migrations(crate::app::bindings(), &config)?.namespaces()?;
        Self::start_with(config, seeds, crate::app::SeedApp, namespaces).await
    }

    /// Starts an edge that reaches the cluster through `seeds` and serves
    /// `worker` over HTTP, its stubs reaching the classes bound to
    /// `namespaces` on the nodes (which must serve those classes).
    pub async fn start_with<W: Worker>(
        config: Config,
        seeds: Vec<String>,
        worker: W,
        namespaces: impl Into<Namespaces>,
    ) -> Result<EdgeNode, Error> {
        let namespaces: Namespaces = namespaces.into();
        config.validate()?;
        let metrics = crate::telemetry::metrics::install();
        if seeds.is_empty() {
            return Err(Error::Cluster(
                "an edge needs at least one seed node (--join)".into(),
            ));
        }
        let tls = super::rpc_tls(&config)?;
        tracing::info!(tls = %tls.describe(), "gRPC to the nodes");
        let ws = &config.websocket;
        let client = ClusterClient::new(RemoteOptions {
            tls,
            reattach: ReattachOptions {
                buffer: reattach::Bounds {
                    frames: ws.reattach_buffer_frames,
                    bytes: ws.reattach_buffer_bytes,
                },
                timeout: Duration::from_millis(ws.reattach_timeout_ms),
            },
            ..RemoteOptions::default()
        });
        let stop = CancellationToken::new();
        tokio::spawn(watch_view(client.clone(), seeds, stop.clone()));
        tracing::info!("waiting for the cluster view");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !client.ready() {
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Cluster(
                    "no cluster view from the seeds within 60 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let addr = config.http.listen;
        let (listener, _) = super::bind(addr).await?;
        let edge = Edge::start(
            listener,
            worker,
            Arc::new(client.clone()),
            namespaces.clone(),
            super::edge_options(&config)?,
        )
        .map_err(|source| Error::Listen { addr, source })?;
        tracing::info!(addr = %edge.local_addr(), "edge serving HTTP and WebSockets");
        let (grpc_listener, grpc_addr) = super::bind(config.grpc.listen).await?;
        let service = ObjectsService::new(Arc::new(client.clone()), super::objects_limits(&config))
            .with_namespaces(namespaces);
        let grpc_stop = CancellationToken::new();
        let grpc = {
            let (tls, stop) = (client.opts.tls.clone(), grpc_stop.clone());
            tokio::spawn(async move {
                crate::rpc::objects::serve(grpc_listener, service, &tls, stop).await
            })
        };
        tracing::info!(
            addr = %grpc_addr,
            tls = %client.opts.tls.describe(),
            "edge serving the gRPC object API"
        );
        let admin_addr = config.admin.listen;
        let (admin_listener, _) = super::bind(admin_addr).await?;
        // An edge has no objects or storage: only its recorded metrics.
        // Ready: it has a cluster view to route with.
        let ready = {
            let client = client.clone();
            move || {
                if client.ready() {
                    Ok(())
                } else {
                    Err("no cluster view".to_owned())
                }
            }
        };
        let sources = AdminSources {
            sample: Box::new(|| {}),
            hot: Box::new(|_| Vec::new()),
            ready: Box::new(ready),
        };
        let admin = Admin::start(
            admin_listener,
            metrics,
            sources,
            super::admin::serve(&config),
        )
        .map_err(|source| Error::Listen {
            addr: admin_addr,
            source,
        })?;
        Ok(EdgeNode {
            edge,
            admin,
            grpc,
            grpc_addr,
            grpc_stop,
            stop,
            grace: Duration::from_millis(config.shutdown_grace_ms),
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.edge.local_addr()
    }

    /// The admin server's address (`/metrics`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr()
    }

    /// The gRPC object API's address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub async fn shutdown(self) {
        self.grpc_stop.cancel();
        let (_, grpc) = tokio::join!(
            self.edge.shutdown(self.grace),
            tokio::time::timeout(self.grace, self.grpc)
        );
        if let Ok(Ok(Err(e))) = grpc {
            tracing::warn!(error = %e, "gRPC server");
        }
        self.stop.cancel();
        self.admin.shutdown().await;
    }
}
