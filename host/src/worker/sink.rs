//! The sink task actor: read from the committed offset → put → flush → commit the next
//! offset together with the positions the flush returned (one redb transaction).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::task::{CallResult, Positions, TaskContext, TaskStatus};
use crate::sandbox::types::{Position, RecordBatch, TaskError};
use crate::sandbox::{ConnectorComponent, GuestFailure, SinkInstance};
use crate::storage::TopicLog;

/// Longest wait for new records before looking again.
const MAX_IDLE_WAIT: Duration = Duration::from_millis(200);
/// Bytes of records put before a flush while a topic has a backlog.
const FLUSH_BYTES: usize = 8 << 20;
/// Pause after a retriable error.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// One topic the sink reads and where it stands.
pub struct Subscription {
    topic: String,
    log: Arc<TopicLog>,
    next_offset: u64,
}

/// Runs one sink task until it is stopped or fails.
pub async fn run(ctx: &mut TaskContext) {
    let ConnectorComponent::Sink(pre) = ctx.plugin.component.clone() else {
        return ctx.set(TaskStatus::Failed("plugin is not a sink connector".into()));
    };
    let (committed, subscriptions) = match resume_point(ctx) {
        Ok(resume) => resume,
        Err(reason) => return ctx.set(TaskStatus::Failed(reason)),
    };
    let sandbox = ctx.sandbox.clone();
    let started = ctx
        .start_guest(committed, async |setup| {
            SinkInstance::start(&sandbox, &pre, setup).await
        })
        .await;
    if let Some(instance) = started {
        drive(ctx, instance, subscriptions).await;
    }
}

/// The positions the task's last flush returned, and the topics it reads from their
/// committed offsets.
pub fn resume_point(ctx: &TaskContext) -> Result<(Positions, Vec<Subscription>), String> {
    let state = ctx
        .storage
        .state
        .sink_state(&ctx.identity.connector)
        .map_err(|e| e.to_string())?;
    Ok((state.positions, subscribe(ctx, &state.offsets)?))
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
    ctx.set(TaskStatus::Running);
    let mut wake = subscriptions[0].log.subscribe();
    let mut unflushed = 0usize;
    while !ctx.stopping() {
        if ctx.paused() {
            if unflushed > 0 {
                match flush_and_commit(ctx, &mut task, &mut subscriptions).await {
                    Ok(()) => unflushed = 0,
                    Err(Delivery::Retry(reason) | Delivery::Fail(reason)) => {
                        return ctx.set(TaskStatus::Failed(reason))
                    }
                }
            }
            ctx.wait_while_paused().await;
            continue;
        }
        let mut delivered = false;
        for subscription in subscriptions.iter_mut() {
            match put_next(ctx, &mut task, subscription).await {
                Ok(bytes) => {
                    unflushed += bytes;
                    delivered |= bytes > 0;
                }
                Err(Delivery::Retry(reason)) => {
                    tracing::debug!(task = %ctx.identity, "{reason}");
                    ctx.pause(RETRY_PAUSE).await;
                }
                Err(Delivery::Fail(reason)) => return ctx.set(TaskStatus::Failed(reason)),
            }
        }
        let caught_up = subscriptions
            .iter()
            .all(|s| s.next_offset >= s.log.end_offset());
        if unflushed > 0 && (caught_up || unflushed >= FLUSH_BYTES) {
            match flush_and_commit(ctx, &mut task, &mut subscriptions).await {
                Ok(()) => unflushed = 0,
                Err(Delivery::Retry(reason)) => {
                    tracing::debug!(task = %ctx.identity, "{reason}");
                    ctx.pause(RETRY_PAUSE).await;
                }
                Err(Delivery::Fail(reason)) => return ctx.set(TaskStatus::Failed(reason)),
            }
        }
        if !delivered {
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
            tracing::warn!(task = %ctx.identity, "last flush: {reason}");
        }
    }
    if let Err(e) = task.stop().await {
        tracing::warn!(task = %ctx.identity, "stop: {e}");
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
}

enum Delivery {
    Retry(String),
    Fail(String),
}

/// The topics named by `topicNames` (or `topics`), with their committed offsets.
fn subscribe(
    ctx: &TaskContext,
    offsets: &std::collections::BTreeMap<String, u64>,
) -> Result<Vec<Subscription>, String> {
    let names = ctx
        .config
        .get("topicNames")
        .or_else(|| ctx.config.get("topics"))
        .cloned()
        .unwrap_or_default();
    let mut subscriptions = Vec::new();
    for topic in names.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let log = ctx
            .storage
            .topics
            .get(topic)
            .map_err(|e| format!("topic {topic}: {e}"))?;
        let next_offset = offsets.get(topic).copied().unwrap_or(0);
        subscriptions.push(Subscription {
            topic: topic.to_string(),
            log,
            next_offset,
        });
    }
    if subscriptions.is_empty() {
        return Err("the task config names no topics: set `topicNames` (or `topics`)".into());
    }
    Ok(subscriptions)
}

/// Puts the next records of one topic, if any; returns how many bytes of frames.
async fn put_next(
    ctx: &TaskContext,
    task: &mut impl SinkCalls,
    sub: &mut Subscription,
) -> Result<usize, Delivery> {
    let limits = &ctx.limits;
    let (log, from) = (sub.log.clone(), sub.next_offset);
    let (max_records, max_bytes) = (limits.batch_records, limits.batch_bytes as usize);
    let read = tokio::task::spawn_blocking(move || log.read(from, max_records, max_bytes))
        .await
        .map_err(|e| Delivery::Fail(format!("storage thread crashed: {e}")))?
        .map_err(|e| Delivery::Fail(format!("cannot read topic {}: {e}", sub.topic)))?;
    if read.count == 0 {
        return Ok(0);
    }
    let bytes = read.frames.len();
    let batch = RecordBatch {
        count: read.count,
        frames: read.frames,
    };
    guest_result("put", task.put(&sub.topic, read.first_offset, &batch).await)?;
    sub.next_offset = read.first_offset + u64::from(read.count);
    Ok(bytes)
}

/// Flushes the task and commits, in one transaction, the offsets put so far with the
/// positions the flush returned.
async fn flush_and_commit(
    ctx: &TaskContext,
    task: &mut impl SinkCalls,
    subs: &mut [Subscription],
) -> Result<(), Delivery> {
    let positions = guest_result("flush", task.flush().await)?;
    let positions: Vec<(String, String)> = positions
        .into_iter()
        .map(|p| (p.partition, p.position))
        .collect();
    let offsets: Vec<(String, u64)> = subs
        .iter()
        .map(|s| (s.topic.clone(), s.next_offset))
        .collect();
    let storage = ctx.storage.clone();
    let connector = ctx.identity.connector.clone();
    tokio::task::spawn_blocking(move || storage.state.commit_sink(&connector, &offsets, &positions))
        .await
        .map_err(|e| Delivery::Fail(format!("storage thread crashed: {e}")))?
        .map_err(|e| Delivery::Fail(e.to_string()))
}

fn guest_result<T>(call: &str, result: CallResult<T>) -> Result<T, Delivery> {
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(TaskError::Retriable(reason))) => Err(Delivery::Retry(format!("{call}: {reason}"))),
        Ok(Err(TaskError::Fatal(reason))) => {
            Err(Delivery::Fail(format!("{call} failed: {reason}")))
        }
        Err(e) => Err(Delivery::Fail(e.to_string())),
    }
}
