//! Reading, altering and resetting a connector's committed offsets (source positions or
//! sink offsets), and the topics it uses. Changes are only allowed while it is STOPPED and
//! none of its tasks is still stopping; the check and the write are one step under the
//! connector's change, so a resume comes either before (the change is refused) or after
//! (its tasks start from the new offsets).

use std::collections::BTreeMap;

use super::change::Change;
use super::plane::PlaneError;
use super::{keys, Worker};
use crate::sandbox::types::ConnectorKind;
use crate::storage::TargetState;

/// A connector's committed offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectorOffsets {
    /// Source partition → position.
    Source(BTreeMap<String, String>),
    /// Topic → next offset the sink reads.
    Sink(BTreeMap<String, u64>),
}

/// Offset changes: `None` resets that partition or topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetChanges {
    Source(Vec<(String, Option<String>)>),
    Sink(Vec<(String, Option<u64>)>),
}

#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    #[error("Connector {0} not found")]
    NotFound(String),
    #[error("Connectors must be in the STOPPED state before their offsets can be modified; stop {0} first")]
    NotStopped(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Storage(#[from] PlaneError),
}

impl Worker {
    /// The committed offsets of a connector.
    pub async fn offsets(&self, name: &str) -> Result<ConnectorOffsets, OffsetsError> {
        let (kind, tasks) = self.kind_and_tasks(name).await?;
        if kind == ConnectorKind::Source {
            let positions = self
                .data
                .source_offsets(name, &producers(name, tasks))
                .await?;
            Ok(ConnectorOffsets::Source(positions))
        } else {
            let state = self.data.sink_resume(name).await?;
            Ok(ConnectorOffsets::Sink(state.offsets))
        }
    }

    /// Applies `changes` to a stopped connector's offsets.
    pub async fn alter_offsets(
        &self,
        name: &str,
        changes: OffsetChanges,
    ) -> Result<(), OffsetsError> {
        let (_change, kind, tasks) = self.stopped(name).await?;
        self.write_offsets(name, kind, tasks, changes).await
    }

    /// Forgets every committed offset of a stopped connector.
    pub async fn reset_offsets(&self, name: &str) -> Result<(), OffsetsError> {
        let (_change, kind, tasks) = self.stopped(name).await?;
        let changes = match self.offsets(name).await? {
            ConnectorOffsets::Source(positions) => {
                OffsetChanges::Source(positions.into_keys().map(|p| (p, None)).collect())
            }
            ConnectorOffsets::Sink(offsets) => {
                OffsetChanges::Sink(offsets.into_keys().map(|t| (t, None)).collect())
            }
        };
        self.write_offsets(name, kind, tasks, changes).await
    }

    /// The change of connector `name` once it is STOPPED and none of its tasks still runs
    /// (waiting for those outside the change), with whether it is a source and its task
    /// count.
    async fn stopped(
        &self,
        name: &str,
    ) -> Result<(Change<'_>, ConnectorKind, usize), OffsetsError> {
        loop {
            let change = self.slots.change(name).await;
            let (kind, tasks) = self
                .kind_and_tasks_if(name, |target| target == TargetState::Stopped)
                .await?;
            let mut stopping = change.stopping();
            if stopping.is_done() {
                return Ok((change, kind, tasks));
            }
            drop(change);
            stopping.wait().await;
        }
    }

    /// Writes offset changes of a stopped connector (the caller holds its change).
    async fn write_offsets(
        &self,
        name: &str,
        kind: ConnectorKind,
        tasks: usize,
        changes: OffsetChanges,
    ) -> Result<(), OffsetsError> {
        match changes {
            OffsetChanges::Source(changes) if kind == ConnectorKind::Source => Ok(self
                .data
                .alter_source_offsets(name, &producers(name, tasks), &changes)
                .await?),
            OffsetChanges::Sink(changes) if kind == ConnectorKind::Sink => {
                Ok(self.data.alter_sink_offsets(name, &changes).await?)
            }
            OffsetChanges::Source(_) => Err(OffsetsError::Invalid(format!(
                "{name} is a sink connector: give partitions as {{\"kafka_topic\": …, \"kafka_partition\": 0}} and offsets as {{\"kafka_offset\": …}}"
            ))),
            OffsetChanges::Sink(_) => Err(OffsetsError::Invalid(format!(
                "{name} is a source connector: give partitions as {{\"partition\": …}} and offsets as {{\"position\": …}}"
            ))),
        }
    }

    /// The topics a connector uses: those its source tasks wrote to, or its sink reads.
    pub async fn topics(&self, name: &str) -> Result<Vec<String>, OffsetsError> {
        let (kind, tasks) = self.kind_and_tasks(name).await?;
        if kind == ConnectorKind::Source {
            return Ok(self
                .data
                .source_topics(name, &producers(name, tasks))
                .await?);
        }
        let connectors = self.connectors.lock().await;
        let config = connectors
            .get(name)
            .map(|c| c.stored.config.clone())
            .unwrap_or_default();
        let names = keys::first_of(&config, &keys::SINK_TOPICS)
            .map(|(_, names)| names.to_string())
            .unwrap_or_default();
        Ok(names
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect())
    }

    /// The connector's kind, and how many tasks it has.
    async fn kind_and_tasks(&self, name: &str) -> Result<(ConnectorKind, usize), OffsetsError> {
        self.kind_and_tasks_if(name, |_| true).await
    }

    async fn kind_and_tasks_if(
        &self,
        name: &str,
        allowed: impl Fn(TargetState) -> bool,
    ) -> Result<(ConnectorKind, usize), OffsetsError> {
        let connectors = self.connectors.lock().await;
        let running = connectors
            .get(name)
            .ok_or_else(|| OffsetsError::NotFound(name.to_string()))?;
        if !allowed(running.stored.target) {
            return Err(OffsetsError::NotStopped(name.to_string()));
        }
        let plugin = running
            .plugin
            .clone()
            .or_else(|| self.plugin_for_display(&running.stored));
        let plugin = plugin.ok_or_else(|| {
            OffsetsError::Invalid(format!("no plugin of connector {name} is loaded"))
        })?;
        Ok((plugin.kind(), running.stored.tasks.len()))
    }
}

/// The producer ids of a connector's tasks in the topic logs.
fn producers(name: &str, tasks: usize) -> Vec<String> {
    (0..tasks.max(1))
        .map(|task| format!("{name}/{task}"))
        .collect()
}
