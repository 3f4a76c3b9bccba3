//! Calls from one object to another (Cloudflare's `env.OTHER.get(id)` inside
//! a Durable Object), and the part of the output gate they go through.
//!
//! The semantics, as Cloudflare's:
//! - **An outgoing call is an output.** Before it leaves, every write the
//!   object made so far — earlier events' and the running event's — is
//!   committed by a quorum ([`Context::flush`]). The writes the running
//!   event made before the call become their own atomic batch (as in
//!   Cloudflare, where writes are coalesced only between awaits of I/O);
//!   the frames it sent before the call leave with them.
//! - **A call runs in the callee's input gate**: it is one event of the
//!   callee, queued behind the others, run alone. Meanwhile the caller's
//!   event is suspended: a caller takes no other event until its call
//!   returns.
//! - **Cycles.** So a cycle (A calls B, which calls A) cannot be served: A
//!   waits for B, and B's call waits in A's mailbox. Every call from an
//!   object has a deadline (`[objects] call_timeout_ms`, 30 s by default);
//!   past it the caller gets [`Error::CallTimeout`], which names the likely
//!   cause, and the callee's queued event still runs later.
//! - **Errors.** The callee's own error reaches the caller as
//!   `Ok(Err(HandlerError))` (`call`) or as its response (`fetch`); a
//!   failure to deliver (no leader, overloaded, reset) as `Err(Error)`,
//!   with `NotOwner`/`Unreachable` retried by the router as an edge does.
//!   If the caller's own writes cannot be committed the call is not sent
//!   and the caller gets `Error::Reset`; the caller's event then fails as
//!   any event whose commit failed.
//!
//! [`Committer`] is the executor's side of the gate that both the end of
//! an event (`executor/finish.rs`) and a flush use.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use super::Error;
use super::client::{CallResult, FetchOutcome, ObjectClient};
use super::context::Context;
use super::http::{Request, Response};
use super::outbox::{CommitTrace, GateState, Output, Release};
use super::runtime::WeakRuntime;
use super::socket::{Message, SocketId};
use super::view::Layer;
use super::worker::Stub;
use crate::id::ObjectKey;
use crate::replication::ShardHandle;
use crate::storage::ObjectWrite;

/// Hands an executor's writes to Raft and its outputs to the releaser.
pub(crate) struct Committer {
    /// Where the object's writes go (its storage identity).
    pub key: ObjectKey,
    /// Its binding, for traces.
    pub binding: Arc<str>,
    pub shard: ShardHandle,
    /// The leadership epoch the executor serves.
    pub epoch: u64,
    /// Sequence number of the object's last proposed write.
    pub seq: u64,
    pub gate: Arc<GateState>,
    pub release_tx: mpsc::UnboundedSender<Release>,
}

impl Committer {
    /// Proposes `layer` (a write batch, if not empty) or a read barrier
    /// (if it is and there are outputs), and hands `outputs` to the
    /// releaser behind it. `Err` gives the outputs back with the reason:
    /// nothing could be proposed, and the executor is broken.
    pub async fn submit(
        &mut self,
        pending: &mut super::view::Pending,
        layer: Layer,
        mut outputs: Vec<Output>,
    ) -> Result<(), (Vec<Output>, Error)> {
        let shard = self.shard.id();
        let namespace = &self.binding;
        let (gate, seq, trace) = if layer.is_empty() {
            if outputs.is_empty() {
                return Ok(());
            }
            let trace = CommitTrace::start(namespace, shard, "read_barrier");
            // A read must not leave before this node is confirmed leader
            // (in this executor's term).
            match self.shard.barrier_in(self.epoch).await {
                Ok(commit) => (commit, None, trace),
                Err(e) => return Err(self.broken(outputs, Error::Commit(e))),
            }
        } else {
            self.seq += 1;
            pending.push(self.seq, &layer);
            if let Some(change) = layer.alarm {
                outputs.insert(0, Output::AlarmChanged(change.visible()));
            }
            let write = ObjectWrite {
                object: self.key.clone(),
                mutations: layer.to_mutations(),
            };
            let trace = CommitTrace::start(namespace, shard, "write");
            match self.shard.propose_in(self.epoch, write).await {
                Ok(commit) => (commit, Some(self.seq), trace),
                Err(e) => return Err(self.broken(outputs, Error::Commit(e))),
            }
        };
        self.gate.in_flight.fetch_add(1, Ordering::AcqRel);
        let release = Release {
            gate,
            seq,
            outputs,
            trace,
        };
        if let Err(mpsc::error::SendError(release)) = self.release_tx.send(release) {
            self.gate.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(self.broken(release.outputs, Error::Reset));
        }
        Ok(())
    }

    fn broken(&self, outputs: Vec<Output>, e: Error) -> (Vec<Output>, Error) {
        self.gate.broken.store(true, Ordering::Release);
        (outputs, e)
    }

    /// Waits until every write proposed so far is committed and applied
    /// (and its outputs released); `Reset` if one failed.
    pub async fn wait_committed(&self) -> Result<(), Error> {
        let target = self.seq;
        loop {
            let settled = self.gate.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            if self.gate.broken.load(Ordering::Acquire) {
                return Err(Error::Reset);
            }
            if self.gate.committed.load(Ordering::Acquire) >= target {
                return Ok(());
            }
            settled.await;
        }
    }
}

impl Context {
    /// Commits everything this object wrote so far — the running event's
    /// writes included, as a batch of their own — and waits until a quorum
    /// has it; the frames the event sent so far leave with it. What an
    /// outgoing call does first; a handler may call it itself before
    /// telling the outside world something.
    pub async fn flush(&mut self) -> Result<(), Error> {
        let mut outputs = self.take_outputs();
        let mut layer = self.storage.take_event_layer();
        self.register_sockets(&mut layer, &mut outputs);
        let committer = &mut self.committer;
        if let Err((_outputs, e)) = committer
            .submit(&mut self.storage.pending, layer, outputs)
            .await
        {
            // The executor is broken: the event fails, and with it these.
            return Err(e);
        }
        committer.wait_committed().await
    }

    /// The stub of object `id` (from [`Namespace`](super::Namespace)'s
    /// `id_from_name`, say) in the namespace bound as `binding`.
    pub fn stub(&self, binding: &str, id: impl Into<crate::id::NamedId>) -> Result<Stub, Error> {
        Ok(self.env.namespace(binding)?.get(id))
    }

    /// The app's bindings, as a worker sees them (namespaces to call, vars
    /// and secrets).
    pub fn env(&self) -> &super::Env {
        &self.env
    }

    /// Sends `req` to another object once this object's writes so far are
    /// committed ([`Self::flush`]), within the call deadline.
    pub async fn fetch(&mut self, stub: &Stub, req: Request) -> Result<Response, Error> {
        self.flush().await?;
        let deadline = self.call_timeout;
        within(deadline, stub, stub.fetch(req)).await
    }

    /// Calls another object's `call` handler once this object's writes so
    /// far are committed ([`Self::flush`]), within the call deadline.
    /// `Ok(Err(_))` is the callee's own error.
    pub async fn call(
        &mut self,
        stub: &Stub,
        method: &str,
        payload: Bytes,
    ) -> Result<CallResult, Error> {
        self.flush().await?;
        let deadline = self.call_timeout;
        within(deadline, stub, stub.call(method, payload)).await
    }

    /// A typed call ([`super::rpc::Method`]) to another object once this
    /// object's writes so far are committed ([`Self::flush`]), within the
    /// call deadline.
    pub async fn rpc<M: super::rpc::Method>(
        &mut self,
        stub: &Stub,
        req: &M::Request,
    ) -> std::result::Result<M::Response, super::rpc::RpcError> {
        self.flush().await?;
        let deadline = self.call_timeout;
        within(deadline, stub, async { Ok(stub.rpc::<M>(req).await) }).await?
    }
}

async fn within<T>(
    deadline: Duration,
    stub: &Stub,
    call: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(deadline, call).await {
        Ok(result) => result,
        Err(_) => Err(Error::CallTimeout {
            object: stub.key().to_string(),
            after: deadline,
        }),
    }
}

/// The object client behind an object's `env`: the runtime's router if it
/// has one (a cluster node), else the runtime itself. Holds the runtime
/// weakly: the runtime holds the `env`.
pub(crate) struct FromObjects(pub(crate) WeakRuntime);

impl FromObjects {
    fn get(&self) -> Result<Arc<dyn ObjectClient>, Error> {
        Ok(self.0.upgrade().ok_or(Error::ShuttingDown)?.outgoing())
    }
}

impl ObjectClient for FromObjects {
    fn fetch(
        &self,
        object: ObjectKey,
        req: Request,
    ) -> BoxFuture<'static, Result<FetchOutcome, Error>> {
        match self.get() {
            Ok(c) => c.fetch(object, req),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn call(
        &self,
        object: ObjectKey,
        method: String,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<CallResult, Error>> {
        match self.get() {
            Ok(c) => c.call(object, method, payload),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn socket_message(
        &self,
        object: &ObjectKey,
        socket: SocketId,
        msg: Message,
    ) -> Result<(), Error> {
        self.get()?.socket_message(object, socket, msg)
    }

    fn socket_closed(
        &self,
        object: &ObjectKey,
        socket: SocketId,
        code: u16,
        reason: String,
    ) -> Result<(), Error> {
        self.get()?.socket_closed(object, socket, code, reason)
    }

    fn socket_error(
        &self,
        object: &ObjectKey,
        socket: SocketId,
        error: String,
    ) -> Result<(), Error> {
        self.get()?.socket_error(object, socket, error)
    }
}

/// A failed call as the caller's own error, so a handler can use `?`: the
/// status and code of the failure (`call_timeout` is 504, the others 503).
impl From<Error> for super::http::HandlerError {
    fn from(e: Error) -> Self {
        super::http::HandlerError::new(e.status(), e.code(), e.to_string())
    }
}
