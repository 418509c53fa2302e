//! Publishing a source task's batch to the topic streams (the layout: [`super::message`]).
//!
//! - The routed batch is cut into units: runs of consecutive records with the same topic,
//!   each at most one NATS message ([`UNIT_BYTES`], less than the servers' `max_payload`).
//!   Cutting only at a change of topic or size keeps every partition's records in order, so
//!   a unit's checkpoint (the positions the batch completes up to it) never claims a record
//!   that an earlier, unstored unit holds.
//! - Each unit carries the logical offset of its first record, which the publisher must know
//!   before the stream stores it: every message names the stream sequence it expects to
//!   follow (`Nats-Expected-Last-Sequence`), so the offsets of two publishers never overlap.
//!   Units of one topic are pipelined (up to [`PUBLISH_WINDOW`] acks awaited at once); a
//!   unit refused because another publisher came first is published again after the
//!   publisher reads the stream's end afresh.
//! - Every unit has the message id `<producer>/<run>/<sequence>/<unit>` (`run` is new each
//!   time a task starts): a unit published again after a lost ack is dropped by the
//!   stream's duplicate window. After a crash nothing is published again at all: the task
//!   resumes after the last checkpoint the streams hold ([`super::plane`]).
//! - Units of different topics are published one topic after the other, each waiting for the
//!   acks of the one before: streams do not order messages among themselves.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::{self, message::PublishMessage};
use async_nats::Subject;
use bytes::Bytes;
use futures_util::stream::{FuturesOrdered, StreamExt};
use wasm_connect_sdk::{BatchWriter, RecordRef};

use super::error::NatsError;
use super::message::{self, Checkpoint, Span};
use super::{Cluster, ClusterError};

/// Most bytes of records in one message (less when the servers' `max_payload` is smaller).
pub const UNIT_BYTES: usize = 1 << 20;
/// Room left in a message for its headers (the checkpoint's positions among them).
const HEADER_ROOM: usize = 64 << 10;
/// Publish acks one task awaits at once.
const PUBLISH_WINDOW: usize = 16;
/// How long the units whose ack failed are published again before the batch fails (a
/// JetStream leader election takes 2–4 s), and the pause between rounds.
const PUBLISH_RETRY_FOR: Duration = Duration::from_secs(30);
const PUBLISH_RETRY_PAUSE: Duration = Duration::from_millis(250);

/// A topic's stream and what this worker knows of its end.
pub struct TopicStream {
    pub stream: jetstream::stream::Stream,
    /// The stream's name, for errors.
    pub name: String,
    /// Subjects are `<prefix>.<producer>`: one per publishing task, so a task finds its
    /// last message (its checkpoint) without reading anyone else's.
    pub subject_prefix: String,
    /// None until read from the stream, and again whenever a publish failed: then the next
    /// publisher reads it afresh.
    tail: tokio::sync::Mutex<Option<Tail>>,
}

/// The end of a topic stream: its last sequence and the offset its next record gets.
#[derive(Debug, Clone, Copy, Default)]
struct Tail {
    last_sequence: u64,
    next_offset: u64,
}

impl TopicStream {
    pub fn new(stream: jetstream::stream::Stream, name: String, subject_prefix: String) -> Self {
        TopicStream {
            stream,
            name,
            subject_prefix,
            tail: Default::default(),
        }
    }

    /// The subject `producer` publishes to.
    pub fn subject(&self, producer: &str) -> String {
        format!("{}.{}", self.subject_prefix, super::key_part(producer))
    }

    /// The stream's last sequence and the span of its last message (None when empty).
    pub async fn last(&self) -> Result<Option<(u64, Span)>, ClusterError> {
        let info = self
            .stream
            .get_info()
            .await
            .map_err(|e| self.read_error(e))?;
        if info.state.messages == 0 {
            return Ok(None);
        }
        let last = info.state.last_sequence;
        Ok(Some((last, self.span_at(last).await?)))
    }

    /// The span of the message at `sequence`.
    pub async fn span_at(&self, sequence: u64) -> Result<Span, ClusterError> {
        let message = self.stream.get_raw_message(sequence).await;
        let message = message.map_err(|e| self.read_error(e))?;
        message::span(Some(&message.headers)).ok_or_else(|| ClusterError::Layout {
            stream: self.name.clone(),
            sequence,
        })
    }

    fn read_error(&self, source: impl Into<NatsError>) -> ClusterError {
        ClusterError::Read {
            stream: self.name.clone(),
            source: source.into(),
        }
    }

    async fn read_tail(&self) -> Result<Tail, ClusterError> {
        Ok(match self.last().await? {
            Some((last_sequence, span)) => Tail {
                last_sequence,
                next_offset: span.end(),
            },
            None => Tail::default(),
        })
    }
}

/// One message to be: records of one topic, in batch order.
pub struct Unit<'a> {
    pub topic: &'a str,
    frames: BatchWriter,
    checkpoint: Checkpoint,
}

/// Cuts a routed batch into [`Unit`]s (see the module doc).
pub struct Units<'a> {
    units: Vec<Unit<'a>>,
    budget: usize,
    /// Partition → last position so far in the batch.
    positions: BTreeMap<&'a str, &'a str>,
    epoch: u64,
    sequence: u64,
    /// The largest record that fit in no message, if any.
    too_large: Option<usize>,
}

impl<'a> Units<'a> {
    /// Units of the batch `sequence` of a source at offsets epoch `epoch`, for servers that
    /// take messages of up to `max_payload` bytes.
    pub fn new(epoch: u64, sequence: u64, max_payload: usize) -> Self {
        Units {
            units: Vec::new(),
            budget: UNIT_BYTES
                .min(max_payload.saturating_sub(HEADER_ROOM))
                .max(1),
            positions: BTreeMap::new(),
            epoch,
            sequence,
            too_large: None,
        }
    }

    /// Appends a routed record.
    pub fn push(&mut self, topic: &'a str, record: RecordRef<'a>, timestamp: i64) {
        let bytes = record.content.len() + 16;
        if bytes > self.budget {
            self.too_large = Some(self.too_large.unwrap_or(0).max(bytes));
            return;
        }
        let full =
            |unit: &Unit| unit.topic != topic || unit.frames.byte_len() + bytes > self.budget;
        if self.units.last().is_none_or(full) {
            self.close_last();
            let unit = self.units.len() as u32;
            self.units.push(Unit {
                topic,
                frames: BatchWriter::with_capacity(self.budget.min(64 << 10)),
                checkpoint: Checkpoint {
                    epoch: self.epoch,
                    sequence: self.sequence,
                    unit,
                    positions: BTreeMap::new(),
                },
            });
        }
        if let Some(unit) = self.units.last_mut() {
            unit.frames.push_content(record.content, timestamp);
        }
        if !record.partition.is_empty() {
            self.positions.insert(record.partition, record.position);
        }
    }

    /// The units, each with its checkpoint.
    pub fn finish(mut self, max_payload: usize) -> Result<Vec<Unit<'a>>, ClusterError> {
        if let Some(bytes) = self.too_large {
            return Err(ClusterError::TooLarge {
                bytes,
                max: max_payload,
            });
        }
        self.close_last();
        Ok(self.units)
    }

    /// Gives the last unit its checkpoint: the positions of the batch so far.
    fn close_last(&mut self) {
        if let Some(unit) = self.units.last_mut() {
            unit.checkpoint.positions = (self.positions.iter())
                .map(|(p, pos)| (p.to_string(), pos.to_string()))
                .collect();
        }
    }
}

impl Cluster {
    /// Publishes `units` in order (see the module doc); returns once every one is stored.
    /// `run` tells this start of the task from earlier ones in the message ids.
    pub(super) async fn publish_units(
        &self,
        producer: &str,
        run: &str,
        units: Vec<Unit<'_>>,
        streams: &BTreeMap<&str, Arc<TopicStream>>,
    ) -> Result<(), ClusterError> {
        let mut units = units.into_iter().peekable();
        while let Some(first) = units.next() {
            let topic = first.topic;
            let mut same_topic = vec![first];
            while let Some(unit) = units.next_if(|unit| unit.topic == topic) {
                same_topic.push(unit);
            }
            let Some(stream) = streams.get(topic) else {
                continue;
            };
            let subject = Subject::from(stream.subject(producer));
            let messages: Vec<Prepared> = same_topic
                .into_iter()
                .map(|unit| {
                    let id = format!(
                        "{producer}/{run}/{}/{}",
                        unit.checkpoint.sequence, unit.checkpoint.unit
                    );
                    let (count, frames) = unit.frames.into_parts();
                    Prepared {
                        id,
                        count,
                        payload: Bytes::from(frames),
                        checkpoint: unit.checkpoint,
                    }
                })
                .collect();
            self.publish_to(stream, &subject, &messages).await?;
        }
        Ok(())
    }

    /// Publishes `messages` to one stream in order and waits for every ack; the ones that
    /// failed are published again (with the same id) until [`PUBLISH_RETRY_FOR`] passes.
    async fn publish_to(
        &self,
        stream: &TopicStream,
        subject: &Subject,
        messages: &[Prepared],
    ) -> Result<(), ClusterError> {
        let mut tail = stream.tail.lock().await;
        let mut todo: Vec<&Prepared> = messages.iter().collect();
        let started = Instant::now();
        loop {
            let known = match *tail {
                Some(known) => Ok(known),
                None => stream.read_tail().await,
            };
            let (failed, error) = match known {
                Ok(mut known) => {
                    let round = self.publish_round(subject, &mut known, &todo).await;
                    // Unless every message was stored where expected, the stream's end is no
                    // longer what this worker thinks: another publisher came first, an ack
                    // was lost or a message stored before was dropped as a duplicate.
                    *tail = round.as_expected.then_some(known);
                    let Some(error) = round.error else {
                        return Ok(());
                    };
                    let raced = error.kind() == PublishErrorKind::WrongLastSequence;
                    if raced && started.elapsed() < PUBLISH_RETRY_FOR {
                        // Another publisher came first: go again at once.
                        todo = round.failed;
                        continue;
                    }
                    (round.failed, NatsError::from(error))
                }
                // The servers are failing over: as for a lost ack, wait and try again.
                Err(error) => (todo, NatsError::from(error)),
            };
            if started.elapsed() >= PUBLISH_RETRY_FOR {
                return Err(ClusterError::Publish {
                    failed: failed.len(),
                    seconds: PUBLISH_RETRY_FOR.as_secs(),
                    source: error,
                });
            }
            tracing::warn!(
                "{} messages of records not stored yet in {} ({error}); publishing them again",
                failed.len(),
                stream.name
            );
            tokio::time::sleep(PUBLISH_RETRY_PAUSE).await;
            todo = failed;
        }
    }

    /// One round of [`Cluster::publish_to`]: each message expects to follow the one before,
    /// starting at `tail`, which is moved past the last one.
    async fn publish_round<'m>(
        &self,
        subject: &Subject,
        tail: &mut Tail,
        todo: &[&'m Prepared],
    ) -> Round<'m> {
        let mut failed = Vec::new();
        let mut error = None;
        let mut duplicates = false;
        let mut pending = FuturesOrdered::new();
        let mut expected = *tail;
        let mut settle =
            |(prepared, acked): (&'m Prepared, Result<PublishAck, PublishError>)| match acked {
                Ok(ack) => duplicates |= ack.duplicate,
                Err(e) => {
                    failed.push(prepared);
                    error = Some(e);
                }
            };
        for prepared in todo {
            while pending.len() >= PUBLISH_WINDOW {
                if let Some(done) = pending.next().await {
                    settle(done);
                }
            }
            let span = Span {
                offset: expected.next_offset,
                count: prepared.count,
            };
            let message = PublishMessage::build()
                .payload(prepared.payload.clone())
                .headers(message::headers(span, &prepared.checkpoint))
                .expected_last_sequence(expected.last_sequence)
                .message_id(&prepared.id);
            expected = Tail {
                last_sequence: expected.last_sequence + 1,
                next_offset: span.end(),
            };
            match self.js.send_publish(subject.clone(), message).await {
                Ok(ack) => pending.push_back(async move { (*prepared, ack.await) }),
                Err(e) => settle((prepared, Err(e))),
            }
        }
        while let Some(done) = pending.next().await {
            settle(done);
        }
        *tail = expected;
        Round {
            as_expected: error.is_none() && !duplicates,
            failed,
            error,
        }
    }
}

/// What one publish round did.
struct Round<'m> {
    /// The messages to publish again, in order.
    failed: Vec<&'m Prepared>,
    /// The last error, None when every message was stored.
    error: Option<PublishError>,
    /// Every message was stored as a new message where it expected: the tail is right.
    as_expected: bool,
}

/// A unit ready to publish (again, with the same id, when its ack fails).
struct Prepared {
    id: String,
    count: u32,
    payload: Bytes,
    checkpoint: Checkpoint,
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_connect_sdk::{BatchReader, Record};

    /// A batch of `(topic, partition, position, value)` records, framed.
    fn framed(records: &[(&str, &str, &str, &str)]) -> Vec<u8> {
        let mut writer = BatchWriter::new();
        for (topic, partition, position, value) in records {
            let record = Record {
                value: value.as_bytes(),
                topic,
                partition,
                position,
                ..Record::default()
            };
            writer.push(&record).expect("frame");
        }
        writer.into_parts().1
    }

    fn cut<'a>(frames: &'a [u8], max_payload: usize) -> Vec<Unit<'a>> {
        let mut units = Units::new(2, 9, max_payload);
        for record in BatchReader::new(frames) {
            let record = record.expect("record");
            units.push(record.topic, record, 1);
        }
        units.finish(max_payload).expect("units")
    }

    #[test]
    fn units_are_runs_of_one_topic_and_carry_the_positions_so_far() {
        let frames = framed(&[
            ("a", "f", "1", "x"),
            ("a", "g", "7", "x"),
            ("b", "f", "2", "x"),
            ("a", "f", "3", "x"),
        ]);
        let units = cut(&frames, 1 << 20);
        let topics: Vec<&str> = units.iter().map(|u| u.topic).collect();
        assert_eq!(topics, ["a", "b", "a"]);
        let counts: Vec<u32> = units.iter().map(|u| u.frames.count()).collect();
        assert_eq!(counts, [2, 1, 1]);
        let positions = |n: usize| {
            let p = &units[n].checkpoint.positions;
            (p.get("f").cloned(), p.get("g").cloned())
        };
        // Each unit claims what it and the units before it hold, never a later record.
        assert_eq!(positions(0), (Some("1".into()), Some("7".into())));
        assert_eq!(positions(1), (Some("2".into()), Some("7".into())));
        assert_eq!(positions(2), (Some("3".into()), Some("7".into())));
        let numbers: Vec<(u64, u64, u32)> = (units.iter())
            .map(|u| (u.checkpoint.epoch, u.checkpoint.sequence, u.checkpoint.unit))
            .collect();
        assert_eq!(numbers, [(2, 9, 0), (2, 9, 1), (2, 9, 2)]);
    }

    #[test]
    fn a_unit_is_cut_at_the_message_size_and_a_record_too_large_is_refused() {
        let value = "v".repeat(1000);
        let records: Vec<(&str, &str, &str, &str)> =
            (0..100).map(|_| ("a", "", "", value.as_str())).collect();
        let frames = framed(&records);
        // 64 KiB of headroom below a 80 KiB max_payload: 16 KiB per unit.
        let units = cut(&frames, 80 << 10);
        assert!(units.len() >= 6, "{} units", units.len());
        assert!(units.iter().all(|u| u.frames.byte_len() <= 16 << 10));
        let total: u32 = units.iter().map(|u| u.frames.count()).sum();
        assert_eq!(total, 100);

        let mut units = Units::new(0, 0, 65 << 10);
        for record in BatchReader::new(&frames) {
            units.push("a", record.expect("record"), 1);
        }
        assert!(matches!(
            units.finish(65 << 10),
            Err(ClusterError::TooLarge { max, .. }) if max == 65 << 10
        ));
    }
}
