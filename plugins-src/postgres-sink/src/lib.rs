//! `postgres-sink`: writes records into PostgreSQL tables, answering to Confluent's
//! `io.confluent.connect.jdbc.JdbcSinkConnector` keys.
//!
//! Values are schemaless JSON objects (or the JSON converter's `{"schema","payload"}`
//! envelope) whose keys are column names; a Debezium change event (`op`, `before`, `after`,
//! `source`) writes its `after` row, or deletes for `op=d`. Each run of records of a batch becomes one
//! statement with one text parameter, the run as a JSON array, which the server turns into
//! rows with `jsonb_populate_recordset(NULL::table, $1)`: the server does every type
//! conversion. A whole `put` is one transaction. In `upsert` mode (`ON CONFLICT … DO UPDATE`)
//! and for deletes, writing the same records again changes nothing, so the records the host
//! offers again after a crash or an error are harmless.

use std::collections::BTreeMap;

use pg_wire::connection::positive;
use pg_wire::{quote_ident, task_error, Client, Connection};
use serde_json::{Map, Value};
use wasm_connect_sdk::{
    BatchReader, Config, ConfigDef, ConfigError, Connector, Descriptor, Host, Kind, Position,
    SinkConnector, SinkTask, TaskError, ValueType,
};

pub struct PostgresSink;

const CONFIG_DEFS: &[ConfigDef] = pg_wire::config_defs![
    ConfigDef::optional(
        "topics",
        "Comma-separated topics to read (RocketMQ spelling: `topicNames`)."
    )
    .typed(ValueType::List),
    ConfigDef::optional("topicNames", "RocketMQ spelling of `topics`.").typed(ValueType::List),
    ConfigDef::optional(
        "insert.mode",
        "insert, upsert (INSERT … ON CONFLICT DO UPDATE) or update."
    )
    .default_value("insert"),
    ConfigDef::optional(
        "pk.mode",
        "Where the primary key comes from: none, kafka, record_key or record_value."
    )
    .default_value("none"),
    ConfigDef::optional(
        "pk.fields",
        "Comma-separated primary key columns (default: the table's primary key)."
    )
    .typed(ValueType::List),
    ConfigDef::optional(
        "table.name.format",
        "The table to write; ${topic} is replaced by the topic name."
    )
    .default_value("${topic}"),
    ConfigDef::optional(
        "fields.whitelist",
        "Comma-separated columns to write (default: every column the value names)."
    )
    .typed(ValueType::List),
    ConfigDef::optional(
        "delete.enabled",
        "Delete the row of the key when a record's value is null (needs pk.mode=record_key)."
    )
    .typed(ValueType::Boolean)
    .default_value("false"),
    ConfigDef::optional("batch.size", "Most records written by one statement.")
        .typed(ValueType::Integer)
        .default_value("3000"),
    ConfigDef::optional("auto.create", "Not supported: create the table first.")
        .typed(ValueType::Boolean)
        .default_value("false"),
    ConfigDef::optional("auto.evolve", "Not supported: add columns first.")
        .typed(ValueType::Boolean)
        .default_value("false"),
];

/// How rows are written (`insert.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InsertMode {
    Insert,
    Upsert,
    Update,
}

/// Where the primary key comes from (`pk.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PkMode {
    None,
    Kafka,
    RecordKey,
    RecordValue,
}

/// Column names Confluent uses for `pk.mode=kafka`.
const KAFKA_PK: [&str; 3] = ["__connect_topic", "__connect_partition", "__connect_offset"];

/// The sink settings, read once from the config.
#[derive(Debug, Clone)]
struct Settings {
    connection: Connection,
    insert_mode: InsertMode,
    pk_mode: PkMode,
    pk_fields: Vec<String>,
    table_format: String,
    whitelist: Vec<String>,
    delete_enabled: bool,
    batch_size: usize,
}

fn list(config: &Config, key: &str) -> Vec<String> {
    config
        .get(key)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn boolean(config: &Config, key: &str, errors: &mut Vec<ConfigError>) -> bool {
    match config.get(key).map(str::trim) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            errors.push(ConfigError {
                key: key.into(),
                message: format!("{key} must be true or false, not {other:?}"),
            });
            false
        }
    }
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
        let insert_mode = match config.get("insert.mode").unwrap_or("insert") {
            "insert" => InsertMode::Insert,
            "upsert" => InsertMode::Upsert,
            "update" => InsertMode::Update,
            other => {
                errors.push(error(
                    "insert.mode",
                    format!("insert.mode must be insert, upsert or update, not {other:?}"),
                ));
                InsertMode::Insert
            }
        };
        let pk_mode = match config.get("pk.mode").unwrap_or("none") {
            "none" => PkMode::None,
            "kafka" => PkMode::Kafka,
            "record_key" => PkMode::RecordKey,
            "record_value" => PkMode::RecordValue,
            other => {
                errors.push(error(
                    "pk.mode",
                    format!(
                        "pk.mode must be none, kafka, record_key or record_value, not {other:?}"
                    ),
                ));
                PkMode::None
            }
        };
        if insert_mode != InsertMode::Insert && pk_mode == PkMode::None {
            errors.push(error("pk.mode", "upsert and update need a primary key: set pk.mode to record_key, record_value or kafka".into()));
        }
        let delete_enabled = boolean(config, "delete.enabled", &mut errors);
        if delete_enabled && pk_mode != PkMode::RecordKey {
            errors.push(error(
                "delete.enabled",
                "deletes find the row by the record key: set pk.mode=record_key".into(),
            ));
        }
        for key in ["auto.create", "auto.evolve"] {
            if boolean(config, key, &mut errors) {
                errors.push(error(key, format!("{key} is not supported: create the table and its columns before starting the connector")));
            }
        }
        let batch_size = positive(config, "batch.size", 3000)
            .map_err(|e| errors.push(e))
            .unwrap_or(1)
            .max(1);
        let mut pk_fields = list(config, "pk.fields");
        if pk_mode == PkMode::Kafka && pk_fields.is_empty() {
            pk_fields = KAFKA_PK.iter().map(|s| s.to_string()).collect();
        }
        if pk_mode == PkMode::Kafka && pk_fields.len() != 3 {
            errors.push(error(
                "pk.fields",
                "pk.mode=kafka takes three columns: topic, partition and offset".into(),
            ));
        }
        if config
            .get_any(&["topics", "topicNames"])
            .is_none_or(|t| t.trim().is_empty())
        {
            errors.push(error("topics", "Request config key: topics".into()));
        }
        match connection {
            Some(connection) if errors.is_empty() => Ok(Settings {
                connection,
                insert_mode,
                pk_mode,
                pk_fields,
                table_format: config
                    .get("table.name.format")
                    .unwrap_or("${topic}")
                    .to_string(),
                whitelist: list(config, "fields.whitelist"),
                delete_enabled,
                batch_size: batch_size as usize,
            }),
            _ => Err(errors),
        }
    }
}

impl Connector for PostgresSink {
    fn descriptor() -> Descriptor {
        Descriptor {
            name: "postgres-sink",
            version: env!("CARGO_PKG_VERSION"),
            kind: Kind::Sink,
            description:
                "Writes JSON records into PostgreSQL tables (insert, upsert, update, delete).",
            aliases: &["io.confluent.connect.jdbc.JdbcSinkConnector"],
            config_defs: CONFIG_DEFS,
        }
    }

    fn validate(config: &Config) -> Result<(), Vec<ConfigError>> {
        Settings::from_config(config).map(|_| ())
    }
}

impl SinkConnector for PostgresSink {
    type Task = PostgresSinkTask;
}

/// What the task knows about one table.
#[derive(Debug, Clone)]
struct Table {
    /// The quoted, possibly schema-qualified name.
    name: String,
    columns: Vec<String>,
    pk: Vec<String>,
}

pub struct PostgresSinkTask {
    settings: Settings,
    /// `None` after a connection failure: the next `put` reconnects.
    client: Option<Client>,
    tables: BTreeMap<String, Table>,
    warned_null: bool,
}

/// One record turned into a row (or a key to delete).
#[derive(Clone)]
enum Change {
    Upsert(Map<String, Value>),
    Delete(Map<String, Value>),
}

impl SinkTask for PostgresSinkTask {
    fn start(config: &Config, _host: &dyn Host) -> Result<Self, TaskError> {
        let settings = Settings::from_config(config).map_err(|errors| {
            TaskError::Fatal(
                errors
                    .into_iter()
                    .map(|e| e.message)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        let client = settings.connection.connect()?;
        Ok(PostgresSinkTask {
            settings,
            client: Some(client),
            tables: BTreeMap::new(),
            warned_null: false,
        })
    }

    fn put(
        &mut self,
        topic: &str,
        first_offset: u64,
        records: BatchReader<'_>,
    ) -> Result<(), TaskError> {
        let mut changes = Vec::new();
        for (index, record) in records.enumerate() {
            let record =
                record.map_err(|e| TaskError::Fatal(format!("bad batch from the host: {e}")))?;
            let offset = first_offset + index as u64;
            let value = (!record.tombstone).then_some(record.value);
            changes.extend(self.change(topic, offset, record.key, value)?);
        }
        if changes.is_empty() {
            return Ok(());
        }
        let table_name = self.settings.table_format.replace("${topic}", topic);
        let result = self.write(&table_name, &changes);
        if let Err(TaskError::Retriable(_)) = &result {
            self.client = None; // reconnect on the next put
        }
        result
    }

    fn flush(&mut self) -> Result<Vec<Position>, TaskError> {
        // Every put commits its own transaction: nothing is pending here.
        Ok(Vec::new())
    }

    fn stop(&mut self) {
        if let Some(client) = self.client.take() {
            client.close();
        }
    }
}

impl PostgresSinkTask {
    /// Turns one record into a change; `None` for a null value that is not a delete.
    fn change(
        &mut self,
        topic: &str,
        offset: u64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<Option<Change>, TaskError> {
        let at = |what: String| TaskError::Fatal(format!("topic {topic} offset {offset}: {what}"));
        let Some(value) = value else {
            if self.settings.delete_enabled {
                let key = key.ok_or_else(|| at("a null value (delete) without a key".into()))?;
                return Ok(Some(Change::Delete(self.key_columns(key).map_err(at)?)));
            }
            if !self.warned_null {
                self.warned_null = true;
                // stderr reaches the host log, tagged with the task.
                eprintln!("records with a null value are skipped; set delete.enabled=true to delete their rows");
            }
            return Ok(None);
        };
        let mut row = match json_object(value) {
            Ok(row) => row,
            Err(why) => {
                return Err(at(format!(
                    "the value is {why}; the sink writes JSON objects whose keys are column names"
                )))
            }
        };
        // A Debezium change event: write its `after` row, or delete for op `d`.
        if let (Some(Value::String(op)), true) =
            (row.get("op").cloned(), row.contains_key("source"))
        {
            match (op.as_str(), row.remove("after")) {
                ("d", _) => return self.change(topic, offset, key, None),
                (_, Some(Value::Object(after))) => row = after,
                _ => {
                    return Err(at(format!(
                        "a change event with op {op:?} and no `after` row"
                    )))
                }
            }
        }
        match self.settings.pk_mode {
            PkMode::RecordKey => {
                let key =
                    key.ok_or_else(|| at("pk.mode=record_key but the record has no key".into()))?;
                row.extend(self.key_columns(key).map_err(at)?);
            }
            PkMode::Kafka => {
                let names = &self.settings.pk_fields;
                row.insert(names[0].clone(), Value::from(topic));
                row.insert(names[1].clone(), Value::from(0));
                row.insert(names[2].clone(), Value::from(offset));
            }
            PkMode::None | PkMode::RecordValue => {}
        }
        Ok(Some(Change::Upsert(row)))
    }

    /// The key as columns: a JSON object as it is, a plain value under the one pk field.
    fn key_columns(&self, key: &[u8]) -> Result<Map<String, Value>, String> {
        if let Ok(object) = json_object(key) {
            return Ok(object);
        }
        let [field] = self.settings.pk_fields.as_slice() else {
            return Err(
                "the key is not a JSON object, so pk.fields must name exactly one column for it"
                    .into(),
            );
        };
        let text = std::str::from_utf8(key).map_err(|_| "the key is not UTF-8".to_string())?;
        let value = serde_json::from_str(text).unwrap_or_else(|_| Value::from(text));
        Ok(Map::from_iter([(field.clone(), value)]))
    }

    fn write(&mut self, table_name: &str, changes: &[Change]) -> Result<(), TaskError> {
        if self.client.is_none() {
            self.client = Some(self.settings.connection.connect()?);
        }
        let table = self.table(table_name)?;
        let client = self
            .client
            .as_mut()
            .ok_or_else(|| TaskError::Retriable("not connected".into()))?;
        client.simple_query("BEGIN").map_err(task_error)?;
        let statements = runs(changes, self.settings.batch_size).try_for_each(|run| {
            let (sql, rows) = statement(&self.settings, &table, run)?;
            client
                .query(&sql, &[Some(&rows)])
                .map(|_| ())
                .map_err(|e| match task_error(e) {
                    TaskError::Fatal(m) => {
                        TaskError::Fatal(format!("writing table {table_name}: {m}"))
                    }
                    retriable => retriable,
                })
        });
        match statements {
            Ok(()) => client
                .simple_query("COMMIT")
                .map(|_| ())
                .map_err(task_error),
            Err(e) => {
                let _ = client.simple_query("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Columns and primary key of a table, looked up once.
    fn table(&mut self, table_name: &str) -> Result<Table, TaskError> {
        if let Some(table) = self.tables.get(table_name) {
            return Ok(table.clone());
        }
        let client = self
            .client
            .as_mut()
            .ok_or_else(|| TaskError::Retriable("not connected".into()))?;
        let name = table_name
            .split('.')
            .map(quote_ident)
            .collect::<Vec<_>>()
            .join(".");
        let found = client
            .query(
                "SELECT a.attname, coalesce(a.attnum = ANY(i.indkey), false) \
                 FROM pg_attribute a LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary \
                 WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                &[Some(&name)],
            )
            .map_err(task_error)?;
        if found.rows.is_empty() {
            return Err(TaskError::Fatal(format!(
                "table {table_name} does not exist (table.name.format is {:?}); create it first (auto.create is not supported)",
                self.settings.table_format
            )));
        }
        let mut columns = Vec::new();
        let mut table_pk = Vec::new();
        for row in found.rows {
            if let [Some(column), Some(is_pk)] = row.as_slice() {
                if is_pk == "t" {
                    table_pk.push(column.clone());
                }
                columns.push(column.clone());
            }
        }
        let pk = if self.settings.pk_fields.is_empty() {
            table_pk
        } else {
            self.settings.pk_fields.clone()
        };
        if self.settings.insert_mode != InsertMode::Insert || self.settings.delete_enabled {
            if pk.is_empty() {
                return Err(TaskError::Fatal(format!(
                    "table {table_name} has no primary key: set pk.fields"
                )));
            }
            if let Some(missing) = pk.iter().find(|c| !columns.contains(c)) {
                return Err(TaskError::Fatal(format!(
                    "pk.fields names {missing:?}, which is not a column of {table_name}"
                )));
            }
        }
        let table = Table { name, columns, pk };
        self.tables.insert(table_name.to_string(), table.clone());
        Ok(table)
    }
}

/// Consecutive changes of one kind, at most `batch_size` each.
fn runs(changes: &[Change], batch_size: usize) -> impl Iterator<Item = &[Change]> {
    changes
        .chunk_by(|a, b| {
            matches!(
                (a, b),
                (Change::Upsert(_), Change::Upsert(_)) | (Change::Delete(_), Change::Delete(_))
            )
        })
        .flat_map(move |run| run.chunks(batch_size))
}

/// The statement for one run and its one parameter (the rows as a JSON array).
fn statement(
    settings: &Settings,
    table: &Table,
    run: &[Change],
) -> Result<(String, String), TaskError> {
    let rows: Vec<&Map<String, Value>> = run
        .iter()
        .map(|c| match c {
            Change::Upsert(row) | Change::Delete(row) => row,
        })
        .collect();
    let source = format!(
        "jsonb_populate_recordset(NULL::{}, $1::jsonb) AS r",
        table.name
    );
    let pk_match = table
        .pk
        .iter()
        .map(|c| format!("t.{q} = r.{q}", q = quote_ident(c)))
        .collect::<Vec<_>>()
        .join(" AND ");
    if let Some(Change::Delete(_)) = run.first() {
        let sql = format!(
            "DELETE FROM {} AS t USING {source} WHERE {pk_match}",
            table.name
        );
        return Ok((
            sql,
            Value::from(
                rows.into_iter()
                    .cloned()
                    .map(Value::Object)
                    .collect::<Vec<_>>(),
            )
            .to_string(),
        ));
    }
    // The columns any row names that the table has (and the whitelist allows), in table order.
    let columns: Vec<&String> = table
        .columns
        .iter()
        .filter(|c| rows.iter().any(|r| r.contains_key(*c)))
        .filter(|c| {
            settings.whitelist.is_empty() || settings.whitelist.contains(c) || table.pk.contains(c)
        })
        .collect();
    if columns.is_empty() {
        return Err(TaskError::Fatal(format!(
            "no field of the records is a column of table {}",
            table.name
        )));
    }
    let list = columns
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ");
    let selected = columns
        .iter()
        .map(|c| format!("r.{}", quote_ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let rows = match settings.insert_mode {
        // One statement cannot change a row twice: keep the last record of each key.
        InsertMode::Upsert | InsertMode::Update => last_per_key(&rows, &table.pk),
        InsertMode::Insert => rows,
    };
    let sql = match settings.insert_mode {
        InsertMode::Insert => format!(
            "INSERT INTO {} ({list}) SELECT {selected} FROM {source}",
            table.name
        ),
        InsertMode::Upsert => {
            let updates: Vec<String> = columns
                .iter()
                .filter(|c| !table.pk.contains(c))
                .map(|c| format!("{q} = EXCLUDED.{q}", q = quote_ident(c)))
                .collect();
            let conflict = table
                .pk
                .iter()
                .map(|c| quote_ident(c))
                .collect::<Vec<_>>()
                .join(", ");
            let action = if updates.is_empty() {
                "NOTHING".to_string()
            } else {
                format!("UPDATE SET {}", updates.join(", "))
            };
            format!("INSERT INTO {} ({list}) SELECT {selected} FROM {source} ON CONFLICT ({conflict}) DO {action}", table.name)
        }
        InsertMode::Update => {
            let sets: Vec<String> = columns
                .iter()
                .filter(|c| !table.pk.contains(c))
                .map(|c| format!("{q} = r.{q}", q = quote_ident(c)))
                .collect();
            if sets.is_empty() {
                return Ok(("SELECT 1 WHERE $1::jsonb IS NOT NULL".into(), "[]".into()));
            }
            format!(
                "UPDATE {} AS t SET {} FROM {source} WHERE {pk_match}",
                table.name,
                sets.join(", ")
            )
        }
    };
    Ok((
        sql,
        Value::from(
            rows.into_iter()
                .cloned()
                .map(Value::Object)
                .collect::<Vec<_>>(),
        )
        .to_string(),
    ))
}

/// The rows with only the last one of each primary key kept, in order.
fn last_per_key<'a>(rows: &[&'a Map<String, Value>], pk: &[String]) -> Vec<&'a Map<String, Value>> {
    let key = |row: &Map<String, Value>| {
        pk.iter()
            .map(|c| row.get(c).map(Value::to_string))
            .collect::<Vec<_>>()
    };
    let mut last = BTreeMap::new();
    for (index, row) in rows.iter().enumerate() {
        last.insert(key(row), index);
    }
    rows.iter()
        .enumerate()
        .filter(|(index, row)| last.get(&key(row)) == Some(index))
        .map(|(_, row)| *row)
        .collect()
}

/// A JSON object, unwrapping the JSON converter's `{"schema": …, "payload": {…}}`.
fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, &'static str> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(mut object)) => {
            if object.len() == 2 && object.contains_key("schema") {
                if let Some(Value::Object(payload)) = object.remove("payload") {
                    return Ok(payload);
                }
            }
            Ok(object)
        }
        Ok(_) => Err("JSON but not an object"),
        Err(_) => Err("not JSON"),
    }
}

wasm_connect_sdk::export_sink!(PostgresSink);

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, Vec<ConfigError>> {
        let mut config: Config = [
            ("connection.url", "jdbc:postgresql://127.0.0.1:5432/db"),
            ("topics", "t"),
        ]
        .into_iter()
        .collect();
        for (k, v) in pairs {
            config.set(k, v);
        }
        Settings::from_config(&config)
    }

    #[test]
    fn confluent_rules_are_checked() {
        let keys = |pairs| {
            settings(pairs)
                .unwrap_err()
                .into_iter()
                .map(|e| e.key)
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&[("insert.mode", "upsert")]), ["pk.mode"]);
        assert_eq!(
            keys(&[("delete.enabled", "true"), ("pk.mode", "record_value")]),
            ["delete.enabled"]
        );
        assert_eq!(keys(&[("auto.create", "true")]), ["auto.create"]);
        assert_eq!(keys(&[("insert.mode", "merge")]), ["insert.mode"]);
        assert!(settings(&[
            ("insert.mode", "upsert"),
            ("pk.mode", "record_key"),
            ("delete.enabled", "true")
        ])
        .is_ok());
    }

    #[test]
    fn upserts_keep_the_last_row_of_a_key_and_deletes_match_the_key() {
        let s = settings(&[("insert.mode", "upsert"), ("pk.mode", "record_value")]).unwrap();
        let table = Table {
            name: "\"t\"".into(),
            columns: vec!["id".into(), "name".into(), "extra".into()],
            pk: vec!["id".into()],
        };
        let row = |id: i64, name: &str| {
            Change::Upsert(Map::from_iter([
                ("id".to_string(), Value::from(id)),
                ("name".to_string(), Value::from(name)),
            ]))
        };
        let changes = [row(1, "a"), row(1, "b"), row(2, "c")];
        let (sql, rows) = statement(&s, &table, &changes).unwrap();
        assert_eq!(
            sql,
            "INSERT INTO \"t\" (\"id\", \"name\") SELECT r.\"id\", r.\"name\" FROM jsonb_populate_recordset(NULL::\"t\", $1::jsonb) AS r ON CONFLICT (\"id\") DO UPDATE SET \"name\" = EXCLUDED.\"name\""
        );
        assert_eq!(rows, r#"[{"id":1,"name":"b"},{"id":2,"name":"c"}]"#);
        let delete = [Change::Delete(Map::from_iter([(
            "id".to_string(),
            Value::from(2),
        )]))];
        let (sql, _) = statement(&s, &table, &delete).unwrap();
        assert!(sql.starts_with("DELETE FROM \"t\" AS t USING"), "{sql}");
        let mixed = [row(1, "a"), delete[0].clone(), row(2, "x")];
        assert_eq!(runs(&mixed, 3000).count(), 3);
        assert_eq!(runs(&changes, 2).count(), 2);
    }

    #[test]
    fn values_are_json_objects_with_or_without_an_envelope() {
        assert_eq!(
            json_object(br#"{"schema":{},"payload":{"a":1}}"#).unwrap()["a"],
            1
        );
        assert_eq!(json_object(br#"{"a":1}"#).unwrap()["a"], 1);
        assert!(json_object(b"[1]").is_err());
        assert!(json_object(b"nope").is_err());
    }
}
