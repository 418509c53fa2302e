//! `postgres-cdc`: streams row changes from PostgreSQL logical replication (`pgoutput`) as
//! Debezium-style change events, answering to `io.debezium.connector.postgresql.PostgresConnector`
//! keys.
//!
//! The task holds a replication connection to its slot. Changes are released when their
//! transaction commits, each with position `"<commit end LSN>:<n>"` (the n-th change of that
//! transaction). The slot's flush LSN is advanced only in `commit`, once the host has stored
//! a whole transaction, so the server keeps (and after a restart sends again) everything not
//! yet stored; the task skips what the committed position says was delivered: a `kill -9`
//! neither loses nor duplicates a change. Keepalives are answered during `poll`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use pg_wire::pgoutput::{self, Datum, PgOutput, Relation};
use pg_wire::{
    quote_ident, task_error, Client, ConnectParams, Lsn, ReplicationMessage, PG_EPOCH_OFFSET_US,
};
use serde_json::{json, Map, Value};
use wasm_connect_sdk::{
    BatchWriter, Config, ConfigDef, ConfigError, Connector, Descriptor, Host, Kind, Position,
    Record, SourceConnector, SourceTask, TaskError, ValueType,
};

pub struct PostgresCdc;

const CONFIG_DEFS: &[ConfigDef] = &[
    ConfigDef::required(
        "database.hostname",
        "The server's host; list host:port in `network.allow`.",
    ),
    ConfigDef::optional("database.port", "The server's port.")
        .typed(ValueType::Integer)
        .default_value("5432"),
    ConfigDef::optional("database.user", "A user with the REPLICATION attribute.")
        .default_value("postgres"),
    ConfigDef {
        secret: true,
        ..ConfigDef::optional("database.password", "The user's password.")
    },
    ConfigDef::optional("database.dbname", "The database to capture.").default_value("postgres"),
    ConfigDef::required(
        "topic.prefix",
        "Changes of table S.T go to topic <prefix>.S.T.",
    ),
    ConfigDef::optional(
        "slot.name",
        "The logical replication slot (created if missing).",
    )
    .default_value("debezium"),
    ConfigDef::optional("publication.name", "The publication to stream.")
        .default_value("dbz_publication"),
    ConfigDef::optional(
        "publication.autocreate.mode",
        "all_tables, filtered (the tables of table.include.list) or disabled.",
    )
    .default_value("all_tables"),
    ConfigDef::optional(
        "table.include.list",
        "Comma-separated schema.table names to capture (default: every table of the publication).",
    )
    .typed(ValueType::List),
    ConfigDef::optional("plugin.name", "The output plugin; only pgoutput.")
        .default_value("pgoutput"),
    ConfigDef::optional(
        "snapshot.mode",
        "never (or no_data): only changes after the slot exists.",
    )
    .default_value("never"),
    ConfigDef::optional(
        "tombstones.on.delete",
        "Follow a delete event by a record with a null value.",
    )
    .typed(ValueType::Boolean)
    .default_value("true"),
];

/// How the publication comes to exist (`publication.autocreate.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Autocreate {
    AllTables,
    Filtered,
    Disabled,
}

#[derive(Debug, Clone)]
struct Settings {
    params: ConnectParams,
    prefix: String,
    slot: String,
    publication: String,
    autocreate: Autocreate,
    tables: Vec<String>,
    tombstones: bool,
}

impl Settings {
    fn from_config(config: &Config) -> Result<Settings, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let error = |key: &str, message: String| ConfigError {
            key: key.into(),
            message,
        };
        let text = |key: &str, default: &str| {
            config
                .get(key)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .unwrap_or(default)
                .to_string()
        };
        let host = text("database.hostname", "");
        if host.is_empty() {
            errors.push(error(
                "database.hostname",
                "Request config key: database.hostname".into(),
            ));
        }
        let port = text("database.port", "5432")
            .parse::<u16>()
            .unwrap_or_else(|_| {
                errors.push(error(
                    "database.port",
                    "database.port must be a port number".into(),
                ));
                0
            });
        let autocreate = match text("publication.autocreate.mode", "all_tables").as_str() {
            "all_tables" => Autocreate::AllTables,
            "filtered" => Autocreate::Filtered,
            "disabled" => Autocreate::Disabled,
            other => {
                errors.push(error("publication.autocreate.mode", format!("publication.autocreate.mode must be all_tables, filtered or disabled, not {other:?}")));
                Autocreate::Disabled
            }
        };
        let tables: Vec<String> = text("table.include.list", "")
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect();
        if autocreate == Autocreate::Filtered && tables.is_empty() {
            errors.push(error(
                "table.include.list",
                "publication.autocreate.mode=filtered needs table.include.list".into(),
            ));
        }
        if text("plugin.name", "pgoutput") != "pgoutput" {
            errors.push(error(
                "plugin.name",
                "only plugin.name=pgoutput is supported (built into PostgreSQL 10+)".into(),
            ));
        }
        if !matches!(text("snapshot.mode", "never").as_str(), "never" | "no_data") {
            errors.push(error("snapshot.mode", "only snapshot.mode=never (or no_data) is supported: changes are captured from when the slot is created".into()));
        }
        let tombstones = match text("tombstones.on.delete", "true").as_str() {
            "true" => true,
            "false" => false,
            other => {
                errors.push(error(
                    "tombstones.on.delete",
                    format!("tombstones.on.delete must be true or false, not {other:?}"),
                ));
                true
            }
        };
        let prefix = text("topic.prefix", "");
        if prefix.is_empty() {
            errors.push(error(
                "topic.prefix",
                "Request config key: topic.prefix".into(),
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let user = text("database.user", "postgres");
        Ok(Settings {
            params: ConnectParams {
                host,
                port,
                database: text("database.dbname", "postgres"),
                user,
                password: config.get("database.password").map(String::from),
                replication: false,
                timeout: Duration::from_secs(10),
            },
            prefix,
            slot: text("slot.name", "debezium"),
            publication: text("publication.name", "dbz_publication"),
            autocreate,
            tables,
            tombstones,
        })
    }
}

impl Connector for PostgresCdc {
    fn descriptor() -> Descriptor {
        Descriptor {
            name: "postgres-cdc",
            version: env!("CARGO_PKG_VERSION"),
            kind: Kind::Source,
            description: "Streams PostgreSQL row changes (logical replication, pgoutput) as Debezium change events.",
            aliases: &["io.debezium.connector.postgresql.PostgresConnector"],
            config_defs: CONFIG_DEFS,
        }
    }

    fn validate(config: &Config) -> Result<(), Vec<ConfigError>> {
        Settings::from_config(config).map(|_| ())
    }
}

impl SourceConnector for PostgresCdc {
    type Task = PostgresCdcTask;
}

/// Where a restarted task resumes: the transaction of the committed position, and how many
/// of its changes were stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Resume {
    end_lsn: Lsn,
    delivered: u64,
}

fn parse_position(text: &str) -> Option<Resume> {
    let (lsn, n) = text.rsplit_once(':')?;
    Some(Resume {
        end_lsn: lsn.parse().ok()?,
        delivered: n.parse().ok()?,
    })
}

/// One change record ready to go out.
#[derive(Debug, Clone, PartialEq)]
struct Event {
    topic: String,
    key: Option<String>,
    /// `None` for a tombstone.
    value: Option<String>,
    position: String,
}

/// The transaction being received.
struct Transaction {
    xid: u32,
    commit_ms: i64,
    /// Topic, key, value of each change so far.
    changes: Vec<(String, Option<String>, Option<String>)>,
}

pub struct PostgresCdcTask {
    settings: Settings,
    stream: Client,
    relations: HashMap<u32, Relation>,
    transaction: Option<Transaction>,
    ready: VecDeque<Event>,
    ledger: Ledger,
    /// The furthest WAL position received.
    received: Lsn,
    last_status: Instant,
}

/// Which transactions are released and stored: decides what a (restarted) task delivers
/// and how far the slot may be flushed.
#[derive(Debug, Default)]
struct Ledger {
    resume: Option<Resume>,
    /// Changes per transaction (by commit end LSN) released and not yet stored whole.
    totals: BTreeMap<Lsn, u64>,
    /// The furthest LSN the slot may let go of.
    flushed: Lsn,
}

impl Ledger {
    /// A transaction of `total` changes committed at `end_lsn`: how many of its first
    /// changes were stored before a restart (skip them), or `None` when nothing is left to
    /// deliver. Such a transaction (stored before a restart, or with no change of a
    /// captured table) is flushed at once when nothing before it is pending, so the slot
    /// does not hold WAL for it.
    fn release(&mut self, end_lsn: Lsn, total: u64) -> Option<u64> {
        let skip = match self.resume {
            Some(resume) if end_lsn < resume.end_lsn => u64::MAX,
            Some(resume) if end_lsn == resume.end_lsn => resume.delivered,
            _ => 0,
        };
        if self.resume.is_some_and(|r| end_lsn >= r.end_lsn) {
            self.resume = None;
        }
        if skip >= total {
            if self.totals.is_empty() {
                self.flushed = self.flushed.max(end_lsn);
            }
            return None;
        }
        self.totals.insert(end_lsn, total);
        Some(skip)
    }

    /// The host stored everything up to `stored`: a whole transaction may be flushed.
    fn stored(&mut self, stored: Resume) {
        if self.totals.get(&stored.end_lsn) == Some(&stored.delivered) {
            self.flushed = self.flushed.max(stored.end_lsn);
            self.totals.retain(|lsn, _| *lsn > stored.end_lsn);
        } else {
            self.totals.retain(|lsn, _| *lsn >= stored.end_lsn);
        }
    }
}

/// How long one poll waits for a transaction to complete.
const POLL_WAIT: Duration = Duration::from_millis(500);
/// Status updates at least this often, well within the server's `wal_sender_timeout`.
const STATUS_EVERY: Duration = Duration::from_secs(5);

impl SourceTask for PostgresCdcTask {
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
        let resume = match host.committed_position(&settings.slot) {
            Some(text) => Some(parse_position(&text).ok_or_else(|| {
                TaskError::Fatal(format!("the committed position of slot {} ({text:?}) is not <LSN>:<count>; reset the connector's offsets", settings.slot))
            })?),
            None => None,
        };
        prepare(&settings)?;
        let mut params = settings.params.clone();
        params.replication = true;
        let mut stream = Client::connect(&params).map_err(task_error)?;
        let publication = quote_ident(&settings.publication).replace('\'', "''");
        stream
            .start_replication(&format!(
                "START_REPLICATION SLOT {} LOGICAL 0/0 (proto_version '1', publication_names '{publication}')",
                quote_ident(&settings.slot)
            ))
            .map_err(task_error)?;
        Ok(PostgresCdcTask {
            settings,
            stream,
            relations: HashMap::new(),
            transaction: None,
            ready: VecDeque::new(),
            ledger: Ledger {
                resume,
                ..Ledger::default()
            },
            received: Lsn(0),
            last_status: Instant::now(),
        })
    }

    fn poll(
        &mut self,
        out: &mut BatchWriter,
        max_records: u32,
        max_bytes: u32,
    ) -> Result<(), TaskError> {
        let deadline = Instant::now() + POLL_WAIT;
        while self.ready.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            match self
                .stream
                .replication_message(deadline - now)
                .map_err(task_error)?
            {
                Some(ReplicationMessage::XLogData { wal_end, data, .. }) => {
                    self.received = self.received.max(Lsn(wal_end));
                    self.apply(
                        pgoutput::decode(data).map_err(|e| TaskError::Fatal(e.to_string()))?,
                    )?;
                }
                Some(ReplicationMessage::Keepalive { wal_end, reply }) => {
                    self.received = self.received.max(Lsn(wal_end));
                    if reply {
                        self.status()?;
                    }
                }
                None => break,
            }
        }
        if self.last_status.elapsed() >= STATUS_EVERY {
            self.status()?;
        }
        while out.count() < max_records && out.byte_len() < max_bytes as usize {
            let Some(event) = self.ready.pop_front() else {
                break;
            };
            out.push(&Record {
                key: event.key.as_deref().map(str::as_bytes),
                value: event.value.as_deref().unwrap_or("").as_bytes(),
                tombstone: event.value.is_none(),
                topic: &event.topic,
                partition: &self.settings.slot,
                position: &event.position,
                ..Record::default()
            })
            .map_err(|e| TaskError::Fatal(format!("a change does not fit a record: {e}")))?;
        }
        Ok(())
    }

    /// A transaction whose last change is stored is flushed to the slot.
    fn commit(&mut self, positions: &[Position]) {
        for position in positions
            .iter()
            .filter(|p| p.partition == self.settings.slot)
        {
            let Some(stored) = parse_position(&position.position) else {
                continue;
            };
            self.ledger.stored(stored);
        }
        // A failed status update surfaces on the next poll's read.
        let _ = self.status();
    }

    fn stop(&mut self) {
        let _ = self.status();
    }
}

impl PostgresCdcTask {
    fn status(&mut self) -> Result<(), TaskError> {
        self.last_status = Instant::now();
        self.stream
            .standby_status(self.received.0, self.ledger.flushed.0)
            .map_err(task_error)
    }

    fn apply(&mut self, message: PgOutput) -> Result<(), TaskError> {
        match message {
            PgOutput::Begin {
                xid,
                commit_time_us,
                ..
            } => {
                self.transaction = Some(Transaction {
                    xid,
                    commit_ms: (commit_time_us + PG_EPOCH_OFFSET_US) / 1000,
                    changes: Vec::new(),
                });
            }
            PgOutput::Relation(relation) => {
                self.relations.insert(relation.id, relation);
            }
            PgOutput::Insert { relation, new } => self.change(relation, None, Some(new), "c")?,
            PgOutput::Update { relation, old, new } => {
                self.change(relation, old, Some(new), "u")?
            }
            PgOutput::Delete { relation, old } => self.change(relation, Some(old), None, "d")?,
            PgOutput::Commit { end_lsn, .. } => self.release(end_lsn),
            PgOutput::Truncate { .. } | PgOutput::Ignored(_) => {}
        }
        Ok(())
    }

    fn change(
        &mut self,
        relation: u32,
        before: Option<Vec<Datum>>,
        after: Option<Vec<Datum>>,
        op: &str,
    ) -> Result<(), TaskError> {
        let relation = self.relations.get(&relation).ok_or_else(|| {
            TaskError::Fatal(format!(
                "a change names relation {relation}, which the stream never described"
            ))
        })?;
        let qualified = format!("{}.{}", relation.schema, relation.name);
        if !self.settings.tables.is_empty() && !self.settings.tables.contains(&qualified) {
            return Ok(());
        }
        let transaction = self
            .transaction
            .as_mut()
            .ok_or_else(|| TaskError::Fatal("a change arrived outside a transaction".into()))?;
        let before_row = before.as_ref().map(|d| row(relation, d, false));
        let after_row = after.as_ref().map(|d| row(relation, d, false));
        let key_source = after.as_ref().or(before.as_ref());
        let key = key_source
            .map(|d| Value::Object(row(relation, d, true)))
            .filter(|k| k.as_object().is_some_and(|o| !o.is_empty()));
        let envelope = json!({
            "before": before_row,
            "after": after_row,
            "source": {
                "version": env!("CARGO_PKG_VERSION"),
                "connector": "postgresql",
                "name": self.settings.prefix,
                "ts_ms": transaction.commit_ms,
                "db": self.settings.params.database,
                "schema": relation.schema,
                "table": relation.name,
                "txId": transaction.xid,
            },
            "op": op,
            "ts_ms": transaction.commit_ms,
        });
        let topic = format!("{}.{qualified}", self.settings.prefix);
        let key = key.map(|k| k.to_string());
        transaction
            .changes
            .push((topic.clone(), key.clone(), Some(envelope.to_string())));
        if op == "d" && self.settings.tombstones {
            transaction.changes.push((topic, key, None));
        }
        Ok(())
    }

    /// The transaction committed: its changes become events, less those already stored.
    fn release(&mut self, end_lsn: Lsn) {
        let Some(transaction) = self.transaction.take() else {
            return;
        };
        let total = transaction.changes.len() as u64;
        let Some(skip) = self.ledger.release(end_lsn, total) else {
            return;
        };
        for (n, (topic, key, value)) in transaction
            .changes
            .into_iter()
            .enumerate()
            .skip(skip as usize)
        {
            self.ready.push_back(Event {
                topic,
                key,
                value,
                position: format!("{end_lsn}:{}", n + 1),
            });
        }
    }
}

/// The columns of a row as JSON (only the key columns with `key_only`), typed by column type.
fn row(relation: &Relation, datums: &[Datum], key_only: bool) -> Map<String, Value> {
    relation
        .columns
        .iter()
        .zip(datums)
        .filter(|(column, _)| !key_only || column.key)
        .map(|(column, datum)| {
            let value = match datum {
                Datum::Null => Value::Null,
                Datum::Unchanged => Value::from("__debezium_unavailable_value"),
                Datum::Text(text) => typed(column.type_oid, text),
            };
            (column.name.clone(), value)
        })
        .collect()
}

/// Booleans, integers, floats and JSON as JSON values; everything else as its text.
fn typed(type_oid: u32, text: &str) -> Value {
    let parsed = match type_oid {
        16 => Some(Value::from(text == "t")),
        20 | 21 | 23 | 26 => text.parse::<i64>().ok().map(Value::from),
        700 | 701 => text
            .parse::<f64>()
            .ok()
            .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number)),
        114 | 3802 => serde_json::from_str(text).ok(),
        _ => None,
    };
    parsed.unwrap_or_else(|| Value::from(text))
}

/// Makes sure the publication and the slot exist (over a normal connection).
fn prepare(settings: &Settings) -> Result<(), TaskError> {
    let mut client = Client::connect(&settings.params).map_err(task_error)?;
    let exists = |client: &mut Client, sql: &str, name: &str| -> Result<bool, TaskError> {
        Ok(!client
            .query(sql, &[Some(name)])
            .map_err(task_error)?
            .rows
            .is_empty())
    };
    if !exists(
        &mut client,
        "SELECT 1 FROM pg_publication WHERE pubname = $1",
        &settings.publication,
    )? {
        let name = quote_ident(&settings.publication);
        let sql = match settings.autocreate {
            Autocreate::AllTables => format!("CREATE PUBLICATION {name} FOR ALL TABLES"),
            Autocreate::Filtered => {
                let tables: Vec<String> = settings
                    .tables
                    .iter()
                    .map(|t| t.split('.').map(quote_ident).collect::<Vec<_>>().join("."))
                    .collect();
                format!("CREATE PUBLICATION {name} FOR TABLE {}", tables.join(", "))
            }
            Autocreate::Disabled => {
                return Err(TaskError::Fatal(format!(
                    "publication {} does not exist; create it (CREATE PUBLICATION … FOR ALL TABLES) or set publication.autocreate.mode=all_tables",
                    settings.publication
                )))
            }
        };
        client.simple_query(&sql).map_err(|e| {
            TaskError::Fatal(format!(
                "cannot create publication {}: {e}",
                settings.publication
            ))
        })?;
    }
    if !exists(
        &mut client,
        "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
        &settings.slot,
    )? {
        client
            .query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", &[Some(&settings.slot)])
            .map_err(|e| TaskError::Fatal(format!("cannot create replication slot {} (the user needs REPLICATION and the server wal_level=logical): {e}", settings.slot)))?;
    }
    client.close();
    Ok(())
}

wasm_connect_sdk::export_source!(PostgresCdc);

#[cfg(test)]
mod tests {
    use super::*;
    use pg_wire::pgoutput::Column;

    fn relation() -> Relation {
        Relation {
            id: 1,
            schema: "public".into(),
            name: "t".into(),
            columns: vec![
                Column {
                    name: "id".into(),
                    type_oid: 20,
                    key: true,
                },
                Column {
                    name: "ok".into(),
                    type_oid: 16,
                    key: false,
                },
                Column {
                    name: "meta".into(),
                    type_oid: 3802,
                    key: false,
                },
            ],
        }
    }

    #[test]
    fn columns_are_typed_and_keys_hold_the_key_columns() {
        let relation = relation();
        let datums = [
            Datum::Text("7".into()),
            Datum::Text("t".into()),
            Datum::Text(r#"{"a":[1]}"#.into()),
        ];
        assert_eq!(
            Value::Object(row(&relation, &datums, false)),
            json!({"id": 7, "ok": true, "meta": {"a": [1]}})
        );
        assert_eq!(
            Value::Object(row(&relation, &datums, true)),
            json!({"id": 7})
        );
        assert_eq!(typed(1700, "1.50"), json!("1.50"));
    }

    #[test]
    fn a_restart_skips_what_was_stored_and_the_slot_advances_only_over_stored_transactions() {
        let (a, b, c) = (Lsn(100), Lsn(200), Lsn(300));
        let mut ledger = Ledger {
            resume: Some(Resume {
                end_lsn: b,
                delivered: 2,
            }),
            ..Ledger::default()
        };
        assert_eq!(ledger.release(a, 4), None, "stored before the restart");
        assert_eq!(ledger.flushed, a);
        assert_eq!(ledger.release(b, 5), Some(2), "the first 2 were stored");
        assert_eq!(ledger.release(c, 0), None, "no captured change");
        assert_eq!(ledger.flushed, a, "b is still pending");
        ledger.stored(Resume {
            end_lsn: b,
            delivered: 4,
        });
        assert_eq!(ledger.flushed, a, "b is stored only in part");
        ledger.stored(Resume {
            end_lsn: b,
            delivered: 5,
        });
        assert_eq!(ledger.flushed, b);
        let mut done = Ledger {
            resume: Some(Resume {
                end_lsn: c,
                delivered: 3,
            }),
            ..Ledger::default()
        };
        assert_eq!(done.release(c, 3), None, "a transaction stored whole");
        assert_eq!(done.flushed, c, "the slot moves past it at once");
    }

    #[test]
    fn positions_round_trip() {
        assert_eq!(
            parse_position("16/B374D848:3"),
            Some(Resume {
                end_lsn: Lsn(0x16_B374_D848),
                delivered: 3
            })
        );
        assert_eq!(parse_position("16/B374D848"), None);
    }
}
