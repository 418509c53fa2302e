//! Per-connector serialisation of state changes. A create, update, delete, target change,
//! restart or offset change of one connector holds that connector's [`Change`] from its
//! check to its last write, so each is one atomic step with respect to the others; changes
//! of different connectors run in parallel. Each connector's slot also remembers its tasks
//! told to stop that may still run, so that new tasks of the same name start after them.
//!
//! Nothing here waits on a guest: a change is held across store writes, never across a
//! guest call or a task's end (waiting for stopping tasks happens after letting go of it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::OwnedMutexGuard;

use super::task::{Stopping, TaskHandle};

/// One connector's slot: its change lock and its tasks still stopping.
#[derive(Default)]
struct Slot {
    change: Arc<tokio::sync::Mutex<()>>,
    stopping: Mutex<Stopping>,
}

impl Slot {
    fn stopping(&self) -> MutexGuard<'_, Stopping> {
        self.stopping.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The slots of the connectors that have a change under way or tasks still stopping.
#[derive(Default)]
pub(super) struct Slots(Mutex<HashMap<String, Arc<Slot>>>);

impl Slots {
    /// Waits for the right to change connector `name`, and holds it until dropped.
    pub async fn change(&self, name: &str) -> Change<'_> {
        let slot = self.slot(name);
        let held = slot.change.clone().lock_owned().await;
        Change {
            slots: self,
            slot: Some((slot, held)),
        }
    }

    /// Stops `tasks` of connector `name` outside a change (the cluster moving them away).
    pub fn retire(&self, name: &str, tasks: impl IntoIterator<Item = TaskHandle>) {
        self.slot(name).stopping().stop_all(tasks);
    }

    /// The tasks of connector `name` still stopping.
    pub fn stopping(&self, name: &str) -> Stopping {
        let slots = self.map();
        slots
            .get(name)
            .map(|slot| slot.stopping().clone())
            .unwrap_or_default()
    }

    /// Every task still stopping, of every connector.
    pub fn all_stopping(&self) -> Stopping {
        let mut all = Stopping::default();
        for slot in self.map().values() {
            all.add(slot.stopping().clone());
        }
        all
    }

    fn slot(&self, name: &str) -> Arc<Slot> {
        self.map().entry(name.to_string()).or_default().clone()
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Slot>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The right to change one connector; let go when dropped.
pub(super) struct Change<'s> {
    slots: &'s Slots,
    /// Taken on drop.
    slot: Option<(Arc<Slot>, OwnedMutexGuard<()>)>,
}

impl Change<'_> {
    /// Stops `tasks` of this connector (without waiting for them).
    pub fn stop_all(&self, tasks: impl IntoIterator<Item = TaskHandle>) {
        if let Some((slot, _)) = &self.slot {
            slot.stopping().stop_all(tasks);
        }
    }

    /// This connector's tasks still stopping: what a new task of it waits for.
    pub fn stopping(&self) -> Stopping {
        self.slot
            .as_ref()
            .map(|(slot, _)| slot.stopping().clone())
            .unwrap_or_default()
    }
}

impl Drop for Change<'_> {
    fn drop(&mut self) {
        drop(self.slot.take());
        // Forget the slots nobody holds whose tasks have all ended: the map stays as small as
        // the changes under way and the tasks stopping.
        self.slots
            .map()
            .retain(|_, slot| Arc::strong_count(slot) > 1 || !slot.stopping().is_done());
    }
}
