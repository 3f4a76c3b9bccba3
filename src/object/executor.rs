//! One executor per live object: a task that owns the object instance and
//! runs its events one at a time.
//!
//! Input gate: events are taken from the mailbox only after the previous one
//! returned, so no event ever interleaves with another's storage calls.
//! Output gate: each event's outputs go to the releaser (`outbox.rs`) with
//! the commit of its writes (or a read barrier), and the loop moves on to
//! the next event at once.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use http::StatusCode;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Error;
use super::alarms::AlarmsHandle;
use super::calls::Committer;
use super::class::{AlarmInfo, DurableObject};
use super::client::{CallResult, FetchOutcome};
use super::context::Context;
use super::gate::{Admit, Life};
use super::http::{HandlerError, Request, is_websocket_upgrade};
use super::journal;
use super::outbox::{GateState, Output, OutputSink, run_releaser};
use super::runtime::Runtime;
use super::socket::{Message, SharedHub, SocketId};
use super::storage::{Limits, Storage};
use super::view::AlarmChange;
use crate::id::ObjectKey;
use crate::replication::ShardHandle;
use crate::storage::Db;
use crate::telemetry::{metrics, traces};

/// How long a new owner's first event waits for the object's sockets to
/// come back from their old owner.
const RETURN_GATE: Duration = Duration::from_secs(2);

mod alarm;
mod finish;
mod lapse;
mod sockets;

/// What an executor is asked to do.
pub(crate) enum Event {
    Fetch {
        req: Box<Request>,
        reply: oneshot::Sender<Result<FetchOutcome, Error>>,
    },
    Call {
        method: String,
        payload: Bytes,
        reply: oneshot::Sender<Result<CallResult, Error>>,
    },
    SocketMessage {
        socket: SocketId,
        msg: Message,
    },
    /// The client closed the socket; the hub entry is already marked closing.
    SocketClose {
        socket: SocketId,
        code: u16,
        reason: String,
    },
    SocketError {
        socket: SocketId,
        error: String,
    },
    Alarm {
        info: AlarmInfo,
        reply: oneshot::Sender<bool>,
    },
    /// Retries are exhausted: drop the alarm that was due at this time.
    AlarmGiveUp {
        scheduled_ms: u64,
    },
    /// Activate the object so that it syncs its committed alarm with the
    /// scheduler (after a write that changed it had an unknown outcome);
    /// `true` once an executor has fenced and synced.
    AlarmSync {
        reply: oneshot::Sender<bool>,
    },
}

/// An event in a mailbox: when it was queued, and the span that was current
/// then (the edge's request span, say), which its handler span continues
/// across the task boundary.
pub(crate) struct Queued {
    pub event: Event,
    pub since: Instant,
    pub parent: tracing::Span,
    /// The event's bytes counted in its object's mailbox (`budget.rs`),
    /// uncounted when the queued event is dropped.
    pub charge: Option<super::budget::Charge>,
}

impl Queued {
    pub(crate) fn new(event: Event) -> Queued {
        Queued {
            event,
            since: Instant::now(),
            parent: tracing::Span::current(),
            charge: None,
        }
    }
}

impl Event {
    /// The `event` label of metrics and spans.
    fn kind(&self) -> &'static str {
        match self {
            Event::Fetch { .. } => "fetch",
            Event::Call { .. } => "call",
            Event::SocketMessage { .. } => "socket_message",
            Event::SocketClose { .. } => "socket_close",
            Event::SocketError { .. } => "socket_error",
            Event::Alarm { .. } => "alarm",
            Event::AlarmGiveUp { .. } => "alarm_give_up",
            Event::AlarmSync { .. } => "alarm_sync",
        }
    }

    /// Tells the sender the event will not run.
    pub(crate) fn fail(self, err: Error) {
        match self {
            Event::Fetch { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            Event::Call { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            Event::Alarm { reply, .. } | Event::AlarmSync { reply } => {
                let _ = reply.send(false);
            }
            _ => {}
        }
    }
}

/// Everything an executor needs, handed over when it is spawned.
pub(crate) struct Activation {
    /// The object as callers name it (its binding): the registry's key.
    pub key: ObjectKey,
    /// Where its storage and alarm live: the same id under its class's
    /// identity (the binding, or the name before a rename).
    pub stored: ObjectKey,
    pub generation: u64,
    /// The Raft term in which this node led the shard at activation; the
    /// executor serves only that term.
    pub term: u64,
    pub shard: ShardHandle,
    pub db: Db,
    pub hub: SharedHub,
    /// The object's name, once a caller gave it (`id.name`).
    pub name: super::runtime::KnownName,
    pub limits: Arc<Limits>,
    pub socket_buffer: usize,
    /// How long a socket listed from its registration may take to come back.
    pub socket_return_wait: Duration,
    /// Frames kept for its sockets, in ring slots (`replay.rs`); 0: none.
    pub socket_replay: u16,
    pub idle_timeout: Duration,
    /// How long a call from the object to another may take.
    pub call_timeout: Duration,
    pub runtime: Runtime,
    pub alarms: AlarmsHandle,
    pub shutdown: CancellationToken,
    /// Notified when the runtime needs this executor's slot (the
    /// live-executor cap): it leaves if idle, as on its idle timeout.
    pub make_room: Arc<tokio::sync::Notify>,
    /// Cancelled once the executor has ended and every output it
    /// committed is out (its sockets may then be handed to a new owner).
    pub finished: CancellationToken,
}

/// How often an idle executor with writes still in flight checks again.
const RECHECK: Duration = Duration::from_millis(20);

pub(crate) async fn run<T: DurableObject>(act: Activation, mailbox: mpsc::Receiver<Queued>) {
    let span = tracing::debug_span!("object", object = %act.key, shard = act.shard.id());
    // Dropped last, once the releaser has let every committed output out.
    let _finished = act.finished.clone().drop_guard();
    async move {
        let (release_tx, release_rx) = mpsc::unbounded_channel();
        let gate = Arc::new(GateState::default());
        let releaser = tokio::spawn(run_releaser(
            act.key.clone(),
            act.shard.id(),
            release_rx,
            gate.clone(),
            act.hub.clone(),
            act.alarms.clone(),
        ));
        let ctx = Context {
            storage: Storage::new(
                act.db.clone(),
                act.shard.id(),
                act.stored.clone(),
                act.key.namespace.clone(),
                act.limits.clone(),
            ),
            key: act.key.clone(),
            name: act.name.clone(),
            hub: act.hub.clone(),
            outputs: OutputSink::default(),
            sockets: Default::default(),
            socket_buffer: act.socket_buffer,
            upgrade: false,
            accepted: Vec::new(),
            env: act.runtime.object_env(),
            call_timeout: act.call_timeout,
            registrations: Default::default(),
            frames: Default::default(),
            committer: Committer {
                key: act.stored.clone(),
                binding: act.key.namespace.clone(),
                shard: act.shard.clone(),
                epoch: act.term,
                seq: 0,
                gate: gate.clone(),
                release_tx,
            },
        };
        let mut exec = Executor {
            life: Life::new(act.term),
            act,
            ctx,
            gate,
            failed: false,
        };
        exec.event_loop::<T>(mailbox).await;
        // Dropping the executor (its committer) ends the releaser.
        drop(exec);
        // Let every committed output out before the task ends.
        let _ = releaser.await;
    }
    .instrument(span)
    .await
}

struct Executor {
    /// The term this executor serves (the pure rule of when it stops).
    life: Life,
    act: Activation,
    ctx: Context,
    gate: Arc<GateState>,
    /// The current event ended in `finish(false)` (its handler failed).
    failed: bool,
}

impl Executor {
    async fn event_loop<T: DurableObject>(&mut self, mut mailbox: mpsc::Receiver<Queued>) {
        self.activate().await;
        let mut obj: Option<T> = None;
        let mut leadership = self.act.shard.leadership();
        let mut shutting_down = false;
        loop {
            if self.gate.broken.load(Ordering::Acquire) {
                self.move_sockets_on_reset().await;
                self.evict(&mut mailbox, true);
                return;
            }
            if self.life.term_ended(*leadership.borrow_and_update()) {
                // Leadership lost (or lost and regained: a new term).
                self.evict(&mut mailbox, true);
                return;
            }
            let idle = if shutting_down {
                RECHECK
            } else {
                self.act.idle_timeout
            };
            let event = tokio::select! {
                biased;
                ev = mailbox.recv() => ev,
                _ = self.act.shutdown.cancelled(), if !shutting_down => {
                    shutting_down = true;
                    continue;
                }
                changed = leadership.changed() => {
                    if changed.is_err() {
                        self.life.term_ended(None);
                    }
                    continue;
                }
                _ = tokio::time::sleep(idle) => {
                    if self.gate.in_flight.load(Ordering::Acquire) == 0 && self.evict(&mut mailbox, false) {
                        return;
                    }
                    continue;
                }
                () = self.act.make_room.notified(), if !shutting_down => {
                    if self.gate.in_flight.load(Ordering::Acquire) == 0 && self.evict(&mut mailbox, false) {
                        return;
                    }
                    continue;
                }
            };
            let Some(queued) = event else {
                // The runtime let go of us (lost leadership, or replaced).
                metrics::object_evicted(&self.act.key.namespace, "reset");
                return;
            };
            let poisoned = self.gate.broken.load(Ordering::Acquire);
            let (verdict, checked_at) = self.admit(&mut leadership, poisoned).await;
            match verdict {
                Admit::Run => {
                    if checked_at.is_some() {
                        journal::admitted(
                            checked_at,
                            journal::Executor {
                                node: self.act.shard.raft().metrics().borrow().id,
                                key: &self.act.key,
                                epoch: self.life.term(),
                                generation: self.act.generation,
                            },
                        );
                    }
                }
                Admit::NotOwner => {
                    // Leadership moved while this event waited: it never
                    // ran, so the caller may safely retry it on the leader.
                    queued.event.fail(self.not_owner());
                    continue;
                }
                Admit::Reset | Admit::Lapsed => {
                    queued.event.fail(self.never_ran());
                    continue;
                }
            }
            self.ctx
                .storage
                .pending
                .prune(self.gate.committed.load(Ordering::Acquire));
            if obj.is_none() {
                obj = self.init::<T>().await;
                if obj.is_none() {
                    queued.event.fail(self.never_ran());
                    self.gate.broken.store(true, Ordering::Release);
                    continue;
                }
            }
            if let Some(o) = obj.as_mut()
                && !self.run_event(o, queued).await
            {
                // The handler panicked: rebuild from storage next time.
                obj = None;
            }
        }
    }

    /// Waits for the activation fence: an empty log entry of this
    /// executor's term, applied. Once it is, every entry proposed before —
    /// in earlier terms, or by a predecessor reset with its writes' outcome
    /// unknown — is decided and applied, so storage is final for what the
    /// object reads (a read barrier would wait only for entries already
    /// committed). Then the object's committed alarm is synced with the
    /// scheduler (such a write may have changed it).
    async fn activate(&mut self) {
        let fenced = match self.act.shard.fence(self.life.term()).await {
            Ok(commit) => commit.await.map_err(Error::Commit),
            Err(e) => Err(Error::Commit(e)),
        };
        self.life.fenced(fenced.is_ok());
        match fenced {
            Ok(()) => {
                let alarm = self.current_alarm();
                self.act.alarms.sync(self.act.key.clone(), alarm);
                let restored = self.restore_sockets();
                // The first event waits (briefly) for the sockets that
                // moved with the object, so that what it sends them goes
                // straight to them: frames held here for a socket still
                // on its way are lost if the object moves again first.
                let gate = RETURN_GATE.min(self.act.socket_return_wait / 2);
                self.act.hub.returned(&restored, gate).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot activate object");
                self.gate.broken.store(true, Ordering::Release);
            }
        }
    }

    /// Leaves the registry if nothing is queued (or `force`), failing
    /// whatever is left. Returns whether the executor is gone.
    fn evict(&mut self, mailbox: &mut mpsc::Receiver<Queued>, force: bool) -> bool {
        let runtime = self.act.runtime.clone();
        if !runtime.remove_executor(&self.act.key, self.act.generation, mailbox, force) {
            return false;
        }
        mailbox.close();
        while let Ok(queued) = mailbox.try_recv() {
            queued.event.fail(self.never_ran());
        }
        let reason = if force { "reset" } else { "idle" };
        metrics::object_evicted(&self.act.key.namespace, reason);
        tracing::debug!(force, "executor evicted");
        true
    }

    /// This node does not lead the object's shard (any more).
    fn not_owner(&self) -> Error {
        Error::NotOwner {
            shard: self.act.shard.id(),
        }
    }

    /// The error for an event failed before its handler ran: not the
    /// owner if this executor's term ended (the caller may retry), else a
    /// reset.
    fn never_ran(&self) -> Error {
        if self.act.shard.leader_epoch() == Some(self.life.term()) {
            Error::Reset
        } else {
            // Not leading in this executor's term (even if leading again
            // in a newer one): the caller may retry on the leader.
            self.not_owner()
        }
    }

    async fn init<T: DurableObject>(&mut self) -> Option<T> {
        self.begin(false);
        let result = AssertUnwindSafe(T::new(&mut self.ctx)).catch_unwind().await;
        match result {
            Ok(Ok(obj)) => {
                self.finish(true, Vec::new()).await;
                Some(obj)
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "object constructor failed");
                self.finish(false, Vec::new()).await;
                None
            }
            Err(_) => {
                tracing::error!("object constructor panicked");
                self.finish(false, Vec::new()).await;
                None
            }
        }
    }

    /// Runs one queued event inside its span, and accounts for it. Returns
    /// `false` if the handler panicked.
    async fn run_event<T: DurableObject>(&mut self, obj: &mut T, queued: Queued) -> bool {
        let Queued {
            event,
            since,
            parent,
            charge,
        } = queued;
        drop(charge);
        let binding = self.act.key.namespace.clone();
        let shard = self.act.shard.id();
        metrics::object_queue_wait(&binding, since.elapsed());
        let kind = event.kind();
        let span = traces::object_event_span(&parent, &binding, &self.act.key, shard, kind);
        let started = Instant::now();
        self.failed = false;
        let alive = self.handle(obj, event).instrument(span).await;
        let busy = started.elapsed();
        let outcome = match (alive, self.failed) {
            (false, _) => "panic",
            (true, true) => "error",
            (true, false) => "ok",
        };
        metrics::object_event(&binding, kind, outcome, busy);
        self.act.runtime.record_hot(shard, &self.act.key, busy);
        alive
    }

    fn begin(&mut self, upgrade: bool) {
        self.ctx.upgrade = upgrade;
        self.ctx.accepted.clear();
    }

    /// Runs one event. Returns `false` if the handler panicked.
    async fn handle<T: DurableObject>(&mut self, obj: &mut T, event: Event) -> bool {
        match event {
            Event::Fetch { req, reply } => {
                self.begin(is_websocket_upgrade(&req));
                let result = AssertUnwindSafe(obj.fetch(&mut self.ctx, *req))
                    .catch_unwind()
                    .await;
                let (response, ok, alive) = match result {
                    Ok(Ok(resp)) => (resp, true, true),
                    Ok(Err(e)) => (self.error_response(e), false, true),
                    Err(_) => (self.panic_response(), false, false),
                };
                let response = self.settle_sockets(response, ok);
                self.finish(ok, vec![Output::Reply { reply, response }])
                    .await;
                alive
            }
            Event::Call {
                method,
                payload,
                reply,
            } => {
                self.begin(false);
                let result = AssertUnwindSafe(obj.call(&mut self.ctx, method, payload))
                    .catch_unwind()
                    .await;
                let (result, ok, alive) = match result {
                    Ok(Ok(bytes)) => (Ok(bytes), true, true),
                    Ok(Err(e)) => {
                        if e.status.is_server_error() && e.status != StatusCode::NOT_IMPLEMENTED {
                            tracing::error!(error = %e, "call handler failed");
                        }
                        (Err(e), false, true)
                    }
                    Err(_) => {
                        tracing::error!("call handler panicked; resetting object");
                        (
                            Err(HandlerError::internal("call handler panicked")),
                            false,
                            false,
                        )
                    }
                };
                self.finish(ok, vec![Output::CallReply { reply, result }])
                    .await;
                alive
            }
            Event::SocketMessage { socket, msg } => {
                let Some(ws) = self.live_socket(socket) else {
                    return true;
                };
                self.begin(false);
                let result = AssertUnwindSafe(obj.websocket_message(&mut self.ctx, ws, msg))
                    .catch_unwind()
                    .await;
                self.finish_unit(result, vec![Output::Handled(socket)])
                    .await
            }
            Event::SocketClose {
                socket,
                code,
                reason,
            } => {
                self.begin(false);
                let ws = self.ctx.socket(socket);
                if let Some(e) = self.act.hub.lock().sockets.get(&socket) {
                    // Forgotten whatever the handler does.
                    self.ctx.registrations.insert(e.stable, None);
                }
                let result = AssertUnwindSafe(obj.websocket_close(&mut self.ctx, ws, code, reason))
                    .catch_unwind()
                    .await;
                let alive = self.finish_unit(result, Vec::new()).await;
                self.act.hub.lock().sockets.remove(&socket);
                alive
            }
            Event::SocketError { socket, error } => {
                let Some(ws) = self.live_socket(socket) else {
                    return true;
                };
                self.begin(false);
                let result = AssertUnwindSafe(obj.websocket_error(&mut self.ctx, ws, error))
                    .catch_unwind()
                    .await;
                self.finish_unit(result, Vec::new()).await
            }
            Event::Alarm { info, reply } => self.run_alarm(obj, info, reply).await,
            Event::AlarmSync { reply } => {
                // The activation fenced and synced the alarm already.
                let _ = reply.send(true);
                true
            }
            Event::AlarmGiveUp { scheduled_ms } => {
                self.begin(false);
                if self.current_alarm() == Some(scheduled_ms) {
                    tracing::warn!(scheduled_ms, "alarm retries exhausted; dropping it");
                    self.ctx.storage.top_layer().alarm = Some(AlarmChange::Fired(scheduled_ms));
                }
                self.finish(true, Vec::new()).await;
                true
            }
        }
    }

    fn live_socket(&self, socket: SocketId) -> Option<super::socket::WebSocket> {
        let hub = self.act.hub.lock();
        let entry = hub.sockets.get(&socket)?;
        if entry.closing {
            return None;
        }
        drop(hub);
        if self.ctx.sockets.is_closed(socket) {
            // The object closed it; its close frame waits for the gate.
            return None;
        }
        Some(self.ctx.socket(socket))
    }
}
