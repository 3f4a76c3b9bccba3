//! An alarm event: the handler runs only if the alarm is still the one
//! scheduled, and counts as fired while it runs.

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use tokio::sync::oneshot;

use super::Executor;
use crate::object::class::{AlarmInfo, DurableObject};
use crate::object::outbox::Output;
use crate::object::view::AlarmChange;

impl Executor {
    pub(super) async fn run_alarm<T: DurableObject>(
        &mut self,
        obj: &mut T,
        info: AlarmInfo,
        reply: oneshot::Sender<bool>,
    ) -> bool {
        self.begin(false);
        if self.current_alarm() != Some(info.scheduled_ms) {
            // Replaced or deleted since it was scheduled: nothing to run.
            let _ = reply.send(true);
            return true;
        }
        // While the handler runs the alarm counts as fired (getAlarm is
        // null); a new alarm the handler sets replaces this mark.
        self.ctx.storage.top_layer().alarm = Some(AlarmChange::Fired(info.scheduled_ms));
        let result = AssertUnwindSafe(obj.alarm(&mut self.ctx, info))
            .catch_unwind()
            .await;
        match result {
            Ok(Ok(())) => {
                self.finish(true, vec![Output::AlarmDone(reply)]).await;
                true
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, retry = info.retry_count, "alarm handler failed");
                self.finish(false, Vec::new()).await;
                let _ = reply.send(false);
                true
            }
            Err(_) => {
                tracing::error!("alarm handler panicked");
                self.finish(false, Vec::new()).await;
                let _ = reply.send(false);
                false
            }
        }
    }

    pub(super) fn current_alarm(&self) -> Option<u64> {
        match self.ctx.storage.get_alarm() {
            Ok(at) => at,
            Err(e) => {
                tracing::error!(error = %e, "read alarm");
                None
            }
        }
    }
}
