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
//!
//! With `snapshot.mode=initial` a first start reads the captured tables first (see
//! [`snapshot`]) and streams from the point the snapshot was taken.

mod snapshot;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pg_wire::pgoutput::{self, Datum, PgOutput, Relation};
use pg_wire::{
    quote_ident, task_error, Client, ConnectParams, Lsn, ReplicationMessage, PG_EPOCH_OFFSET_US,
};
use serde_json::{json, Map, Value};
use snapshot::Snapshot;
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
        "never (or no_data): only changes after the slot exists; initial: on the first start, every row of the captured tables as a read event (op r), then the changes.",
    )
    .default_value("never"),
    ConfigDef::optional(
        "snapshot.fetch.size",
        "Rows the initial snapshot reads per batch (one batch per poll).",
    )
    .typed(ValueType::Integer)
    .default_value("1024"),
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

/// Whether a first start reads the existing rows (`snapshot.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SnapshotMode {
    Never,
    Initial,
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
    snapshot: SnapshotMode,
    fetch_size: u32,
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
        let snapshot = match text("snapshot.mode", "never").as_str() {
            "never" | "no_data" => SnapshotMode::Never,
            "initial" => SnapshotMode::Initial,
            other => {
                errors.push(error(
                    "snapshot.mode",
                    format!("snapshot.mode must be initial or never (or no_data), not {other:?}"),
                ));
                SnapshotMode::Never
            }
        };
        let fetch_size = match text("snapshot.fetch.size", "1024").parse::<u32>() {
            Ok(n) if n > 0 => n,
            _ => {
                errors.push(error(
                    "snapshot.fetch.size",
                    "snapshot.fetch.size must be a positive number of rows".into(),
                ));
                1
            }
        };
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
            snapshot,
            fetch_size,
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

/// How the positions of snapshot events begin: `snapshot:<consistent point>:<schema.table>:<rows
/// read>`. The last event of a snapshot carries `<consistent point>:0` instead, a streaming
/// position: a task whose committed position is a snapshot one was stopped mid-snapshot.
const SNAPSHOT_POSITION: &str = "snapshot:";

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
    /// The replication connection; idle (no command) while a snapshot is read.
    stream: Client,
    /// The snapshot being read, before streaming starts.
    snapshot: Option<Snapshot>,
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
        let committed = host.committed_position(&settings.slot);
        let interrupted = committed
            .as_deref()
            .is_some_and(|text| text.starts_with(SNAPSHOT_POSITION));
        let resume = match committed {
            Some(text) if !interrupted => Some(parse_position(&text).ok_or_else(|| {
                TaskError::Fatal(format!("the committed position of slot {} ({text:?}) is not <LSN>:<count>; reset the connector's offsets", settings.slot))
            })?),
            _ => None,
        };
        // A first start (or one that interrupted its snapshot) takes the snapshot anew, on a
        // new slot: the stream must start where the snapshot was taken.
        let take_snapshot = settings.snapshot == SnapshotMode::Initial && resume.is_none();
        prepare(&settings, take_snapshot)?;
        let mut params = settings.params.clone();
        params.replication = true;
        let mut stream = Client::connect(&params).map_err(task_error)?;
        let snapshot = if take_snapshot {
            Some(snapshot::begin(
                &mut stream,
                &settings.params,
                &settings.slot,
                &settings.publication,
                &settings.tables,
            )?)
        } else {
            start_streaming(&mut stream, &settings)?;
            None
        };
        Ok(PostgresCdcTask {
            settings,
            stream,
            snapshot,
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
        if self.snapshot.is_some() {
            self.read_snapshot()?;
        } else {
            self.receive()?;
        }
        // While the snapshot is read its newest event is held back: whether it is the last
        // one (and so carries the streaming position) is known only after the next read.
        let hold = usize::from(self.snapshot.is_some());
        while out.count() < max_records
            && out.byte_len() < max_bytes as usize
            && self.ready.len() > hold
        {
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
        if let Some(snapshot) = self.snapshot.take() {
            snapshot.close();
        }
    }
}

/// A replication stream that failed cannot be picked up mid-protocol: the task fails (fatal)
/// so the host restarts it, and the new task reconnects from the committed position. (A
/// retriable error would have the host poll again on the dead connection.)
fn stream_lost(e: pg_wire::Error) -> TaskError {
    TaskError::Fatal(format!(
        "the replication connection failed: {e}; the task restarts from the committed position"
    ))
}

impl PostgresCdcTask {
    /// Reads the next batch of the snapshot when the held-back event is all that is left;
    /// after the last batch, streaming starts at the snapshot's consistent point.
    fn read_snapshot(&mut self) -> Result<(), TaskError> {
        let Some(snapshot) = self.snapshot.as_mut() else {
            return Ok(());
        };
        if self.ready.len() > 1 {
            return Ok(());
        }
        let consistent_point = snapshot.consistent_point;
        match snapshot.next(self.settings.fetch_size)? {
            Some(batch) => {
                let ts_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                let position = format!(
                    "{SNAPSHOT_POSITION}{consistent_point}:{}.{}:{}",
                    batch.relation.schema, batch.relation.name, batch.read
                );
                let source = Source {
                    ts_ms,
                    tx_id: None,
                    lsn: consistent_point,
                    snapshot: true,
                };
                for row in batch.rows {
                    let datums: Vec<Datum> = row
                        .into_iter()
                        .map(|v| v.map_or(Datum::Null, Datum::Text))
                        .collect();
                    let (topic, key, value) = envelope(
                        &self.settings,
                        &batch.relation,
                        None,
                        Some(&datums),
                        "r",
                        &source,
                    );
                    self.ready.push_back(Event {
                        topic,
                        key,
                        value: Some(value),
                        position: position.clone(),
                    });
                }
            }
            None => {
                if let Some(last) = self.ready.back_mut() {
                    last.position = format!("{consistent_point}:0");
                }
                if let Some(snapshot) = self.snapshot.take() {
                    snapshot.close();
                }
                // The stream cannot be started again on this connection: a restart streams
                // from the committed position (the snapshot's point once its end is stored).
                start_streaming(&mut self.stream, &self.settings).map_err(|e| {
                    TaskError::Fatal(format!("cannot stream after the snapshot: {e}"))
                })?;
                self.last_status = Instant::now();
            }
        }
        Ok(())
    }

    /// Receives from the replication stream until a transaction is released or the poll's
    /// wait is over; answers keepalives.
    fn receive(&mut self) -> Result<(), TaskError> {
        let deadline = Instant::now() + POLL_WAIT;
        while self.ready.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            match self
                .stream
                .replication_message(deadline - now)
                .map_err(stream_lost)?
            {
                Some(ReplicationMessage::XLogData {
                    wal_start,
                    wal_end,
                    data,
                }) => {
                    self.received = self.received.max(Lsn(wal_end));
                    self.apply(
                        pgoutput::decode(data).map_err(|e| TaskError::Fatal(e.to_string()))?,
                        Lsn(wal_start),
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
        Ok(())
    }

    /// Tells the server how far the stream was received and stored (not while a snapshot
    /// is read: the replication connection is not streaming yet).
    fn status(&mut self) -> Result<(), TaskError> {
        if self.snapshot.is_some() {
            return Ok(());
        }
        self.last_status = Instant::now();
        self.stream
            .standby_status(self.received.0, self.ledger.flushed.0)
            .map_err(stream_lost)
    }

    /// Applies one pgoutput message that starts at `lsn` in the WAL.
    fn apply(&mut self, message: PgOutput, lsn: Lsn) -> Result<(), TaskError> {
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
            PgOutput::Insert { relation, new } => {
                self.change(relation, None, Some(new), "c", lsn)?
            }
            PgOutput::Update { relation, old, new } => {
                self.change(relation, old, Some(new), "u", lsn)?
            }
            PgOutput::Delete { relation, old } => {
                self.change(relation, Some(old), None, "d", lsn)?
            }
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
        lsn: Lsn,
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
        let source = Source {
            ts_ms: transaction.commit_ms,
            tx_id: Some(transaction.xid),
            lsn,
            snapshot: false,
        };
        let (topic, key, value) = envelope(
            &self.settings,
            relation,
            before.as_deref(),
            after.as_deref(),
            op,
            &source,
        );
        transaction
            .changes
            .push((topic.clone(), key.clone(), Some(value)));
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

/// What an event's `source` tells beyond the table.
struct Source {
    ts_ms: i64,
    /// The change's transaction (none for a snapshot read).
    tx_id: Option<u32>,
    /// The change's place in the WAL; for a snapshot read, the slot's consistent point.
    lsn: Lsn,
    /// A snapshot read rather than a streamed change.
    snapshot: bool,
}

/// One event's topic, key (the replica-identity columns, if any) and Debezium envelope.
fn envelope(
    settings: &Settings,
    relation: &Relation,
    before: Option<&[Datum]>,
    after: Option<&[Datum]>,
    op: &str,
    source: &Source,
) -> (String, Option<String>, String) {
    let key = after
        .or(before)
        .map(|d| row(relation, d, true))
        .filter(|k| !k.is_empty())
        .map(|k| Value::Object(k).to_string());
    let block = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "connector": "postgresql",
        "name": settings.prefix,
        "ts_ms": source.ts_ms,
        "snapshot": if source.snapshot { "true" } else { "false" },
        "db": settings.params.database,
        "schema": relation.schema,
        "table": relation.name,
        "txId": source.tx_id,
        "lsn": source.lsn.0,
    });
    let value = json!({
        "before": before.map(|d| row(relation, d, false)),
        "after": after.map(|d| row(relation, d, false)),
        "source": block,
        "op": op,
        "ts_ms": source.ts_ms,
    });
    (
        format!("{}.{}.{}", settings.prefix, relation.schema, relation.name),
        key,
        value.to_string(),
    )
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

/// Streams the slot from where it stands (its consistent point after a snapshot).
fn start_streaming(stream: &mut Client, settings: &Settings) -> Result<(), TaskError> {
    let publication = quote_ident(&settings.publication).replace('\'', "''");
    stream
        .start_replication(&format!(
            "START_REPLICATION SLOT {} LOGICAL 0/0 (proto_version '1', publication_names '{publication}')",
            quote_ident(&settings.slot)
        ))
        .map_err(task_error)
}

/// Makes sure the publication exists, and the slot: created if missing or, when a snapshot
/// is to be taken (`renew_slot`), dropped so the snapshot can create it anew (over a normal
/// connection).
fn prepare(settings: &Settings, renew_slot: bool) -> Result<(), TaskError> {
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
    let slot_exists = exists(
        &mut client,
        "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
        &settings.slot,
    )?;
    if renew_slot && slot_exists {
        drop_slot(&mut client, &settings.slot)?;
    } else if !renew_slot && !slot_exists {
        client
            .query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", &[Some(&settings.slot)])
            .map_err(|e| TaskError::Fatal(format!("cannot create replication slot {} (the user needs REPLICATION and the server wal_level=logical): {e}", settings.slot)))?;
    }
    client.close();
    Ok(())
}

/// How long a slot may stay in use (by the walsender of a task that just went away) before
/// dropping it fails.
const SLOT_RELEASE_WAIT: Duration = Duration::from_secs(5);

/// Drops a slot whose stream nothing was stored from (or whose snapshot was interrupted).
fn drop_slot(client: &mut Client, slot: &str) -> Result<(), TaskError> {
    let deadline = Instant::now() + SLOT_RELEASE_WAIT;
    loop {
        let active = client
            .query(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                &[Some(slot)],
            )
            .map_err(task_error)?;
        if active.rows.first().and_then(|r| r.first()) != Some(&Some("t".to_string()))
            || Instant::now() >= deadline
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    client
        .query("SELECT pg_drop_replication_slot($1)", &[Some(slot)])
        .map_err(|e| TaskError::Fatal(format!("cannot drop replication slot {slot} to take the initial snapshot anew (is another client streaming it? stop it, or choose another slot.name): {e}")))?;
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
    fn snapshot_mode_is_checked_and_a_snapshot_read_is_an_r_event_at_the_consistent_point() {
        let config = |mode: &str| -> Config {
            [
                ("database.hostname", "db"),
                ("topic.prefix", "cdc"),
                ("snapshot.mode", mode),
            ]
            .into_iter()
            .collect()
        };
        let errors = Settings::from_config(&config("always")).unwrap_err();
        assert_eq!(errors[0].key, "snapshot.mode");
        let settings = Settings::from_config(&config("initial")).unwrap();
        assert_eq!(settings.snapshot, SnapshotMode::Initial);
        let source = Source {
            ts_ms: 5,
            tx_id: None,
            lsn: Lsn(0x16_0000_0028),
            snapshot: true,
        };
        let datums = [Datum::Text("7".into()), Datum::Null, Datum::Null];
        let (topic, key, value) =
            envelope(&settings, &relation(), None, Some(&datums), "r", &source);
        assert_eq!(topic, "cdc.public.t");
        assert_eq!(key.as_deref(), Some(r#"{"id":7}"#));
        let value: Value = serde_json::from_str(&value).unwrap();
        assert_eq!(value["op"], "r");
        assert_eq!(value["before"], Value::Null);
        assert_eq!(value["after"], json!({"id": 7, "ok": null, "meta": null}));
        assert_eq!(value["source"]["snapshot"], "true");
        assert_eq!(value["source"]["lsn"], 0x16_0000_0028u64);
        assert_eq!(value["source"]["txId"], Value::Null);
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
