//! How an event ends: which accepted sockets it keeps, and how its writes
//! go to Raft and its outputs to the releaser behind the right gate (the
//! output gate's entry point).

use std::sync::atomic::Ordering;

use http::StatusCode;

use super::Executor;
use crate::object::Error;
use crate::object::http::{HandlerError, Response, error_response};
use crate::object::outbox::Output;
use crate::object::socket::AcceptedSocket;

impl Executor {
    /// Keeps a socket accepted by this event only if the response is the
    /// 101 that completes it; forgets the others.
    pub(super) fn settle_sockets(&mut self, mut response: Response, ok: bool) -> Response {
        let returned = response.extensions().get::<AcceptedSocket>().copied();
        let keep = match returned {
            Some(AcceptedSocket(id))
                if ok
                    && response.status() == StatusCode::SWITCHING_PROTOCOLS
                    && self.ctx.accepted.contains(&id) =>
            {
                Some(id)
            }
            _ => None,
        };
        if keep.is_none() {
            response.extensions_mut().remove::<AcceptedSocket>();
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                response = error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                );
            }
        }
        let mut hub = self.act.hub.lock();
        for id in self.ctx.accepted.drain(..) {
            if Some(id) != keep {
                hub.sockets.remove(&id);
            }
        }
        if let Some(e) = keep.and_then(|id| hub.sockets.get(&id)) {
            // Registered with the write that releases its 101.
            self.ctx
                .registrations
                .insert(e.stable, Some(e.registration(None)));
        }
        response
    }

    /// Ends an event: proposes its writes (if `ok`) and hands its outputs to
    /// the releaser behind the right gate.
    pub(super) async fn finish(&mut self, ok: bool, extra: Vec<Output>) {
        self.failed |= !ok;
        let mut outputs = if ok {
            self.ctx.take_outputs()
        } else {
            // A failed event's writes are rolled back, and so is what it
            // sent and what it changed on its sockets (what it flushed
            // before an outgoing call stands).
            self.ctx.storage.discard_event_layer();
            self.ctx.sockets.discard_event();
            self.ctx.outputs.take();
            Vec::new()
        };
        outputs.extend(extra);
        let mut layer = self.ctx.storage.take_event_layer();
        self.ctx.register_sockets(&mut layer, &mut outputs);
        if let Err((outputs, e)) = self
            .ctx
            .committer
            .submit(&mut self.ctx.storage.pending, layer, outputs)
            .await
        {
            self.fail_now(outputs, e);
        }
    }

    pub(super) fn fail_now(&mut self, outputs: Vec<Output>, err: Error) {
        tracing::warn!(error = %err, "cannot commit; resetting object");
        self.gate.broken.store(true, Ordering::Release);
        for out in outputs {
            match out {
                Output::Reply { reply, .. } => {
                    let _ = reply.send(Err(Error::Reset));
                }
                Output::CallReply { reply, .. } => {
                    let _ = reply.send(Err(Error::Reset));
                }
                Output::AlarmDone(tx) => {
                    let _ = tx.send(false);
                }
                Output::AlarmChanged(_) => self.act.alarms.recheck(self.act.key.clone()),
                Output::Frame { .. } | Output::Attachment { .. } | Output::Handled(_) => {}
            }
        }
    }

    /// Ends a socket event with `extra` outputs (kept even if the handler
    /// failed).
    pub(super) async fn finish_unit(
        &mut self,
        result: Result<Result<(), HandlerError>, Box<dyn std::any::Any + Send>>,
        extra: Vec<Output>,
    ) -> bool {
        match result {
            Ok(Ok(())) => {
                self.finish(true, extra).await;
                true
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "socket handler failed");
                self.finish(false, extra).await;
                true
            }
            Err(_) => {
                tracing::error!("socket handler panicked");
                self.finish(false, extra).await;
                false
            }
        }
    }

    pub(super) fn error_response(&self, e: HandlerError) -> Response {
        if e.status.is_server_error() {
            tracing::error!(error = %e, "fetch handler failed");
        }
        e.to_response()
    }

    pub(super) fn panic_response(&self) -> Response {
        tracing::error!("fetch handler panicked; resetting object");
        error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }
}
