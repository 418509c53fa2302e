//! # wasm-connect connector SDK
//!
//! Write a connector as plain Rust: implement [`Connector`] plus [`SourceConnector`] or
//! [`SinkConnector`], then call [`export_source!`] or [`export_sink!`] once. The SDK turns
//! it into a component for the `source-connector` or `sink-connector` world of
//! `wit/connector.wit`; you never write WIT glue.
//!
//! Enable the SDK feature that matches the world (`source` or `sink`) and build with
//! `cargo build --profile plugin --target wasm32-wasip2`. The same crate also compiles
//! natively (the macros expand to nothing there), which lets a host embed the connector
//! logic directly, e.g. to compare wasm against native speed.
//!
//! A complete source connector (the README's example; a sink implements [`SinkConnector`]
//! and [`SinkTask`] and calls [`export_sink!`]):
//!
//! ```
//! use wasm_connect_sdk::*;
//!
//! pub struct Counter;
//! const DEFS: &[ConfigDef] = &[ConfigDef::required("topic", "Where to write.")];
//! impl Connector for Counter {
//!     fn descriptor() -> Descriptor {
//!         Descriptor { name: "counter", version: "0.1.0", kind: Kind::Source,
//!                      description: "Counts.", aliases: &[], config_defs: DEFS }
//!     }
//! }
//! impl SourceConnector for Counter { type Task = CounterTask; }
//!
//! pub struct CounterTask { next: u64 }
//! impl SourceTask for CounterTask {
//!     fn start(_config: &Config, host: &dyn Host) -> Result<Self, TaskError> {
//!         let next = host.committed_position("counter").and_then(|p| p.parse().ok()).unwrap_or(0);
//!         Ok(CounterTask { next })
//!     }
//!     fn poll(&mut self, out: &mut BatchWriter, max_records: u32, _max_bytes: u32) -> Result<(), TaskError> {
//!         for _ in 0..max_records.min(100) {
//!             let value = self.next.to_string();
//!             self.next += 1;
//!             let position = self.next.to_string();
//!             out.push(&Record { value: value.as_bytes(), partition: "counter", position: &position, ..Record::default() })
//!                 .map_err(|e| TaskError::Fatal(e.to_string()))?;
//!         }
//!         Ok(())
//!     }
//! }
//! export_source!(Counter);
//! ```

pub mod batch;
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod guest;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "json")]
pub mod json;
pub mod retry;
pub mod tcp;

pub use batch::{BatchReader, BatchWriter, FrameError, Record, RecordRef};

/// A connector or task configuration: key/value pairs in the user's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config(pub Vec<(String, String)>);

impl Config {
    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of the first of `keys` that is set (for keys with several spellings).
    pub fn get_any(&self, keys: &[&str]) -> Option<&str> {
        keys.iter().find_map(|key| self.get(key))
    }

    /// Sets `key`, replacing an existing value.
    pub fn set(&mut self, key: &str, value: &str) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value.to_string(),
            None => self.0.push((key.to_string(), value.to_string())),
        }
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Config {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Config(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// Source, sink or transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Source,
    Sink,
    /// Needs the SDK feature `transform` (package 0.2.0).
    Transform,
}

/// How a config value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    Text,
    Integer,
    Boolean,
    List,
}

/// The filesystem access a path-typed key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathAccess {
    ReadFile,
    WriteFile,
}

/// One config key the connector understands (see `config-def` in the WIT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigDef {
    pub name: &'static str,
    pub description: &'static str,
    pub value_type: ValueType,
    pub required: bool,
    pub default_value: Option<&'static str>,
    pub secret: bool,
    pub path: Option<PathAccess>,
}

impl ConfigDef {
    /// A required text key.
    pub const fn required(name: &'static str, description: &'static str) -> Self {
        ConfigDef {
            name,
            description,
            value_type: ValueType::Text,
            required: true,
            default_value: None,
            secret: false,
            path: None,
        }
    }

    /// An optional text key.
    pub const fn optional(name: &'static str, description: &'static str) -> Self {
        ConfigDef {
            required: false,
            ..Self::required(name, description)
        }
    }

    /// Marks the key as a file path the task opens.
    pub const fn path(mut self, access: PathAccess) -> Self {
        self.path = Some(access);
        self
    }

    /// Sets the value type.
    pub const fn typed(mut self, value_type: ValueType) -> Self {
        self.value_type = value_type;
        self
    }

    /// Sets the default value.
    pub const fn default_value(mut self, value: &'static str) -> Self {
        self.default_value = Some(value);
        self
    }
}

/// What a connector says about itself (see `descriptor` in the WIT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub name: &'static str,
    pub version: &'static str,
    pub kind: Kind,
    pub description: &'static str,
    pub aliases: &'static [&'static str],
    pub config_defs: &'static [ConfigDef],
}

/// A rejected config key and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: &str, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// A source or sink position in one partition of the outside system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub partition: String,
    pub position: String,
}

/// Why a task call failed (see `task-error` in the WIT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskError {
    /// Try again later; nothing in flight is committed.
    Retriable(String),
    /// The task cannot go on.
    Fatal(String),
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskError::Retriable(m) => write!(f, "retriable: {m}"),
            TaskError::Fatal(m) => write!(f, "{m}"),
        }
    }
}

/// Log severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// What the host offers a task (the WIT `host` interface).
pub trait Host {
    fn log(&self, level: LogLevel, message: &str);
    /// The last committed position of `partition` for this task.
    fn committed_position(&self, partition: &str) -> Option<String>;
    fn connector_name(&self) -> String;
    fn task_id(&self) -> Option<u32>;
}

/// Reports record `index` (0-based) of the batch being put as failed, without failing the
/// batch (Kafka's `ErrantRecordReporter`): the host counts and logs it, and writes it to
/// the dead letter queue when the connector configures one. Call it from
/// [`SinkTask::put`]; it does nothing elsewhere, or outside wasm.
pub fn report_errant(index: u32, message: &str) {
    #[cfg(all(target_arch = "wasm32", feature = "sink"))]
    guest::bindings::wasm_connect::connector::errant::report(index, message);
    #[cfg(not(all(target_arch = "wasm32", feature = "sink")))]
    let _ = (index, message);
}

/// Connector-level behaviour, shared by sources and sinks.
pub trait Connector: 'static {
    /// Name, version, kind, aliases and config keys. Must not depend on any config.
    fn descriptor() -> Descriptor;

    /// Extra checks beyond the `required` flags of [`Descriptor::config_defs`], which the
    /// host checks first.
    fn validate(_config: &Config) -> Result<(), Vec<ConfigError>> {
        Ok(())
    }

    /// Splits the config into at most `max_tasks` task configs; one task by default.
    fn task_configs(config: &Config, _max_tasks: u32) -> Result<Vec<Config>, String> {
        Ok(vec![config.clone()])
    }
}

/// Spreads `items` (topic filters, tables, …) over at most `max_tasks` tasks, round robin,
/// for [`Connector::task_configs`]: one list per task, never more tasks than items.
pub fn spread(items: &[String], max_tasks: u32) -> Vec<Vec<&str>> {
    let tasks = (max_tasks.max(1) as usize).min(items.len());
    (0..tasks)
        .map(|task| {
            items
                .iter()
                .skip(task)
                .step_by(tasks)
                .map(String::as_str)
                .collect()
        })
        .collect()
}

/// A connector that produces records.
pub trait SourceConnector: Connector {
    type Task: SourceTask;
}

/// A connector that consumes records.
pub trait SinkConnector: Connector {
    type Task: SinkTask;
}

/// One running source task.
pub trait SourceTask: Sized + 'static {
    /// Builds the task; resume from `host.committed_position`.
    fn start(config: &Config, host: &dyn Host) -> Result<Self, TaskError>;
    /// Appends up to `max_records` records and about `max_bytes` bytes to `out`; leaving it
    /// empty means "nothing now".
    fn poll(
        &mut self,
        out: &mut BatchWriter,
        max_records: u32,
        max_bytes: u32,
    ) -> Result<(), TaskError>;
    /// These positions are durably committed.
    fn commit(&mut self, _positions: &[Position]) {}
    /// The last call the task receives.
    fn stop(&mut self) {}
}

/// One running sink task.
pub trait SinkTask: Sized + 'static {
    /// Builds the task; `host.committed_position` returns what the last `flush` returned.
    fn start(config: &Config, host: &dyn Host) -> Result<Self, TaskError>;
    /// Writes records of `topic`, the first at `first_offset`.
    fn put(
        &mut self,
        topic: &str,
        first_offset: u64,
        records: BatchReader<'_>,
    ) -> Result<(), TaskError>;
    /// Makes everything put so far durable; the positions are committed with the offsets.
    fn flush(&mut self) -> Result<Vec<Position>, TaskError>;
    /// The last call the task receives.
    fn stop(&mut self) {}
}

/// A transform: changes, drops or adds records (the `transform-component` world of package
/// 0.2.0; SDK feature `transform`).
pub trait Transform: Connector {
    type Task: TransformTask;
}

/// One running transform.
pub trait TransformTask: Sized + 'static {
    /// Builds the transform from its keys (the user's `transforms.<alias>.<key>`, without
    /// the prefix).
    fn start(config: &Config, host: &dyn Host) -> Result<Self, TaskError>;
    /// Transforms one record: push what it becomes to `out` (nothing drops it, several add
    /// records), or fail this record alone with a message (what was pushed is taken back).
    fn apply(&mut self, record: &RecordRef<'_>, out: &mut BatchWriter) -> Result<(), String>;
    /// The last call the transform receives.
    fn stop(&mut self) {}
}

/// Exports a [`Transform`] as the component's `transform-component` world.
/// Needs the SDK feature `transform`; expands to nothing outside wasm.
#[macro_export]
macro_rules! export_transform {
    ($transform:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type Glue = $crate::guest::Glue<$transform>;
    $crate::guest::bindings::export!(Glue with_types_in $crate::guest::bindings);
        };
    };
}

/// Exports a [`SourceConnector`] as the component's `source-connector` world.
/// Needs the SDK feature `source`; expands to nothing outside wasm.
#[macro_export]
macro_rules! export_source {
    ($connector:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type Glue = $crate::guest::Glue<$connector>;
    $crate::guest::bindings::export!(Glue with_types_in $crate::guest::bindings);
        };
    };
}

/// Exports a [`SinkConnector`] as the component's `sink-connector` world.
/// Needs the SDK feature `sink`; expands to nothing outside wasm.
#[macro_export]
macro_rules! export_sink {
    ($connector:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type Glue = $crate::guest::Glue<$connector>;
    $crate::guest::bindings::export!(Glue with_types_in $crate::guest::bindings);
        };
    };
}

#[cfg(test)]
mod tests {
    use super::spread;

    #[test]
    fn spread_deals_items_round_robin_to_at_most_max_tasks() {
        let items: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        assert_eq!(spread(&items, 2), [vec!["a", "c", "e"], vec!["b", "d"]]);
        assert_eq!(spread(&items[..1], 4), [vec!["a"]]);
        assert_eq!(spread(&items[..2], 0), [vec!["a", "b"]]);
        assert!(spread(&[], 3).is_empty());
    }
}
