//! Transforms of where a record goes and what it is: RegexRouter, TimestampRouter,
//! TimestampConverter and Filter.

use regex::Regex;
use serde_json::Value;
use wasm_connect_sdk::{BatchWriter, Config, RecordRef, TaskError, TransformTask};

use crate::time::Format;
use crate::{opt, plugin, req, required, Data, MapPart, PartTask};

/// Writes `record` to `topic`.
fn route(record: &RecordRef<'_>, topic: &str, out: &mut BatchWriter) -> Result<(), String> {
    out.push_routed(record, topic).map_err(|e| e.to_string())
}

/// RegexRouter: a topic that matches `regex` as a whole (Java's `matches()`) becomes
/// `replacement`, where `$1` names a group.
pub struct RegexRouterTask {
    regex: Regex,
    replacement: String,
    /// The last topic seen and what it routes to (`None`: it does not match): the records
    /// of a batch mostly share a topic, and a regex with groups costs microseconds per call.
    last: Option<(String, Option<String>)>,
}

/// Java's replacement syntax in Rust's: `$1` → `${1}`, `\$` → `$$`.
pub fn java_replacement(java: &str) -> String {
    let mut out = String::new();
    let mut chars = java.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('$') => out.push_str("$$"),
                Some(other) => out.push(other),
                None => {}
            },
            '$' => {
                let mut digits = String::new();
                while let Some(d) = chars.next_if(char::is_ascii_digit) {
                    digits.push(d);
                }
                out.push_str(&format!("${{{digits}}}"));
            }
            other => out.push(other),
        }
    }
    out
}

impl TransformTask for RegexRouterTask {
    fn start(config: &Config, _host: &dyn wasm_connect_sdk::Host) -> Result<Self, TaskError> {
        let start = || -> Result<Self, String> {
            let pattern = required(config, "regex")?;
            let regex = Regex::new(&format!("^(?:{pattern})$"))
                .map_err(|e| format!("regex: not a valid regex: {e}"))?;
            let replacement = java_replacement(required(config, "replacement")?);
            Ok(RegexRouterTask {
                regex,
                replacement,
                last: None,
            })
        };
        start().map_err(TaskError::Fatal)
    }

    fn apply(&mut self, record: &RecordRef<'_>, out: &mut BatchWriter) -> Result<(), String> {
        let routed = match &self.last {
            Some((topic, routed)) if topic == record.topic => routed,
            _ => {
                let routed = self
                    .regex
                    .is_match(record.topic)
                    .then(|| self.regex.replace(record.topic, self.replacement.as_str()))
                    .map(|topic| topic.into_owned());
                &self.last.insert((record.topic.to_string(), routed)).1
            }
        };
        match routed {
            Some(topic) => route(record, topic, out),
            None => {
                out.push_frame(record.frame);
                Ok(())
            }
        }
    }
}

plugin!(
    RegexRouter,
    "regex-router",
    RegexRouterTask,
    "Renames topics that match a regex (as a whole) to the replacement ($1 for a group).",
    ["org.apache.kafka.connect.transforms.RegexRouter"],
    &[
        req("regex", "The regex a topic must match as a whole."),
        req("replacement", "The new topic; $1… name groups."),
    ]
);

/// TimestampRouter: the topic becomes `topic.format` with `${topic}` and `${timestamp}`
/// (the record's timestamp in `timestamp.format`).
pub struct TimestampRouterTask {
    topic_format: String,
    timestamp_format: Format,
}

impl TransformTask for TimestampRouterTask {
    fn start(config: &Config, _host: &dyn wasm_connect_sdk::Host) -> Result<Self, TaskError> {
        let format = config.get("timestamp.format").unwrap_or("yyyyMMdd");
        Ok(TimestampRouterTask {
            topic_format: config
                .get("topic.format")
                .unwrap_or("${topic}-${timestamp}")
                .to_string(),
            timestamp_format: Format::parse(format)
                .map_err(|e| TaskError::Fatal(format!("timestamp.format: {e}")))?,
        })
    }

    fn apply(&mut self, record: &RecordRef<'_>, out: &mut BatchWriter) -> Result<(), String> {
        let topic = self.topic_format.replace("${topic}", record.topic).replace(
            "${timestamp}",
            &self.timestamp_format.format(record.timestamp),
        );
        route(record, &topic, out)
    }
}

plugin!(
    TimestampRouter,
    "timestamp-router",
    TimestampRouterTask,
    "Routes records to a topic named after the topic and the record's timestamp.",
    ["org.apache.kafka.connect.transforms.TimestampRouter"],
    &[
        opt(
            "topic.format",
            "The topic; ${topic} and ${timestamp} are replaced."
        ),
        opt(
            "timestamp.format",
            "The timestamp's format (default yyyyMMdd)."
        ),
    ]
);

/// What TimestampConverter converts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// Text in `format`.
    Text,
    /// Milliseconds (or `unix.precision`) since the epoch.
    Unix,
    /// Milliseconds since the epoch (Kafka's Timestamp/Date/Time, schemaless).
    Millis,
}

/// TimestampConverter: converts a timestamp (the whole key or value, or `field`) between
/// text in `format` and numbers since the epoch.
pub struct TimestampConvert {
    field: Option<String>,
    target: Target,
    format: Option<Format>,
    /// Units of a unix timestamp per millisecond, as a divisor or multiplier.
    unit_per_ms: (i64, i64),
}

impl TimestampConvert {
    fn to_millis(&self, value: &Value) -> Result<i64, String> {
        match value {
            Value::Number(n) => {
                let n = n.as_i64().ok_or("the timestamp is not an integer")?;
                let (mul, div) = self.unit_per_ms;
                Ok(n * div / mul)
            }
            Value::String(text) => match &self.format {
                Some(f) => f.parse_text(text),
                None => Err("a text timestamp needs `format`".into()),
            },
            _ => Err("the timestamp is neither a number nor text".into()),
        }
    }

    fn convert(&self, value: &Value) -> Result<Value, String> {
        let millis = self.to_millis(value)?;
        Ok(match self.target {
            Target::Text => match &self.format {
                Some(f) => Value::String(f.format(millis)),
                None => return Err("target.type string needs `format`".into()),
            },
            Target::Unix => {
                let (mul, div) = self.unit_per_ms;
                Value::from(millis * mul / div)
            }
            Target::Millis => Value::from(millis),
        })
    }
}

impl MapPart for TimestampConvert {
    fn configure(config: &Config) -> Result<Self, String> {
        let target = match required(config, "target.type")? {
            "string" => Target::Text,
            "unix" => Target::Unix,
            "Timestamp" | "Date" | "Time" => Target::Millis,
            other => {
                return Err(format!(
                    "target.type: {other:?} is not string, unix, Date, Time or Timestamp"
                ))
            }
        };
        let unit_per_ms = match config.get("unix.precision").unwrap_or("milliseconds") {
            "seconds" => (1, 1000),
            "milliseconds" => (1, 1),
            "microseconds" => (1000, 1),
            "nanoseconds" => (1_000_000, 1),
            other => return Err(format!("unix.precision: {other:?} is not a precision")),
        };
        let format = match config.get("format").filter(|f| !f.is_empty()) {
            Some(f) => Some(Format::parse(f).map_err(|e| format!("format: {e}"))?),
            None => None,
        };
        Ok(TimestampConvert {
            field: config
                .get("field")
                .filter(|f| !f.is_empty())
                .map(str::to_string),
            target,
            format,
            unit_per_ms,
        })
    }

    fn map(&self, mut data: Data, _record: &RecordRef<'_>) -> Result<Data, String> {
        let Some(field) = &self.field else {
            return Ok(Data::Json(self.convert(&data.into_json())?));
        };
        let map = data.object()?;
        if let Some(value) = map.get_mut(field) {
            *value = self.convert(value)?;
        }
        Ok(data)
    }
}

plugin!(
    TimestampConverter,
    "timestamp-converter",
    PartTask<TimestampConvert>,
    "Converts timestamps between text and numbers since the epoch.",
    [
        "org.apache.kafka.connect.transforms.TimestampConverter$Value",
        "org.apache.kafka.connect.transforms.TimestampConverter$Key"
    ],
    &[
        req("target.type", "string, unix, Date, Time or Timestamp."),
        opt(
            "field",
            "The field holding the timestamp (the whole when empty)."
        ),
        opt("format", "A SimpleDateFormat pattern for text timestamps."),
        opt(
            "unix.precision",
            "seconds, milliseconds, microseconds or nanoseconds."
        ),
    ]
);

/// Filter: drops every record it sees (guard it with a predicate).
pub struct FilterTask;

impl TransformTask for FilterTask {
    fn start(_config: &Config, _host: &dyn wasm_connect_sdk::Host) -> Result<Self, TaskError> {
        Ok(FilterTask)
    }

    fn apply(&mut self, _record: &RecordRef<'_>, _out: &mut BatchWriter) -> Result<(), String> {
        Ok(())
    }
}

plugin!(
    Filter,
    "filter",
    FilterTask,
    "Drops records; with a predicate, those it matches.",
    ["org.apache.kafka.connect.transforms.Filter"],
    &[]
);

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_connect_sdk::{BatchReader, Record};

    #[test]
    fn regex_router_routes_each_record_by_its_own_topic() {
        let mut task = RegexRouterTask {
            regex: Regex::new("^(?:a(.*))$").unwrap(),
            replacement: java_replacement("x$1"),
            last: None,
        };
        let mut input = BatchWriter::new();
        for topic in ["a1", "a1", "b", "a2", "a1"] {
            input
                .push(&Record {
                    topic,
                    value: b"v",
                    ..Record::default()
                })
                .unwrap();
        }
        let (_, frames) = input.into_parts();
        let mut out = BatchWriter::new();
        for record in BatchReader::new(&frames) {
            task.apply(&record.unwrap(), &mut out).unwrap();
        }
        let (_, frames) = out.into_parts();
        let topics: Vec<String> = BatchReader::new(&frames)
            .map(|r| r.unwrap().topic.to_string())
            .collect();
        assert_eq!(topics, ["x1", "x1", "b", "x2", "x1"]);
    }
}
