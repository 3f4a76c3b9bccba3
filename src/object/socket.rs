//! WebSockets as an object sees them (Cloudflare's hibernation API).
//!
//! The [`SocketHub`] of an object outlives its executor: sockets, their tags
//! and attachments stay while the object is evicted, and a message wakes it.
//! The edge holds the client connection and talks to the hub through a
//! [`SocketLink`]. Frames an object sends go through its output gate first.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::http::{HandlerError, Response};
use super::outbox::{Output, OutputSink};
use crate::id::ObjectKey;

mod frames;
mod stage;
pub use frames::{FrameReceiver, FrameSender, channel as frame_channel};
pub(crate) use stage::SocketStage;

/// Identifies a socket within its object. Unique per process.
pub type SocketId = u64;

/// Identifies a socket in storage: the same on every node that owns its
/// object in turn (a [`SocketId`] is only this process's handle). Random,
/// made when the socket is accepted.
pub type StableId = u128;

/// What the object's storage keeps of one of its sockets (its
/// registration, `storage::keys::socket_key`): enough for a new owner to
/// list the socket in `getWebSockets()` before its edge re-attaches it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Registration {
    pub tags: Vec<String>,
    pub attachment: Option<Bytes>,
}

impl Registration {
    pub fn encode(&self) -> Bytes {
        // A Vec of strings and optional bytes always serializes.
        postcard::to_stdvec(self)
            .map(Bytes::from)
            .unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<Registration> {
        postcard::from_bytes(bytes).ok()
    }
}

/// A WebSocket data message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Text(String),
    Binary(Bytes),
}

impl Message {
    pub fn len(&self) -> usize {
        match self {
            Message::Text(s) => s.len(),
            Message::Binary(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<String> for Message {
    fn from(s: String) -> Self {
        Message::Text(s)
    }
}

impl From<&str> for Message {
    fn from(s: &str) -> Self {
        Message::Text(s.to_owned())
    }
}

/// What the object side sends towards the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerFrame {
    /// A message, numbered when its object keeps frames for its sockets
    /// (`replay.rs`; 0 when not): the edge passes each number on once.
    Message {
        message: Message,
        seq: u64,
    },
    Close {
        code: u16,
        reason: String,
    },
    /// The socket's attachment changed and the change committed (so a
    /// bridge always holds committed state, to re-attach the socket with).
    Attachment(Bytes),
    /// The object's owner changed (its shard's leadership ended here): this
    /// node no longer serves the socket, and the object saw no close.
    /// `handled` counts the messages of this attachment the object
    /// finished; the last frame.
    Moved {
        handled: u64,
    },
}

impl ServerFrame {
    /// An unnumbered message.
    pub fn message(message: Message) -> ServerFrame {
        ServerFrame::Message { message, seq: 0 }
    }
}

/// The edge's end of an accepted socket: frames to forward to the client.
/// Frames from the client go back through the object client with `object`
/// and `socket`.
#[derive(Debug)]
pub struct SocketLink {
    pub object: ObjectKey,
    pub socket: SocketId,
    /// The tags the object gave the socket.
    pub tags: Vec<String>,
    /// Its registration's id, the same on every owner (to re-attach it
    /// with).
    pub stable: StableId,
    /// Frames to pass on before those of `outgoing`: kept frames a
    /// re-attached socket's edge never got from its old owner.
    pub replay: Vec<ServerFrame>,
    pub outgoing: FrameReceiver,
}

/// Marks a 101 response as the acceptance of this socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AcceptedSocket(pub SocketId);

static NEXT_SOCKET: AtomicU64 = AtomicU64::new(1);

pub(crate) struct SocketEntry {
    /// Its registration's id in storage.
    pub stable: StableId,
    /// Known from its registration only: its object's owner changed and its
    /// edge has not re-attached it here yet. Frames wait in its channel
    /// (`rx` is still here) until the edge does, or the socket is closed
    /// as gone.
    pub detached: bool,
    pub tags: Vec<String>,
    /// The committed attachment (staged ones are in [`SocketStage`]).
    pub attachment: Option<Bytes>,
    /// The client closed it; the object's close handler is queued.
    pub closing: bool,
    /// Messages from the client whose events finished and committed.
    pub handled: u64,
    /// The number of the first numbered frame queued while detached: its
    /// channel holds every frame from there on.
    pub queued_from: Option<u64>,
    pub tx: FrameSender,
    /// Taken by the edge when the accepting response is released.
    pub rx: Option<FrameReceiver>,
}

impl SocketEntry {
    /// Its registration, encoded, with `attachment` as its attachment.
    pub fn registration(&self, attachment: Option<Bytes>) -> Bytes {
        Registration {
            tags: self.tags.clone(),
            attachment,
        }
        .encode()
    }
}

/// The sockets of one object and its auto-response.
#[derive(Default)]
pub(crate) struct SocketHub {
    pub sockets: BTreeMap<SocketId, SocketEntry>,
    pub auto_response: Option<(String, String)>,
    /// Registrations of sockets dropped without a close event (a client
    /// that did not keep up): deleted with the object's next write.
    pub gone: Vec<StableId>,
}

impl SocketHub {
    /// Removes `id`; if it was registered and the object will not run a
    /// close event for it, its registration is deleted with the next write.
    pub fn drop_socket(&mut self, id: SocketId) {
        if let Some(entry) = self.sockets.remove(&id) {
            self.gone.push(entry.stable);
        }
    }

    /// The local id of the socket registered as `stable`, if here (a scan:
    /// once per re-attach, which is once per socket per move).
    pub fn find(&self, stable: StableId) -> Option<SocketId> {
        self.sockets
            .iter()
            .find(|(_, e)| e.stable == stable)
            .map(|(id, _)| *id)
    }
}

/// A hub shared by the registry (which outlives executors) and the executor.
#[derive(Clone, Default)]
pub(crate) struct SharedHub(Arc<(Mutex<SocketHub>, tokio::sync::Notify)>);

impl SharedHub {
    pub fn lock(&self) -> MutexGuard<'_, SocketHub> {
        // A panic while holding this lock leaves plain data behind; keep going.
        self.0.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until none of `ids` is still waiting for its edge (re-attached,
    /// or gone), or `timeout`.
    pub async fn returned(&self, ids: &[SocketId], timeout: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.0.1.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let waiting = {
                let hub = self.lock();
                ids.iter()
                    .any(|id| hub.sockets.get(id).is_some_and(|e| e.detached))
            };
            if !waiting || tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    /// Registers a new socket with a buffer of `capacity` frames.
    pub fn open(&self, tags: Vec<String>, capacity: usize) -> SocketId {
        let stable = rand::random::<StableId>();
        Self::insert(&mut self.lock(), stable, tags, None, capacity, false)
    }

    /// Registers a socket that moved here from another owner and hands out
    /// its link: the entry its registration made here (with the frames the
    /// object sent it meanwhile), or a new one with the caller's tags and
    /// committed attachment when its object has not listed it (not active
    /// here yet, or a caller that names no `stable` id).
    pub fn reattach(
        &self,
        object: ObjectKey,
        stable: Option<StableId>,
        registration: Registration,
        capacity: usize,
    ) -> Result<(SocketLink, Option<u64>), ReattachError> {
        let mut hub = self.lock();
        let found = stable.and_then(|s| hub.find(s));
        let socket = match found {
            Some(id) => id,
            None => {
                let stable = stable.unwrap_or_else(rand::random::<StableId>);
                let Registration { tags, attachment } = registration;
                Self::insert(&mut hub, stable, tags, attachment, capacity, false)
            }
        };
        let Some(entry) = hub.sockets.get_mut(&socket) else {
            return Err(ReattachError::Attached);
        };
        if found.is_some() && (!entry.detached || entry.closing) {
            // Its edge holds it already (a stream that broke while the
            // owner stayed: the object was told it closed), or it is
            // being closed as gone.
            return Err(ReattachError::Attached);
        }
        entry.detached = false;
        let outgoing = entry.rx.take().ok_or(ReattachError::Attached)?;
        self.0.1.notify_waiters();
        let link = SocketLink {
            object,
            socket,
            tags: entry.tags.clone(),
            stable: entry.stable,
            replay: Vec::new(),
            outgoing,
        };
        Ok((link, entry.queued_from.take()))
    }

    /// Lists the sockets registered in storage that are not here (their
    /// object's owner changed; their edges will re-attach them) as
    /// detached: the object sees them at once, and what it sends them
    /// waits, up to `capacity` frames, for their edges. Returns their ids.
    pub fn restore(
        &self,
        registered: impl IntoIterator<Item = (StableId, Registration)>,
        capacity: usize,
    ) -> Vec<SocketId> {
        let mut hub = self.lock();
        let mut known: std::collections::HashSet<StableId> =
            hub.sockets.values().map(|e| e.stable).collect();
        known.extend(hub.gone.iter().copied());
        let mut restored = Vec::new();
        for (stable, Registration { tags, attachment }) in registered {
            if !known.insert(stable) {
                continue;
            }
            restored.push(Self::insert(
                &mut hub, stable, tags, attachment, capacity, true,
            ));
        }
        restored
    }

    fn insert(
        hub: &mut SocketHub,
        stable: StableId,
        tags: Vec<String>,
        attachment: Option<Bytes>,
        capacity: usize,
        detached: bool,
    ) -> SocketId {
        let id = NEXT_SOCKET.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = frames::channel(capacity);
        hub.sockets.insert(
            id,
            SocketEntry {
                stable,
                detached,
                tags,
                attachment,
                closing: false,
                handled: 0,
                queued_from: None,
                tx,
                rx: Some(rx),
            },
        );
        id
    }

    /// Of `ids`, those still waiting for their edges (and not closing):
    /// marked closing, for their close events.
    pub fn take_unreturned(&self, ids: &[SocketId]) -> Vec<SocketId> {
        let mut hub = self.lock();
        ids.iter()
            .copied()
            .filter(|id| match hub.sockets.get_mut(id) {
                Some(e) if e.detached && !e.closing => {
                    e.closing = true;
                    true
                }
                _ => false,
            })
            .collect()
    }

    /// This node no longer serves the object: tells every socket's bridge
    /// (after the frames already released) and forgets them. The object is
    /// told nothing; its sockets carry on with the new owner.
    pub fn moved(&self) {
        self.move_where(|_| true);
    }

    /// An executor of the object was reset: the sockets attached here are
    /// told `moved` (their edges re-attach them and send again what the
    /// reset dropped); those waiting for their edges stay, with the frames
    /// held for them.
    pub fn moved_attached(&self) {
        self.move_where(|e| !e.detached);
    }

    /// Tells each socket that `moving` picks that it moved, after the
    /// frames already released, with the messages it handled, and forgets
    /// it.
    fn move_where(&self, moving: impl Fn(&SocketEntry) -> bool) {
        let mut hub = self.lock();
        let ids: Vec<SocketId> = hub
            .sockets
            .iter()
            .filter(|(_, e)| moving(e))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(entry) = hub.sockets.remove(&id) {
                let _ = entry.tx.try_send(ServerFrame::Moved {
                    handled: entry.handled,
                });
            }
        }
    }

    /// One more message of `id` was handled (its event committed).
    pub fn handled(&self, id: SocketId) {
        if let Some(entry) = self.lock().sockets.get_mut(&id) {
            entry.handled += 1;
        }
    }

    /// `id`'s attachment is now `value` (committed); its bridge is told in
    /// order with its frames.
    pub fn set_attachment(&self, id: SocketId, value: Bytes) {
        let mut hub = self.lock();
        let Some(entry) = hub.sockets.get_mut(&id) else {
            return;
        };
        entry.attachment = Some(value.clone());
        if entry.tx.try_send(ServerFrame::Attachment(value)).is_err() {
            hub.drop_socket(id);
        }
    }

    /// Queues `frame` for the client. A socket whose client does not keep up
    /// is dropped (the edge then closes it with 1013).
    pub fn deliver(&self, id: SocketId, frame: ServerFrame) {
        let mut hub = self.lock();
        let closing = matches!(frame, ServerFrame::Close { .. });
        let Some(entry) = hub.sockets.get_mut(&id) else {
            return;
        };
        if let ServerFrame::Message { seq, .. } = &frame
            && *seq != 0
            && entry.detached
        {
            entry.queued_from.get_or_insert(*seq);
        }
        let sent = entry.tx.try_send(frame).is_ok();
        if closing {
            // The event that closed it deleted its registration.
            hub.sockets.remove(&id);
        } else if !sent {
            hub.drop_socket(id);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.lock().sockets.is_empty()
    }
}

/// Why a socket cannot be re-attached here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReattachError {
    /// It is attached here already, or closing.
    Attached,
}

/// An accepted WebSocket, as handlers use it. Cheap to clone.
#[derive(Clone)]
pub struct WebSocket {
    pub(crate) id: SocketId,
    pub(crate) hub: SharedHub,
    pub(crate) outputs: OutputSink,
    pub(crate) stage: SocketStage,
    pub(crate) max_attachment: usize,
}

impl WebSocket {
    pub fn id(&self) -> SocketId {
        self.id
    }

    /// Sends a message once the current event's writes are committed.
    pub fn send(&self, msg: impl Into<Message>) {
        self.outputs.push(Output::Frame {
            socket: self.id,
            frame: ServerFrame::message(msg.into()),
        });
    }

    /// Sends `value` as a JSON text message.
    pub fn send_json<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), HandlerError> {
        let text = serde_json::to_string(value).map_err(HandlerError::internal)?;
        self.send(Message::Text(text));
        Ok(())
    }

    /// Closes the socket with `code` once the current event's writes are
    /// committed. It leaves the object's socket list at once (for this
    /// object's events), and comes back if the handler fails.
    pub fn close(&self, code: u16, reason: &str) {
        self.stage.change(self.id, |c| c.closed = true);
        self.outputs.push(Output::Frame {
            socket: self.id,
            frame: ServerFrame::Close {
                code,
                reason: reason.to_owned(),
            },
        });
    }

    /// The tags given when the socket was accepted.
    pub fn tags(&self) -> Vec<String> {
        self.hub
            .lock()
            .sockets
            .get(&self.id)
            .map(|e| e.tags.clone())
            .unwrap_or_default()
    }

    /// Stores `value` with the socket; it survives eviction of the object.
    /// Like a storage write it takes effect once the event's writes are
    /// committed, and not at all if the handler fails.
    pub fn serialize_attachment<T: Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> Result<(), HandlerError> {
        let bytes = serde_json::to_vec(value).map_err(HandlerError::internal)?;
        if bytes.len() > self.max_attachment {
            return Err(HandlerError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "attachment_too_large",
                format!(
                    "attachment is {} bytes; the limit is {}",
                    bytes.len(),
                    self.max_attachment
                ),
            ));
        }
        self.stage
            .change(self.id, |c| c.attachment = Some(bytes.into()));
        Ok(())
    }

    /// The value last stored with [`serialize_attachment`](Self::serialize_attachment).
    pub fn deserialize_attachment<T: DeserializeOwned>(&self) -> Result<Option<T>, HandlerError> {
        let bytes = self.stage.attachment(self.id).or_else(|| {
            self.hub
                .lock()
                .sockets
                .get(&self.id)
                .and_then(|e| e.attachment.clone())
        });
        match bytes {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(HandlerError::internal),
        }
    }

    /// The 101 response that completes accepting this socket; return it
    /// from `fetch`.
    pub fn accepted(&self) -> Response {
        let mut resp = Response::new(Bytes::new());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        resp.extensions_mut().insert(AcceptedSocket(self.id));
        resp
    }
}
