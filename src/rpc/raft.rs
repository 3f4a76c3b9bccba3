//! Raft traffic between nodes over gRPC: [`RaftService`] hands peers'
//! messages to this node's shard groups, [`GrpcTransport`] sends this node's
//! to its peers, and [`serve`] runs the service on a listener. Servers and
//! channels are built by [`super::tls`] (plain, or mutual TLS).
//!
//! Owns the wire encoding of Raft messages (postcard inside the
//! `RaftRequest` envelope, see `proto/roost/v1/raft.proto`) and one HTTP/2
//! channel per peer address, shared by every shard. Never interprets Raft:
//! openraft's messages pass through unchanged and its errors keep their
//! meaning; a peer that cannot be reached is `Unreachable`, so openraft backs
//! off instead of retrying at once.
//!
//! Before a message reaches openraft it is bounded and checked
//! ([`guard`]): each method has its own size limit (a Vote is tiny, a
//! snapshot chunk is one chunk), terms may not jump far ahead, log ids may
//! not be ahead of the sender's term, and snapshot chunks must be
//! contiguous and within `raft.max_snapshot_bytes`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};

pub mod guard;
mod stream;

use stream::PeerStream;

use std::convert::Infallible;
use std::task::{Context, Poll};

use guard::{Rejected, Snapshots};

use super::Error;
use super::pb::raft_client::RaftClient;
use super::pb::raft_frame::Body;
use super::pb::raft_server::{self, RaftServer};
use super::pb::{PingReply, PingRequest, RaftBatch, RaftReply, RaftRequest};
use super::tls::Tls;
use crate::replication::network::RpcError;
use crate::replication::{NodeId, Peer, Pong, Raft, Replicas, Transport, TypeConfig};

/// The largest message either side sends or accepts. A single log entry can
/// be one group commit (`max_batch_bytes`, 4 MiB by default) plus one event's
/// writes (at most 16 MiB by the object layer's limits); a snapshot chunk is
/// openraft's `snapshot_max_chunk_size` (3 MiB by default). Both fit.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// An AppendEntries with several entries that encodes larger than this is
/// refused as `PayloadTooLarge` before it is sent, and openraft retries
/// with fewer entries: a message must reach the follower and be fsynced
/// within openraft's append timeout (the heartbeat interval).
pub const APPEND_TARGET_BYTES: usize = 4 << 20;

/// How long connecting to a peer may take before the call fails (and the
/// peer counts as unreachable).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 pings on each peer channel, so a dead connection (a peer whose
/// machine vanished) is noticed even without traffic.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest Vote request a node reads: a vote and a log id, a few
/// dozen bytes encoded.
pub const MAX_VOTE_BYTES: usize = 64 << 10;

/// The largest InstallSnapshot request a node reads: one chunk (openraft's
/// `snapshot_max_chunk_size`, 3 MiB) and its metadata (the membership).
pub const MAX_SNAPSHOT_CHUNK_BYTES: usize = 8 << 20;

/// An AppendEntries without entries (a heartbeat) that encodes larger than
/// this is refused.
pub const MAX_HEARTBEAT_BYTES: usize = 64 << 10;

/// The server side: delivers each message to this node's group of its shard.
#[derive(Clone)]
pub struct RaftService {
    replicas: Arc<Replicas>,
    snapshots: Arc<Snapshots>,
    /// Ends every `Stream` call when cancelled (the node stops serving:
    /// a graceful shutdown waits for calls to end).
    closing: CancellationToken,
    /// AppendEntries received, per object shard.
    appends: Arc<[metrics::Counter]>,
}

impl RaftService {
    /// Accepting snapshots up to [`guard::DEFAULT_MAX_SNAPSHOT_BYTES`].
    pub fn new(replicas: Arc<Replicas>) -> RaftService {
        RaftService::with_max_snapshot(replicas, guard::DEFAULT_MAX_SNAPSHOT_BYTES)
    }

    /// Accepting snapshots up to `max_snapshot_bytes` (`raft.max_snapshot_bytes`).
    pub fn with_max_snapshot(replicas: Arc<Replicas>, max_snapshot_bytes: u64) -> RaftService {
        let appends = (0..replicas.shard_count())
            .map(crate::telemetry::metrics::raft_appends_received)
            .collect();
        RaftService {
            replicas,
            snapshots: Arc::new(Snapshots::new(max_snapshot_bytes)),
            closing: CancellationToken::new(),
            appends,
        }
    }

    /// Ends its `Stream` calls when `closing` is cancelled.
    pub fn closing_with(mut self, closing: CancellationToken) -> RaftService {
        self.closing = closing;
        self
    }

    /// The tonic service, with the message limits of this protocol (each
    /// method's request body bounded by its own limit), to add to a
    /// `tonic::transport::Server` next to other services.
    pub fn into_server(self) -> Limited {
        Limited(
            RaftServer::new(self)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
    }

    /// The group a request is for.
    fn route(&self, request: &RaftRequest) -> Result<Raft, Status> {
        let me = self.replicas.node_id();
        if request.target != me {
            return Err(Status::failed_precondition(format!(
                "this is node {me}, not node {}",
                request.target
            )));
        }
        u16::try_from(request.shard)
            .ok()
            .and_then(|shard| self.replicas.group(shard))
            .map(|handle| handle.raft().clone())
            .ok_or_else(|| {
                Status::not_found(format!(
                    "node {me} has no shard {} (it has {})",
                    request.shard,
                    self.replicas.shard_count()
                ))
            })
    }
}

impl RaftService {
    /// An AppendEntries, checked, for its group.
    async fn answer_append(&self, request: RaftRequest) -> Result<RaftReply, Status> {
        let raft = self.route(&request)?;
        if let Some(appends) = usize::try_from(request.shard)
            .ok()
            .and_then(|s| self.appends.get(s))
        {
            appends.increment(1);
        }
        let rpc: AppendEntriesRequest<TypeConfig> = decode_request(&request.payload)?;
        if rpc.entries.is_empty() && request.payload.len() > MAX_HEARTBEAT_BYTES {
            return Err(Status::invalid_argument(format!(
                "a heartbeat of {} bytes (at most {MAX_HEARTBEAT_BYTES})",
                request.payload.len()
            )));
        }
        check_consecutive(&rpc)?;
        check_append(&raft, &rpc).map_err(rejected)?;
        encode_reply(&raft.append_entries(rpc).await)
    }

    /// A Vote, checked, for its group.
    async fn answer_vote(&self, request: RaftRequest) -> Result<RaftReply, Status> {
        if request.payload.len() > MAX_VOTE_BYTES {
            return Err(Status::invalid_argument(format!(
                "a vote of {} bytes (at most {MAX_VOTE_BYTES})",
                request.payload.len()
            )));
        }
        let raft = self.route(&request)?;
        let rpc: VoteRequest<NodeId> = decode_request(&request.payload)?;
        let term = rpc.vote.leader_id.term;
        guard::check_term(term, current_term(&raft))
            .and_then(|()| log_term("last_log_id", rpc.last_log_id.as_ref(), term))
            .map_err(rejected)?;
        encode_reply(&raft.vote(rpc).await)
    }
}

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        self.answer_append(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        self.answer_vote(request.into_inner())
            .await
            .map(Response::new)
    }

    type StreamStream = stream::Answers;

    async fn stream(
        &self,
        request: Request<tonic::Streaming<RaftBatch>>,
    ) -> Result<Response<stream::Answers>, Status> {
        Ok(Response::new(stream::serve(
            self.clone(),
            request.into_inner(),
            self.closing.clone(),
        )))
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let request = request.into_inner();
        let raft = self.route(&request)?;
        let mut rpc: InstallSnapshotRequest<TypeConfig> = decode_request(&request.payload)?;
        rpc.data = request.data;
        let shard = u16::try_from(request.shard).unwrap_or(u16::MAX);
        let term = rpc.vote.leader_id.term;
        let id = rpc.meta.snapshot_id.clone();
        let (offset, done) = (rpc.offset, rpc.done);
        let end = guard::check_term(term, current_term(&raft))
            .and_then(|()| log_term("snapshot last_log_id", rpc.meta.last_log_id.as_ref(), term))
            .and_then(|()| self.snapshots.check(shard, &id, offset, rpc.data.len()))
            .map_err(rejected)?;
        let vote = rpc.vote;
        let result = raft.install_snapshot(rpc).await;
        match &result {
            // openraft answers a stale sender with its own, higher vote and
            // drops the chunk.
            Ok(resp) if resp.vote <= vote => self.snapshots.accepted(shard, &id, end, done),
            _ => {}
        }
        encode_reply(&result).map(Response::new)
    }

    async fn ping(&self, request: Request<PingRequest>) -> Result<Response<PingReply>, Status> {
        let request = request.into_inner();
        let me = self.replicas.node_id();
        if request.target != me {
            return Err(Status::failed_precondition(format!(
                "this is node {me}, not node {}",
                request.target
            )));
        }
        let (quiesced, quiesces) = self.replicas.pong(request.from);
        Ok(Response::new(PingReply { quiesced, quiesces }))
    }
}

/// This node's current term in `raft`'s group.
fn current_term(raft: &Raft) -> u64 {
    raft.metrics().borrow().current_term
}

/// `id`'s term is at most the sender's `vote_term`.
fn log_term(
    what: &'static str,
    id: Option<&openraft::LogId<NodeId>>,
    vote_term: u64,
) -> Result<(), Rejected> {
    id.map_or(Ok(()), |id| {
        guard::check_log_term(what, id.leader_id.term, vote_term)
    })
}

/// An AppendEntries' vote and the log ids it carries.
fn check_append(raft: &Raft, rpc: &AppendEntriesRequest<TypeConfig>) -> Result<(), Rejected> {
    let term = rpc.vote.leader_id.term;
    guard::check_term(term, current_term(raft))?;
    log_term("prev_log_id", rpc.prev_log_id.as_ref(), term)?;
    log_term("leader_commit", rpc.leader_commit.as_ref(), term)?;
    // Entries follow each other (checked before), so the last has the
    // highest term.
    log_term("entry", rpc.entries.last().map(|e| &e.log_id), term)
}

/// A refused message: counted, logged, and an error to the sender.
fn rejected(e: Rejected) -> Status {
    crate::telemetry::metrics::raft_rejected(e.reason());
    tracing::warn!(error = %e, "refused a Raft message");
    Status::invalid_argument(format!("refused Raft message: {e}"))
}

/// [`RaftServer`] with each method's request body bounded by its own limit
/// before it is decoded: [`MAX_VOTE_BYTES`] for Vote,
/// [`MAX_SNAPSHOT_CHUNK_BYTES`] for InstallSnapshot, [`MAX_MESSAGE_BYTES`]
/// for AppendEntries and for each message of a Stream.
#[derive(Clone)]
pub struct Limited(RaftServer<RaftService>);

impl tonic::server::NamedService for Limited {
    const NAME: &'static str = <RaftServer<RaftService> as tonic::server::NamedService>::NAME;
}

impl tower_service::Service<http::Request<tonic::body::Body>> for Limited {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = <RaftServer<RaftService> as tower_service::Service<
        http::Request<tonic::body::Body>,
    >>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower_service::Service::<http::Request<tonic::body::Body>>::poll_ready(&mut self.0, cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let limit = match request.uri().path().rsplit('/').next() {
            Some("Vote" | "Ping") => MAX_VOTE_BYTES,
            Some("InstallSnapshot") => MAX_SNAPSHOT_CHUNK_BYTES,
            // A stream's body has no end: each of its messages is bounded
            // by the decoder instead (`MAX_MESSAGE_BYTES`), and each request
            // in a message by its own checks (`RaftService::answer_*`).
            Some("Stream") => return self.0.call(request),
            _ => MAX_MESSAGE_BYTES,
        };
        // gRPC frames each message with 5 bytes.
        let request = request
            .map(|body| tonic::body::Body::new(http_body_util::Limited::new(body, limit + 5)));
        self.0.call(request)
    }
}

fn decode_request<T: DeserializeOwned>(payload: &[u8]) -> Result<T, Status> {
    postcard::from_bytes(payload)
        .map_err(|e| Status::invalid_argument(format!("undecodable Raft message: {e}")))
}

/// openraft trusts that an AppendEntries' entries follow `prev_log_id` one
/// index at a time (it only debug-asserts it); a message that decodes but
/// breaks that is refused here instead.
fn check_consecutive(rpc: &AppendEntriesRequest<TypeConfig>) -> Result<(), Status> {
    let first = rpc.prev_log_id.map_or(0, |id| id.index + 1);
    let mut last = rpc.prev_log_id;
    for (expected, entry) in (first..).zip(&rpc.entries) {
        let id = entry.log_id;
        if id.index != expected || last.is_some_and(|last| id.leader_id.term < last.leader_id.term)
        {
            return Err(Status::invalid_argument(format!(
                "entry {id} does not follow {last:?} in AppendEntries"
            )));
        }
        last = Some(id);
    }
    Ok(())
}

fn encode_reply<T: Serialize>(result: &T) -> Result<RaftReply, Status> {
    let payload = postcard::to_stdvec(result)
        .map_err(|e| Status::internal(format!("encode Raft reply: {e}")))?;
    Ok(RaftReply { payload })
}

/// Serves [`RaftService`] alone, plain, on `listener` until `shutdown` is
/// cancelled, then stops accepting and waits for the calls in progress to
/// finish. (A `roost node` serves it beside its other services.)
pub async fn serve(
    listener: TcpListener,
    replicas: Arc<Replicas>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Tls::plain()
        .server()?
        .add_service(
            RaftService::new(replicas)
                .closing_with(shutdown.clone())
                .into_server(),
        )
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
        .map_err(Error::Serve)
}

/// The client side: this node's [`Transport`] to its peers. One lazily
/// connected channel per peer address carries every shard's messages to
/// that peer (HTTP/2 multiplexing); a channel reconnects by itself after
/// its peer comes back.
#[derive(Default)]
pub struct GrpcTransport {
    channels: Mutex<HashMap<String, Peering>>,
    tls: Tls,
}

/// What this node holds for one peer address: the channel, and the batched
/// stream over it that carries AppendEntries and Vote.
#[derive(Clone)]
struct Peering {
    channel: Channel,
    stream: Arc<PeerStream>,
}

#[derive(Clone, Copy)]
enum Method {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl GrpcTransport {
    /// A transport over plain HTTP/2.
    pub fn new() -> GrpcTransport {
        GrpcTransport::default()
    }

    /// A transport whose channels use `tls` (plain or mutual TLS).
    pub fn with_tls(tls: Tls) -> GrpcTransport {
        GrpcTransport {
            channels: Mutex::default(),
            tls,
        }
    }

    /// The peer addresses this transport holds a channel to, sorted.
    pub fn peers(&self) -> Vec<String> {
        let channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let mut addrs: Vec<String> = channels.keys().cloned().collect();
        addrs.sort();
        addrs
    }

    /// The channel to `addr` (`host:port`, or a URI) and its stream,
    /// created on first use.
    fn peering(&self, addr: &str) -> Result<Peering, Error> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(peering) = channels.get(addr) {
            return Ok(peering.clone());
        }
        let channel = self
            .tls
            .endpoint(addr)?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .connect_lazy();
        let peering = Peering {
            stream: Arc::new(PeerStream::start(channel.clone())),
            channel,
        };
        channels.insert(addr.to_owned(), peering.clone());
        Ok(peering)
    }

    /// Sends one message and returns the peer's reply payload, within the
    /// call's hard deadline (also sent to the peer as the gRPC timeout).
    async fn call(
        &self,
        peer: &Peer,
        method: Method,
        payload: Vec<u8>,
        data: Vec<u8>,
        option: &RPCOption,
    ) -> Result<Vec<u8>, Error> {
        let peering = self.peering(&peer.node.addr)?;
        let ttl = option.hard_ttl();
        let request = RaftRequest {
            shard: u32::from(peer.shard),
            target: peer.id,
            payload,
            data,
        };
        // Small requests share the peer's batched stream; a large
        // AppendEntries goes as a call of its own, so that it cannot hold
        // other groups' heartbeats and votes behind it (`stream`).
        let small = request.payload.len() <= stream::MAX_REQUEST_BYTES;
        let streamed: Option<fn(RaftRequest) -> Body> = match method {
            Method::AppendEntries if small => Some(Body::AppendEntries),
            Method::Vote if small => Some(Body::Vote),
            Method::AppendEntries | Method::Vote | Method::InstallSnapshot => None,
        };
        if let Some(body) = streamed.filter(|_| !peering.stream.unsupported()) {
            // A peer without the stream (an older release) answers
            // UNIMPLEMENTED once; openraft retries, and the retry is unary.
            return match peering.stream.call(body(request), ttl).await {
                Err(_) => Err(Error::Timeout(ttl)),
                Ok(Ok(reply)) => Ok(reply.payload),
                Ok(Err(status)) => Err(Error::Status(Box::new(status))),
            };
        }
        let mut client = RaftClient::new(peering.channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let mut request = Request::new(request);
        request.set_timeout(ttl);
        let call = async {
            match method {
                Method::AppendEntries => client.append_entries(request).await,
                Method::Vote => client.vote(request).await,
                Method::InstallSnapshot => client.install_snapshot(request).await,
            }
        };
        match tokio::time::timeout(ttl, call).await {
            Err(_) => Err(Error::Timeout(ttl)),
            Ok(Err(status)) => Err(Error::Status(Box::new(status))),
            Ok(Ok(reply)) => Ok(reply.into_inner().payload),
        }
    }

    /// One round trip: the peer's answer, or its group's error as a
    /// `RemoteError`, or the transport's failure.
    async fn exchange<Resp, E>(
        &self,
        peer: &Peer,
        method: Method,
        payload: Vec<u8>,
        data: Vec<u8>,
        option: &RPCOption,
    ) -> Result<Resp, RpcError<E>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let reply = self
            .call(peer, method, payload, data, option)
            .await
            .map_err(transport_error)?;
        let result: Result<Resp, RaftError<NodeId, E>> =
            postcard::from_bytes(&reply).map_err(|source| {
                transport_error(Error::Codec {
                    what: "decode the peer's Raft reply",
                    source,
                })
            })?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(peer.id, peer.node.clone(), e))
        })
    }
}

fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, Error> {
    postcard::to_stdvec(value).map_err(|source| Error::Codec { what, source })
}

/// A failure to reach the peer's group. Failures that retrying at once
/// cannot fix (no connection, a peer without the shard or with another node
/// id at that address) are `Unreachable`, so openraft backs off; the rest
/// (timeouts, broken streams, undecodable replies) are `NetworkError`.
fn transport_error<E: std::error::Error>(e: Error) -> RpcError<E> {
    let backoff = match &e {
        Error::Status(status) => matches!(
            status.code(),
            Code::Unavailable | Code::NotFound | Code::FailedPrecondition
        ),
        Error::Address { .. }
        | Error::Endpoint { .. }
        | Error::TlsFile { .. }
        | Error::Tls { .. }
        | Error::Connect { .. } => true,
        Error::Serve(_) | Error::Codec { .. } | Error::Timeout(_) => false,
    };
    if backoff {
        RPCError::Unreachable(Unreachable::new(&e))
    } else {
        RPCError::Network(NetworkError::new(&e))
    }
}

impl Transport for GrpcTransport {
    async fn append_entries(
        &self,
        peer: &Peer,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        let entries = rpc.entries.len();
        let payload = encode("encode AppendEntries", &rpc).map_err(transport_error)?;
        if entries > 1 && payload.len() > APPEND_TARGET_BYTES {
            let fit = entries as u128 * APPEND_TARGET_BYTES as u128 / payload.len() as u128;
            let hint = u64::try_from(fit).unwrap_or(1).max(1);
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(hint),
            ));
        }
        self.exchange(peer, Method::AppendEntries, payload, Vec::new(), &option)
            .await
    }

    async fn vote(
        &self,
        peer: &Peer,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError> {
        let payload = encode("encode Vote", &rpc).map_err(transport_error)?;
        self.exchange(peer, Method::Vote, payload, Vec::new(), &option)
            .await
    }

    async fn ping(
        &self,
        me: NodeId,
        target: NodeId,
        node: &openraft::BasicNode,
        timeout: Duration,
    ) -> Result<Pong, String> {
        let channel = self.peering(&node.addr).map_err(|e| e.to_string())?.channel;
        let mut client = RaftClient::new(channel);
        let mut request = Request::new(PingRequest { from: me, target });
        request.set_timeout(timeout);
        match tokio::time::timeout(timeout, client.ping(request)).await {
            Err(_) => Err(format!("no answer within {timeout:?}")),
            Ok(Ok(reply)) => {
                let reply = reply.into_inner();
                Ok(if reply.quiesces {
                    Pong::Quiesced(reply.quiesced)
                } else {
                    Pong::Unsupported
                })
            }
            Ok(Err(status)) if status.code() == Code::Unimplemented => Ok(Pong::Unsupported),
            Ok(Err(status)) => Err(status.to_string()),
        }
    }

    async fn install_snapshot(
        &self,
        peer: &Peer,
        mut rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcError<InstallSnapshotError>> {
        // The chunk travels as protobuf bytes (one copy), not through postcard.
        let data = std::mem::take(&mut rpc.data);
        let payload = encode("encode InstallSnapshot", &rpc).map_err(transport_error)?;
        self.exchange(peer, Method::InstallSnapshot, payload, data, &option)
            .await
    }
}
