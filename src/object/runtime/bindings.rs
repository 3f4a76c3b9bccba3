//! The classes a node serves, by binding name, and their migrations: what
//! an app hands the runtime (`Bindings`), and how the runtime spawns an
//! executor of a class without knowing its type.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use crate::object::Error;
use crate::object::budget::Slot;
use crate::object::class::DurableObject;
use crate::object::executor::{self, Activation, Queued};
use crate::object::migrations::{Migrations, Namespaces};

/// Spawns executors of one class without knowing its type.
pub(super) trait Class: Send + Sync {
    /// Spawns the executor; it holds `slot` until its task ends.
    fn spawn(
        &self,
        tracker: &TaskTracker,
        act: Activation,
        mailbox: mpsc::Receiver<Queued>,
        slot: Slot,
    );
}

struct ClassOf<T>(PhantomData<fn() -> T>);

impl<T: DurableObject> Class for ClassOf<T> {
    fn spawn(
        &self,
        tracker: &TaskTracker,
        act: Activation,
        mailbox: mpsc::Receiver<Queued>,
        slot: Slot,
    ) {
        tracker.spawn(async move {
            executor::run::<T>(act, mailbox).await;
            drop(slot);
        });
    }
}

/// The classes served by a node, by binding name (e.g. `COUNTER`), and
/// the class migrations (renamed and deleted classes, `migrations.rs`).
#[derive(Default)]
pub struct Bindings {
    pub(super) classes: BTreeMap<Arc<str>, Arc<dyn Class>>,
    migrations: Migrations,
}

impl Bindings {
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves class `T` under `binding`. Names are 1..=255 bytes.
    pub fn bind<T: DurableObject>(mut self, binding: &str) -> Self {
        self.classes
            .insert(Arc::from(binding), Arc::new(ClassOf::<T>(PhantomData)));
        self
    }

    /// Class `old` is now bound as `new` (bind `new`, not `old`): its
    /// objects keep their ids, storage and alarms; `old` is no longer
    /// served.
    pub fn renamed(mut self, old: &str, new: &str) -> Self {
        self.migrations.rename(old, new);
        self
    }

    /// Class `name` is gone (and not bound): its objects' storage and
    /// alarms are reclaimed in the background.
    pub fn deleted(mut self, name: &str) -> Self {
        self.migrations.delete(name);
        self
    }

    /// Adds `migrations` (e.g. from the config's `[objects]`).
    pub fn with_migrations(mut self, migrations: &Migrations) -> Self {
        self.migrations.extend(migrations);
        self
    }

    pub fn names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.classes.keys()
    }

    /// The bound names with their storage identities, after the
    /// migrations; an error if the names or the migrations conflict.
    pub fn namespaces(&self) -> Result<Namespaces, Error> {
        for name in self.classes.keys() {
            if name.is_empty() || name.len() > 255 {
                return Err(Error::InvalidBinding(name.to_string()));
            }
        }
        Ok(Namespaces::resolve(
            self.classes.keys().cloned(),
            &self.migrations,
        )?)
    }
}
