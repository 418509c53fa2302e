//! A sink task's reader of one topic stream in cluster mode: a durable pull consumer read
//! in bounded `fetch` loops (a long-lived message stream can hang silently after a server
//! failover), whose messages of many records ([`super::message`]) are handed out a slice at
//! a time, starting at the exact record the sink committed last.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer;
use futures_util::stream::StreamExt;
use wasm_connect_sdk::{BatchReader, BatchWriter};

use super::message::{self, Span};
use super::publish::TopicStream;
use super::ClusterError;
use crate::storage::LogRead;
use crate::worker::plane::{PlaneError, TopicRead};

/// Longest wait of one fetch for records.
const FETCH_WAIT: Duration = Duration::from_millis(200);
/// A sink consumer nobody fetched from for this long is removed by the server.
const CONSUMER_IDLE: Duration = Duration::from_secs(3600);

/// One sink task's position in one topic stream.
pub struct TopicReader {
    stream: Arc<TopicStream>,
    /// The durable consumer's name.
    name: String,
    /// None after an error: the next read recreates it at `next_offset`.
    consumer: Option<consumer::PullConsumer>,
    /// The offset of the next record to hand out.
    next_offset: u64,
    /// Fetched messages not yet handed out whole, oldest first.
    fetched: VecDeque<Fetched>,
}

/// A fetched message: its stream sequence, where its records sit and its payload.
struct Fetched {
    sequence: u64,
    span: Span,
    payload: bytes::Bytes,
}

impl TopicReader {
    pub fn new(stream: Arc<TopicStream>, name: String, next_offset: u64) -> Self {
        TopicReader {
            stream,
            name,
            consumer: None,
            next_offset,
            fetched: VecDeque::new(),
        }
    }

    /// (Re)creates the consumer so it delivers from the message holding `next_offset`:
    /// records delivered but never received (a fetch lost in a failover) come again.
    async fn reset(&mut self) -> Result<consumer::PullConsumer, ClusterError> {
        self.fetched.clear();
        let _ = self.stream.stream.delete_consumer(&self.name).await;
        let deliver_policy = match self.first_sequence().await? {
            1 => consumer::DeliverPolicy::All,
            start_sequence => consumer::DeliverPolicy::ByStartSequence { start_sequence },
        };
        let config = consumer::pull::Config {
            durable_name: Some(self.name.clone()),
            deliver_policy,
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: CONSUMER_IDLE,
            ..Default::default()
        };
        let consumer = self.stream.stream.create_consumer(config).await;
        consumer.map_err(|e| ClusterError::Consumer {
            name: self.name.clone(),
            source: e.into(),
        })
    }

    /// The stream sequence of the message holding `next_offset` (the next sequence when no
    /// message holds it yet): a binary search over the messages' first offsets.
    async fn first_sequence(&self) -> Result<u64, ClusterError> {
        let Some((last, last_span)) = self.stream.last().await? else {
            return Ok(1);
        };
        if self.next_offset >= last_span.end() {
            return Ok(last + 1);
        }
        let info = self.stream.stream.get_info().await;
        let info = info.map_err(|e| ClusterError::Read {
            stream: self.stream.name.clone(),
            source: e.into(),
        })?;
        let (mut low, mut high) = (info.state.first_sequence.max(1), last);
        while low < high {
            let middle = low + (high - low).div_ceil(2);
            if self.stream.span_at(middle).await?.offset <= self.next_offset {
                low = middle;
            } else {
                high = middle - 1;
            }
        }
        Ok(low)
    }

    /// The next records, up to the limits, waiting up to [`FETCH_WAIT`] for the first one.
    /// An error leaves the reader to be reset at the next read.
    async fn read(&mut self, max_records: u32, max_bytes: usize) -> Result<LogRead, ClusterError> {
        let consumer = match self.consumer.take() {
            Some(consumer) => consumer,
            None => self.reset().await?,
        };
        if self.fetched.is_empty() {
            let fetched = match self
                .fetch(&consumer, max_records, Some(max_bytes), false)
                .await
            {
                // Refused before any message: the next message alone may be larger than the
                // byte budget, so it comes alone (any other cause fails this fetch too).
                Err(ClusterError::FetchRefused { .. }) => {
                    self.fetch(&consumer, 1, None, false).await
                }
                other => other,
            };
            if fetched? == 0 {
                // Nothing there yet: wait for the first message only, and take what follows
                // it at the next read (a request for more would wait until it filled up).
                self.fetch(&consumer, 1, None, true).await?;
            }
        }
        let read = self.slice(max_records, max_bytes)?;
        self.consumer = Some(consumer);
        Ok(read)
    }

    /// One pull request for up to `max_messages` messages and (when set) `max_bytes` bytes,
    /// of what is there now or (`wait`) of what arrives within [`FETCH_WAIT`]; appends them
    /// to [`TopicReader::fetched`] after checking that they follow on, and returns how many.
    async fn fetch(
        &mut self,
        consumer: &consumer::PullConsumer,
        max_messages: u32,
        max_bytes: Option<usize>,
        wait: bool,
    ) -> Result<usize, ClusterError> {
        let max_messages = max_messages.max(1) as usize;
        let max_bytes = max_bytes.map_or(0, |bytes| bytes.max(1));
        // Both requests expire: the client then also gives up on a request the servers lost
        // in a failover (without it, a fetch that is never answered waits for ever).
        let messages = if wait {
            let request = consumer.batch().max_messages(max_messages);
            request
                .max_bytes(max_bytes)
                .expires(FETCH_WAIT)
                .messages()
                .await
        } else {
            let request = consumer.fetch().max_messages(max_messages);
            request
                .max_bytes(max_bytes)
                .expires(FETCH_WAIT)
                .messages()
                .await
        };
        let mut messages = messages.map_err(|e| ClusterError::Fetch { source: e.into() })?;
        let mut received = 0;
        while let Some(message) = messages.next().await {
            let message = match message {
                Ok(message) => message,
                // The server ends a request at its byte budget with an error status (409);
                // any error after some messages still leaves those whole and in order.
                Err(_) if received > 0 => break,
                Err(source) => return Err(ClusterError::FetchRefused { source }),
            };
            let sequence = message
                .info()
                .map_err(|source| ClusterError::Fetch { source })?
                .stream_sequence;
            let span =
                message::span(message.headers.as_ref()).ok_or_else(|| ClusterError::Layout {
                    stream: self.stream.name.clone(),
                    sequence,
                })?;
            // The first message after a reset may begin before the next record (or end
            // before it, when the offset was set past the end); every later one must begin
            // where the one before ended.
            let follows = match self.fetched.back() {
                Some(before) => sequence == before.sequence + 1 && span.offset == before.span.end(),
                None if span.end() <= self.next_offset => continue,
                None => span.offset <= self.next_offset,
            };
            if !follows {
                self.consumer = None;
                return Err(ClusterError::Skipped {
                    from: self.next_offset,
                    to: span.offset,
                });
            }
            self.fetched.push_back(Fetched {
                sequence,
                span,
                payload: message.payload.clone(),
            });
            received += 1;
        }
        Ok(received)
    }

    /// Hands out up to the limits from the fetched messages, at least one record when there
    /// is one; keeps the rest for the next read.
    fn slice(&mut self, max_records: u32, max_bytes: usize) -> Result<LogRead, ClusterError> {
        // Moved on only when the whole read succeeds: after an error nothing was handed out.
        let mut next_offset = self.next_offset;
        let mut frames = BatchWriter::new();
        while let Some(message) = self.fetched.front() {
            let corrupt = |reason: String| ClusterError::Corrupt {
                stream: self.stream.name.clone(),
                sequence: message.sequence,
                reason,
            };
            let skip = (next_offset - message.span.offset) as usize;
            let mut records = BatchReader::new(&message.payload).skip(skip);
            let mut whole = true;
            for _ in skip..message.span.count as usize {
                let record = match records.next() {
                    Some(record) => record.map_err(|e| corrupt(e.to_string()))?,
                    None => return Err(corrupt("fewer records than its Wc-Count".into())),
                };
                let frame = record.frame;
                let full = frames.count() >= max_records
                    || (!frames.is_empty() && frames.byte_len() + frame.len() > max_bytes);
                if full {
                    whole = false;
                    break;
                }
                frames.push_frame(frame);
                next_offset += 1;
            }
            if !whole {
                break;
            }
            if records.next().is_some() {
                return Err(corrupt("more records than its Wc-Count".into()));
            }
            self.fetched.pop_front();
        }
        let (count, frames) = frames.into_parts();
        let first_offset = std::mem::replace(&mut self.next_offset, next_offset);
        Ok(LogRead {
            first_offset,
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
        // The reader knows where it stands.
        Ok(TopicReader::read(self, max_records, max_bytes).await?)
    }

    /// A read left records behind when it filled up or messages wait unread.
    fn caught_up(&self, read: &LogRead, max_records: u32) -> bool {
        read.count < max_records && self.fetched.is_empty()
    }

    /// A fetch waits for records by itself.
    fn appended(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}
