//! What every task actor shares: its status cell, its stop signal, and the context it runs in;
//! the worker's handle on an actor, and the set of actors told to stop that may still run.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::control::ControlPlane;
use super::errors::ErrorCounts;
use super::events::EventLog;
use super::plane::DataPlane;
use super::transforms::Stages;
use super::{keys, secrets};
use crate::metrics::TaskMeter;
use crate::plugins::Plugin;
use crate::sandbox::types::{Config, TaskError};
use crate::sandbox::{
    capabilities, Grants, Identity, Limits, Redactor, Sandbox, TaskSetup, MAX_BACKOFF,
};
use crate::storage::Properties;

/// Where a task stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TaskStatus {
    Starting,
    Running,
    Paused,
    Failed(String),
    Stopped,
}

/// Everything a task actor needs; owned by the actor.
pub struct TaskContext {
    pub identity: Identity,
    pub plugin: Arc<Plugin>,
    /// The task config as stored, its host-interpreted keys taken from `user_config`
    /// ([`keys::with_user_host_keys`]).
    pub config: Properties,
    /// The connector's config as the user wrote it: the only source of host-interpreted
    /// values, of the paths a task may use, and of the references resolved.
    pub user_config: Properties,
    /// This connector's limits (the worker's, lowered by its `limits.*` keys).
    pub limits: Limits,
    pub sandbox: Arc<Sandbox>,
    /// Where topics and offsets live.
    pub data: Arc<dyn DataPlane>,
    /// The transforms a batch passes through: after a source's poll, before a sink's put.
    pub stages: Stages,
    /// The task's failed and dead-lettered records (set by [`TaskHandle::spawn`]).
    pub errors: Arc<ErrorCounts>,
    /// What the task counts into, once per batch (the default counts nothing).
    pub meter: TaskMeter,
    /// Who may run the task: it runs only while this worker holds its lease.
    pub control: Arc<dyn ControlPlane>,
    pub status: watch::Sender<TaskStatus>,
    /// The connector's event log, where each change of `status` is recorded.
    pub events: Arc<EventLog>,
    pub stop: watch::Receiver<bool>,
    /// True while the connector is paused.
    pub paused: watch::Receiver<bool>,
    /// Shows the values resolved for the running guest as the references the user wrote.
    pub redactor: Redactor,
}

impl TaskContext {
    /// Reports `status`; a failure's reason shows resolved secrets as their references.
    pub fn set(&self, status: TaskStatus) {
        let status = match status {
            TaskStatus::Failed(reason) => {
                let reason = self.redact(&reason).into_owned();
                tracing::warn!(task = %self.identity, "task failed: {reason}");
                TaskStatus::Failed(reason)
            }
            other => other,
        };
        self.publish(status);
    }

    /// Makes `status` the task's status and records the change in the connector's event
    /// log: every status change goes through here.
    pub fn publish(&self, status: TaskStatus) {
        let old = self.status.send_replace(status.clone());
        let task = self.identity.task.unwrap_or(0);
        self.events.task(task, &old, &status);
    }

    /// `text` (a guest's message) with resolved secrets shown as their references.
    pub fn redact<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        self.redactor.redact(text)
    }

    /// Ends the task on a failed call: FAILED with `reason`, unless it was told to stop (a
    /// call the stop cut short, or one that failed meanwhile, is the end of the stop).
    pub fn fail(&self, reason: String) {
        if self.stopping() {
            tracing::info!(task = %self.identity, "stopped: {}", self.redact(&reason));
            self.set(TaskStatus::Stopped);
        } else {
            self.set(TaskStatus::Failed(reason));
        }
    }

    pub fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    pub fn paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// While the connector is paused: reports PAUSED and waits for a resume or a stop.
    pub async fn wait_while_paused(&mut self) {
        if !self.paused() {
            return;
        }
        self.set(TaskStatus::Paused);
        tokio::select! {
            _ = self.paused.wait_for(|paused| !*paused) => {}
            _ = self.stop.wait_for(|stop| *stop) => {}
        }
        if !self.stopping() {
            self.set(TaskStatus::Running);
        }
    }

    /// Sleeps for `pause`, or less if the task is told to stop.
    pub async fn pause(&mut self, pause: Duration) {
        let _ = tokio::time::timeout(pause, self.stop.wait_for(|stop| *stop)).await;
    }

    /// The pause of an idle source: `pause`; a long one (a source idle for a while) is
    /// rounded up to the next tick of a 50 ms grid shared by every task, so that a thousand
    /// idle sources wake in a few batches per second instead of a thousand separate
    /// wake-ups (each one a context switch). Short pauses (a source that just went idle)
    /// are kept exact.
    pub async fn idle_pause(&mut self, pause: Duration) {
        const GRID: Duration = Duration::from_millis(50);
        static ORIGIN: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
        let origin = *ORIGIN.get_or_init(tokio::time::Instant::now);
        let due = tokio::time::Instant::now() + pause;
        let wake = if pause >= GRID * 2 {
            let ticks = (due - origin).as_nanos().div_ceil(GRID.as_nanos());
            origin + GRID * u32::try_from(ticks).unwrap_or(u32::MAX)
        } else {
            due
        };
        let _ = tokio::time::timeout_at(wake, self.stop.wait_for(|stop| *stop)).await;
    }

    /// The task config as the guest sees it: the references the user wrote resolved (any
    /// other `${…}` stays literal text), relative paths in path-typed keys made absolute; and
    /// the redactor that shows each resolved value as its reference.
    pub fn guest_config(&self) -> Result<(Config, Redactor), String> {
        let path_keys: Vec<&str> = self
            .plugin
            .descriptor
            .config_defs
            .iter()
            .filter(|d| d.path.is_some())
            .map(|d| d.name.as_str())
            .collect();
        let mut resolved_values = Vec::new();
        let mut config = Config::new();
        for (key, value) in &self.config {
            let is_path = path_keys.contains(&key.as_str());
            let secret = crate::config::is_reference(value)
                && keys::user_wrote(&self.user_config, key, value);
            let resolved = if secret {
                secrets::resolve(value)?
            } else {
                value.clone()
            };
            let shown = if is_path {
                let absolute: Vec<String> =
                    crate::config::entries(&resolved).map(absolute).collect();
                absolute.join(",")
            } else {
                resolved.clone()
            };
            if secret && is_path {
                let dirs =
                    crate::config::entries(&shown).filter_map(|file| Path::new(file).parent());
                resolved_values.extend(dirs.map(|dir| {
                    let dir = dir.to_string_lossy().into_owned();
                    (dir, format!("the directory of {value}"))
                }));
            }
            if secret {
                resolved_values.push((shown.clone(), value.clone()));
                resolved_values.push((resolved, value.clone()));
            }
            config.push((key.clone(), shown));
        }
        Ok((config, Redactor::new(resolved_values)))
    }

    /// Starts the guest side of the task with `start`, handing it this context's identity,
    /// grants, committed positions and config. Marks the task FAILED, with the reason, and
    /// returns None when the start fails: also when the stored task config names paths the
    /// connector's config does not (task configs stored before that rule are checked here).
    pub async fn start_guest<T>(
        &mut self,
        committed: Positions,
        start: impl AsyncFnOnce(TaskSetup<'_>) -> CallResult<T>,
    ) -> Option<T> {
        let defs = &self.plugin.descriptor.config_defs;
        if let Err(e) = keys::check_paths(defs, &self.user_config, &self.config) {
            self.set(TaskStatus::Failed(e.to_string()));
            return None;
        }
        let config = match self.guest_config() {
            Ok((config, redactor)) => {
                self.redactor = redactor;
                config
            }
            Err(reason) => {
                self.set(TaskStatus::Failed(reason));
                return None;
            }
        };
        let grants = match self.grants(&config).await {
            Ok(grants) => grants,
            Err(reason) => {
                self.set(TaskStatus::Failed(reason));
                return None;
            }
        };
        let setup = TaskSetup {
            identity: self.identity.clone(),
            grants: &grants,
            committed,
            config: &config,
            limits: self.limits.clone(),
            stop: Some(self.stop.clone()),
            redactor: self.redactor.clone(),
        };
        match start(setup).await {
            Ok(Ok(task)) => Some(task),
            Ok(Err(TaskError::Retriable(reason) | TaskError::Fatal(reason))) => {
                self.set(TaskStatus::Failed(format!("start failed: {reason}")));
                None
            }
            Err(e) => {
                self.set(TaskStatus::Failed(e.to_string()));
                None
            }
        }
    }

    /// What the guest may reach: the parent directory of each file its path-typed keys name
    /// in the resolved `config` (refused outside the `--allow-path` roots and near the host's
    /// own dirs), and the addresses its `network.allow` lists.
    pub async fn grants(&self, config: &Config) -> Result<Grants, String> {
        let defs = &self.plugin.descriptor.config_defs;
        capabilities::grant(self.sandbox.capabilities(), defs, config).await
    }
}

/// `path` made absolute against the host's working directory.
fn absolute(path: &str) -> String {
    std::path::absolute(path)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| path.to_string())
}

/// The worker's handle on a running task actor. Dropping it stops the actor.
pub struct TaskHandle {
    pub status: watch::Receiver<TaskStatus>,
    /// The task's failed and dead-lettered records.
    pub errors: Arc<ErrorCounts>,
    stop: watch::Sender<bool>,
    ended: Stopping,
}

impl TaskHandle {
    /// Spawns `actor` on `runtime` with a fresh status cell and stop signal. The actor runs
    /// once every task in `after` has ended (or it is stopped first), so a connector
    /// restarted or re-created under the same name never runs beside its old tasks.
    pub fn spawn<F, Fut>(
        runtime: &tokio::runtime::Handle,
        after: Stopping,
        make_context: impl FnOnce(watch::Sender<TaskStatus>, watch::Receiver<bool>) -> TaskContext,
        actor: F,
    ) -> TaskHandle
    where
        F: FnOnce(TaskContext) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (status_tx, status) = watch::channel(TaskStatus::Starting);
        let (stop, stop_rx) = watch::channel(false);
        let mut stopped = stop_rx.clone();
        let errors = Arc::new(ErrorCounts::default());
        let mut ctx = make_context(status_tx, stop_rx);
        ctx.errors = errors.clone();
        let run = actor(ctx);
        let join: JoinHandle<()> = runtime.spawn(async move {
            let stopped_first = tokio::select! {
                () = after.wait() => false,
                _ = stopped.wait_for(|stop| *stop) => true,
            };
            if !stopped_first {
                run.await;
            }
        });
        // Closed once the actor has ended, however it ended.
        let (ended_tx, ended) = watch::channel(());
        runtime.spawn(async move {
            if let Err(e) = join.await {
                tracing::error!("task actor ended abnormally: {e}");
            }
            drop(ended_tx);
        });
        TaskHandle {
            status,
            errors,
            stop,
            ended: Stopping(vec![ended]),
        }
    }

    /// Tells the actor to stop, without waiting: it commits what it has, and a guest call
    /// still running [`crate::sandbox::STOP_GRACE`] later is cancelled. Returns what to wait
    /// on for it to have ended.
    pub fn stop(self) -> Stopping {
        self.ended.clone()
    }
}

impl Drop for TaskHandle {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// Task actors told to stop that may still be running (committing, or in a guest call that
/// is about to be cancelled).
#[derive(Clone, Default)]
pub struct Stopping(Vec<watch::Receiver<()>>);

impl Stopping {
    /// Stops every task of `tasks` (without waiting) and adds them to this set.
    pub fn stop_all(&mut self, tasks: impl IntoIterator<Item = TaskHandle>) {
        for task in tasks {
            self.add(task.stop());
        }
    }

    /// Adds the tasks of `other` to this set.
    pub fn add(&mut self, other: Stopping) {
        self.0.extend(other.0);
    }

    /// True when every task of the set has ended; forgets those that have.
    pub fn is_done(&mut self) -> bool {
        self.0.retain(|ended| ended.has_changed().is_ok());
        self.0.is_empty()
    }

    /// Waits until every task of the set has ended.
    pub async fn wait(&self) {
        for ended in &self.0 {
            let mut ended = ended.clone();
            while ended.changed().await.is_ok() {}
        }
    }
}

/// One run of a task actor (`source::run` or `sink::run`), boxed so the supervisor can
/// call it again.
pub type TaskRun = for<'a> fn(&'a mut TaskContext) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Runs a task (see [`restart_on_failure`]) only while this worker holds the task's lease
/// (always, on a single worker): it takes the lease, keeps it while the task runs, reports
/// the task's states to the control plane, and gives it up once the task has stopped. A task
/// whose lease is lost stops at once and waits to take the lease again.
pub async fn supervise(mut ctx: TaskContext, run: TaskRun) {
    let (connector, task) = (
        ctx.identity.connector.clone(),
        ctx.identity.task.unwrap_or(0),
    );
    let control = ctx.control.clone();
    let reporter = tokio::spawn({
        let (control, connector, states) =
            (control.clone(), connector.clone(), ctx.status.subscribe());
        async move { control.report_states(connector, task, states).await }
    });
    let mut held = None;
    while let Some(mut lease) = control.lease_task(&connector, task, &mut ctx.stop).await {
        let lost = tokio::select! {
            _ = restart_on_failure(&mut ctx, run) => None,
            reason = lease.keep() => Some(reason),
        };
        match lost {
            Some(reason) => ctx.set(TaskStatus::Failed(reason)),
            None => {
                held = Some(lease);
                break;
            }
        }
    }
    drop(ctx);
    let _ = reporter.await;
    if let Some(lease) = held {
        lease.release().await;
    }
}

/// Runs a task and restarts it when it fails: after an exponentially growing pause, until it
/// failed [`RestartPolicy::quarantine_after`] times within the window; then it stays FAILED
/// ("quarantined") until the operator restarts it. Each run starts a fresh instance from the
/// committed positions, so nothing in flight when it failed is lost.
async fn restart_on_failure(ctx: &mut TaskContext, run: TaskRun) {
    let policy = ctx.sandbox.limits().restart.clone();
    let mut failures: VecDeque<Instant> = VecDeque::new();
    loop {
        run(ctx).await;
        let TaskStatus::Failed(reason) = ctx.status.borrow().clone() else {
            return;
        };
        if ctx.stopping() {
            return;
        }
        let now = Instant::now();
        failures.push_back(now);
        while failures
            .front()
            .is_some_and(|failed| now.duration_since(*failed) > policy.window)
        {
            failures.pop_front();
        }
        let count = failures.len() as u32;
        if count >= policy.quarantine_after {
            let window = policy.window.as_secs();
            ctx.set(TaskStatus::Failed(format!(
                "quarantined after {count} failures in {window} s; restart it to try again. Last failure: {reason}"
            )));
            let _ = ctx.stop.wait_for(|stop| *stop).await;
            return;
        }
        let backoff = policy
            .backoff
            .saturating_mul(1 << (count - 1).min(16))
            .min(MAX_BACKOFF);
        ctx.publish(TaskStatus::Failed(format!(
            "{reason} (restarting in {} s (failure {count} of {}))",
            backoff.as_secs_f64(),
            policy.quarantine_after
        )));
        ctx.pause(backoff).await;
        if ctx.stopping() {
            return;
        }
        ctx.meter.restarted();
        ctx.publish(TaskStatus::Starting);
    }
}

/// What a call into a task returns: the task's own result, or why the call failed.
pub type CallResult<T> =
    Result<Result<T, crate::sandbox::types::TaskError>, crate::sandbox::GuestFailure>;

/// Positions as stored: partition → position.
pub type Positions = BTreeMap<String, String>;
