//! The output gate.
//!
//! Everything an event sends (its HTTP response, socket frames and closes,
//! alarm bookkeeping) is collected in the executor's [`OutputSink`] and
//! handed to the releaser together with the commit it depends on. The
//! releaser lets a batch out only when that commit (and so every earlier one
//! of the object: batches are released in order) is durable on a quorum,
//! and never after a failed one: the rule is [`Gate`](super::gate::Gate)'s.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;

use super::Error;
use super::alarms::AlarmsHandle;
use super::client::{CallResult, FetchOutcome};
use super::gate::{Gate, Release as Verdict, Settled};
use super::http::Response;
use super::socket::{AcceptedSocket, ServerFrame, SharedHub, SocketId, SocketLink};
use crate::id::{ObjectKey, ShardId};
use crate::replication::{self, Commit};
use crate::telemetry::{metrics, traces};

/// One thing an event sends out.
pub(crate) enum Output {
    Frame {
        socket: SocketId,
        frame: ServerFrame,
    },
    Reply {
        reply: oneshot::Sender<Result<FetchOutcome, Error>>,
        response: Response,
    },
    /// The answer of a `call` handler.
    CallReply {
        reply: oneshot::Sender<Result<CallResult, Error>>,
        result: CallResult,
    },
    /// The object's alarm is now this (after the event's commit).
    AlarmChanged(Option<u64>),
    /// An alarm handler finished: `true` if it succeeded and committed.
    AlarmDone(oneshot::Sender<bool>),
    /// A socket's attachment, stored by the event, takes effect.
    Attachment {
        socket: SocketId,
        value: bytes::Bytes,
    },
    /// A message from the socket's client was handled (the event ran and
    /// its writes committed): counted for re-attaching it elsewhere.
    Handled(SocketId),
}

/// Where handlers put outputs while an event runs. Only the executor's
/// task pushes to it, so the mutex is never contended.
#[derive(Clone, Default)]
pub(crate) struct OutputSink(Arc<Mutex<Vec<Output>>>);

impl OutputSink {
    pub fn push(&self, out: Output) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(out);
    }

    pub fn take(&self) -> Vec<Output> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The outputs of one event and what they wait for.
pub(crate) struct Release {
    /// The commit of the event's writes, or a read barrier.
    pub gate: Commit,
    /// The sequence number of the event's writes, if it wrote.
    pub seq: Option<u64>,
    pub outputs: Vec<Output>,
    pub trace: CommitTrace,
}

/// How long a batch waits at the gate, as a span (a child of the event's
/// span) and as `roost_object_commit_wait_seconds`.
pub(crate) struct CommitTrace {
    namespace: std::sync::Arc<str>,
    span: tracing::Span,
    since: Instant,
    /// `write` or `read_barrier`.
    gate: &'static str,
}

impl CommitTrace {
    /// Starts timing now, before the write or barrier is enqueued.
    pub fn start(
        namespace: &std::sync::Arc<str>,
        shard: crate::id::ShardId,
        gate: &'static str,
    ) -> CommitTrace {
        CommitTrace {
            namespace: namespace.clone(),
            span: traces::commit_span(shard, gate),
            since: Instant::now(),
            gate,
        }
    }
}

/// State the executor and its releaser share.
#[derive(Default)]
pub(crate) struct GateState {
    /// Batches handed over and not yet released.
    pub in_flight: AtomicUsize,
    /// The highest write sequence known durable and applied.
    pub committed: std::sync::atomic::AtomicU64,
    /// A commit failed: cached state is ahead of storage; reset the object.
    pub broken: AtomicBool,
    /// Woken each time batches settle (`calls.rs` waits on it).
    pub settled: tokio::sync::Notify,
}

/// Releases batches in order as their gates open (the rule is [`Gate`]'s:
/// in order, and nothing after a failure). Ends when the executor drops its
/// sender and every batch is out.
pub(crate) async fn run_releaser(
    object: ObjectKey,
    shard: ShardId,
    mut rx: mpsc::UnboundedReceiver<Release>,
    state: Arc<GateState>,
    hub: SharedHub,
    alarms: AlarmsHandle,
) {
    let mut gate: Gate<Vec<Output>> = Gate::default();
    let mut waits = FuturesUnordered::new();
    let mut open = true;
    loop {
        let (id, done) = tokio::select! {
            batch = rx.recv(), if open => {
                let Some(batch) = batch else {
                    open = false;
                    continue;
                };
                let Release { gate: commit, seq, outputs, trace } = batch;
                let id = gate.push(seq, outputs);
                waits.push(async move {
                    let done = commit.instrument(trace.span.clone()).await;
                    metrics::object_commit_wait(&trace.namespace, trace.gate, trace.since.elapsed());
                    if let Err(e) = &done {
                        trace.span.record("otel.status_code", "ERROR");
                        tracing::warn!(error = %e, "commit failed; resetting object");
                    }
                    (id, settled(&done))
                });
                continue;
            }
            Some(settled) = waits.next(), if !waits.is_empty() => settled,
            else => break,
        };
        if state.broken.load(Ordering::Acquire) {
            // The executor could not propose a later write.
            gate.poison();
        }
        let verdicts = gate.settle(id, done);
        let released = verdicts.len();
        for verdict in verdicts {
            match verdict {
                Verdict::Deliver(outputs) => {
                    for out in outputs {
                        deliver(&object, &hub, &alarms, out);
                    }
                }
                Verdict::Fail(outputs) => {
                    for out in outputs {
                        fail(&object, &hub, &alarms, out, Error::Reset);
                    }
                }
                Verdict::Retry(outputs) => {
                    for out in outputs {
                        fail(&object, &hub, &alarms, out, Error::NotOwner { shard });
                    }
                }
            }
        }
        state
            .committed
            .fetch_max(gate.committed(), Ordering::AcqRel);
        if gate.is_poisoned() && !state.broken.swap(true, Ordering::AcqRel) {
            tracing::warn!(%object, "a commit failed; resetting object");
        }
        state.in_flight.fetch_sub(released, Ordering::AcqRel);
        state.settled.notify_waiters();
    }
}

fn deliver(object: &ObjectKey, hub: &SharedHub, alarms: &AlarmsHandle, out: Output) {
    match out {
        Output::Frame { socket, frame } => hub.deliver(socket, frame),
        Output::Reply { reply, response } => {
            let socket =
                response
                    .extensions()
                    .get::<AcceptedSocket>()
                    .and_then(|AcceptedSocket(id)| {
                        let mut hub = hub.lock();
                        let entry = hub.sockets.get_mut(id)?;
                        let rx = entry.rx.take()?;
                        Some(SocketLink {
                            object: object.clone(),
                            socket: *id,
                            tags: entry.tags.clone(),
                            stable: entry.stable,
                            replay: Vec::new(),
                            outgoing: rx,
                        })
                    });
            let _ = reply.send(Ok(FetchOutcome { response, socket }));
        }
        Output::CallReply { reply, result } => {
            let _ = reply.send(Ok(result));
        }
        Output::AlarmChanged(at) => alarms.set(object.clone(), at),
        Output::AlarmDone(tx) => {
            let _ = tx.send(true);
        }
        Output::Attachment { socket, value } => hub.set_attachment(socket, value),
        Output::Handled(socket) => hub.handled(socket),
    }
}

/// How a batch's commit ended, for the gate: `NotLeader` is replication's
/// word for a write (or barrier) that certainly never took effect.
fn settled(done: &Result<(), replication::Error>) -> Settled {
    match done {
        Ok(()) => Settled::Done,
        Err(replication::Error::NotLeader { .. }) => Settled::NotRun,
        Err(_) => Settled::Unknown,
    }
}

/// Withholds `out` for good; a caller waiting for it gets `err` (`Reset`:
/// outcome unknown; `NotOwner`: the event certainly had no effect, retry it
/// on the shard's leader).
fn fail(object: &ObjectKey, hub: &SharedHub, alarms: &AlarmsHandle, out: Output, err: Error) {
    match out {
        Output::Frame { .. } | Output::Attachment { .. } | Output::Handled(_) => {}
        // The write that changed the alarm may still commit (its outcome
        // is unknown): have the object's committed alarm checked once a
        // fresh executor has fenced.
        Output::AlarmChanged(_) => alarms.recheck(object.clone()),
        Output::Reply { reply, response } => {
            if let Some(AcceptedSocket(id)) = response.extensions().get::<AcceptedSocket>() {
                // Its registration went with the write that failed, whose
                // outcome may be unknown: deleted with the next write.
                hub.lock().drop_socket(*id);
            }
            let _ = reply.send(Err(err));
        }
        Output::CallReply { reply, .. } => {
            let _ = reply.send(Err(err));
        }
        Output::AlarmDone(tx) => {
            let _ = tx.send(false);
        }
    }
}
