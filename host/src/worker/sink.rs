//! The sink task actor: read from the committed offset → put → flush → commit the next
//! offset together with the positions the flush returned (one redb transaction).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::batch::{BatchChecks, TopicPolicy};
use super::errors::{ErrorPolicy, FailedIn, Failure};
use super::keys;
use super::plane::{PlaneError, StoreBatch, TopicRead};
use super::task::{CallResult, Positions, TaskContext, TaskStatus};
use super::transforms::{through_stages, Stages};
use crate::metrics::{Op, Stage};
use crate::sandbox::types::{Position, RecordBatch, TaskError};
use crate::sandbox::{ConnectorComponent, GuestFailure, NetworkCounters, SinkInstance};
use crate::storage::LogRead;
use wasm_connect_sdk::{BatchReader, BatchWriter, Record, RecordRef};

/// Longest wait for new records before looking again.
const MAX_IDLE_WAIT: Duration = Duration::from_millis(200);
/// Bytes of records put before a flush while a topic has a backlog.
const FLUSH_BYTES: usize = 8 << 20;
/// Pause after a retriable error.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// One topic the sink reads and where it stands.
pub struct Subscription {
    topic: String,
    reader: Box<dyn TopicRead>,
    next_offset: u64,
    /// The last read returned everything there was.
    caught_up: bool,
}

impl Subscription {
    /// The next records from `next_offset`, up to the limits.
    async fn read(&mut self, max_records: u32, max_bytes: usize) -> Result<LogRead, PlaneError> {
        let read = self
            .reader
            .read(self.next_offset, max_records, max_bytes)
            .await?;
        self.caught_up = self.reader.caught_up(&read, max_records);
        Ok(read)
    }
}

/// Runs one sink task until it is stopped or fails.
pub async fn run(ctx: &mut TaskContext) {
    let ConnectorComponent::Sink(pre) = ctx.plugin.component.clone() else {
        return ctx.set(TaskStatus::Failed("plugin is not a sink connector".into()));
    };
    let (committed, subscriptions) = match resume_point(ctx).await {
        Ok(resume) => resume,
        Err(reason) => return ctx.set(TaskStatus::Failed(reason)),
    };
    let sandbox = ctx.sandbox.clone();
    if let Err(reason) = Stages::start(ctx).await {
        Stages::stop(ctx).await;
        return ctx.set(TaskStatus::Failed(reason));
    }
    let started = ctx
        .start_guest(committed, async |setup| {
            SinkInstance::start(&sandbox, &pre, setup).await
        })
        .await;
    if let Some(instance) = started {
        drive(ctx, instance, subscriptions).await;
    }
    Stages::stop(ctx).await;
}

/// The positions the task's last flush returned, and the topics it reads from their
/// committed offsets.
pub async fn resume_point(ctx: &TaskContext) -> Result<(Positions, Vec<Subscription>), String> {
    let connector = &ctx.identity.connector;
    let state = ctx
        .data
        .sink_resume(connector)
        .await
        .map_err(|e| e.to_string())?;
    Ok((state.positions, subscribe(ctx, &state.offsets).await?))
}

/// The sink loop over a started task: put new records of each topic, flush, commit, until
/// stopped or failed.
///
/// While a topic has a backlog, several batches are put before one flush (up to
/// [`FLUSH_BYTES`]), so the sink's fsync and the offset commit are paid per few MiB instead of
/// per batch; once caught up, every put is flushed at once, so records are never held back.
pub async fn drive(
    ctx: &mut TaskContext,
    mut task: impl SinkCalls,
    mut subscriptions: Vec<Subscription>,
) {
    let mut errors = match DeadLetters::new(ctx).await {
        Ok(errors) => errors,
        Err(reason) => return ctx.set(TaskStatus::Failed(reason)),
    };
    ctx.set(TaskStatus::Running);
    // A stream read waits for records by itself; a log read needs the log's append signal.
    let mut wake = subscriptions[0].reader.appended();
    let mut unflushed = 0usize;
    while !ctx.stopping() {
        if ctx.paused() {
            if unflushed > 0 {
                match flush_and_commit(ctx, &mut task, &mut subscriptions).await {
                    Ok(()) => unflushed = 0,
                    Err(Delivery::Retry(reason) | Delivery::Fail(reason)) => {
                        return ctx.fail(reason)
                    }
                }
            }
            ctx.wait_while_paused().await;
            continue;
        }
        let mut delivered = false;
        for subscription in subscriptions.iter_mut() {
            match put_next(ctx, &mut task, subscription, &mut errors).await {
                Ok(bytes) => {
                    unflushed += bytes;
                    delivered |= bytes > 0;
                }
                Err(Delivery::Retry(reason)) => {
                    tracing::debug!(task = %ctx.identity, "{}", ctx.redact(&reason));
                    ctx.pause(RETRY_PAUSE).await;
                }
                Err(Delivery::Fail(reason)) => return ctx.fail(reason),
            }
        }
        let caught_up = subscriptions.iter().all(|s| s.caught_up);
        if unflushed > 0 && (caught_up || unflushed >= FLUSH_BYTES) {
            match flush_and_commit(ctx, &mut task, &mut subscriptions).await {
                Ok(()) => unflushed = 0,
                Err(Delivery::Retry(reason)) => {
                    tracing::debug!(task = %ctx.identity, "{}", ctx.redact(&reason));
                    ctx.pause(RETRY_PAUSE).await;
                }
                Err(Delivery::Fail(reason)) => return ctx.fail(reason),
            }
        }
        if let (false, Some(wake)) = (delivered, wake.as_mut()) {
            wake.borrow_and_update();
            tokio::select! {
                _ = wake.changed() => {}
                _ = ctx.pause(MAX_IDLE_WAIT) => {}
            }
        }
    }
    if unflushed > 0 {
        if let Err(Delivery::Retry(reason) | Delivery::Fail(reason)) =
            flush_and_commit(ctx, &mut task, &mut subscriptions).await
        {
            tracing::warn!(task = %ctx.identity, "last flush: {}", ctx.redact(&reason));
        }
    }
    if let Err(e) = task.stop().await {
        tracing::warn!(task = %ctx.identity, "stop: {}", ctx.redact(&e.to_string()));
    }
    ctx.set(TaskStatus::Stopped);
}

/// The calls the sink loop makes on a started task. The wasm instance implements it; a
/// benchmark implements it with the same connector compiled natively.
pub trait SinkCalls: Send {
    fn put(
        &mut self,
        topic: &str,
        first_offset: u64,
        batch: &RecordBatch,
    ) -> impl Future<Output = CallResult<()>> + Send;
    fn flush(&mut self) -> impl Future<Output = CallResult<Vec<Position>>> + Send;
    fn stop(self) -> impl Future<Output = Result<(), GuestFailure>> + Send;
    /// The records the last `put` reported errant: (index in its batch, message).
    fn take_errant(&mut self) -> Vec<(u32, String)> {
        Vec::new()
    }

    /// The task's linear memory now (0 when it has none to report).
    fn memory_used(&self) -> usize {
        0
    }

    /// The bytes the task's instance sent and received over the network (`None` when it
    /// has no counters).
    fn network_counters(&self) -> Option<&Arc<NetworkCounters>> {
        None
    }
}

impl SinkCalls for SinkInstance {
    fn put(
        &mut self,
        topic: &str,
        first_offset: u64,
        batch: &RecordBatch,
    ) -> impl Future<Output = CallResult<()>> + Send {
        SinkInstance::put(self, topic, first_offset, batch)
    }

    fn flush(&mut self) -> impl Future<Output = CallResult<Vec<Position>>> + Send {
        SinkInstance::flush(self)
    }

    fn stop(self) -> impl Future<Output = Result<(), GuestFailure>> + Send {
        SinkInstance::stop(self)
    }

    fn take_errant(&mut self) -> Vec<(u32, String)> {
        SinkInstance::take_errant(self)
    }

    fn memory_used(&self) -> usize {
        SinkInstance::memory_used(self)
    }

    fn network_counters(&self) -> Option<&Arc<NetworkCounters>> {
        Some(SinkInstance::network_counters(self))
    }
}

enum Delivery {
    Retry(String),
    Fail(String),
}

/// The topics named by `topicNames` (or `topics`), with their committed offsets.
async fn subscribe(
    ctx: &TaskContext,
    offsets: &std::collections::BTreeMap<String, u64>,
) -> Result<Vec<Subscription>, String> {
    let names = keys::first_of(&ctx.config, &keys::SINK_TOPICS)
        .map(|(_, names)| names.to_string())
        .unwrap_or_default();
    let mut subscriptions = Vec::new();
    for topic in names.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let next_offset = offsets.get(topic).copied().unwrap_or(0);
        let (connector, task) = (&ctx.identity.connector, ctx.identity.task.unwrap_or(0));
        let reader = ctx
            .data
            .topic_reader(connector, task, topic, next_offset)
            .await
            .map_err(|e| e.to_string())?;
        subscriptions.push(Subscription {
            topic: topic.to_string(),
            reader,
            next_offset,
            caught_up: false,
        });
    }
    if subscriptions.is_empty() {
        return Err("the task config names no topics: set `topicNames` (or `topics`)".into());
    }
    Ok(subscriptions)
}

/// Puts the next records of one topic, if any, through the transforms; returns how many
/// bytes of frames were read.
async fn put_next(
    ctx: &mut TaskContext,
    task: &mut impl SinkCalls,
    sub: &mut Subscription,
    errors: &mut DeadLetters,
) -> Result<usize, Delivery> {
    let limits = &ctx.limits;
    let (max_records, max_bytes) = (limits.batch_records, limits.batch_bytes as usize);
    let read = match sub.read(max_records, max_bytes).await {
        Ok(read) => read,
        // A stream read fails over with the servers: try again.
        Err(e) if e.is_transient() => {
            return Err(Delivery::Retry(format!("topic {}: {e}", sub.topic)))
        }
        Err(e) => return Err(Delivery::Fail(e.to_string())),
    };
    if read.count == 0 {
        return Ok(0);
    }
    let bytes = read.frames.len();
    ctx.meter.received(read.count, bytes);
    let batch = RecordBatch {
        count: read.count,
        frames: read.frames,
    };
    let batch = if ctx.stages.is_empty() {
        batch
    } else {
        // Transforms see each record's topic (and its offset as its position); `put` gets
        // the frames without them, as always.
        let buffer = ctx.stages.input_buffer();
        let named =
            with_topic(&batch, &sub.topic, read.first_offset, buffer).map_err(Delivery::Fail)?;
        let transformed = through_stages(ctx, &errors.policy, named, &sub.topic)
            .await
            .map_err(Delivery::Fail)?;
        let (transformed, dead) = errors.split(transformed);
        errors.write(ctx, dead).await.map_err(Delivery::Fail)?;
        without_routing(&transformed).map_err(Delivery::Fail)?
    };
    if batch.count > 0 {
        let putting = Instant::now();
        let put = task.put(&sub.topic, read.first_offset, &batch).await;
        ctx.meter.call(Op::Put, putting.elapsed());
        ctx.meter.memory(task.memory_used());
        ctx.meter.network(task.network_counters());
        guest_result(ctx, Stage::Put, batch.count, put)?;
        let errant = task.take_errant();
        if !errant.is_empty() {
            let failures = errant
                .into_iter()
                .map(|(index, message)| Failure {
                    index,
                    failed_in: FailedIn::TaskPut,
                    by: "put".into(),
                    message,
                })
                .collect();
            let dead = errors
                .policy
                .handle(&ctx.identity, &batch, &sub.topic, failures)
                .map_err(Delivery::Fail)?;
            let dead = dead.into_iter().map(|(_, frame)| frame).collect();
            errors.write(ctx, dead).await.map_err(Delivery::Fail)?;
        }
    }
    ctx.meter.delivered(batch.count, bytes);
    sub.next_offset = read.first_offset + u64::from(read.count);
    Ok(bytes)
}

/// `batch`, whose first record has offset `first_offset`, with every record's topic set to
/// `topic` and its position to its offset; written into `buffer`.
fn with_topic(
    batch: &RecordBatch,
    topic: &str,
    first_offset: u64,
    buffer: Vec<u8>,
) -> Result<RecordBatch, String> {
    let mut offset = first_offset;
    rewrite(batch, BatchWriter::reusing(buffer), |record, out| {
        let headers: Vec<(&str, &[u8])> = record.headers().collect();
        let position = offset.to_string();
        offset += 1;
        out.push(&Record {
            topic,
            position: &position,
            ..record.to_record(&headers)
        })
        .map_err(|e| e.to_string())
    })
}

/// `batch` with empty topic, partition and position fields (the form `put` takes).
fn without_routing(batch: &RecordBatch) -> Result<RecordBatch, String> {
    let out = BatchWriter::with_capacity(batch.frames.len());
    rewrite(batch, out, |record, out| {
        out.push_content(record.content, record.timestamp);
        Ok(())
    })
}

/// `batch`, each record as `each` writes it to `out`.
fn rewrite(
    batch: &RecordBatch,
    mut out: BatchWriter,
    mut each: impl FnMut(&RecordRef<'_>, &mut BatchWriter) -> Result<(), String>,
) -> Result<RecordBatch, String> {
    for record in BatchReader::new(&batch.frames) {
        let record = record.map_err(|e| format!("a transform returned a malformed batch: {e}"))?;
        each(&record, &mut out)?;
    }
    let (count, frames) = out.into_parts();
    Ok(RecordBatch { count, frames })
}

/// A sink task's error policy and its writer of dead letter records: they go to the dead
/// letter topic as the producer `<connector>/<task>/dead-letters`, whose batches the data
/// plane numbers and deduplicates like a source's.
struct DeadLetters {
    policy: ErrorPolicy,
    producer: String,
    sequence: u64,
    checks_topics: std::sync::Arc<TopicPolicy>,
}

impl DeadLetters {
    async fn new(ctx: &TaskContext) -> Result<DeadLetters, String> {
        let policy =
            ErrorPolicy::from_config(&ctx.config, ctx.errors.clone()).map_err(|e| e.to_string())?;
        let producer = format!("{}/dead-letters", ctx.identity);
        let sequence = match policy.dead_letter_topic {
            Some(_) => {
                ctx.data
                    .source_resume(&ctx.identity.connector, &producer)
                    .await
                    .map_err(|e| e.to_string())?
                    .1
            }
            None => 0,
        };
        let topics = TopicPolicy::from_config(&ctx.config)?;
        Ok(DeadLetters {
            policy,
            producer,
            sequence,
            checks_topics: std::sync::Arc::new(topics),
        })
    }

    /// The records of `batch` bound for the dead letter topic, taken out of it.
    fn split(&self, batch: RecordBatch) -> (RecordBatch, Vec<Vec<u8>>) {
        let Some(topic) = &self.policy.dead_letter_topic else {
            return (batch, Vec::new());
        };
        let mut kept = BatchWriter::with_capacity(batch.frames.len());
        let mut dead = Vec::new();
        for record in BatchReader::new(&batch.frames).map_while(Result::ok) {
            if record.topic == topic {
                dead.push(record.frame.to_vec());
            } else {
                kept.push_frame(record.frame);
            }
        }
        let (count, frames) = kept.into_parts();
        (RecordBatch { count, frames }, dead)
    }

    /// Stores `dead` records in the dead letter topic (durably, before the sink commits).
    async fn write(&mut self, ctx: &TaskContext, dead: Vec<Vec<u8>>) -> Result<(), String> {
        let Some(topic) = &self.policy.dead_letter_topic else {
            return Ok(());
        };
        if dead.is_empty() {
            return Ok(());
        }
        let count = dead.len() as u32;
        let frames = dead.concat();
        let store = StoreBatch {
            connector: ctx.identity.connector.clone(),
            producer: self.producer.clone(),
            sequence: self.sequence,
            default_topic: topic.clone(),
            durable: true,
            checks: BatchChecks {
                max_records: count,
                limits: ctx.limits.clone(),
                topics: self.checks_topics.clone(),
                partitions: Default::default(),
            },
            batch: RecordBatch { count, frames },
        };
        self.sequence += 1;
        ctx.data
            .store_batch(store)
            .await
            .map(drop)
            .map_err(|e| format!("cannot write to the dead letter topic {topic}: {e}"))
    }
}

/// Flushes the task and commits, in one transaction, the offsets put so far with the
/// positions the flush returned.
async fn flush_and_commit(
    ctx: &TaskContext,
    task: &mut impl SinkCalls,
    subs: &mut [Subscription],
) -> Result<(), Delivery> {
    let flushing = Instant::now();
    let flushed = task.flush().await;
    ctx.meter.call(Op::Flush, flushing.elapsed());
    ctx.meter.network(task.network_counters());
    let positions = guest_result(ctx, Stage::Flush, 0, flushed)?;
    let positions: Vec<(String, String)> = positions
        .into_iter()
        .map(|p| (p.partition, p.position))
        .collect();
    let offsets: Vec<(String, u64)> = subs
        .iter()
        .map(|s| (s.topic.clone(), s.next_offset))
        .collect();
    let committing = Instant::now();
    let committed = (ctx.data)
        .commit_sink(&ctx.identity.connector, offsets, positions)
        .await;
    ctx.meter.call(Op::Commit, committing.elapsed());
    committed.map_err(|e| {
        ctx.meter.failed(Stage::Commit, 0);
        Delivery::Fail(e.to_string())
    })
}

/// The outcome of the guest call of `stage` over `records`, counted when it failed.
fn guest_result<T>(
    ctx: &TaskContext,
    stage: Stage,
    records: u32,
    result: CallResult<T>,
) -> Result<T, Delivery> {
    let call = stage.name();
    if !matches!(result, Ok(Ok(_))) {
        ctx.meter.failed(stage, records);
    }
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(TaskError::Retriable(reason))) => Err(Delivery::Retry(format!("{call}: {reason}"))),
        Ok(Err(TaskError::Fatal(reason))) => {
            Err(Delivery::Fail(format!("{call} failed: {reason}")))
        }
        Err(e) => {
            ctx.meter.guest_failed(&e);
            Err(Delivery::Fail(e.to_string()))
        }
    }
}
