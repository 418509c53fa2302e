//! Where a connector's config is kept and which of its tasks run here, as the control plane
//! says ([`super::control`]): everything, kept in redb, on a single worker; in cluster mode
//! the cluster's config bucket and the share of tasks the leader's assignment gives this
//! worker. Changes made elsewhere arrive through [`Reconcile`].

use std::collections::BTreeMap;

use super::control::{Owner, Reconcile};
use super::lifecycle::{LifecycleError, RestartRequest};
use super::{RunningConnector, Worker};
use crate::storage::{StoredConnector, TargetState};

impl Worker {
    /// Stores a connector's config, or deletes it with None; returns the cluster revision of
    /// the change (0 without a cluster).
    pub(super) async fn persist(
        &self,
        name: &str,
        stored: Option<&StoredConnector>,
    ) -> Result<u64, String> {
        let revision = self.control.persist_config(name, stored).await;
        revision.map_err(|e| e.to_string())
    }

    /// The task numbers of a connector (of `tasks`) this worker runs.
    pub(super) fn my_tasks(&self, name: &str, tasks: usize) -> Vec<usize> {
        self.control.tasks_here(name, tasks)
    }

    /// The id of the worker that owns a connector ("" while it has none).
    pub(super) fn owner_id(&self, name: &str) -> String {
        match self.control.connector_owner(name) {
            Owner::Here => self.id.clone(),
            Owner::Worker(id) => id,
            Owner::Unassigned => String::new(),
        }
    }

    /// The ids of the cluster's live workers, this one included, sorted.
    pub async fn live_workers(&self) -> Vec<String> {
        let mut workers = self.control.other_workers().await;
        workers.push(self.id.clone());
        workers.sort();
        workers.dedup();
        workers
    }

    /// This worker's share, by connector: whether it owns the connector itself, and the
    /// tasks it runs.
    pub async fn allocated(&self) -> BTreeMap<String, (bool, Vec<usize>)> {
        let connectors = self.connectors.lock().await;
        connectors
            .iter()
            .map(|(name, running)| {
                let owns = self.control.connector_owner(name) == Owner::Here;
                (
                    name.clone(),
                    (owns, running.tasks.keys().copied().collect()),
                )
            })
            .collect()
    }

    /// Makes the tasks running here those this worker is assigned; returns how many started.
    /// A task moved away is told to stop without waiting; one started here waits for this
    /// worker's stopping tasks of the connector (and, like every task in a cluster, for the
    /// task's lock, which its previous owner frees once it has ended).
    fn reconcile(&self, name: &str, running: &mut RunningConnector) -> usize {
        if running.stored.target == TargetState::Stopped {
            return 0;
        }
        let mine = self.my_tasks(name, running.stored.tasks.len());
        let gone: Vec<usize> = running
            .tasks
            .keys()
            .filter(|task| !mine.contains(task))
            .copied()
            .collect();
        for task in &gone {
            tracing::info!(task = %format!("{name}/{task}"), "task moved to another worker");
        }
        self.slots.retire(
            name,
            gone.iter().filter_map(|task| running.tasks.remove(task)),
        );
        if running.plugin.is_none() {
            running.plugin = self.plugin_for(name, running);
        }
        let new: Vec<usize> = mine
            .into_iter()
            .filter(|task| !running.tasks.contains_key(task))
            .collect();
        let fresh = self.start_tasks_subset(name, running, &new, self.slots.stopping(name));
        let count = fresh.len();
        running.tasks.extend(fresh);
        count
    }
}

#[async_trait::async_trait]
impl Reconcile for Worker {
    async fn apply_stored(&self, name: &str, stored: StoredConnector, revision: u64) {
        let change = self.slots.change(name).await;
        let mut connectors = self.connectors.lock().await;
        if let Some(existing) = connectors.get_mut(name) {
            if existing.revision >= revision {
                return;
            }
            if existing.stored == stored {
                existing.revision = revision;
                return;
            }
        }
        tracing::info!(connector = %name, revision, "applying the cluster's config");
        let (events, why) = match connectors.remove(name) {
            Some(old) => {
                change.stop_all(old.tasks.into_values());
                (old.events, "config updated in the cluster")
            }
            None => (Default::default(), "created in the cluster"),
        };
        let running = RunningConnector::idle(stored, revision, events, why);
        let running = self.run(name, running, change.stopping());
        connectors.insert(name.to_string(), running);
    }

    async fn apply_deleted(&self, name: &str, revision: u64) {
        let change = self.slots.change(name).await;
        let mut connectors = self.connectors.lock().await;
        if connectors.get(name).is_none_or(|c| c.revision >= revision) {
            return;
        }
        tracing::info!(connector = %name, revision, "connector deleted in the cluster");
        if let Some(old) = connectors.remove(name) {
            change.stop_all(old.tasks.into_values());
        }
    }

    async fn placement_changed(&self) {
        let mut connectors = self.connectors.lock().await;
        let mut started = 0;
        for (name, running) in connectors.iter_mut() {
            started += self.reconcile(name, running);
        }
        let running: usize = connectors.values().map(|c| c.tasks.len()).sum();
        tracing::info!(running, started, "applied the cluster's assignment");
    }

    async fn task_counts(&self) -> BTreeMap<String, usize> {
        self.connectors
            .lock()
            .await
            .iter()
            .filter(|(_, c)| c.stored.target != TargetState::Stopped)
            .map(|(name, c)| (name.clone(), c.stored.tasks.len()))
            .collect()
    }

    async fn restart_here(&self, request: &RestartRequest) -> Result<Vec<usize>, LifecycleError> {
        Worker::restart_here(self, request).await
    }
}
