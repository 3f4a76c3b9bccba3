//! Every shard's AppendEntries and Vote to one peer on one long-lived,
//! batched `Raft.Stream` call (the per-peer batching of multi-Raft: TiKV's
//! batched Raft messages, CockroachDB's per-node-pair streams), below
//! openraft's per-group network trait.
//!
//! Only small requests travel here: heartbeats, votes and AppendEntries of
//! up to [`MAX_REQUEST_BYTES`]. A larger AppendEntries goes as a unary call
//! of its own (`GrpcTransport::call`): on one HTTP/2 stream every byte
//! waits for the bytes before it, and the receiver decodes a message only
//! once all of it has arrived, so a few MiB of one group's entries would
//! hold every other group's heartbeats and votes to that peer behind them —
//! while on a call of its own HTTP/2 interleaves its frames with the
//! stream's, and cancels it when openraft gives up on it.
//!
//! The sending side ([`PeerStream`]) queues each request with an id and
//! writes what is queued in one message, of at most [`MAX_BATCH_BYTES`],
//! whenever the stream can take one: under load, requests that arrive
//! while a write is in progress go out together in the next; at low load a
//! request goes out at once (no linger). Each group has at most a few
//! requests to a peer at a time (openraft sends one AppendEntries at a
//! time per follower), so the queue is first come, first served. A request
//! whose caller has given up by the time it would be written is not sent,
//! and each goes with the time its caller has left, not the time it had
//! when queued. Answers come back as the peer's groups give them, in any order,
//! and complete their callers by id. The receiving side ([`serve`]) hands
//! each request to [`RaftService`] — the same checks and limits as the
//! unary calls — concurrently, up to [`MAX_IN_FLIGHT`] per stream, and
//! batches the answers that are ready together.
//!
//! A stream that breaks fails the requests on it as unavailable (openraft
//! backs off and retries, as after a broken unary call); the next request
//! opens a new one. A peer that answers `UNIMPLEMENTED` (an older release)
//! is reached with the unary calls instead.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

use super::{MAX_MESSAGE_BYTES, RaftService};
use crate::rpc::pb::raft_client::RaftClient;
use crate::rpc::pb::raft_frame::Body;
use crate::rpc::pb::{RaftBatch, RaftFrame, RaftReply, RaftStatus};

/// Requests of one stream a node works on at once; more wait to be read.
pub const MAX_IN_FLIGHT: usize = 1024;
/// The largest request sent on the stream (its `RaftRequest` payload);
/// a larger AppendEntries goes as a unary call of its own. A heartbeat or
/// a vote is well under 1 KiB.
pub const MAX_REQUEST_BYTES: usize = 64 << 10;
/// Frames in one message, either way.
const MAX_BATCH_FRAMES: usize = 256;
/// Encoded bytes of requests gathered into one message: a few of the
/// largest, so a message is written (and can be decoded) soon after it is
/// begun, within the initial HTTP/2 window of an adaptive-window channel
/// (64 KiB) times a few.
const MAX_BATCH_BYTES: usize = 256 << 10;
/// Requests queued for a stream that cannot take them yet; callers wait
/// (within their deadlines) beyond this.
const MAX_QUEUED: usize = 4096;
/// Messages handed to the HTTP/2 stream ahead of the one being written.
/// Small, so that requests gather into batches while a write is under way.
const OUT_MESSAGES: usize = 2;
/// How long opening a stream may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(2);
/// Requests waiting for an answer beyond which those whose callers gave up
/// are forgotten.
const PRUNE_AT: usize = 4096;
/// The longest a node works on one request of a stream (and the wait of a
/// request that names none): a request its sender gave up on must not hold
/// one of the stream's [`MAX_IN_FLIGHT`] places for long, or a group that
/// stalls would stall every group behind it on the stream.
const MAX_REQUEST_TIME: Duration = Duration::from_secs(10);
/// A stream with requests waiting that has had no answer for this long is
/// taken for stuck (the peer answers every request within
/// [`MAX_REQUEST_TIME`], if only to say its deadline passed) and replaced.
const STUCK_AFTER: Duration = Duration::from_secs(15);

/// The answers of one stream, as the server sends them.
pub type Answers = Pin<Box<dyn Stream<Item = Result<RaftBatch, Status>> + Send>>;

/// The server side of one stream: answers each request of `incoming`
/// until the peer ends it or `closing` (this node stops serving).
pub(super) fn serve(
    service: RaftService,
    mut incoming: Streaming<RaftBatch>,
    closing: CancellationToken,
) -> Answers {
    let (tx, rx) = mpsc::channel::<RaftFrame>(MAX_IN_FLIGHT);
    let limit = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let reading = closing.clone();
    tokio::spawn(async move {
        loop {
            let batch = tokio::select! {
                _ = reading.cancelled() => return,
                batch = incoming.next() => match batch {
                    Some(Ok(batch)) => batch,
                    _ => return,
                },
            };
            for frame in batch.frames {
                let Ok(permit) = limit.clone().acquire_owned().await else {
                    return;
                };
                let (service, tx) = (service.clone(), tx.clone());
                tokio::spawn(async move {
                    let answer = answer(&service, frame).await;
                    let _ = tx.send(answer).await;
                    drop(permit);
                });
            }
        }
    });
    let answers = futures_util::stream::unfold(rx, |mut rx| async move {
        let first = rx.recv().await?;
        let mut frames = vec![first];
        while frames.len() < MAX_BATCH_FRAMES {
            match rx.try_recv() {
                Ok(frame) => frames.push(frame),
                Err(_) => break,
            }
        }
        Some((Ok(RaftBatch { frames }), rx))
    });
    Box::pin(answers.take_until(closing.cancelled_owned()))
}

/// The answer to one request frame, within its deadline.
async fn answer(service: &RaftService, frame: RaftFrame) -> RaftFrame {
    let deadline = match frame.timeout_ms {
        0 => MAX_REQUEST_TIME,
        ms => Duration::from_millis(u64::from(ms)).min(MAX_REQUEST_TIME),
    };
    let work = async {
        match frame.body {
            Some(Body::AppendEntries(request)) => service.answer_append(request).await,
            Some(Body::Vote(request)) => service.answer_vote(request).await,
            _ => Err(Status::invalid_argument(
                "a Raft stream frame that is not a request",
            )),
        }
    };
    let result = tokio::time::timeout(deadline, work)
        .await
        .unwrap_or_else(|_| Err(Status::deadline_exceeded("the request's deadline passed")));
    RaftFrame {
        id: frame.id,
        timeout_ms: 0,
        body: Some(match result {
            Ok(reply) => Body::Reply(reply),
            Err(status) => Body::Status(RaftStatus {
                code: status.code() as i32,
                message: status.message().to_owned(),
            }),
        }),
    }
}

/// A request's answer, as the sending side hands it to its caller.
type Answer = Result<RaftReply, Status>;

struct Call {
    body: Body,
    /// When the caller stops waiting.
    deadline: Instant,
    answer: oneshot::Sender<Answer>,
}

/// This node's stream to one peer, shared by every shard's group.
pub struct PeerStream {
    calls: mpsc::Sender<Call>,
    unsupported: Arc<AtomicBool>,
}

impl PeerStream {
    /// Starts the stream's task over `channel` (the stream itself opens
    /// with the first request, and again after it breaks).
    pub fn start(channel: Channel) -> PeerStream {
        let (calls, queue) = mpsc::channel(MAX_QUEUED);
        let unsupported = Arc::new(AtomicBool::new(false));
        let client = RaftClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        tokio::spawn(run(client, queue, unsupported.clone()));
        PeerStream { calls, unsupported }
    }

    /// Whether the peer does not know `Raft.Stream` (use the unary calls).
    pub fn unsupported(&self) -> bool {
        self.unsupported.load(Ordering::Relaxed)
    }

    /// Sends `body` (a request) and waits for its answer, up to `ttl`
    /// (which the peer is told, and keeps to).
    pub async fn call(
        &self,
        body: Body,
        ttl: Duration,
    ) -> Result<Answer, tokio::time::error::Elapsed> {
        let deadline = Instant::now() + ttl;
        tokio::time::timeout_at(deadline, async {
            let (answer, answered) = oneshot::channel();
            self.calls
                .send(Call {
                    body,
                    deadline,
                    answer,
                })
                .await
                .map_err(|_| Status::unavailable("the Raft stream's task has stopped"))?;
            answered
                .await
                .map_err(|_| Status::unavailable("the Raft stream ended"))?
        })
        .await
    }
}

/// Requests queued or sent on the current stream, and their callers.
#[derive(Default)]
struct Flight {
    next_id: u64,
    /// Requests not yet written, with their callers' deadlines.
    queued: VecDeque<(RaftFrame, Instant)>,
    waiting: HashMap<u64, oneshot::Sender<Answer>>,
}

impl Flight {
    fn push(&mut self, call: Call) {
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        if self.waiting.len() >= PRUNE_AT {
            self.waiting.retain(|_, caller| !caller.is_closed());
        }
        self.waiting.insert(id, call.answer);
        let frame = RaftFrame {
            id,
            timeout_ms: 0,
            body: Some(call.body),
        };
        self.queued.push_back((frame, call.deadline));
    }

    /// Whether a request is waiting to be written.
    fn has_queued(&self) -> bool {
        !self.queued.is_empty()
    }

    /// The next message at `now`: queued requests up to the batch limits,
    /// each with the time its caller has left. Requests whose callers have
    /// given up or whose deadline has passed are dropped, not sent (the
    /// latter answered DEADLINE_EXCEEDED). Empty when nothing is left.
    fn batch(&mut self, now: Instant) -> RaftBatch {
        let mut frames = Vec::new();
        let mut bytes = 0;
        while let Some((frame, deadline)) = self.queued.front() {
            let gone = self
                .waiting
                .get(&frame.id)
                .is_none_or(oneshot::Sender::is_closed);
            let left = deadline.saturating_duration_since(now);
            if gone || left.is_zero() {
                let id = frame.id;
                self.queued.pop_front();
                if let Some(caller) = self.waiting.remove(&id) {
                    let _ = caller.send(Err(Status::deadline_exceeded(
                        "the request's deadline passed before it was sent",
                    )));
                }
                continue;
            }
            let size = prost::Message::encoded_len(frame);
            if !frames.is_empty()
                && (frames.len() >= MAX_BATCH_FRAMES || bytes + size > MAX_BATCH_BYTES)
            {
                break;
            }
            bytes += size;
            if let Some((mut frame, _)) = self.queued.pop_front() {
                // At least 1: 0 would mean "no deadline" to the peer.
                frame.timeout_ms = u32::try_from(left.as_millis()).unwrap_or(u32::MAX).max(1);
                frames.push(frame);
            }
        }
        RaftBatch { frames }
    }

    fn answer(&mut self, frame: RaftFrame) {
        let Some(caller) = self.waiting.remove(&frame.id) else {
            return;
        };
        let answer = match frame.body {
            Some(Body::Reply(reply)) => Ok(reply),
            Some(Body::Status(status)) => Err(Status::new(Code::from(status.code), status.message)),
            _ => Err(Status::internal(
                "the peer answered a Raft request with a request",
            )),
        };
        let _ = caller.send(answer);
    }

    /// Fails every request queued or sent with `status`.
    fn fail(&mut self, status: &Status) {
        self.queued.clear();
        for (_, caller) in self.waiting.drain() {
            let _ = caller.send(Err(Status::new(status.code(), status.message())));
        }
    }
}

/// The stream's task: opens a stream when there is something to send,
/// runs it until it breaks, and again, until the transport is dropped.
async fn run(
    client: RaftClient<Channel>,
    mut calls: mpsc::Receiver<Call>,
    unsupported: Arc<AtomicBool>,
) {
    let mut flight = Flight::default();
    while let Some(first) = calls.recv().await {
        flight.push(first);
        let (out, out_rx) = mpsc::channel::<RaftBatch>(OUT_MESSAGES);
        // Handed over before the call is made: it completes when the peer's
        // response headers arrive, which may wait for a first message.
        let first = flight.batch(Instant::now());
        if first.frames.is_empty() {
            continue;
        }
        let _ = out.try_send(first);
        let opened = tokio::time::timeout(
            OPEN_TIMEOUT,
            client.clone().stream(ReceiverStream::new(out_rx)),
        )
        .await;
        let mut answers = match opened {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                if status.code() == Code::Unimplemented {
                    unsupported.store(true, Ordering::Relaxed);
                }
                flight.fail(&status);
                continue;
            }
            Err(_) => {
                flight.fail(&Status::unavailable("opening the Raft stream timed out"));
                continue;
            }
        };
        let mut heard = tokio::time::Instant::now();
        let mut check = tokio::time::interval(STUCK_AFTER / 3);
        let ended = loop {
            tokio::select! {
                answer = answers.next() => match answer {
                    Some(Ok(batch)) => {
                        heard = tokio::time::Instant::now();
                        batch.frames.into_iter().for_each(|f| flight.answer(f));
                    }
                    Some(Err(status)) => break status,
                    None => break Status::unavailable("the peer ended the Raft stream"),
                },
                permit = out.reserve(), if flight.has_queued() => match permit {
                    Ok(permit) => {
                        let batch = flight.batch(Instant::now());
                        if !batch.frames.is_empty() {
                            permit.send(batch);
                        }
                    }
                    Err(_) => break Status::unavailable("the Raft stream closed"),
                },
                _ = check.tick() => {
                    if flight.waiting.is_empty() {
                        heard = tokio::time::Instant::now();
                    } else if heard.elapsed() > STUCK_AFTER {
                        break Status::unavailable("no answer on the Raft stream: replacing it");
                    }
                }
                call = calls.recv(), if flight.queued.len() < MAX_QUEUED => match call {
                    Some(call) => {
                        flight.push(call);
                        while flight.queued.len() < MAX_QUEUED {
                            match calls.try_recv() {
                                Ok(call) => flight.push(call),
                                Err(_) => break,
                            }
                        }
                    }
                    None => return,
                },
            }
        };
        tracing::debug!(status = %ended, "Raft stream ended");
        flight.fail(&ended);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request of `bytes` payload bytes whose caller waits until `deadline`.
    fn sized_call(n: u8, bytes: usize, deadline: Instant) -> (Call, oneshot::Receiver<Answer>) {
        let (answer, answered) = oneshot::channel();
        let body = Body::Vote(crate::rpc::pb::RaftRequest {
            shard: u32::from(n),
            target: 1,
            payload: vec![n; bytes],
            data: Vec::new(),
        });
        (
            Call {
                body,
                deadline,
                answer,
            },
            answered,
        )
    }

    fn call(n: u8) -> (Call, oneshot::Receiver<Answer>) {
        sized_call(n, 10, Instant::now() + Duration::from_secs(60))
    }

    #[tokio::test]
    async fn answers_reach_their_callers_in_any_order() {
        let mut flight = Flight::default();
        let (a, a_answered) = call(1);
        let (b, b_answered) = call(2);
        flight.push(a);
        flight.push(b);
        let batch = flight.batch(Instant::now());
        assert_eq!(
            batch.frames.len(),
            2,
            "both queued requests go in one message"
        );
        assert!(flight.queued.is_empty());
        let (ida, idb) = (batch.frames[0].id, batch.frames[1].id);
        assert_ne!(ida, idb);
        flight.answer(RaftFrame {
            id: idb,
            timeout_ms: 0,
            body: Some(Body::Status(RaftStatus {
                code: Code::NotFound as i32,
                message: "no shard".into(),
            })),
        });
        flight.answer(RaftFrame {
            id: ida,
            timeout_ms: 0,
            body: Some(Body::Reply(RaftReply { payload: vec![7] })),
        });
        let a = a_answered.await.expect("answered");
        assert_eq!(a.expect("a reply").payload, vec![7]);
        let b = b_answered.await.expect("answered");
        assert_eq!(b.expect_err("a status").code(), Code::NotFound);
        // An answer for no request in flight is ignored.
        flight.answer(RaftFrame {
            id: ida,
            timeout_ms: 0,
            body: None,
        });
    }

    #[tokio::test]
    async fn a_broken_stream_fails_everything_on_it() {
        let mut flight = Flight::default();
        let (a, a_answered) = call(1);
        let (b, b_answered) = call(2);
        flight.push(a);
        let _sent = flight.batch(Instant::now());
        flight.push(b);
        flight.fail(&Status::unavailable("gone"));
        for answered in [a_answered, b_answered] {
            let err = answered.await.expect("answered").expect_err("failed");
            assert_eq!(err.code(), Code::Unavailable);
        }
        assert!(flight.waiting.is_empty() && flight.queued.is_empty());
    }

    #[test]
    fn a_message_holds_at_most_the_batch_limits() {
        let mut flight = Flight::default();
        let mut answered = Vec::new();
        for n in 0..(MAX_BATCH_FRAMES + 10) {
            let (c, rx) = call((n % 250) as u8);
            flight.push(c);
            answered.push(rx);
        }
        assert_eq!(flight.batch(Instant::now()).frames.len(), MAX_BATCH_FRAMES);
        assert_eq!(flight.batch(Instant::now()).frames.len(), 10);
        assert!(flight.batch(Instant::now()).frames.is_empty());
    }

    #[test]
    fn a_message_holds_at_most_the_batch_bytes() {
        let mut flight = Flight::default();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut answered = Vec::new();
        for n in 0..10 {
            let (c, rx) = sized_call(n, MAX_REQUEST_BYTES, deadline);
            flight.push(c);
            answered.push(rx);
        }
        let mut sent = 0;
        while flight.has_queued() {
            let batch = flight.batch(Instant::now());
            let bytes = prost::Message::encoded_len(&batch);
            assert!(bytes <= MAX_BATCH_BYTES + 64, "a message of {bytes} bytes");
            assert!(!batch.frames.is_empty());
            sent += batch.frames.len();
        }
        assert_eq!(sent, 10, "every request goes, a few per message");
    }

    #[tokio::test]
    async fn a_request_whose_caller_gave_up_is_not_sent() {
        let mut flight = Flight::default();
        let (a, a_answered) = call(1);
        let (b, b_answered) = call(2);
        flight.push(a);
        flight.push(b);
        drop(a_answered);
        let batch = flight.batch(Instant::now());
        assert_eq!(batch.frames.len(), 1, "only the request still awaited");
        assert_eq!(batch.frames[0].body, Some(call(2).0.body));
        assert_eq!(flight.waiting.len(), 1, "the other is forgotten");
        drop(b_answered);
        assert!(flight.batch(Instant::now()).frames.is_empty());
    }

    #[tokio::test]
    async fn a_request_goes_with_the_time_its_caller_has_left() {
        let mut flight = Flight::default();
        let queued_at = Instant::now();
        let (late, late_answered) = sized_call(1, 10, queued_at + Duration::from_millis(100));
        let (fresh, _fresh_answered) = sized_call(2, 10, queued_at + Duration::from_millis(500));
        flight.push(late);
        flight.push(fresh);

        // Written 300 ms after it was queued: the first request's caller
        // has stopped waiting, the second has 200 ms left.
        let batch = flight.batch(queued_at + Duration::from_millis(300));
        assert_eq!(batch.frames.len(), 1);
        assert_eq!(batch.frames[0].timeout_ms, 200);
        let err = late_answered
            .await
            .expect("answered")
            .expect_err("not sent");
        assert_eq!(err.code(), Code::DeadlineExceeded);
    }
}
