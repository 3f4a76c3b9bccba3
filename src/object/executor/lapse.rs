//! An event that finds its executor's leader lease lapsed while the epoch
//! goes on (`Admit::Lapsed`) waits for the lease instead of being refused:
//! a heartbeat round may renew it in the same term, and then nothing else
//! can have led meanwhile. A refusal there would drop a socket's message
//! without telling its edge, or answer 503 for a moment's lapse.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use super::Executor;
use crate::object::gate::Admit;
use crate::object::journal;

/// How long an event waits for a lapsed lease before its executor gives
/// up (as if reset: its sockets move, a fresh executor fences first).
const LAPSE_WAIT: Duration = Duration::from_secs(2);

/// How often the lease is looked at meanwhile (it is read with the clock;
/// nothing announces its renewal).
const LAPSE_POLL: Duration = Duration::from_millis(5);

impl Executor {
    /// Judges whether the next event may run, waiting out a lapse of the
    /// lease within the executor's epoch. Returns the verdict and the
    /// journal stamp taken just before the check that gave it.
    pub(super) async fn admit(
        &mut self,
        leadership: &mut watch::Receiver<Option<u64>>,
        poisoned: bool,
    ) -> (Admit, Option<u64>) {
        let deadline = tokio::time::Instant::now() + LAPSE_WAIT;
        loop {
            let checked_at = journal::stamp();
            let watched = *leadership.borrow_and_update();
            let verdict = self
                .life
                .admit(self.act.shard.leader_epoch(), watched, poisoned);
            if verdict != Admit::Lapsed {
                return (verdict, checked_at);
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    "leader lease lapsed for {LAPSE_WAIT:?} within the epoch; resetting object"
                );
                self.gate.broken.store(true, Ordering::Release);
                return (Admit::Reset, checked_at);
            }
            tokio::select! {
                changed = leadership.changed() => if changed.is_err() {
                    self.life.term_ended(None);
                },
                () = tokio::time::sleep(LAPSE_POLL) => {}
            }
        }
    }
}
