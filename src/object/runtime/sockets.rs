//! Events from the sockets an edge bridges to an object: messages (or the
//! object's automatic response, without waking it), closes and errors.

use super::Runtime;
use crate::id::ObjectKey;
use crate::object::Error;
use crate::object::executor::Event;
use crate::object::socket::{Message, Registration, ServerFrame, SocketId, SocketLink, StableId};

/// How long a re-attach waits for its object to activate here (within
/// the edge's own `websocket.reattach_timeout_ms`).
const ACTIVATION_WAIT: std::time::Duration = std::time::Duration::from_secs(20);
/// How often it checks that the epoch goes on.
const RECHECK: std::time::Duration = std::time::Duration::from_millis(100);
/// How often it asks for the activation again.
const REACTIVATE: std::time::Duration = std::time::Duration::from_secs(1);

impl Runtime {
    /// A message from the client of `socket`.
    pub fn socket_message(
        &self,
        key: &ObjectKey,
        socket: SocketId,
        msg: Message,
    ) -> Result<(), Error> {
        self.socket_message_numbered(key, socket, msg, 0)
    }

    /// A message from the client of `socket`, numbered by its edge (from
    /// 1; 0: unnumbered): when this node keeps frames, the number of the
    /// last one handled is stored with the socket's registration.
    pub fn socket_message_numbered(
        &self,
        key: &ObjectKey,
        socket: SocketId,
        msg: Message,
        number: u64,
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
        self.dispatch(
            key,
            Event::SocketMessage {
                socket,
                msg,
                number,
            },
        )
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
            .and_then(|s| s.leader_epoch())
            .ok_or(Error::NotOwner { shard })?;
        if !self.inner.classes.contains_key(&key.namespace) {
            return Err(Error::UnknownNamespace(key.namespace.to_string()));
        }
        let keeping = self.inner.opts.socket_replay > 0;
        let mut registration = registration;
        if let (Some(stable), true) = (stable, keeping) {
            // Storage is final for the object once an executor of this
            // epoch has fenced: the old owner's kept frames and the
            // socket's registration (with the last message it handled)
            // are all applied.
            let hub = self.fenced_hub(key, shard, epoch).await?;
            let listed = hub.lock().find(stable).is_some();
            if !listed {
                // Not listed from its registration (re-attached here
                // before, or registered by no one): read it.
                registration.handled = self
                    .stored_registration(key, stable)
                    .map_or(0, |r| r.handled);
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
        if !keeping {
            // Nothing numbered, nothing known.
            link.handled = None;
        } else if let (Some(stable), Some(after)) = (stable, delivered) {
            link.replay = self.kept_frames(key, stable, after, queued_from);
        }
        Ok(link)
    }

    /// The object's hub once an executor of epoch `epoch` has fenced and
    /// listed its sockets (activating the object, again if an executor
    /// failed), or `NotOwner` once the epoch ends here. The edge waits: a
    /// new owner's first events wait for the same activation.
    async fn fenced_hub(
        &self,
        key: &ObjectKey,
        shard: crate::id::ShardId,
        epoch: u64,
    ) -> Result<crate::object::socket::SharedHub, Error> {
        let deadline = tokio::time::Instant::now() + ACTIVATION_WAIT;
        let mut wake_at = tokio::time::Instant::now();
        loop {
            let hub = {
                let mut objects = self.objects(shard)?;
                self.enter_epoch(shard, &mut objects, Some(epoch))?;
                objects.entry(key.clone()).or_default().hub.clone()
            };
            let changed = hub.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if hub.is_fenced(epoch) {
                return Ok(hub.clone());
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Error::Unavailable(
                    "the object did not activate in time; try again".into(),
                ));
            }
            if now >= wake_at {
                // Activates the object, or queues a no-op for the live
                // executor (which may be the one that failed: the next
                // dispatch starts another).
                self.dispatch(key, Event::Activate)?;
                wake_at = now + REACTIVATE;
            }
            let _ = tokio::time::timeout(RECHECK, changed).await;
        }
    }

    /// Socket `stable`'s registration as `key`'s storage has it (applied).
    fn stored_registration(&self, key: &ObjectKey, stable: StableId) -> Option<Registration> {
        let stored = self.stored_key(key);
        match self
            .inner
            .db
            .object_socket(self.shard_of(key), &stored, stable)
        {
            Ok(bytes) => Registration::decode(&bytes?),
            Err(e) => {
                tracing::error!(object = %key, error = %e, "cannot read a socket registration");
                None
            }
        }
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
