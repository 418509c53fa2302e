//! Error handling for records that fail on their way (Kafka Connect's `errors.*` keys): in a
//! transform, or reported errant by a sink. [`ErrorPolicy`] reads the keys;
//! [`ErrorPolicy::handle`] decides, per failed record: fail the task (`errors.tolerance=none`,
//! the default, naming the record's position), or skip it (`all`), logging it (always
//! when there is no dead letter queue: nothing is lost silently) and writing the original
//! record to the dead letter queue topic with the context headers.
//!
//! Retriable failures (a transform's `retriable` error) are retried with a doubling delay up
//! to `errors.retry.delay.max.ms`, for up to `errors.retry.timeout` ms ([`Retry`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasm_connect_sdk::{BatchReader, BatchWriter, Record, RecordRef};

use crate::sandbox::types::RecordBatch;
use crate::sandbox::Identity;
use crate::storage::Properties;

pub const TOLERANCE: &str = "errors.tolerance";
pub const RETRY_TIMEOUT: &str = "errors.retry.timeout";
pub const RETRY_DELAY_MAX: &str = "errors.retry.delay.max.ms";
pub const LOG_ENABLE: &str = "errors.log.enable";
pub const LOG_INCLUDE_MESSAGES: &str = "errors.log.include.messages";
pub const DLQ_TOPIC: &str = "errors.deadletterqueue.topic.name";
pub const DLQ_CONTEXT_HEADERS: &str = "errors.deadletterqueue.context.headers.enable";

/// Kafka's context header names.
const HEADER_TOPIC: &str = "__connect.errors.topic";
const HEADER_STAGE: &str = "__connect.errors.stage";
const HEADER_CONNECTOR: &str = "__connect.errors.connector.name";
const HEADER_TASK: &str = "__connect.errors.task.id";
const HEADER_MESSAGE: &str = "__connect.errors.exception.message";
const HEADER_OFFSET: &str = "__connect.errors.offset";

/// Where a record failed (the `__connect.errors.stage` header, in Kafka's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedIn {
    /// In a transform.
    Transformation,
    /// Reported errant by the sink's `put`.
    TaskPut,
}

impl FailedIn {
    fn kafka_name(self) -> &'static str {
        match self {
            FailedIn::Transformation => "TRANSFORMATION",
            FailedIn::TaskPut => "TASK_PUT",
        }
    }
}

/// Whether a failed record fails the task or is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tolerance {
    #[default]
    None,
    All,
}

/// A bad `errors.*` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct PolicyError {
    pub key: &'static str,
    pub message: String,
}

/// Failed and dead-lettered records of one task, shared with its handle for the status.
#[derive(Debug, Default)]
pub struct ErrorCounts {
    /// Records that failed (and were skipped, with `errors.tolerance=all`).
    failed: AtomicU64,
    /// Of those, the records written to the dead letter queue.
    dead_lettered: AtomicU64,
}

impl ErrorCounts {
    pub fn totals(&self) -> ErrorTotals {
        ErrorTotals {
            failed: self.failed.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
        }
    }
}

/// [`ErrorCounts`] at one moment, as the status shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorTotals {
    pub failed: u64,
    pub dead_lettered: u64,
}

/// One failed record: its index in the batch as the task got it, where and why it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub index: u32,
    pub failed_in: FailedIn,
    /// The transform alias, or the sink call.
    pub by: String,
    pub message: String,
}

/// The `errors.*` keys of a connector.
#[derive(Debug, Clone, Default)]
pub struct ErrorPolicy {
    pub tolerance: Tolerance,
    pub retry_timeout: Duration,
    pub retry_delay_max: Duration,
    pub log: bool,
    pub log_messages: bool,
    pub dead_letter_topic: Option<String>,
    pub context_headers: bool,
    /// The task's counts (see [`ErrorCounts`]).
    counts: Arc<ErrorCounts>,
}

impl ErrorPolicy {
    /// The policy `config` sets; failures are counted in `counts`.
    pub fn from_config(
        config: &Properties,
        counts: Arc<ErrorCounts>,
    ) -> Result<ErrorPolicy, PolicyError> {
        let value = |key: &str| config.get(key).map(|v| v.trim()).filter(|v| !v.is_empty());
        let tolerance = match value(TOLERANCE) {
            None | Some("none") => Tolerance::None,
            Some("all") => Tolerance::All,
            Some(other) => {
                return Err(PolicyError {
                    key: TOLERANCE,
                    message: format!("must be none or all, not {other:?}"),
                })
            }
        };
        let flag = |key: &'static str| match value(key) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(PolicyError {
                key,
                message: format!("must be true or false, not {other:?}"),
            }),
        };
        let millis = |key: &'static str, default: u64| match value(key) {
            None => Ok(Duration::from_millis(default)),
            // Kafka's -1: retry without end.
            Some("-1") => Ok(Duration::MAX),
            Some(text) => text
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| PolicyError {
                    key,
                    message: format!("must be milliseconds (or -1), not {text:?}"),
                }),
        };
        let dead_letter_topic = value(DLQ_TOPIC).map(str::to_string);
        if let Some(topic) = &dead_letter_topic {
            crate::storage::validate_topic_name(topic).map_err(|message| PolicyError {
                key: DLQ_TOPIC,
                message,
            })?;
        }
        Ok(ErrorPolicy {
            tolerance,
            retry_timeout: millis(RETRY_TIMEOUT, 0)?,
            retry_delay_max: millis(RETRY_DELAY_MAX, 60_000)?,
            log: flag(LOG_ENABLE)?,
            log_messages: flag(LOG_INCLUDE_MESSAGES)?,
            dead_letter_topic,
            context_headers: flag(DLQ_CONTEXT_HEADERS)?,
            counts,
        })
    }

    /// Handles the `failures` among the records of `original` (the batch as the task got
    /// it, before any transform): with tolerance `none`, the reason the task fails (naming
    /// the first failed record's position); with `all`, each is logged as the policy says
    /// (always when there is no dead letter queue) and, with a dead letter queue, returned
    /// as its dead letter record: the original with the DLQ topic and the context headers,
    /// by its index.
    pub fn handle(
        &self,
        identity: &Identity,
        original: &RecordBatch,
        default_topic: &str,
        mut failures: Vec<Failure>,
    ) -> Result<Vec<(u32, Vec<u8>)>, String> {
        failures.sort_by_key(|f| f.index);
        let records = BatchReader::read_all(&original.frames, original.count)
            .map_err(|e| format!("the batch the failures are about is malformed: {e}"))?;
        let record = |f: &Failure| records.get(f.index as usize).copied();
        if self.tolerance == Tolerance::None {
            let Some(first) = failures.first() else {
                return Ok(Vec::new());
            };
            let place = record(first).map_or_else(String::new, |r| where_(&r, default_topic));
            return Err(format!(
                "{} {} failed on record {} of the batch{place}: {}; errors.tolerance=none: \
                 the task stops here, nothing from this record on is committed (set \
                 errors.tolerance=all to skip failed records, with \
                 errors.deadletterqueue.topic.name to keep them)",
                failed_in_text(first.failed_in),
                first.by,
                first.index,
                first.message
            ));
        }
        let mut dead = Vec::new();
        for failure in &failures {
            let Some(r) = record(failure) else { continue };
            self.counts.failed.fetch_add(1, Ordering::Relaxed);
            if self.log || self.dead_letter_topic.is_none() {
                let content = if self.log_messages {
                    format!(
                        "; key {:?}, value {:?}",
                        r.key.map(String::from_utf8_lossy),
                        String::from_utf8_lossy(r.value)
                    )
                } else {
                    String::new()
                };
                tracing::warn!(task = %identity, "{} {} failed on record {}{}: {}; skipped (errors.tolerance=all){content}",
                    failed_in_text(failure.failed_in), failure.by, failure.index,
                    where_(&r, default_topic), failure.message);
            }
            if let Some(topic) = &self.dead_letter_topic {
                let frame = self
                    .dead_letter(identity, &r, topic, default_topic, failure)
                    .map_err(|e| format!("cannot write the dead letter record: {e}"))?;
                self.counts.dead_lettered.fetch_add(1, Ordering::Relaxed);
                dead.push((failure.index, frame));
            }
        }
        Ok(dead)
    }

    /// `record` as its dead letter record.
    fn dead_letter(
        &self,
        identity: &Identity,
        record: &RecordRef<'_>,
        topic: &str,
        default_topic: &str,
        failure: &Failure,
    ) -> Result<Vec<u8>, wasm_connect_sdk::FrameError> {
        let mut headers: Vec<(&str, Vec<u8>)> = record
            .headers()
            .map(|(name, value)| (name, value.to_vec()))
            .collect();
        if self.context_headers {
            let original_topic = if record.topic.is_empty() {
                default_topic
            } else {
                record.topic
            };
            let task = identity.task.map(|t| t.to_string()).unwrap_or_default();
            headers.extend([
                (HEADER_TOPIC, original_topic.as_bytes().to_vec()),
                (
                    HEADER_STAGE,
                    failure.failed_in.kafka_name().as_bytes().to_vec(),
                ),
                (HEADER_CONNECTOR, identity.connector.as_bytes().to_vec()),
                (HEADER_TASK, task.into_bytes()),
                (HEADER_MESSAGE, failure.message.as_bytes().to_vec()),
                (HEADER_OFFSET, record.position.as_bytes().to_vec()),
            ]);
        }
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        let mut writer = BatchWriter::new();
        writer.push(&Record {
            topic,
            ..record.to_record(&headers)
        })?;
        Ok(writer.into_parts().1)
    }
}

fn failed_in_text(failed_in: FailedIn) -> &'static str {
    match failed_in {
        FailedIn::Transformation => "transform",
        FailedIn::TaskPut => "the sink's put, reported errant by",
    }
}

/// ` (topic t, partition p, position q)`: where a record stands.
fn where_(record: &RecordRef<'_>, default_topic: &str) -> String {
    let topic = if record.topic.is_empty() {
        default_topic
    } else {
        record.topic
    };
    format!(
        " (topic {topic}, partition {:?}, position {:?})",
        record.partition, record.position
    )
}

/// `batch` (whose records came from the records `origins` name) with the `dead` records
/// put in their places: each right after the outputs of the records before it, so the
/// positions committed per partition never go back.
pub fn interleave(batch: RecordBatch, origins: &[u32], dead: Vec<(u32, Vec<u8>)>) -> RecordBatch {
    if dead.is_empty() {
        return batch;
    }
    let records: Vec<&[u8]> = BatchReader::new(&batch.frames)
        .map_while(Result::ok)
        .map(|r| r.frame)
        .collect();
    let mut writer = BatchWriter::with_capacity(batch.frames.len());
    let mut dead = dead.into_iter().peekable();
    for (frame, origin) in records.iter().zip(origins) {
        while let Some((_, d)) = dead.next_if(|(i, _)| i < origin) {
            writer.push_frame(&d);
        }
        writer.push_frame(frame);
    }
    for (_, d) in dead {
        writer.push_frame(&d);
    }
    let (count, frames) = writer.into_parts();
    RecordBatch { count, frames }
}

/// Retrying a retriable failure: a doubling delay up to the policy's maximum, for up to its
/// timeout.
pub struct Retry {
    until: Option<Instant>,
    delay: Duration,
    max: Duration,
}

impl Retry {
    pub fn new(policy: &ErrorPolicy) -> Retry {
        Retry {
            until: Instant::now().checked_add(policy.retry_timeout),
            delay: Duration::from_millis(100).min(policy.retry_delay_max),
            max: policy.retry_delay_max,
        }
    }

    /// The pause before the next try, or None when the retry timeout has passed.
    pub fn next_delay(&mut self) -> Option<Duration> {
        if self.until.is_some_and(|until| Instant::now() >= until) {
            return None;
        }
        let delay = self.delay;
        self.delay = (self.delay * 2).min(self.max);
        Some(delay)
    }
}
