//! The bundled transforms: Kafka Connect's single-message transforms over schemaless JSON,
//! one component per transform (the SDK feature `transform`; this crate's feature of the
//! same name as the plugin picks which one a wasm build exports).
//!
//! A key or value that parses as JSON is transformed as that JSON value; anything else is a
//! string. Transformed values are written back as compact JSON, except a string that was not
//! JSON to begin with, which stays its raw text. Transforms with `$Key` and `$Value` forms
//! in Kafka work on the key when the `type` the user wrote ends in `$Key`, else on the value.

mod fields;
mod headers;
mod routing;
mod time;

pub use fields::*;
pub use headers::*;
pub use routing::*;

use serde_json::Value;
use wasm_connect_sdk::{BatchWriter, Config, ConfigDef, RecordRef};

/// The package of Kafka's transform classes.
pub const KAFKA: &str = "org.apache.kafka.connect.transforms.";

/// A key or value as a transform sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// It parsed as JSON.
    Json(Value),
    /// It did not: its text (invalid UTF-8 replaced).
    Text(String),
    /// No key at all.
    Absent,
}

impl Data {
    pub fn parse(bytes: Option<&[u8]>) -> Data {
        match bytes {
            None => Data::Absent,
            Some(bytes) => serde_json::from_slice(bytes)
                .map(Data::Json)
                .unwrap_or_else(|_| Data::Text(String::from_utf8_lossy(bytes).into_owned())),
        }
    }

    /// The bytes written back: compact JSON, or the raw text.
    pub fn encode(&self) -> Option<Vec<u8>> {
        match self {
            Data::Json(value) => Some(value.to_string().into_bytes()),
            Data::Text(text) => Some(text.clone().into_bytes()),
            Data::Absent => None,
        }
    }

    /// As a JSON value (text as a JSON string, absent as null).
    pub fn into_json(self) -> Value {
        match self {
            Data::Json(value) => value,
            Data::Text(text) => Value::String(text),
            Data::Absent => Value::Null,
        }
    }

    /// The JSON object a field transform works on, or why not.
    pub fn object(&mut self) -> Result<&mut serde_json::Map<String, Value>, String> {
        match self {
            Data::Json(Value::Object(map)) => Ok(map),
            _ => Err("expects a JSON object".into()),
        }
    }
}

/// The key or the value of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Key,
    Value,
}

impl Part {
    /// `$Key` at the end of the `type` the user wrote picks the key.
    pub fn of(config: &Config) -> Part {
        match config.get("type") {
            Some(t) if t.ends_with("$Key") => Part::Key,
            _ => Part::Value,
        }
    }

    pub fn read(self, record: &RecordRef<'_>) -> Data {
        match self {
            Part::Key => Data::parse(record.key),
            Part::Value => Data::parse(Some(record.value)),
        }
    }

    /// Writes `record` with this part replaced by `data`.
    pub fn write(
        self,
        record: &RecordRef<'_>,
        data: &Data,
        out: &mut BatchWriter,
    ) -> Result<(), String> {
        let bytes = data.encode();
        let headers: Vec<(&str, &[u8])> = record.headers().collect();
        let mut new = record.to_record(&headers);
        match self {
            Part::Key => new.key = bytes.as_deref(),
            Part::Value => new.value = bytes.as_deref().unwrap_or_default(),
        }
        out.push(&new).map_err(|e| e.to_string())
    }
}

/// A transform that maps the key or value of each record to a new one: what most of the
/// bundled ones are. `map` gets the part, parsed.
pub trait MapPart: Sized + 'static {
    fn configure(config: &Config) -> Result<Self, String>;
    fn map(&self, data: Data, record: &RecordRef<'_>) -> Result<Data, String>;
}

/// The task of a [`MapPart`] transform.
pub struct PartTask<M> {
    part: Part,
    map: M,
}

impl<M: MapPart> wasm_connect_sdk::TransformTask for PartTask<M> {
    fn start(
        config: &Config,
        _host: &dyn wasm_connect_sdk::Host,
    ) -> Result<Self, wasm_connect_sdk::TaskError> {
        Ok(PartTask {
            part: Part::of(config),
            map: M::configure(config).map_err(wasm_connect_sdk::TaskError::Fatal)?,
        })
    }

    fn apply(&mut self, record: &RecordRef<'_>, out: &mut BatchWriter) -> Result<(), String> {
        // A tombstone passes unchanged, as in Kafka.
        if self.part == Part::Value && record.value.is_empty() {
            out.push_frame(record.frame);
            return Ok(());
        }
        let data = self.map.map(self.part.read(record), record)?;
        self.part.write(record, &data, out)
    }
}

/// Declares a transform plugin: its type, name, description, Kafka class aliases and keys;
/// `$task` is its task type. Exports it when the crate feature `$name` is on.
#[macro_export]
macro_rules! plugin {
    ($ty:ident, $feature:literal, $task:ty, $description:literal, [$($alias:literal),*], $defs:expr) => {
        pub struct $ty;
        impl wasm_connect_sdk::Connector for $ty {
            fn descriptor() -> wasm_connect_sdk::Descriptor {
                const DEFS: &[wasm_connect_sdk::ConfigDef] = $defs;
                wasm_connect_sdk::Descriptor {
                    name: $feature,
                    version: env!("CARGO_PKG_VERSION"),
                    kind: wasm_connect_sdk::Kind::Transform,
                    description: $description,
                    aliases: &[$($alias),*],
                    config_defs: DEFS,
                }
            }
            fn validate(
                config: &wasm_connect_sdk::Config,
            ) -> Result<(), Vec<wasm_connect_sdk::ConfigError>> {
                $crate::validate::<$task>(config)
            }
        }
        impl wasm_connect_sdk::Transform for $ty {
            type Task = $task;
        }
        #[cfg(feature = $feature)]
        wasm_connect_sdk::export_transform!($ty);
    };
}

/// Validation of a transform: its task starts from the config (no host calls).
pub fn validate<T: wasm_connect_sdk::TransformTask>(
    config: &Config,
) -> Result<(), Vec<wasm_connect_sdk::ConfigError>> {
    T::start(config, &NoHost).map(drop).map_err(|e| {
        let message = e.to_string();
        // Messages start with the key they are about (`key: …`).
        let key = message
            .split(':')
            .next()
            .unwrap_or("type")
            .trim()
            .to_string();
        vec![wasm_connect_sdk::ConfigError { key, message }]
    })
}

/// The host of a validation: transforms call nothing while they start.
struct NoHost;

impl wasm_connect_sdk::Host for NoHost {
    fn log(&self, _level: wasm_connect_sdk::LogLevel, _message: &str) {}
    fn committed_position(&self, _partition: &str) -> Option<String> {
        None
    }
    fn connector_name(&self) -> String {
        String::new()
    }
    fn task_id(&self) -> Option<u32> {
        None
    }
}

/// A required key, or the error naming it.
pub fn required<'a>(config: &'a Config, key: &str) -> Result<&'a str, String> {
    config
        .get(key)
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| format!("{key}: Request config key: {key}"))
}

/// A comma-separated list key (empty when absent).
pub fn list(config: &Config, key: &str) -> Vec<String> {
    config
        .get(key)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Config definitions shorthand.
pub const fn opt(name: &'static str, description: &'static str) -> ConfigDef {
    ConfigDef::optional(name, description)
}

pub const fn req(name: &'static str, description: &'static str) -> ConfigDef {
    ConfigDef::required(name, description)
}
