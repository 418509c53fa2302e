//! What the metrics, the health routes and the dashboard read of the worker: one
//! [`WorkerView`] (connectors with their status and sink lag, plugins, topics), and the
//! worker's side of its metrics (task meters, restarts counted, series of deleted
//! connectors removed).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use super::events::Event;
use super::lifecycle::{ConnectorStatus, RunState, TaskView};
use super::{keys, Worker};
use crate::metrics::TaskMeter;
use crate::plugins::PluginStatus;
use crate::sandbox::types::ConnectorKind;
use crate::sandbox::Limits;
use crate::storage::{Properties, StoredConnector};

/// Everything an observer shows of this worker, read in one pass.
#[derive(Debug, Clone)]
pub struct WorkerView {
    pub worker: String,
    pub connectors: Vec<ConnectorView>,
    pub plugins: Vec<PluginView>,
    pub topics: Vec<TopicView>,
}

/// One connector as observers see it.
#[derive(Debug, Clone)]
pub struct ConnectorView {
    pub name: String,
    pub status: ConnectorStatus,
    /// Its config, secrets masked.
    pub config: Properties,
    /// The plugin it names (`connector.class` or its alias).
    pub class: String,
    /// A sink's records not committed yet, per topic (embedded mode: topics of this worker).
    pub lag: Vec<(String, u64)>,
    /// This worker's id: the tasks it runs are the ones it reports.
    worker: String,
}

impl ConnectorView {
    /// The connector's own state.
    pub fn state(&self) -> RunState {
        self.status.state.0
    }

    /// Failed: the connector or any of its tasks is FAILED (for readiness, the dashboard
    /// and alerts).
    pub fn failed(&self) -> bool {
        self.state() == RunState::Failed
            || self
                .status
                .tasks
                .iter()
                .any(|t| t.state == RunState::Failed)
    }

    /// Why it failed: the connector's reason, else the first failed task's trace.
    pub fn reason(&self) -> Option<&str> {
        let task_trace = || {
            self.status
                .tasks
                .iter()
                .find(|t| t.state == RunState::Failed)
                .and_then(|t| t.trace.as_deref())
        };
        self.status.state.1.as_deref().or_else(task_trace)
    }

    /// The tasks this worker runs, by number.
    pub fn local_tasks(&self) -> impl Iterator<Item = (u32, &TaskView)> {
        self.status
            .tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.worker == self.worker)
            .map(|(i, t)| (u32::try_from(i).unwrap_or(u32::MAX), t))
    }

    /// `source`, `sink` or `unknown` (no loaded plugin serves it).
    pub fn kind_name(&self) -> &'static str {
        match self.status.kind {
            Some(kind) => crate::plugins::kind_name(kind),
            None => "unknown",
        }
    }
}

/// One row of the plugin listing.
#[derive(Debug, Clone)]
pub struct PluginView {
    /// Name and version of a loaded (or superseded) version; None for a broken file.
    pub loaded: Option<(String, String)>,
    pub kind: Option<ConnectorKind>,
    pub aliases: Vec<String>,
    /// Config keys: name, required, default, secret, documentation.
    pub keys: Vec<ConfigKeyView>,
    pub file: String,
    /// SHA-256 of the file's bytes, hex ("" when unreadable).
    pub digest: String,
    /// Why the file does not load.
    pub broken: Option<String>,
    /// How its code was loaded: `compiled in N ms` or from the compiled-code cache ("" for
    /// a broken file).
    pub load: String,
}

/// One config key a plugin declares.
#[derive(Debug, Clone)]
pub struct ConfigKeyView {
    pub name: String,
    pub required: bool,
    pub default: Option<String>,
    pub secret: bool,
    pub documentation: String,
}

/// One topic of this worker.
#[derive(Debug, Clone)]
pub struct TopicView {
    pub name: String,
    pub bytes: u64,
    pub end_offset: u64,
}

impl Worker {
    /// Whether the stored connectors were attempted after the first plugin scan.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Marks the start-up done (see [`Worker::is_ready`]).
    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn metrics(&self) -> Option<&std::sync::Arc<crate::metrics::Metrics>> {
        self.metrics.as_ref()
    }

    /// Answers once the connector map can be taken: the worker's control state is not stuck.
    pub async fn ping(&self) {
        drop(self.connectors.lock().await);
    }

    /// Answers once the task runtime runs a no-op: guests do not hold every task thread.
    pub async fn ping_tasks(&self) -> bool {
        self.tasks.spawn(async {}).await.is_ok()
    }

    /// The connector's event log, newest first; None if there is no such connector.
    pub async fn events(&self, name: &str) -> Option<Vec<Event>> {
        let connectors = self.connectors.lock().await;
        Some(connectors.get(name)?.events.newest_first())
    }

    /// Every connector, plugin and topic as observers see them.
    pub async fn view(&self) -> WorkerView {
        let configs = self.configs().await;
        let mut connectors = Vec::with_capacity(configs.len());
        for (name, stored) in configs {
            // A connector deleted meanwhile is left out.
            let Some(status) = self.status(&name).await else {
                continue;
            };
            let lag = match status.kind {
                Some(ConnectorKind::Sink) => self.sink_lag(&name, &stored).await,
                _ => Vec::new(),
            };
            let class = keys::CLASS_KEYS
                .iter()
                .find_map(|k| stored.config.get(*k))
                .cloned()
                .unwrap_or_default();
            connectors.push(ConnectorView {
                name,
                status,
                config: stored.config,
                class,
                lag,
                worker: self.id.clone(),
            });
        }
        let plugins = self.plugins.list().into_iter().map(plugin_view).collect();
        let topics = self
            .data
            .local_topics()
            .into_iter()
            .map(|(name, log)| TopicView {
                name,
                bytes: log.size_bytes(),
                end_offset: log.end_offset(),
            })
            .collect();
        WorkerView {
            worker: self.id.clone(),
            connectors,
            plugins,
            topics,
        }
    }

    /// End of each topic a sink reads minus its committed offset, for the topics this
    /// worker holds.
    async fn sink_lag(&self, name: &str, stored: &StoredConnector) -> Vec<(String, u64)> {
        let Ok(state) = self.data.sink_resume(name).await else {
            return Vec::new();
        };
        let logs: BTreeMap<String, _> = self.data.local_topics().into_iter().collect();
        sink_topics(stored)
            .into_iter()
            .filter_map(|topic| {
                let end = logs.get(&topic)?.end_offset();
                let committed = state.offsets.get(&topic).copied().unwrap_or(0);
                Some((topic, end.saturating_sub(committed)))
            })
            .collect()
    }

    /// The meter task `task` of `connector` counts through (counts nothing with metrics off).
    pub(super) fn meter(&self, connector: &str, task: usize, limits: &Limits) -> TaskMeter {
        let task = u32::try_from(task).unwrap_or(u32::MAX);
        self.metrics
            .as_ref()
            .map(|m| m.task(connector, task, limits.memory_bytes))
            .unwrap_or_default()
    }

    /// Counts the restarts an operator asked for.
    pub(super) fn count_operator_restarts(&self, connector: &str, tasks: &[usize]) {
        if let Some(metrics) = &self.metrics {
            for task in tasks {
                metrics.operator_restart(connector, u32::try_from(*task).unwrap_or(u32::MAX));
            }
        }
    }

    /// Removes the series of a deleted connector.
    pub(super) fn forget_metrics(&self, connector: &str, stored: &StoredConnector) {
        if let Some(metrics) = &self.metrics {
            metrics.forget(connector, stored.tasks.len(), &sink_topics(stored));
        }
    }
}

/// The topics a sink connector's config names.
fn sink_topics(stored: &StoredConnector) -> Vec<String> {
    let names = keys::first_of(&stored.config, &keys::SINK_TOPICS).map(|(_, names)| names);
    names
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

fn plugin_view(info: crate::plugins::PluginInfo) -> PluginView {
    let broken = match info.status {
        PluginStatus::Broken { reason } => Some(reason),
        PluginStatus::Loaded | PluginStatus::Superseded | PluginStatus::Loading => None,
    };
    let descriptor = info.descriptor.filter(|_| broken.is_none());
    PluginView {
        loaded: descriptor
            .as_ref()
            .map(|d| (d.name.clone(), d.version.clone())),
        kind: descriptor.as_ref().map(|d| d.kind),
        aliases: descriptor
            .as_ref()
            .map(|d| d.aliases.clone())
            .unwrap_or_default(),
        keys: descriptor
            .as_ref()
            .map(|d| {
                d.config_defs
                    .iter()
                    .map(|def| ConfigKeyView {
                        name: def.name.clone(),
                        required: def.required,
                        default: def.default_value.clone(),
                        secret: def.secret,
                        documentation: def.description.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        file: info.file.display().to_string(),
        digest: info.content_hash.unwrap_or_default(),
        broken,
        load: info.origin.map(|o| o.to_string()).unwrap_or_default(),
    }
}

/// Longest value (in characters) the topic inspector shows of a record's key or value.
pub const SHOWN_CHARS: usize = 200;
/// Most records one inspector read returns.
pub const MAX_INSPECTED: u32 = 500;

/// Why the records of a topic could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("no topic {0} on this worker (GET /ui/topics lists them; in cluster mode topics live in JetStream)")]
    NotFound(String),
    #[error(transparent)]
    Read(#[from] std::io::Error),
    #[error("topic {topic} holds an unreadable batch from offset {offset}: {reason}")]
    Corrupt {
        topic: String,
        offset: u64,
        reason: String,
    },
}

/// Records of a topic, for the inspector.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TopicRecords {
    pub topic: String,
    pub end_offset: u64,
    pub records: Vec<RecordView>,
}

/// One record as the inspector shows it: text, cut at [`SHOWN_CHARS`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecordView {
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub key: Option<String>,
    pub value: String,
    pub headers: BTreeMap<String, String>,
}

impl RecordView {
    pub fn key_text(&self) -> &str {
        self.key.as_deref().unwrap_or("")
    }

    pub fn headers_text(&self) -> String {
        let pairs: Vec<String> = self
            .headers
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        pairs.join(", ")
    }
}

/// `bytes` as text (lossy UTF-8), cut at [`SHOWN_CHARS`] with an ellipsis.
fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    match text.char_indices().nth(SHOWN_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.into_owned(),
    }
}

impl Worker {
    /// Up to `limit` records of `topic` from `offset` (default: the latest `limit`).
    pub fn topic_records(
        &self,
        topic: &str,
        offset: Option<u64>,
        limit: u32,
    ) -> Result<TopicRecords, InspectError> {
        let limit = limit.clamp(1, MAX_INSPECTED);
        let log = (self.data.local_topics().into_iter())
            .find(|(name, _)| name == topic)
            .map(|(_, log)| log)
            .ok_or_else(|| InspectError::NotFound(topic.to_string()))?;
        let end = log.end_offset();
        let from = offset.unwrap_or_else(|| end.saturating_sub(u64::from(limit)));
        let read = log.read(from, limit, 4 << 20)?;
        let corrupt = |reason: String| InspectError::Corrupt {
            topic: topic.to_string(),
            offset: read.first_offset,
            reason,
        };
        let frames = wasm_connect_sdk::BatchReader::read_all(&read.frames, read.count)
            .map_err(|e| corrupt(e.to_string()))?;
        let records = frames
            .iter()
            .zip(read.first_offset..)
            .map(|(record, offset)| RecordView {
                offset,
                timestamp: record.timestamp,
                key: record.key.map(shown),
                value: shown(record.value),
                headers: record
                    .headers()
                    .map(|(k, v)| (k.to_string(), shown(v)))
                    .collect(),
            })
            .collect();
        Ok(TopicRecords {
            topic: topic.to_string(),
            end_offset: end,
            records,
        })
    }
}
