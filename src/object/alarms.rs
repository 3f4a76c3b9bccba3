//! The alarm scheduler: fires each object's alarm at or after its time.
//!
//! Alarms live in the shard's replicated state (`storage::keys`); this
//! actor keeps an in-memory timetable of the shards this node leads, fed by
//! a scan when leadership is gained and by every committed alarm change.
//! Delivery is at least once: an alarm leaves storage only when a handler
//! run that saw it commits. A failed run is retried with exponential backoff
//! from 2 s, up to [`MAX_RETRIES`] times, then dropped.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::class::AlarmInfo;
use super::executor::Event;
use super::runtime::Runtime;
use crate::id::{ObjectKey, ShardId};
use crate::telemetry::metrics::{self, AlarmEvent};

/// Retries after the first failed run (Cloudflare: 6).
pub const MAX_RETRIES: u32 = 6;
/// The first retry's delay; each later one doubles it.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(2);

pub(crate) enum Msg {
    /// The object's committed alarm is now `at` (`None`: no alarm).
    Set {
        key: ObjectKey,
        at: Option<u64>,
    },
    Load {
        alarms: Vec<(u64, ObjectKey)>,
    },
    DropShard {
        shard: ShardId,
    },
    Outcome {
        key: ObjectKey,
        at: u64,
        ok: bool,
    },
    /// An executor fenced and read the object's committed alarm: make the
    /// timetable agree (without restarting a run of the same alarm).
    Sync {
        key: ObjectKey,
        at: Option<u64>,
    },
    /// A write that changed the object's alarm failed with its outcome
    /// unknown (it may still commit): activate the object until a fresh
    /// executor has fenced and synced its alarm.
    Recheck {
        key: ObjectKey,
    },
    Rechecked {
        key: ObjectKey,
        ok: bool,
    },
}

/// A cheap handle to the scheduler.
#[derive(Clone)]
pub(crate) struct AlarmsHandle {
    tx: mpsc::UnboundedSender<Msg>,
}

impl AlarmsHandle {
    pub fn new() -> (AlarmsHandle, mpsc::UnboundedReceiver<Msg>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (AlarmsHandle { tx }, rx)
    }

    pub fn set(&self, key: ObjectKey, at: Option<u64>) {
        let _ = self.tx.send(Msg::Set { key, at });
    }

    pub fn load(&self, alarms: Vec<(u64, ObjectKey)>) {
        let _ = self.tx.send(Msg::Load { alarms });
    }

    pub fn drop_shard(&self, shard: ShardId) {
        let _ = self.tx.send(Msg::DropShard { shard });
    }

    pub fn sync(&self, key: ObjectKey, at: Option<u64>) {
        let _ = self.tx.send(Msg::Sync { key, at });
    }

    pub fn recheck(&self, key: ObjectKey) {
        let _ = self.tx.send(Msg::Recheck { key });
    }
}

/// How often an object whose alarm write had an unknown outcome is
/// activated again until a fresh executor synced its alarm.
const RECHECK_EVERY: Duration = Duration::from_millis(250);

/// The alarm reload of one leadership term: what to do after each attempt
/// to fence the shard (the reload reads stored alarms only after a fence of
/// its term is applied, so alarms set by entries of earlier terms that
/// commit late are seen). Pure.
#[derive(Debug)]
pub(crate) struct Reload {
    term: u64,
    failures: u32,
}

/// The next step of a [`Reload`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReloadStep {
    /// The fence is applied: read and schedule the shard's alarms.
    Load,
    /// Try again after this long.
    Retry(Duration),
    /// The term ended: the next term's reload takes over.
    Stop,
}

impl Reload {
    pub fn new(term: u64) -> Reload {
        Reload { term, failures: 0 }
    }

    /// After a fence attempt that was `applied` or not, while this node
    /// leads in `leading`.
    pub fn next(&mut self, applied: bool, leading: Option<u64>) -> ReloadStep {
        if leading != Some(self.term) {
            return ReloadStep::Stop;
        }
        if applied {
            return ReloadStep::Load;
        }
        self.failures = self.failures.saturating_add(1);
        let backoff = 50u64.saturating_mul(1 << self.failures.min(5)).min(2_000);
        ReloadStep::Retry(Duration::from_millis(backoff))
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

struct Scheduled {
    /// The alarm's time as stored.
    at: u64,
    /// When to run it next (later than `at` while retrying).
    fire_at: u64,
    retries: u32,
    /// A run is in progress; its outcome decides what comes next.
    running: bool,
}

/// The timetable. Pure: no I/O, no clock; tested below.
#[derive(Default)]
struct Timetable {
    due: BTreeSet<(u64, ObjectKey)>,
    entries: HashMap<ObjectKey, Scheduled>,
}

/// What the timetable asks the scheduler to do.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Run(ObjectKey, AlarmInfo),
    GiveUp(ObjectKey, u64),
}

impl Timetable {
    fn set(&mut self, key: ObjectKey, at: Option<u64>) {
        if let Some(old) = self.entries.remove(&key) {
            self.due.remove(&(old.fire_at, key.clone()));
        }
        if let Some(at) = at {
            self.due.insert((at, key.clone()));
            self.entries.insert(
                key,
                Scheduled {
                    at,
                    fire_at: at,
                    retries: 0,
                    running: false,
                },
            );
        }
    }

    /// Makes the entry of `key` say `at` (its committed alarm), keeping an
    /// entry that already does (it may be running or backing off).
    fn sync(&mut self, key: ObjectKey, at: Option<u64>) {
        if self.entries.get(&key).map(|e| e.at) != at {
            self.set(key, at);
        }
    }

    fn load(&mut self, alarms: Vec<(u64, ObjectKey)>) {
        for (at, key) in alarms {
            if !self.entries.contains_key(&key) {
                self.set(key, Some(at));
            }
        }
    }

    fn drop_shard(&mut self, shard_of: impl Fn(&ObjectKey) -> ShardId, shard: ShardId) {
        let keys: Vec<ObjectKey> = self
            .entries
            .keys()
            .filter(|k| shard_of(k) == shard)
            .cloned()
            .collect();
        for key in keys {
            self.set(key, None);
        }
    }

    fn next_due(&self) -> Option<u64> {
        self.due.first().map(|(t, _)| *t)
    }

    /// Takes every alarm due at `now`, marking it running.
    fn take_due(&mut self, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        while let Some((t, key)) = self.due.first().cloned() {
            if t > now {
                break;
            }
            self.due.remove(&(t, key.clone()));
            if let Some(entry) = self.entries.get_mut(&key) {
                entry.running = true;
                out.push(Action::Run(
                    key,
                    AlarmInfo {
                        scheduled_ms: entry.at,
                        retry_count: entry.retries,
                    },
                ));
            }
        }
        out
    }

    /// Records how a run of the alarm at `at` ended.
    fn outcome(&mut self, key: ObjectKey, at: u64, ok: bool, now: u64) -> Option<Action> {
        let entry = self.entries.get_mut(&key)?;
        if entry.at != at || !entry.running {
            return None; // replaced meanwhile
        }
        entry.running = false;
        if ok {
            self.entries.remove(&key);
            return None;
        }
        entry.retries += 1;
        if entry.retries > MAX_RETRIES {
            self.entries.remove(&key);
            return Some(Action::GiveUp(key, at));
        }
        let backoff = FIRST_BACKOFF.as_millis() as u64 * (1u64 << (entry.retries - 1));
        entry.fire_at = now + backoff;
        self.due.insert((entry.fire_at, key));
        None
    }
}

pub(crate) async fn run_scheduler(
    runtime: Runtime,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    shutdown: CancellationToken,
) {
    let (outcome_tx, mut outcome_rx) = mpsc::unbounded_channel::<Msg>();
    let mut table = Timetable::default();
    // Objects to activate until their alarm is synced, and when next.
    let mut rechecks: HashMap<ObjectKey, u64> = HashMap::new();
    loop {
        let next = table
            .next_due()
            .into_iter()
            .chain(rechecks.values().copied())
            .min();
        let sleep = match next {
            Some(t) => Duration::from_millis(t.saturating_sub(now_ms())),
            None => Duration::from_secs(3600),
        };
        let msg = tokio::select! {
            msg = rx.recv() => match msg { Some(m) => Some(m), None => return },
            msg = outcome_rx.recv() => msg,
            _ = tokio::time::sleep(sleep) => None,
            _ = shutdown.cancelled() => return,
        };
        match msg {
            Some(Msg::Set { key, at }) => {
                if at.is_some() {
                    metrics::alarm(&key.namespace, AlarmEvent::Scheduled);
                }
                table.set(key, at)
            }
            Some(Msg::Load { alarms }) => table.load(alarms),
            Some(Msg::DropShard { shard }) => {
                let shards = runtime.shard_count();
                table.drop_shard(|k| k.id.shard(shards), shard);
                // The next leader's reload (after its fence) covers them.
                rechecks.retain(|k, _| k.id.shard(shards) != shard);
            }
            Some(Msg::Sync { key, at }) => table.sync(key, at),
            Some(Msg::Recheck { key }) => {
                rechecks.insert(key, now_ms());
            }
            Some(Msg::Rechecked { key, ok }) => {
                if ok {
                    rechecks.remove(&key);
                } else if let Some(at) = rechecks.get_mut(&key) {
                    *at = now_ms() + RECHECK_EVERY.as_millis() as u64;
                }
            }
            Some(Msg::Outcome { key, at, ok }) => {
                // Still the run we started (not replaced meanwhile)?
                let ours = table
                    .entries
                    .get(&key)
                    .is_some_and(|e| e.at == at && e.running);
                match table.outcome(key.clone(), at, ok, now_ms()) {
                    Some(Action::GiveUp(key, at)) => {
                        metrics::alarm(&key.namespace, AlarmEvent::Failed);
                        let _ = runtime.dispatch(&key, Event::AlarmGiveUp { scheduled_ms: at });
                    }
                    _ if ours && !ok => metrics::alarm(&key.namespace, AlarmEvent::Retried),
                    _ => {}
                }
            }
            None => {}
        }
        let now = now_ms();
        for (key, at) in rechecks.iter_mut() {
            if *at <= now {
                // Not again until this one answers (or a while passes).
                *at = now + 4 * RECHECK_EVERY.as_millis() as u64;
                recheck(&runtime, &outcome_tx, key.clone());
            }
        }
        for action in table.take_due(now_ms()) {
            if let Action::Run(key, info) = action {
                metrics::alarm(&key.namespace, AlarmEvent::Fired);
                fire(&runtime, &outcome_tx, key, info);
            }
        }
        metrics::alarms_pending(table.entries.len());
    }
}

fn fire(runtime: &Runtime, outcomes: &mpsc::UnboundedSender<Msg>, key: ObjectKey, info: AlarmInfo) {
    let (reply, done) = oneshot::channel();
    let at = info.scheduled_ms;
    if let Err(e) = runtime.dispatch(&key, Event::Alarm { info, reply }) {
        tracing::warn!(object = %key, error = %e, "cannot run alarm");
        let _ = outcomes.send(Msg::Outcome { key, at, ok: false });
        return;
    }
    let outcomes = outcomes.clone();
    tokio::spawn(async move {
        let ok = done.await.unwrap_or(false);
        let _ = outcomes.send(Msg::Outcome { key, at, ok });
    });
}

fn recheck(runtime: &Runtime, outcomes: &mpsc::UnboundedSender<Msg>, key: ObjectKey) {
    let (reply, done) = oneshot::channel();
    if runtime.dispatch(&key, Event::AlarmSync { reply }).is_err() {
        let _ = outcomes.send(Msg::Rechecked { key, ok: false });
        return;
    }
    let outcomes = outcomes.clone();
    tokio::spawn(async move {
        let ok = done.await.unwrap_or(false);
        let _ = outcomes.send(Msg::Rechecked { key, ok });
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ObjectId;

    fn key(n: &str) -> ObjectKey {
        ObjectKey::new("NS", ObjectId::from_name("NS", n))
    }

    #[test]
    fn fires_in_time_order_once() {
        let mut t = Timetable::default();
        t.set(key("b"), Some(20));
        t.set(key("a"), Some(10));
        assert_eq!(t.next_due(), Some(10));
        assert!(t.take_due(5).is_empty());
        let run = t.take_due(25);
        assert_eq!(run.len(), 2);
        assert!(matches!(&run[0], Action::Run(k, i) if *k == key("a") && i.scheduled_ms == 10));
        assert!(
            t.take_due(100).is_empty(),
            "running alarms are not fired twice"
        );
        assert_eq!(t.outcome(key("a"), 10, true, 30), None);
        assert!(!t.entries.contains_key(&key("a")));
    }

    #[test]
    fn failures_back_off_exponentially_then_give_up() {
        let mut t = Timetable::default();
        t.set(key("a"), Some(0));
        let mut now = 0;
        let mut delays = Vec::new();
        for _ in 0..=MAX_RETRIES {
            let run = t.take_due(now);
            assert_eq!(run.len(), 1);
            match t.outcome(key("a"), 0, false, now) {
                None => {
                    let next = t.next_due().expect("retry scheduled");
                    delays.push(next - now);
                    now = next;
                }
                Some(action) => {
                    assert_eq!(action, Action::GiveUp(key("a"), 0));
                }
            }
        }
        assert_eq!(delays, vec![2000, 4000, 8000, 16000, 32000, 64000]);
        assert!(t.entries.is_empty());
    }

    #[test]
    fn a_new_alarm_replaces_a_running_one() {
        let mut t = Timetable::default();
        t.set(key("a"), Some(10));
        assert_eq!(t.take_due(10).len(), 1);
        t.set(key("a"), Some(50));
        assert_eq!(t.outcome(key("a"), 10, false, 11), None);
        assert_eq!(t.next_due(), Some(50));
    }

    /// Defect 3: the alarm reload of a term is retried until its fence is
    /// applied, for as long as the term lasts; then it stops.
    #[test]
    fn alarm_reload_is_retried_until_it_succeeds_while_the_term_lasts() {
        let mut r = Reload::new(7);
        let mut waited = Vec::new();
        for _ in 0..8 {
            match r.next(false, Some(7)) {
                ReloadStep::Retry(d) => waited.push(d.as_millis()),
                other => panic!("a failed fence must be retried, got {other:?}"),
            }
        }
        assert_eq!(waited, vec![100, 200, 400, 800, 1600, 1600, 1600, 1600]);
        assert_eq!(r.next(true, Some(7)), ReloadStep::Load);
        assert_eq!(
            r.next(false, Some(8)),
            ReloadStep::Stop,
            "a new term reloads itself"
        );
        assert_eq!(Reload::new(7).next(true, None), ReloadStep::Stop);
    }

    /// Defect 2 (alarms): an activation syncs the timetable with the
    /// object's committed alarm, which a write with an unknown outcome may
    /// have changed, without restarting a run of the same alarm.
    #[test]
    fn an_activation_syncs_the_committed_alarm() {
        let mut t = Timetable::default();
        t.set(key("a"), Some(10));
        assert_eq!(t.take_due(10).len(), 1);
        t.sync(key("a"), Some(10));
        assert!(t.entries[&key("a")].running, "the run in progress is kept");
        assert!(t.take_due(100).is_empty(), "and not fired twice");
        t.sync(key("b"), Some(20));
        t.sync(key("a"), Some(30));
        assert_eq!(t.entries[&key("a")].at, 30);
        assert_eq!(t.next_due(), Some(20));
        t.sync(key("b"), None);
        assert!(!t.entries.contains_key(&key("b")));
    }

    #[test]
    fn loading_keeps_newer_state() {
        let mut t = Timetable::default();
        t.set(key("a"), Some(99));
        t.load(vec![(5, key("a")), (7, key("b"))]);
        assert_eq!(t.entries[&key("a")].at, 99);
        assert_eq!(t.entries[&key("b")].at, 7);
        t.drop_shard(|k| if *k == key("b") { 1 } else { 0 }, 1);
        assert!(!t.entries.contains_key(&key("b")));
    }
}
