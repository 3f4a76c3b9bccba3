//! How callers reach objects without knowing where they run.
//!
//! [`ObjectClient`] is implemented by the local [`Runtime`] (`roost dev`,
//! and a node serving its own shards) and, in a cluster, by the gRPC client
//! that forwards to the owner. The edge and workers only see this trait.

use bytes::Bytes;
use futures_util::future::BoxFuture;

use super::Error;
use super::http::{HandlerError, Request, Response};
use super::runtime::Runtime;
use super::socket::{Message, Registration, SocketId, SocketLink, StableId};
use crate::id::ObjectKey;

/// The result of an object's `fetch`: the response and, for an accepted
/// WebSocket (status 101), the link to its frames.
#[derive(Debug)]
pub struct FetchOutcome {
    pub response: Response,
    pub socket: Option<SocketLink>,
}

/// The answer of an object's `call` handler: its payload, or its error.
pub type CallResult = Result<Bytes, HandlerError>;

/// Calls into objects, wherever they live.
pub trait ObjectClient: Send + Sync + 'static {
    fn fetch(
        &self,
        object: ObjectKey,
        req: Request,
    ) -> BoxFuture<'static, Result<FetchOutcome, Error>>;
    /// A typed method call; `Ok(Err(_))` is the handler's own error.
    fn call(
        &self,
        object: ObjectKey,
        method: String,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<CallResult, Error>>;
    fn socket_message(
        &self,
        object: &ObjectKey,
        socket: SocketId,
        msg: Message,
    ) -> Result<(), Error>;
    fn socket_closed(
        &self,
        object: &ObjectKey,
        socket: SocketId,
        code: u16,
        reason: String,
    ) -> Result<(), Error>;
    fn socket_error(
        &self,
        object: &ObjectKey,
        socket: SocketId,
        error: String,
    ) -> Result<(), Error>;
    /// Registers a socket whose object's owner changed with the object
    /// here, with the tags and committed attachment it had: no fetch, no
    /// open event; `delivered` is the highest frame number its edge passed
    /// on. Only a node's runtime can; other clients refuse.
    fn socket_reattach(
        &self,
        object: ObjectKey,
        stable: Option<StableId>,
        registration: Registration,
        delivered: Option<u64>,
    ) -> BoxFuture<'static, Result<SocketLink, Error>> {
        let _ = (object, stable, registration, delivered);
        Box::pin(async {
            Err(Error::Unavailable(
                "this client cannot re-attach sockets".into(),
            ))
        })
    }
}

impl ObjectClient for Runtime {
    fn fetch(
        &self,
        object: ObjectKey,
        req: Request,
    ) -> BoxFuture<'static, Result<FetchOutcome, Error>> {
        let runtime = self.clone();
        Box::pin(async move { Runtime::fetch(&runtime, object, req).await })
    }

    fn call(
        &self,
        object: ObjectKey,
        method: String,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<CallResult, Error>> {
        let runtime = self.clone();
        Box::pin(async move { Runtime::call(&runtime, object, method, payload).await })
    }

    fn socket_message(
        &self,
        object: &ObjectKey,
        socket: SocketId,
        msg: Message,
    ) -> Result<(), Error> {
        Runtime::socket_message(self, object, socket, msg)
    }

    fn socket_closed(
        &self,
        object: &ObjectKey,
        socket: SocketId,
        code: u16,
        reason: String,
    ) -> Result<(), Error> {
        Runtime::socket_closed(self, object, socket, code, reason)
    }

    fn socket_error(
        &self,
        object: &ObjectKey,
        socket: SocketId,
        error: String,
    ) -> Result<(), Error> {
        Runtime::socket_error(self, object, socket, error)
    }

    fn socket_reattach(
        &self,
        object: ObjectKey,
        stable: Option<StableId>,
        registration: Registration,
        delivered: Option<u64>,
    ) -> BoxFuture<'static, Result<SocketLink, Error>> {
        let runtime = self.clone();
        Box::pin(async move {
            Runtime::socket_reattach(&runtime, &object, stable, registration, delivered).await
        })
    }
}
