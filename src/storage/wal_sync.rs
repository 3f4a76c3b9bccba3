//! Group commit of the write-ahead log across every shard of the node.
//!
//! A Raft log append is written at once (so it is readable) without an
//! fsync, and its completion waits here. One thread fsyncs the WAL for
//! everything written before it started, then completes every waiter at
//! once: many shards' appends share one fsync.

use std::sync::mpsc;
use std::sync::{Arc, Weak};
use std::time::Instant;

use super::Error;
use super::db::Rocks;

/// Called once the writes made before it was queued are durable.
pub(crate) type Done = Box<dyn FnOnce(Result<(), Error>) + Send>;

/// The handle of the syncing thread; it ends when this is dropped.
pub(crate) struct WalSync {
    tx: mpsc::Sender<Done>,
}

impl WalSync {
    pub(crate) fn start(db: &Arc<Rocks>) -> std::io::Result<WalSync> {
        let (tx, rx) = mpsc::channel::<Done>();
        let db: Weak<Rocks> = Arc::downgrade(db);
        std::thread::Builder::new()
            .name("roost-wal-sync".into())
            .spawn(move || run(db, rx))?;
        Ok(WalSync { tx })
    }

    /// Queues `done` behind the next fsync.
    pub(crate) fn after_next_sync(&self, done: Done) -> Result<(), Error> {
        self.tx.send(done).map_err(|_| {
            Error::Io(
                "queue WAL sync".into(),
                std::io::Error::other("syncer stopped"),
            )
        })
    }
}

fn run(db: Weak<Rocks>, rx: mpsc::Receiver<Done>) {
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        waiting.extend(rx.try_iter());
        let result = match db.upgrade() {
            Some(db) => {
                let started = Instant::now();
                let synced = db.flush_wal(true).map_err(|e| e.to_string());
                crate::telemetry::metrics::rocksdb_sync(started.elapsed());
                synced
            }
            None => Err("the database is closed".to_owned()),
        };
        for done in waiting {
            done(
                result
                    .clone()
                    .map_err(|e| Error::Io("sync WAL".into(), std::io::Error::other(e))),
            );
        }
    }
}
