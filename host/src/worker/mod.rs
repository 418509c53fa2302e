//! The worker: owns the connectors of this process, checks and stores their configs, and
//! runs one actor per task (`source` / `sink`), each with its own wasm store.
//!
//! Two locks, neither ever held across a guest call or the end of a task: the connector map
//! (held only to read or swap entries) and each connector's [`change::Change`] (held across
//! one state change, store write included). Stopping a task never waits for it.

pub mod batch;
mod change;
pub mod control;
pub mod errors;
pub mod events;
mod idle;
pub mod keys;
mod lifecycle;
pub mod observe;
mod offsets;
mod placement;
pub mod plane;
pub mod secrets;
pub mod sink;
pub mod source;
mod task;
pub mod transforms;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{watch, Mutex};

use crate::plugins::{Plugin, PluginRegistry, SelectError, PLUGIN_VERSION};
use crate::sandbox::types::{Config, ConnectorKind};
use crate::sandbox::{capabilities, Identity, Limits, Sandbox};
use crate::storage::{validate_topic_name, Properties, StoredConnector, TargetState};
use keys::{CLASS_KEYS, MAX_TASK_KEYS};
pub use lifecycle::{ConnectorStatus, LifecycleError, RestartRequest, RunState, TaskView};
pub use observe::{
    ConnectorView, InspectError, PluginView, RecordView, TopicRecords, TopicView, WorkerView,
    SHOWN_CHARS,
};
pub use offsets::{ConnectorOffsets, OffsetChanges, OffsetsError};
pub use task::{CallResult, Positions, Stopping, TaskContext, TaskHandle, TaskRun, TaskStatus};

use change::Slots;
use control::ControlPlane;
use events::{EventLog, Subject};
use plane::DataPlane;

/// Key the runtime stamps on stored configs; not part of the "same config" comparison.
pub const UPDATE_TIMESTAMP: &str = "update-timestamp";
/// Key naming the plugin on each task config.
pub const TASK_CLASS: &str = "task-class";

/// What a create or update did.
#[derive(Debug, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    Updated,
    /// The same config is stored already; nothing changed.
    Unchanged,
}

/// What a create or update stored, read in the same step that stored it: the answer to give.
#[derive(Debug)]
pub struct Put {
    pub outcome: PutOutcome,
    /// The connector as stored (secrets masked).
    pub stored: StoredConnector,
    /// Its plugin's kind; None when no loaded plugin serves it.
    pub kind: Option<ConnectorKind>,
}

/// How a put treats an existing connector of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Create, or update the existing one.
    Upsert,
    /// Create; an existing one is an error.
    CreateOnly,
}

/// Why a create or update was refused. Nothing is stored when one of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("{0}")]
    InvalidName(String),
    #[error("Connector {0} already exists")]
    AlreadyExists(String),
    #[error("Request config key: {0}")]
    MissingKey(String),
    #[error("no connector plugin named '{class}'; available: {available}")]
    UnknownPlugin { class: String, available: String },
    /// The connector's own validation rejected the config: its messages.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Other(String),
    /// The connector's code failed (trapped or timed out) while checking the config.
    #[error("{0}")]
    Guest(String),
    #[error("{0}")]
    Storage(String),
    /// Its tasks would take this worker past `--max-instances`.
    #[error("{0}")]
    NoRoom(String),
}

/// A connector this worker runs.
struct RunningConnector {
    stored: StoredConnector,
    /// The tasks this worker runs, by task number: all of them, or in cluster mode those
    /// assigned here. Empty while the connector is stopped.
    tasks: BTreeMap<usize, TaskHandle>,
    /// The cluster config revision this state comes from (0 without a cluster).
    revision: u64,
    /// True while the connector is paused; every task watches it.
    paused: watch::Sender<bool>,
    /// The plugin version its tasks run (kept even if its file is removed meanwhile); None
    /// when no loaded version fits.
    plugin: Option<Arc<Plugin>>,
    /// Its state changes and those of its tasks here; kept across config updates.
    events: Arc<EventLog>,
}

impl RunningConnector {
    /// `stored`, with no task started yet, logging into `events`, where `why` it is (re)made
    /// is recorded first.
    fn idle(
        stored: StoredConnector,
        revision: u64,
        events: Arc<EventLog>,
        why: &str,
    ) -> RunningConnector {
        let paused = watch::Sender::new(stored.target == TargetState::Paused);
        events.record(Subject::Connector, None, stored.target.into(), why);
        RunningConnector {
            stored,
            tasks: BTreeMap::new(),
            revision,
            paused,
            plugin: None,
            events,
        }
    }
}

pub struct Worker {
    id: String,
    sandbox: Arc<Sandbox>,
    /// Where topics and offsets live, and where configs live and who may run which task:
    /// chosen once, at start.
    data: Arc<dyn DataPlane>,
    control: Arc<dyn ControlPlane>,
    plugins: Arc<PluginRegistry>,
    /// Held only to read or swap entries: never across an await on a guest, a task or the store.
    connectors: Mutex<BTreeMap<String, RunningConnector>>,
    /// Per connector: the lock its state changes hold, and its tasks still stopping.
    slots: Slots,
    /// Where task actors run: a runtime of their own, so busy guests never delay the APIs.
    tasks: tokio::runtime::Handle,
    /// What tasks count into; None: metrics off.
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Set once the stored connectors were attempted after the first plugin scan.
    ready: std::sync::atomic::AtomicBool,
    /// How tasks run: in the sandbox, unless replaced ([`Worker::with_task_runs`]).
    runs: TaskRuns,
}

/// How the tasks of each kind run: the plugin's component in the sandbox, or (benches and
/// in-process tests) the same task loops over natively compiled connector code.
#[derive(Clone, Copy)]
pub struct TaskRuns {
    pub source: TaskRun,
    pub sink: TaskRun,
}

impl Default for TaskRuns {
    fn default() -> Self {
        TaskRuns {
            source: run_source,
            sink: run_sink,
        }
    }
}

impl Worker {
    pub fn new(
        id: String,
        sandbox: Arc<Sandbox>,
        (data, control): (Arc<dyn DataPlane>, Arc<dyn ControlPlane>),
        plugins: Arc<PluginRegistry>,
        tasks: tokio::runtime::Handle,
    ) -> Self {
        Worker {
            id,
            sandbox,
            data,
            control,
            plugins,
            connectors: Mutex::new(BTreeMap::new()),
            slots: Slots::default(),
            tasks,
            runs: TaskRuns::default(),
            metrics: None,
            ready: Default::default(),
        }
    }

    /// Runs tasks with `runs` instead of in the sandbox (before anything runs). Configs are
    /// still checked by the plugins' components.
    pub fn with_task_runs(mut self, runs: TaskRuns) -> Self {
        self.runs = runs;
        self
    }

    /// Makes the tasks count into `metrics` (before anything runs).
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// This worker's id, `ip@pid`.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn plugins(&self) -> &Arc<PluginRegistry> {
        &self.plugins
    }

    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }

    /// Puts every stored connector back (in cluster mode the control plane has none to give:
    /// the coordinator loads the cluster's connectors instead) and returns; their tasks
    /// start where they left off on the task this returns, once the first scan of the plugin
    /// directory is done. A connector changed through the API meanwhile is left as the API
    /// left it.
    pub async fn restore(self: &Arc<Self>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let mut waiting = Vec::new();
        let stored = self.control.stored_connectors().await?;
        let mut connectors = self.connectors.lock().await;
        for (name, stored) in stored {
            tracing::info!(connector = %name, state = ?stored.target, "restoring stored connector");
            waiting.push(name.clone());
            let running = RunningConnector::idle(stored, 0, Arc::default(), "restored at start");
            connectors.insert(name, running);
        }
        drop(connectors);
        let worker = self.clone();
        Ok(tokio::spawn(async move {
            worker.plugins.started().await;
            let mut connectors = worker.connectors.lock().await;
            for name in waiting {
                let Some(running) = connectors.get_mut(&name) else {
                    continue;
                };
                let untouched = running.tasks.is_empty() && running.plugin.is_none();
                if untouched && running.stored.target != TargetState::Stopped {
                    worker.start_tasks(&name, running, Stopping::default());
                }
            }
        }))
    }

    /// Creates the connector, or updates it and restarts its tasks (upsert); an update keeps
    /// the state the connector is in (running, paused or stopped).
    pub async fn put(&self, name: &str, config: Properties) -> Result<Put, PutError> {
        self.put_with(name, config, PutMode::Upsert, None).await
    }

    /// Creates or updates a connector as `mode` says; `initial` sets the state of a new one
    /// (running when None). Guest calls (validation, task split) run before the connector's
    /// change is taken; the checks against what is stored are made again under it, so the
    /// answer describes what was stored.
    pub async fn put_with(
        &self,
        name: &str,
        config: Properties,
        mode: PutMode,
        initial: Option<TargetState>,
    ) -> Result<Put, PutError> {
        match self
            .try_put(name, config, Expect::Mode(mode), initial)
            .await?
        {
            Attempt::Done(put) => Ok(put),
            // Only a patch expects a config.
            Attempt::Stale => Err(PutError::Other(format!(
                "connector {name} changed meanwhile; try again"
            ))),
        }
    }

    /// Changes some keys of an existing connector's config (`None` removes the key) and
    /// applies it like an update; None if there is no such connector. Applied only to the
    /// config it was computed from: if another change came first, it is computed again.
    pub async fn patch(
        &self,
        name: &str,
        changes: Vec<(String, Option<String>)>,
    ) -> Option<Result<Put, PutError>> {
        loop {
            let base = self
                .connectors
                .lock()
                .await
                .get(name)?
                .stored
                .config
                .clone();
            let mut config = base.clone();
            config.remove(UPDATE_TIMESTAMP);
            for (key, value) in &changes {
                match value {
                    Some(value) => config.insert(key.clone(), value.clone()),
                    None => config.remove(key),
                };
            }
            match self
                .try_put(name, config, Expect::Config(&base), None)
                .await
            {
                Ok(Attempt::Done(put)) => return Some(Ok(put)),
                Ok(Attempt::Stale) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// One create or update: checks and guest calls first, then, under the connector's
    /// change, the checks against what is stored, the store write and the task swap.
    async fn try_put(
        &self,
        name: &str,
        mut config: Properties,
        expect: Expect<'_>,
        initial: Option<TargetState>,
    ) -> Result<Attempt, PutError> {
        crate::names::validate(crate::names::NameKind::Connector, name)
            .map_err(|e| PutError::InvalidName(e.to_string()))?;
        // Refused early, before any guest call; checked again below, where it counts.
        if let Some(attempt) = self.precondition(name, &config, expect).await? {
            return Ok(attempt);
        }
        let class = CLASS_KEYS
            .iter()
            .find_map(|k| config.get(*k))
            .ok_or_else(|| PutError::MissingKey("connector-class".into()))?;
        let plugin = self
            .plugins
            .resolve_for_put(class, &config)
            .await
            .map_err(|e| match e {
                SelectError::Unknown { class, available } => {
                    PutError::UnknownPlugin { class, available }
                }
                other => PutError::Other(other.to_string()),
            })?;
        let tasks = self.check_config(name, &plugin, &config).await?;
        let timestamp = now_millis().to_string();
        let tasks: Vec<Properties> = tasks
            .into_iter()
            .map(|task| {
                let mut task: Properties = task.into_iter().collect();
                task.insert(TASK_CLASS.into(), plugin.descriptor.name.clone());
                task.insert(PLUGIN_VERSION.into(), plugin.descriptor.version.clone());
                task.insert(UPDATE_TIMESTAMP.into(), timestamp.clone());
                task
            })
            .collect();
        let change = self.slots.change(name).await;
        if let Some(attempt) = self.precondition(name, &config, expect).await? {
            return Ok(attempt);
        }
        config.insert(UPDATE_TIMESTAMP.into(), timestamp);
        let target = {
            let connectors = self.connectors.lock().await;
            let existing = connectors.get(name).map(|c| c.stored.target);
            let target = existing.or(initial).unwrap_or_default();
            self.check_room(&connectors, name, target, tasks.len())?;
            target
        };
        let stored = StoredConnector {
            config,
            tasks,
            target,
        };
        let revision = self
            .persist(name, Some(&stored))
            .await
            .map_err(PutError::Storage)?;
        let mut connectors = self.connectors.lock().await;
        let (outcome, events, why) = match connectors.remove(name) {
            Some(old) => {
                change.stop_all(old.tasks.into_values());
                (PutOutcome::Updated, old.events, "config updated")
            }
            None => (PutOutcome::Created, Arc::default(), "created"),
        };
        let running = RunningConnector::idle(stored, revision, events, why);
        let running = self.run(name, running, change.stopping());
        let put = self.answer(outcome, &running);
        connectors.insert(name.to_string(), running);
        Ok(Attempt::Done(put))
    }

    /// Refuses a put that would make this worker run more task instances than
    /// `--max-instances`: the tasks of `name` (in state `target`) it would run, beside the
    /// tasks it runs for every other connector. In a cluster only the tasks assigned here
    /// count; a task assigned here later that finds no free slot fails with the same reason.
    fn check_room(
        &self,
        connectors: &BTreeMap<String, RunningConnector>,
        name: &str,
        target: TargetState,
        tasks: usize,
    ) -> Result<(), PutError> {
        if target == TargetState::Stopped {
            return Ok(());
        }
        let tasks = self.my_tasks(name, tasks).len();
        let max = self.sandbox.limits().worker.instances;
        let others: usize = connectors
            .iter()
            .filter(|(other, _)| *other != name)
            .map(|(_, c)| c.tasks.len())
            .sum();
        if others + tasks <= max {
            return Ok(());
        }
        Err(PutError::NoRoom(format!(
            "connector {name} needs {tasks} task instance(s) and the other connectors run {others}: {} would be more than --max-instances {max} on this worker; raise --max-instances, or stop or delete connectors",
            others + tasks
        )))
    }

    /// Whether a put of `config` is refused or a no-op given what is stored now: None when
    /// it applies.
    async fn precondition(
        &self,
        name: &str,
        config: &Properties,
        expect: Expect<'_>,
    ) -> Result<Option<Attempt>, PutError> {
        let connectors = self.connectors.lock().await;
        let existing = connectors.get(name);
        match (existing, expect) {
            (Some(_), Expect::Mode(PutMode::CreateOnly)) => {
                Err(PutError::AlreadyExists(name.to_string()))
            }
            (None, Expect::Config(_)) => Ok(Some(Attempt::Stale)),
            (Some(existing), Expect::Config(base)) if existing.stored.config != *base => {
                Ok(Some(Attempt::Stale))
            }
            (Some(existing), _) if same_config(&existing.stored.config, config) => Ok(Some(
                Attempt::Done(self.answer(PutOutcome::Unchanged, existing)),
            )),
            _ => Ok(None),
        }
    }

    /// The answer to a put that left `running` stored.
    fn answer(&self, outcome: PutOutcome, running: &RunningConnector) -> Put {
        let plugin = running
            .plugin
            .clone()
            .or_else(|| self.plugin_for_display(&running.stored));
        Put {
            outcome,
            stored: self.masked(running),
            kind: plugin.map(|p| p.kind()),
        }
    }

    /// Stops the connector and deletes its config; true if it existed. Does not wait for
    /// its tasks to end: a new connector of the same name starts after them.
    pub async fn delete(&self, name: &str) -> Result<bool, String> {
        let change = self.slots.change(name).await;
        if !self.connectors.lock().await.contains_key(name) {
            return Ok(false);
        }
        self.persist(name, None).await?;
        if let Some(running) = self.connectors.lock().await.remove(name) {
            self.forget_metrics(name, &running.stored);
            change.stop_all(running.tasks.into_values());
        }
        Ok(true)
    }

    /// Stops and deletes every connector.
    pub async fn delete_all(&self) -> Result<(), String> {
        let names: Vec<String> = self.connectors.lock().await.keys().cloned().collect();
        for name in names {
            self.delete(&name).await?;
        }
        Ok(())
    }

    /// Stops every task without deleting anything, and waits until each has ended (having
    /// committed what it has, or had its guest call cancelled [`crate::sandbox::STOP_GRACE`]
    /// after the stop): for shutdown.
    pub async fn shutdown(&self) {
        let connectors = std::mem::take(&mut *self.connectors.lock().await);
        let mut stopping = self.slots.all_stopping();
        for (name, running) in connectors {
            tracing::info!(connector = %name, "stopping");
            stopping.stop_all(running.tasks.into_values());
        }
        stopping.wait().await;
    }

    /// The stored config and task configs of every connector, secrets masked.
    pub async fn configs(&self) -> BTreeMap<String, StoredConnector> {
        let connectors = self.connectors.lock().await;
        connectors
            .iter()
            .map(|(name, c)| (name.clone(), self.masked(c)))
            .collect()
    }

    /// The names of every connector, sorted.
    pub async fn names(&self) -> Vec<String> {
        self.connectors.lock().await.keys().cloned().collect()
    }

    /// The config of one connector, secrets masked.
    pub async fn config(&self, name: &str) -> Option<StoredConnector> {
        self.connectors
            .lock()
            .await
            .get(name)
            .map(|c| self.masked(c))
    }

    /// `stored` with every secret value masked, for showing.
    fn masked(&self, running: &RunningConnector) -> StoredConnector {
        let stored = &running.stored;
        let plugin = running
            .plugin
            .clone()
            .or_else(|| self.plugin_for_display(stored));
        let plugin = plugin.as_deref();
        StoredConnector {
            config: secrets::mask(&stored.config, plugin),
            tasks: stored
                .tasks
                .iter()
                .map(|task| secrets::mask(task, plugin))
                .collect(),
            target: stored.target,
        }
    }

    /// The plugin a stored connector names, for showing (its secret keys): the newest version.
    fn plugin_for_display(&self, stored: &StoredConnector) -> Option<Arc<Plugin>> {
        let class = stored.tasks.first().and_then(|t| t.get(TASK_CLASS));
        let class = class.or_else(|| CLASS_KEYS.iter().find_map(|k| stored.config.get(*k)))?;
        self.plugins.find(class)
    }

    /// Host-side checks, then the connector's own validation and task split. The task
    /// configs the plugin returns are guest output: their path-typed values must be paths
    /// `config` names (else the create fails naming the key), and their host-interpreted
    /// keys are taken from `config` ([`keys`]).
    async fn check_config(
        &self,
        name: &str,
        plugin: &Plugin,
        config: &Properties,
    ) -> Result<Vec<Properties>, PutError> {
        let identity = Identity {
            connector: name.to_string(),
            task: None,
        };
        if let Some(first) = self
            .config_errors(&identity, plugin, config)
            .await?
            .into_iter()
            .next()
        {
            return Err(first.into_put_error());
        }
        let limits = self.connector_limits(name, config);
        let max_tasks = max_tasks(config, &limits)?;
        let guest_config = to_guest(config);
        let split = plugin
            .component
            .task_configs(&self.sandbox, identity, &limits, &guest_config, max_tasks)
            .await;
        let tasks = split
            .map_err(|e| PutError::Guest(format!("task-configs: {e}")))?
            .map_err(PutError::Invalid)?;
        if tasks.is_empty() || tasks.len() > max_tasks as usize {
            let n = tasks.len();
            return Err(PutError::Other(format!(
                "task-configs returned {n} task configs; expected 1 to {max_tasks}"
            )));
        }
        let defs = &plugin.descriptor.config_defs;
        tasks
            .into_iter()
            .map(|task| {
                let task: Properties = task.into_iter().collect();
                keys::check_paths(defs, config, &task)
                    .map_err(|e| PutError::Invalid(e.to_string()))?;
                Ok(keys::with_user_host_keys(config, task))
            })
            .collect()
    }

    /// Every problem with `config` for `plugin`, per key, without storing anything: missing
    /// required keys and bad topic names first (the host's checks), then the connector's own.
    pub async fn config_errors(
        &self,
        identity: &Identity,
        plugin: &Plugin,
        config: &Properties,
    ) -> Result<Vec<KeyError>, PutError> {
        if plugin.kind() == ConnectorKind::Transform {
            let class = CLASS_KEYS.iter().find(|k| config.contains_key(**k));
            return Ok(vec![KeyError {
                key: class.unwrap_or(&CLASS_KEYS[0]).to_string(),
                message: format!(
                    "{} is a transform, not a connector; name it in transforms.<alias>.type",
                    plugin.descriptor.name
                ),
                problem: KeyProblem::Refused,
            }]);
        }
        let mut errors: Vec<KeyError> = plugin
            .descriptor
            .config_defs
            .iter()
            .filter(|d| d.required && config.get(&d.name).is_none_or(|v| v.is_empty()))
            .map(|d| KeyError {
                key: d.name.clone(),
                message: format!("Request config key: {}", d.name),
                problem: KeyProblem::Missing,
            })
            .collect();
        errors.extend(topic_errors(plugin, config));
        errors.extend(self.capability_errors(plugin, config));
        let limits = match self.sandbox.limits().connector.for_connector(config) {
            Ok(limits) => limits,
            Err(e) => {
                errors.push(KeyError {
                    key: e.key.to_string(),
                    message: e.message,
                    problem: KeyProblem::Invalid,
                });
                self.sandbox.limits().connector.clone()
            }
        };
        if let Err(e) = max_tasks(config, &limits) {
            errors.push(KeyError {
                key: "tasks.max".into(),
                message: e.to_string(),
                problem: KeyProblem::Refused,
            });
        }
        if !errors.is_empty() {
            return Ok(errors);
        }
        let stage_errors =
            transforms::config_errors(&self.plugins, &self.sandbox, identity, &limits, config)
                .await;
        errors.extend(stage_errors.into_iter().map(|e| KeyError {
            // The put answers with the message alone: it names the key.
            message: if e.message.contains(&e.key) {
                e.message.clone()
            } else {
                e.to_string()
            },
            key: e.key,
            problem: KeyProblem::Invalid,
        }));
        if let Err(e) = crate::worker::errors::ErrorPolicy::from_config(config, Default::default())
        {
            errors.push(KeyError {
                key: e.key.to_string(),
                message: e.to_string(),
                problem: KeyProblem::Invalid,
            });
        }
        if !errors.is_empty() {
            return Ok(errors);
        }
        let validation = plugin
            .component
            .validate(&self.sandbox, identity.clone(), &limits, &to_guest(config))
            .await;
        let guest_errors = validation
            .map_err(|e| PutError::Guest(format!("validate: {e}")))?
            .err()
            .unwrap_or_default();
        Ok(guest_errors
            .into_iter()
            .map(|e| KeyError {
                key: e.key,
                message: e.message,
                problem: KeyProblem::Invalid,
            })
            .collect())
    }

    /// What the capabilities (files, network) refuse in `config`, per key.
    fn capability_errors(&self, plugin: &Plugin, config: &Properties) -> Vec<KeyError> {
        let defs = &plugin.descriptor.config_defs;
        capabilities::check(self.sandbox.capabilities(), defs, config)
            .into_iter()
            .map(|refusal| KeyError {
                key: refusal.key,
                message: refusal.message,
                problem: KeyProblem::Invalid,
            })
            .collect()
    }

    /// A connector's limits; if the worker's ceilings were lowered below them since it was
    /// created, it runs under the ceilings.
    fn connector_limits(&self, name: &str, config: &Properties) -> Limits {
        let worker = &self.sandbox.limits().connector;
        worker.for_connector(config).unwrap_or_else(|e| {
            tracing::warn!(connector = %name, "{e}; running it under the worker's limits");
            worker.clone()
        })
    }

    /// Runs a connector not started yet as its target state says; its tasks start once
    /// those in `after` have ended.
    fn run(&self, name: &str, mut running: RunningConnector, after: Stopping) -> RunningConnector {
        if running.stored.target != TargetState::Stopped {
            self.start_tasks(name, &mut running, after);
        }
        running
    }

    /// Starts every task of a connector this worker runs, on the plugin version it should
    /// run, once the tasks in `after` have ended.
    fn start_tasks(&self, name: &str, running: &mut RunningConnector, after: Stopping) {
        running.plugin = self.plugin_for(name, running);
        let mine = self.my_tasks(name, running.stored.tasks.len());
        running.tasks = self.start_tasks_subset(name, running, &mine, after);
    }

    /// The plugin version a stored connector runs: the one its class pins, else the one its
    /// tasks recorded while it is loaded, else the newest. None, logged and recorded in the
    /// connector's events, when no loaded version fits.
    fn plugin_for(&self, name: &str, running: &RunningConnector) -> Option<Arc<Plugin>> {
        let stored = &running.stored;
        let class = CLASS_KEYS
            .iter()
            .find_map(|k| stored.config.get(*k))
            .or_else(|| stored.tasks.first()?.get(TASK_CLASS));
        let recorded = stored.tasks.first().and_then(|t| t.get(PLUGIN_VERSION));
        let class = class.map_or("", String::as_str);
        match self
            .plugins
            .resolve(class, &stored.config, recorded.map(String::as_str))
        {
            Ok(plugin) => Some(plugin),
            Err(e) => {
                tracing::error!(connector = %name, "{e}; the connector stays stopped");
                let from = Some(stored.target.into());
                (running.events).record(Subject::Connector, from, RunState::Failed, &e.to_string());
                None
            }
        }
    }

    /// Starts the tasks numbered `ids` of a connector on its plugin, once the tasks in
    /// `after` have ended.
    fn start_tasks_subset(
        &self,
        name: &str,
        running: &RunningConnector,
        ids: &[usize],
        after: Stopping,
    ) -> BTreeMap<usize, TaskHandle> {
        let Some(plugin) = running.plugin.clone() else {
            return BTreeMap::new();
        };
        let (stored, paused) = (&running.stored, &running.paused);
        let kind = plugin.kind();
        let limits = self.connector_limits(name, &stored.config);
        ids.iter()
            .filter_map(|i| Some((*i, stored.tasks.get(*i)?)))
            .map(|(i, config)| {
                let make_context = |status, stop| TaskContext {
                    identity: Identity {
                        connector: name.to_string(),
                        task: Some(i as u32),
                    },
                    plugin: plugin.clone(),
                    config: keys::with_user_host_keys(&stored.config, config.clone()),
                    user_config: stored.config.clone(),
                    limits: limits.clone(),
                    sandbox: self.sandbox.clone(),
                    data: self.data.clone(),
                    stages: transforms::Stages::configured(&self.plugins, &stored.config),
                    errors: Default::default(),
                    meter: self.meter(name, i, &limits),
                    control: self.control.clone(),
                    status,
                    events: running.events.clone(),
                    stop,
                    paused: paused.subscribe(),
                    redactor: Default::default(),
                };
                let run = match kind {
                    ConnectorKind::Source => self.runs.source,
                    ConnectorKind::Sink | ConnectorKind::Transform => self.runs.sink,
                };
                let handle =
                    TaskHandle::spawn(&self.tasks, after.clone(), make_context, move |ctx| {
                        task::supervise(ctx, run)
                    });
                (i, handle)
            })
            .collect()
    }
}

fn run_source(
    ctx: &mut TaskContext,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
    Box::pin(source::run(ctx))
}

fn run_sink(
    ctx: &mut TaskContext,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
    Box::pin(sink::run(ctx))
}

/// What must hold, when it is stored, for a put to apply.
#[derive(Clone, Copy)]
enum Expect<'a> {
    Mode(PutMode),
    /// The connector exists with exactly this config (a patch's base).
    Config(&'a Properties),
}

/// How a put ended: with an answer, or found its expected config gone.
enum Attempt {
    Done(Put),
    Stale,
}

/// Same key/value set, ignoring the runtime's `update-timestamp`.
fn same_config(stored: &Properties, new: &Properties) -> bool {
    let without_stamp = |c: &Properties| {
        c.iter()
            .filter(|(k, _)| *k != UPDATE_TIMESTAMP)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Properties>()
    };
    without_stamp(stored) == without_stamp(new)
}

/// The topic names a config gives must be usable as topic log names.
fn topic_errors(plugin: &Plugin, config: &Properties) -> Vec<KeyError> {
    let topic_keys: &[&str] = match plugin.kind() {
        ConnectorKind::Source => &[keys::SOURCE_TOPIC],
        ConnectorKind::Sink => &keys::SINK_TOPICS,
        ConnectorKind::Transform => &[],
    };
    topic_keys
        .iter()
        .filter_map(|key| Some((*key, config.get(*key)?)))
        .flat_map(|(key, value)| value.split(',').map(move |topic| (key, topic.trim())))
        .filter(|(_, topic)| !topic.is_empty())
        .filter_map(|(key, topic)| {
            let message = validate_topic_name(topic).err()?;
            Some(KeyError {
                key: key.to_string(),
                message,
                problem: KeyProblem::Refused,
            })
        })
        .collect()
}

/// One problem with one config key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    pub key: String,
    pub message: String,
    pub problem: KeyProblem,
}

/// What kind of problem a [`KeyError`] is, which decides how a put reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyProblem {
    /// A required key is absent.
    Missing,
    /// The host cannot use the value at all (a topic name, the task count).
    Refused,
    /// The value fails a check: the connector's own, a limit's or a path's.
    Invalid,
}

impl KeyError {
    fn into_put_error(self) -> PutError {
        match self.problem {
            KeyProblem::Missing => PutError::MissingKey(self.key),
            KeyProblem::Refused => PutError::Other(self.message),
            KeyProblem::Invalid => PutError::Invalid(self.message),
        }
    }
}

fn to_guest(config: &Properties) -> Config {
    config.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The number of tasks asked for (1 when unset), within the connector's task limit.
fn max_tasks(config: &Properties, limits: &Limits) -> Result<u32, PutError> {
    let Some((key, value)) = MAX_TASK_KEYS
        .iter()
        .find_map(|k| config.get(*k).map(|v| (k, v)))
    else {
        return Ok(1);
    };
    match value.trim().parse::<u32>() {
        Ok(n) if n > limits.max_tasks => Err(PutError::Other(format!(
            "{key} {n} exceeds the worker ceiling {} (limits.tasks / --max-tasks)",
            limits.max_tasks
        ))),
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(PutError::Other(format!(
            "{key} must be a positive integer, not {value:?}"
        ))),
    }
}

fn now_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}
