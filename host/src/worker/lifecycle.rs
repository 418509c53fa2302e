//! Connector lifecycle beyond create and delete: pause, resume, stop, restart, and the
//! status the APIs report.

use std::collections::BTreeMap;

use super::control::Reconcile;
use super::errors::ErrorTotals;
use super::events::Subject;
use super::task::TaskStatus;
use super::Worker;
use crate::sandbox::types::ConnectorKind;
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

/// Which tasks of a connector to restart: one, or all (only the failed ones when
/// `only_failed`). Sent to every worker in cluster mode.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RestartRequest {
    pub connector: String,
    pub task: Option<usize>,
    pub only_failed: bool,
}

/// The state of a connector or of a task as the APIs name it (Kafka Connect's
/// `AbstractStatus.State`: one list for both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RunState {
    /// A task that has no owner yet, or is still starting.
    Unassigned,
    Running,
    Paused,
    Stopped,
    Failed,
    /// A task a restart request has just restarted (only in the answer to that request).
    Restarting,
}

impl RunState {
    /// Every state, in the order the API documents them.
    pub const ALL: [RunState; 6] = [
        RunState::Unassigned,
        RunState::Running,
        RunState::Paused,
        RunState::Stopped,
        RunState::Failed,
        RunState::Restarting,
    ];
}

impl RunState {
    /// The state as the APIs spell it (`FAILED`).
    pub fn name(self) -> &'static str {
        match self {
            RunState::Unassigned => "UNASSIGNED",
            RunState::Running => "RUNNING",
            RunState::Paused => "PAUSED",
            RunState::Stopped => "STOPPED",
            RunState::Failed => "FAILED",
            RunState::Restarting => "RESTARTING",
        }
    }
}

impl From<TargetState> for RunState {
    /// The state a connector shows once it has reached `target`.
    fn from(target: TargetState) -> Self {
        match target {
            TargetState::Running => RunState::Running,
            TargetState::Paused => RunState::Paused,
            TargetState::Stopped => RunState::Stopped,
        }
    }
}

/// What the status routes show for one connector.
#[derive(Debug, Clone)]
pub struct ConnectorStatus {
    pub target: TargetState,
    /// The connector's own state and, when FAILED, why.
    pub state: (RunState, Option<String>),
    /// The worker that owns the connector.
    pub worker: String,
    /// Each task's state, by task number.
    pub tasks: Vec<TaskView>,
    /// Its plugin's kind; None when no loaded plugin serves it.
    pub kind: Option<ConnectorKind>,
}

/// A connector's status as read under the connector map's lock, before its tasks' states
/// are completed (in a cluster, from the other workers' reports).
struct Snapshot {
    target: TargetState,
    state: (RunState, Option<String>),
    worker: String,
    /// The states and error counts of the tasks this worker runs.
    local: BTreeMap<usize, (TaskStatus, ErrorTotals)>,
    task_count: usize,
    kind: Option<ConnectorKind>,
}

/// What the status routes show for one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskView {
    pub state: RunState,
    /// Why, when FAILED.
    pub trace: Option<String>,
    /// The worker running it.
    pub worker: String,
    /// Its records that failed and were skipped or dead-lettered (`errors.*`); counted by
    /// the worker running it (zero for tasks of other workers in a cluster).
    pub errors: ErrorTotals,
}

impl Worker {
    /// Moves a connector to `target` and stores it, so it survives restarts. Pausing keeps
    /// tasks allocated; stopping shuts them down (without waiting for them to end); running
    /// resumes either.
    pub async fn set_target(&self, name: &str, target: TargetState) -> Result<(), LifecycleError> {
        let not_found = || LifecycleError::NotFound(name.to_string());
        let change = self.slots.change(name).await;
        let mut stored = {
            let connectors = self.connectors.lock().await;
            let running = connectors.get(name).ok_or_else(not_found)?;
            if running.stored.target == target {
                return Ok(());
            }
            running.stored.clone()
        };
        stored.target = target;
        let revision = self
            .persist(name, Some(&stored))
            .await
            .map_err(LifecycleError::Storage)?;
        let mut connectors = self.connectors.lock().await;
        // Still there: every delete holds the change this holds.
        let running = connectors.get_mut(name).ok_or_else(not_found)?;
        running.revision = revision;
        let action = match target {
            TargetState::Running => "operator: resume",
            TargetState::Paused => "operator: pause",
            TargetState::Stopped => "operator: stop",
        };
        let from = Some(running.stored.target.into());
        (running.events).record(Subject::Connector, from, target.into(), action);
        running.stored.target = target;
        running.paused.send_replace(target == TargetState::Paused);
        match target {
            TargetState::Stopped => {
                change.stop_all(std::mem::take(&mut running.tasks).into_values())
            }
            TargetState::Running | TargetState::Paused if running.tasks.is_empty() => {
                self.start_tasks(name, running, change.stopping());
            }
            TargetState::Running | TargetState::Paused => {}
        }
        Ok(())
    }

    /// Restarts the tasks of a connector (all, or only the failed ones) and returns the ids
    /// restarted. A stopped connector has no tasks to restart. In cluster mode the workers
    /// running the others restart theirs too.
    pub async fn restart(
        &self,
        name: &str,
        only_failed: bool,
    ) -> Result<Vec<usize>, LifecycleError> {
        let request = RestartRequest {
            connector: name.to_string(),
            task: None,
            only_failed,
        };
        let mut restarted = self.restart_here(&request).await?;
        // Tasks on other workers (none on a single worker), read before they are asked.
        let elsewhere = self.status(name).await.map(|s| s.tasks).unwrap_or_default();
        restarted.extend(
            elsewhere
                .iter()
                .enumerate()
                .filter(|(_, t)| {
                    t.worker != self.id && (!only_failed || t.state == RunState::Failed)
                })
                .map(|(id, _)| id),
        );
        self.control.restart_elsewhere(&request).await;
        restarted.sort_unstable();
        Ok(restarted)
    }

    /// Restarts one task, wherever in the cluster it runs.
    pub async fn restart_task(&self, name: &str, task: usize) -> Result<(), LifecycleError> {
        let request = RestartRequest {
            connector: name.to_string(),
            task: Some(task),
            only_failed: false,
        };
        if !self.restart_here(&request).await?.is_empty() {
            return Ok(());
        }
        let exists = self
            .task_counts()
            .await
            .get(name)
            .is_some_and(|n| task < *n);
        if exists && self.control.restart_elsewhere(&request).await {
            return Ok(());
        }
        Err(LifecycleError::TaskNotFound {
            connector: name.to_string(),
            task,
        })
    }

    /// Restarts the tasks running on this worker that `request` names; returns their ids.
    pub(super) async fn restart_here(
        &self,
        request: &RestartRequest,
    ) -> Result<Vec<usize>, LifecycleError> {
        let name = request.connector.as_str();
        let change = self.slots.change(name).await;
        let mut connectors = self.connectors.lock().await;
        let running = connectors
            .get_mut(name)
            .ok_or_else(|| LifecycleError::NotFound(name.to_string()))?;
        let chosen: Vec<usize> = running
            .tasks
            .iter()
            .filter(|(id, _)| request.task.is_none_or(|task| task == **id))
            .filter(|(_, task)| {
                !request.only_failed || matches!(*task.status.borrow(), TaskStatus::Failed(_))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &chosen {
            tracing::info!(task = %format!("{name}/{id}"), "restarting");
            if let Some(task) = running.tasks.get(id) {
                let task_id = u32::try_from(*id).unwrap_or(u32::MAX);
                (running.events).restarted(task_id, &task.status.borrow());
            }
        }
        self.count_operator_restarts(name, &chosen);
        change.stop_all(chosen.iter().filter_map(|id| running.tasks.remove(id)));
        let fresh = self.start_tasks_subset(name, running, &chosen, change.stopping());
        running.tasks.extend(fresh);
        Ok(chosen)
    }

    /// The connector's and its tasks' states; None if there is no such connector.
    pub async fn status(&self, name: &str) -> Option<ConnectorStatus> {
        let snapshot = {
            let connectors = self.connectors.lock().await;
            self.snapshot(name, connectors.get(name)?)
        };
        Some(self.with_tasks(name, snapshot).await)
    }

    /// The states of every connector, read in one step (one look at the connector map;
    /// in a cluster, the other workers' task reports are then read per connector).
    pub async fn statuses(&self) -> BTreeMap<String, ConnectorStatus> {
        let snapshots: Vec<(String, Snapshot)> = {
            let connectors = self.connectors.lock().await;
            connectors
                .iter()
                .map(|(name, running)| (name.clone(), self.snapshot(name, running)))
                .collect()
        };
        let mut statuses = BTreeMap::new();
        for (name, snapshot) in snapshots {
            let status = self.with_tasks(&name, snapshot).await;
            statuses.insert(name, status);
        }
        statuses
    }

    /// What the status of `running` needs from under the connector map's lock.
    fn snapshot(&self, name: &str, running: &super::RunningConnector) -> Snapshot {
        let class = running
            .stored
            .tasks
            .first()
            .and_then(|t| t.get(super::TASK_CLASS));
        let plugin = running
            .plugin
            .clone()
            .or_else(|| self.plugin_for_display(&running.stored));
        let target = running.stored.target;
        let local: BTreeMap<usize, (TaskStatus, ErrorTotals)> = running
            .tasks
            .iter()
            .map(|(id, t)| (*id, (t.status.borrow().clone(), t.errors.totals())))
            .collect();
        let state = match (target, &running.plugin) {
            (TargetState::Running | TargetState::Paused, None) => (
                RunState::Failed,
                Some(format!(
                    "no plugin {:?} is loaded",
                    class.cloned().unwrap_or_default()
                )),
            ),
            (target, _) => (target.into(), None),
        };
        // In a cluster, the connector's owner by the assignment ("" until it has one).
        let worker = self.owner_id(name);
        Snapshot {
            target,
            state,
            worker,
            local,
            task_count: running.stored.tasks.len(),
            kind: plugin.map(|p| p.kind()),
        }
    }

    /// A snapshot made into a status with the states of all its tasks.
    async fn with_tasks(&self, name: &str, snapshot: Snapshot) -> ConnectorStatus {
        let Snapshot {
            target,
            state,
            worker,
            local,
            task_count,
            kind,
        } = snapshot;
        let tasks = self.task_states(name, target, local, task_count).await;
        ConnectorStatus {
            target,
            state,
            worker,
            tasks,
            kind,
        }
    }

    /// The state of every task of a connector: from this worker's actors, and in cluster
    /// mode from what the owners of the others reported (UNASSIGNED while a task has no
    /// owner, or its owner has not reported since it got it).
    async fn task_states(
        &self,
        name: &str,
        target: TargetState,
        local: BTreeMap<usize, (TaskStatus, ErrorTotals)>,
        task_count: usize,
    ) -> Vec<TaskView> {
        let here = |(status, errors): &(TaskStatus, ErrorTotals)| {
            let (state, trace) = task_state(status, target);
            TaskView {
                state,
                trace,
                worker: self.id.clone(),
                errors: *errors,
            }
        };
        if target == TargetState::Stopped {
            return local.values().map(here).collect();
        }
        let mut tasks: BTreeMap<usize, TaskView> = self
            .control
            .remote_tasks(name, task_count)
            .await
            .into_iter()
            .map(|(task, remote)| {
                let view = match remote.reported {
                    Some(status) => {
                        let (state, trace) = task_state(&status, target);
                        TaskView {
                            state,
                            trace,
                            worker: remote.owner,
                            errors: ErrorTotals::default(),
                        }
                    }
                    None => TaskView {
                        state: RunState::Unassigned,
                        trace: None,
                        worker: remote.owner,
                        errors: ErrorTotals::default(),
                    },
                };
                (task, view)
            })
            .collect();
        tasks.extend(local.iter().map(|(task, status)| (*task, here(status))));
        tasks.into_values().collect()
    }

    /// True when the connector exists and all its tasks are running (on any worker).
    pub async fn is_running(&self, name: &str) -> bool {
        self.status(name).await.is_some_and(|status| {
            !status.tasks.is_empty() && status.tasks.iter().all(|t| t.state == RunState::Running)
        })
    }
}

/// A task's state as the APIs name it.
fn task_state(status: &TaskStatus, target: TargetState) -> (RunState, Option<String>) {
    match status {
        TaskStatus::Starting => (RunState::Unassigned, None),
        TaskStatus::Running if target == TargetState::Paused => (RunState::Paused, None),
        TaskStatus::Running => (RunState::Running, None),
        TaskStatus::Paused => (RunState::Paused, None),
        TaskStatus::Failed(reason) => (RunState::Failed, Some(reason.clone())),
        TaskStatus::Stopped => (RunState::Unassigned, None),
    }
}
