//! The activation journal: a diagnostic hook that lets a fault test see,
//! from outside, that one object never runs on two nodes (or in two
//! executors) at once.
//!
//! Off unless the environment variable `ROOST_ACTIVATION_JOURNAL` names a
//! file when the process starts. When on, every event an executor admits
//! appends one line to that file (opened with `O_APPEND`, one `write` per
//! line, so several processes may share it and a SIGKILL loses nothing
//! written):
//!
//! ```text
//! <CLOCK_MONOTONIC ns> <node id> <pid> <Raft term> <leadership epoch> <generation> <namespace>/<object id>
//! ```
//!
//! The time is read *before* the executor checks that its leadership epoch
//! still holds, so it is a lower bound of a moment the check passed. A
//! checker (the nemesis suite's `activations.rs`) groups the lines into
//! activations — `(pid, epoch, generation)` — and requires that, per
//! object, one node at most runs it in a Raft term, and the activations
//! ordered by term (then time) never overlap: each one's last admitted
//! event precedes the next one's first. (A node restarted after SIGKILL may
//! resume the leadership of its last term without an election, as openraft
//! does: a new process in the same term, numbering its epochs afresh.)
//! `CLOCK_MONOTONIC` is one clock for every process of a machine, network
//! namespaces included.
//!
//! Costs nothing when off (one `OnceLock` read per event).

use std::fs::File;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

use crate::id::ObjectKey;

/// The environment variable that turns the journal on.
pub const JOURNAL_ENV: &str = "ROOST_ACTIVATION_JOURNAL";

static JOURNAL: OnceLock<Option<Mutex<File>>> = OnceLock::new();

fn journal() -> Option<&'static Mutex<File>> {
    JOURNAL
        .get_or_init(|| {
            let path = std::env::var_os(JOURNAL_ENV)?;
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
            {
                Ok(file) => Some(Mutex::new(file)),
                Err(e) => {
                    tracing::warn!(error = %e, path = ?path, "cannot open the activation journal");
                    None
                }
            }
        })
        .as_ref()
}

/// A moment on `CLOCK_MONOTONIC`, in nanoseconds, if the journal is on.
pub(crate) fn stamp() -> Option<u64> {
    journal()?;
    Some(monotonic_ns())
}

/// What identifies an executor in the journal.
pub(crate) struct Executor<'a> {
    pub node: u64,
    pub key: &'a ObjectKey,
    /// Its leadership epoch (`replication::epoch_term` gives the term).
    pub epoch: u64,
    pub generation: u64,
}

/// Records that executor `exec` admitted an event whose check began at
/// `at` (from [`stamp`]).
pub(crate) fn admitted(at: Option<u64>, exec: Executor<'_>) {
    let (Some(at), Some(journal)) = (at, journal()) else {
        return;
    };
    let Executor {
        node,
        key,
        epoch,
        generation,
    } = exec;
    let line = format!(
        "{at} {node} {} {} {epoch} {generation} {key}\n",
        std::process::id(),
        crate::replication::epoch_term(epoch)
    );
    let Ok(mut file) = journal.lock() else {
        return;
    };
    if let Err(e) = file.write_all(line.as_bytes()) {
        tracing::warn!(error = %e, "cannot write the activation journal");
    }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec, and CLOCK_MONOTONIC
    // exists on every Linux (the call cannot fail with these arguments).
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}
