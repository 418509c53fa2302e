//! The control plane of one worker ([`ControlPlane`]): configs live in redb, every task runs
//! here, so its lease is always held, and there is no other worker to report to or ask.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;

use super::{Storage, StoredConnector};
use crate::worker::control::{ControlError, ControlPlane, Owner, RemoteTask, TaskLease};
use crate::worker::{RestartRequest, TaskStatus};

/// The embedded control plane.
pub struct EmbeddedControl(pub Arc<Storage>);

#[async_trait::async_trait]
impl ControlPlane for EmbeddedControl {
    async fn persist_config(
        &self,
        name: &str,
        stored: Option<&StoredConnector>,
    ) -> Result<u64, ControlError> {
        match stored {
            Some(stored) => self.0.state.put_connector(name, stored)?,
            None => self.0.state.delete_connector(name)?,
        }
        Ok(0)
    }

    async fn stored_connectors(&self) -> Result<Vec<(String, StoredConnector)>, ControlError> {
        Ok(self.0.state.connectors()?.into_iter().collect())
    }

    fn tasks_here(&self, _connector: &str, tasks: usize) -> Vec<usize> {
        (0..tasks).collect()
    }

    fn connector_owner(&self, _connector: &str) -> Owner {
        Owner::Here
    }

    async fn other_workers(&self) -> Vec<String> {
        Vec::new()
    }

    async fn remote_tasks(&self, _connector: &str, _tasks: usize) -> BTreeMap<usize, RemoteTask> {
        BTreeMap::new()
    }

    async fn restart_elsewhere(&self, _request: &RestartRequest) -> bool {
        false
    }

    async fn lease_task(
        &self,
        _connector: &str,
        _task: u32,
        _stop: &mut watch::Receiver<bool>,
    ) -> Option<Box<dyn TaskLease>> {
        Some(Box::new(AlwaysHeld))
    }

    async fn report_states(
        &self,
        _connector: String,
        _task: u32,
        _states: watch::Receiver<TaskStatus>,
    ) {
    }
}

/// The lease of a task on the only worker: never lost.
struct AlwaysHeld;

#[async_trait::async_trait]
impl TaskLease for AlwaysHeld {
    async fn keep(&mut self) -> String {
        std::future::pending().await
    }

    async fn release(self: Box<Self>) {}
}
