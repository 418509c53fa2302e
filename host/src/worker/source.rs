//! The source task actor: poll → durable append to the topic logs → commit positions.
//!
//! Positions travel inside the log batch that holds their records, so they are durable
//! exactly when the records are. The redb copy written right after is what the APIs show;
//! it is committed without its own fsync (durably at most every [`DURABLE_POSITIONS_EVERY`])
//! and overridden on start by the newer positions found in the logs.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasm_connect_sdk::{BatchWriter, RecordRef};

use super::batch::{BatchChecks, Partitions, TopicPolicy};
use super::keys;
use super::task::{CallResult, Positions, TaskContext, TaskStatus};
use crate::sandbox::types::{Position, RecordBatch, TaskError};
use crate::sandbox::{ConnectorComponent, GuestFailure, SourceInstance};
use crate::storage::{Producer, Storage};

/// Longest pause between polls of a source that has nothing new.
const MAX_IDLE_PAUSE: Duration = Duration::from_millis(100);
/// How often the redb copy of the positions is made durable (the logs always are).
const DURABLE_POSITIONS_EVERY: Duration = Duration::from_secs(1);
/// Pause after a retriable error.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Runs one source task until it is stopped or fails.
pub async fn run(ctx: &mut TaskContext) {
    let ConnectorComponent::Source(pre) = ctx.plugin.component.clone() else {
        return ctx.set(TaskStatus::Failed(
            "plugin is not a source connector".into(),
        ));
    };
    let (committed, sequence) = match resume_point(ctx).await {
        Ok(resume) => resume,
        Err(reason) => return ctx.set(TaskStatus::Failed(reason)),
    };
    let sandbox = ctx.sandbox.clone();
    let partitions = Partitions::new(committed.keys().cloned());
    let started = ctx
        .start_guest(committed, async |setup| {
            SourceInstance::start(&sandbox, &pre, setup).await
        })
        .await;
    if let Some(instance) = started {
        drive(ctx, instance, sequence, partitions).await;
    }
}

/// The source loop over a started task: poll, store, commit, until stopped or failed.
/// `sequence` numbers this producer's batches (from [`resume_point`]); `partitions` are
/// those its committed positions name.
///
/// While one batch is being stored (append + fdatasync on a blocking thread) the next one
/// is polled, so guest work overlaps disk work; batches are still stored and committed in
/// order, and a batch's positions reach the guest only once it is durable.
pub async fn drive(
    ctx: &mut TaskContext,
    mut task: impl SourceCalls,
    mut sequence: u64,
    partitions: Partitions,
) {
    let topics = match TopicPolicy::from_config(&ctx.config) {
        Ok(topics) => Arc::new(topics),
        Err(reason) => return ctx.set(TaskStatus::Failed(reason)),
    };
    ctx.set(TaskStatus::Running);
    let producer = ctx.identity.to_string();
    let default_topic = ctx
        .config
        .get(keys::SOURCE_TOPIC)
        .cloned()
        .unwrap_or_default();
    let limits = ctx.limits.clone();
    let partitions = Arc::new(Mutex::new(partitions));
    let mut idle = Duration::from_millis(1);
    let mut storing: Option<Storing> = None;
    let mut last_durable = Instant::now();
    let mut pacer = Pacer::new(limits.records_per_second);
    let poll_records = pacer.batch_records(limits.batch_records);
    let outcome: Result<(), String> = loop {
        if ctx.stopping() {
            break finish(&mut task, storing.take()).await;
        }
        if ctx.paused() {
            if let Err(reason) = finish(&mut task, storing.take()).await {
                break Err(reason);
            }
            ctx.wait_while_paused().await;
            continue;
        }
        let batch = match task.poll(poll_records, limits.batch_bytes).await {
            Ok(Ok(batch)) => batch,
            Ok(Err(TaskError::Retriable(reason))) => {
                tracing::debug!(task = %ctx.identity, "poll: {}", ctx.redact(&reason));
                if let Err(reason) = finish(&mut task, storing.take()).await {
                    break Err(reason);
                }
                ctx.pause(RETRY_PAUSE).await;
                continue;
            }
            Ok(Err(TaskError::Fatal(reason))) => break Err(format!("poll failed: {reason}")),
            Err(e) => break Err(e.to_string()),
        };
        if let Err(reason) = finish(&mut task, storing.take()).await {
            break Err(reason);
        }
        // A count of 0 with bytes is checked (and refused) like any other batch.
        if batch.count == 0 && batch.frames.is_empty() {
            ctx.pause(idle).await;
            idle = (idle * 2).min(MAX_IDLE_PAUSE);
            continue;
        }
        idle = Duration::from_millis(1);
        let durable = last_durable.elapsed() >= DURABLE_POSITIONS_EVERY;
        if durable {
            last_durable = Instant::now();
        }
        let target = Target {
            producer: &producer,
            sequence,
            default_topic: &default_topic,
            durable,
        };
        let checks = BatchChecks {
            max_records: poll_records,
            limits: limits.clone(),
            topics: topics.clone(),
            partitions: partitions.clone(),
        };
        let count = batch.count;
        storing = Some(spawn_store(ctx, target, batch, checks));
        sequence += 1;
        if let Some(wait) = pacer.after(count) {
            ctx.pause(wait).await;
        }
    };
    if let Err(reason) = outcome {
        // A batch still being stored completes first, so a restart resumes after it.
        if let Some(storing) = storing.take() {
            let _ = storing.await;
        }
        return ctx.fail(reason);
    }
    if let Err(e) = task.stop().await {
        tracing::warn!(task = %ctx.identity, "stop: {}", ctx.redact(&e.to_string()));
    }
    ctx.set(TaskStatus::Stopped);
}

/// Where a batch goes: who writes it, its sequence number, the topic of records that name
/// none, and whether the redb position commit must be durable.
struct Target<'a> {
    producer: &'a str,
    sequence: u64,
    default_topic: &'a str,
    durable: bool,
}

/// Keeps a source at or under `limits.records.per.second`.
struct Pacer {
    rate: u32,
    started: Instant,
    produced: u64,
}

impl Pacer {
    fn new(rate: u32) -> Self {
        Pacer {
            rate,
            started: Instant::now(),
            produced: 0,
        }
    }

    /// Records to ask for per poll: at most one second's worth.
    fn batch_records(&self, max: u32) -> u32 {
        if self.rate == 0 {
            max
        } else {
            max.min(self.rate)
        }
    }

    /// After `records` more: how long to wait before the next poll, if at all.
    fn after(&mut self, records: u32) -> Option<Duration> {
        if self.rate == 0 {
            return None;
        }
        self.produced += u64::from(records);
        let due =
            self.started + Duration::from_secs_f64(self.produced as f64 / f64::from(self.rate));
        due.checked_duration_since(Instant::now())
    }
}

/// A batch on its way to disk; yields the positions it completes.
type Storing = tokio::task::JoinHandle<Result<Vec<Position>, String>>;

/// Waits for the batch being stored, if any, and tells the task its positions are durable.
async fn finish(task: &mut impl SourceCalls, storing: Option<Storing>) -> Result<(), String> {
    let Some(storing) = storing else {
        return Ok(());
    };
    let positions = storing
        .await
        .map_err(|e| format!("storage thread crashed: {e}"))??;
    task.commit(&positions).await.map_err(|e| e.to_string())
}

/// The calls the source loop makes on a started task. The wasm instance implements it; a
/// benchmark implements it with the same connector compiled natively.
pub trait SourceCalls: Send {
    fn poll(
        &mut self,
        max_records: u32,
        max_bytes: u32,
    ) -> impl Future<Output = CallResult<RecordBatch>> + Send;
    fn commit(
        &mut self,
        positions: &[Position],
    ) -> impl Future<Output = Result<(), GuestFailure>> + Send;
    fn stop(self) -> impl Future<Output = Result<(), GuestFailure>> + Send;
}

impl SourceCalls for SourceInstance {
    fn poll(
        &mut self,
        max_records: u32,
        max_bytes: u32,
    ) -> impl Future<Output = CallResult<RecordBatch>> + Send {
        SourceInstance::poll(self, max_records, max_bytes)
    }

    fn commit(
        &mut self,
        positions: &[Position],
    ) -> impl Future<Output = Result<(), GuestFailure>> + Send {
        SourceInstance::commit(self, positions)
    }

    fn stop(self) -> impl Future<Output = Result<(), GuestFailure>> + Send {
        SourceInstance::stop(self)
    }
}

/// Committed positions (redb, overridden by the newer positions the topic logs hold for
/// this task) and the next producer sequence number. In cluster mode: the positions in the
/// cluster (records carry their own ids there, so the sequence is unused).
pub async fn resume_point(ctx: &TaskContext) -> Result<(Positions, u64), String> {
    if let Some(cluster) = &ctx.cluster {
        let mut offsets = cluster.source_offsets(&ctx.identity.connector).await?;
        offsets.positions.retain(|_, position| !position.is_empty());
        return Ok((offsets.positions, 0));
    }
    let producer = ctx.identity.to_string();
    let positions = committed_positions(
        &ctx.storage,
        &ctx.identity.connector,
        std::slice::from_ref(&producer),
    )?;
    let next_sequence = ctx
        .storage
        .topics
        .all()
        .into_iter()
        .filter_map(|(_, log)| log.checkpoint(&producer))
        .map(|checkpoint| checkpoint.sequence + 1)
        .max()
        .unwrap_or(0);
    Ok((positions, next_sequence))
}

/// A source connector's positions: the state store's, overridden by the newest ones the
/// topic logs hold for `producers`. An empty position (left by an offset reset) means none.
pub fn committed_positions(
    storage: &Storage,
    connector: &str,
    producers: &[String],
) -> Result<Positions, String> {
    let mut newest: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for (_, log) in storage.topics.all() {
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
    let mut positions = storage
        .state
        .source_positions(connector)
        .map_err(|e| e.to_string())?;
    positions.extend(
        newest
            .into_iter()
            .map(|(partition, (_, position))| (partition, position)),
    );
    positions.retain(|_, position| !position.is_empty());
    Ok(positions)
}

/// Checks a polled batch, appends it to its topics and commits its positions, on a
/// blocking thread; in cluster mode publishes it to the topic streams instead.
fn spawn_store(
    ctx: &TaskContext,
    target: Target<'_>,
    batch: RecordBatch,
    checks: BatchChecks,
) -> Storing {
    let storage = ctx.storage.clone();
    let connector = ctx.identity.connector.clone();
    let (producer, default_topic) = (
        target.producer.to_string(),
        target.default_topic.to_string(),
    );
    if let Some(cluster) = ctx.cluster.clone() {
        return tokio::spawn(async move {
            cluster
                .publish_batch(&connector, &batch, &default_topic, &checks)
                .await
        });
    }
    let (sequence, durable) = (target.sequence, target.durable);
    tokio::task::spawn_blocking(move || {
        let (groups, positions) = route(&batch, &default_topic, &checks)?;
        // Every topic first: a topic over the worker's cap fails the batch before any of it
        // is appended.
        let logs = groups
            .iter()
            .map(|(topic, _)| storage.topics.get(topic).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, String>>()?;
        let last = groups.len().saturating_sub(1);
        for (i, ((topic, records), log)) in groups.iter().zip(&logs).enumerate() {
            // Positions ride with the last append only: a crash before it loses no record.
            let checkpoint: &[(String, String)] = if i == last { &positions } else { &[] };
            let producer = Producer {
                id: &producer,
                sequence,
                positions: checkpoint,
            };
            log.append(records.count(), records.frames(), &producer)
                .map_err(|e| format!("cannot append to topic {topic}: {e}"))?;
        }
        storage
            .state
            .commit_source_positions(&connector, &positions, durable)
            .map_err(|e| e.to_string())?;
        Ok(positions
            .into_iter()
            .map(|(partition, position)| Position {
                partition,
                position,
            })
            .collect())
    })
}

/// Splits a batch by topic (records keep their order within a topic) and finds the last
/// position of each partition.
type Routed = (Vec<(String, BatchWriter)>, Vec<(String, String)>);

fn route(batch: &RecordBatch, default_topic: &str, checks: &BatchChecks) -> Result<Routed, String> {
    let mut groups: Vec<(String, BatchWriter)> = Vec::new();
    let now = now_millis();
    let positions = checks.check(batch, default_topic, |record, topic| {
        let group = match groups.iter().position(|(t, _)| t == topic) {
            Some(i) => i,
            None => {
                groups.push((
                    topic.to_string(),
                    BatchWriter::with_capacity(batch.frames.len()),
                ));
                groups.len() - 1
            }
        };
        groups[group]
            .1
            .push_content(record.content, record_timestamp(&record, now));
        Ok(())
    })?;
    // Borrowed from the batch while checking; copied once here, not per record.
    let positions = positions
        .into_iter()
        .map(|(p, pos)| (p.to_string(), pos.to_string()))
        .collect();
    Ok((groups, positions))
}

/// A record's timestamp, `now` when it carries none.
pub(crate) fn record_timestamp(record: &RecordRef<'_>, now: i64) -> i64 {
    if record.timestamp == 0 {
        now
    } else {
        record.timestamp
    }
}

/// Milliseconds since the Unix epoch: the timestamp of records that carry none.
pub(crate) fn now_millis() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}
