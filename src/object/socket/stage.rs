//! Socket changes (attachments, closes) staged by events until the output
//! gate releases them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::{SharedHub, SocketId};

/// A change an event made to one of its sockets.
#[derive(Clone, Debug, Default)]
pub(crate) struct SocketChange {
    pub attachment: Option<Bytes>,
    /// The object closed it (the close frame waits for the output gate).
    pub closed: bool,
}

impl SocketChange {
    fn absorb(&mut self, later: SocketChange) {
        if later.attachment.is_some() {
            self.attachment = later.attachment;
        }
        self.closed |= later.closed;
    }
}

/// Socket changes (attachments, closes) that have not taken effect: those
/// of the running event, and those of earlier events whose commit has not
/// been released yet. Like storage writes they take effect only through
/// the output gate (the hub is changed when the event's batch is released)
/// and are dropped with the event if its handler fails; the executor's own
/// events see them meanwhile. Only the executor's task uses it.
#[derive(Clone, Default)]
pub(crate) struct SocketStage(Arc<Mutex<StageState>>);

#[derive(Default)]
struct StageState {
    event: BTreeMap<SocketId, SocketChange>,
    /// Changes of earlier events of this executor, newest merged in. A
    /// failed commit resets the executor, and this with it.
    pending: BTreeMap<SocketId, SocketChange>,
}

impl SocketStage {
    fn lock(&self) -> MutexGuard<'_, StageState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn change(&self, id: SocketId, f: impl FnOnce(&mut SocketChange)) {
        f(self.lock().event.entry(id).or_default());
    }

    /// The attachment the running event sees, if staged.
    pub(super) fn attachment(&self, id: SocketId) -> Option<Bytes> {
        let stage = self.lock();
        [stage.event.get(&id), stage.pending.get(&id)]
            .into_iter()
            .flatten()
            .find_map(|c| c.attachment.clone())
    }

    /// Whether the object closed `id` (in this event or an earlier one).
    pub fn is_closed(&self, id: SocketId) -> bool {
        let stage = self.lock();
        [stage.event.get(&id), stage.pending.get(&id)]
            .into_iter()
            .flatten()
            .any(|c| c.closed)
    }

    /// Drops the running event's changes (its handler failed).
    pub fn discard_event(&self) {
        self.lock().event.clear();
    }

    /// Takes the running event's changes, to be released with its outputs;
    /// later events see them until then. Forgets sockets no longer in `hub`.
    pub fn take_event(&self, hub: &SharedHub) -> Vec<(SocketId, SocketChange)> {
        let mut stage = self.lock();
        let event = std::mem::take(&mut stage.event);
        for (id, change) in &event {
            stage.pending.entry(*id).or_default().absorb(change.clone());
        }
        if !stage.pending.is_empty() {
            let hub = hub.lock();
            stage.pending.retain(|id, _| hub.sockets.contains_key(id));
        }
        event.into_iter().collect()
    }
}
