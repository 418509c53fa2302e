//! The control plane: the seam between the worker and who decides what runs where. So far it
//! owns where connector configs are persisted, the task lease (a task runs only while its
//! worker holds the lease) and the task state reports other workers read. `storage::EmbeddedControl` implements it for one worker (every
//! lease always held, nothing to report to), `cluster::Cluster` over NATS KV. Chosen once at
//! start, like the data plane ([`super::plane`]).

use tokio::sync::watch;

use super::task::TaskStatus;
use crate::storage::{StateError, StoredConnector};

/// Why the control plane could not do what the worker asked.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    State(#[from] StateError),
    /// The cluster's servers did not answer or refused.
    #[error("{0}")]
    Cluster(String),
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
