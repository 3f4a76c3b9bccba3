//! An executor's side of sockets that follow their object: at activation,
//! the sockets registered in storage that are not here yet are listed (as
//! detached), so that nothing the object sends them is lost while their
//! edges re-attach them.

use std::sync::atomic::Ordering;

use super::{Event, Executor};
use crate::object::replay::Sequencer;
use crate::object::socket::Registration;

/// How long a reset executor waits for its outputs to settle before its
/// sockets move anyway.
const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The most sockets an activation lists from storage.
const MAX_RESTORED_SOCKETS: usize = 65_536;

impl Executor {
    /// Lists the object's registered sockets that are not here (its owner
    /// changed; their edges are re-attaching them) as detached, before its
    /// first event runs: the object sees every socket it had, and what it
    /// sends one that has not come back yet waits for it (up to the
    /// socket's buffer). One that has not come back within
    /// `socket_return_wait` (`websocket.reattach_timeout_ms`) is closed as gone: the object gets its close event
    /// (1006), which deletes its registration.
    pub(super) fn restore_sockets(&mut self) -> Vec<crate::object::socket::SocketId> {
        let shard = self.act.shard.id();
        self.resume_frames();
        let registered =
            match self
                .act
                .db
                .object_sockets(shard, &self.act.stored, MAX_RESTORED_SOCKETS)
            {
                Ok(registered) => registered,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the object's socket registrations");
                    return Vec::new();
                }
            };
        if registered.is_empty() {
            return Vec::new();
        }
        let decoded = registered.into_iter().filter_map(|(stable, bytes)| {
            let registration = Registration::decode(&bytes);
            if registration.is_none() {
                tracing::warn!(stable, "undecodable socket registration; ignored");
            }
            Some((stable, registration?))
        });
        let restored = self.act.hub.restore(decoded, self.act.socket_buffer);
        if restored.is_empty() {
            return restored;
        }
        tracing::debug!(
            count = restored.len(),
            "sockets listed until their edges re-attach them"
        );
        let (hub, key, ids) = (self.act.hub.clone(), self.act.key.clone(), restored.clone());
        let (runtime, shutdown) = (self.act.runtime.downgrade(), self.act.shutdown.clone());
        let wait = self.act.socket_return_wait;
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shutdown.cancelled() => return,
            }
            let Some(runtime) = runtime.upgrade() else {
                return;
            };
            for socket in hub.take_unreturned(&ids) {
                let close = Event::SocketClose {
                    socket,
                    code: 1006,
                    reason: "the socket did not come back after its object moved".into(),
                };
                if let Err(e) = runtime.dispatch(&key, close) {
                    // Not led here any more: the next owner lists it again.
                    tracing::debug!(error = %e, "cannot close a socket that did not come back");
                }
            }
        });
        restored
    }

    /// Numbers this executor's frames after every frame its object kept
    /// (under any owner): read once its fence is applied, so the kept ones
    /// are all there.
    fn resume_frames(&mut self) {
        let slots = self.act.socket_replay;
        if slots == 0 {
            return;
        }
        let shard = self.act.shard.id();
        match self
            .act
            .db
            .object_frames(shard, &self.act.stored, usize::from(slots))
        {
            Ok(kept) => self.ctx.frames = Sequencer::resume(slots, &kept),
            Err(e) => {
                // Unnumbered frames are still sent, just not re-sent.
                tracing::error!(error = %e, "cannot read the object's kept frames");
            }
        }
    }

    /// A reset executor (a commit failed, or its fence did) lets its
    /// object's sockets go as a term's end does: once every output it
    /// handed to the gate is settled, each socket's bridge is told `moved`
    /// with the messages it handled, so its edge re-attaches it (here, to
    /// the executor that replaces this one, or to a new owner) and sends
    /// again, in order, the messages the reset dropped without running.
    /// Without this a reset would drop a socket's queued messages silently
    /// while the socket stayed open.
    pub(super) async fn move_sockets_on_reset(&mut self) {
        if self.act.hub.is_empty() {
            return;
        }
        let deadline = tokio::time::Instant::now() + SETTLE_WAIT;
        loop {
            let settled = self.gate.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            if self.gate.in_flight.load(Ordering::Acquire) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, settled).await.is_err() {
                break;
            }
        }
        tracing::debug!("object reset; its sockets re-attach");
        self.act.hub.moved_attached();
    }
}
