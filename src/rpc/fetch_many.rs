//! The server end of `Objects.FetchMany`: many `Fetch` calls over one
//! stream, each answered exactly as a unary `Fetch` would be.
//!
//! An edge sends every plain request for a node over one such stream
//! ([`super::mux`] is the client end), so a request costs a message in a
//! batch instead of an HTTP/2 stream of its own: no HEADERS and HPACK per
//! call, no stream set up and torn down, one `writev` for what is ready.
//!
//! Owns: reading batches, running their calls concurrently (at most
//! [`MAX_RUNNING`] at once, then the stream is not read until some finish:
//! backpressure reaches the caller through HTTP/2 flow control), and sending
//! back what has completed in batches. Shutdown: once the service closes
//! ([`super::objects::ObjectsService::close_sockets`]) nothing more is read;
//! the calls read so far are answered, and the stream ends with OK. So a
//! caller knows that a call without a result at an OK end was never
//! processed.

use std::collections::HashMap;
use std::time::Instant;

use futures_util::FutureExt as _;
use futures_util::stream::{FuturesUnordered, StreamExt as _};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{KeyAndValueRef, MetadataKey, MetadataMap, MetadataValue};
use tonic::{Code, Status, Streaming};
use tracing::Instrument as _;

use super::metered::code_name;
use super::objects::ObjectsService;
use super::pb::{self, fetch_result};
use crate::telemetry::{metrics, traces};

/// Most calls in one batch; a batch with more fails the stream.
pub const MAX_BATCH_CALLS: usize = 256;
/// Most calls of one stream running at once.
pub const MAX_RUNNING: usize = 1024;
/// A batch (of calls or of results) is sent once it holds this many bytes;
/// one message can only exceed it by its last item.
pub const BATCH_BYTES: usize = 1 << 20;
/// Result batches queued towards the caller.
const OUT_BUFFER: usize = 16;

/// A `CallStatus` from a status: its code, message and ASCII metadata.
pub(super) fn status_to_pb(status: &Status) -> pb::CallStatus {
    let mut metadata = HashMap::new();
    for entry in status.metadata().iter() {
        if let KeyAndValueRef::Ascii(key, value) = entry
            && let Ok(value) = value.to_str()
        {
            metadata.insert(key.as_str().to_owned(), value.to_owned());
        }
    }
    pb::CallStatus {
        code: status.code() as i32,
        message: status.message().to_owned(),
        metadata,
    }
}

/// The status a `CallStatus` stands for (entries that are not valid
/// metadata are dropped).
pub(super) fn status_from_pb(status: pb::CallStatus) -> Status {
    Status::with_metadata(
        Code::from_i32(status.code),
        status.message,
        metadata_from(status.metadata),
    )
}

fn metadata_from(entries: HashMap<String, String>) -> MetadataMap {
    let mut map = MetadataMap::new();
    for (key, value) in entries {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            map.insert(key, value);
        }
    }
    map
}

/// Serves one `FetchMany` stream on a task of its own; the returned stream
/// carries its results.
pub(super) fn serve(
    service: ObjectsService,
    inbound: Streaming<pb::FetchBatch>,
) -> ReceiverStream<Result<pb::FetchResults, Status>> {
    let (tx, rx) = mpsc::channel(OUT_BUFFER);
    tokio::spawn(async move {
        if let Err(status) = run(&service, inbound, &tx).await {
            let _ = tx.send(Err(status)).await;
        }
    });
    ReceiverStream::new(rx)
}

type Out = mpsc::Sender<Result<pb::FetchResults, Status>>;

async fn run(
    service: &ObjectsService,
    mut inbound: Streaming<pb::FetchBatch>,
    out: &Out,
) -> Result<(), Status> {
    let closing = service.closing();
    let mut handles = metrics::rpc_handles("roost.v1.Objects", "Fetch");
    let mut running = FuturesUnordered::new();
    let mut reading = true;
    loop {
        let room = running.len() + MAX_BATCH_CALLS <= MAX_RUNNING;
        tokio::select! {
            biased;
            () = closing.cancelled(), if reading => reading = false,
            Some(first) = running.next(), if !running.is_empty() => {
                let mut done = vec![first];
                while let Some(Some(more)) = running.next().now_or_never() {
                    done.push(more);
                }
                if !send(out, done, &mut handles).await {
                    // The caller is gone: its calls' results with it.
                    return Ok(());
                }
            }
            batch = inbound.message(), if reading && room => match batch? {
                Some(batch) => {
                    if batch.calls.len() > MAX_BATCH_CALLS {
                        return Err(Status::invalid_argument(format!(
                            "a FetchMany batch holds at most {MAX_BATCH_CALLS} calls, got {}",
                            batch.calls.len()
                        )));
                    }
                    for call in batch.calls {
                        running.push(one(service, call));
                    }
                }
                None => reading = false,
            },
            else => return Ok(()),
        }
        if !reading && running.is_empty() {
            return Ok(());
        }
    }
}

/// One finished call: its result, status code and time taken.
struct Done {
    result: pb::FetchResult,
    code: i32,
    started: Instant,
}

async fn one(service: &ObjectsService, call: pb::FetchCall) -> Done {
    let started = Instant::now();
    let metadata = metadata_from(call.trace_context);
    let span = traces::rpc_server_span("roost.v1.Objects", "Fetch", &metadata);
    let request = call.request.unwrap_or_default();
    let outcome = service.fetch_one(request).instrument(span).await;
    let (outcome, code) = match outcome {
        Ok(response) => (fetch_result::Outcome::Response(response), 0),
        Err(status) => (
            fetch_result::Outcome::Status(status_to_pb(&status)),
            status.code() as i32,
        ),
    };
    Done {
        result: pb::FetchResult {
            id: call.id,
            outcome: Some(outcome),
        },
        code,
        started,
    }
}

/// Sends `done` in batches of about [`BATCH_BYTES`], counting each call as
/// a served `Fetch`. False if the caller is gone.
async fn send(out: &Out, done: Vec<Done>, handles: &mut metrics::RpcHandles) -> bool {
    let mut batch = Vec::with_capacity(done.len());
    let mut bytes = 0;
    for d in done {
        handles.record(code_name(d.code), d.started.elapsed());
        let len = d.result.encoded_len();
        if !batch.is_empty() && bytes + len > BATCH_BYTES {
            let full = std::mem::take(&mut batch);
            if out
                .send(Ok(pb::FetchResults { results: full }))
                .await
                .is_err()
            {
                return false;
            }
            bytes = 0;
        }
        bytes += len;
        batch.push(d.result);
    }
    out.send(Ok(pb::FetchResults { results: batch }))
        .await
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_survives_the_trip_through_a_message() {
        let mut status = Status::failed_precondition("not the owner");
        status
            .metadata_mut()
            .insert("roost-shard", MetadataValue::from(7u32));
        status
            .metadata_mut()
            .insert("roost-error", MetadataValue::from_static("not_owner"));
        let back = status_from_pb(status_to_pb(&status));
        assert_eq!(back.code(), Code::FailedPrecondition);
        assert_eq!(back.message(), "not the owner");
        assert_eq!(
            back.metadata()
                .get("roost-shard")
                .and_then(|v| v.to_str().ok()),
            Some("7")
        );
        assert_eq!(
            back.metadata()
                .get("roost-error")
                .and_then(|v| v.to_str().ok()),
            Some("not_owner")
        );
    }

    #[test]
    fn metadata_that_is_not_valid_is_dropped() {
        let pb = pb::CallStatus {
            code: 99,
            message: "odd".into(),
            metadata: HashMap::from([
                ("Bad Key".to_owned(), "v".to_owned()),
                ("ok".to_owned(), "line\nbreak".to_owned()),
                ("roost-error".to_owned(), "overloaded".to_owned()),
            ]),
        };
        let status = status_from_pb(pb);
        assert_eq!(status.code(), Code::Unknown);
        assert_eq!(status.metadata().len(), 1);
    }
}
