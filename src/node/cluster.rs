//! `roost node`: one member of a cluster. It hosts replicas of every shard
//! group (most of them idle until the ring gives it a share), runs the
//! executors of the shards it leads, and serves gRPC: Raft between nodes,
//! the object API for edges and services, and the cluster service.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Error;
use super::router::{ClusterClient, NodeRouter, watch_view};
use crate::cluster::directory::{META_SHARD, NodeRecord, NodeState};
use crate::cluster::service::{self as cluster_service, ClusterService};
use crate::cluster::{Control, ControlOptions};
use crate::config::Config;
use crate::object::{Bindings, Runtime, RuntimeOptions};
use crate::replication::Replicas;
use crate::rpc::objects::ObjectsService;
use crate::rpc::raft::{GrpcTransport, RaftService};
use crate::rpc::remote::RemoteOptions;
use crate::rpc::tls::Tls;
use crate::storage::Db;
use crate::telemetry::admin::Admin;

/// How long a node handing its leaderships over waits for one shard's
/// election before it asks its successor again.
const HAND_OVER_RETRY: Duration = Duration::from_millis(1500);
/// Shards a node handing its leaderships over asks about at once.
const HAND_OVERS_AT_ONCE: usize = 64;

/// How a node finds and joins its cluster.
#[derive(Clone, Debug)]
pub struct ClusterArgs {
    /// Where the node's gRPC services listen.
    pub grpc_listen: SocketAddr,
    /// The address others reach it at (defaults to the bound address).
    pub advertise: Option<String>,
    /// Nodes to join through; empty bootstraps a new cluster.
    pub seeds: Vec<String>,
    /// Replicas per shard.
    pub replication: usize,
}

/// A running cluster node.
pub struct ClusterNode {
    db: Db,
    admin: Admin,
    replicas: Arc<Replicas>,
    runtime: Runtime,
    control: Control,
    /// Plain or mutual TLS, for the node's own gRPC clients.
    tls: Tls,
    grpc_addr: SocketAddr,
    /// Stops the control loop (first, so it does not take leadership back).
    control_stop: CancellationToken,
    /// Ends the cluster service's `Watch` streams (shutdown begins).
    closing: CancellationToken,
    /// Stops the gRPC server.
    stop: CancellationToken,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    grace: Duration,
}

impl ClusterNode {
    /// Starts a node serving the built-in app's classes.
    pub async fn start(config: Config, args: ClusterArgs) -> Result<ClusterNode, Error> {
        crate::app::configure(super::app_options(&config));
        Self::start_with(config, args, crate::app::bindings()).await
    }

    pub async fn start_with(
        config: Config,
        args: ClusterArgs,
        bindings: Bindings,
    ) -> Result<ClusterNode, Error> {
        config.validate()?;
        // First, so that every layer's metrics reach the recorder.
        let metrics = crate::telemetry::metrics::install();
        let tls = super::rpc_tls(&config)?;
        let node_id = config.node.id;
        let data_dir = config.node.data_dir.clone();
        tracing::info!(node_id, dir = %data_dir.display(), "opening data store");
        let db = Db::open(&data_dir.join("db"))?;
        db.check_shard_count(config.node.shards)?;

        let (listener, grpc_addr) = super::bind(args.grpc_listen).await?;
        let advertise = args
            .advertise
            .clone()
            .unwrap_or_else(|| grpc_addr.to_string());

        tracing::info!(node_id, shards = config.node.shards, "opening raft groups");
        let transport = Arc::new(GrpcTransport::with_tls(tls.clone()));
        let replicas = Replicas::open_with_groups(
            db.clone(),
            node_id,
            config.node.shards,
            &[META_SHARD],
            transport,
            super::replication_options(&config),
        )
        .await?;
        let replicas = Arc::new(replicas);
        let meta = replicas
            .group(META_SHARD)
            .cloned()
            .ok_or_else(|| Error::Cluster("metadata group missing".into()))?;

        let control = Control::new(
            ControlOptions {
                node_id,
                advertise: advertise.clone(),
                replication: args.replication.max(1),
                meta_voters: 5,
            },
            db.clone(),
            replicas.clone(),
            meta,
        );

        tracing::info!("starting object runtime");
        let runtime = Runtime::start(
            db.clone(),
            replicas.clone(),
            super::with_config_migrations(bindings, &config)?,
            RuntimeOptions {
                // Validated to fit.
                socket_replay: u16::try_from(config.websocket.replay_frames).unwrap_or(u16::MAX),
                ..super::runtime_options(&config)
            },
        )?;

        let stop = CancellationToken::new();
        // Calls between objects: here when this node leads the callee's
        // shard, else on its leader, found from the cluster view this
        // node's own gRPC server (and the seeds) stream.
        let router = ClusterClient::new(RemoteOptions {
            tls: tls.clone(),
            ..RemoteOptions::default()
        });
        let view_from: Vec<String> = std::iter::once(advertise.clone())
            .chain(args.seeds.iter().cloned())
            .collect();
        tokio::spawn(watch_view(router.clone(), view_from, stop.clone()));
        runtime.set_object_client(Arc::new(NodeRouter {
            local: runtime.downgrade(),
            cluster: router,
        }));
        let caught_up = crate::cluster::catchup::spawn(control.clone(), tls.clone(), stop.clone());
        let ready = {
            let control = control.clone();
            Box::new(move || node_ready(&control, &caught_up.borrow()))
        };
        // `/admin/cluster`: this node's own gRPC address lists the rest.
        let cluster_status: crate::telemetry::admin::ClusterSource = {
            let (seeds, tls) = (vec![advertise.clone()], tls.clone());
            Box::new(move || {
                let (seeds, tls) = (seeds.clone(), tls.clone());
                Box::pin(async move {
                    let status = crate::cluster::status::gather(&seeds, &tls).await?;
                    serde_json::to_value(status).map_err(|e| e.to_string())
                })
            })
        };
        let admin = super::admin::start(
            &config,
            metrics,
            &data_dir,
            &db,
            &runtime,
            ready,
            Some(cluster_status),
        )
        .await?;
        tracing::info!(addr = %admin.local_addr(), "serving metrics and admin endpoints");

        tracing::info!(
            addr = %grpc_addr,
            tls = %tls.describe(),
            "serving gRPC (raft, objects, cluster)"
        );
        let objects =
            ObjectsService::new(Arc::new(runtime.clone()), super::objects_limits(&config))
                .with_namespaces(runtime.namespace_table().clone());
        use crate::rpc::introspect;
        use crate::rpc::pb::{cluster_server, objects_server, raft_server};
        let closing = CancellationToken::new();
        let health = introspect::health(&[
            introspect::name_of::<raft_server::RaftServer<RaftService>>(),
            introspect::name_of::<objects_server::ObjectsServer<ObjectsService>>(),
            introspect::name_of::<cluster_server::ClusterServer<ClusterService>>(),
        ])
        .await;
        let server = tls
            .server()
            .map_err(Error::Tls)?
            .layer(crate::rpc::metered::MetricsLayer::default())
            .add_service(
                RaftService::with_max_snapshot(replicas.clone(), config.raft.max_snapshot_bytes)
                    .closing_with(stop.clone())
                    .into_server(),
            )
            .add_service(objects.into_server())
            .add_service(ClusterService::new(
                control.clone(),
                config.node.shards,
                db.clone(),
                closing.clone(),
            ))
            .add_service(health)
            .add_optional_service(introspect::reflection())
            .serve_with_incoming_shutdown(
                // No Nagle: a small reply (an AppendEntries ack, a fetch
                // response) must not wait ~40 ms for the peer's delayed ACK.
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                stop.clone().cancelled_owned(),
            );
        let server = tokio::spawn(server);

        if !control
            .is_member()
            .await
            .map_err(|e| Error::Cluster(e.to_string()))?
        {
            // A node listed among its own seeds skips itself, so that every
            // pod of a StatefulSet can get the same `--join` (the first
            // pod's address): the first pod, finding no other seed,
            // starts the cluster.
            let seeds: Vec<String> = args
                .seeds
                .iter()
                .filter(|s| **s != advertise)
                .cloned()
                .collect();
            if seeds.is_empty() {
                control
                    .bootstrap()
                    .await
                    .map_err(|e| Error::Cluster(e.to_string()))?;
            } else {
                let me = NodeRecord {
                    id: node_id,
                    addr: advertise.clone(),
                    state: NodeState::Active,
                };
                tracing::info!(?seeds, "joining the cluster");
                let settings =
                    cluster_service::settings(config.node.shards, args.replication.max(1));
                cluster_service::join(&seeds, &me, settings, Duration::from_secs(120), &tls)
                    .await
                    .map_err(Error::Cluster)?;
            }
        }
        let control_stop = CancellationToken::new();
        tokio::spawn(control.clone().run(control_stop.clone()));
        tracing::info!(node_id, "node is up");
        Ok(ClusterNode {
            db,
            admin,
            replicas,
            runtime,
            control,
            tls,
            grpc_addr,
            control_stop,
            closing,
            stop,
            server,
            grace: Duration::from_millis(config.shutdown_grace_ms),
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The admin server's address: `/metrics`, `/admin/hot-objects`.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr()
    }

    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Moves every leadership this node holds to another voter, so that a
    /// restart drops no requests; waits (up to `grace`) until it leads
    /// nothing.
    ///
    /// Each shard's successor is asked to elect itself at most every
    /// [`HAND_OVER_RETRY`], and at most [`HAND_OVERS_AT_ONCE`] shards are
    /// asked at a time: asking again while an election runs starts another
    /// term and undoes it, and at 1,024 shards asking all at once every
    /// 300 ms kept hundreds of elections restarting (a SIGTERM took over
    /// 20 s).
    pub async fn drain_leadership(&self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        let mut asked: HashMap<u16, tokio::time::Instant> = HashMap::new();
        loop {
            let led = self.control.led_shards();
            if led.is_empty() || tokio::time::Instant::now() >= deadline {
                if !led.is_empty() {
                    tracing::warn!(
                        shards = led.len(),
                        "still leading shards at the drain deadline"
                    );
                }
                return;
            }
            let dir = self.control.directory().borrow().clone();
            let me = self.control.node_id();
            let now = tokio::time::Instant::now();
            let recent = |asked: &HashMap<u16, tokio::time::Instant>, shard: &u16| {
                asked
                    .get(shard)
                    .is_some_and(|at| now.duration_since(*at) < HAND_OVER_RETRY)
            };
            // Elections asked for and not yet over.
            let running = led
                .iter()
                .filter(|(shard, _)| recent(&asked, shard))
                .count();
            let mut budget = HAND_OVERS_AT_ONCE.saturating_sub(running);
            let mut handing_over = false;
            for (shard, voters) in led {
                // An active voter, if there is one: a draining node takes
                // no leadership.
                let others = || voters.iter().copied().filter(|v| *v != me);
                let Some(target) = others()
                    .find(|v| dir.is_active(*v))
                    .or_else(|| others().next())
                else {
                    continue;
                };
                let Some(addr) = dir.addr(target).map(str::to_owned) else {
                    continue;
                };
                handing_over = true;
                if recent(&asked, &shard) || budget == 0 {
                    continue;
                }
                budget -= 1;
                asked.insert(shard, now);
                let tls = self.tls.clone();
                tokio::spawn(async move {
                    if let Ok(mut client) = cluster_service::connect(&addr, &tls).await {
                        let _ = client
                            .elect(crate::rpc::pb::ElectRequest {
                                shard: u32::from(shard),
                            })
                            .await;
                    }
                });
            }
            if !handing_over {
                // Sole voter of what it leads: nobody to hand over to.
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Drains leadership, then stops serving, executors and Raft.
    pub async fn shutdown(self) -> Result<(), Error> {
        self.control_stop.cancel();
        self.closing.cancel();
        // It will not lead again: no election of its own may disrupt the
        // ones its hand-over starts (or any after its listener closes).
        self.replicas.stop_campaigning();
        tracing::info!("shutting down: moving leaderships away");
        self.drain_leadership(self.grace).await;
        // Objects first, with the gRPC server still up: a write proposed
        // here before leadership moved learns its outcome only from the
        // new leader's AppendEntries, which need the listener. Events that
        // arrive meanwhile are refused as shutting down (callers retry
        // them elsewhere).
        tracing::info!("shutting down: draining objects");
        let _ = tokio::time::timeout(self.grace, self.runtime.shutdown()).await;
        tracing::info!("shutting down: stopping gRPC");
        self.stop.cancel();
        let _ = tokio::time::timeout(self.grace, self.server).await;
        tracing::info!("shutting down: stopping raft groups");
        self.replicas.shutdown().await;
        self.admin.shutdown().await;
        drop(self.replicas);
        drop(self.runtime);
        drop(self.control);
        self.db.close(self.grace).await;
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// `/readyz` of a node: it is an active member of the cluster directory,
/// knows the metadata group's leader, and its replicas have caught up
/// (`caught_up`, from [`crate::cluster::catchup`]: every shard the ring
/// places here has it as a voter, within a few entries of its leader). A
/// draining node is not ready: it is on its way out.
fn node_ready(control: &Control, caught_up: &Result<(), String>) -> Result<(), String> {
    let me = control.node_id();
    if control.directory().borrow().is_draining(me) {
        return Err(format!("node {me} is draining"));
    }
    if !control.directory().borrow().is_active(me) {
        return Err(format!(
            "node {me} is not an active member of the directory yet"
        ));
    }
    match (control.meta_leader_addr(), caught_up) {
        (Some(_), verdict) => verdict.clone(),
        (None, Ok(())) => Err("no known leader of the metadata group".into()),
        (None, Err(why)) => Err(format!("no known leader of the metadata group; {why}")),
    }
}
