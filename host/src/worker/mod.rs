//! The worker: owns the connectors of this process, checks and stores their configs, and
//! runs one actor per task (`source` / `sink`), each with its own wasm store.

pub mod sink;
pub mod source;
mod task;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::plugins::{Plugin, PluginRegistry};
use crate::sandbox::types::Config;
use crate::sandbox::{Identity, Sandbox};
use crate::storage::{validate_topic_name, Properties, Storage, StoredConnector};
pub use task::{CallResult, Positions, TaskContext, TaskHandle, TaskStatus};

/// Key the runtime stamps on stored configs; not part of the "same config" comparison.
pub const UPDATE_TIMESTAMP: &str = "update-timestamp";
/// Key naming the plugin on each task config.
pub const TASK_CLASS: &str = "task-class";
/// The keys that may name the connector's plugin.
const CLASS_KEYS: [&str; 2] = ["connector-class", "connector.class"];
/// The keys that may set the number of tasks.
const MAX_TASK_KEYS: [&str; 3] = ["max-task", "max-tasks", "tasks.max"];

/// What a create or update did.
#[derive(Debug, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    Updated,
    /// The same config is stored already; nothing changed.
    Unchanged,
}

/// Why a create or update was refused. Nothing is stored when one of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("Request config key: {0}")]
    MissingKey(String),
    #[error("no connector plugin named '{class}'; available: {available}")]
    UnknownPlugin { class: String, available: String },
    /// The connector's own validation rejected the config: its messages.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Other(String),
}

/// A connector this worker runs.
struct RunningConnector {
    stored: StoredConnector,
    tasks: Vec<TaskHandle>,
}

pub struct Worker {
    id: String,
    sandbox: Arc<Sandbox>,
    storage: Arc<Storage>,
    plugins: Arc<PluginRegistry>,
    connectors: Mutex<BTreeMap<String, RunningConnector>>,
}

impl Worker {
    pub fn new(id: String, sandbox: Arc<Sandbox>, storage: Arc<Storage>, plugins: Arc<PluginRegistry>) -> Self {
        Worker { id, sandbox, storage, plugins, connectors: Mutex::new(BTreeMap::new()) }
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

    /// Starts every stored connector where it left off.
    pub async fn restore(&self) -> anyhow::Result<()> {
        let stored = self.storage.state.connectors()?;
        let mut connectors = self.connectors.lock().await;
        for (name, stored) in stored {
            tracing::info!(connector = %name, "restarting stored connector");
            let tasks = self.start_tasks(&name, &stored);
            connectors.insert(name, RunningConnector { stored, tasks });
        }
        Ok(())
    }

    /// Creates the connector, or updates it and restarts its tasks (upsert).
    pub async fn put(&self, name: &str, mut config: Properties) -> Result<PutOutcome, PutError> {
        let mut connectors = self.connectors.lock().await;
        let existing = connectors.get(name).map(|c| &c.stored.config);
        if existing.is_some_and(|stored| same_config(stored, &config)) {
            return Ok(PutOutcome::Unchanged);
        }
        let class = CLASS_KEYS.iter().find_map(|k| config.get(*k)).ok_or_else(|| PutError::MissingKey("connector-class".into()))?;
        let plugin = self.plugins.find(class).ok_or_else(|| PutError::UnknownPlugin {
            class: class.clone(),
            available: self.plugins.names().join(", "),
        })?;
        let tasks = self.check_config(name, &plugin, &config).await?;
        let timestamp = now_millis().to_string();
        config.insert(UPDATE_TIMESTAMP.into(), timestamp.clone());
        let tasks = tasks
            .into_iter()
            .map(|task| {
                let mut task: Properties = task.into_iter().collect();
                task.insert(TASK_CLASS.into(), plugin.descriptor.name.clone());
                task.insert(UPDATE_TIMESTAMP.into(), timestamp.clone());
                task
            })
            .collect();
        let stored = StoredConnector { config, tasks };
        self.storage.state.put_connector(name, &stored).map_err(|e| PutError::Other(e.to_string()))?;
        let outcome = match connectors.remove(name) {
            Some(old) => {
                stop_all(old.tasks).await;
                PutOutcome::Updated
            }
            None => PutOutcome::Created,
        };
        let tasks = self.start_tasks(name, &stored);
        connectors.insert(name.to_string(), RunningConnector { stored, tasks });
        Ok(outcome)
    }

    /// Stops the connector and deletes its config; true if it existed.
    pub async fn delete(&self, name: &str) -> Result<bool, String> {
        let mut connectors = self.connectors.lock().await;
        let Some(running) = connectors.remove(name) else { return Ok(false) };
        stop_all(running.tasks).await;
        self.storage.state.delete_connector(name).map_err(|e| e.to_string())?;
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

    /// Stops every task (each commits what it has) without deleting anything: for shutdown.
    pub async fn shutdown(&self) {
        let mut connectors = self.connectors.lock().await;
        for (name, running) in std::mem::take(&mut *connectors) {
            tracing::info!(connector = %name, "stopping");
            stop_all(running.tasks).await;
        }
    }

    /// The stored config and task configs of every connector.
    pub async fn configs(&self) -> BTreeMap<String, StoredConnector> {
        self.connectors.lock().await.iter().map(|(name, c)| (name.clone(), c.stored.clone())).collect()
    }

    /// The config of one connector.
    pub async fn config(&self, name: &str) -> Option<StoredConnector> {
        self.connectors.lock().await.get(name).map(|c| c.stored.clone())
    }

    /// The status of each task of a connector; None if there is no such connector.
    pub async fn task_statuses(&self, name: &str) -> Option<Vec<TaskStatus>> {
        let connectors = self.connectors.lock().await;
        let running = connectors.get(name)?;
        Some(running.tasks.iter().map(|t| t.status.borrow().clone()).collect())
    }

    /// True when the connector exists and all its tasks are running.
    pub async fn is_running(&self, name: &str) -> bool {
        let connectors = self.connectors.lock().await;
        connectors.get(name).is_some_and(|c| !c.tasks.is_empty() && c.tasks.iter().all(TaskHandle::is_running))
    }

    /// Host-side checks, then the connector's own validation and task split.
    async fn check_config(&self, name: &str, plugin: &Plugin, config: &Properties) -> Result<Vec<Config>, PutError> {
        for def in plugin.descriptor.config_defs.iter().filter(|d| d.required) {
            if config.get(&def.name).is_none_or(|v| v.is_empty()) {
                return Err(PutError::MissingKey(def.name.clone()));
            }
        }
        check_topics(plugin, config)?;
        let max_tasks = max_tasks(config)?;
        let guest_config: Config = config.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let identity = Identity { connector: name.to_string(), task: None };
        let component = &plugin.component;
        let validation = component.validate(&self.sandbox, identity.clone(), &guest_config).await;
        let errors = validation.map_err(|e| PutError::Other(format!("validate: {e}")))?;
        if let Err(errors) = errors {
            let messages: Vec<String> = errors.into_iter().map(|e| e.message).collect();
            return Err(PutError::Invalid(messages.join("; ")));
        }
        let split = component.task_configs(&self.sandbox, identity, &guest_config, max_tasks).await;
        let tasks = split.map_err(|e| PutError::Other(format!("task-configs: {e}")))?.map_err(PutError::Invalid)?;
        if tasks.is_empty() || tasks.len() > max_tasks as usize {
            let n = tasks.len();
            return Err(PutError::Other(format!("task-configs returned {n} task configs; expected 1 to {max_tasks}")));
        }
        Ok(tasks)
    }

    fn start_tasks(&self, name: &str, stored: &StoredConnector) -> Vec<TaskHandle> {
        let class = stored.tasks.first().and_then(|t| t.get(TASK_CLASS)).cloned().unwrap_or_default();
        let Some(plugin) = self.plugins.find(&class) else {
            tracing::error!(connector = %name, "no plugin '{class}' is loaded; the connector stays stopped");
            return Vec::new();
        };
        let is_source = plugin.is_source();
        stored
            .tasks
            .iter()
            .enumerate()
            .map(|(i, config)| {
                let make_context = |status, stop| TaskContext {
                    identity: Identity { connector: name.to_string(), task: Some(i as u32) },
                    plugin: plugin.clone(),
                    config: config.clone(),
                    sandbox: self.sandbox.clone(),
                    storage: self.storage.clone(),
                    status,
                    stop,
                };
                if is_source {
                    TaskHandle::spawn(make_context, source::run)
                } else {
                    TaskHandle::spawn(make_context, sink::run)
                }
            })
            .collect()
    }
}

async fn stop_all(tasks: Vec<TaskHandle>) {
    for task in tasks {
        task.stop().await;
    }
}

/// Same key/value set, ignoring the runtime's `update-timestamp`.
fn same_config(stored: &Properties, new: &Properties) -> bool {
    let without_stamp = |c: &Properties| c.iter().filter(|(k, _)| *k != UPDATE_TIMESTAMP).map(|(k, v)| (k.clone(), v.clone())).collect::<Properties>();
    without_stamp(stored) == without_stamp(new)
}

/// The topic names a config gives must be usable as topic log names.
fn check_topics(plugin: &Plugin, config: &Properties) -> Result<(), PutError> {
    let keys: &[&str] = if plugin.is_source() { &["topic"] } else { &["topicNames", "topics"] };
    for value in keys.iter().filter_map(|k| config.get(*k)) {
        for topic in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            validate_topic_name(topic).map_err(PutError::Other)?;
        }
    }
    Ok(())
}

fn max_tasks(config: &Properties) -> Result<u32, PutError> {
    let Some((key, value)) = MAX_TASK_KEYS.iter().find_map(|k| config.get(*k).map(|v| (k, v))) else { return Ok(1) };
    match value.trim().parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(PutError::Other(format!("{key} must be a positive integer, not {value:?}"))),
    }
}

fn now_millis() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default()
}
