//! What a handler can reach: its id, storage, sockets and alarm, and the
//! app's other objects (`calls.rs`).

use http::StatusCode;

use super::http::HandlerError;
use super::outbox::OutputSink;
use super::socket::{SharedHub, SocketId, SocketStage, WebSocket};
use super::storage::Storage;
use crate::id::ObjectId;

/// The object's side of the runtime, passed to every handler.
pub struct Context {
    pub(crate) storage: Storage,
    /// The object as callers name it (its binding, not its storage identity).
    pub(crate) key: crate::id::ObjectKey,
    /// The name the id was made from, once a caller gave it.
    pub(crate) name: super::runtime::KnownName,
    pub(crate) hub: SharedHub,
    pub(crate) outputs: OutputSink,
    /// Socket changes not yet released by the output gate.
    pub(crate) sockets: SocketStage,
    /// Frames a socket may queue before it is dropped as too slow.
    pub(crate) socket_buffer: usize,
    /// Whether the running event is a fetch that asks for a WebSocket.
    pub(crate) upgrade: bool,
    /// Sockets accepted by the running event.
    pub(crate) accepted: Vec<SocketId>,
    /// The app's bindings, for calls to other objects.
    pub(crate) env: super::Env,
    /// How long a call to another object may take.
    pub(crate) call_timeout: std::time::Duration,
    /// The executor's side of the output gate.
    pub(crate) committer: super::calls::Committer,
    /// Socket registrations the running event writes whatever its handler
    /// does: a socket it accepted, one whose client closed it.
    pub(crate) registrations:
        std::collections::BTreeMap<super::socket::StableId, Option<bytes::Bytes>>,
    /// Numbers the frames sent to registered sockets and keeps them
    /// (`replay.rs`); off unless the node keeps frames.
    pub(crate) frames: super::replay::Sequencer,
}

impl Context {
    /// This object's id.
    pub fn id(&self) -> ObjectId {
        self.key.id
    }

    /// The name this object's id was made from (Cloudflare's
    /// `ctx.id.name`), once a caller reached it by name (a stub from
    /// `id_from_name`/`get_by_name`, or a gRPC call by `name`) since it was
    /// activated; `None` for an id made by `new_unique_id`, or before any
    /// call by name (an alarm that woke the object, say).
    pub fn name(&self) -> Option<&str> {
        self.name.get().map(|n| &**n)
    }

    /// The namespace (binding) this object belongs to.
    pub fn namespace(&self) -> &str {
        &self.key.namespace
    }

    /// The object's transactional storage.
    pub fn storage(&mut self) -> &mut Storage {
        &mut self.storage
    }

    /// Accepts the WebSocket the running request asks for, with `tags` to
    /// find it by later. Return [`WebSocket::accepted`] from `fetch` to
    /// complete the upgrade. Only valid in `fetch` of an upgrade request.
    pub fn accept_websocket(&mut self, tags: &[&str]) -> Result<WebSocket, HandlerError> {
        if !self.upgrade {
            return Err(HandlerError::new(
                StatusCode::UPGRADE_REQUIRED,
                "not_a_websocket_request",
                "this request does not ask for a WebSocket upgrade",
            ));
        }
        if !self.accepted.is_empty() {
            return Err(HandlerError::internal(
                "a request can accept only one WebSocket",
            ));
        }
        let tags = tags.iter().map(|t| (*t).to_owned()).collect();
        let id = self.hub.open(tags, self.socket_buffer);
        self.accepted.push(id);
        Ok(self.socket(id))
    }

    /// Open sockets, in the order they were accepted; only those with `tag`
    /// if one is given.
    pub fn websockets(&self, tag: Option<&str>) -> Vec<WebSocket> {
        let ids: Vec<SocketId> = self
            .hub
            .lock()
            .sockets
            .iter()
            .filter(|(id, e)| {
                !e.closing
                    && !self.sockets.is_closed(**id)
                    && tag.is_none_or(|t| e.tags.iter().any(|x| x == t))
            })
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter().map(|id| self.socket(id)).collect()
    }

    /// Answers `request` with `response` on every socket of this object
    /// without waking it (e.g. `ping` → `pong`); `None` turns it off.
    pub fn set_websocket_auto_response(&self, pair: Option<(String, String)>) {
        self.hub.lock().auto_response = pair;
    }

    /// What the running event sent so far, with the attachments it set
    /// first (they take effect before its frames leave).
    pub(crate) fn take_outputs(&mut self) -> Vec<super::outbox::Output> {
        let mut outputs = self.outputs.take();
        let attachments =
            self.sockets
                .take_event(&self.hub)
                .into_iter()
                .filter_map(|(socket, change)| {
                    let value = change.attachment?;
                    Some(super::outbox::Output::Attachment { socket, value })
                });
        outputs.splice(0..0, attachments);
        outputs
    }

    /// Adds to `layer` (an event's writes, about to be proposed) what the
    /// storage must know of the object's sockets: the registrations of
    /// sockets accepted or closed, new attachments (`outputs`), the
    /// sockets dropped since without a close event, and the frames sent to
    /// registered sockets (numbered here, and kept).
    pub(crate) fn register_sockets(
        &mut self,
        layer: &mut super::view::Layer,
        outputs: &mut [super::outbox::Output],
    ) {
        use super::outbox::Output;
        use super::socket::ServerFrame;
        layer.sockets.append(&mut self.registrations);
        let mut hub = self.hub.lock();
        let kept = self
            .frames
            .stamp(outputs, |id| hub.sockets.get(&id).map(|e| e.stable));
        layer.frames.extend(kept);
        for out in outputs {
            match out {
                Output::Attachment { socket, value } => {
                    if let Some(e) = hub.sockets.get(socket) {
                        let registration = e.registration(Some(value.clone()));
                        layer.sockets.insert(e.stable, Some(registration));
                    }
                }
                Output::Frame {
                    socket,
                    frame: ServerFrame::Close { .. },
                } => {
                    if let Some(e) = hub.sockets.get(socket) {
                        layer.sockets.insert(e.stable, None);
                    }
                }
                _ => {}
            }
        }
        for stable in hub.gone.drain(..) {
            layer.sockets.insert(stable, None);
        }
    }

    pub(crate) fn socket(&self, id: SocketId) -> WebSocket {
        WebSocket {
            id,
            hub: self.hub.clone(),
            outputs: self.outputs.clone(),
            stage: self.sockets.clone(),
            max_attachment: self.storage.limits.max_attachment_bytes,
        }
    }
}
