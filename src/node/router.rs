//! Routing object calls to the leader of each object's shard, from outside
//! the node that runs the object: an edge's every call, and a node's calls
//! from its objects to objects other nodes lead. [`ClusterClient`] watches
//! the cluster view from any node ([`watch_view`]) and follows redirects
//! while leadership moves.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::cluster::service as cluster_service;
use crate::id::{ObjectKey, ShardId};
use crate::object::{self, CallResult, FetchOutcome, Message, ObjectClient, Request, SocketId};
use crate::ring::{NodeId, Placement};
use crate::rpc::pb;
use crate::rpc::reattach::{Attach, Moving, Reattacher};
use crate::rpc::remote::{RemoteClient, RemoteOptions};
use crate::telemetry::metrics;

mod retry;
use retry::Retry;

/// How long an edge keeps retrying a call while leadership moves.
const FAILOVER_WINDOW: Duration = Duration::from_secs(10);

/// The longest pause between rounds of attempts while a shard has no
/// leader: short, so a call goes through soon after an election ends.
const MAX_BACKOFF: Duration = Duration::from_millis(100);

/// How long a node that could not be reached, or left a call hanging, is
/// tried after the others.
const SUSPECT_FOR: Duration = Duration::from_secs(10);

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
    /// Sockets between owners (re-attaching), per object.
    moving: Moving,
    /// Nodes that recently could not be reached or left a call hanging
    /// (killed, paused, partitioned), with when: tried last until they
    /// answer again or [`SUSPECT_FOR`] passes.
    suspects: Arc<Mutex<HashMap<NodeId, std::time::Instant>>>,
    pub(crate) opts: RemoteOptions,
}

impl ClusterClient {
    pub(crate) fn new(opts: RemoteOptions) -> ClusterClient {
        ClusterClient {
            view: Arc::default(),
            clients: Arc::default(),
            sockets: Arc::default(),
            moving: Moving::default(),
            suspects: Arc::default(),
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
        order.retain(|n| seen.insert(*n));
        // Suspects last, otherwise in the same order (a stable sort).
        let suspects = self.suspects.lock().unwrap_or_else(|p| p.into_inner());
        order.sort_by_key(|n| {
            suspects
                .get(n)
                .is_some_and(|since| since.elapsed() < SUSPECT_FOR)
        });
        order
            .into_iter()
            .filter_map(|n| view.nodes.get(&n).map(|a| (n, a.clone())))
            .collect()
    }

    /// The node to watch the cluster view from, round robin (`i`) over the
    /// known nodes not suspected, or over every known node and seed when
    /// all are suspects; with its id when it is a known node.
    fn view_source(&self, seeds: &[String], i: usize) -> Option<(Option<NodeId>, String)> {
        let view = self.read();
        let suspects = self.suspects.lock().unwrap_or_else(|p| p.into_inner());
        let fresh: Vec<(Option<NodeId>, String)> = view
            .nodes
            .iter()
            .filter(|(id, _)| {
                suspects
                    .get(id)
                    .is_none_or(|since| since.elapsed() >= SUSPECT_FOR)
            })
            .map(|(id, a)| (Some(*id), a.clone()))
            .collect();
        let list = if fresh.is_empty() {
            let mut all: Vec<(Option<NodeId>, String)> = view
                .nodes
                .iter()
                .map(|(id, a)| (Some(*id), a.clone()))
                .collect();
            all.extend(
                seeds
                    .iter()
                    .filter(|s| !view.nodes.values().any(|a| a == *s))
                    .map(|s| (None, s.clone())),
            );
            all
        } else {
            fresh
        };
        if list.is_empty() {
            return None;
        }
        list.get(i % list.len()).cloned()
    }

    /// Marks `node` suspect (`true`) or cleared (`false`).
    fn suspect(&self, node: NodeId, suspect: bool) {
        let mut suspects = self.suspects.lock().unwrap_or_else(|p| p.into_inner());
        if suspect {
            suspects.insert(node, std::time::Instant::now());
        } else {
            suspects.remove(&node);
        }
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
    async fn route<T, F, Fut>(
        &self,
        key: &ObjectKey,
        retry: Retry,
        mut call: F,
    ) -> Result<T, object::Error>
    where
        F: FnMut(RemoteClient) -> Fut,
        Fut: std::future::Future<Output = Result<T, object::Error>>,
    {
        let started = std::time::Instant::now();
        let result = self.route_inner(key, retry, &mut call).await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::forward(&key.namespace, outcome, started.elapsed());
        result
    }

    async fn route_inner<T, F, Fut>(
        &self,
        key: &ObjectKey,
        retry: Retry,
        call: &mut F,
    ) -> Result<T, object::Error>
    where
        F: FnMut(RemoteClient) -> Fut,
        Fut: std::future::Future<Output = Result<T, object::Error>>,
    {
        let deadline = tokio::time::Instant::now() + FAILOVER_WINDOW;
        let mut backoff = Duration::from_millis(20);
        let mut last = object::Error::Unavailable("no node known for this object".into());
        // Nodes that failed this call with an unknown outcome (a broken or
        // silent connection): not tried again for it, so a paused node
        // costs a safe retry one keep-alive timeout, not the whole window.
        let mut stalled: BTreeSet<NodeId> = BTreeSet::new();
        loop {
            for (node, addr) in self.candidates(key) {
                if stalled.contains(&node) {
                    continue;
                }
                let client = self.remote(&addr)?;
                match call(client).await {
                    Ok(v) => {
                        self.learn_leader(key, node);
                        self.suspect(node, false);
                        return Ok(v);
                    }
                    Err(e) if retry.allows(&e) => {
                        let reason = match e {
                            object::Error::NotOwner { .. } => "not_owner",
                            object::Error::Unreachable(_) => "unreachable",
                            _ => "idempotent",
                        };
                        metrics::forward_retry(&key.namespace, reason);
                        tracing::debug!(%key, node, error = %e, "call not run there; trying elsewhere");
                        self.forget_leader(key, node);
                        if matches!(e, object::Error::Unavailable(_)) {
                            stalled.insert(node);
                        }
                        if matches!(
                            e,
                            object::Error::Unavailable(_) | object::Error::Unreachable(_)
                        ) {
                            self.suspect(node, true);
                        }
                        last = e;
                    }
                    Err(e) => {
                        if matches!(e, object::Error::Unavailable(_)) {
                            self.suspect(node, true);
                        }
                        return Err(e);
                    }
                }
            }
            if tokio::time::Instant::now() + backoff >= deadline {
                return Err(last);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Re-registers a socket with its object's owner, found as calls find
    /// it (a move is a `NotOwner` away from the new owner).
    fn reattacher(&self) -> Reattacher {
        let this = self.clone();
        let attach: Attach = Arc::new(move |key: ObjectKey, stable, registration, delivered| {
            let this = this.clone();
            Box::pin(async move {
                this.route(&key, Retry::NotExecuted, |client| {
                    let (key, registration) = (key.clone(), registration.clone());
                    async move { client.reattach(key, stable, registration, delivered).await }
                })
                .await
            })
        });
        Reattacher::new(attach, self.moving.clone())
    }

    fn socket_client(&self, object: &ObjectKey, socket: SocketId) -> Option<RemoteClient> {
        self.sockets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(object.clone(), socket))
            .cloned()
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
            let retry = Retry::for_request(&req);
            // An accepted socket follows its object when the owner changes.
            let reattacher = object::is_websocket_upgrade(&req).then(|| this.reattacher());
            let outcome = this
                .route(&key, retry, |client| {
                    let req = copy_request(&req);
                    let key = key.clone();
                    chosen = Some(client.clone());
                    let reattacher = reattacher.clone();
                    async move {
                        match reattacher {
                            Some(r) => client.fetch_following(key, req, r).await,
                            None => ObjectClient::fetch(&client, key, req).await,
                        }
                    }
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
            this.route(&key, Retry::NotExecuted, |client| {
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
pub(crate) async fn watch_view(client: ClusterClient, seeds: Vec<String>, stop: CancellationToken) {
    let mut i = 0usize;
    loop {
        let Some((node, addr)) = client.view_source(&seeds, i) else {
            return;
        };
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
                        _ => {
                            if let Some(node) = node {
                                client.suspect(node, true);
                            }
                            break;
                        }
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

/// A node's router for the calls its objects make: an object whose shard
/// this node leads is called here, any other through [`ClusterClient`] on
/// its shard's leader (also where a local call finds the shard moved).
/// Holds the runtime weakly: the runtime holds its router.
pub(crate) struct NodeRouter {
    pub(crate) local: object::WeakRuntime,
    pub(crate) cluster: ClusterClient,
}

impl NodeRouter {
    /// This node's runtime, if it leads `key`'s shard.
    fn here(&self, key: &ObjectKey) -> Option<object::Runtime> {
        self.local.upgrade().filter(|r| r.leads(key))
    }
}

impl ObjectClient for NodeRouter {
    fn fetch(
        &self,
        object: ObjectKey,
        req: Request,
    ) -> BoxFuture<'static, Result<FetchOutcome, object::Error>> {
        let (here, cluster) = (self.here(&object), self.cluster.clone());
        Box::pin(async move {
            if let Some(runtime) = here {
                match runtime.fetch(object.clone(), copy_request(&req)).await {
                    Err(object::Error::NotOwner { .. }) => {}
                    done => return done,
                }
            }
            ObjectClient::fetch(&cluster, object, req).await
        })
    }

    fn call(
        &self,
        object: ObjectKey,
        method: String,
        payload: bytes::Bytes,
    ) -> BoxFuture<'static, Result<CallResult, object::Error>> {
        let (here, cluster) = (self.here(&object), self.cluster.clone());
        Box::pin(async move {
            if let Some(runtime) = here {
                match runtime
                    .call(object.clone(), method.clone(), payload.clone())
                    .await
                {
                    Err(object::Error::NotOwner { .. }) => {}
                    done => return done,
                }
            }
            ObjectClient::call(&cluster, object, method, payload).await
        })
    }

    // Sockets are opened by edges, never by objects: nothing to route.
    fn socket_message(&self, _: &ObjectKey, _: SocketId, _: Message) -> Result<(), object::Error> {
        Ok(())
    }

    fn socket_closed(
        &self,
        _: &ObjectKey,
        _: SocketId,
        _: u16,
        _: String,
    ) -> Result<(), object::Error> {
        Ok(())
    }

    fn socket_error(&self, _: &ObjectKey, _: SocketId, _: String) -> Result<(), object::Error> {
        Ok(())
    }
}
