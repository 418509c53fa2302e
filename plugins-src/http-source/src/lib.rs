//! `http-source`: polls an HTTP API and writes one record per item of each response, with
//! the keys of Confluent's HTTP source (`io.confluent.connect.http.HttpSourceConnector`).
//!
//! `url` may contain `${offset}`, replaced by the current offset (percent-encoded). The
//! items are the JSON array at `http.response.data.json.pointer` (the whole response when
//! unset); each becomes a record whose value is the item (a string item as its text, any
//! other as compact JSON).
//!
//! - `SIMPLE_INCREMENTING`: the offset starts at `http.initial.offset` (0) and grows by one
//!   per item; an empty answer waits `request.interval.ms` before asking again.
//! - `CURSOR_PAGINATION`: the offset is a cursor, starting at `http.initial.offset`; the next
//!   page's cursor is at `http.next.page.json.pointer`. When a response names none (missing,
//!   null or empty), the source asks for the same page again after `request.interval.ms`
//!   and emits only the items it has not emitted yet, so items appended to the last page,
//!   or a next cursor that appears later, are picked up without repeats.
//!
//! The position (partition = the `url` template) is the offset, or the cursor and how many
//! items of its page were emitted, so a restarted task resumes where it stopped.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use wasm_connect_sdk::http::{self, Method};
use wasm_connect_sdk::json::{self, Value};
use wasm_connect_sdk::{
    BatchWriter, Config, ConfigDef, ConfigError, Connector, Descriptor, Host, Kind, Record,
    SourceConnector, SourceTask, TaskError, ValueType,
};

/// Longest a `poll` waits for the next request time before returning an empty batch.
const MAX_POLL_WAIT: Duration = Duration::from_secs(1);

pub struct HttpSource;

const CONFIG_DEFS: &[ConfigDef] = &[
    ConfigDef::required(
        "url",
        "The URL to poll; `${offset}` is replaced by the offset or cursor.",
    ),
    ConfigDef::required("topic", "The topic records are written to."),
    ConfigDef::optional(
        "http.offset.mode",
        "SIMPLE_INCREMENTING or CURSOR_PAGINATION.",
    )
    .default_value("SIMPLE_INCREMENTING"),
    ConfigDef::optional("http.initial.offset", "The offset or cursor to start from."),
    ConfigDef::optional(
        "http.response.data.json.pointer",
        "JSON pointer to the array of items in a response (the whole response when unset).",
    ),
    ConfigDef::optional(
        "http.next.page.json.pointer",
        "JSON pointer to the next page's cursor (CURSOR_PAGINATION).",
    ),
    ConfigDef::optional(
        "http.request.headers",
        "Request headers, `Name:Value` separated by `http.request.headers.separator`.",
    ),
    ConfigDef::optional(
        "http.request.headers.separator",
        "Separates the entries of `http.request.headers`.",
    )
    .default_value("|"),
    ConfigDef::optional(
        "request.interval.ms",
        "Wait before asking again when nothing is new.",
    )
    .typed(ValueType::Integer)
    .default_value("1000"),
    ConfigDef::optional(
        "http.request.timeout.ms",
        "Bound of the connect and of each wait for the answer.",
    )
    .typed(ValueType::Integer)
    .default_value("10000"),
];

impl Connector for HttpSource {
    fn descriptor() -> Descriptor {
        Descriptor {
            name: "http-source",
            version: env!("CARGO_PKG_VERSION"),
            kind: Kind::Source,
            description:
                "Polls an HTTP API (incrementing offset or cursor pagination) into a topic.",
            aliases: &["io.confluent.connect.http.HttpSourceConnector"],
            config_defs: CONFIG_DEFS,
        }
    }

    fn validate(config: &Config) -> Result<(), Vec<ConfigError>> {
        Settings::read(config).map(|_| ()).map_err(|e| vec![e])
    }
}

impl SourceConnector for HttpSource {
    type Task = HttpSourceTask;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    SimpleIncrementing,
    CursorPagination,
}

#[derive(Debug, Clone)]
struct Settings {
    url: String,
    topic: String,
    mode: Mode,
    initial: String,
    data_pointer: String,
    next_pointer: String,
    headers: Vec<(String, String)>,
    interval: Duration,
    timeout: Duration,
}

fn millis(config: &Config, key: &str, default: u64) -> Result<Duration, ConfigError> {
    match config.get(key) {
        None => Ok(Duration::from_millis(default)),
        Some(text) => text.trim().parse().map(Duration::from_millis).map_err(|_| {
            ConfigError::new(key, format!("{key} must be a whole number, not {text:?}"))
        }),
    }
}

impl Settings {
    fn read(config: &Config) -> Result<Settings, ConfigError> {
        let required = |key: &str| {
            config
                .get(key)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| ConfigError::new(key, format!("Request config key: {key}")))
        };
        let url = required("url")?;
        http::Url::parse(url).map_err(|e| ConfigError::new("url", format!("url: {e}")))?;
        let topic = required("topic")?;
        let mode = match config.get("http.offset.mode").unwrap_or("SIMPLE_INCREMENTING").trim() {
            "SIMPLE_INCREMENTING" => Mode::SimpleIncrementing,
            "CURSOR_PAGINATION" => Mode::CursorPagination,
            other => {
                return Err(ConfigError::new(
                    "http.offset.mode",
                    format!("http.offset.mode must be SIMPLE_INCREMENTING or CURSOR_PAGINATION, not {other:?}"),
                ))
            }
        };
        let initial = config.get("http.initial.offset").unwrap_or_default().trim();
        let initial = match mode {
            Mode::SimpleIncrementing if initial.is_empty() => "0".to_string(),
            Mode::SimpleIncrementing => {
                initial.parse::<u64>().map_err(|_| {
                    ConfigError::new(
                        "http.initial.offset",
                        format!("http.initial.offset must be a whole number in SIMPLE_INCREMENTING mode, not {initial:?}"),
                    )
                })?;
                initial.to_string()
            }
            Mode::CursorPagination => initial.to_string(),
        };
        let next_pointer = config
            .get("http.next.page.json.pointer")
            .unwrap_or_default();
        if mode == Mode::CursorPagination && next_pointer.trim().is_empty() {
            return Err(ConfigError::new(
                "http.next.page.json.pointer",
                "CURSOR_PAGINATION needs http.next.page.json.pointer",
            ));
        }
        let separator = config.get("http.request.headers.separator").unwrap_or("|");
        let headers = http::parse_headers(
            config.get("http.request.headers").unwrap_or_default(),
            separator,
        )
        .map_err(|entry| {
            ConfigError::new(
                "http.request.headers",
                format!("http.request.headers: {entry:?} is not Name:Value (entries are separated by {separator:?})"),
            )
        })?;
        Ok(Settings {
            url: url.to_string(),
            topic: topic.to_string(),
            mode,
            initial,
            data_pointer: config
                .get("http.response.data.json.pointer")
                .unwrap_or_default()
                .trim()
                .to_string(),
            next_pointer: next_pointer.trim().to_string(),
            headers,
            interval: millis(config, "request.interval.ms", 1000)?,
            timeout: millis(config, "http.request.timeout.ms", 10_000)?,
        })
    }
}

/// Where the source is: the offset or cursor to ask for, and how many items of that page
/// were emitted (cursor mode; always 0 in incrementing mode, whose offset moves per item).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    offset: String,
    emitted: usize,
}

impl Cursor {
    /// As a position: `<emitted> <offset>`.
    fn position(&self) -> String {
        format!("{} {}", self.emitted, self.offset)
    }

    fn parse(position: &str) -> Option<Cursor> {
        let (emitted, offset) = position.split_once(' ')?;
        Some(Cursor {
            offset: offset.to_string(),
            emitted: emitted.parse().ok()?,
        })
    }
}

pub struct HttpSourceTask {
    settings: Settings,
    /// Where the next request starts.
    cursor: Cursor,
    /// Items of the last response not yet emitted, with the position each one completes.
    pending: VecDeque<(String, Cursor)>,
    /// No request before this (nothing new came last time).
    next_request: Option<Instant>,
}

impl HttpSourceTask {
    /// Asks for the page at the cursor and queues what it has not emitted yet.
    fn fetch(&mut self) -> Result<(), TaskError> {
        let url = self
            .settings
            .url
            .replace("${offset}", &http::encode_component(&self.cursor.offset));
        let request = http::Request {
            method: Method::Get,
            url: &url,
            headers: &self.settings.headers,
            body: &[],
            timeout: self.settings.timeout,
        };
        let response =
            http::send(&request).map_err(|e| TaskError::Retriable(format!("GET {url}: {e}")))?;
        if !response.is_success() {
            let reason = format!(
                "GET {url} answered {}: {}",
                response.status,
                response.body_excerpt()
            );
            return Err(match response.status {
                429 | 500..=599 => TaskError::Retriable(reason),
                _ => TaskError::Fatal(reason),
            });
        }
        let document: Value = json::parse(&response.body)
            .map_err(|e| TaskError::Fatal(format!("GET {url}: the answer is not JSON: {e}")))?;
        let items = match json::at(&document, &self.settings.data_pointer) {
            Some(Value::Array(items)) => items.clone(),
            Some(Value::Null) | None => Vec::new(),
            Some(other) => vec![other.clone()],
        };
        let values: Vec<String> = items.iter().map(json::text_of).collect();
        match self.settings.mode {
            Mode::SimpleIncrementing => {
                let start: u64 = self.cursor.offset.parse().unwrap_or(0);
                for (i, value) in values.into_iter().enumerate() {
                    let offset = (start + i as u64 + 1).to_string();
                    self.pending
                        .push_back((value, Cursor { offset, emitted: 0 }));
                }
                if let Some((_, last)) = self.pending.back() {
                    self.cursor = last.clone();
                } else {
                    self.next_request = Some(Instant::now() + self.settings.interval);
                }
            }
            Mode::CursorPagination => {
                let next = json::at(&document, &self.settings.next_pointer)
                    .filter(|n| !n.is_null())
                    .map(json::text_of)
                    .filter(|n| !n.is_empty());
                let page = self.cursor.offset.clone();
                let count = values.len();
                for (i, value) in values.into_iter().enumerate().skip(self.cursor.emitted) {
                    let done = match &next {
                        Some(next) if i + 1 == count => Cursor {
                            offset: next.clone(),
                            emitted: 0,
                        },
                        _ => Cursor {
                            offset: page.clone(),
                            emitted: i + 1,
                        },
                    };
                    self.pending.push_back((value, done));
                }
                match next {
                    Some(next) => {
                        self.cursor = Cursor {
                            offset: next,
                            emitted: 0,
                        }
                    }
                    None => {
                        self.cursor.emitted = self.cursor.emitted.max(count);
                        self.next_request = Some(Instant::now() + self.settings.interval);
                    }
                }
            }
        }
        Ok(())
    }
}

impl SourceTask for HttpSourceTask {
    fn start(config: &Config, host: &dyn Host) -> Result<Self, TaskError> {
        let settings = Settings::read(config).map_err(|e| TaskError::Fatal(e.message))?;
        let cursor = match host.committed_position(&settings.url) {
            Some(position) => Cursor::parse(&position).ok_or_else(|| {
                TaskError::Fatal(format!(
                    "the committed position {position:?} is not `<emitted> <offset>`"
                ))
            })?,
            None => Cursor {
                offset: settings.initial.clone(),
                emitted: 0,
            },
        };
        Ok(HttpSourceTask {
            settings,
            cursor,
            pending: VecDeque::new(),
            next_request: None,
        })
    }

    fn poll(
        &mut self,
        out: &mut BatchWriter,
        max_records: u32,
        _max_bytes: u32,
    ) -> Result<(), TaskError> {
        if self.pending.is_empty() {
            if let Some(at) = self.next_request {
                // Nothing new came last time: wait for the interval, at most ~1 s per call.
                let wait = at.saturating_duration_since(Instant::now());
                std::thread::sleep(wait.min(MAX_POLL_WAIT));
                if wait > MAX_POLL_WAIT {
                    return Ok(());
                }
                self.next_request = None;
            }
            self.fetch()?;
        }
        let partition = self.settings.url.clone();
        for _ in 0..max_records {
            let Some((value, done)) = self.pending.pop_front() else {
                break;
            };
            let position = done.position();
            out.push(&Record {
                value: value.as_bytes(),
                topic: &self.settings.topic,
                partition: &partition,
                position: &position,
                ..Record::default()
            })
            .map_err(|e| TaskError::Fatal(e.to_string()))?;
        }
        Ok(())
    }
}

wasm_connect_sdk::export_source!(HttpSource);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_cursors_with_spaces() {
        let cursor = Cursor {
            offset: "a b".into(),
            emitted: 3,
        };
        assert_eq!(Cursor::parse(&cursor.position()), Some(cursor));
        assert_eq!(Cursor::parse("x"), None);
    }

    #[test]
    fn cursor_mode_needs_the_next_page_pointer() {
        let config: Config = [
            ("url", "http://h/items?c=${offset}"),
            ("topic", "t"),
            ("http.offset.mode", "CURSOR_PAGINATION"),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            Settings::read(&config).unwrap_err().key,
            "http.next.page.json.pointer"
        );
    }
}
