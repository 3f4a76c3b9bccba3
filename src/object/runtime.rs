//! The object runtime of a node: which objects are live, activating them on
//! first use, and routing events to their executors.
//!
//! Invariant: at most one executor per object in this process. The registry
//! entry is created, replaced and removed only under its shard's lock; an
//! idle executor leaves only when its mailbox is empty and its writes are
//! committed, and every executor fences before it reads (an empty entry of
//! its term, applied), so a successor never reads state older than its
//! predecessor's. An executor serves one Raft term (see `gate::Life`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use self::bindings::Bindings;
use self::bindings::Class;
use super::Error;
use super::alarms::{self, AlarmsHandle};
use super::budget::{Budget, MailboxBytes, Slot};
use super::client::{CallResult, FetchOutcome, ObjectClient};
use super::executor::{Activation, Event, Queued};
use super::gate::Tenure;
use super::http::Request;
use super::migrations::Namespaces;
use super::socket::SharedHub;
use super::storage::Limits;
use super::worker::Env;
use crate::id::{ObjectKey, ShardId};
use crate::replication::{Replicas, ShardHandle};
use crate::storage::Db;
use crate::telemetry::hot::{self, Hot, HotObjects};
use crate::telemetry::metrics;

/// Tunables of the runtime.
#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    /// An executor with nothing to do for this long is evicted.
    pub idle_timeout: Duration,
    /// How long a call from one object to another may take (`calls.rs`).
    pub call_timeout: Duration,
    /// The vars and secrets objects see; `None`: this process's
    /// (`Vars::from_process`).
    pub vars: Option<Arc<super::Vars>>,
    /// Frames a socket may queue before it is dropped as too slow.
    pub socket_buffer: usize,
    /// How long a socket whose object moved here (listed from its
    /// registration) may take to be re-attached by its edge before the
    /// object is told it closed (1006).
    pub socket_return_wait: Duration,
    /// Frames each object keeps for its sockets, in ring slots, so that a
    /// socket whose owner died gets from the new owner what it missed
    /// (`replay.rs`). 0 (the default, and `roost dev`'s): none kept.
    pub socket_replay: u16,
    /// Events an object may have queued before callers get `Overloaded`.
    pub mailbox: usize,
    /// Bytes of events an object may have queued (`budget.rs`).
    pub mailbox_bytes: usize,
    /// Objects with a live executor at once (`budget.rs`).
    pub max_live: usize,
    /// How long a request waits for an executor slot to free before it gets
    /// `Overloaded`.
    pub slot_wait: Duration,
    pub limits: Limits,
    /// Records of a deleted class deleted per Raft write (`reclaim.rs`).
    pub reclaim_batch: usize,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            idle_timeout: Duration::from_secs(30),
            call_timeout: Duration::from_secs(30),
            vars: None,
            socket_buffer: 1024,
            socket_return_wait: Duration::from_secs(30),
            socket_replay: 0,
            mailbox: 4096,
            mailbox_bytes: 16 << 20,
            max_live: 100_000,
            slot_wait: Duration::from_secs(2),
            limits: Limits::default(),
            reclaim_batch: 512,
        }
    }
}

struct ExecutorHandle {
    tx: mpsc::Sender<Queued>,
    generation: u64,
    /// The term it serves; an executor of an ended term is replaced.
    term: u64,
    /// Asks the executor to leave if idle (the live-executor cap).
    make_room: Arc<tokio::sync::Notify>,
    /// Bytes of the events in `tx`'s queue.
    queued: MailboxBytes,
    /// Cancelled once the executor ended and its outputs are out.
    finished: CancellationToken,
}

#[derive(Default)]
struct Entry {
    executor: Option<ExecutorHandle>,
    /// Outlives the executor: sockets stay open while the object is evicted.
    hub: SharedHub,
    /// The name the object's id was made from, once a caller gave it
    /// (checked against the id): what the object sees as its `id.name`.
    name: KnownName,
}

/// A shard's live objects, and the leadership epoch their executors serve
/// (`gate::Tenure`): every executor registered belongs to that epoch.
#[derive(Default)]
struct Registry {
    objects: HashMap<ObjectKey, Entry>,
    tenure: Tenure,
}

impl std::ops::Deref for Registry {
    type Target = HashMap<ObjectKey, Entry>;

    fn deref(&self) -> &Self::Target {
        &self.objects
    }
}

impl std::ops::DerefMut for Registry {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.objects
    }
}

/// An object's name as its executor sees it: set once, by the first call
/// that carried the right name.
pub(crate) type KnownName = Arc<OnceLock<Arc<str>>>;

mod bindings;
mod leadership;
mod reclaim;
mod sockets;

/// The node's object runtime. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    replicas: Arc<Replicas>,
    classes: BTreeMap<Arc<str>, Arc<dyn Class>>,
    /// Each binding's storage identity, and the deleted ones.
    namespaces: Namespaces,
    opts: RuntimeOptions,
    limits: Arc<Limits>,
    /// Live objects, one registry per shard (the lock is per shard).
    objects: Vec<Mutex<Registry>>,
    alarms: AlarmsHandle,
    shutdown: CancellationToken,
    /// Executors, the alarm scheduler and the leadership watchers.
    executors: TaskTracker,
    generation: AtomicU64,
    /// Events per object, for the busiest-objects view (one sketch a shard).
    hot: HotObjects<ObjectKey>,
    /// The live-executor cap and recency.
    budget: Budget,
    /// Routes calls from this node's objects to objects on other nodes
    /// (`set_object_client`); without it they reach this runtime only.
    router: OnceLock<Arc<dyn ObjectClient>>,
    /// What objects see as their `env`.
    env: Env,
}

/// A runtime held weakly: what its objects' `env` calls through (the
/// runtime holds that `env`).
#[derive(Clone)]
pub(crate) struct WeakRuntime(Weak<Inner>);

impl WeakRuntime {
    pub(crate) fn upgrade(&self) -> Option<Runtime> {
        self.0.upgrade().map(|inner| Runtime { inner })
    }
}

impl Runtime {
    /// Starts the runtime over the node's shards: the alarm scheduler and a
    /// watcher of each shard's leadership.
    pub fn start(
        db: Db,
        replicas: Arc<Replicas>,
        bindings: Bindings,
        opts: RuntimeOptions,
    ) -> Result<Runtime, Error> {
        let namespaces = bindings.namespaces()?;
        let shutdown = CancellationToken::new();
        let (alarms, alarm_rx) = AlarmsHandle::new();
        let shards = replicas.shard_count();
        // Objects' `env` calls back through this runtime, held weakly.
        let inner = Arc::new_cyclic(|weak| {
            let client = super::calls::FromObjects(WeakRuntime(weak.clone()));
            let mut env = Env::new(Arc::new(client), namespaces.clone());
            if let Some(vars) = opts.vars.clone() {
                env = env.with_vars(vars);
            }
            Inner {
                db,
                replicas,
                classes: bindings.classes,
                namespaces,
                limits: Arc::new(opts.limits.clone()),
                budget: Budget::new(opts.max_live),
                opts,
                objects: (0..shards)
                    .map(|_| Mutex::new(Registry::default()))
                    .collect(),
                alarms,
                shutdown,
                executors: TaskTracker::new(),
                generation: AtomicU64::new(1),
                hot: HotObjects::new(usize::from(shards), hot::CAPACITY_PER_SHARD, hot::WINDOW),
                router: OnceLock::new(),
                env,
            }
        });
        let runtime = Runtime { inner };
        // Tracked like the executors: `shutdown` waits for them, so no task
        // still holds the store once it returns.
        runtime.inner.executors.spawn(alarms::run_scheduler(
            runtime.clone(),
            alarm_rx,
            runtime.inner.shutdown.clone(),
        ));
        for shard in 0..shards {
            if let Some(handle) = runtime.inner.replicas.shard(shard) {
                runtime
                    .inner
                    .executors
                    .spawn(runtime.clone().watch_leadership(handle.clone()));
            }
        }
        Ok(runtime)
    }

    /// Routes the calls this node's objects make to other objects: a
    /// cluster node's router (its own objects here, the others on their
    /// shard's leader). Set once; until then (and in `roost dev`) objects
    /// reach this runtime's objects only. Returns `false` if already set.
    pub fn set_object_client(&self, router: Arc<dyn ObjectClient>) -> bool {
        self.inner.router.set(router).is_ok()
    }

    pub(crate) fn downgrade(&self) -> WeakRuntime {
        WeakRuntime(Arc::downgrade(&self.inner))
    }

    /// Whether this node leads the shard of `key` now (so a call to it
    /// may run here).
    pub(crate) fn leads(&self, key: &ObjectKey) -> bool {
        self.inner
            .replicas
            .shard(self.shard_of(key))
            .is_some_and(|s| s.serving_epoch().is_some())
    }

    /// Where a call from one of this runtime's objects goes.
    pub(crate) fn outgoing(&self) -> Arc<dyn ObjectClient> {
        match self.inner.router.get() {
            Some(router) => router.clone(),
            None => Arc::new(self.clone()),
        }
    }

    /// What this runtime's objects see as their `env`.
    pub(crate) fn object_env(&self) -> Env {
        self.inner.env.clone()
    }

    /// The bound namespaces.
    pub fn namespaces(&self) -> Vec<Arc<str>> {
        self.inner.classes.keys().cloned().collect()
    }

    /// The bound namespaces with their storage identities.
    pub fn namespace_table(&self) -> &Namespaces {
        &self.inner.namespaces
    }

    /// The object stored as `stored`, named by the binding that serves
    /// its identity; `None` if no binding does (a deleted class).
    pub(crate) fn served_key(&self, stored: &ObjectKey) -> Option<ObjectKey> {
        let binding = self.inner.namespaces.binding(&stored.namespace)?;
        Some(ObjectKey::new(binding.clone(), stored.id))
    }

    /// Where `key` (named by its binding) is stored: the same id under its
    /// namespace's identity (`migrations.rs`).
    pub(crate) fn stored_key(&self, key: &ObjectKey) -> ObjectKey {
        match self.inner.namespaces.identity(&key.namespace) {
            Some(identity) if **identity != *key.namespace => {
                ObjectKey::new(identity.clone(), key.id)
            }
            _ => key.clone(),
        }
    }

    pub(crate) fn shard_of(&self, key: &ObjectKey) -> ShardId {
        key.id.shard(self.inner.replicas.shard_count())
    }

    fn objects(&self, shard: ShardId) -> Result<MutexGuard<'_, Registry>, Error> {
        let map = self
            .inner
            .objects
            .get(usize::from(shard))
            .ok_or(Error::NotOwner { shard })?;
        Ok(map.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Runs a request on an object and waits for its (gated) response.
    pub async fn fetch(&self, key: ObjectKey, req: Request) -> Result<FetchOutcome, Error> {
        let slot = self.slot_for(&key).await?;
        let (reply, rx) = oneshot::channel();
        self.dispatch_with(
            &key,
            Event::Fetch {
                req: Box::new(req),
                reply,
            },
            slot,
        )?;
        rx.await.map_err(|_| Error::Reset)?
    }

    /// Runs a typed method call on an object and waits for its (gated)
    /// answer: `Ok(Err(_))` is the handler's error, `Err(_)` means the call
    /// did not run to an answer.
    pub async fn call(
        &self,
        key: ObjectKey,
        method: String,
        payload: Bytes,
    ) -> Result<CallResult, Error> {
        let slot = self.slot_for(&key).await?;
        let (reply, rx) = oneshot::channel();
        self.dispatch_with(
            &key,
            Event::Call {
                method,
                payload,
                reply,
            },
            slot,
        )?;
        rx.await.map_err(|_| Error::Reset)?
    }

    /// Hands `event` to the object's executor, activating it if needed.
    pub(crate) fn dispatch(&self, key: &ObjectKey, event: Event) -> Result<(), Error> {
        self.dispatch_with(key, event, None)
    }

    /// [`Self::dispatch`], activating with `slot` if one was reserved.
    fn dispatch_with(
        &self,
        key: &ObjectKey,
        event: Event,
        mut slot: Option<Slot>,
    ) -> Result<(), Error> {
        if self.inner.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let shard_id = self.shard_of(key);
        let shard = self
            .inner
            .replicas
            .shard(shard_id)
            .ok_or(Error::NotOwner { shard: shard_id })?;
        // A lapse of the lease the leadership watch has not published (a
        // round may renew it within the epoch) is no reason to refuse: the
        // executor holds the event until the lease is back or the epoch
        // ends (`Admit::Lapsed`).
        let Some(term) = shard.leader_epoch().or_else(|| shard.watched_epoch()) else {
            return Err(Error::NotOwner { shard: shard_id });
        };
        let class = self
            .inner
            .classes
            .get(&key.namespace)
            .ok_or_else(|| Error::UnknownNamespace(key.namespace.to_string()))?;
        let bytes = super::budget::event_bytes(&event);
        let mut objects = self.objects(shard_id)?;
        // The epoch was read before the lock: the registry may have moved
        // past it meanwhile (then the event never ran), or this dispatch
        // is the first to see a new one (then it moves the registry there,
        // as the leadership watcher would: see `Tenure`).
        self.enter_epoch(shard_id, &mut objects, Some(term))?;
        let entry = objects.entry(key.clone()).or_default();
        if let Some(name) = key.name()
            && entry.name.get().is_none()
            && self.inner.namespaces.is_name_of(key, name)
        {
            let _ = entry.name.set(name.clone());
        }
        if entry.executor.as_ref().is_some_and(|h| h.term != term) {
            // Never: the registry serves `term` and only ever registers
            // executors of the epoch it serves. Were it so, the executor is
            // bound to an ended epoch: it stops by itself (failing what it
            // still holds as `NotOwner`); its successor fences first.
            entry.executor = None;
        }
        let mut queued = Queued::new(event);
        for _ in 0..2 {
            let handle = match &entry.executor {
                Some(h) => h,
                None => {
                    let Some(slot) = slot.take().or_else(|| self.inner.budget.try_slot()) else {
                        if entry.hub.is_empty() {
                            objects.remove(key);
                        }
                        drop(objects);
                        self.make_room();
                        metrics::object_overloaded(&key.namespace);
                        queued.event.fail(Error::Overloaded);
                        return Err(Error::Overloaded);
                    };
                    entry.executor.insert(self.activate(
                        key,
                        shard,
                        term,
                        (&entry.hub, &entry.name),
                        class.as_ref(),
                        slot,
                    ))
                }
            };
            self.inner.budget.touch(key);
            let Some(charge) = handle.queued.charge(bytes, self.inner.opts.mailbox_bytes) else {
                metrics::object_overloaded(&key.namespace);
                queued.event.fail(Error::Overloaded);
                return Err(Error::Overloaded);
            };
            queued.charge = Some(charge);
            match handle.tx.try_send(queued) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(q)) => {
                    metrics::object_overloaded(&key.namespace);
                    q.event.fail(Error::Overloaded);
                    return Err(Error::Overloaded);
                }
                Err(mpsc::error::TrySendError::Closed(q)) => {
                    // The executor ended without leaving the registry
                    // (its task failed): replace it.
                    entry.executor = None;
                    queued = q;
                }
            }
        }
        queued.event.fail(Error::Reset);
        Err(Error::Reset)
    }

    /// A slot for a new executor of `key`, if it has none: a free one, or
    /// one freed within the wait after asking the least recently used
    /// executors to leave; `Overloaded` if none frees.
    async fn slot_for(&self, key: &ObjectKey) -> Result<Option<Slot>, Error> {
        let live = {
            let objects = self.objects(self.shard_of(key))?;
            objects.get(key).is_some_and(|e| e.executor.is_some())
        };
        if live {
            return Ok(None);
        }
        if let Some(slot) = self.inner.budget.try_slot() {
            return Ok(Some(slot));
        }
        self.make_room();
        match self.inner.budget.wait_slot(self.inner.opts.slot_wait).await {
            Some(slot) => Ok(Some(slot)),
            None => {
                metrics::object_overloaded(&key.namespace);
                Err(Error::Overloaded)
            }
        }
    }

    /// Asks the least recently used executors with nothing queued to
    /// leave (each does only if idle); forgets keys that have none.
    fn make_room(&self) {
        for victim in self.inner.budget.victims() {
            let Ok(objects) = self.objects(self.shard_of(&victim)) else {
                continue;
            };
            match objects.get(&victim).and_then(|e| e.executor.as_ref()) {
                Some(h) if h.tx.capacity() == h.tx.max_capacity() => h.make_room.notify_one(),
                Some(_) => {}
                None => self.inner.budget.forget(&victim),
            }
        }
    }

    /// The live-executor cap.
    pub fn max_live_objects(&self) -> usize {
        self.inner.budget.max()
    }

    fn activate(
        &self,
        key: &ObjectKey,
        shard: &ShardHandle,
        term: u64,
        (hub, name): (&SharedHub, &KnownName),
        class: &dyn Class,
        slot: Slot,
    ) -> ExecutorHandle {
        let (tx, rx) = mpsc::channel(self.inner.opts.mailbox.max(1));
        let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed);
        let make_room = Arc::new(tokio::sync::Notify::new());
        let finished = CancellationToken::new();
        let act = Activation {
            key: key.clone(),
            stored: self.stored_key(key),
            generation,
            term,
            shard: shard.clone(),
            db: self.inner.db.clone(),
            hub: hub.clone(),
            name: name.clone(),
            limits: self.inner.limits.clone(),
            socket_buffer: self.inner.opts.socket_buffer,
            socket_return_wait: self.inner.opts.socket_return_wait,
            socket_replay: self.inner.opts.socket_replay,
            idle_timeout: self.inner.opts.idle_timeout,
            call_timeout: self.inner.opts.call_timeout,
            runtime: self.clone(),
            alarms: self.inner.alarms.clone(),
            shutdown: self.inner.shutdown.clone(),
            make_room: make_room.clone(),
            finished: finished.clone(),
        };
        class.spawn(&self.inner.executors, act, rx, slot);
        metrics::object_activated(&key.namespace);
        ExecutorHandle {
            tx,
            generation,
            term,
            make_room,
            queued: MailboxBytes::default(),
            finished,
        }
    }

    /// Removes executor `generation` of `key` from the registry if its
    /// mailbox is empty (or `force`). Returns whether it is no longer
    /// registered.
    pub(crate) fn remove_executor(
        &self,
        key: &ObjectKey,
        generation: u64,
        mailbox: &mpsc::Receiver<Queued>,
        force: bool,
    ) -> bool {
        let Ok(mut objects) = self.objects(self.shard_of(key)) else {
            return true;
        };
        let Some(entry) = objects.get_mut(key) else {
            return true;
        };
        match &entry.executor {
            Some(h) if h.generation == generation => {}
            _ => return true,
        }
        if !force && !mailbox.is_empty() {
            return false;
        }
        entry.executor = None;
        self.inner.budget.forget(key);
        if entry.hub.is_empty() {
            objects.remove(key);
        }
        true
    }

    /// Objects with a running executor.
    pub fn live_objects(&self) -> usize {
        self.inner
            .objects
            .iter()
            .map(|m| {
                m.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                    .filter(|e| e.executor.is_some())
                    .count()
            })
            .sum()
    }

    /// Counts an event of `key` that kept its executor busy for `busy`.
    pub(crate) fn record_hot(&self, shard: ShardId, key: &ObjectKey, busy: Duration) {
        self.inner.hot.record(usize::from(shard), key, busy);
    }

    /// The `n` busiest objects of the last complete window, busiest first.
    pub fn hot_objects(&self, n: usize) -> Vec<Hot<ObjectKey>> {
        self.inner.hot.top(n)
    }

    pub(crate) fn shard_count(&self) -> u16 {
        self.inner.replicas.shard_count()
    }

    /// Stops taking events, lets every executor finish its queue and
    /// release its committed outputs, and waits for them and for the
    /// runtime's own tasks (alarm scheduler, leadership watchers).
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.executors.close();
        self.inner.executors.wait().await;
    }
}
