//! The data plane in cluster mode: topics are JetStream streams, and the offsets of sources
//! and sinks live in the `offsets` bucket, so a task resumes where it stopped on whichever
//! worker runs it next.
//!
//! - Topic `t` is the stream `wc-<cluster>-t` (`.` written as `~`) with the subjects
//!   `wc.<cluster>.topic.t.<producer>`, one per source task. A message carries many records
//!   and the logical offset of its first one ([`super::message`] has the layout), so a
//!   record's offset is one number, as in the embedded topic logs.
//! - A source's batch is published as few messages as its topics and sizes allow, pipelined
//!   ([`super::publish`]); then the positions it completes are committed to the `offsets`
//!   bucket with the producer's batch number. Every message is also a checkpoint: a task
//!   that crashed between the two resumes after the newest checkpoint its subjects hold
//!   ([`Cluster::resume_after_checkpoints`]), so no record is stored twice or lost.
//! - A sink reads through a durable pull consumer ([`super::reader`]) and commits the next
//!   offset with the positions of its flush in one KV value.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::stream::LastRawMessageErrorKind;
use async_nats::jetstream::{self, kv};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::message;
use super::publish::{TopicStream, Units};
use super::reader::TopicReader;
use super::{key_part, Cluster, ClusterError};
use crate::sandbox::types::Position;
use crate::storage::SinkState;
use crate::worker::plane::{
    route, to_positions, without_resets, DataPlane, PlaneError, StoreBatch, TopicRead,
};
use crate::worker::Positions;

/// How long a stream remembers message ids: longer than any retry of a failed publish.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How long a KV read or compare-and-set of an offsets value is tried again, and the pause
/// between tries.
const KV_RETRY_FOR: Duration = Duration::from_secs(30);
const KV_RETRY_PAUSE: Duration = Duration::from_millis(250);

/// What the `offsets` bucket holds for a source connector.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SourceOffsets {
    /// Partition → last committed position.
    pub positions: BTreeMap<String, String>,
    /// Topics its tasks published to: written before a task first publishes to one, so a
    /// resuming task knows every stream that may hold its checkpoints.
    pub topics: BTreeSet<String>,
    /// Bumped by every offset change: checkpoints of an older epoch are not resumed from.
    #[serde(default)]
    pub epoch: u64,
    /// Producer (`connector/task`) → the number of its last batch committed here.
    #[serde(default)]
    pub batches: BTreeMap<String, u64>,
}

impl Cluster {
    /// The stream of `topic`, created on first use.
    async fn topic_stream(&self, topic: &str) -> Result<Arc<TopicStream>, ClusterError> {
        let opened = self
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)
            .cloned();
        if let Some(stream) = opened {
            return Ok(stream);
        }
        let known = self.streams.lock().unwrap_or_else(|e| e.into_inner()).len();
        if known >= self.options.max_topics {
            let too_many = crate::storage::TopicError::TooMany {
                topic: topic.to_string(),
                max: self.options.max_topics,
            };
            return Err(too_many.into());
        }
        let name = format!("wc-{}-{}", self.options.cluster_id, topic.replace('.', "~"));
        let subject_prefix = format!(
            "wc.{}.topic.{}",
            self.options.cluster_id,
            topic.replace('.', "~")
        );
        let config = jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![format!("{subject_prefix}.*")],
            num_replicas: self.options.replicas,
            storage: jetstream::stream::StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        };
        // Tasks on several workers create a topic's stream together, and a request that
        // loses that race can time out: try again.
        let create = || async {
            self.js
                .get_or_create_stream(config.clone())
                .await
                .map_err(|source| ClusterError::Stream {
                    stream: name.clone(),
                    replicas: self.options.replicas,
                    source,
                })
        };
        let stream = retrying(create).await?;
        let subjects = &stream.cached_info().config.subjects;
        if *subjects != config.subjects {
            return Err(ClusterError::OldStream {
                stream: name,
                subjects: subjects.clone(),
            });
        }
        let stream = Arc::new(TopicStream::new(stream, name, subject_prefix));
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        Ok(streams.entry(topic.to_string()).or_insert(stream).clone())
    }

    /// Routes a polled batch ([`route`], as the embedded path does), publishes it to its
    /// topics, waits until every record is stored, and commits the positions the batch
    /// completes. Returns them.
    async fn publish_batch(&self, batch: &StoreBatch) -> Result<Vec<Position>, PlaneError> {
        let connector = &batch.connector;
        let key = source_key(connector);
        let state = self.known_sources.get(&self.offsets, &key).await?;
        let max_payload = self.js.client().server_info().max_payload;
        let mut units = Units::new(state.epoch, batch.sequence, max_payload);
        let positions = route(
            &batch.batch,
            &batch.default_topic,
            &batch.checks,
            |topic, record, timestamp| units.push(topic, record, timestamp),
        )?;
        let units = units.finish(max_payload)?;
        let mut streams = BTreeMap::new();
        for unit in &units {
            if !streams.contains_key(unit.topic) {
                streams.insert(unit.topic, self.topic_stream(unit.topic).await?);
            }
        }
        let new_topics: Vec<String> = (streams.keys())
            .filter(|topic| !state.topics.contains(**topic))
            .map(|topic| topic.to_string())
            .collect();
        if !new_topics.is_empty() {
            let known = &self.known_sources;
            known
                .update(&self.offsets, &key, |offsets: &mut SourceOffsets| {
                    offsets.topics.extend(new_topics.iter().cloned());
                })
                .await?;
        }
        let run = self.run_of(&batch.producer);
        self.publish_units(&batch.producer, &run, units, &streams)
            .await?;
        let known = &self.known_sources;
        known
            .update(&self.offsets, &key, |offsets: &mut SourceOffsets| {
                offsets.positions.extend(positions.iter().cloned());
                offsets
                    .batches
                    .insert(batch.producer.clone(), batch.sequence);
            })
            .await?;
        Ok(to_positions(positions))
    }

    /// The id of this start of `producer`'s task (see [`super::publish`]): set by
    /// [`DataPlane::source_resume`].
    fn run_of(&self, producer: &str) -> String {
        let runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        runs.get(producer).cloned().unwrap_or_default()
    }

    /// Where `producer` resumes: the committed positions, overridden by the newest checkpoint
    /// its subjects hold past its last committed batch (it crashed after storing a batch and
    /// before committing it), and the number of its next batch.
    async fn resume_after_checkpoints(
        &self,
        connector: &str,
        producer: &str,
    ) -> Result<(Positions, u64), ClusterError> {
        let key = source_key(connector);
        self.known_sources.forget(&key);
        let state = self.known_sources.get(&self.offsets, &key).await?;
        let committed = state.batches.get(producer).copied();
        let mut newest: Option<message::Checkpoint> = None;
        for topic in &state.topics {
            let stream = self.topic_stream(topic).await?;
            let subject = stream.subject(producer);
            // Retried: a task restarted while the servers fail over must not fail for it.
            let last = retrying(|| async {
                match stream
                    .stream
                    .get_last_raw_message_by_subject(&subject)
                    .await
                {
                    Ok(message) => Ok(Some(message)),
                    Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
                    Err(e) => Err(ClusterError::Read {
                        stream: stream.name.clone(),
                        source: e.into(),
                    }),
                }
            })
            .await?;
            let Some(message) = last else {
                continue;
            };
            let Some(checkpoint) = message::checkpoint(Some(&message.headers)) else {
                continue;
            };
            let later = |c: &message::Checkpoint| (c.sequence, c.unit);
            if checkpoint.epoch == state.epoch
                && committed.is_none_or(|c| checkpoint.sequence > c)
                && newest
                    .as_ref()
                    .is_none_or(|n| later(&checkpoint) > later(n))
            {
                newest = Some(checkpoint);
            }
        }
        let mut positions = state.positions;
        let mut next = committed.map_or(0, |c| c + 1);
        if let Some(newest) = newest {
            tracing::info!(
                producer,
                batch = newest.sequence,
                "resuming after a batch stored but not committed"
            );
            positions.extend(newest.positions);
            next = next.max(newest.sequence + 1);
        }
        Ok((without_resets(positions), next))
    }

    /// A source connector's committed positions and the topics it published to.
    async fn source_state(&self, connector: &str) -> Result<SourceOffsets, ClusterError> {
        read_json(&self.offsets, &source_key(connector)).await
    }
}

/// The data plane over NATS (see the module doc).
#[async_trait::async_trait]
impl DataPlane for Cluster {
    async fn source_resume(
        &self,
        connector: &str,
        producer: &str,
    ) -> Result<(Positions, u64), PlaneError> {
        let run = format!(
            "{}.{:x}",
            key_part(&self.worker_id),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        );
        (self.runs.lock().unwrap_or_else(|e| e.into_inner())).insert(producer.to_string(), run);
        Ok(self.resume_after_checkpoints(connector, producer).await?)
    }

    async fn store_batch(&self, batch: StoreBatch) -> Result<Vec<Position>, PlaneError> {
        self.publish_batch(&batch).await
    }

    async fn sink_resume(&self, connector: &str) -> Result<SinkState, PlaneError> {
        let key = sink_key(connector);
        self.known_sinks.forget(&key);
        Ok(self.known_sinks.get(&self.offsets, &key).await?)
    }

    async fn topic_reader(
        &self,
        connector: &str,
        task: u32,
        topic: &str,
        next_offset: u64,
    ) -> Result<Box<dyn TopicRead>, PlaneError> {
        let stream = self.topic_stream(topic).await?;
        let digest =
            <sha2::Sha256 as sha2::Digest>::digest(format!("{connector}\0{task}\0{topic}"));
        // The consumer is created by the first read, which retries when it fails.
        let name = format!("wc-sink-{}", key_part(&digest[..12]));
        Ok(Box::new(TopicReader::new(stream, name, next_offset)))
    }

    async fn commit_sink(
        &self,
        connector: &str,
        offsets: Vec<(String, u64)>,
        positions: Vec<(String, String)>,
    ) -> Result<(), PlaneError> {
        let key = sink_key(connector);
        let known = &self.known_sinks;
        let committed = known.update(&self.offsets, &key, |state: &mut SinkState| {
            state.offsets.extend(offsets.iter().cloned());
            state.positions.extend(positions.iter().cloned());
        });
        committed.await?;
        Ok(())
    }

    async fn source_offsets(
        &self,
        connector: &str,
        _producers: &[String],
    ) -> Result<Positions, PlaneError> {
        let offsets = self.source_state(connector).await?;
        Ok(without_resets(offsets.positions))
    }

    async fn alter_source_offsets(
        &self,
        connector: &str,
        _producers: &[String],
        changes: &[(String, Option<String>)],
    ) -> Result<(), PlaneError> {
        let key = source_key(connector);
        self.known_sources.forget(&key);
        update_json(&self.offsets, &key, |offsets: &mut SourceOffsets| {
            offsets.epoch += 1;
            apply_changes(&mut offsets.positions, changes);
        })
        .await?;
        Ok(())
    }

    async fn alter_sink_offsets(
        &self,
        connector: &str,
        changes: &[(String, Option<u64>)],
    ) -> Result<(), PlaneError> {
        let key = sink_key(connector);
        self.known_sinks.forget(&key);
        update_json(&self.offsets, &key, |state: &mut SinkState| {
            apply_changes(&mut state.offsets, changes);
        })
        .await?;
        Ok(())
    }

    async fn source_topics(
        &self,
        connector: &str,
        _producers: &[String],
    ) -> Result<Vec<String>, PlaneError> {
        let offsets = self.source_state(connector).await?;
        Ok(offsets.topics.into_iter().collect())
    }
}

/// The `offsets` key of a source connector's [`SourceOffsets`].
fn source_key(connector: &str) -> String {
    format!("source.{}", key_part(connector))
}

/// The `offsets` key of a sink connector's [`SinkState`].
fn sink_key(connector: &str) -> String {
    format!("sink.{}", key_part(connector))
}

/// Sets (`Some`) or removes (`None`) entries of `map`.
fn apply_changes<V: Clone>(map: &mut BTreeMap<String, V>, changes: &[(String, Option<V>)]) {
    for (key, value) in changes {
        match value {
            Some(value) => map.insert(key.clone(), value.clone()),
            None => map.remove(key),
        };
    }
}

/// The JSON value under `key`, or the default when there is none.
async fn read_json<T: Default + DeserializeOwned>(
    store: &kv::Store,
    key: &str,
) -> Result<T, ClusterError> {
    retrying(|| async {
        match store.get(key).await.map_err(|e| ClusterError::kv(key, e))? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| ClusterError::json(key, e)),
            None => Ok(T::default()),
        }
    })
    .await
}

/// Changes the JSON value under `key` with compare-and-set, again when another writer got
/// there first (the tasks of one connector share its value); returns the value written and
/// its revision.
async fn update_json<T: Default + Serialize + DeserializeOwned>(
    store: &kv::Store,
    key: &str,
    change: impl Fn(&mut T),
) -> Result<(T, u64), ClusterError> {
    retrying(|| async {
        let entry = store
            .entry(key)
            .await
            .map_err(|e| ClusterError::kv(key, e))?;
        let (mut value, revision) = match entry {
            Some(entry) if entry.operation == kv::Operation::Put => (
                serde_json::from_slice(&entry.value).map_err(|e| ClusterError::json(key, e))?,
                Some(entry.revision),
            ),
            Some(entry) => (T::default(), Some(entry.revision)),
            None => (T::default(), None),
        };
        change(&mut value);
        let bytes = serde_json::to_vec(&value).map_err(|e| ClusterError::json(key, e))?;
        let revision = match revision {
            Some(revision) => (store.update(key, bytes.into(), revision).await)
                .map_err(|e| ClusterError::kv(key, e))?,
            None => {
                (store.create(key, bytes.into()).await).map_err(|e| ClusterError::kv(key, e))?
            }
        };
        Ok((value, revision))
    })
    .await
}

/// The offsets values this worker's tasks last wrote, with their revisions, by key: a task
/// changes its own value with one compare-and-set instead of a read and a write. Another
/// writer in between makes the compare-and-set fail, and the value is read afresh.
pub struct Known<T>(std::sync::Mutex<std::collections::HashMap<String, (T, u64)>>);

impl<T> Default for Known<T> {
    fn default() -> Self {
        Known(Default::default())
    }
}

impl<T: Clone + Default + Serialize + DeserializeOwned> Known<T> {
    /// The value under `key` as this worker knows it, read when it knows none.
    async fn get(&self, store: &kv::Store, key: &str) -> Result<T, ClusterError> {
        if let Some((value, _)) = self.lock().get(key) {
            return Ok(value.clone());
        }
        let entry =
            retrying(|| async { (store.entry(key).await).map_err(|e| ClusterError::kv(key, e)) })
                .await?;
        let Some(entry) = entry.filter(|entry| entry.operation == kv::Operation::Put) else {
            return Ok(T::default());
        };
        let value: T =
            serde_json::from_slice(&entry.value).map_err(|e| ClusterError::json(key, e))?;
        (self.lock()).insert(key.to_string(), (value.clone(), entry.revision));
        Ok(value)
    }

    /// Forgets the value under `key`: the next [`Known::get`] reads it.
    fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Changes the value under `key` (see [`update_json`]); returns it.
    async fn update(
        &self,
        store: &kv::Store,
        key: &str,
        change: impl Fn(&mut T),
    ) -> Result<T, ClusterError> {
        let known = self.lock().get(key).cloned();
        if let Some((mut value, revision)) = known {
            change(&mut value);
            let bytes = serde_json::to_vec(&value).map_err(|e| ClusterError::json(key, e))?;
            if let Ok(revision) = store.update(key, bytes.into(), revision).await {
                self.lock()
                    .insert(key.to_string(), (value.clone(), revision));
                return Ok(value);
            }
        }
        let (value, revision) = update_json(store, key, change).await?;
        self.lock()
            .insert(key.to_string(), (value.clone(), revision));
        Ok(value)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (T, u64)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs a request until it succeeds, for up to [`KV_RETRY_FOR`], and returns its last error
/// after that: requests fail for a few seconds while NATS fails over, and that must not fail
/// the task.
async fn retrying<T, Op>(mut op: impl FnMut() -> Op) -> Result<T, ClusterError>
where
    Op: std::future::Future<Output = Result<T, ClusterError>>,
{
    let started = std::time::Instant::now();
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(e) if started.elapsed() >= KV_RETRY_FOR => return Err(e),
            Err(_) => tokio::time::sleep(KV_RETRY_PAUSE).await,
        }
    }
}
