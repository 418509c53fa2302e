//! Connector lifecycle beyond create and delete: pause, resume, stop, restart, and the
//! status the APIs report.

use super::task::TaskStatus;
use super::{stop_all, Worker};
use crate::storage::TargetState;

/// Why a lifecycle request was refused.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("Connector {0} not found")]
    NotFound(String),
    #[error("Task {task} of connector {connector} not found")]
    TaskNotFound { connector: String, task: usize },
    #[error("{0}")]
    Storage(String),
}

/// What the status routes show for one connector.
#[derive(Debug, Clone)]
pub struct ConnectorStatus {
    pub target: TargetState,
    /// The connector's own state and, when FAILED, why.
    pub state: (&'static str, Option<String>),
    /// Each task's state and, when FAILED, why.
    pub tasks: Vec<(&'static str, Option<String>)>,
    pub is_source: Option<bool>,
}

impl Worker {
    /// Moves a connector to `target` and stores it, so it survives restarts. Pausing keeps
    /// tasks allocated; stopping shuts them down; running resumes either.
    pub async fn set_target(&self, name: &str, target: TargetState) -> Result<(), LifecycleError> {
        let mut connectors = self.connectors.lock().await;
        let running = connectors
            .get_mut(name)
            .ok_or_else(|| LifecycleError::NotFound(name.to_string()))?;
        if running.stored.target == target {
            return Ok(());
        }
        let mut stored = running.stored.clone();
        stored.target = target;
        self.storage
            .state
            .put_connector(name, &stored)
            .map_err(|e| LifecycleError::Storage(e.to_string()))?;
        running.stored.target = target;
        running.paused.send_replace(target == TargetState::Paused);
        match target {
            TargetState::Stopped => stop_all(std::mem::take(&mut running.tasks)).await,
            TargetState::Running | TargetState::Paused if running.tasks.is_empty() => {
                self.start_tasks(name, running);
            }
            TargetState::Running | TargetState::Paused => {}
        }
        Ok(())
    }

    /// Restarts the tasks of a connector (all, or only the failed ones) and returns the ids
    /// restarted. A stopped connector has no tasks to restart.
    pub async fn restart(
        &self,
        name: &str,
        only_failed: bool,
    ) -> Result<Vec<usize>, LifecycleError> {
        let mut connectors = self.connectors.lock().await;
        let running = connectors
            .get_mut(name)
            .ok_or_else(|| LifecycleError::NotFound(name.to_string()))?;
        let chosen: Vec<usize> = (0..running.tasks.len())
            .filter(|i| {
                !only_failed || matches!(*running.tasks[*i].status.borrow(), TaskStatus::Failed(_))
            })
            .collect();
        if chosen.is_empty() {
            return Ok(chosen);
        }
        let fresh = self.start_tasks_subset(name, running, &chosen);
        for (id, task) in chosen.iter().zip(fresh) {
            let old = std::mem::replace(&mut running.tasks[*id], task);
            old.stop().await;
        }
        Ok(chosen)
    }

    /// Restarts one task.
    pub async fn restart_task(&self, name: &str, task: usize) -> Result<(), LifecycleError> {
        let mut connectors = self.connectors.lock().await;
        let running = connectors
            .get_mut(name)
            .ok_or_else(|| LifecycleError::NotFound(name.to_string()))?;
        if task >= running.tasks.len() {
            return Err(LifecycleError::TaskNotFound {
                connector: name.to_string(),
                task,
            });
        }
        let fresh = self.start_tasks_subset(name, running, &[task]);
        for new_task in fresh {
            std::mem::replace(&mut running.tasks[task], new_task)
                .stop()
                .await;
        }
        Ok(())
    }

    /// The connector's and its tasks' states; None if there is no such connector.
    pub async fn status(&self, name: &str) -> Option<ConnectorStatus> {
        let connectors = self.connectors.lock().await;
        let running = connectors.get(name)?;
        let class = running
            .stored
            .tasks
            .first()
            .and_then(|t| t.get(super::TASK_CLASS));
        let plugin = running
            .plugin
            .clone()
            .or_else(|| self.plugin_for_display(&running.stored));
        let tasks: Vec<(&'static str, Option<String>)> = running
            .tasks
            .iter()
            .map(|t| task_state(&t.status.borrow(), running.stored.target))
            .collect();
        let state = match (running.stored.target, &running.plugin) {
            (TargetState::Running | TargetState::Paused, None) => (
                "FAILED",
                Some(format!(
                    "no plugin {:?} is loaded",
                    class.cloned().unwrap_or_default()
                )),
            ),
            (TargetState::Stopped, _) => ("STOPPED", None),
            (TargetState::Paused, _) => ("PAUSED", None),
            (TargetState::Running, _) => ("RUNNING", None),
        };
        Some(ConnectorStatus {
            target: running.stored.target,
            state,
            tasks,
            is_source: plugin.map(|p| p.is_source()),
        })
    }
}

/// A task's state as the APIs name it.
fn task_state(status: &TaskStatus, target: TargetState) -> (&'static str, Option<String>) {
    match status {
        TaskStatus::Starting => ("UNASSIGNED", None),
        TaskStatus::Running if target == TargetState::Paused => ("PAUSED", None),
        TaskStatus::Running => ("RUNNING", None),
        TaskStatus::Paused => ("PAUSED", None),
        TaskStatus::Failed(reason) => ("FAILED", Some(reason.clone())),
        TaskStatus::Stopped => ("UNASSIGNED", None),
    }
}
