//! The object SDK: the trait a Durable Object class implements.
//!
//! A class is a Rust type; Roost builds one instance per live object id and
//! calls its handlers one event at a time (the executor, `executor.rs`).
//! Handlers get `&mut self` and a [`Context`] for storage, sockets and alarms.

use std::future::Future;

use bytes::Bytes;
use http::StatusCode;

use super::context::Context;
use super::http::{HandlerError, Request, Response};
use super::socket::{Message, WebSocket};

/// What a handler returns: `Ok` or a [`HandlerError`] (an HTTP status and a
/// JSON body for `fetch`, the caller's error for `call`; a logged failure,
/// or a retry for `alarm`).
pub type Result<T, E = HandlerError> = std::result::Result<T, E>;

/// Why an alarm handler runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlarmInfo {
    /// The time the alarm was set for, in ms since the Unix epoch.
    pub scheduled_ms: u64,
    /// 0 on the first run; n on the n-th retry after a failed run.
    pub retry_count: u32,
}

/// A Durable Object class.
///
/// Semantics (Cloudflare's, made strict):
/// - **Single-threaded.** One event (request, socket message, close, alarm)
///   runs at a time, to completion; the next starts only after it returns.
/// - **Implicit transaction.** All storage writes of one event commit
///   atomically; if the handler returns `Err` (or panics) they are discarded.
/// - **Output gate.** The response, socket frames and closes an event
///   produces leave the object only after its writes (and every earlier
///   write of the object) are committed by a Raft quorum. The next event
///   starts right away against the cached state; it does not wait.
/// - **Activation.** `new` runs on first use and again after the object was
///   evicted (idle) or reset (a handler panicked, a commit failed): keep all
///   state that must survive in storage or in socket attachments.
pub trait DurableObject: Sized + Send + 'static {
    /// Builds the object; may read (and write) storage.
    fn new(ctx: &mut Context) -> impl Future<Output = Result<Self>> + Send;

    /// Handles an HTTP request (Cloudflare's `fetch`). To accept a WebSocket,
    /// call [`Context::accept_websocket`] and return [`WebSocket::accepted`].
    fn fetch(
        &mut self,
        ctx: &mut Context,
        req: Request,
    ) -> impl Future<Output = Result<Response>> + Send;

    /// A typed method call (the gRPC object API's `Call`, [`Stub::call`]):
    /// `method` and `payload` are encoded however the class and its callers
    /// agree. Same semantics as `fetch`: an `Err` discards the event's writes
    /// and reaches the caller; the answer leaves after the writes commit.
    /// The default answers 501 `not_implemented`.
    ///
    /// [`Stub::call`]: super::Stub::call
    fn call(
        &mut self,
        ctx: &mut Context,
        method: String,
        payload: Bytes,
    ) -> impl Future<Output = Result<Bytes>> + Send {
        let _ = (ctx, payload);
        async move {
            Err(HandlerError::new(
                StatusCode::NOT_IMPLEMENTED,
                "not_implemented",
                format!("this object has no call handler (method `{method}`)"),
            ))
        }
    }

    /// A message arrived on an accepted socket.
    fn websocket_message(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        msg: Message,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (ctx, ws, msg);
        async { Ok(()) }
    }

    /// The client closed the socket (or it was found dead: code 1006).
    /// The socket is already gone from [`Context::websockets`].
    fn websocket_close(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        code: u16,
        reason: String,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (ctx, ws, code, reason);
        async { Ok(()) }
    }

    /// A protocol error on the socket (e.g. a message over the size limit).
    fn websocket_error(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        error: String,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (ctx, ws, error);
        async { Ok(()) }
    }

    /// The object's alarm is due. Runs at least once per alarm; an `Err`
    /// retries with exponential backoff from 2 s, up to 6 retries.
    fn alarm(
        &mut self,
        ctx: &mut Context,
        info: AlarmInfo,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (ctx, info);
        async { Ok(()) }
    }
}
