//! Connector state in redb: configs, task configs, source positions, sink offsets.
//!
//! Every write is one durable redb transaction, so a crash leaves either the old or the new
//! state, never a mix (e.g. sink offsets and the sink's positions always move together).

use std::collections::BTreeMap;
use std::path::Path;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

/// A config as the REST APIs show it: string keys to string values.
pub type Properties = BTreeMap<String, String>;

/// Connector name → JSON of [`StoredConnector`].
const CONNECTORS: TableDefinition<&str, &[u8]> = TableDefinition::new("connectors");
/// `connector \0 partition` → position, for sources.
const SOURCE_POSITIONS: TableDefinition<&str, &str> = TableDefinition::new("source_positions");
/// `connector \0 partition` → position a sink returned from `flush`.
const SINK_POSITIONS: TableDefinition<&str, &str> = TableDefinition::new("sink_positions");
/// `connector \0 topic` → next offset the sink reads.
const SINK_OFFSETS: TableDefinition<&str, u64> = TableDefinition::new("sink_offsets");

#[derive(Debug, thiserror::Error)]
#[error("state store {path}: {source}")]
pub struct StateError {
    path: String,
    source: redb::Error,
}

/// A connector's stored config, its task configs and the state the user asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredConnector {
    pub config: Properties,
    pub tasks: Vec<Properties>,
    #[serde(default)]
    pub target: TargetState,
}

/// The state a user asked a connector to be in; survives restarts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TargetState {
    /// Tasks run.
    #[default]
    Running,
    /// Tasks stay allocated but do not poll or put.
    Paused,
    /// Tasks are shut down; config and offsets are kept.
    Stopped,
}

impl TargetState {
    /// Every target, in the order the API documents them.
    pub const ALL: [TargetState; 3] = [
        TargetState::Running,
        TargetState::Paused,
        TargetState::Stopped,
    ];
}

/// The redb database under the data dir.
pub struct StateStore {
    db: Database,
    path: String,
}

impl StateStore {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let label = path.display().to_string();
        let db = Database::create(path).map_err(|e| StateError {
            path: label.clone(),
            source: e.into(),
        })?;
        let store = StateStore { db, path: label };
        store.write(|tx| {
            tx.open_table(CONNECTORS)?;
            tx.open_table(SOURCE_POSITIONS)?;
            tx.open_table(SINK_POSITIONS)?;
            tx.open_table(SINK_OFFSETS)?;
            Ok(())
        })?;
        Ok(store)
    }

    /// Every stored connector, by name.
    pub fn connectors(&self) -> Result<BTreeMap<String, StoredConnector>, StateError> {
        self.read(|tx| {
            let table = tx.open_table(CONNECTORS)?;
            let mut out = BTreeMap::new();
            for entry in table.iter()? {
                let (name, value) = entry?;
                // A record this build cannot parse is skipped rather than failing the host.
                if let Ok(stored) = serde_json::from_slice(value.value()) {
                    out.insert(name.value().to_string(), stored);
                }
            }
            Ok(out)
        })
    }

    /// Stores (or replaces) a connector and its task configs.
    pub fn put_connector(&self, name: &str, connector: &StoredConnector) -> Result<(), StateError> {
        let json = serde_json::to_vec(connector).unwrap_or_default();
        self.write(|tx| {
            tx.open_table(CONNECTORS)?.insert(name, json.as_slice())?;
            Ok(())
        })
    }

    /// Deletes a connector's config; its positions and offsets stay, so a connector created
    /// again under the same name resumes where it stopped (as in Kafka Connect).
    pub fn delete_connector(&self, name: &str) -> Result<(), StateError> {
        self.write(|tx| {
            tx.open_table(CONNECTORS)?.remove(name)?;
            Ok(())
        })
    }

    /// A source connector's committed positions, by partition.
    pub fn source_positions(
        &self,
        connector: &str,
    ) -> Result<BTreeMap<String, String>, StateError> {
        self.read(|tx| {
            scan_prefix(&tx.open_table(SOURCE_POSITIONS)?, connector, |v| {
                v.to_string()
            })
        })
    }

    /// Commits source positions (partition → position); without `durable`, the commit
    /// becomes durable with the next durable one (the topic logs hold the positions too).
    pub fn commit_source_positions(
        &self,
        connector: &str,
        positions: &[(String, String)],
        durable: bool,
    ) -> Result<(), StateError> {
        let durability = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        self.write_with(durability, |tx| {
            let mut table = tx.open_table(SOURCE_POSITIONS)?;
            for (partition, position) in positions {
                table.insert(scoped_key(connector, partition).as_str(), position.as_str())?;
            }
            Ok(())
        })
    }

    /// Sets or (with `None`) removes source positions, durably.
    pub fn set_source_positions(
        &self,
        connector: &str,
        changes: &[(String, Option<String>)],
    ) -> Result<(), StateError> {
        self.write(|tx| {
            let mut table = tx.open_table(SOURCE_POSITIONS)?;
            for (partition, position) in changes {
                let key = scoped_key(connector, partition);
                match position {
                    Some(position) => table.insert(key.as_str(), position.as_str())?,
                    None => table.remove(key.as_str())?,
                };
            }
            Ok(())
        })
    }

    /// Sets or (with `None`) removes a sink's next offsets.
    pub fn set_sink_offsets(
        &self,
        connector: &str,
        changes: &[(String, Option<u64>)],
    ) -> Result<(), StateError> {
        self.write(|tx| {
            let mut table = tx.open_table(SINK_OFFSETS)?;
            for (topic, offset) in changes {
                let key = scoped_key(connector, topic);
                match offset {
                    Some(offset) => table.insert(key.as_str(), *offset)?,
                    None => table.remove(key.as_str())?,
                };
            }
            Ok(())
        })
    }

    /// A sink connector's next offsets (topic → offset) and its flushed positions.
    pub fn sink_state(&self, connector: &str) -> Result<SinkState, StateError> {
        self.read(|tx| {
            Ok(SinkState {
                offsets: scan_prefix(&tx.open_table(SINK_OFFSETS)?, connector, |v| v)?,
                positions: scan_prefix(&tx.open_table(SINK_POSITIONS)?, connector, |v| {
                    v.to_string()
                })?,
            })
        })
    }

    /// Commits a sink's next offsets (topic → offset) together with the positions its flush
    /// returned.
    pub fn commit_sink(
        &self,
        connector: &str,
        next_offsets: &[(String, u64)],
        positions: &[(String, String)],
    ) -> Result<(), StateError> {
        self.write(|tx| {
            let mut offsets = tx.open_table(SINK_OFFSETS)?;
            for (topic, next_offset) in next_offsets {
                offsets.insert(scoped_key(connector, topic).as_str(), *next_offset)?;
            }
            let mut table = tx.open_table(SINK_POSITIONS)?;
            for (partition, position) in positions {
                table.insert(scoped_key(connector, partition).as_str(), position.as_str())?;
            }
            Ok(())
        })
    }

    fn write(
        &self,
        body: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), StateError> {
        self.write_with(Durability::Immediate, body)
    }

    fn write_with(
        &self,
        durability: Durability,
        body: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), StateError> {
        let run = || -> Result<(), redb::Error> {
            let mut tx = self.db.begin_write()?;
            tx.set_durability(durability)?;
            body(&tx)?;
            tx.commit()?;
            Ok(())
        };
        run().map_err(|source| StateError {
            path: self.path.clone(),
            source,
        })
    }

    fn read<T>(
        &self,
        body: impl FnOnce(&redb::ReadTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, StateError> {
        let run = || -> Result<T, redb::Error> { body(&self.db.begin_read()?) };
        run().map_err(|source| StateError {
            path: self.path.clone(),
            source,
        })
    }
}

/// What a sink task resumes from.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SinkState {
    pub offsets: BTreeMap<String, u64>,
    pub positions: BTreeMap<String, String>,
}

/// `connector \0 item`: NUL cannot occur in connector names, so prefixes never collide.
fn scoped_key(connector: &str, item: &str) -> String {
    format!("{connector}\0{item}")
}

fn scan_prefix<V, T>(
    table: &impl ReadableTable<&'static str, V>,
    connector: &str,
    convert: impl Fn(V::SelfType<'_>) -> T,
) -> Result<BTreeMap<String, T>, redb::Error>
where
    V: redb::Value + 'static,
{
    let start = scoped_key(connector, "");
    let end = format!("{connector}\u{1}");
    let mut out = BTreeMap::new();
    for entry in table.range(start.as_str()..end.as_str())? {
        let (key, value) = entry?;
        let item = key.value()[start.len()..].to_string();
        out.insert(item, convert(value.value()));
    }
    Ok(out)
}
