//! `http-sink`: sends the records of its topics to an HTTP API, `batch.max.size` records
//! per request, with the keys of Confluent's HTTP sink
//! (`io.confluent.connect.http.HttpSinkConnector`).
//!
//! A request's body is a JSON array of the record values (each parsed as JSON when it is
//! JSON, else a string), or, when any of `batch.prefix`/`batch.separator`/`batch.suffix` is
//! set, the values joined by them. Answers whose status `retry.on.status.codes` lists (5xx
//! and 429 by default) and transport errors are retried with exponential backoff and jitter
//! up to `max.retries` times; other non-2xx answers fail the task (`behavior.on.error=fail`)
//! or are logged and skipped (`log`). `put` returns only once every record it was given was
//! answered with a 2xx (or skipped), so the host commits offsets only after a 2xx; records a
//! retried `put` hands again that were already delivered are not sent twice.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use wasm_connect_sdk::http::{self, HttpError, Method, Response};
use wasm_connect_sdk::json;
use wasm_connect_sdk::retry::Backoff;
use wasm_connect_sdk::{
    BatchReader, Config, ConfigDef, ConfigError, Connector, Descriptor, Host, Kind, Position,
    SinkConnector, SinkTask, TaskError, ValueType,
};

/// The keys that may name the topics, in the RocketMQ and the Kafka spelling.
const TOPIC_KEYS: [&str; 2] = ["topicNames", "topics"];

/// Time one `put` spends retrying before it hands the batch back to the host (which calls
/// it again): well inside the host's call timeout.
const RETRY_TIME_PER_CALL: Duration = Duration::from_secs(10);

pub struct HttpSink;

const CONFIG_DEFS: &[ConfigDef] = &[
    ConfigDef::required("http.api.url", "The URL records are sent to (http:// or https://)."),
    ConfigDef::optional("request.method", "POST, PUT or PATCH.").default_value("POST"),
    ConfigDef::optional(
        "headers",
        "Extra request headers, `Name:Value` separated by `header.separator`.",
    ),
    ConfigDef::optional("header.separator", "Separates the entries of `headers`.")
        .default_value("|"),
    ConfigDef::optional("batch.max.size", "Records per request.")
        .typed(ValueType::Integer)
        .default_value("1"),
    ConfigDef::optional(
        "batch.prefix",
        "Written before the values of a request (with any batch.* key set, the body is the values joined instead of a JSON array).",
    ),
    ConfigDef::optional("batch.separator", "Written between the values of a request."),
    ConfigDef::optional("batch.suffix", "Written after the values of a request."),
    ConfigDef::optional("max.retries", "Retries of a failed request before it fails.")
        .typed(ValueType::Integer)
        .default_value("10"),
    ConfigDef::optional("retry.backoff.ms", "First wait before a retry; doubles each retry.")
        .typed(ValueType::Integer)
        .default_value("3000"),
    ConfigDef::optional(
        "retry.on.status.codes",
        "Statuses that are retried: codes (429), classes (5xx) or ranges (500-599, 400-).",
    )
    .typed(ValueType::List)
    .default_value("429,5xx"),
    ConfigDef::optional(
        "behavior.on.error",
        "On an answer that is neither 2xx nor retried: `fail` the task or `log` and skip.",
    )
    .default_value("fail"),
    ConfigDef::optional("auth.type", "none, basic or bearer.").default_value("none"),
    ConfigDef::optional("connection.user", "User of basic authentication."),
    ConfigDef {
        secret: true,
        ..ConfigDef::optional("connection.password", "Password of basic authentication.")
    },
    ConfigDef {
        secret: true,
        ..ConfigDef::optional("bearer.token", "Token of bearer authentication.")
    },
    ConfigDef::optional(
        "http.request.timeout.ms",
        "Bound of the connect and of each wait for the answer.",
    )
    .typed(ValueType::Integer)
    .default_value("10000"),
    ConfigDef::optional(
        "topicNames",
        "Comma-separated topics to read (Kafka spelling: `topics`).",
    )
    .typed(ValueType::List),
    ConfigDef::optional("topics", "Kafka spelling of `topicNames`.").typed(ValueType::List),
];

impl Connector for HttpSink {
    fn descriptor() -> Descriptor {
        Descriptor {
            name: "http-sink",
            version: env!("CARGO_PKG_VERSION"),
            kind: Kind::Sink,
            description: "Sends records to an HTTP API, in batches, with retries.",
            aliases: &["io.confluent.connect.http.HttpSinkConnector"],
            config_defs: CONFIG_DEFS,
        }
    }

    fn validate(config: &Config) -> Result<(), Vec<ConfigError>> {
        let mut errors = match Settings::read(config) {
            Ok(_) => Vec::new(),
            Err(error) => vec![error],
        };
        if config
            .get_any(&TOPIC_KEYS)
            .is_none_or(|t| t.trim().is_empty())
        {
            errors.push(ConfigError::new(
                "topics",
                "Request config key: topics (or topicNames)",
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

impl SinkConnector for HttpSink {
    type Task = HttpSinkTask;
}

/// Statuses to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StatusSet(Vec<(u16, u16)>);

impl StatusSet {
    fn parse(text: &str) -> Option<StatusSet> {
        let mut ranges = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let range = if let Some(class) = entry.strip_suffix("xx") {
                let class: u16 = class.parse().ok().filter(|c| (1..=5).contains(c))?;
                (class * 100, class * 100 + 99)
            } else if let Some((low, high)) = entry.split_once('-') {
                let low: u16 = low.trim().parse().ok()?;
                let high = match high.trim() {
                    "" => 999,
                    high => high.parse().ok()?,
                };
                (low, high)
            } else {
                let code: u16 = entry.parse().ok()?;
                (code, code)
            };
            ranges.push(range);
        }
        Some(StatusSet(ranges))
    }

    fn contains(&self, status: u16) -> bool {
        self.0
            .iter()
            .any(|(low, high)| (*low..=*high).contains(&status))
    }
}

/// How a request body is made.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BodyFormat {
    JsonArray,
    Joined {
        prefix: String,
        separator: String,
        suffix: String,
    },
}

/// What to do with an answer that is neither 2xx nor retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnError {
    Fail,
    Log,
}

/// The connector's config, read.
#[derive(Debug, Clone)]
struct Settings {
    url: String,
    method: Method,
    headers: Vec<(String, String)>,
    batch: usize,
    format: BodyFormat,
    max_retries: u32,
    backoff: Duration,
    retry_on: StatusSet,
    on_error: OnError,
    timeout: Duration,
}

fn number<T: std::str::FromStr>(config: &Config, key: &str, default: T) -> Result<T, ConfigError> {
    match config.get(key) {
        None => Ok(default),
        Some(text) => text.trim().parse().map_err(|_| {
            ConfigError::new(key, format!("{key} must be a whole number, not {text:?}"))
        }),
    }
}

impl Settings {
    fn read(config: &Config) -> Result<Settings, ConfigError> {
        let url = config
            .get("http.api.url")
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| ConfigError::new("http.api.url", "Request config key: http.api.url"))?;
        http::Url::parse(url)
            .map_err(|e| ConfigError::new("http.api.url", format!("http.api.url: {e}")))?;
        let method = config.get("request.method").unwrap_or("POST");
        let method = Method::parse(method)
            .filter(|m| matches!(m, Method::Post | Method::Put | Method::Patch))
            .ok_or_else(|| {
                ConfigError::new(
                    "request.method",
                    format!("request.method must be POST, PUT or PATCH, not {method:?}"),
                )
            })?;
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        let separator = config.get("header.separator").unwrap_or("|");
        let listed = http::parse_headers(config.get("headers").unwrap_or_default(), separator)
            .map_err(|entry| {
                ConfigError::new(
                    "headers",
                    format!("headers: {entry:?} is not Name:Value (entries are separated by {separator:?})"),
                )
            })?;
        for (name, value) in listed {
            headers.retain(|(n, _)| *n != name);
            headers.push((name, value));
        }
        match config.get("auth.type").unwrap_or("none").trim() {
            "none" | "NONE" => {}
            "basic" | "BASIC" => {
                let user = config.get("connection.user").unwrap_or_default();
                let password = config.get("connection.password").unwrap_or_default();
                let token = base64(format!("{user}:{password}").as_bytes());
                headers.push(("authorization".into(), format!("Basic {token}")));
            }
            "bearer" | "BEARER" => {
                let token = config.get("bearer.token").ok_or_else(|| {
                    ConfigError::new("bearer.token", "auth.type bearer needs bearer.token")
                })?;
                headers.push(("authorization".into(), format!("Bearer {token}")));
            }
            other => {
                return Err(ConfigError::new(
                    "auth.type",
                    format!("auth.type must be none, basic or bearer, not {other:?}"),
                ))
            }
        }
        let batch: usize = number(config, "batch.max.size", 1)?;
        let joined = ["batch.prefix", "batch.separator", "batch.suffix"]
            .iter()
            .any(|key| config.get(key).is_some());
        let format = match joined {
            false => BodyFormat::JsonArray,
            true => BodyFormat::Joined {
                prefix: config.get("batch.prefix").unwrap_or_default().to_string(),
                separator: config.get("batch.separator").unwrap_or(",").to_string(),
                suffix: config.get("batch.suffix").unwrap_or_default().to_string(),
            },
        };
        let codes = config.get("retry.on.status.codes").unwrap_or("429,5xx");
        let retry_on = StatusSet::parse(codes).ok_or_else(|| {
            ConfigError::new(
                "retry.on.status.codes",
                format!("retry.on.status.codes: {codes:?} is not a list of codes (429), classes (5xx) or ranges (500-599, 400-)"),
            )
        })?;
        let on_error = match config.get("behavior.on.error").unwrap_or("fail").trim() {
            "fail" | "FAIL" => OnError::Fail,
            "log" | "LOG" | "ignore" | "IGNORE" => OnError::Log,
            other => {
                return Err(ConfigError::new(
                    "behavior.on.error",
                    format!("behavior.on.error must be fail or log, not {other:?}"),
                ))
            }
        };
        Ok(Settings {
            url: url.trim().to_string(),
            method,
            headers,
            batch: batch.max(1),
            format,
            max_retries: number(config, "max.retries", 10)?,
            backoff: Duration::from_millis(number(config, "retry.backoff.ms", 3000)?),
            retry_on,
            on_error,
            timeout: Duration::from_millis(number(config, "http.request.timeout.ms", 10_000)?),
        })
    }

    fn body(&self, values: &[Vec<u8>]) -> Vec<u8> {
        match &self.format {
            BodyFormat::JsonArray => json::array_of(values.iter().map(Vec::as_slice)),
            BodyFormat::Joined {
                prefix,
                separator,
                suffix,
            } => {
                let mut body = prefix.as_bytes().to_vec();
                for (i, value) in values.iter().enumerate() {
                    if i > 0 {
                        body.extend_from_slice(separator.as_bytes());
                    }
                    body.extend_from_slice(value);
                }
                body.extend_from_slice(suffix.as_bytes());
                body
            }
        }
    }
}

/// Standard base64 with padding (for basic authentication).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub struct HttpSinkTask {
    settings: Settings,
    /// Per topic, the offset after the last record answered with a 2xx: a `put` the host
    /// repeats (after a retriable failure) skips what was delivered.
    delivered: HashMap<String, u64>,
    backoff: Backoff,
}

/// How one request ended.
enum Outcome {
    Delivered,
    /// Retry later; the reason.
    Retry(String),
    /// Neither 2xx nor retried; the reason.
    Rejected(String),
}

impl HttpSinkTask {
    fn request(&self, body: &[u8]) -> Outcome {
        let request = http::Request {
            method: self.settings.method,
            url: &self.settings.url,
            headers: &self.settings.headers,
            body,
            timeout: self.settings.timeout,
        };
        let what = format!("{} {}", self.settings.method.as_str(), self.settings.url);
        match http::send(&request) {
            Ok(response) if response.is_success() => Outcome::Delivered,
            Ok(response) if self.settings.retry_on.contains(response.status) => {
                Outcome::Retry(answer(&what, &response))
            }
            Ok(response) => Outcome::Rejected(answer(&what, &response)),
            Err(e @ (HttpError::Url(_) | HttpError::Unsupported)) => {
                Outcome::Rejected(format!("{what}: {e}"))
            }
            Err(e) => Outcome::Retry(format!("{what}: {e}")),
        }
    }

    /// Sends one request's records, retrying as configured.
    fn deliver(&mut self, values: &[Vec<u8>]) -> Result<(), TaskError> {
        let body = self.settings.body(values);
        let started = Instant::now();
        loop {
            match self.request(&body) {
                Outcome::Delivered => {
                    self.backoff.reset();
                    return Ok(());
                }
                Outcome::Rejected(reason) if self.settings.on_error == OnError::Log => {
                    eprintln!("skipping {} records: {reason}", values.len());
                    return Ok(());
                }
                Outcome::Rejected(reason) => return Err(TaskError::Fatal(reason)),
                Outcome::Retry(reason) if self.backoff.attempts() >= self.settings.max_retries => {
                    let reason = format!(
                        "{reason} (gave up after {} retries)",
                        self.settings.max_retries
                    );
                    self.backoff.reset();
                    return match self.settings.on_error {
                        OnError::Fail => Err(TaskError::Fatal(reason)),
                        OnError::Log => {
                            eprintln!("skipping {} records: {reason}", values.len());
                            Ok(())
                        }
                    };
                }
                Outcome::Retry(reason) => {
                    let delay = self.backoff.next_delay();
                    if started.elapsed() + delay > RETRY_TIME_PER_CALL {
                        // The host calls `put` again with the same records after a pause.
                        return Err(TaskError::Retriable(reason));
                    }
                    std::thread::sleep(delay);
                }
            }
        }
    }
}

/// `what` answered `response`: the status and the start of the body.
fn answer(what: &str, response: &Response) -> String {
    format!(
        "{what} answered {}: {}",
        response.status,
        response.body_excerpt()
    )
}

impl SinkTask for HttpSinkTask {
    fn start(config: &Config, _host: &dyn Host) -> Result<Self, TaskError> {
        let settings = Settings::read(config).map_err(|e| TaskError::Fatal(e.message))?;
        let backoff = Backoff::new(settings.backoff, settings.backoff.saturating_mul(64));
        Ok(HttpSinkTask {
            settings,
            delivered: HashMap::new(),
            backoff,
        })
    }

    fn put(
        &mut self,
        topic: &str,
        first_offset: u64,
        records: BatchReader<'_>,
    ) -> Result<(), TaskError> {
        let skip = self
            .delivered
            .get(topic)
            .map_or(0, |next| next.saturating_sub(first_offset));
        let mut pending = Vec::with_capacity(self.settings.batch);
        let mut offset = first_offset;
        for record in records {
            let record =
                record.map_err(|e| TaskError::Fatal(format!("bad batch from the host: {e}")))?;
            offset += 1;
            if offset - first_offset <= skip {
                continue;
            }
            pending.push(record.value.to_vec());
            if pending.len() == self.settings.batch {
                self.deliver(&pending)?;
                pending.clear();
                self.delivered.insert(topic.to_string(), offset);
            }
        }
        if !pending.is_empty() {
            self.deliver(&pending)?;
            self.delivered.insert(topic.to_string(), offset);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<Vec<Position>, TaskError> {
        // Everything `put` returned from was answered with a 2xx.
        Ok(Vec::new())
    }
}

wasm_connect_sdk::export_sink!(HttpSink);

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Config {
        pairs.iter().copied().collect()
    }

    #[test]
    fn status_sets_take_codes_classes_and_ranges() {
        let set = StatusSet::parse("429, 5xx, 400-402, 600-").unwrap();
        for code in [429, 500, 599, 400, 402, 600, 999] {
            assert!(set.contains(code), "{code}");
        }
        for code in [200, 403, 428] {
            assert!(!set.contains(code), "{code}");
        }
        assert!(StatusSet::parse("5x").is_none());
        assert!(StatusSet::parse("9xx").is_none());
    }

    #[test]
    fn bodies_are_json_arrays_or_joined_values() {
        let values = vec![br#"{"a":1}"#.to_vec(), b"plain".to_vec()];
        let url = ("http.api.url", "http://127.0.0.1:1/x");
        let json = Settings::read(&config(&[url])).unwrap();
        assert_eq!(json.body(&values), br#"[{"a":1},"plain"]"#);
        let joined = Settings::read(&config(&[
            url,
            ("batch.prefix", "<"),
            ("batch.suffix", ">"),
        ]))
        .unwrap();
        assert_eq!(joined.body(&values), br#"<{"a":1},plain>"#);
    }

    #[test]
    fn headers_and_authentication_become_request_headers() {
        let settings = Settings::read(&config(&[
            ("http.api.url", "https://api.example/in"),
            ("headers", "X-One: 1|X-Two:two"),
            ("auth.type", "basic"),
            ("connection.user", "Aladdin"),
            ("connection.password", "open sesame"),
        ]))
        .unwrap();
        let header = |name: &str| {
            settings
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header("x-one"), Some("1"));
        assert_eq!(header("x-two"), Some("two"));
        assert_eq!(
            header("authorization"),
            Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
        );
        let refused = Settings::read(&config(&[
            ("http.api.url", "http://h/"),
            ("request.method", "GET"),
        ]))
        .unwrap_err();
        assert_eq!(refused.key, "request.method");
    }
}
