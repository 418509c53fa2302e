//! The data plane: the seam between the tasks and where topics and offsets live. The worker
//! and its tasks see only [`DataPlane`]; `storage::EmbeddedPlane` implements it over redb and
//! the topic logs (one worker), `cluster::Cluster` over NATS JetStream (many workers). Like
//! Kafka Connect's `Memory*`/`Kafka*` backing stores, the plane is chosen once at start.
//!
//! Between a source's `poll` and the store sit the task's transforms
//! (`super::transforms::Stages`, applied by the task), then the one routing step [`route`]
//! both planes store through: the batch check, the topic fallback and the timestamp of
//! records that carry none.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasm_connect_sdk::RecordRef;

use super::batch::BatchChecks;
use super::task::Positions;
use crate::sandbox::types::{Position, RecordBatch};
use crate::storage::{LogRead, SinkState, StateError, TopicError, TopicLog};

/// Why the data plane could not do what a task or the API asked.
#[derive(Debug, thiserror::Error)]
pub enum PlaneError {
    /// The batch broke a rule of the batch check; nothing of it was stored.
    #[error("{0}")]
    Rejected(String),
    #[error(transparent)]
    Topic(#[from] TopicError),
    #[error("cannot append to topic {topic}: {source}")]
    Append {
        topic: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read topic {topic}: {source}")]
    Read {
        topic: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("storage thread crashed: {0}")]
    Thread(#[from] tokio::task::JoinError),
    /// The cluster's servers did not answer or refused (a failover passes: try again).
    #[error("{0}")]
    Cluster(#[source] super::control::RemoteError),
}

impl PlaneError {
    /// Whether trying again later may succeed (the cluster failing over), rather than the
    /// task having to fail.
    pub fn is_transient(&self) -> bool {
        matches!(self, PlaneError::Cluster(_))
    }
}

/// A batch a source task polled, on its way to its topics.
pub struct StoreBatch {
    pub connector: String,
    /// The producer id of the task (`connector/task`).
    pub producer: String,
    /// This producer's batch number (the embedded logs deduplicate by it).
    pub sequence: u64,
    /// The topic of records that name none.
    pub default_topic: String,
    /// Whether the copy of the positions the APIs show must be durable now.
    pub durable: bool,
    pub checks: BatchChecks,
    pub batch: RecordBatch,
}

/// Where topics and committed offsets live (see the module doc).
#[async_trait::async_trait]
pub trait DataPlane: Send + Sync + 'static {
    /// A source task's committed positions (an empty position means none) and the next
    /// sequence number of its producer.
    async fn source_resume(
        &self,
        connector: &str,
        producer: &str,
    ) -> Result<(Positions, u64), PlaneError>;

    /// Routes a checked batch to its topics, stores it and commits the positions it
    /// completes; returns them once the records are durable.
    async fn store_batch(&self, batch: StoreBatch) -> Result<Vec<Position>, PlaneError>;

    /// A sink connector's next offsets and the positions of its last flush.
    async fn sink_resume(&self, connector: &str) -> Result<SinkState, PlaneError>;

    /// A reader of `topic` for one sink task, from `next_offset` on.
    async fn topic_reader(
        &self,
        connector: &str,
        task: u32,
        topic: &str,
        next_offset: u64,
    ) -> Result<Box<dyn TopicRead>, PlaneError>;

    /// Commits a sink's next offsets together with the positions its flush returned.
    async fn commit_sink(
        &self,
        connector: &str,
        offsets: Vec<(String, u64)>,
        positions: Vec<(String, String)>,
    ) -> Result<(), PlaneError>;

    /// A source connector's committed positions; `producers` are its tasks' producer ids.
    async fn source_offsets(
        &self,
        connector: &str,
        producers: &[String],
    ) -> Result<Positions, PlaneError>;

    /// Sets or (with `None`) resets source positions of a stopped connector.
    async fn alter_source_offsets(
        &self,
        connector: &str,
        producers: &[String],
        changes: &[(String, Option<String>)],
    ) -> Result<(), PlaneError>;

    /// Sets or (with `None`) resets a stopped sink connector's next offsets.
    async fn alter_sink_offsets(
        &self,
        connector: &str,
        changes: &[(String, Option<u64>)],
    ) -> Result<(), PlaneError>;

    /// The topics a source connector's tasks wrote to, sorted.
    async fn source_topics(
        &self,
        connector: &str,
        producers: &[String],
    ) -> Result<Vec<String>, PlaneError>;

    /// The topic logs this worker holds itself, for metrics and the dashboard (topic sizes,
    /// sink lag, the record inspector). A plane whose topics live elsewhere (NATS) holds none.
    fn local_topics(&self) -> Vec<(String, Arc<TopicLog>)> {
        Vec::new()
    }
}

/// One sink task's position in one topic.
#[async_trait::async_trait]
pub trait TopicRead: Send {
    /// The next records, up to the limits. `from` is the offset after the last record the
    /// task put: a log reader reads from there, a stream reader goes on where its consumer
    /// stands.
    async fn read(
        &mut self,
        from: u64,
        max_records: u32,
        max_bytes: usize,
    ) -> Result<LogRead, PlaneError>;

    /// Whether `read` (of up to `max_records`) returned everything there was.
    fn caught_up(&self, read: &LogRead, max_records: u32) -> bool;

    /// A signal that changes when records are appended, for a reader whose reads do not wait
    /// for records by themselves.
    fn appended(&self) -> Option<tokio::sync::watch::Receiver<u64>>;
}

/// The one routing step of both planes: checks `batch` ([`BatchChecks::check`]) and hands
/// each record to `emit` with its topic (`default_topic` when it names none) and its
/// timestamp (now when it carries none). Returns the last position of every partition the
/// batch names; nothing of the batch is accepted unless all of it passes.
pub fn route<'a>(
    batch: &'a RecordBatch,
    default_topic: &'a str,
    checks: &BatchChecks,
    mut emit: impl FnMut(&'a str, RecordRef<'a>, i64),
) -> Result<Vec<(String, String)>, PlaneError> {
    let now = now_millis();
    let positions = checks
        .check(batch, default_topic, |record, topic| {
            let timestamp = if record.timestamp == 0 {
                now
            } else {
                record.timestamp
            };
            emit(topic, record, timestamp);
            Ok(())
        })
        .map_err(PlaneError::Rejected)?;
    // Borrowed from the batch while checking; copied once here, not per record.
    Ok(positions
        .into_iter()
        .map(|(p, pos)| (p.to_string(), pos.to_string()))
        .collect())
}

/// Positions as the task's commit takes them.
pub fn to_positions(positions: Vec<(String, String)>) -> Vec<Position> {
    positions
        .into_iter()
        .map(|(partition, position)| Position {
            partition,
            position,
        })
        .collect()
}

/// `positions` without the empty ones an offset reset leaves.
pub fn without_resets(mut positions: BTreeMap<String, String>) -> BTreeMap<String, String> {
    positions.retain(|_, position| !position.is_empty());
    positions
}

/// Milliseconds since the Unix epoch: the timestamp of records that carry none.
fn now_millis() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}
