//! The data plane of one worker ([`DataPlane`] over [`Storage`]): topics are the append-only
//! topic logs, offsets live in redb.
//!
//! A source batch's positions travel inside the log batch that holds its records, so they
//! are durable exactly when the records are. The redb copy written right after is what the
//! APIs show; it is committed without its own fsync unless asked, and overridden on resume by
//! the newer positions found in the logs.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasm_connect_sdk::BatchWriter;

use super::{LogRead, Producer, SinkState, Storage, TopicLog};
use crate::sandbox::types::Position;
use crate::worker::plane::{
    route, to_positions, without_resets, DataPlane, PlaneError, StoreBatch, TopicRead,
};
use crate::worker::Positions;

/// The embedded data plane.
pub struct EmbeddedPlane(pub Arc<Storage>);

#[async_trait::async_trait]
impl DataPlane for EmbeddedPlane {
    async fn source_resume(
        &self,
        connector: &str,
        producer: &str,
    ) -> Result<(Positions, u64), PlaneError> {
        let producers = [producer.to_string()];
        let positions = self.source_offsets(connector, &producers).await?;
        let next_sequence = self
            .0
            .topics
            .all()
            .into_iter()
            .filter_map(|(_, log)| log.checkpoint(producer))
            .map(|checkpoint| checkpoint.sequence + 1)
            .max()
            .unwrap_or(0);
        Ok((positions, next_sequence))
    }

    async fn store_batch(&self, batch: StoreBatch) -> Result<Vec<Position>, PlaneError> {
        let storage = self.0.clone();
        tokio::task::spawn_blocking(move || store(&storage, &batch)).await?
    }

    async fn sink_resume(&self, connector: &str) -> Result<SinkState, PlaneError> {
        Ok(self.0.state.sink_state(connector)?)
    }

    async fn topic_reader(
        &self,
        _connector: &str,
        _task: u32,
        topic: &str,
        _next_offset: u64,
    ) -> Result<Box<dyn TopicRead>, PlaneError> {
        // Every read names its offset.
        let log = self.0.topics.get(topic)?;
        Ok(Box::new(LogReader {
            topic: topic.to_string(),
            log,
        }))
    }

    async fn commit_sink(
        &self,
        connector: &str,
        offsets: Vec<(String, u64)>,
        positions: Vec<(String, String)>,
    ) -> Result<(), PlaneError> {
        let (storage, connector) = (self.0.clone(), connector.to_string());
        tokio::task::spawn_blocking(move || {
            storage.state.commit_sink(&connector, &offsets, &positions)
        })
        .await??;
        Ok(())
    }

    /// The state store's positions, overridden by the newest ones the topic logs hold for
    /// `producers`.
    async fn source_offsets(
        &self,
        connector: &str,
        producers: &[String],
    ) -> Result<Positions, PlaneError> {
        let mut newest: BTreeMap<String, (u64, String)> = BTreeMap::new();
        for (_, log) in self.0.topics.all() {
            for checkpoint in producers
                .iter()
                .filter_map(|producer| log.checkpoint(producer))
            {
                for (partition, (sequence, position)) in checkpoint.positions {
                    if newest
                        .get(&partition)
                        .is_none_or(|(seen, _)| *seen < sequence)
                    {
                        newest.insert(partition, (sequence, position));
                    }
                }
            }
        }
        let mut positions = self.0.state.source_positions(connector)?;
        positions.extend(
            newest
                .into_iter()
                .map(|(partition, (_, position))| (partition, position)),
        );
        Ok(without_resets(positions))
    }

    /// New positions go to the state store and, as an empty batch, into every topic log
    /// that holds positions of the connector's tasks, so they win over what the logs had.
    async fn alter_source_offsets(
        &self,
        connector: &str,
        producers: &[String],
        changes: &[(String, Option<String>)],
    ) -> Result<(), PlaneError> {
        self.0.state.set_source_positions(connector, changes)?;
        // An empty position marks a reset; resuming tasks treat it as "no position".
        let positions: Vec<(String, String)> = changes
            .iter()
            .map(|(partition, position)| (partition.clone(), position.clone().unwrap_or_default()))
            .collect();
        for producer in producers {
            for (topic, log) in self.0.topics.all() {
                let Some(checkpoint) = log.checkpoint(producer) else {
                    continue;
                };
                let batch = Producer {
                    id: producer,
                    sequence: checkpoint.sequence + 1,
                    positions: &positions,
                };
                log.append(0, &[], &batch)
                    .map_err(|source| PlaneError::Append { topic, source })?;
            }
        }
        Ok(())
    }

    async fn alter_sink_offsets(
        &self,
        connector: &str,
        changes: &[(String, Option<u64>)],
    ) -> Result<(), PlaneError> {
        Ok(self.0.state.set_sink_offsets(connector, changes)?)
    }

    async fn source_topics(
        &self,
        _connector: &str,
        producers: &[String],
    ) -> Result<Vec<String>, PlaneError> {
        let mut used: Vec<String> = self
            .0
            .topics
            .all()
            .into_iter()
            .filter(|(_, log)| producers.iter().any(|p| log.checkpoint(p).is_some()))
            .map(|(topic, _)| topic)
            .collect();
        used.sort();
        Ok(used)
    }

    fn local_topics(&self) -> Vec<(String, Arc<TopicLog>)> {
        self.0.topics.all()
    }
}

/// Routes a batch, appends it to its topic logs and commits its positions (blocking).
fn store(storage: &Storage, batch: &StoreBatch) -> Result<Vec<Position>, PlaneError> {
    let mut groups: Vec<(&str, BatchWriter)> = Vec::new();
    let positions = route(
        &batch.batch,
        &batch.default_topic,
        &batch.checks,
        |topic, record, timestamp| {
            let group = match groups.iter().position(|(t, _)| *t == topic) {
                Some(i) => i,
                None => {
                    let capacity = batch.batch.frames.len();
                    groups.push((topic, BatchWriter::with_capacity(capacity)));
                    groups.len() - 1
                }
            };
            groups[group].1.push_content(record.content, timestamp);
        },
    )?;
    // Every topic first: a topic over the worker's cap fails the batch before any of it is
    // appended.
    let logs = groups
        .iter()
        .map(|(topic, _)| storage.topics.get(topic))
        .collect::<Result<Vec<_>, _>>()?;
    let last = groups.len().saturating_sub(1);
    for (i, ((topic, records), log)) in groups.iter().zip(&logs).enumerate() {
        // Positions ride with the last append only: a crash before it loses no record.
        let checkpoint: &[(String, String)] = if i == last { &positions } else { &[] };
        let producer = Producer {
            id: &batch.producer,
            sequence: batch.sequence,
            positions: checkpoint,
        };
        log.append(records.count(), records.frames(), &producer)
            .map_err(|source| PlaneError::Append {
                topic: topic.to_string(),
                source,
            })?;
    }
    storage
        .state
        .commit_source_positions(&batch.connector, &positions, batch.durable)?;
    Ok(to_positions(positions))
}

/// A sink task's reader of one topic log.
struct LogReader {
    topic: String,
    log: Arc<TopicLog>,
}

#[async_trait::async_trait]
impl TopicRead for LogReader {
    async fn read(
        &mut self,
        from: u64,
        max_records: u32,
        max_bytes: usize,
    ) -> Result<LogRead, PlaneError> {
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || log.read(from, max_records, max_bytes))
            .await?
            .map_err(|source| PlaneError::Read {
                topic: self.topic.clone(),
                source,
            })
    }

    fn caught_up(&self, read: &LogRead, _max_records: u32) -> bool {
        read.first_offset + u64::from(read.count) >= self.log.end_offset()
    }

    fn appended(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.log.subscribe())
    }
}
