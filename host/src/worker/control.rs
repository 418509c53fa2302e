//! The control plane: the seam between the worker and who decides what runs where. It owns
//! where connector configs are persisted (and which to restore at start), the placement of
//! connectors and tasks (which run here, who owns the rest, which workers are alive), the
//! task lease (a task runs only while its worker holds the lease), the task state reports
//! other workers read, and the restart requests sent to them. `storage::EmbeddedControl`
//! implements it for one worker (every task here, every lease always held, nobody to tell),
//! `cluster::Cluster` over NATS KV. Chosen once at start, like the data plane
//! ([`super::plane`]).
//!
//! The other way round, a control plane that learns of changes made elsewhere (another
//! worker's API, a new assignment) applies them through [`Reconcile`], which the worker
//! implements: the control plane never sees the worker itself.

use std::collections::BTreeMap;

use tokio::sync::watch;

use super::lifecycle::{LifecycleError, RestartRequest};
use super::task::TaskStatus;
use crate::storage::{StateError, StoredConnector};

/// A failure of the cluster's servers, whatever the control plane behind it.
pub type RemoteError = Box<dyn std::error::Error + Send + Sync>;

/// Why the control plane could not do what the worker asked.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    State(#[from] StateError),
    /// The cluster's servers did not answer or refused.
    #[error("cannot store connector {connector} in the cluster: {source}")]
    Persist {
        connector: String,
        #[source]
        source: RemoteError,
    },
}

/// Who owns a connector (runs its connector-level work and answers for it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This worker (always, on a single worker).
    Here,
    /// Another worker, by id.
    Worker(String),
    /// No worker yet (before the first assignment that names it).
    Unassigned,
}

/// What this worker knows of a task that may run on another worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTask {
    /// The worker the placement gives it ("" when none).
    pub owner: String,
    /// What that worker last reported; None until it has reported since it got the task.
    pub reported: Option<TaskStatus>,
}

/// Who may run which task, and what the others know of it (see the module doc).
#[async_trait::async_trait]
pub trait ControlPlane: Send + Sync + 'static {
    /// Stores a connector's config, or deletes it with None; returns the revision of the
    /// change (0 on a single worker).
    async fn persist_config(
        &self,
        name: &str,
        stored: Option<&StoredConnector>,
    ) -> Result<u64, ControlError>;

    /// The connectors the worker restores at start. Empty when the control plane hands them
    /// over itself, through [`Reconcile::apply_stored`] (a cluster's coordinator).
    async fn stored_connectors(&self) -> Result<Vec<(String, StoredConnector)>, ControlError>;

    /// The task numbers of a connector (of `tasks`) this worker runs.
    fn tasks_here(&self, connector: &str, tasks: usize) -> Vec<usize>;

    /// The worker that owns a connector.
    fn connector_owner(&self, connector: &str) -> Owner;

    /// The ids of the other live workers, sorted (none on a single worker).
    async fn other_workers(&self) -> Vec<String>;

    /// By task number (of `tasks`), what the placement and the reports say of the tasks of
    /// a connector; empty when every task runs here.
    async fn remote_tasks(&self, connector: &str, tasks: usize) -> BTreeMap<usize, RemoteTask>;

    /// Asks the other workers to restart the tasks `request` names that they run; false
    /// when there is no other worker to ask.
    async fn restart_elsewhere(&self, request: &RestartRequest) -> bool;

    /// Waits until this worker holds the lease of one task, or `stop` turns true (None).
    async fn lease_task(
        &self,
        connector: &str,
        task: u32,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Box<dyn TaskLease>>;

    /// Reports every state of one task until the task ends (its state sender is dropped).
    async fn report_states(
        &self,
        connector: String,
        task: u32,
        states: watch::Receiver<TaskStatus>,
    );
}

/// This worker's lease on one task.
#[async_trait::async_trait]
pub trait TaskLease: Send {
    /// Keeps the lease; returns why, once it is lost.
    async fn keep(&mut self) -> String;

    /// Gives the lease up, so the task's next worker starts it at once.
    async fn release(self: Box<Self>);
}

/// How a control plane applies to the worker what it learned elsewhere: the only calls it
/// makes into the worker.
#[async_trait::async_trait]
pub trait Reconcile: Send + Sync + 'static {
    /// Applies a connector config seen at `revision`, unless the worker already has that
    /// revision or a newer one.
    async fn apply_stored(&self, name: &str, stored: StoredConnector, revision: u64);

    /// Applies a connector deletion seen at `revision`.
    async fn apply_deleted(&self, name: &str, revision: u64);

    /// The placement changed ([`ControlPlane::tasks_here`] answers anew): starts the tasks
    /// now given to this worker and stops the ones taken away.
    async fn placement_changed(&self);

    /// The number of tasks of every connector that should run, by name.
    async fn task_counts(&self) -> BTreeMap<String, usize>;

    /// Restarts the tasks running on this worker that `request` names; returns their ids.
    async fn restart_here(&self, request: &RestartRequest) -> Result<Vec<usize>, LifecycleError>;
}
