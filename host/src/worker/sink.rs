//! The sink task actor: read from the committed offset → put → flush → commit the next
//! offset together with the positions the flush returned (one redb transaction).

use std::sync::Arc;
use std::time::Duration;

use super::source::task_error_text;
use super::task::{TaskContext, TaskStatus};
use crate::sandbox::types::{RecordBatch, TaskError};
use crate::sandbox::{ConnectorComponent, SinkInstance, TaskSetup};
use crate::storage::TopicLog;

/// Longest wait for new records before looking again.
const MAX_IDLE_WAIT: Duration = Duration::from_millis(200);
/// Pause after a retriable error.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// One topic the sink reads and where it stands.
struct Subscription {
    topic: String,
    log: Arc<TopicLog>,
    next_offset: u64,
}

/// Runs one sink task until it is stopped or fails.
pub async fn run(mut ctx: TaskContext) {
    let ConnectorComponent::Sink(pre) = ctx.plugin.component.clone() else {
        return ctx.set(TaskStatus::Failed("plugin is not a sink connector".into()));
    };
    let state = match ctx.storage.state.sink_state(&ctx.identity.connector) {
        Ok(state) => state,
        Err(e) => return ctx.set(TaskStatus::Failed(e.to_string())),
    };
    let mut subscriptions = match subscribe(&ctx, &state.offsets) {
        Ok(subscriptions) => subscriptions,
        Err(reason) => return ctx.set(TaskStatus::Failed(reason)),
    };
    let config = ctx.guest_config();
    let grants = ctx.grants();
    let setup = TaskSetup { identity: ctx.identity.clone(), grants: &grants, committed: state.positions, config: &config };
    let sandbox = ctx.sandbox.clone();
    let mut instance = match SinkInstance::start(&sandbox, &pre, setup).await {
        Ok(Ok(instance)) => instance,
        Ok(Err(e)) => return ctx.set(TaskStatus::Failed(format!("start failed: {}", task_error_text(&e)))),
        Err(e) => return ctx.set(TaskStatus::Failed(e.to_string())),
    };
    ctx.set(TaskStatus::Running);
    let mut wake = subscriptions[0].log.subscribe();
    while !ctx.stopping() {
        let mut delivered = false;
        for subscription in subscriptions.iter_mut() {
            match deliver(&ctx, &mut instance, subscription).await {
                Ok(count) => delivered |= count > 0,
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
    if let Err(e) = instance.stop().await {
        tracing::warn!(task = %ctx.identity, "stop: {e}");
    }
    ctx.set(TaskStatus::Stopped);
}

enum Delivery {
    Retry(String),
    Fail(String),
}

/// The topics named by `topicNames` (or `topics`), with their committed offsets.
fn subscribe(ctx: &TaskContext, offsets: &std::collections::BTreeMap<String, u64>) -> Result<Vec<Subscription>, String> {
    let names = ctx.config.get("topicNames").or_else(|| ctx.config.get("topics")).cloned().unwrap_or_default();
    let mut subscriptions = Vec::new();
    for topic in names.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let log = ctx.storage.topics.get(topic).map_err(|e| format!("topic {topic}: {e}"))?;
        let next_offset = offsets.get(topic).copied().unwrap_or(0);
        subscriptions.push(Subscription { topic: topic.to_string(), log, next_offset });
    }
    if subscriptions.is_empty() {
        return Err("the task config names no topics: set `topicNames` (or `topics`)".into());
    }
    Ok(subscriptions)
}

/// Delivers the next records of one topic, if any; returns how many.
async fn deliver(ctx: &TaskContext, instance: &mut SinkInstance<'_>, sub: &mut Subscription) -> Result<u32, Delivery> {
    let limits = ctx.sandbox.limits();
    let (log, from) = (sub.log.clone(), sub.next_offset);
    let (max_records, max_bytes) = (limits.batch_records, limits.batch_bytes as usize);
    let read = tokio::task::spawn_blocking(move || log.read(from, max_records, max_bytes))
        .await
        .map_err(|e| Delivery::Fail(format!("storage thread crashed: {e}")))?
        .map_err(|e| Delivery::Fail(format!("cannot read topic {}: {e}", sub.topic)))?;
    if read.count == 0 {
        return Ok(0);
    }
    let batch = RecordBatch { count: read.count, frames: read.frames };
    guest_result("put", instance.put(&sub.topic, read.first_offset, &batch).await)?;
    let positions = guest_result("flush", instance.flush().await)?;
    let next_offset = read.first_offset + u64::from(read.count);
    let positions: Vec<(String, String)> = positions.into_iter().map(|p| (p.partition, p.position)).collect();
    let storage = ctx.storage.clone();
    let (connector, topic) = (ctx.identity.connector.clone(), sub.topic.clone());
    tokio::task::spawn_blocking(move || storage.state.commit_sink(&connector, &topic, next_offset, &positions))
        .await
        .map_err(|e| Delivery::Fail(format!("storage thread crashed: {e}")))?
        .map_err(|e| Delivery::Fail(e.to_string()))?;
    sub.next_offset = next_offset;
    Ok(read.count)
}

fn guest_result<T>(
    call: &str,
    result: Result<Result<T, TaskError>, crate::sandbox::GuestFailure>,
) -> Result<T, Delivery> {
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(TaskError::Retriable(reason))) => Err(Delivery::Retry(format!("{call}: {reason}"))),
        Ok(Err(TaskError::Fatal(reason))) => Err(Delivery::Fail(format!("{call} failed: {reason}"))),
        Err(e) => Err(Delivery::Fail(e.to_string())),
    }
}
