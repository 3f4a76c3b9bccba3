//! [`RemoteClient`]: an [`ObjectClient`] that reaches objects on another
//! node over the public object API, so that an edge (or any worker) can
//! forward to the node that owns an object.
//!
//! Owns: turning object calls into `Fetch` (over one `FetchMany` stream per
//! node: [`super::mux`]), `Call` and `Socket` RPCs and back, and the client end of each bridged socket (a map from socket to
//! the sender of its `Socket` stream). Never: runs objects, or retries on
//! its own (a `NotOwner` reaches the caller, who knows where to go next).
//!
//! Which node is called is decided in one place, [`RemoteClient::channel_for`]:
//! one node today; the cluster's shard map later.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::StatusCode;
use prost::Message as _;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

use super::Error;
use super::convert;
use super::mux::{Answer, FetchMux, MAX_MUX_CALL_BYTES};
use super::objects::REATTACH_HEADER;
use super::pb::objects_client::ObjectsClient;
use super::pb::{self, socket_down, socket_up};
use super::reattach::{Attached, Follow, ReattachOptions, Reattacher, drain};
use super::tls::Tls;
use crate::id::ObjectKey;
use crate::object::{
    self, CallResult, FetchOutcome, FrameSender, Message, ObjectClient, Registration, Request,
    ServerFrame, SocketId, SocketLink, StableId, is_websocket_upgrade,
};
use crate::telemetry::traces;

/// How long connecting to a node may take before calls on it fail as
/// unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often an HTTP/2 ping checks that a node still answers, and how long
/// its answer may take: a paused or partitioned node fails the calls it
/// holds within about five seconds instead of hanging them.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Tunables of a [`RemoteClient`].
#[derive(Clone, Debug)]
pub struct RemoteOptions {
    /// Messages queued towards one remote socket before `socket_message`
    /// answers `Overloaded`, and frames queued towards its client.
    pub socket_buffer: usize,
    /// Largest message accepted from a node (a response, a call's answer,
    /// a socket frame), in bytes.
    pub max_response_bytes: usize,
    /// Plain or mutual TLS towards the node (default plain).
    pub tls: Tls,
    /// How sockets opened with [`RemoteClient::fetch_following`] wait for
    /// a new owner.
    pub reattach: ReattachOptions,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            socket_buffer: 1024,
            max_response_bytes: 64 << 20,
            tls: Tls::plain(),
            reattach: ReattachOptions::default(),
        }
    }
}

/// Calls objects on a remote node over gRPC. Cheap to clone.
#[derive(Clone)]
pub struct RemoteClient {
    inner: Arc<Inner>,
}

struct Inner {
    channel: Channel,
    /// Plain requests, over one `FetchMany` stream.
    mux: FetchMux,
    opts: RemoteOptions,
    /// The up-stream of every socket bridged through this client.
    sockets: Mutex<HashMap<(ObjectKey, SocketId), Upstream>>,
    /// Tells one `Socket` stream from another for the same socket id.
    next_stream: AtomicU64,
}

/// A message up a socket's stream, boxed: a channel's slots are allocated
/// 32 at a time when it is made, and every bridged socket holds one or two
/// channels of these (`SocketUp` is 200 bytes, its `open` variant being a
/// whole request), so an idle socket costs a few hundred bytes here
/// instead of kilobytes.
pub(super) type UpMsg = Box<pb::SocketUp>;

struct Upstream {
    stream: u64,
    tx: mpsc::Sender<UpMsg>,
}

impl RemoteClient {
    /// A client over `channel` (to one node).
    pub fn new(channel: Channel, opts: RemoteOptions) -> RemoteClient {
        RemoteClient {
            inner: Arc::new(Inner {
                mux: FetchMux::new(channel.clone(), opts.max_response_bytes),
                channel,
                opts,
                sockets: Mutex::new(HashMap::new()),
                next_stream: AtomicU64::new(1),
            }),
        }
    }

    /// A client of the node serving gRPC on `addr`. Connects on first use
    /// (and reconnects after a failure). A node no connection can be made to
    /// makes calls fail with [`object::Error::Unreachable`] (never sent); a
    /// connection that breaks after a call was sent, or that stops
    /// answering keep-alive pings (a paused or partitioned node), fails the
    /// calls on it with [`object::Error::Unavailable`] (outcome unknown).
    pub fn connect_lazy(addr: SocketAddr, opts: RemoteOptions) -> Result<RemoteClient, Error> {
        Self::connect_lazy_to(&addr.to_string(), opts)
    }

    /// [`RemoteClient::connect_lazy`] to a node's `host:port` (a DNS name
    /// is resolved at each connection), with `opts.tls`.
    pub fn connect_lazy_to(addr: &str, opts: RemoteOptions) -> Result<RemoteClient, Error> {
        let endpoint = opts
            .tls
            .endpoint(addr)?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        Ok(RemoteClient::new(endpoint.connect_lazy(), opts))
    }

    /// The channel to the node that runs `key`. The seam for routing: one
    /// node now; the cluster picks the leader of the object's shard here.
    fn channel_for(&self, _key: &ObjectKey) -> Channel {
        self.inner.channel.clone()
    }

    fn client_for(&self, key: &ObjectKey) -> ObjectsClient<Channel> {
        ObjectsClient::new(self.channel_for(key))
            .max_decoding_message_size(self.inner.opts.max_response_bytes)
    }

    /// Sockets bridged through this client right now.
    pub fn open_sockets(&self) -> usize {
        self.inner.sockets().len()
    }

    /// A plain request: over the node's `FetchMany` stream, or as a unary
    /// `Fetch` when it is large or the node does not know the stream.
    async fn fetch_plain(
        &self,
        key: ObjectKey,
        req: Request,
    ) -> Result<FetchOutcome, object::Error> {
        let request = convert::request_to_pb(&key, req);
        let mux = &self.inner.mux;
        let resp = if mux.usable() && request.encoded_len() <= MAX_MUX_CALL_BYTES {
            let mut trace_context = HashMap::new();
            traces::inject_current_into(&mut trace_context);
            let call = pb::FetchCall {
                id: 0,
                request: Some(request),
                trace_context,
            };
            match mux.fetch(call).await {
                Answer::Done(Ok(resp)) => resp,
                Answer::Done(Err(status)) => return Err(convert::error_from_status(&status, &key)),
                Answer::NeverSent(why) => return Err(object::Error::Unreachable(why)),
                Answer::Unknown(why) => return Err(object::Error::Unavailable(why)),
                Answer::Unsupported(call) => {
                    self.fetch_unary(&key, call.request.unwrap_or_default())
                        .await?
                }
            }
        } else {
            self.fetch_unary(&key, request).await?
        };
        let response = convert::response_from_pb(resp)?;
        Ok(FetchOutcome {
            response,
            socket: None,
        })
    }

    async fn fetch_unary(
        &self,
        key: &ObjectKey,
        request: pb::FetchRequest,
    ) -> Result<pb::FetchResponse, object::Error> {
        let mut wire = tonic::Request::new(request);
        traces::inject_current(wire.metadata_mut());
        let resp = self
            .client_for(key)
            .fetch(wire)
            .await
            .map_err(|status| convert::error_from_status(&status, key))?;
        Ok(resp.into_inner())
    }

    /// Opens a `Socket` stream to `key`'s node with `first` as its first
    /// message, as a caller that re-attaches sockets if `reattach`.
    async fn open_stream(
        &self,
        key: &ObjectKey,
        first: socket_up::Kind,
        reattach: bool,
    ) -> Result<(mpsc::Sender<UpMsg>, Streaming<pb::SocketDown>), object::Error> {
        let (up_tx, up_rx) = mpsc::channel::<UpMsg>(self.inner.opts.socket_buffer.max(1));
        // The channel is empty: there is room.
        let _ = up_tx.try_send(Box::new(pb::SocketUp { kind: Some(first) }));
        let up = tokio_stream::StreamExt::map(ReceiverStream::new(up_rx), |m: UpMsg| *m);
        let mut wire = tonic::Request::new(up);
        if reattach {
            wire.metadata_mut().insert(
                REATTACH_HEADER,
                tonic::metadata::MetadataValue::from_static("1"),
            );
        }
        let down = self
            .client_for(key)
            .socket(wire)
            .await
            .map_err(|status| convert::error_from_status(&status, key))?
            .into_inner();
        Ok((up_tx, down))
    }

    /// An upgrade request: opens a `Socket` stream and, if the object
    /// accepts, bridges its frames into a [`SocketLink`]. With a
    /// `reattacher`, the socket follows its object to a new owner (see
    /// [`super::reattach`]); without, a move closes it (1012).
    async fn fetch_socket(
        &self,
        key: ObjectKey,
        req: Request,
        reattacher: Option<Reattacher>,
    ) -> Result<FetchOutcome, object::Error> {
        let buffer = self.inner.opts.socket_buffer.max(1);
        let open = socket_up::Kind::Open(convert::request_to_pb(&key, req));
        let (up_tx, mut down) = self.open_stream(&key, open, reattacher.is_some()).await?;
        let first = down
            .message()
            .await
            .map_err(|status| convert::error_from_status(&status, &key))?;
        match first.and_then(|m| m.kind) {
            Some(socket_down::Kind::Response(resp)) => {
                let response = convert::response_from_pb(resp)?;
                if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                    return Err(malformed("a 101 response without a socket"));
                }
                Ok(FetchOutcome {
                    response,
                    socket: None,
                })
            }
            Some(socket_down::Kind::Accepted(pb::SocketAccepted {
                response,
                socket,
                tags,
                stable,
            })) => {
                let stable = convert::stable_from_pb(&stable)
                    .map_err(|_| malformed("a stable socket id that is not 16 bytes"))?;
                let response = response.ok_or_else(|| malformed("accepted without a response"))?;
                let response = convert::response_from_pb(response)?;
                if response.status() != StatusCode::SWITCHING_PROTOCOLS {
                    return Err(malformed("accepted with a status other than 101"));
                }
                let (frame_tx, frame_rx) = object::frame_channel(buffer);
                let stream = self.inner.next_stream.fetch_add(1, Ordering::Relaxed);
                let forget = Forget {
                    inner: self.inner.clone(),
                    key: key.clone(),
                    socket,
                    stream,
                };
                match reattacher {
                    None => {
                        self.inner
                            .sockets()
                            .insert((key.clone(), socket), Upstream { stream, tx: up_tx });
                        tokio::spawn(forward_down(forget, down, frame_tx));
                    }
                    Some(reattacher) => {
                        // The edge's messages go to the follower, which
                        // sends them to whichever node owns the socket.
                        let (edge_tx, edge_rx) = mpsc::channel(buffer);
                        self.inner.sockets().insert(
                            (key.clone(), socket),
                            Upstream {
                                stream,
                                tx: edge_tx,
                            },
                        );
                        let follow = Follow {
                            key: key.clone(),
                            stable,
                            tags: tags.clone(),
                            attachment: None,
                            from_edge: edge_rx,
                            frames: frame_tx,
                            reattacher,
                            opts: self.inner.opts.reattach,
                            delivered: 0,
                        };
                        let first = Attached {
                            socket,
                            up: up_tx,
                            down,
                        };
                        tokio::spawn(async move {
                            follow.run(first).await;
                            forget.run();
                        });
                    }
                }
                Ok(FetchOutcome {
                    response,
                    socket: Some(SocketLink {
                        object: key,
                        socket,
                        tags,
                        // 0: an older node named none.
                        stable: stable.unwrap_or_default(),
                        replay: Vec::new(),
                        outgoing: frame_rx,
                    }),
                })
            }
            Some(_) => Err(malformed(
                "the first message is neither accepted nor response",
            )),
            None => Err(malformed("the stream ended before an answer")),
        }
    }

    /// An upgrade request whose socket, once accepted, follows its object
    /// to a new owner: `reattacher` re-registers it there.
    pub fn fetch_following(
        &self,
        key: ObjectKey,
        req: Request,
        reattacher: Reattacher,
    ) -> BoxFuture<'static, Result<FetchOutcome, object::Error>> {
        let this = self.clone();
        Box::pin(async move { this.fetch_socket(key, req, Some(reattacher)).await })
    }

    /// Registers a socket whose object's owner changed with the object on
    /// this node (`NotOwner` if it does not own it either).
    /// `delivered`: the highest frame number passed on to the client, to
    /// get the kept frames after it.
    pub async fn reattach(
        &self,
        key: ObjectKey,
        stable: Option<StableId>,
        registration: Registration,
        delivered: Option<u64>,
    ) -> Result<Attached, object::Error> {
        let first = socket_up::Kind::Reattach(pb::SocketReattach {
            object: Some(convert::object_ref(&key)),
            tags: registration.tags,
            attachment: registration.attachment.map(Vec::from),
            stable: stable.map(|s| s.to_be_bytes().to_vec()).unwrap_or_default(),
            delivered,
        });
        let (up_tx, mut down) = self.open_stream(&key, first, true).await?;
        let failed = |status: tonic::Status| convert::error_from_status(&status, &key);
        match down.message().await.map_err(failed)?.and_then(|m| m.kind) {
            Some(socket_down::Kind::Attached(pb::SocketAttached { socket })) => Ok(Attached {
                socket,
                up: up_tx,
                down,
            }),
            Some(_) => Err(malformed("the answer to reattach is not attached")),
            None => Err(malformed("the stream ended before an answer")),
        }
    }

    /// Queues `kind` on the socket's stream. `last` ends the stream after it.
    fn send_up(
        &self,
        key: &ObjectKey,
        socket: SocketId,
        kind: socket_up::Kind,
        last: bool,
    ) -> Result<(), object::Error> {
        let mut sockets = self.inner.sockets();
        let map_key = (key.clone(), socket);
        let msg: UpMsg = Box::new(pb::SocketUp { kind: Some(kind) });
        if last {
            // Gone from the map, the stream ends once its queue is sent.
            let Some(up) = sockets.remove(&map_key) else {
                return Ok(());
            };
            drop(sockets);
            if let Err(TrySendError::Full(msg)) = up.tx.try_send(msg) {
                // Keep the close: wait for room off the caller's path.
                if let Ok(handle) = tokio::runtime::Handle::try_current() {
                    handle.spawn(async move {
                        let _ = up.tx.send(msg).await;
                    });
                }
            }
            return Ok(());
        }
        // An unknown socket has ended already; its link is (being) closed.
        let Some(up) = sockets.get(&map_key) else {
            return Ok(());
        };
        match up.tx.try_send(msg) {
            Ok(()) | Err(TrySendError::Closed(_)) => Ok(()),
            Err(TrySendError::Full(_)) => Err(object::Error::Overloaded),
        }
    }
}

impl Inner {
    fn sockets(&self) -> MutexGuard<'_, HashMap<(ObjectKey, SocketId), Upstream>> {
        self.sockets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Forgets a socket whose stream ended (which ends its up-stream: the
/// object sees 1006 unless a close was sent), unless a newer stream for
/// the same id took its place.
struct Forget {
    inner: Arc<Inner>,
    key: ObjectKey,
    socket: SocketId,
    stream: u64,
}

impl Forget {
    fn run(self) {
        let mut sockets = self.inner.sockets();
        let map_key = (self.key, self.socket);
        if sockets
            .get(&map_key)
            .is_some_and(|up| up.stream == self.stream)
        {
            sockets.remove(&map_key);
        }
    }
}

fn malformed(what: &str) -> object::Error {
    object::Error::Unavailable(format!("Socket: {what}"))
}

/// Forwards a socket's frames from its `Socket` stream to the link, until
/// either ends; then forgets the socket. A socket that does not follow its
/// object: a move or a broken stream closes it with 1012.
async fn forward_down(forget: Forget, mut down: Streaming<pb::SocketDown>, frames: FrameSender) {
    let key = forget.key.clone();
    loop {
        let msg = tokio::select! {
            msg = down.message() => msg,
            _ = frames.closed() => break,
        };
        let frame = match msg.map(|m| m.and_then(|m| m.kind)) {
            Ok(Some(socket_down::Kind::Message(m))) => match convert::frame_from_pb(m) {
                Some(frame) => frame,
                None => {
                    tracing::warn!(object = %key, "socket message without data from node");
                    break;
                }
            },
            Ok(Some(socket_down::Kind::Close(pb::SocketClose { code, reason }))) => {
                ServerFrame::Close {
                    code: u16::try_from(code).unwrap_or(1011),
                    reason,
                }
            }
            Ok(Some(socket_down::Kind::Attachment(_))) => continue,
            Ok(Some(_)) => {
                tracing::warn!(object = %key, "unexpected message on a Socket stream");
                break;
            }
            Ok(None) => break,
            Err(status) => {
                // The owner is gone (or moved): tell the client to come
                // back, as a restarting service does. Its object's state is
                // in Raft; the new owner serves the reconnect.
                tracing::debug!(object = %key, %status, "Socket stream failed");
                let _ = frames.try_send(ServerFrame::Close {
                    code: 1012,
                    reason: "owner lost; reconnect".into(),
                });
                break;
            }
        };
        let closed = matches!(frame, ServerFrame::Close { .. });
        if frames.send(frame).await.is_err() || closed {
            break;
        }
    }
    forget.run();
    drain(down).await;
}

impl ObjectClient for RemoteClient {
    fn fetch(
        &self,
        object: ObjectKey,
        req: Request,
    ) -> BoxFuture<'static, Result<FetchOutcome, object::Error>> {
        let this = self.clone();
        Box::pin(async move {
            if is_websocket_upgrade(&req) {
                this.fetch_socket(object, req, None).await
            } else {
                this.fetch_plain(object, req).await
            }
        })
    }

    fn call(
        &self,
        object: ObjectKey,
        method: String,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<CallResult, object::Error>> {
        let this = self.clone();
        Box::pin(async move {
            let req = pb::CallRequest {
                object: Some(convert::object_ref(&object)),
                method,
                payload: Vec::from(payload),
            };
            let mut req = tonic::Request::new(req);
            traces::inject_current(req.metadata_mut());
            match this.client_for(&object).call(req).await {
                Ok(resp) => Ok(Ok(Bytes::from(resp.into_inner().payload))),
                Err(status) => match convert::handler_error_from_status(&status) {
                    Some(e) => Ok(Err(e)),
                    None => Err(convert::error_from_status(&status, &object)),
                },
            }
        })
    }

    fn socket_message(
        &self,
        object: &ObjectKey,
        socket: SocketId,
        msg: Message,
    ) -> Result<(), object::Error> {
        let kind = socket_up::Kind::Message(convert::message_to_pb(msg, 0));
        self.send_up(object, socket, kind, false)
    }

    fn socket_closed(
        &self,
        object: &ObjectKey,
        socket: SocketId,
        code: u16,
        reason: String,
    ) -> Result<(), object::Error> {
        let kind = socket_up::Kind::Close(pb::SocketClose {
            code: u32::from(code),
            reason,
        });
        self.send_up(object, socket, kind, true)
    }

    fn socket_error(
        &self,
        object: &ObjectKey,
        socket: SocketId,
        error: String,
    ) -> Result<(), object::Error> {
        self.send_up(object, socket, socket_up::Kind::Error(error), false)
    }
}

#[cfg(test)]
#[path = "remote_tests.rs"]
mod tests;
