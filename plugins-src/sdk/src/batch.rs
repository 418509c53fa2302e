//! The record-batch wire format: records back to back in one buffer.
//!
//! The layout is specified in `wit/connector.wit` (package documentation). Both sides use
//! this module: connectors write batches with [`BatchWriter`], the host reads them with
//! [`BatchReader`], which treats the buffer as untrusted and never panics on it.

use std::fmt;

/// Key length that marks "no key".
const NO_KEY: u32 = u32::MAX;
/// Value length that marks a null value (a tombstone). Components built before it existed
/// never write it: no value can be 4 GiB long in a 32-bit guest.
const NULL_VALUE: u32 = u32::MAX;
/// Bytes of the three trailing u16 length fields (topic, partition, position).
const ROUTING_EMPTY: [u8; 6] = [0; 6];

/// One record to write: everything borrowed, nothing copied until it is framed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Record<'a> {
    /// Milliseconds since the Unix epoch; 0 lets the host stamp it.
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    /// The value; ignored when `tombstone` is set.
    pub value: &'a [u8],
    /// The value is null: Kafka's tombstone, which tells a sink to delete the key.
    pub tombstone: bool,
    pub headers: &'a [(&'a str, &'a [u8])],
    /// Destination topic; empty means the task's default topic.
    pub topic: &'a str,
    /// Source partition (e.g. the file name); may be empty.
    pub partition: &'a str,
    /// Source position within the partition, valid once this record is stored.
    pub position: &'a str,
}

/// Why a buffer is not a valid batch, or a record cannot be framed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The buffer ends inside record `index`.
    Truncated { index: u32 },
    /// Record `index` declares a body that its fields do not fill exactly.
    LengthMismatch { index: u32 },
    /// A name field of record `index` is not UTF-8.
    NotUtf8 { index: u32, field: &'static str },
    /// The batch holds a different number of records than it declares.
    CountMismatch { declared: u32, found: u32 },
    /// A field is too long for its length prefix.
    FieldTooLong { field: &'static str, len: usize },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Truncated { index } => {
                write!(f, "record {index} is cut off by the end of the batch")
            }
            FrameError::LengthMismatch { index } => write!(
                f,
                "record {index}: declared length does not match its fields"
            ),
            FrameError::NotUtf8 { index, field } => {
                write!(f, "record {index}: {field} is not valid UTF-8")
            }
            FrameError::CountMismatch { declared, found } => {
                write!(f, "batch declares {declared} records but holds {found}")
            }
            FrameError::FieldTooLong { field, len } => {
                write!(f, "{field} of {len} bytes is too long for the frame format")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Builds a batch buffer, one record at a time.
#[derive(Debug, Default, Clone)]
pub struct BatchWriter {
    frames: Vec<u8>,
    count: u32,
}

impl BatchWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// A writer whose buffer is pre-sized for about `bytes` of frames.
    pub fn with_capacity(bytes: usize) -> Self {
        BatchWriter {
            frames: Vec::with_capacity(bytes),
            count: 0,
        }
    }

    /// A writer into `buffer`, emptied first: a buffer kept from batch to batch spares the
    /// allocation (and page faults) of a fresh one.
    pub fn reusing(mut buffer: Vec<u8>) -> Self {
        buffer.clear();
        BatchWriter {
            frames: buffer,
            count: 0,
        }
    }

    /// Appends one record.
    pub fn push(&mut self, record: &Record<'_>) -> Result<(), FrameError> {
        let key_len = record.key.map_or(0, <[u8]>::len);
        let value: &[u8] = if record.tombstone { &[] } else { record.value };
        let mut body = 8 + 4 + key_len + 4 + value.len() + 2;
        for (name, value) in record.headers {
            u16_len("header name", name.len())?;
            body += 2 + name.len() + 4 + value.len();
        }
        let header_count = u16_len("header count", record.headers.len())?;
        let routing = [record.topic, record.partition, record.position];
        let body_len = body_len(body + routing_len(routing)?)?;
        self.frames.reserve(4 + body_len as usize);
        self.frames.extend_from_slice(&body_len.to_le_bytes());
        self.frames
            .extend_from_slice(&record.timestamp.to_le_bytes());
        match record.key {
            Some(key) => self.put_u32_bytes(key),
            None => self.frames.extend_from_slice(&NO_KEY.to_le_bytes()),
        }
        if record.tombstone {
            self.frames.extend_from_slice(&NULL_VALUE.to_le_bytes());
        } else {
            self.put_u32_bytes(value);
        }
        self.frames.extend_from_slice(&header_count.to_le_bytes());
        self.put_headers(record.headers);
        self.put_routing(routing);
        self.count += 1;
        Ok(())
    }

    /// Appends `record` (as [`BatchReader`] read it) with its topic replaced by `topic`: its
    /// [`RecordRef::content`] is copied as framed, with no per-record allocation (what a
    /// router writes).
    pub fn push_routed(&mut self, record: &RecordRef<'_>, topic: &str) -> Result<(), FrameError> {
        self.push_framed(record, &[], topic)
    }

    /// Appends `record` (as [`BatchReader`] read it) with `headers` added after its own: its
    /// [`RecordRef::content`] is copied as framed, with no per-record allocation.
    pub fn push_with_headers(
        &mut self,
        record: &RecordRef<'_>,
        headers: &[(&str, &[u8])],
    ) -> Result<(), FrameError> {
        self.push_framed(record, headers, record.topic)
    }

    /// `record`'s content with `added` headers after its own, to `topic`. Every length is
    /// checked before anything is written, so an error leaves the writer as it was.
    fn push_framed(
        &mut self,
        record: &RecordRef<'_>,
        added: &[(&str, &[u8])],
        topic: &str,
    ) -> Result<(), FrameError> {
        let content = record.content;
        let mut body = content.len();
        for (name, value) in added {
            u16_len("header name", name.len())?;
            body += 2 + name.len() + 4 + value.len();
        }
        let routing = [topic, record.partition, record.position];
        let body_len = body_len(body + routing_len(routing)?)?;
        // The header count sits right before the headers, at the end of the content.
        let count_at = content
            .len()
            .checked_sub(record.header_bytes.len() + 2)
            .ok_or(FrameError::LengthMismatch { index: self.count })?;
        let header_count = usize::from(record.header_count) + added.len();
        let header_count = u16_len("header count", header_count)?;
        self.frames.reserve(4 + body_len as usize);
        self.frames.extend_from_slice(&body_len.to_le_bytes());
        let count_at = self.frames.len() + count_at;
        self.frames.extend_from_slice(content);
        if !added.is_empty() {
            self.frames[count_at..count_at + 2].copy_from_slice(&header_count.to_le_bytes());
            self.put_headers(added);
        }
        self.put_routing(routing);
        self.count += 1;
        Ok(())
    }

    /// Appends the content part of a record read elsewhere (see [`RecordRef::content`]) with
    /// its timestamp replaced by `timestamp` and empty routing fields: the form records take
    /// in topic logs and sink batches.
    pub fn push_content(&mut self, content: &[u8], timestamp: i64) {
        let body = (content.len() + ROUTING_EMPTY.len()) as u32;
        self.frames.extend_from_slice(&body.to_le_bytes());
        self.frames.extend_from_slice(&timestamp.to_le_bytes());
        self.frames
            .extend_from_slice(content.get(8..).unwrap_or_default());
        self.frames.extend_from_slice(&ROUTING_EMPTY);
        self.count += 1;
    }

    /// Where the writer stands, for [`BatchWriter::rollback`].
    pub fn mark(&self) -> (u32, usize) {
        (self.count, self.frames.len())
    }

    /// Takes back every record written since `mark`.
    pub fn rollback(&mut self, (count, len): (u32, usize)) {
        self.count = count.min(self.count);
        self.frames.truncate(len);
    }

    /// Appends a whole record as read elsewhere ([`RecordRef::frame`]), unchanged.
    pub fn push_frame(&mut self, frame: &[u8]) {
        self.frames.extend_from_slice(frame);
        self.count += 1;
    }

    /// Records written so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Bytes of frames written so far.
    pub fn byte_len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Empties the writer and keeps its buffer.
    pub fn clear(&mut self) {
        self.frames.clear();
        self.count = 0;
    }

    /// The record count and the frames.
    pub fn into_parts(self) -> (u32, Vec<u8>) {
        (self.count, self.frames)
    }

    /// The frames written so far.
    pub fn frames(&self) -> &[u8] {
        &self.frames
    }

    fn put_u32_bytes(&mut self, bytes: &[u8]) {
        self.frames
            .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        self.frames.extend_from_slice(bytes);
    }

    /// Headers whose name lengths [`u16_len`] checked.
    fn put_headers(&mut self, headers: &[(&str, &[u8])]) {
        for (name, value) in headers {
            self.put_u16_bytes(name.as_bytes());
            self.put_u32_bytes(value);
        }
    }

    /// Topic, partition and position, checked by [`routing_len`].
    fn put_routing(&mut self, routing: [&str; 3]) {
        for text in routing {
            self.put_u16_bytes(text.as_bytes());
        }
    }

    /// A field whose length [`u16_len`] checked.
    fn put_u16_bytes(&mut self, bytes: &[u8]) {
        self.frames
            .extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        self.frames.extend_from_slice(bytes);
    }
}

fn u16_len(field: &'static str, len: usize) -> Result<u16, FrameError> {
    u16::try_from(len).map_err(|_| FrameError::FieldTooLong { field, len })
}

/// The framed length of topic, partition and position, each checked.
fn routing_len(routing: [&str; 3]) -> Result<usize, FrameError> {
    let mut len = 0;
    for (field, text) in ["topic", "partition", "position"].into_iter().zip(routing) {
        len += 2 + usize::from(u16_len(field, text.len())?);
    }
    Ok(len)
}

/// A record's body length as framed.
fn body_len(body: usize) -> Result<u32, FrameError> {
    u32::try_from(body).map_err(|_| FrameError::FieldTooLong {
        field: "record",
        len: body,
    })
}

/// One record inside a batch buffer, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    /// The value; empty when `tombstone` is set.
    pub value: &'a [u8],
    /// The value is null (a tombstone), not merely empty.
    pub tombstone: bool,
    /// The headers, still framed; iterate them with [`RecordRef::headers`].
    header_bytes: &'a [u8],
    header_count: u16,
    pub topic: &'a str,
    pub partition: &'a str,
    pub position: &'a str,
    /// Timestamp, key, value and headers as framed: what a topic log stores.
    pub content: &'a [u8],
    /// The whole frame, length prefix included: [`BatchWriter::push_frame`] copies it.
    pub frame: &'a [u8],
}

impl<'a> RecordRef<'a> {
    /// This record as a [`Record`] to write, with `headers` (e.g. `headers().collect()`,
    /// changed as needed); change other fields with struct update syntax.
    pub fn to_record<'b>(&self, headers: &'b [(&'b str, &'b [u8])]) -> Record<'b>
    where
        'a: 'b,
    {
        Record {
            timestamp: self.timestamp,
            key: self.key,
            value: self.value,
            tombstone: self.tombstone,
            headers,
            topic: self.topic,
            partition: self.partition,
            position: self.position,
        }
    }

    /// The record's headers as (name, value) pairs.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let mut cursor = Cursor {
            buf: self.header_bytes,
            pos: 0,
            index: 0,
        };
        (0..self.header_count).map_while(move |_| {
            let name = cursor.u16_str("header name").ok()?;
            let value = cursor.u32_bytes().ok()?;
            Some((name, value))
        })
    }
}

/// Reads records from an untrusted batch buffer.
pub struct BatchReader<'a> {
    cursor: Cursor<'a>,
}

impl<'a> BatchReader<'a> {
    pub fn new(frames: &'a [u8]) -> Self {
        BatchReader {
            cursor: Cursor {
                buf: frames,
                pos: 0,
                index: 0,
            },
        }
    }

    /// Reads every record and checks that there are exactly `declared` of them.
    pub fn read_all(frames: &'a [u8], declared: u32) -> Result<Vec<RecordRef<'a>>, FrameError> {
        let mut records = Vec::with_capacity(declared.min(1 << 16) as usize);
        for record in BatchReader::new(frames) {
            records.push(record?);
        }
        let found = records.len() as u32;
        if found != declared {
            return Err(FrameError::CountMismatch { declared, found });
        }
        Ok(records)
    }

    /// Byte offset of the next record in the buffer.
    pub fn position(&self) -> usize {
        self.cursor.pos
    }

    fn read_record(&mut self) -> Result<RecordRef<'a>, FrameError> {
        let index = self.cursor.index;
        let start = self.cursor.pos;
        let body_len = self.cursor.u32()? as usize;
        let body = self.cursor.take(body_len)?;
        let mut c = Cursor {
            buf: body,
            pos: 0,
            index,
        };
        let timestamp = i64::from_le_bytes(c.array::<8>()?);
        let key = match c.u32()? {
            NO_KEY => None,
            len => Some(c.take(len as usize)?),
        };
        let (value, tombstone) = match c.u32()? {
            NULL_VALUE => (&body[..0], true),
            len => (c.take(len as usize)?, false),
        };
        let header_count = u16::from_le_bytes(c.array::<2>()?);
        let headers_start = c.pos;
        for _ in 0..header_count {
            c.u16_str("header name")?;
            c.u32_bytes()?;
        }
        let content = &body[..c.pos];
        let header_bytes = &body[headers_start..c.pos];
        let topic = c.u16_str("topic")?;
        let partition = c.u16_str("partition")?;
        let position = c.u16_str("position")?;
        if c.pos != body.len() {
            return Err(FrameError::LengthMismatch { index });
        }
        self.cursor.index += 1;
        let frame = &self.cursor.buf[start..self.cursor.pos];
        Ok(RecordRef {
            timestamp,
            key,
            value,
            tombstone,
            header_bytes,
            header_count,
            topic,
            partition,
            position,
            content,
            frame,
        })
    }
}

impl<'a> Iterator for BatchReader<'a> {
    type Item = Result<RecordRef<'a>, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.cursor.pos >= self.cursor.buf.len() {
            return None;
        }
        let result = self.read_record();
        if result.is_err() {
            // Stop after the first error: nothing past a bad frame can be trusted.
            self.cursor.pos = self.cursor.buf.len();
        }
        Some(result)
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    index: u32,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], FrameError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|end| *end <= self.buf.len());
        let end = end.ok_or(FrameError::Truncated { index: self.index })?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_le_bytes(self.array::<4>()?))
    }

    fn u32_bytes(&mut self) -> Result<&'a [u8], FrameError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn u16_str(&mut self, field: &'static str) -> Result<&'a str, FrameError> {
        let len = u16::from_le_bytes(self.array::<2>()?) as usize;
        if len == 0 {
            return Ok(""); // the common case in topic logs and sink batches
        }
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|_| FrameError::NotUtf8 {
            index: self.index,
            field,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_with_every_field() {
        let mut writer = BatchWriter::new();
        let headers: [(&str, &[u8]); 2] = [("a", b"1"), ("bé", b"")];
        let first = Record {
            timestamp: -5,
            key: Some(b"k"),
            value: "välue".as_bytes(),
            tombstone: false,
            headers: &headers,
            topic: "t",
            partition: "/f.txt",
            position: "42",
        };
        writer.push(&first).unwrap();
        writer
            .push(&Record {
                value: b"",
                ..Record::default()
            })
            .unwrap();
        let (count, frames) = writer.into_parts();
        let records = BatchReader::read_all(&frames, count).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].timestamp, -5);
        assert_eq!(records[0].key, Some(&b"k"[..]));
        assert_eq!(records[0].value, "välue".as_bytes());
        assert_eq!(records[0].headers().collect::<Vec<_>>(), headers.to_vec());
        assert_eq!(
            (records[0].topic, records[0].partition, records[0].position),
            ("t", "/f.txt", "42")
        );
        assert_eq!(records[1].key, None);
        assert!(records[1].value.is_empty());
    }

    #[test]
    fn a_null_value_is_not_an_empty_value_and_survives_reframing() {
        let mut writer = BatchWriter::new();
        for tombstone in [true, false] {
            writer
                .push(&Record {
                    key: Some(b"k"),
                    value: b"",
                    tombstone,
                    ..Record::default()
                })
                .unwrap();
        }
        let (count, frames) = writer.into_parts();
        let records = BatchReader::read_all(&frames, count).unwrap();
        assert_eq!((records[0].tombstone, records[0].value), (true, &b""[..]));
        assert_eq!((records[1].tombstone, records[1].value), (false, &b""[..]));
        let mut log = BatchWriter::new();
        log.push_content(records[0].content, 5);
        let (_, log_frames) = log.into_parts();
        let stored = BatchReader::read_all(&log_frames, 1).unwrap()[0];
        assert!(stored.tombstone);
        assert_eq!(stored.key, Some(&b"k"[..]));
    }

    #[test]
    fn content_reframes_without_routing() {
        let mut writer = BatchWriter::new();
        let record = Record {
            key: None,
            value: b"v",
            topic: "t",
            partition: "p",
            position: "9",
            ..Record::default()
        };
        writer.push(&record).unwrap();
        let (_, frames) = writer.into_parts();
        let original = BatchReader::read_all(&frames, 1).unwrap()[0];
        let mut log = BatchWriter::new();
        log.push_content(original.content, 77);
        let (_, log_frames) = log.into_parts();
        let stored = BatchReader::read_all(&log_frames, 1).unwrap()[0];
        assert_eq!(
            (
                stored.timestamp,
                stored.value,
                stored.topic,
                stored.position
            ),
            (77, &b"v"[..], "", "")
        );
    }

    /// The fields routing and added headers leave as they were.
    type Kept<'a> = (i64, Option<&'a [u8]>, &'a [u8], bool, &'a str, &'a str);

    fn kept(r: RecordRef<'_>) -> Kept<'_> {
        (
            r.timestamp,
            r.key,
            r.value,
            r.tombstone,
            r.partition,
            r.position,
        )
    }

    #[test]
    fn routed_and_added_headers_copy_the_rest_as_framed() {
        let mut writer = BatchWriter::new();
        let headers: [(&str, &[u8]); 1] = [("a", b"1")];
        for tombstone in [false, true] {
            writer
                .push(&Record {
                    timestamp: 7,
                    key: Some(b"k"),
                    value: b"v",
                    tombstone,
                    headers: &headers,
                    topic: "t",
                    partition: "p",
                    position: "9",
                })
                .unwrap();
        }
        let (count, frames) = writer.into_parts();
        let originals = BatchReader::read_all(&frames, count).unwrap();
        let mut out = BatchWriter::new();
        for original in &originals {
            out.push_routed(original, "routed").unwrap();
            out.push_with_headers(original, &[("b", b"2"), ("c", b"")])
                .unwrap();
        }
        let (count, frames) = out.into_parts();
        let written = BatchReader::read_all(&frames, count).unwrap();
        for (i, original) in originals.iter().enumerate() {
            let (routed, added) = (written[2 * i], written[2 * i + 1]);
            assert_eq!(kept(routed), kept(*original));
            assert_eq!(kept(added), kept(*original));
            assert_eq!(routed.topic, "routed");
            assert_eq!(routed.headers().collect::<Vec<_>>(), headers.to_vec());
            assert_eq!(added.topic, "t");
            let all: Vec<(&str, &[u8])> = vec![("a", b"1"), ("b", b"2"), ("c", b"")];
            assert_eq!(added.headers().collect::<Vec<_>>(), all);
        }
    }

    #[test]
    fn a_field_too_long_to_route_leaves_the_writer_unchanged() {
        let mut writer = BatchWriter::new();
        writer.push(&Record::default()).unwrap();
        let (count, frames) = writer.into_parts();
        let record = BatchReader::read_all(&frames, count).unwrap()[0];
        let mut out = BatchWriter::new();
        let long = "x".repeat(70_000);
        assert!(out.push_routed(&record, &long).is_err());
        assert!(out.push_with_headers(&record, &[(&long, b"")]).is_err());
        assert_eq!((out.count(), out.byte_len()), (0, 0));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let mut writer = BatchWriter::new();
        let headers: [(&str, &[u8]); 1] = [("h", b"x")];
        writer
            .push(&Record {
                key: Some(b"key"),
                value: b"value",
                headers: &headers,
                topic: "t",
                ..Record::default()
            })
            .unwrap();
        let (_, frames) = writer.into_parts();
        for cut in 0..frames.len() {
            let result = BatchReader::read_all(&frames[..cut], 1);
            assert!(result.is_err(), "cut at {cut} was accepted");
        }
    }

    #[test]
    fn wrong_count_and_bad_utf8_are_reported() {
        let mut writer = BatchWriter::new();
        writer
            .push(&Record {
                value: b"v",
                topic: "ab",
                ..Record::default()
            })
            .unwrap();
        let (_, mut frames) = writer.into_parts();
        assert_eq!(
            BatchReader::read_all(&frames, 2),
            Err(FrameError::CountMismatch {
                declared: 2,
                found: 1
            })
        );
        let topic_at = frames.len() - 4 - 2; // "ab", then two empty u16-prefixed fields
        frames[topic_at] = 0xff;
        assert_eq!(
            BatchReader::read_all(&frames, 1),
            Err(FrameError::NotUtf8 {
                index: 0,
                field: "topic"
            })
        );
    }
}
