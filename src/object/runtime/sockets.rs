//! Events from the sockets an edge bridges to an object: messages (or the
//! object's automatic response, without waking it), closes and errors.

use super::Runtime;
use crate::id::ObjectKey;
use crate::object::Error;
use crate::object::executor::Event;
use crate::object::socket::{Message, ServerFrame, SocketId, SocketLink};

impl Runtime {
    /// A message from the client of `socket`.
    pub fn socket_message(
        &self,
        key: &ObjectKey,
        socket: SocketId,
        msg: Message,
    ) -> Result<(), Error> {
        let hub = {
            let objects = self.objects(self.shard_of(key))?;
            match objects.get(key) {
                Some(entry) => entry.hub.clone(),
                None => return Ok(()),
            }
        };
        let auto = {
            let hub = hub.lock();
            match (&hub.auto_response, &msg) {
                (Some((request, response)), Message::Text(text)) if text == request => {
                    Some(response.clone())
                }
                _ => None,
            }
        };
        if let Some(response) = auto {
            // Answered here, without waking the object.
            hub.deliver(socket, ServerFrame::Message(Message::Text(response)));
            hub.handled(socket);
            return Ok(());
        }
        self.dispatch(key, Event::SocketMessage { socket, msg })
    }

    /// The client closed `socket` (code 1006 if it vanished).
    pub fn socket_closed(
        &self,
        key: &ObjectKey,
        socket: SocketId,
        code: u16,
        reason: String,
    ) -> Result<(), Error> {
        {
            let objects = self.objects(self.shard_of(key))?;
            let Some(entry) = objects.get(key) else {
                return Ok(());
            };
            let mut hub = entry.hub.lock();
            match hub.sockets.get_mut(&socket) {
                // Closed by the object already: nothing to tell it.
                Some(e) if e.closing => {
                    hub.sockets.remove(&socket);
                    return Ok(());
                }
                Some(e) => e.closing = true,
                None => return Ok(()),
            }
        }
        self.dispatch(
            key,
            Event::SocketClose {
                socket,
                code,
                reason,
            },
        )
    }

    /// Registers a socket whose object's owner changed (it was bridged to
    /// another node) with its tags and committed attachment: no fetch, no
    /// open event; the object finds it in its socket list and gets its next
    /// messages. `NotOwner` if this node does not lead the object's shard.
    pub fn socket_reattach(
        &self,
        key: &ObjectKey,
        tags: Vec<String>,
        attachment: Option<bytes::Bytes>,
    ) -> Result<SocketLink, Error> {
        if self.inner.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let shard = self.shard_of(key);
        if !self.leads(key) {
            return Err(Error::NotOwner { shard });
        }
        if !self.inner.classes.contains_key(&key.namespace) {
            return Err(Error::UnknownNamespace(key.namespace.to_string()));
        }
        let mut objects = self.objects(shard)?;
        let entry = objects.entry(key.clone()).or_default();
        Ok(entry
            .hub
            .reattach(key.clone(), tags, attachment, self.inner.opts.socket_buffer))
    }

    /// A protocol error on `socket` (e.g. an oversized message).
    pub fn socket_error(
        &self,
        key: &ObjectKey,
        socket: SocketId,
        error: String,
    ) -> Result<(), Error> {
        self.dispatch(key, Event::SocketError { socket, error })
    }
}
