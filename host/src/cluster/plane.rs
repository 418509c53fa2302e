//! The data plane in cluster mode: topics are JetStream streams, and the offsets of sources
//! and sinks live in the `offsets` bucket, so a task resumes where it stopped on whichever
//! worker runs it next.
//!
//! - Topic `t` is the stream `wc-<cluster>-t` (`.` written as `~`) with the one subject
//!   `wc.<cluster>.topic.t`; a record's offset is its stream sequence minus one, as in the
//!   embedded topic logs. Each message is one record in its framed form (timestamp first).
//! - A source publishes every record with the message id
//!   `<connector>/<epoch>/<partition>/<position>/<crc32 of the record>` when it has a
//!   position: a batch published again after a crash (from the last committed positions) is
//!   dropped by the stream's duplicate window instead of stored twice. The epoch changes
//!   when offsets are altered.
//! - A sink reads through a durable pull consumer in bounded `fetch` loops (a long-lived
//!   message stream can hang silently after a server failover) and commits the next offset
//!   with the positions of its flush in one KV value.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv};
use async_nats::Subject;
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::NatsError;
use super::{key_part, Cluster, ClusterError};
use crate::sandbox::types::Position;
use crate::storage::{LogRead, SinkState};
use crate::worker::plane::{
    route, to_positions, without_resets, DataPlane, PlaneError, StoreBatch, TopicRead,
};
use crate::worker::Positions;

/// How long a stream remembers message ids: longer than any retry of a failed publish.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How long the records whose ack failed are published again before the batch fails (a
/// JetStream leader election takes 2–4 s), and the pause between rounds.
const PUBLISH_RETRY_FOR: Duration = Duration::from_secs(30);
const PUBLISH_RETRY_PAUSE: Duration = Duration::from_millis(250);
/// Publish acks awaited at once by one task.
const PUBLISH_WINDOW: usize = 4096;
/// Longest wait of one sink fetch for records.
const FETCH_WAIT: Duration = Duration::from_millis(200);
/// A sink consumer nobody fetched from for this long is removed by the server.
const CONSUMER_IDLE: Duration = Duration::from_secs(3600);
/// How long a KV read or compare-and-set of an offsets value is tried again, and the pause
/// between tries.
const KV_RETRY_FOR: Duration = Duration::from_secs(30);
const KV_RETRY_PAUSE: Duration = Duration::from_millis(250);

/// What the `offsets` bucket holds for a source connector.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SourceOffsets {
    /// Partition → last committed position.
    pub positions: BTreeMap<String, String>,
    /// Topics its tasks published to.
    pub topics: BTreeSet<String>,
    /// Bumped by every offset change, and part of every message id: records read again
    /// after a rewind are new records, not duplicates of the first reading.
    #[serde(default)]
    pub epoch: u64,
}

impl Cluster {
    /// The stream of `topic`, created on first use.
    async fn topic_stream(&self, topic: &str) -> Result<jetstream::stream::Stream, ClusterError> {
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
        let config = jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![self.topic_subject(topic)],
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
        self.streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(topic.to_string(), stream.clone());
        Ok(stream)
    }

    fn topic_subject(&self, topic: &str) -> String {
        format!(
            "wc.{}.topic.{}",
            self.options.cluster_id,
            topic.replace('.', "~")
        )
    }

    /// Routes a polled batch ([`route`], as the embedded path does), publishes each record to
    /// its topic, waits until every record is stored, and commits the positions the batch
    /// completes. Returns them.
    async fn publish_batch(&self, batch: &StoreBatch) -> Result<Vec<Position>, PlaneError> {
        let connector = &batch.connector;
        let epoch = self.source_state(connector).await?.epoch;
        let mut messages = Vec::with_capacity(batch.batch.count as usize);
        // A `Subject` clones without copying: one per record is only a reference count.
        let mut topics: BTreeMap<&str, Subject> = BTreeMap::new();
        let routed = route(
            &batch.batch,
            &batch.default_topic,
            &batch.checks,
            |topic, record, timestamp| {
                let mut payload = Vec::with_capacity(record.content.len());
                payload.extend_from_slice(&timestamp.to_le_bytes());
                payload.extend_from_slice(record.content.get(8..).unwrap_or_default());
                let mut message =
                    jetstream::message::PublishMessage::build().payload(payload.into());
                if !record.partition.is_empty() {
                    // The checksum tells apart records that reuse a position (a truncated and
                    // rewritten file) from a record published again.
                    let checksum = crc32fast::hash(record.content.get(8..).unwrap_or_default());
                    let id = format!(
                        "{connector}/{epoch}/{}/{}/{checksum:08x}",
                        record.partition, record.position
                    );
                    message = message.message_id(id);
                }
                let subject = topics
                    .entry(topic)
                    .or_insert_with(|| Subject::from(self.topic_subject(topic)));
                messages.push((subject.clone(), message));
            },
        );
        let positions = routed?;
        for topic in topics.keys() {
            self.topic_stream(topic).await?;
        }
        self.publish_all(&messages).await?;
        let key = source_key(connector);
        update_json(&self.offsets, &key, |offsets: &mut SourceOffsets| {
            offsets.positions.extend(positions.iter().cloned());
            offsets.topics.extend(topics.keys().map(|t| t.to_string()));
        })
        .await?;
        Ok(to_positions(positions))
    }

    /// Publishes every message and waits for its ack; the ones whose ack failed (a server
    /// failover) are published again, in their order, with the same id, which the stream
    /// deduplicates. The first message goes alone, so a stream not yet ready (just created,
    /// or electing a leader) fails one message rather than thousands, whose retries would
    /// land after the rest of the batch.
    async fn publish_all(
        &self,
        messages: &[(Subject, jetstream::message::PublishMessage)],
    ) -> Result<(), ClusterError> {
        let mut todo: Vec<usize> = (0..messages.len()).collect();
        let started = std::time::Instant::now();
        loop {
            let (failed, error) = self.publish_round(messages, &todo).await;
            let Some(error) = error else {
                return Ok(());
            };
            if started.elapsed() >= PUBLISH_RETRY_FOR {
                return Err(ClusterError::Publish {
                    failed: failed.len(),
                    seconds: PUBLISH_RETRY_FOR.as_secs(),
                    source: error,
                });
            }
            tracing::warn!(
                "{} records not stored yet ({error}); publishing them again",
                failed.len()
            );
            todo = failed;
            tokio::time::sleep(PUBLISH_RETRY_PAUSE).await;
        }
    }

    /// One round of [`Cluster::publish_all`] over the messages numbered `todo` (ascending);
    /// returns the ones to publish again, in order, and the last error (None when every
    /// message was stored).
    async fn publish_round(
        &self,
        messages: &[(Subject, jetstream::message::PublishMessage)],
        todo: &[usize],
    ) -> (Vec<usize>, Option<NatsError>) {
        let mut failed = Vec::new();
        let mut last_error = None;
        let mut pending = FuturesUnordered::new();
        for (n, &i) in todo.iter().enumerate() {
            let window = if n == 1 { 1 } else { PUBLISH_WINDOW };
            while pending.len() >= window {
                if let Some((i, Err(e))) = pending.next().await {
                    failed.push(i);
                    last_error = Some(e);
                }
            }
            if n == 1 && !failed.is_empty() {
                // The first one failed: send none of the rest this round.
                failed.extend_from_slice(&todo[1..]);
                return (failed, last_error);
            }
            let (subject, message) = &messages[i];
            match self.js.send_publish(subject.clone(), message.clone()).await {
                Ok(ack) => pending.push(async move {
                    let acked = ack.await.map(|_| ()).map_err(NatsError::from);
                    (i, acked)
                }),
                Err(e) => {
                    failed.push(i);
                    last_error = Some(e.into());
                }
            }
        }
        while let Some((i, result)) = pending.next().await {
            if let Err(e) = result {
                failed.push(i);
                last_error = Some(e);
            }
        }
        failed.sort_unstable();
        (failed, last_error)
    }

    /// A source connector's committed positions and the topics it published to.
    async fn source_state(&self, connector: &str) -> Result<SourceOffsets, ClusterError> {
        read_json(&self.offsets, &source_key(connector)).await
    }
}

/// One sink task's position in one topic stream, through its durable pull consumer.
struct TopicReader {
    stream: jetstream::stream::Stream,
    name: String,
    /// None after an error: the next read recreates it at `next_offset`.
    consumer: Option<consumer::PullConsumer>,
    next_offset: u64,
}

impl TopicReader {
    /// (Re)creates the consumer so it delivers from `next_offset`: records delivered but
    /// never received (a fetch lost in a failover) are delivered again.
    async fn reset(&mut self) -> Result<consumer::PullConsumer, ClusterError> {
        let _ = self.stream.delete_consumer(&self.name).await;
        let deliver_policy = match self.next_offset {
            0 => consumer::DeliverPolicy::All,
            offset => consumer::DeliverPolicy::ByStartSequence {
                start_sequence: offset + 1,
            },
        };
        let config = consumer::pull::Config {
            durable_name: Some(self.name.clone()),
            deliver_policy,
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: CONSUMER_IDLE,
            ..Default::default()
        };
        let consumer = self.stream.create_consumer(config).await;
        consumer.map_err(|e| ClusterError::Consumer {
            name: self.name.clone(),
            source: e.into(),
        })
    }

    /// The next records, up to the limits, waiting up to [`FETCH_WAIT`] for the first one.
    /// An error leaves the reader to be reset at the next read.
    async fn read(&mut self, max_records: u32, max_bytes: usize) -> Result<LogRead, ClusterError> {
        let consumer = match self.consumer.take() {
            Some(consumer) => consumer,
            None => self.reset().await?,
        };
        let result = match self.fetch(&consumer, max_records, Some(max_bytes)).await {
            // Refused before any record: the next record alone may be larger than the byte
            // budget, so it goes alone (any other cause fails this fetch too).
            Err(ClusterError::FetchRefused { .. }) => self.fetch(&consumer, 1, None).await,
            other => other,
        };
        if let Ok(read) = &result {
            self.next_offset = read.first_offset + u64::from(read.count);
            self.consumer = Some(consumer);
        }
        result
    }

    /// One pull request for up to `max_records` records and (when set) `max_bytes` bytes.
    async fn fetch(
        &self,
        consumer: &consumer::PullConsumer,
        max_records: u32,
        max_bytes: Option<usize>,
    ) -> Result<LogRead, ClusterError> {
        let mut request = consumer
            .batch()
            .max_messages(max_records.max(1) as usize)
            .expires(FETCH_WAIT);
        if let Some(max_bytes) = max_bytes {
            request = request.max_bytes(max_bytes.max(1));
        }
        let mut messages = request
            .messages()
            .await
            .map_err(|e| ClusterError::Fetch { source: e.into() })?;
        let mut frames = wasm_connect_sdk::BatchWriter::new();
        let mut expected = self.next_offset + 1;
        while let Some(message) = messages.next().await {
            let message = match message {
                Ok(message) => message,
                // The server ends a request at its byte budget with an error status (409);
                // any error after some records still leaves those records whole and in order.
                Err(_) if !frames.is_empty() => break,
                Err(source) => return Err(ClusterError::FetchRefused { source }),
            };
            let sequence = message
                .info()
                .map_err(|source| ClusterError::Fetch { source })?
                .stream_sequence;
            if sequence != expected {
                return Err(ClusterError::Skipped {
                    from: expected - 1,
                    to: sequence.saturating_sub(1),
                });
            }
            expected += 1;
            let payload = &message.payload;
            let timestamp = payload
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map_or(0, i64::from_le_bytes);
            frames.push_content(payload, timestamp);
        }
        let (count, frames) = frames.into_parts();
        Ok(LogRead {
            first_offset: self.next_offset,
            count,
            frames,
        })
    }
}

#[async_trait::async_trait]
impl TopicRead for TopicReader {
    async fn read(
        &mut self,
        _from: u64,
        max_records: u32,
        max_bytes: usize,
    ) -> Result<LogRead, PlaneError> {
        // The consumer knows where it stands.
        Ok(TopicReader::read(self, max_records, max_bytes).await?)
    }

    /// A full read may have left records behind; a short one did not.
    fn caught_up(&self, read: &LogRead, max_records: u32) -> bool {
        read.count < max_records
    }

    /// A fetch waits for records by itself.
    fn appended(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

/// The data plane over NATS (see the module doc). Records carry their own ids here, so a
/// producer's sequence number is unused (always 0).
#[async_trait::async_trait]
impl DataPlane for Cluster {
    async fn source_resume(
        &self,
        connector: &str,
        _producer: &str,
    ) -> Result<(Positions, u64), PlaneError> {
        Ok((DataPlane::source_offsets(self, connector, &[]).await?, 0))
    }

    async fn store_batch(&self, batch: StoreBatch) -> Result<Vec<Position>, PlaneError> {
        self.publish_batch(&batch).await
    }

    async fn sink_resume(&self, connector: &str) -> Result<SinkState, PlaneError> {
        Ok(read_json(&self.offsets, &sink_key(connector)).await?)
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
        Ok(Box::new(TopicReader {
            stream,
            name: format!("wc-sink-{}", key_part(&digest[..12])),
            consumer: None,
            next_offset,
        }))
    }

    async fn commit_sink(
        &self,
        connector: &str,
        offsets: Vec<(String, u64)>,
        positions: Vec<(String, String)>,
    ) -> Result<(), PlaneError> {
        let key = sink_key(connector);
        let committed = update_json(&self.offsets, &key, |state: &mut SinkState| {
            state.offsets.extend(offsets.iter().cloned());
            state.positions.extend(positions.iter().cloned());
        });
        Ok(committed.await?)
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
        let changed = update_json(&self.offsets, &key, |offsets: &mut SourceOffsets| {
            offsets.epoch += 1;
            apply_changes(&mut offsets.positions, changes);
        });
        Ok(changed.await?)
    }

    async fn alter_sink_offsets(
        &self,
        connector: &str,
        changes: &[(String, Option<u64>)],
    ) -> Result<(), PlaneError> {
        let key = sink_key(connector);
        let changed = update_json(&self.offsets, &key, |state: &mut SinkState| {
            apply_changes(&mut state.offsets, changes);
        });
        Ok(changed.await?)
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
/// there first (the tasks of one connector share its value).
async fn update_json<T: Default + Serialize + DeserializeOwned>(
    store: &kv::Store,
    key: &str,
    change: impl Fn(&mut T),
) -> Result<(), ClusterError> {
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
        let written = match revision {
            Some(revision) => store
                .update(key, bytes.into(), revision)
                .await
                .map_err(|e| ClusterError::kv(key, e)),
            None => store
                .create(key, bytes.into())
                .await
                .map_err(|e| ClusterError::kv(key, e)),
        };
        written.map(|_| ())
    })
    .await
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
