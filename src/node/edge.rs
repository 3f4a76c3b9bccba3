//! `roost edge`: the stateless front door of a cluster. It watches the
//! cluster view from any node, serves HTTP and WebSockets with the built-in
//! app, and sends each object call straight to the leader of the object's
//! shard, following redirects when leadership has moved.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Error;
use crate::cluster::service as cluster_service;
use crate::config::Config;
use crate::edge::Edge;
use crate::id::{ObjectKey, ShardId};
use crate::object::{self, CallResult, FetchOutcome, Message, ObjectClient, Request, SocketId};
use crate::ring::{NodeId, Placement};
use crate::rpc::pb;
use crate::rpc::remote::{RemoteClient, RemoteOptions};
use crate::telemetry::admin::{Admin, AdminSources};
use crate::telemetry::metrics;

/// How long an edge keeps retrying a call while leadership moves.
const FAILOVER_WINDOW: Duration = Duration::from_secs(10);

/// A watch stream repeats the view every second; one silent this long is
/// dead, and the edge watches another node.
const VIEW_SILENCE: Duration = Duration::from_secs(3);

/// What an edge knows of the cluster.
#[derive(Default)]
struct View {
    nodes: BTreeMap<NodeId, String>,
    shards: u16,
    placement: Option<Placement>,
    leaders: HashMap<ShardId, NodeId>,
}

/// Routes object calls to shard leaders. Cheap to clone.
#[derive(Clone)]
pub struct ClusterClient {
    view: Arc<RwLock<View>>,
    clients: Arc<Mutex<HashMap<String, RemoteClient>>>,
    /// Which node each bridged socket lives on.
    sockets: Arc<Mutex<HashMap<(ObjectKey, SocketId), RemoteClient>>>,
    opts: RemoteOptions,
}

impl ClusterClient {
    fn new(opts: RemoteOptions) -> ClusterClient {
        ClusterClient {
            view: Arc::default(),
            clients: Arc::default(),
            sockets: Arc::default(),
            opts,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, View> {
        self.view.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a view received from a node.
    fn apply(&self, v: pb::ClusterView) {
        let mut view = self.write();
        view.nodes = v.nodes.iter().map(|n| (n.id, n.addr.clone())).collect();
        view.shards = u16::try_from(v.shards).unwrap_or(0);
        let active: BTreeSet<NodeId> = v
            .nodes
            .iter()
            .filter(|n| !n.draining)
            .map(|n| n.id)
            .collect();
        view.placement = Some(Placement::compute(
            &active,
            view.shards,
            v.replication as usize,
        ));
        for l in v.leaders {
            if let Ok(shard) = ShardId::try_from(l.shard) {
                view.leaders.insert(shard, l.node);
            }
        }
    }

    /// Whether the edge has a view to route with.
    pub fn ready(&self) -> bool {
        let view = self.read();
        view.shards > 0 && !view.nodes.is_empty()
    }

    /// Nodes to try for `key`, best first: the known leader, then the
    /// shard's replicas in ring order, then everyone else.
    fn candidates(&self, key: &ObjectKey) -> Vec<(NodeId, String)> {
        let view = self.read();
        if view.shards == 0 {
            return Vec::new();
        }
        let shard = key.id.shard(view.shards);
        let mut order: Vec<NodeId> = Vec::new();
        if let Some(l) = view.leaders.get(&shard) {
            order.push(*l);
        }
        if let Some(p) = &view.placement {
            order.extend(p.replicas(shard).iter().copied());
        }
        order.extend(view.nodes.keys().copied());
        let mut seen = BTreeSet::new();
        order
            .into_iter()
            .filter(|n| seen.insert(*n))
            .filter_map(|n| view.nodes.get(&n).map(|a| (n, a.clone())))
            .collect()
    }

    fn remote(&self, addr: &str) -> Result<RemoteClient, object::Error> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(addr) {
            return Ok(c.clone());
        }
        let client = RemoteClient::connect_lazy_to(addr, self.opts.clone())
            .map_err(|e| object::Error::Unavailable(format!("bad node address {addr}: {e}")))?;
        clients.insert(addr.to_owned(), client.clone());
        Ok(client)
    }

    fn learn_leader(&self, key: &ObjectKey, node: NodeId) {
        let mut view = self.write();
        if view.shards > 0 {
            let shard = key.id.shard(view.shards);
            view.leaders.insert(shard, node);
        }
    }

    fn forget_leader(&self, key: &ObjectKey, node: NodeId) {
        let mut view = self.write();
        if view.shards > 0 {
            let shard = key.id.shard(view.shards);
            if view.leaders.get(&shard) == Some(&node) {
                view.leaders.remove(&shard);
            }
        }
    }

    /// Runs `call` on the shard leader of `key`, retrying other candidates
    /// while the call was certainly not executed (not the owner, or the
    /// node could not be reached) until the failover window closes.
    async fn route<T, F, Fut>(&self, key: &ObjectKey, mut call: F) -> Result<T, object::Error>
    where
        F: FnMut(RemoteClient) -> Fut,
        Fut: std::future::Future<Output = Result<T, object::Error>>,
    {
        let started = std::time::Instant::now();
        let result = self.route_inner(key, &mut call).await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::forward(&key.namespace, outcome, started.elapsed());
        result
    }

    async fn route_inner<T, F, Fut>(
        &self,
        key: &ObjectKey,
        call: &mut F,
    ) -> Result<T, object::Error>
    where
        F: FnMut(RemoteClient) -> Fut,
        Fut: std::future::Future<Output = Result<T, object::Error>>,
    {
        let deadline = tokio::time::Instant::now() + FAILOVER_WINDOW;
        let mut backoff = Duration::from_millis(20);
        loop {
            let mut last = object::Error::Unavailable("no node known for this object".into());
            for (node, addr) in self.candidates(key) {
                let client = self.remote(&addr)?;
                match call(client).await {
                    Ok(v) => {
                        self.learn_leader(key, node);
                        return Ok(v);
                    }
                    Err(e) if not_executed(&e) => {
                        let reason = if matches!(e, object::Error::NotOwner { .. }) {
                            "not_owner"
                        } else {
                            "unreachable"
                        };
                        metrics::forward_retry(&key.namespace, reason);
                        self.forget_leader(key, node);
                        last = e;
                    }
                    Err(e) => return Err(e),
                }
            }
            if tokio::time::Instant::now() + backoff >= deadline {
                return Err(last);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    fn socket_client(&self, object: &ObjectKey, socket: SocketId) -> Option<RemoteClient> {
        self.sockets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(object.clone(), socket))
            .cloned()
    }
}

/// Whether a failed call certainly did not run on the object, so trying
/// another node cannot run it twice: the node refused it (not the owner,
/// shutting down) or could not be reached at all.
fn not_executed(e: &object::Error) -> bool {
    match e {
        object::Error::NotOwner { .. } | object::Error::ShuttingDown => true,
        object::Error::Unavailable(msg) => {
            let msg = msg.to_ascii_lowercase();
            msg.contains("connect") || msg.contains("refused")
        }
        _ => false,
    }
}

/// Rebuilds a request for another attempt (bodies are buffered bytes).
fn copy_request(req: &Request) -> Request {
    let mut out = Request::new(req.body().clone());
    *out.method_mut() = req.method().clone();
    *out.uri_mut() = req.uri().clone();
    *out.version_mut() = req.version();
    *out.headers_mut() = req.headers().clone();
    if let Some(ip) = req.extensions().get::<object::ClientIp>() {
        out.extensions_mut().insert(*ip);
    }
    out
}

impl ObjectClient for ClusterClient {
    fn fetch(
        &self,
        object: ObjectKey,
        req: Request,
    ) -> BoxFuture<'static, Result<FetchOutcome, object::Error>> {
        let this = self.clone();
        Box::pin(async move {
            let key = object.clone();
            let mut chosen: Option<RemoteClient> = None;
            let outcome = this
                .route(&key, |client| {
                    let req = copy_request(&req);
                    let key = key.clone();
                    chosen = Some(client.clone());
                    async move { ObjectClient::fetch(&client, key, req).await }
                })
                .await?;
            if let (Some(link), Some(client)) = (&outcome.socket, chosen) {
                this.sockets
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert((link.object.clone(), link.socket), client);
            }
            Ok(outcome)
        })
    }

    fn call(
        &self,
        object: ObjectKey,
        method: String,
        payload: bytes::Bytes,
    ) -> BoxFuture<'static, Result<CallResult, object::Error>> {
        let this = self.clone();
        Box::pin(async move {
            let key = object.clone();
            this.route(&key, |client| {
                let (key, method, payload) = (key.clone(), method.clone(), payload.clone());
                async move { ObjectClient::call(&client, key, method, payload).await }
            })
            .await
        })
    }

    fn socket_message(
        &self,
        object: &ObjectKey,
        socket: SocketId,
        msg: Message,
    ) -> Result<(), object::Error> {
        match self.socket_client(object, socket) {
            Some(c) => c.socket_message(object, socket, msg),
            None => Ok(()),
        }
    }

    fn socket_closed(
        &self,
        object: &ObjectKey,
        socket: SocketId,
        code: u16,
        reason: String,
    ) -> Result<(), object::Error> {
        let client = self
            .sockets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(object.clone(), socket));
        match client {
            Some(c) => c.socket_closed(object, socket, code, reason),
            None => Ok(()),
        }
    }

    fn socket_error(
        &self,
        object: &ObjectKey,
        socket: SocketId,
        error: String,
    ) -> Result<(), object::Error> {
        match self.socket_client(object, socket) {
            Some(c) => c.socket_error(object, socket, error),
            None => Ok(()),
        }
    }
}

/// Keeps `client`'s view fresh from any reachable node.
async fn watch_view(client: ClusterClient, seeds: Vec<String>, stop: CancellationToken) {
    let mut i = 0usize;
    loop {
        let mut addrs: Vec<String> = client.read().nodes.values().cloned().collect();
        addrs.extend(seeds.iter().cloned());
        let addr = addrs[i % addrs.len().max(1)].clone();
        i += 1;
        // A node that accepts connections but never answers (paused with
        // SIGSTOP, wedged) must not hold the edge's view: connecting and
        // every message of the stream get a deadline.
        let opened = tokio::time::timeout(VIEW_SILENCE, async {
            let mut c = cluster_service::connect(&addr, &client.opts.tls)
                .await
                .ok()?;
            c.watch(pb::WatchRequest {}).await.ok()
        })
        .await
        .ok()
        .flatten();
        if let Some(resp) = opened {
            let mut stream = resp.into_inner();
            loop {
                tokio::select! {
                    msg = tokio::time::timeout(VIEW_SILENCE, stream.message()) => match msg {
                        Ok(Ok(Some(v))) => client.apply(v),
                        _ => break,
                    },
                    _ = stop.cancelled() => return,
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// A running edge.
pub struct EdgeNode {
    edge: Edge,
    admin: Admin,
    stop: CancellationToken,
    grace: Duration,
}

impl EdgeNode {
    /// Starts an edge that reaches the cluster through `seeds`.
    pub async fn start(config: Config, seeds: Vec<String>) -> Result<EdgeNode, Error> {
        config.validate()?;
        let metrics = crate::telemetry::metrics::install();
        if seeds.is_empty() {
            return Err(Error::Cluster(
                "an edge needs at least one seed node (--join)".into(),
            ));
        }
        let tls = super::rpc_tls(&config)?;
        tracing::info!(tls = %tls.describe(), "gRPC to the nodes");
        let client = ClusterClient::new(RemoteOptions {
            tls,
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
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Listen { addr, source })?;
        let namespaces = crate::app::bindings().names().cloned().collect();
        let edge = Edge::start(
            listener,
            crate::app::SeedApp,
            Arc::new(client.clone()),
            namespaces,
            super::edge_options(&config)?,
        )
        .map_err(|source| Error::Listen { addr, source })?;
        tracing::info!(addr = %edge.local_addr(), "edge serving HTTP and WebSockets");
        let admin_addr = config.admin.listen;
        let admin_listener =
            TcpListener::bind(admin_addr)
                .await
                .map_err(|source| Error::Listen {
                    addr: admin_addr,
                    source,
                })?;
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
        let admin =
            Admin::start(admin_listener, metrics, sources).map_err(|source| Error::Listen {
                addr: admin_addr,
                source,
            })?;
        Ok(EdgeNode {
            edge,
            admin,
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

    pub async fn shutdown(self) {
        self.edge.shutdown(self.grace).await;
        self.stop.cancel();
        self.admin.shutdown().await;
    }
}
