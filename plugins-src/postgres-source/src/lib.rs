//! `postgres-source`: reads new rows of PostgreSQL tables, answering to Confluent's
//! `io.confluent.connect.jdbc.JdbcSourceConnector` keys.
//!
//! Each poll asks the server for the rows past the table's position, in order, as JSON
//! (`to_jsonb(t)`: the server does the type mapping). The partition is the table, the
//! position the last row's incrementing and/or timestamp values; the host commits it with
//! the records, and a restarted task resumes from `host.committed-position`, so no row is
//! delivered twice or skipped. Rows are written to topic `topic.prefix` + table (the prefix
//! alone with `query`), keyed by the incrementing column.

use std::time::{Duration, Instant};

use pg_wire::connection::positive;
use pg_wire::{quote_ident, task_error, Client, Connection};
use serde_json::Value;
use wasm_connect_sdk::{
    BatchWriter, Config, ConfigDef, ConfigError, Connector, Descriptor, Host, Kind, Record,
    SourceConnector, SourceTask, TaskError, ValueType,
};

pub struct PostgresSource;

/// The keys that list the tables, newest spelling first.
const TABLE_KEYS: [&str; 2] = ["table.include.list", "table.whitelist"];

const CONFIG_DEFS: &[ConfigDef] = pg_wire::config_defs![
    ConfigDef::optional("mode", "bulk, incrementing, timestamp or timestamp+incrementing.").default_value("incrementing"),
    ConfigDef::optional("incrementing.column.name", "A strictly increasing column (e.g. a serial id)."),
    ConfigDef::optional("timestamp.column.name", "A column set to the time a row was written or last changed."),
    ConfigDef::optional("timestamp.delay.interval.ms", "Only read rows whose timestamp is at least this old, so transactions still running can commit.")
        .typed(ValueType::Integer)
        .default_value("0"),
    ConfigDef::optional("table.whitelist", "Comma-separated tables to read (newer spelling: table.include.list).").typed(ValueType::List),
    ConfigDef::optional("table.include.list", "Comma-separated tables to read.").typed(ValueType::List),
    ConfigDef::optional("query", "A SELECT to read instead of tables; its rows go to topic.prefix."),
    ConfigDef::required("topic.prefix", "Rows of table T go to topic <prefix>T (with query: to <prefix>)."),
    ConfigDef::optional("poll.interval.ms", "Pause before asking a table again once it is read to the end.")
        .typed(ValueType::Integer)
        .default_value("5000"),
    ConfigDef::optional("batch.max.rows", "Most rows read from one table per poll.")
        .typed(ValueType::Integer)
        .default_value("100"),
];

/// How new rows are found (`mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bulk,
    Incrementing,
    Timestamp,
    TimestampIncrementing,
}

impl Mode {
    fn incrementing(self) -> bool {
        matches!(self, Mode::Incrementing | Mode::TimestampIncrementing)
    }

    fn timestamp(self) -> bool {
        matches!(self, Mode::Timestamp | Mode::TimestampIncrementing)
    }
}

#[derive(Debug, Clone)]
struct Settings {
    connection: Connection,
    mode: Mode,
    incrementing: Option<String>,
    timestamp: Option<String>,
    delay_ms: u64,
    /// The tables, or `None` with `query`.
    tables: Option<Vec<String>>,
    query: Option<String>,
    prefix: String,
    poll_interval: Duration,
    batch_rows: u64,
}

impl Settings {
    fn from_config(config: &Config) -> Result<Settings, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let error = |key: &str, message: String| ConfigError {
            key: key.into(),
            message,
        };
        let connection = Connection::from_config(config)
            .map_err(|e| errors.push(e))
            .ok();
        let mode = match config.get("mode").unwrap_or("incrementing") {
            "bulk" => Mode::Bulk,
            "incrementing" => Mode::Incrementing,
            "timestamp" => Mode::Timestamp,
            "timestamp+incrementing" => Mode::TimestampIncrementing,
            other => {
                errors.push(error("mode", format!("mode must be bulk, incrementing, timestamp or timestamp+incrementing, not {other:?}")));
                Mode::Bulk
            }
        };
        let column = |key: &str| {
            config
                .get(key)
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
        };
        let incrementing = column("incrementing.column.name");
        let timestamp = column("timestamp.column.name");
        if mode.incrementing() && incrementing.is_none() {
            errors.push(error(
                "incrementing.column.name",
                format!(
                    "mode {} needs incrementing.column.name",
                    config.get("mode").unwrap_or("incrementing")
                ),
            ));
        }
        if mode.timestamp() && timestamp.is_none() {
            errors.push(error(
                "timestamp.column.name",
                "mode timestamp needs timestamp.column.name".into(),
            ));
        }
        let tables: Vec<String> = config
            .get_any(&TABLE_KEYS)
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect();
        let query = column("query");
        match (&query, tables.is_empty()) {
            (None, true) => errors.push(error(
                "table.whitelist",
                "Request config key: table.whitelist (or table.include.list, or query)".into(),
            )),
            (Some(_), false) => errors.push(error(
                "query",
                "set either query or table.whitelist, not both".into(),
            )),
            _ => {}
        }
        let mut number = |key: &str, default: u64| {
            positive(config, key, default)
                .map_err(|e| errors.push(e))
                .unwrap_or(default)
        };
        let delay_ms = number("timestamp.delay.interval.ms", 0);
        let poll_ms = number("poll.interval.ms", 5000);
        let batch_rows = number("batch.max.rows", 100).max(1);
        match connection {
            Some(connection) if errors.is_empty() => Ok(Settings {
                connection,
                mode,
                incrementing,
                timestamp,
                delay_ms,
                tables: query.is_none().then_some(tables),
                query,
                prefix: config.get("topic.prefix").unwrap_or("").to_string(),
                poll_interval: Duration::from_millis(poll_ms),
                batch_rows,
            }),
            _ => Err(errors),
        }
    }
}

impl Connector for PostgresSource {
    fn descriptor() -> Descriptor {
        Descriptor {
            name: "postgres-source",
            version: env!("CARGO_PKG_VERSION"),
            kind: Kind::Source,
            description: "Reads new rows of PostgreSQL tables (or a query) as JSON records.",
            aliases: &["io.confluent.connect.jdbc.JdbcSourceConnector"],
            config_defs: CONFIG_DEFS,
        }
    }

    fn validate(config: &Config) -> Result<(), Vec<ConfigError>> {
        Settings::from_config(config).map(|_| ())
    }

    /// Spreads the tables over the tasks, round-robin (a query is one task).
    fn task_configs(config: &Config, max_tasks: u32) -> Result<Vec<Config>, String> {
        let settings = Settings::from_config(config).map_err(|errors| {
            errors
                .into_iter()
                .map(|e| e.message)
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        let Some(tables) = settings.tables else {
            return Ok(vec![config.clone()]);
        };
        Ok(wasm_connect_sdk::spread(&tables, max_tasks)
            .into_iter()
            .map(|mine| {
                let mut task_config = config.clone();
                task_config
                    .0
                    .retain(|(k, _)| !TABLE_KEYS.contains(&k.as_str()));
                task_config.set("table.whitelist", &mine.join(","));
                task_config
            })
            .collect())
    }
}

impl SourceConnector for PostgresSource {
    type Task = PostgresSourceTask;
}

/// One table (or the query) and where the task stands in it.
struct Reader {
    /// The partition name: the table as configured, or `query`.
    partition: String,
    topic: String,
    /// `(SELECT …)` or a quoted table name.
    from: String,
    /// The last row delivered: its incrementing and/or timestamp values as text.
    position: Option<Vec<String>>,
    /// Do not query before this (after reading to the end).
    next_query: Instant,
}

pub struct PostgresSourceTask {
    settings: Settings,
    client: Option<Client>,
    readers: Vec<Reader>,
    /// Which reader the next poll starts with, so no table starves.
    turn: usize,
}

impl SourceTask for PostgresSourceTask {
    fn start(config: &Config, host: &dyn Host) -> Result<Self, TaskError> {
        let settings = Settings::from_config(config).map_err(|errors| {
            TaskError::Fatal(
                errors
                    .into_iter()
                    .map(|e| e.message)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        let sources: Vec<(String, String, String)> = match (&settings.tables, &settings.query) {
            (Some(tables), _) => tables
                .iter()
                .map(|t| {
                    let quoted = t.split('.').map(quote_ident).collect::<Vec<_>>().join(".");
                    (t.clone(), format!("{}{t}", settings.prefix), quoted)
                })
                .collect(),
            (None, Some(query)) => vec![(
                "query".into(),
                settings.prefix.clone(),
                format!("({query})"),
            )],
            (None, None) => Vec::new(),
        };
        let mut readers = Vec::new();
        for (partition, topic, from) in sources {
            let position = match host.committed_position(&partition) {
                Some(text) => Some(parse_position(&text).ok_or_else(|| {
                    TaskError::Fatal(format!("the committed position of {partition} ({text:?}) is not a JSON array of strings; reset the connector's offsets"))
                })?),
                None => None,
            };
            readers.push(Reader {
                partition,
                topic,
                from,
                position,
                next_query: Instant::now(),
            });
        }
        let client = settings.connection.connect()?;
        Ok(PostgresSourceTask {
            settings,
            client: Some(client),
            readers,
            turn: 0,
        })
    }

    fn poll(
        &mut self,
        out: &mut BatchWriter,
        max_records: u32,
        max_bytes: u32,
    ) -> Result<(), TaskError> {
        if self.client.is_none() {
            self.client = Some(self.settings.connection.connect()?);
        }
        let count = self.readers.len();
        for step in 0..count {
            let index = (self.turn + step) % count;
            let room = u64::from(max_records - out.count()).min(self.settings.batch_rows);
            if room == 0 || out.byte_len() >= max_bytes as usize {
                break;
            }
            if self.readers[index].next_query > Instant::now() {
                continue;
            }
            if let Err(e) = self.read(index, room, out) {
                if let TaskError::Retriable(_) = e {
                    self.client = None;
                }
                return Err(e);
            }
        }
        self.turn = (self.turn + 1) % count.max(1);
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(client) = self.client.take() {
            client.close();
        }
    }
}

impl PostgresSourceTask {
    /// Appends up to `limit` rows of reader `index` past its position.
    fn read(&mut self, index: usize, limit: u64, out: &mut BatchWriter) -> Result<(), TaskError> {
        let (sql, params) = select(&self.settings, &self.readers[index], limit);
        let client = self
            .client
            .as_mut()
            .ok_or_else(|| TaskError::Retriable("not connected".into()))?;
        let params: Vec<Option<&str>> = params.iter().map(|p| Some(p.as_str())).collect();
        let reader = &mut self.readers[index];
        let rows = client
            .query(&sql, &params)
            .map_err(|e| match task_error(e) {
                TaskError::Fatal(m) => {
                    TaskError::Fatal(format!("reading {}: {m}", reader.partition))
                }
                retriable => retriable,
            })?
            .rows;
        if (rows.len() as u64) < limit || self.settings.mode == Mode::Bulk {
            reader.next_query = Instant::now() + self.settings.poll_interval;
        }
        for row in rows {
            let mut columns = row.into_iter();
            let value = columns.next().flatten().unwrap_or_default();
            let marks: Vec<String> = columns.map(Option::unwrap_or_default).collect();
            let key = marks.last().filter(|_| self.settings.mode.incrementing());
            let position = if self.settings.mode == Mode::Bulk {
                String::new()
            } else {
                Value::from(marks.clone()).to_string()
            };
            out.push(&Record {
                key: key.map(|k| k.as_bytes()),
                value: value.as_bytes(),
                topic: &reader.topic,
                partition: if position.is_empty() {
                    ""
                } else {
                    &reader.partition
                },
                position: &position,
                ..Record::default()
            })
            .map_err(|e| {
                TaskError::Fatal(format!(
                    "a row of {} does not fit a record: {e}",
                    reader.partition
                ))
            })?;
            if self.settings.mode != Mode::Bulk {
                reader.position = Some(marks);
            }
        }
        Ok(())
    }
}

/// The position text: a JSON array of the marker columns' text (timestamp first).
fn parse_position(text: &str) -> Option<Vec<String>> {
    match serde_json::from_str::<Value>(text).ok()? {
        Value::Array(items) => items
            .into_iter()
            .map(|v| v.as_str().map(String::from))
            .collect(),
        _ => None,
    }
}

/// The statement that reads the rows past the reader's position, and its parameters.
/// Columns: the row as JSON text, then the timestamp and incrementing values as text.
fn select(settings: &Settings, reader: &Reader, limit: u64) -> (String, Vec<String>) {
    let marks: Vec<String> = [
        settings
            .timestamp
            .as_ref()
            .filter(|_| settings.mode.timestamp()),
        settings
            .incrementing
            .as_ref()
            .filter(|_| settings.mode.incrementing()),
    ]
    .into_iter()
    .flatten()
    .map(|c| format!("t.{}", quote_ident(c)))
    .collect();
    let mut conditions = Vec::new();
    let mut params = Vec::new();
    if let Some(position) = reader
        .position
        .as_ref()
        .filter(|p| p.len() == marks.len() && !p.is_empty())
    {
        let placeholders: Vec<String> = (1..=position.len()).map(|i| format!("${i}")).collect();
        conditions.push(format!(
            "({}) > ({})",
            marks.join(", "),
            placeholders.join(", ")
        ));
        params = position.clone();
    }
    if let (true, Some(ts)) = (settings.mode.timestamp(), &settings.timestamp) {
        conditions.push(format!(
            "t.{} < CURRENT_TIMESTAMP - make_interval(secs => {})",
            quote_ident(ts),
            settings.delay_ms as f64 / 1000.0
        ));
    }
    let selected: Vec<String> = std::iter::once("to_jsonb(t)::text".to_string())
        .chain(marks.iter().map(|m| format!("{m}::text")))
        .collect();
    let mut sql = format!("SELECT {} FROM {} AS t", selected.join(", "), reader.from);
    if !conditions.is_empty() {
        sql += &format!(" WHERE {}", conditions.join(" AND "));
    }
    if !marks.is_empty() {
        sql += &format!(" ORDER BY {}", marks.join(", "));
    }
    if settings.mode != Mode::Bulk {
        sql += &format!(" LIMIT {limit}");
    }
    (sql, params)
}

wasm_connect_sdk::export_source!(PostgresSource);

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, Vec<ConfigError>> {
        let mut config: Config = [
            ("connection.url", "postgres://h/db"),
            ("topic.prefix", "pg-"),
        ]
        .into_iter()
        .collect();
        for (k, v) in pairs {
            config.set(k, v);
        }
        Settings::from_config(&config)
    }

    fn reader(position: Option<Vec<&str>>) -> Reader {
        Reader {
            partition: "orders".into(),
            topic: "pg-orders".into(),
            from: "\"orders\"".into(),
            position: position.map(|p| p.into_iter().map(String::from).collect()),
            next_query: Instant::now(),
        }
    }

    #[test]
    fn timestamp_and_incrementing_resume_past_the_position() {
        let s = settings(&[
            ("mode", "timestamp+incrementing"),
            ("incrementing.column.name", "id"),
            ("timestamp.column.name", "ts"),
            ("table.whitelist", "orders"),
            ("timestamp.delay.interval.ms", "1500"),
        ])
        .unwrap();
        let (sql, params) = select(&s, &reader(Some(vec!["2026-01-01 00:00:00", "7"])), 50);
        assert_eq!(
            sql,
            "SELECT to_jsonb(t)::text, t.\"ts\"::text, t.\"id\"::text FROM \"orders\" AS t WHERE (t.\"ts\", t.\"id\") > ($1, $2) AND t.\"ts\" < CURRENT_TIMESTAMP - make_interval(secs => 1.5) ORDER BY t.\"ts\", t.\"id\" LIMIT 50"
        );
        assert_eq!(params, ["2026-01-01 00:00:00", "7"]);
        let (first, params) = select(&s, &reader(None), 50);
        assert!(!first.contains("$1") && params.is_empty(), "{first}");
        assert_eq!(
            parse_position(r#"["2026-01-01 00:00:00","7"]"#)
                .unwrap()
                .len(),
            2
        );
        assert!(parse_position("7").is_none());
    }

    #[test]
    fn modes_need_their_columns_and_tables_split_over_tasks() {
        let keys = |pairs| {
            settings(pairs)
                .unwrap_err()
                .into_iter()
                .map(|e| e.key)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            keys(&[("table.whitelist", "a")]),
            ["incrementing.column.name"]
        );
        assert_eq!(
            keys(&[("mode", "timestamp"), ("table.whitelist", "a")]),
            ["timestamp.column.name"]
        );
        assert_eq!(keys(&[("mode", "bulk")]), ["table.whitelist"]);
        assert_eq!(
            keys(&[
                ("mode", "bulk"),
                ("query", "SELECT 1"),
                ("table.whitelist", "a")
            ]),
            ["query"]
        );
        let config: Config = [
            ("connection.url", "postgres://h/db"),
            ("topic.prefix", "pg-"),
            ("mode", "bulk"),
            ("table.include.list", "a,b,c"),
        ]
        .into_iter()
        .collect();
        let tasks = PostgresSource::task_configs(&config, 2).unwrap();
        let lists: Vec<_> = tasks
            .iter()
            .map(|t| t.get("table.whitelist").unwrap())
            .collect();
        assert_eq!(lists, ["a,c", "b"]);
        assert!(tasks.iter().all(|t| t.get("table.include.list").is_none()));
    }
}
