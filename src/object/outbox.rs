//! The output gate.
//!
//! Everything an event sends (its HTTP response, socket frames and closes,
//! alarm bookkeeping) is collected in the executor's [`OutputSink`] and
//! handed to the releaser together with the commit it depends on. The
//! releaser lets a batch out only when that commit (and so every earlier one
//! of the object: batches are released in order) is durable on a quorum.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;

use super::Error;
use super::alarms::AlarmsHandle;
use super::client::{CallResult, FetchOutcome};
use super::http::Response;
use super::socket::{AcceptedSocket, ServerFrame, SharedHub, SocketId, SocketLink};
use crate::id::ObjectKey;
use crate::replication::Commit;
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
    /// The commit of the event's writes, or a read barrier; `None` when an
    /// earlier batch's commit (released first) already covers it.
    pub gate: Option<Commit>,
    /// The sequence number of the event's writes, if it wrote.
    pub seq: Option<u64>,
    pub outputs: Vec<Output>,
    pub trace: CommitTrace,
}

/// How long a batch waits at the gate, as a span (a child of the event's
/// span) and as `roost_object_commit_wait_seconds`.
pub(crate) struct CommitTrace {
    span: tracing::Span,
    since: Instant,
    /// `write` or `read_barrier`.
    gate: &'static str,
}

impl CommitTrace {
    /// Starts timing now, before the write or barrier is enqueued.
    pub fn start(shard: crate::id::ShardId, gate: &'static str) -> CommitTrace {
        CommitTrace {
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
}

/// Releases batches in order as their gates open. Ends when the executor
/// drops its sender and every batch is out.
pub(crate) async fn run_releaser(
    object: ObjectKey,
    mut rx: mpsc::UnboundedReceiver<Release>,
    state: Arc<GateState>,
    hub: SharedHub,
    alarms: AlarmsHandle,
) {
    while let Some(batch) = rx.recv().await {
        let trace = &batch.trace;
        let result = match batch.gate {
            Some(gate) => {
                let done = gate.instrument(trace.span.clone()).await;
                metrics::object_commit_wait(&object.namespace, trace.gate, trace.since.elapsed());
                if done.is_err() {
                    trace.span.record("otel.status_code", "ERROR");
                }
                done.map_err(Error::Commit)
            }
            None if state.broken.load(Ordering::Acquire) => Err(Error::Reset),
            None => Ok(()),
        };
        match result {
            Ok(()) => {
                if let Some(seq) = batch.seq {
                    state.committed.fetch_max(seq, Ordering::AcqRel);
                }
                for out in batch.outputs {
                    deliver(&object, &hub, &alarms, out);
                }
            }
            Err(e) => {
                if !state.broken.swap(true, Ordering::AcqRel) {
                    tracing::warn!(%object, error = %e, "commit failed; resetting object");
                }
                for out in batch.outputs {
                    fail(&hub, out);
                }
            }
        }
        state.in_flight.fetch_sub(1, Ordering::AcqRel);
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
                        let rx = hub.lock().sockets.get_mut(id)?.rx.take()?;
                        Some(SocketLink {
                            object: object.clone(),
                            socket: *id,
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
    }
}

fn fail(hub: &SharedHub, out: Output) {
    match out {
        Output::Frame { .. } | Output::AlarmChanged(_) => {}
        Output::Reply { reply, response } => {
            if let Some(AcceptedSocket(id)) = response.extensions().get::<AcceptedSocket>() {
                hub.lock().sockets.remove(id);
            }
            let _ = reply.send(Err(Error::Reset));
        }
        Output::CallReply { reply, .. } => {
            let _ = reply.send(Err(Error::Reset));
        }
        Output::AlarmDone(tx) => {
            let _ = tx.send(false);
        }
    }
}
