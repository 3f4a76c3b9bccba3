//! The server side of the public object API (`roost.v1.Objects`): `Fetch`,
//! `Call` and `Socket` over an [`ObjectClient`]: a node's own `Runtime`
//! (answering `NotOwner` for shards it does not lead), or an edge's router
//! to the owners.
//!
//! Who may call: any service inside the cluster network, and edges
//! forwarding to the owner of an object. There is no authentication here
//! beyond mutual TLS when `[tls]` is configured (then only holders of a
//! certificate from its CA get in); otherwise the network (NetworkPolicy)
//! must keep everyone else out.
//!
//! Owns: validating requests off the wire (sizes included), running them on
//! the runtime (one at a time, or many over a `FetchMany` stream:
//! [`super::fetch_many`]), and bridging a `Socket` stream to an object's socket.
//! Never: decides anything about an object's data, or answers for an object
//! of a shard this node does not lead (the runtime refuses with `NotOwner`,
//! which the caller sees as FAILED_PRECONDITION with `roost-shard`).

use tracing::Instrument as _;

use crate::telemetry::traces;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Status, Streaming};

use super::Error;
use super::convert::{self, MAX_CALL_METHOD_BYTES};
use super::fetch_many;
use super::pb::objects_server::{Objects, ObjectsServer};
use super::pb::{self, socket_down, socket_up};
use super::tls::Tls;
use crate::object::{
    Namespaces, ObjectClient, Registration, ServerFrame, SocketLink, is_websocket_upgrade,
};

/// Sizes the service accepts, from the node's configuration.
#[derive(Clone, Debug)]
pub struct ObjectsLimits {
    /// Largest request body (`Fetch`, `Socket`'s `open`) or call payload,
    /// in bytes (`http.max_request_body_bytes`).
    pub max_request_body_bytes: usize,
    /// Largest socket message, in bytes (`websocket.max_message_bytes`);
    /// a larger one closes the socket with 1009.
    pub max_message_bytes: usize,
}

impl Default for ObjectsLimits {
    fn default() -> Self {
        ObjectsLimits {
            max_request_body_bytes: 1 << 20,
            max_message_bytes: 1 << 20,
        }
    }
}

/// Room for an encoded message's fields besides its body (headers, path).
const ENVELOPE_BYTES: usize = 256 * 1024;
/// Request metadata of a `Socket` caller that re-attaches sockets: it is
/// sent `moved` instead of a close when the node stops serving the object.
pub const REATTACH_HEADER: &str = "roost-socket-reattach";
/// Frames queued towards a `Socket` caller before the bridge waits (the
/// object's own socket queue is behind it).
const DOWN_BUFFER: usize = 32;

/// An item of a `Socket` stream's queue, boxed: the queue lives as long as
/// the socket, and tokio allocates its 32 slots when it is made (8 bytes
/// each instead of 112: ~3.2 KiB less per idle socket).
type DownItem = Box<Result<pb::SocketDown, Status>>;

/// The `roost.v1.Objects` service over an object client. Cheap to clone.
#[derive(Clone)]
pub struct ObjectsService {
    objects: Arc<dyn ObjectClient>,
    limits: ObjectsLimits,
    /// The bound namespaces' identities, to hash names with (class
    /// migrations); without them a name is hashed under its namespace.
    namespaces: Namespaces,
    /// Cancelled to end every bridged socket (`moved`, or 1001).
    closing: CancellationToken,
    /// The socket bridges.
    bridges: TaskTracker,
}

impl ObjectsService {
    /// The service over `objects`: a node's runtime (which answers
    /// `NotOwner` for shards it does not lead) or an edge's router.
    pub fn new(objects: Arc<dyn ObjectClient>, limits: ObjectsLimits) -> Self {
        ObjectsService {
            objects,
            limits,
            namespaces: Namespaces::default(),
            closing: CancellationToken::new(),
            bridges: TaskTracker::new(),
        }
    }

    /// Hashes names under the identities of `namespaces` (a renamed
    /// class's objects keep the ids they had under its old name).
    pub fn with_namespaces(mut self, namespaces: Namespaces) -> Self {
        self.namespaces = namespaces;
        self
    }

    /// The service for a tonic server, with the decoding limit set from the
    /// limits (larger messages are refused with RESOURCE_EXHAUSTED).
    pub fn into_server(self) -> ObjectsServer<Self> {
        // A `FetchMany` batch may hold 1 MiB of calls before its last one.
        let limit = self
            .limits
            .max_request_body_bytes
            .max(self.limits.max_message_bytes)
            .saturating_add(ENVELOPE_BYTES)
            .saturating_add(fetch_many::BATCH_BYTES);
        ObjectsServer::new(self).max_decoding_message_size(limit)
    }

    /// Ends every bridged socket: with `moved` for callers that re-attach
    /// (the object is told nothing), else with 1001 (the object is told
    /// too); waits until the bridges have ended.
    /// Cancelled when the service closes (see [`Self::close_sockets`]).
    pub(super) fn closing(&self) -> CancellationToken {
        self.closing.clone()
    }

    pub async fn close_sockets(&self) {
        self.closing.cancel();
        self.bridges.close();
        self.bridges.wait().await;
    }
}

/// Serves `service` on `listener` (plain or with mutual TLS, as `tls`
/// says) until `shutdown` is cancelled; then ends its sockets (`moved`/1001),
/// stops accepting, and waits for in-flight calls to finish.
pub async fn serve(
    listener: TcpListener,
    service: ObjectsService,
    tls: &Tls,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let closer = service.clone();
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let health = super::introspect::health(&[super::introspect::name_of::<
        pb::objects_server::ObjectsServer<ObjectsService>,
    >()])
    .await;
    tls.server()?
        // Finds callers that vanished while holding a socket stream open.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(super::metered::MetricsLayer::default())
        .add_service(service.into_server())
        .add_service(health)
        .add_optional_service(super::introspect::reflection())
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.cancelled().await;
            closer.close_sockets().await;
        })
        .await
        .map_err(Error::Serve)
}

type Reply<T> = Result<tonic::Response<T>, Status>;

/// The calls' bodies, run inside their server spans.
impl ObjectsService {
    /// One `Fetch`, unary or in a `FetchMany` stream.
    pub(super) async fn fetch_one(
        &self,
        request: pb::FetchRequest,
    ) -> Result<pb::FetchResponse, Status> {
        let limit = self.limits.max_request_body_bytes;
        let (key, req) = convert::request_from_pb(request, limit, &self.namespaces)?;
        if is_websocket_upgrade(&req) {
            return Err(Status::invalid_argument(
                "a WebSocket upgrade request needs Socket, not Fetch",
            ));
        }
        let outcome = self.objects.fetch(key, req).await?;
        if let Some(link) = outcome.socket {
            // Not an upgrade request, so no socket can have been accepted;
            // should one appear, nobody will ever connect to it.
            let _ =
                self.objects
                    .socket_closed(&link.object, link.socket, 1006, "not upgraded".into());
        }
        Ok(convert::response_to_pb(outcome.response))
    }

    async fn call_in(&self, request: tonic::Request<pb::CallRequest>) -> Reply<pb::CallResponse> {
        let req = request.into_inner();
        let key = convert::object_key(req.object, &self.namespaces)?;
        if req.method.is_empty() || req.method.len() > MAX_CALL_METHOD_BYTES {
            return Err(Status::invalid_argument(format!(
                "a call method is 1..={MAX_CALL_METHOD_BYTES} bytes, got {}",
                req.method.len()
            )));
        }
        convert::check_size(
            "call payload",
            req.payload.len(),
            self.limits.max_request_body_bytes,
        )?;
        let payload = bytes::Bytes::from(req.payload);
        match self.objects.call(key, req.method, payload).await? {
            Ok(payload) => Ok(tonic::Response::new(pb::CallResponse {
                payload: Vec::from(payload),
            })),
            Err(e) => Err(convert::handler_error_to_status(&e)),
        }
    }
}

#[tonic::async_trait]
impl Objects for ObjectsService {
    async fn fetch(&self, request: tonic::Request<pb::FetchRequest>) -> Reply<pb::FetchResponse> {
        let span = traces::rpc_server_span("roost.v1.Objects", "Fetch", request.metadata());
        let response = self
            .fetch_one(request.into_inner())
            .instrument(span)
            .await?;
        Ok(tonic::Response::new(response))
    }

    type FetchManyStream = ReceiverStream<Result<pb::FetchResults, Status>>;

    async fn fetch_many(
        &self,
        request: tonic::Request<Streaming<pb::FetchBatch>>,
    ) -> Reply<Self::FetchManyStream> {
        Ok(tonic::Response::new(fetch_many::serve(
            self.clone(),
            request.into_inner(),
        )))
    }

    async fn call(&self, request: tonic::Request<pb::CallRequest>) -> Reply<pb::CallResponse> {
        let span = traces::rpc_server_span("roost.v1.Objects", "Call", request.metadata());
        self.call_in(request).instrument(span).await
    }

    type SocketStream = futures_util::stream::Map<
        ReceiverStream<DownItem>,
        fn(DownItem) -> Result<pb::SocketDown, Status>,
    >;

    async fn socket(
        &self,
        request: tonic::Request<Streaming<pb::SocketUp>>,
    ) -> Reply<Self::SocketStream> {
        let reattach = request.metadata().contains_key(REATTACH_HEADER);
        let mut up = request.into_inner();
        let first = up
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the stream ended before `open`"))?;
        let (tx, rx) = mpsc::channel(DOWN_BUFFER);
        let link = match first.kind {
            Some(socket_up::Kind::Open(open)) => {
                let (key, req) = convert::request_from_pb(
                    open,
                    self.limits.max_request_body_bytes,
                    &self.namespaces,
                )?;
                if !is_websocket_upgrade(&req) {
                    return Err(Status::invalid_argument(
                        "`open` must be a WebSocket upgrade request (Upgrade: websocket)",
                    ));
                }
                let outcome = self.objects.fetch(key, req).await?;
                let response = convert::response_to_pb(outcome.response);
                let first = match &outcome.socket {
                    Some(link) => socket_down::Kind::Accepted(pb::SocketAccepted {
                        response: Some(response),
                        socket: link.socket,
                        tags: link.tags.clone(),
                        stable: link.stable.to_be_bytes().to_vec(),
                    }),
                    None => socket_down::Kind::Response(response),
                };
                // The channel is empty: this cannot fail for lack of room.
                let _ = tx.try_send(Box::new(Ok(pb::SocketDown { kind: Some(first) })));
                outcome.socket
            }
            Some(socket_up::Kind::Reattach(reattach)) => {
                let key = convert::object_key(reattach.object, &self.namespaces)?;
                if let Some(a) = &reattach.attachment {
                    convert::check_size("attachment", a.len(), self.limits.max_request_body_bytes)?;
                }
                let registration = Registration {
                    tags: reattach.tags,
                    attachment: reattach.attachment.map(bytes::Bytes::from),
                };
                let stable = convert::stable_from_pb(&reattach.stable)?;
                let link = self
                    .objects
                    .socket_reattach(key, stable, registration, reattach.delivered)
                    .await?;
                let attached = socket_down::Kind::Attached(pb::SocketAttached {
                    socket: link.socket,
                });
                // The channel is empty: this cannot fail for lack of room.
                let _ = tx.try_send(Box::new(Ok(pb::SocketDown {
                    kind: Some(attached),
                })));
                Some(link)
            }
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be `open` or `reattach`",
                ));
            }
        };
        if let Some(link) = link {
            let bridge = Bridge {
                objects: self.objects.clone(),
                down: tx,
                max_message: self.limits.max_message_bytes,
                closing: self.closing.clone(),
                reattach,
            };
            self.bridges.spawn(bridge.run(link, up));
        }
        let unbox: fn(DownItem) -> Result<pb::SocketDown, Status> = |item| *item;
        Ok(tonic::Response::new(futures_util::StreamExt::map(
            ReceiverStream::new(rx),
            unbox,
        )))
    }
}

/// How a bridged socket ended, and so what the object is told.
enum End {
    /// The caller closed it (or vanished: 1006).
    Closed(u16, String),
    /// The object's shard moved away from this node: a caller that
    /// re-attaches does so with the new owner; the object is told nothing.
    /// `handled` as in [`ServerFrame::Moved`]; `None` when unknown.
    Moved(Option<u64>),
    /// The node shuts down: a caller that re-attaches is told `moved` (the
    /// object is told nothing); others get 1001 both ways.
    Shutdown,
    /// A message over the size limit: an error, then a close with 1009.
    TooBig,
    /// The object closed or dropped it; it already knows.
    Object,
    /// The caller broke the protocol.
    Invalid(String),
    /// The runtime refused a message.
    Failed(crate::object::Error),
}

/// How long a bridge whose message was refused because the object's shard
/// moved waits for the runtime to hand the socket over (and say how many
/// messages it handled) before it ends the stream anyway.
const MOVE_WAIT: Duration = Duration::from_secs(15);

/// How long a bridge holds a client's message while its object's mailbox
/// is full before the socket fails as overloaded.
const OVERLOAD_WAIT: Duration = Duration::from_secs(5);

/// Bridges one accepted socket between its object and a `Socket` caller.
struct Bridge {
    objects: Arc<dyn ObjectClient>,
    down: mpsc::Sender<DownItem>,
    max_message: usize,
    /// Cancelled when the node shuts down.
    closing: CancellationToken,
    /// The caller re-attaches sockets ([`REATTACH_HEADER`]): it is told
    /// `moved` when this node stops serving the object. Other callers get
    /// a close (1001 at shutdown, 1012 when the shard moved).
    reattach: bool,
}

impl Bridge {
    async fn run(self, mut link: SocketLink, mut up: Streaming<pb::SocketUp>) {
        // Kept frames its edge missed, first (their numbers are below those
        // queued in `outgoing`).
        if !link.replay.is_empty() {
            tracing::debug!(object = %link.object, stable = link.stable, count = link.replay.len(), first = ?link.replay.first(), "re-sending kept frames");
        }
        for frame in std::mem::take(&mut link.replay) {
            if let ServerFrame::Message { message, seq } = frame {
                let kind = socket_down::Kind::Message(convert::message_to_pb(message, seq));
                if !self.send(kind).await {
                    break;
                }
            }
        }
        // Set when the runtime refused a message because the shard moved:
        // the caller's later messages are left unread (they were not run;
        // the caller sends them again to the new owner) while the socket's
        // hand-over comes.
        let mut moving: Option<tokio::time::Instant> = None;
        let end = loop {
            let move_deadline = async {
                match moving {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                frame = link.outgoing.recv() => match frame {
                    Some(ServerFrame::Message { message, seq }) => {
                        let kind = socket_down::Kind::Message(convert::message_to_pb(message, seq));
                        if !self.send(kind).await {
                            break self.gone();
                        }
                    }
                    // Only a caller that re-attaches keeps the socket's state.
                    Some(ServerFrame::Attachment(_)) if !self.reattach => {}
                    Some(ServerFrame::Attachment(value)) => {
                        let kind = socket_down::Kind::Attachment(pb::SocketAttachment {
                            value: Vec::from(value),
                        });
                        if !self.send(kind).await {
                            break self.gone();
                        }
                    }
                    Some(ServerFrame::Moved { handled }) => break End::Moved(Some(handled)),
                    Some(ServerFrame::Close { code, reason }) => {
                        if !self.send(close(code, reason.clone())).await {
                            self.send_last(Ok(close(code, reason)));
                        }
                        break End::Object;
                    }
                    // Dropped by the object (its client did not keep up, or
                    // it was reset): end the stream without a close.
                    None => break End::Object,
                },
                msg = up.message(), if moving.is_none() => match msg {
                    Ok(Some(pb::SocketUp { kind: Some(kind) })) => match self.handle_up(&link, kind).await {
                        Some(End::Failed(
                            crate::object::Error::NotOwner { .. } | crate::object::Error::ShuttingDown,
                        )) => moving = Some(tokio::time::Instant::now() + MOVE_WAIT),
                        Some(end) => break end,
                        None => {}
                    },
                    Ok(Some(pb::SocketUp { kind: None })) => {
                        break End::Invalid("a SocketUp without a kind".into());
                    }
                    Ok(None) | Err(_) => break End::Closed(1006, String::new()),
                },
                _ = move_deadline => break End::Moved(None),
                _ = self.closing.cancelled() => break End::Shutdown,
                _ = self.down.closed() => break self.gone(),
            }
        };
        let (object, socket) = (&link.object, link.socket);
        let told = match end {
            End::Object => Ok(()),
            End::Closed(code, reason) => self.objects.socket_closed(object, socket, code, reason),
            End::Moved(handled) if self.reattach => {
                self.send_end(socket_down::Kind::Moved(pb::SocketMoved { handled }))
                    .await;
                Ok(())
            }
            End::Shutdown if self.reattach => {
                let moved = pb::SocketMoved { handled: None };
                self.send_last(Ok(socket_down::Kind::Moved(moved)));
                Ok(())
            }
            End::Moved(_) => {
                self.send_end(close(1012, "owner lost; reconnect".into()))
                    .await;
                Ok(())
            }
            End::Shutdown => {
                let reason = "server shutting down";
                let told = self
                    .objects
                    .socket_closed(object, socket, 1001, reason.into());
                self.send_last(Ok(close(1001, reason.into())));
                told
            }
            End::TooBig => {
                let reason = "message too big";
                let told = self
                    .objects
                    .socket_error(object, socket, reason.into())
                    .and_then(|()| {
                        self.objects
                            .socket_closed(object, socket, 1009, reason.into())
                    });
                self.send_last(Ok(close(1009, reason.into())));
                told
            }
            End::Invalid(message) => {
                let told = self
                    .objects
                    .socket_closed(object, socket, 1006, String::new());
                self.send_last(Err(Status::invalid_argument(message)));
                told
            }
            End::Failed(e) => {
                let told = self
                    .objects
                    .socket_closed(object, socket, 1006, String::new());
                self.send_last(Err(Status::from(e)));
                told
            }
        };
        if let Err(e) = told {
            tracing::debug!(%object, error = %e, "cannot tell object its socket closed");
        }
    }

    /// Hands a client's message to its object. While the object's mailbox
    /// is full the caller is not read (backpressure, up to
    /// [`OVERLOAD_WAIT`]) rather than the socket failed.
    async fn message(
        &self,
        link: &SocketLink,
        msg: crate::object::Message,
    ) -> Result<(), crate::object::Error> {
        let deadline = tokio::time::Instant::now() + OVERLOAD_WAIT;
        let mut pause = Duration::from_millis(5);
        loop {
            match self
                .objects
                .socket_message(&link.object, link.socket, msg.clone())
            {
                Err(crate::object::Error::Overloaded)
                    if tokio::time::Instant::now() + pause < deadline =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                done => return done,
            }
        }
    }

    /// Handles one message from the caller; `Some` ends the bridge.
    async fn handle_up(&self, link: &SocketLink, kind: socket_up::Kind) -> Option<End> {
        let (object, socket) = (&link.object, link.socket);
        let result = match kind {
            socket_up::Kind::Message(msg) => {
                let Some(msg) = convert::message_from_pb(msg) else {
                    return Some(End::Invalid("a socket message without data".into()));
                };
                if msg.len() > self.max_message {
                    return Some(End::TooBig);
                }
                self.message(link, msg).await
            }
            socket_up::Kind::Close(pb::SocketClose { code, reason }) => {
                return Some(match u16::try_from(code) {
                    Ok(code) => End::Closed(code, reason),
                    Err(_) => End::Invalid(format!("close code {code} is not 0..=65535")),
                });
            }
            socket_up::Kind::Error(error) => self.objects.socket_error(object, socket, error),
            socket_up::Kind::Open(_) | socket_up::Kind::Reattach(_) => {
                return Some(End::Invalid(
                    "`open` and `reattach` are only the first message".into(),
                ));
            }
        };
        result.err().map(End::Failed)
    }

    /// Why the caller can no longer be sent to.
    fn gone(&self) -> End {
        if self.closing.is_cancelled() {
            End::Shutdown
        } else {
            End::Closed(1006, "caller went away".into())
        }
    }

    /// Sends `kind` to the caller, waiting for room; `false` if it is gone
    /// or the node shuts down meanwhile.
    async fn send(&self, kind: socket_down::Kind) -> bool {
        let item = Box::new(Ok(pb::SocketDown { kind: Some(kind) }));
        tokio::select! {
            sent = self.down.send(item) => sent.is_ok(),
            _ = self.closing.cancelled() => false,
        }
    }

    /// Sends the stream's last message, waiting for room unless the node
    /// shuts down meanwhile (then only if there is room).
    async fn send_end(&self, kind: socket_down::Kind) {
        if !self.send(kind.clone()).await {
            self.send_last(Ok(kind));
        }
    }

    /// The stream's last item, if there is room for it (a caller that does
    /// not read does not hold the bridge up).
    fn send_last(&self, item: Result<socket_down::Kind, Status>) {
        let item = item.map(|kind| pb::SocketDown { kind: Some(kind) });
        let _ = self.down.try_send(Box::new(item));
    }
}

fn close(code: u16, reason: String) -> socket_down::Kind {
    socket_down::Kind::Close(pb::SocketClose {
        code: u32::from(code),
        reason,
    })
}
