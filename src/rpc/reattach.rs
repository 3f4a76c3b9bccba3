//! A bridged socket that follows its object to a new owner.
//!
//! The caller's end of a `Socket` stream opened with
//! [`REATTACH_HEADER`](super::objects::REATTACH_HEADER): it keeps the
//! socket's state as the owner committed it (tags at accept, every
//! attachment change, in order with the messages), and when the owner lets
//! the socket go (`moved`: the shard moved, or the node shuts down) or the
//! stream breaks (the node died), it keeps the client's socket open, finds
//! the new owner (through a [`Reattacher`], the router's), re-registers the
//! socket there with `reattach`, and sends on what the old owner did not
//! handle and what the client sent meanwhile ([`replay`]).
//!
//! Owns: one socket's stream and its re-attaching. Never: decides which
//! node owns an object (the reattacher does), or tells the object anything
//! about a move (it sees neither a close nor an open).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use tonic::Streaming;

use super::convert;
use super::pb::{self, socket_down, socket_up};
use super::remote::UpMsg;
use crate::id::ObjectKey;
use crate::object::{self, FrameSender, Registration, ServerFrame, SocketId, StableId};

pub mod replay;
pub use replay::Bounds;
use replay::Replay;

/// How a re-attaching socket waits for a new owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReattachOptions {
    /// Client messages held while the socket has no owner (with those sent
    /// to the old owner and not known handled); more close it with 1013.
    pub buffer: Bounds,
    /// How long the socket may have no owner before it is closed with 1012.
    pub timeout: Duration,
}

impl Default for ReattachOptions {
    fn default() -> Self {
        ReattachOptions {
            buffer: Bounds {
                frames: 1024,
                bytes: 1 << 20,
            },
            timeout: Duration::from_secs(30),
        }
    }
}

/// A socket's stream to the node that owns it now.
pub struct Attached {
    /// The socket's id on that node.
    pub(super) socket: SocketId,
    pub(super) up: mpsc::Sender<UpMsg>,
    pub(super) down: Streaming<pb::SocketDown>,
}

impl std::fmt::Debug for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attached")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

/// Re-registers a socket (object, registration id, tags and committed
/// attachment, and the highest frame number passed on to its client when
/// it wants the kept frames after it) with its object's owner, wherever
/// that is now.
pub type Attach = Arc<
    dyn Fn(
            ObjectKey,
            Option<StableId>,
            Registration,
            Option<u64>,
        ) -> BoxFuture<'static, Result<Attached, object::Error>>
        + Send
        + Sync,
>;

/// How the sockets of one edge find their objects' new owners. Cheap to
/// clone.
#[derive(Clone)]
pub struct Reattacher {
    attach: Attach,
    moving: Moving,
}

impl Reattacher {
    /// Re-attaches with `attach`; sockets of the same object that move
    /// together wait for each other through `moving` (share one per edge).
    pub fn new(attach: Attach, moving: Moving) -> Reattacher {
        Reattacher { attach, moving }
    }
}

/// How long a re-attached socket waits for the other sockets of its object
/// that moved with it before it sends what it held.
const SETTLE: Duration = Duration::from_secs(1);

/// The sockets between owners, per object, at one edge. A socket that found
/// its new owner waits (up to [`SETTLE`]) until its object's other moving
/// sockets have too before it sends on what its client sent meanwhile, so
/// that the broadcasts those messages cause (a chat room's) reach them.
/// Cheap to clone.
#[derive(Clone, Default)]
pub struct Moving(Arc<MovingState>);

#[derive(Default)]
struct MovingState {
    count: std::sync::Mutex<std::collections::HashMap<ObjectKey, usize>>,
    settled: tokio::sync::Notify,
}

/// One socket between owners; dropping it counts it arrived (or gone).
struct InTransit {
    moving: Moving,
    key: ObjectKey,
}

impl Moving {
    fn counts(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<ObjectKey, usize>> {
        self.0.count.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn leave(&self, key: &ObjectKey) -> InTransit {
        *self.counts().entry(key.clone()).or_default() += 1;
        InTransit {
            moving: self.clone(),
            key: key.clone(),
        }
    }

    /// Waits until no socket of `key` is between owners, or `timeout`.
    async fn settled(&self, key: &ObjectKey, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.0.settled.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if !self.counts().contains_key(key) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }
}

impl Drop for InTransit {
    fn drop(&mut self) {
        let mut counts = self.moving.counts();
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
        drop(counts);
        self.moving.0.settled.notify_waiters();
    }
}

/// The longest pause between attempts to re-attach.
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// One socket: what the edge sends arrives on `from_edge`; what the owner
/// releases goes to `frames`. Ends when the socket closes either way, or
/// cannot be re-attached.
pub(super) struct Follow {
    pub key: ObjectKey,
    /// The socket's registration id (`None` from an older node).
    pub stable: Option<StableId>,
    pub tags: Vec<String>,
    pub attachment: Option<Bytes>,
    pub from_edge: mpsc::Receiver<UpMsg>,
    pub frames: FrameSender,
    pub reattacher: Reattacher,
    pub opts: ReattachOptions,
    /// The highest frame number passed on to the client: a frame numbered
    /// at or below it (re-sent by a new owner) is dropped.
    pub delivered: u64,
}

/// How the attached phase ended.
enum Detach {
    /// The owner let the socket go, having handled this many messages.
    Moved(Option<u64>),
    /// The socket is closed (either way) or dropped; nothing to follow.
    Done,
}

impl Follow {
    /// Runs the socket from its first owner on.
    pub async fn run(mut self, mut current: Attached) {
        let mut replay = Replay::new(self.opts.buffer);
        loop {
            let handled = match self.attached(&mut current, &mut replay).await {
                Detach::Done => {
                    // The up-stream ends after what was queued (a close,
                    // or 1006 for the object), then the down-stream does.
                    drop(current.up);
                    Box::pin(drain(current.down)).await;
                    return;
                }
                Detach::Moved(handled) => handled,
            };
            replay.detached(handled);
            tracing::debug!(object = %self.key, stable = ?self.stable, ?handled, "socket's owner changed; re-attaching");
            let in_transit = self.reattacher.moving.leave(&self.key);
            // Kept frames the client missed are asked for only when no
            // client message is sent again: the old owner told how many it
            // handled only when it let the socket go in order, and then it
            // released all it had. (A message whose commit it could not
            // know when it let go runs again on the new owner; asking for
            // the kept frames too would show both runs.)
            let delivered = handled.is_none().then_some(self.delivered);
            // Boxed, as is the wait below: an idle socket's task then
            // holds only the attached state's future.
            let Some(next) = Box::pin(self.reattach(&mut replay, delivered)).await else {
                return;
            };
            drop(in_transit);
            tracing::debug!(
                object = %self.key,
                stable = ?self.stable,
                socket = next.socket,
                resend = replay.pending_len(),
                "socket re-attached"
            );
            current = next;
            Box::pin(self.reattacher.moving.settled(&self.key, SETTLE)).await;
            for msg in replay.take_pending() {
                let up = Box::new(pb::SocketUp {
                    kind: Some(socket_up::Kind::Message(convert::message_to_pb(
                        msg.clone(),
                        0,
                    ))),
                });
                replay.sent(msg);
                // A broken stream shows on its down side next.
                let _ = current.up.send(up).await;
            }
        }
    }

    /// Bridges the socket with its current owner until it moves or ends.
    async fn attached(&mut self, current: &mut Attached, replay: &mut Replay) -> Detach {
        loop {
            tokio::select! {
                // The edge queues a client's close before it lets the
                // socket go: take it first.
                biased;
                up = self.from_edge.recv() => {
                    let Some(up) = up else {
                        return Detach::Done;
                    };
                    let last = matches!(up.kind, Some(socket_up::Kind::Close(_)));
                    if let Some(socket_up::Kind::Message(m)) = &up.kind
                        && let Some(msg) = convert::message_from_pb(m.clone())
                    {
                        replay.sent(msg);
                    }
                    // A broken stream shows on its down side next.
                    let _ = current.up.send(up).await;
                    if last {
                        return Detach::Done;
                    }
                }
                down = current.down.message() => {
                    let frame = match down.map(|m| m.and_then(|m| m.kind)) {
                        Ok(Some(socket_down::Kind::Message(m))) => match convert::frame_from_pb(m) {
                            // Passed on already (a new owner re-sends kept
                            // frames from the last number it was told).
                            Some(ServerFrame::Message { seq, .. }) if seq != 0 && seq <= self.delivered => {
                                tracing::debug!(object = %self.key, stable = ?self.stable, seq, delivered = self.delivered, "dropping a frame passed on already");
                                continue;
                            }
                            Some(ServerFrame::Message { message, seq }) => {
                                self.delivered = self.delivered.max(seq);
                                ServerFrame::Message { message, seq }
                            }
                            Some(frame) => frame,
                            None => {
                                tracing::warn!(object = %self.key, "socket message without data from node");
                                return Detach::Done;
                            }
                        },
                        Ok(Some(socket_down::Kind::Attachment(a))) => {
                            self.attachment = Some(Bytes::from(a.value));
                            continue;
                        }
                        Ok(Some(socket_down::Kind::Moved(m))) => return Detach::Moved(m.handled),
                        Ok(Some(socket_down::Kind::Close(pb::SocketClose { code, reason }))) => {
                            let close = ServerFrame::Close {
                                code: u16::try_from(code).unwrap_or(1011),
                                reason,
                            };
                            let _ = self.frames.send(close).await;
                            return Detach::Done;
                        }
                        Ok(Some(_)) => {
                            tracing::warn!(object = %self.key, "unexpected message on a Socket stream");
                            return Detach::Done;
                        }
                        // The object dropped the socket (too slow, or reset):
                        // the edge closes it with 1013.
                        Ok(None) => return Detach::Done,
                        // The owner died or the connection broke: whether the
                        // messages in flight ran is unknown.
                        Err(status) => {
                            tracing::debug!(object = %self.key, %status, "Socket stream failed");
                            return Detach::Moved(None);
                        }
                    };
                    if self.frames.send(frame).await.is_err() {
                        return Detach::Done;
                    }
                }
                _ = self.frames.closed() => {
                    // The edge is done with the socket: pass on what it
                    // queued before (its close, if it sent one).
                    while let Ok(up) = self.from_edge.try_recv() {
                        let _ = current.up.send(up).await;
                    }
                    return Detach::Done;
                }
            }
        }
    }

    /// Finds the new owner and re-registers the socket there, holding what
    /// the client sends meanwhile; `None` (the client told) if it cannot.
    async fn reattach(&mut self, replay: &mut Replay, delivered: Option<u64>) -> Option<Attached> {
        let deadline = tokio::time::Instant::now() + self.opts.timeout;
        let mut backoff = Duration::from_millis(20);
        loop {
            let registration = Registration {
                tags: self.tags.clone(),
                attachment: self.attachment.clone(),
            };
            let attempt =
                (self.reattacher.attach)(self.key.clone(), self.stable, registration, delivered);
            let mut attempt = std::pin::pin!(tokio::time::timeout_at(deadline, attempt));
            let failed = loop {
                tokio::select! {
                    done = &mut attempt => match done {
                        Ok(Ok(attached)) => return Some(attached),
                        Ok(Err(e)) => break Some(e),
                        Err(_) => break None,
                    },
                    up = self.from_edge.recv() => match up.and_then(|u| u.kind) {
                        Some(socket_up::Kind::Message(m)) => {
                            let Some(msg) = convert::message_from_pb(m) else { continue };
                            if replay.hold(msg).is_err() {
                                let _ = self.frames.try_send(ServerFrame::Close {
                                    code: 1013,
                                    reason: "try again later".into(),
                                });
                                return None;
                            }
                        }
                        // An error has no object to go to now.
                        Some(socket_up::Kind::Error(_)) => {}
                        // Closed by the client: no owner to tell.
                        _ => return None,
                    },
                    _ = self.frames.closed() => return None,
                }
            };
            if let Some(e) = &failed {
                tracing::debug!(object = %self.key, error = %e, "cannot re-attach socket yet");
            }
            if failed.is_none() || tokio::time::Instant::now() + backoff >= deadline {
                tracing::warn!(object = %self.key, "no owner took the socket back; closing it");
                let _ = self.frames.try_send(ServerFrame::Close {
                    code: 1012,
                    reason: "owner lost; reconnect".into(),
                });
                return None;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// How long a finished socket's stream may take to end.
const DRAIN: Duration = Duration::from_secs(10);

/// Reads a finished socket's stream to its end: dropping the response
/// could cancel the HTTP/2 stream before a queued close has left.
pub(super) async fn drain(mut down: Streaming<pb::SocketDown>) {
    let _ = tokio::time::timeout(DRAIN, async {
        while let Ok(Some(_)) = down.message().await {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ObjectId;

    #[tokio::test]
    async fn a_reattached_socket_waits_for_the_others_of_its_object_then_goes_on() {
        let moving = Moving::default();
        let room = ObjectKey::new("ROOM", ObjectId::new_unique());
        let other = ObjectKey::new("ROOM", ObjectId::new_unique());
        let first = moving.leave(&room);
        let second = moving.leave(&room);
        let _elsewhere = moving.leave(&other);
        drop(first);
        let waiter = {
            let moving = moving.clone();
            let room = room.clone();
            tokio::spawn(async move { moving.settled(&room, Duration::from_secs(60)).await })
        };
        tokio::task::yield_now().await;
        assert!(
            !waiter.is_finished(),
            "one socket of the room is still moving"
        );
        drop(second);
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("settled once the last socket arrived")
            .expect("waiter task");
        // Another object's moving socket holds nobody up past the timeout.
        moving.settled(&other, Duration::from_millis(1)).await;
        moving.settled(&room, Duration::from_secs(60)).await;
    }
}
