//! The source task actor: poll → transforms → durable store through the data plane → commit
//! positions. The copy of the positions the APIs show is made durable at most every
//! [`DURABLE_POSITIONS_EVERY`] (the records and their positions always are).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::batch::{BatchChecks, Partitions, TopicPolicy};
use super::errors::ErrorPolicy;
use super::idle::Idle;
use super::keys;
use super::plane::{PlaneError, StoreBatch};
use super::task::{CallResult, Positions, TaskContext, TaskStatus};
use super::transforms::{through_stages, Stages};
use crate::metrics::{Op, Stage, TaskMeter};
use crate::sandbox::types::{Position, RecordBatch, TaskError};
use crate::sandbox::{
    ConnectorComponent, DirChanges, GuestFailure, NetworkCounters, SourceInstance,
};
use wasm_connect_sdk::{BatchReader, BatchWriter};

/// How often the copy of the positions the APIs show is made durable (the records always are).
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
    if let Err(reason) = Stages::start(ctx).await {
        Stages::stop(ctx).await;
        return ctx.set(TaskStatus::Failed(reason));
    }
    let started = ctx
        .start_guest(committed, async |setup| {
            SourceInstance::start(&sandbox, &pre, setup).await
        })
        .await;
    if let Some(instance) = started {
        drive(ctx, instance, sequence, partitions).await;
    }
    Stages::stop(ctx).await;
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
    let policy = match ErrorPolicy::from_config(&ctx.config, ctx.errors.clone()) {
        Ok(policy) => policy,
        Err(e) => return ctx.set(TaskStatus::Failed(e.to_string())),
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
    let mut idle = Idle::default();
    let mut storing: Option<Storing> = None;
    let mut last_durable = Instant::now();
    let mut pacer = Pacer::new(limits.records_per_second);
    let poll_records = pacer.batch_records(limits.batch_records);
    let outcome: Result<(), String> = loop {
        if ctx.stopping() {
            break finish(&ctx.meter, &mut task, storing.take()).await;
        }
        if ctx.paused() {
            if let Err(reason) = finish(&ctx.meter, &mut task, storing.take()).await {
                break Err(reason);
            }
            ctx.wait_while_paused().await;
            continue;
        }
        let polling = Instant::now();
        let polled = task.poll(poll_records, limits.batch_bytes).await;
        ctx.meter.call(Op::Poll, polling.elapsed());
        ctx.meter.memory(task.memory_used());
        ctx.meter.network(task.network_counters());
        let batch = match polled {
            Ok(Ok(batch)) => batch,
            Ok(Err(TaskError::Retriable(reason))) => {
                tracing::debug!(task = %ctx.identity, "poll: {}", ctx.redact(&reason));
                if let Err(reason) = finish(&ctx.meter, &mut task, storing.take()).await {
                    break Err(reason);
                }
                ctx.pause(RETRY_PAUSE).await;
                continue;
            }
            Ok(Err(TaskError::Fatal(reason))) => {
                ctx.meter.failed(Stage::Poll, 0);
                break Err(format!("poll failed: {reason}"));
            }
            Err(e) => {
                ctx.meter.guest_failed(&e);
                ctx.meter.failed(Stage::Poll, 0);
                break Err(e.to_string());
            }
        };
        if let Err(reason) = finish(&ctx.meter, &mut task, storing.take()).await {
            break Err(reason);
        }
        ctx.meter.received(batch.count, batch.frames.len());
        // A count of 0 with bytes is checked (and refused) like any other batch.
        if batch.count == 0 && batch.frames.is_empty() {
            idle.pause(ctx, task.changes()).await;
            continue;
        }
        idle.reset();
        let batch = match transform(ctx, &policy, batch, &default_topic).await {
            // Every record dropped by a transform (a count of 0 with bytes goes on to the
            // batch checks, which refuse it).
            Ok(batch) if batch.count == 0 && batch.frames.is_empty() => continue,
            Ok(batch) => batch,
            Err(reason) => break Err(reason),
        };
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

/// A batch on its way to disk; yields the positions it completes. Dropping it (the task's
/// run was cancelled: in a cluster, when its lease is lost) aborts the store, so no store
/// outlives the run that polled it and races the next run, which resumes from what the
/// store holds.
struct Storing(tokio::task::JoinHandle<Result<Vec<Position>, PlaneError>>);

impl Drop for Storing {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Future for Storing {
    type Output = Result<Result<Vec<Position>, PlaneError>, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

/// Waits for the batch being stored, if any, and tells the task its positions are durable.
async fn finish(
    meter: &TaskMeter,
    task: &mut impl SourceCalls,
    storing: Option<Storing>,
) -> Result<(), String> {
    let Some(storing) = storing else {
        return Ok(());
    };
    let positions = storing
        .await
        .map_err(|e| format!("storage thread crashed: {e}"))?
        .map_err(|e| e.to_string())?;
    let committing = Instant::now();
    let committed = task.commit(&positions).await;
    meter.call(Op::Commit, committing.elapsed());
    meter.network(task.network_counters());
    committed.map_err(|e| {
        meter.guest_failed(&e);
        meter.failed(Stage::Commit, 0);
        e.to_string()
    })
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
    /// The task's linear memory now (0 when it has none to report).
    fn memory_used(&self) -> usize {
        0
    }

    /// The bytes the task's instance sent and received over the network (`None` when it
    /// has no counters).
    fn network_counters(&self) -> Option<&Arc<NetworkCounters>> {
        None
    }

    /// The changes in the task's granted directories, when they are watched.
    fn changes(&mut self) -> Option<&mut DirChanges> {
        None
    }
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

    fn memory_used(&self) -> usize {
        SourceInstance::memory_used(self)
    }

    fn network_counters(&self) -> Option<&Arc<NetworkCounters>> {
        Some(SourceInstance::network_counters(self))
    }

    fn changes(&mut self) -> Option<&mut DirChanges> {
        SourceInstance::changes(self)
    }
}

/// The task's committed positions and the next sequence number of its producer.
pub async fn resume_point(ctx: &TaskContext) -> Result<(Positions, u64), String> {
    let producer = ctx.identity.to_string();
    ctx.data
        .source_resume(&ctx.identity.connector, &producer)
        .await
        .map_err(|e| e.to_string())
}

/// Stores a polled (and transformed) batch on its own task (the data plane routes, stores
/// and commits it).
fn spawn_store(
    ctx: &TaskContext,
    target: Target<'_>,
    batch: RecordBatch,
    checks: BatchChecks,
) -> Storing {
    let data = ctx.data.clone();
    let store = StoreBatch {
        connector: ctx.identity.connector.clone(),
        producer: target.producer.to_string(),
        sequence: target.sequence,
        default_topic: target.default_topic.to_string(),
        durable: target.durable,
        checks,
        batch,
    };
    let meter = ctx.meter.clone();
    Storing(tokio::spawn(async move {
        let (records, bytes) = (store.batch.count, store.batch.frames.len());
        (data.store_batch(store).await)
            .inspect(|_| meter.delivered(records, bytes))
            .inspect_err(|_| meter.failed(Stage::Store, records))
    }))
}

/// `batch` through the task's transforms (see [`through_stages`]); first, records that name
/// no topic get `default_topic`, so a transform sees every record's topic.
async fn transform(
    ctx: &mut TaskContext,
    policy: &ErrorPolicy,
    batch: RecordBatch,
    default_topic: &str,
) -> Result<RecordBatch, String> {
    if ctx.stages.is_empty() {
        return Ok(batch);
    }
    let mut named = BatchWriter::reusing(ctx.stages.input_buffer());
    for record in BatchReader::new(&batch.frames) {
        let record = record.map_err(|e| format!("poll returned a malformed batch: {e}"))?;
        if !record.topic.is_empty() {
            named.push_frame(record.frame);
            continue;
        }
        named
            .push_routed(&record, default_topic)
            .map_err(|e| e.to_string())?;
    }
    let (count, frames) = named.into_parts();
    through_stages(ctx, policy, RecordBatch { count, frames }, default_topic)
        .await
        .inspect_err(|_| ctx.meter.failed(Stage::Transform, count))
}
