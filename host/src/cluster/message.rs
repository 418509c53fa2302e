//! The layout of a topic stream's messages in cluster mode: one JetStream message carries
//! many records, and its headers say which records they are.
//!
//! - The payload is the records back to back in the topic-log form of the batch format
//!   (`wasm_connect_sdk::BatchWriter::push_content`: timestamp, key, value, headers, empty
//!   routing), exactly what a sink's batch holds, so a reader slices it without decoding.
//! - [`OFFSET`] is the logical offset of the first record and [`COUNT`] the number of
//!   records: a record's offset is `offset + index`, one number in every API, however the
//!   records were grouped into messages.
//! - [`BATCH`] (`<sequence>/<unit>`), [`EPOCH`] and [`POSITIONS`] make the message a
//!   checkpoint of the source task that published it: the positions its records (and the
//!   earlier units of the same batch) complete. A task resuming after a crash reads the last
//!   message it published on each topic and goes on after it, so nothing stored is polled
//!   and stored again, whatever batch boundaries the source draws the second time.

use std::collections::BTreeMap;

use async_nats::HeaderMap;

/// Logical offset of the message's first record.
pub const OFFSET: &str = "Wc-Offset";
/// Records in the message.
pub const COUNT: &str = "Wc-Count";
/// `<sequence>/<unit>`: the publishing task's batch number and this message's place in it.
pub const BATCH: &str = "Wc-Batch";
/// The source connector's offsets epoch when the message was published.
pub const EPOCH: &str = "Wc-Epoch";
/// JSON object, partition → position: what the batch completes up to this message.
pub const POSITIONS: &str = "Wc-Positions";

/// Where a message's records sit in the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub offset: u64,
    pub count: u32,
}

impl Span {
    /// The offset after the message's last record.
    pub fn end(&self) -> u64 {
        self.offset + u64::from(self.count)
    }
}

/// The source checkpoint a message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub epoch: u64,
    pub sequence: u64,
    pub unit: u32,
    pub positions: BTreeMap<String, String>,
}

/// The span of a message, or None when its headers do not hold one (a message not written
/// by this layout).
pub fn span(headers: Option<&HeaderMap>) -> Option<Span> {
    let headers = headers?;
    Some(Span {
        offset: number(headers, OFFSET)?,
        count: number(headers, COUNT)?,
    })
}

/// The checkpoint of a message, or None when it carries none.
pub fn checkpoint(headers: Option<&HeaderMap>) -> Option<Checkpoint> {
    let headers = headers?;
    let (sequence, unit) = headers.get(BATCH)?.as_str().split_once('/')?;
    let positions = match headers.get(POSITIONS) {
        Some(json) => serde_json::from_str(json.as_str()).ok()?,
        None => BTreeMap::new(),
    };
    Some(Checkpoint {
        epoch: number(headers, EPOCH)?,
        sequence: sequence.parse().ok()?,
        unit: unit.parse().ok()?,
        positions,
    })
}

/// The headers of a message holding `span`, published as `checkpoint`.
pub fn headers(span: Span, checkpoint: &Checkpoint) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(OFFSET, span.offset.to_string().as_str());
    headers.insert(COUNT, span.count.to_string().as_str());
    let batch = format!("{}/{}", checkpoint.sequence, checkpoint.unit);
    headers.insert(BATCH, batch.as_str());
    headers.insert(EPOCH, checkpoint.epoch.to_string().as_str());
    if !checkpoint.positions.is_empty() {
        // A map of strings always serializes.
        let json = serde_json::to_string(&checkpoint.positions).unwrap_or_default();
        headers.insert(POSITIONS, json.as_str());
    }
    headers
}

fn number<T: std::str::FromStr>(headers: &HeaderMap, name: &str) -> Option<T> {
    headers.get(name)?.as_str().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let checkpoint = Checkpoint {
            epoch: 3,
            sequence: 41,
            unit: 2,
            positions: [("a file".to_string(), "{\"line\":7}".to_string())].into(),
        };
        let span = Span {
            offset: 1_000_000,
            count: 9_000,
        };
        let headers = headers(span, &checkpoint);
        assert_eq!(super::span(Some(&headers)), Some(span));
        assert_eq!(super::checkpoint(Some(&headers)), Some(checkpoint));
        assert_eq!(span.end(), 1_009_000);
    }

    #[test]
    fn messages_of_another_layout_carry_neither() {
        let mut headers = HeaderMap::new();
        headers.insert(OFFSET, "x");
        headers.insert(BATCH, "7");
        assert_eq!(span(Some(&headers)), None);
        assert_eq!(checkpoint(Some(&headers)), None);
        assert_eq!(span(None), None);
    }
}
