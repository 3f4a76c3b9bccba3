//! A shard's leadership as the runtime follows it: each term of this node's
//! leadership schedules the shard's alarms once a fence of the term is
//! applied and reclaims deleted classes' storage (`reclaim.rs`), and its
//! end drops the shard's alarms and executors and stops the reclaim.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Registry, Runtime};
use crate::id::{ObjectKey, ShardId};
use crate::object::gate::Step;
use crate::object::socket::SharedHub;
use crate::object::{Error, alarms};
use crate::replication::ShardHandle;

impl Runtime {
    /// Follows this node's leadership of `shard`, term by term: a leader
    /// schedules the shard's alarms (retrying until it can, for as long as
    /// the term lasts); when a term ends (leadership lost, or lost and
    /// regained) the shard's alarms and executors are dropped.
    pub(super) async fn watch_leadership(self, shard: ShardHandle) {
        let mut leadership = shard.leadership();
        let mut current: Option<u64> = None;
        let mut reload: Option<CancellationToken> = None;
        // Alarms read by a term's reload come back here, so that they reach
        // the scheduler only while that term lasts: this task alone sends
        // a shard's `load` and `drop_shard`, in order.
        let (loaded_tx, mut loaded) = mpsc::unbounded_channel::<(u64, Vec<(u64, ObjectKey)>)>();
        loop {
            let leading = *leadership.borrow_and_update();
            if leading != current {
                if current.is_some() {
                    if let Some(r) = reload.take() {
                        r.cancel();
                    }
                    self.inner.alarms.drop_shard(shard.id());
                }
                if let Ok(mut objects) = self.objects(shard.id()) {
                    // A dispatch may have seen this epoch first and moved
                    // the registry already: its executors stay.
                    let _ = self.enter_epoch(shard.id(), &mut objects, leading);
                }
                if let Some(term) = leading {
                    let stop = self.inner.shutdown.child_token();
                    reload = Some(stop.clone());
                    self.inner.executors.spawn(self.clone().reclaim_deleted(
                        shard.clone(),
                        term,
                        stop.clone(),
                    ));
                    self.inner.executors.spawn(self.clone().load_alarms(
                        shard.clone(),
                        term,
                        stop,
                        loaded_tx.clone(),
                    ));
                }
                current = leading;
            }
            tokio::select! {
                changed = leadership.changed() => if changed.is_err() { return },
                Some((term, list)) = loaded.recv() => {
                    if current == Some(term) {
                        self.inner.alarms.load(list);
                    }
                }
                _ = self.inner.shutdown.cancelled() => return,
            }
        }
    }

    /// Schedules the alarms of `shard` for a leader of `term`, once a fence
    /// of that term is applied (so alarms set by entries of earlier terms
    /// that commit late are read too). A failed fence (a slow follower
    /// during failover is enough) is retried while the term lasts.
    async fn load_alarms(
        self,
        shard: ShardHandle,
        term: u64,
        stop: CancellationToken,
        loaded: mpsc::UnboundedSender<(u64, Vec<(u64, ObjectKey)>)>,
    ) {
        let mut reload = alarms::Reload::new(term);
        loop {
            let fenced = match shard.fence(term).await {
                Ok(commit) => commit.await,
                Err(e) => Err(e),
            };
            if let Err(e) = &fenced {
                tracing::warn!(shard = shard.id(), term, error = %e, "cannot load alarms yet");
            }
            match reload.next(fenced.is_ok(), shard.leader_epoch()) {
                alarms::ReloadStep::Load => break,
                alarms::ReloadStep::Stop => return,
                alarms::ReloadStep::Retry(after) => tokio::select! {
                    _ = tokio::time::sleep(after) => {}
                    _ = stop.cancelled() => return,
                },
            }
        }
        if stop.is_cancelled() {
            return;
        }
        match self.inner.db.shard_alarms(shard.id()) {
            Ok(list) => {
                // Stored under identities; scheduled under the bindings that
                // serve them (a deleted class's alarms are not run).
                let served = list
                    .into_iter()
                    .filter_map(|(at, stored)| Some((at, self.served_key(&stored)?)))
                    .collect();
                let _ = loaded.send((term, served));
            }
            Err(e) => tracing::error!(shard = shard.id(), error = %e, "read alarms"),
        }
    }
}

impl Runtime {
    /// Moves a shard's registry to leadership epoch `leading` if it is
    /// newer than the one it serves (or `None`, leadership lost): every
    /// executor registered belongs to the ended epoch and is dropped (each
    /// also sees its epoch end and fails what it still holds), and the
    /// objects' sockets are handed over to whoever leads next (a later
    /// epoch here starts with none: edges re-attach them). Called under
    /// the shard's lock by whoever sees the new epoch first — the
    /// leadership watcher, or a dispatch that read it before the watcher
    /// ran — so a registry moves to each epoch once, and never drops an
    /// executor of the epoch it serves (see `gate::Tenure`). `NotOwner` if
    /// `leading` is an epoch the registry has already left.
    pub(super) fn enter_epoch(
        &self,
        shard: ShardId,
        objects: &mut Registry,
        leading: Option<u64>,
    ) -> Result<(), Error> {
        match objects.tenure.observe(leading) {
            Step::Same => Ok(()),
            Step::Stale => Err(Error::NotOwner { shard }),
            Step::Moved => {
                let mut moving = Vec::new();
                for (key, entry) in objects.iter_mut() {
                    // Dropping the senders ends the executors.
                    let finished = entry.executor.take().map(|h| h.finished);
                    self.inner.budget.forget(key);
                    if !entry.hub.is_empty() {
                        moving.push((entry.hub.clone(), finished));
                    }
                }
                objects.clear();
                if !moving.is_empty() {
                    self.inner.executors.spawn(hand_over_sockets(moving));
                }
                Ok(())
            }
        }
    }
}

/// How long an ended term's executor may take to let its committed outputs
/// out before its sockets are handed over anyway.
const HAND_OVER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Tells the bridges of an ended term's sockets that their owner changed,
/// each once its object's executor has let out every output it committed
/// (so the bridge has every frame and attachment released before it).
async fn hand_over_sockets(moving: Vec<(SharedHub, Option<CancellationToken>)>) {
    let each = moving.into_iter().map(|(hub, finished)| async move {
        if let Some(finished) = finished {
            let _ = tokio::time::timeout(HAND_OVER_WAIT, finished.cancelled()).await;
        }
        hub.moved();
    });
    futures_util::future::join_all(each).await;
}
