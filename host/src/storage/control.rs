//! The control plane of one worker ([`ControlPlane`]): every task runs here, so its lease is
//! always held, and no other worker reads its states.

use tokio::sync::watch;

use crate::worker::control::{ControlPlane, TaskLease};
use crate::worker::TaskStatus;

/// The embedded control plane.
pub struct EmbeddedControl;

#[async_trait::async_trait]
impl ControlPlane for EmbeddedControl {
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
