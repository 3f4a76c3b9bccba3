//! Events from the sockets an edge bridges to an object: messages (or the
//! object's automatic response, without waking it), closes and errors.

use super::Runtime;
use crate::id::ObjectKey;
use crate::object::Error;
use crate::object::executor::Event;
use crate::object::socket::{Message, Registration, ServerFrame, SocketId, SocketLink, StableId};

/// How long a re-attach waits for this node to apply its own term's first
/// entry before it takes the socket without its kept frames.
const STATE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

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
            hub.deliver(socket, ServerFrame::message(Message::Text(response)));
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
    /// messages. If the object listed it already (from its registration,
    /// `stable`), the socket gets what the object sent it meanwhile; and if
    /// its edge says the highest frame number it passed on (`delivered`),
    /// the kept frames after it that the old owner released but the edge
    /// never got come first ([`SocketLink::replay`]). `NotOwner` if this
    /// node does not lead the object's shard.
    pub async fn socket_reattach(
        &self,
        key: &ObjectKey,
        stable: Option<StableId>,
        registration: Registration,
        delivered: Option<u64>,
    ) -> Result<SocketLink, Error> {
        if self.inner.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let shard = self.shard_of(key);
        let handle = self.inner.replicas.shard(shard);
        let epoch = handle
            .as_ref()
            .and_then(|s| s.serving_epoch())
            .ok_or(Error::NotOwner { shard })?;
        if !self.inner.classes.contains_key(&key.namespace) {
            return Err(Error::UnknownNamespace(key.namespace.to_string()));
        }
        // The kept frames are read only once final: once this node has
        // applied an entry of its own term (everything the old owner
        // committed is applied then). A new owner that is not there soon (a
        // shard without a steady quorum) takes the socket back without them.
        let mut replay = None;
        if let (Some(stable), Some(after), Some(handle)) = (stable, delivered, &handle)
            && self.inner.opts.socket_replay > 0
        {
            if handle
                .applied_in_term(crate::replication::epoch_term(epoch), STATE_WAIT)
                .await
            {
                replay = Some((stable, after));
            } else {
                tracing::debug!(object = %key, "re-attached without kept frames: not applied in time");
            }
        }
        let (mut link, queued_from) = {
            let mut objects = self.objects(shard)?;
            // Registered in the epoch the registry serves (`Tenure`), so a
            // leadership watcher that runs late does not hand it over at
            // once.
            self.enter_epoch(shard, &mut objects, Some(epoch))?;
            let entry = objects.entry(key.clone()).or_default();
            entry
                .hub
                .reattach(
                    key.clone(),
                    stable,
                    registration,
                    self.inner.opts.socket_buffer,
                )
                .map_err(|_| {
                    Error::Unavailable("the socket is closing, or attached here already".into())
                })?
        };
        if let Some((stable, after)) = replay {
            link.replay = self.kept_frames(key, stable, after, queued_from);
        }
        Ok(link)
    }

    /// The frames `key` keeps for socket `stable` numbered after `after`
    /// and before `before`; none if they cannot be read (logged).
    fn kept_frames(
        &self,
        key: &ObjectKey,
        stable: StableId,
        after: u64,
        before: Option<u64>,
    ) -> Vec<ServerFrame> {
        let slots = usize::from(self.inner.opts.socket_replay);
        let stored = self.stored_key(key);
        let kept = match self
            .inner
            .db
            .object_frames(self.shard_of(key), &stored, slots)
        {
            Ok(kept) => kept,
            Err(e) => {
                tracing::error!(object = %key, error = %e, "cannot read kept frames");
                return Vec::new();
            }
        };
        let (frames, missing) = crate::object::replay::pick(&kept, stable, after, before);
        if missing {
            tracing::warn!(
                object = %key,
                after,
                "a re-attached socket may have missed frames no longer kept"
            );
        }
        frames
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
