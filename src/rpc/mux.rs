//! The client end of `Objects.FetchMany`: plain `Fetch` calls to one node
//! multiplexed over one long-lived stream (the server end is
//! [`super::fetch_many`]).
//!
//! Callers hand a call to the stream's task and wait for its answer. The
//! task writes every call that is waiting as one batch, and hands each
//! result to its caller by id. What a caller learns when the stream fails
//! is exact about whether its call could have run:
//! - the stream could not be opened: calls are written only once its
//!   response headers have arrived, so none was sent ([`Answer::NeverSent`]);
//! - the node ended the stream with OK: it answers every call it read
//!   before it ends, so a call left unanswered was never processed
//!   ([`Answer::NeverSent`]);
//! - any other end (a reset, a broken connection, keep-alive timing out on
//!   a paused or partitioned node): the call may have run
//!   ([`Answer::Unknown`]).
//!
//! A node that does not know `FetchMany` (an older version, during a
//! rolling upgrade) answers the stream UNIMPLEMENTED: its calls come back
//! as [`Answer::Unsupported`] for the caller to send as unary `Fetch`, and
//! for a while every call does so.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message as _;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

use super::fetch_many::{self, BATCH_BYTES, MAX_BATCH_CALLS};
use super::pb::objects_client::ObjectsClient;
use super::pb::{self, fetch_result};

/// Calls larger than this (encoded) go as unary `Fetch`: one large body
/// never delays the small calls batched behind it, and a call the node
/// refuses as too large fails alone.
pub const MAX_MUX_CALL_BYTES: usize = 256 * 1024;
/// Calls waiting to be written before callers wait.
const QUEUE: usize = 1024;
/// Batches queued towards the connection.
const OUT_BATCHES: usize = 8;
/// How long calls go unary after a node answered UNIMPLEMENTED.
const UNSUPPORTED_FOR: Duration = Duration::from_secs(30);
/// Room in an answer's batch besides the response itself.
const ENVELOPE_BYTES: usize = 64 * 1024;

/// How a call on the stream ended.
#[derive(Debug)]
pub enum Answer {
    /// The node's answer, as a unary `Fetch` would have had it.
    Done(Result<pb::FetchResponse, Status>),
    /// The call was certainly never processed.
    NeverSent(String),
    /// The stream failed after the call was written: it may have run.
    Unknown(String),
    /// The node does not serve `FetchMany`: send the call as unary `Fetch`.
    Unsupported(pb::FetchCall),
}

/// One node's `FetchMany` stream, opened on first use and again after it
/// ends. Cheap to share (behind the client's `Arc`).
pub struct FetchMux {
    channel: Channel,
    max_response_bytes: usize,
    session: Mutex<Option<mpsc::Sender<Pending>>>,
    /// Until when calls go unary (the node answered UNIMPLEMENTED).
    unsupported_until: Arc<Mutex<Option<Instant>>>,
}

struct Pending {
    call: pb::FetchCall,
    reply: oneshot::Sender<Answer>,
}

impl FetchMux {
    pub fn new(channel: Channel, max_response_bytes: usize) -> FetchMux {
        FetchMux {
            channel,
            max_response_bytes,
            session: Mutex::new(None),
            unsupported_until: Arc::new(Mutex::new(None)),
        }
    }

    /// Whether calls should go over the stream now (else as unary `Fetch`).
    pub fn usable(&self) -> bool {
        let until = lock(&self.unsupported_until);
        until.is_none_or(|t| Instant::now() >= t)
    }

    /// Runs `call` over the stream (its `id` is chosen here).
    pub async fn fetch(&self, call: pb::FetchCall) -> Answer {
        let (reply, answer) = oneshot::channel();
        let mut pending = Pending { call, reply };
        // A session that has ended refuses the call back: open another once.
        for _ in 0..2 {
            let session = self.session();
            match session.send(pending).await {
                Ok(()) => {
                    return answer.await.unwrap_or_else(|_| {
                        Answer::Unknown("the FetchMany stream's task ended".into())
                    });
                }
                Err(mpsc::error::SendError(back)) => {
                    self.forget(&session);
                    pending = back;
                }
            }
        }
        Answer::NeverSent("no FetchMany stream could take the call".into())
    }

    /// The sender of the live session, starting one if there is none.
    fn session(&self) -> mpsc::Sender<Pending> {
        let mut session = lock(&self.session);
        if let Some(tx) = session.as_ref().filter(|tx| !tx.is_closed()) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let client = ObjectsClient::new(self.channel.clone()).max_decoding_message_size(
            self.max_response_bytes
                .saturating_add(BATCH_BYTES)
                .saturating_add(ENVELOPE_BYTES),
        );
        let session_task = Session {
            rx,
            client,
            unsupported_until: self.unsupported_until.clone(),
        };
        tokio::spawn(session_task.run());
        *session = Some(tx.clone());
        tx
    }

    fn forget(&self, dead: &mpsc::Sender<Pending>) {
        let mut session = lock(&self.session);
        if session.as_ref().is_some_and(|tx| tx.same_channel(dead)) {
            *session = None;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The task that owns one stream.
struct Session {
    rx: mpsc::Receiver<Pending>,
    client: ObjectsClient<Channel>,
    unsupported_until: Arc<Mutex<Option<Instant>>>,
}

impl Session {
    async fn run(mut self) {
        let (out, out_rx) = mpsc::channel(OUT_BATCHES);
        // Nothing is written to the stream before its response headers are
        // in: a stream that fails to open sent no call.
        let inbound = match self.client.fetch_many(ReceiverStream::new(out_rx)).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                if status.code() == Code::Unimplemented {
                    *lock(&self.unsupported_until) = Some(Instant::now() + UNSUPPORTED_FOR);
                    self.rx.close();
                    while let Some(p) = self.rx.recv().await {
                        let _ = p.reply.send(Answer::Unsupported(p.call));
                    }
                } else {
                    self.refuse_waiting(&format!("open the FetchMany stream: {status}"))
                        .await;
                }
                return;
            }
        };
        let mut waiting = HashMap::new();
        let why = self.pump(out, inbound, &mut waiting).await;
        match why {
            End::Clean => {
                for (_, reply) in waiting.drain() {
                    let _ = reply.send(Answer::NeverSent(
                        "the node ended the FetchMany stream before reading the call".into(),
                    ));
                }
            }
            End::Failed(status) => {
                let message = format!("the FetchMany stream failed: {status}");
                for (_, reply) in waiting.drain() {
                    let _ = reply.send(Answer::Unknown(message.clone()));
                }
            }
            End::Unused => {}
        }
        self.refuse_waiting("the FetchMany stream ended").await;
    }

    /// Answers every call not yet taken from the queue: never sent.
    async fn refuse_waiting(&mut self, why: &str) {
        self.rx.close();
        while let Some(p) = self.rx.recv().await {
            let _ = p.reply.send(Answer::NeverSent(why.to_owned()));
        }
    }

    /// Writes calls and hands out results until the stream ends.
    async fn pump(
        &mut self,
        out: mpsc::Sender<pb::FetchBatch>,
        mut inbound: Streaming<pb::FetchResults>,
        waiting: &mut HashMap<u64, oneshot::Sender<Answer>>,
    ) -> End {
        let mut out = Some(out);
        let mut next_id = 0u64;
        let mut taken = Vec::with_capacity(MAX_BATCH_CALLS);
        loop {
            tokio::select! {
                biased;
                results = inbound.message() => match results {
                    Ok(Some(results)) => {
                        for result in results.results {
                            if let Some(reply) = waiting.remove(&result.id) {
                                let _ = reply.send(answer_of(result.outcome));
                            }
                        }
                    }
                    Ok(None) => return End::Clean,
                    Err(status) => return End::Failed(status),
                },
                n = self.rx.recv_many(&mut taken, MAX_BATCH_CALLS), if out.is_some() => {
                    if n == 0 {
                        // Every caller is gone: end our side, and wait for the
                        // answers still owed (there is nobody to hand them to
                        // but the node should see the calls out).
                        out = None;
                        if waiting.is_empty() {
                            return End::Unused;
                        }
                        continue;
                    }
                    let Some(tx) = out.as_ref() else { continue };
                    for batch in batches(&mut taken, &mut next_id, waiting) {
                        if tx.send(batch.calls).await.is_err() {
                            // The request side is closed: the stream has
                            // ended; its end (read next) says how.
                            for id in batch.ids {
                                if let Some(reply) = waiting.remove(&id) {
                                    let _ = reply.send(Answer::NeverSent(
                                        "the FetchMany stream closed before the call was written"
                                            .into(),
                                    ));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

enum End {
    /// The node ended the stream with OK.
    Clean,
    /// The stream failed.
    Failed(Status),
    /// Every caller went away with nothing in flight.
    Unused,
}

struct Batch {
    calls: pb::FetchBatch,
    ids: Vec<u64>,
}

/// Numbers the taken calls, registers their replies, and splits them into
/// batches of at most [`BATCH_BYTES`] past their first call.
fn batches(
    taken: &mut Vec<Pending>,
    next_id: &mut u64,
    waiting: &mut HashMap<u64, oneshot::Sender<Answer>>,
) -> Vec<Batch> {
    let mut out = Vec::new();
    let mut current = Batch {
        calls: pb::FetchBatch { calls: Vec::new() },
        ids: Vec::new(),
    };
    let mut bytes = 0;
    for Pending { mut call, reply } in taken.drain(..) {
        if reply.is_closed() {
            continue; // its caller gave up before it was written
        }
        *next_id += 1;
        call.id = *next_id;
        let len = call.encoded_len();
        if !current.ids.is_empty() && bytes + len > BATCH_BYTES {
            out.push(std::mem::replace(
                &mut current,
                Batch {
                    calls: pb::FetchBatch { calls: Vec::new() },
                    ids: Vec::new(),
                },
            ));
            bytes = 0;
        }
        bytes += len;
        waiting.insert(call.id, reply);
        current.ids.push(call.id);
        current.calls.calls.push(call);
    }
    if !current.ids.is_empty() {
        out.push(current);
    }
    out
}

fn answer_of(outcome: Option<fetch_result::Outcome>) -> Answer {
    match outcome {
        Some(fetch_result::Outcome::Response(response)) => Answer::Done(Ok(response)),
        Some(fetch_result::Outcome::Status(status)) => {
            Answer::Done(Err(fetch_many::status_from_pb(status)))
        }
        None => Answer::Done(Err(Status::internal(
            "a FetchMany result without an outcome",
        ))),
    }
}
