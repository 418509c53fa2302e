//! `wasm-connect:connector@0.1.0`: the source and sink worlds, and the conversion of their
//! values to and from the host's types (those of the newest contract, [`super::types`]),
//! which hold the same fields.

/// The `source-connector` world; also owns the shared `types` and `host` interfaces.
pub mod source_world {
    wasmtime::component::bindgen!({
        world: "source-connector",
        path: "../wit",
        exports: { default: async },
    });
}

/// The `sink-connector` world, sharing `types` and `host` with [`source_world`].
pub mod sink_world {
    wasmtime::component::bindgen!({
        world: "sink-connector",
        path: "../wit",
        exports: { default: async },
        with: {
            "wasm-connect:connector/types": super::source_world::wasm_connect::connector::types,
            "wasm-connect:connector/host": super::source_world::wasm_connect::connector::host,
        },
    });
}

use super::types as now;
pub use source_world::wasm_connect::connector::host::LogLevel;
use source_world::wasm_connect::connector::types as v1;

/// A 0.1.0 value as the host's type.
pub trait Upgrade {
    type To;
    fn upgrade(self) -> Self::To;
}

impl Upgrade for v1::Descriptor {
    type To = now::Descriptor;
    fn upgrade(self) -> now::Descriptor {
        now::Descriptor {
            name: self.name,
            version: self.version,
            kind: match self.kind {
                v1::ConnectorKind::Source => now::ConnectorKind::Source,
                v1::ConnectorKind::Sink => now::ConnectorKind::Sink,
            },
            description: self.description,
            aliases: self.aliases,
            config_defs: self.config_defs.into_iter().map(Upgrade::upgrade).collect(),
        }
    }
}

impl Upgrade for v1::ConfigDef {
    type To = now::ConfigDef;
    fn upgrade(self) -> now::ConfigDef {
        now::ConfigDef {
            name: self.name,
            description: self.description,
            value_type: match self.value_type {
                v1::ValueType::Text => now::ValueType::Text,
                v1::ValueType::Integer => now::ValueType::Integer,
                v1::ValueType::Boolean => now::ValueType::Boolean,
                v1::ValueType::List => now::ValueType::List,
            },
            required: self.required,
            default_value: self.default_value,
            secret: self.secret,
            path: self.path.map(|access| match access {
                v1::PathAccess::ReadFile => now::PathAccess::ReadFile,
                v1::PathAccess::WriteFile => now::PathAccess::WriteFile,
            }),
        }
    }
}

impl Upgrade for v1::ConfigError {
    type To = now::ConfigError;
    fn upgrade(self) -> now::ConfigError {
        now::ConfigError {
            key: self.key,
            message: self.message,
        }
    }
}

impl Upgrade for v1::TaskError {
    type To = now::TaskError;
    fn upgrade(self) -> now::TaskError {
        match self {
            v1::TaskError::Retriable(m) => now::TaskError::Retriable(m),
            v1::TaskError::Fatal(m) => now::TaskError::Fatal(m),
        }
    }
}

impl Upgrade for v1::RecordBatch {
    type To = now::RecordBatch;
    fn upgrade(self) -> now::RecordBatch {
        now::RecordBatch {
            count: self.count,
            frames: self.frames,
        }
    }
}

impl Upgrade for v1::Position {
    type To = now::Position;
    fn upgrade(self) -> now::Position {
        now::Position {
            partition: self.partition,
            position: self.position,
        }
    }
}

impl<T: Upgrade> Upgrade for Vec<T> {
    type To = Vec<T::To>;
    fn upgrade(self) -> Vec<T::To> {
        self.into_iter().map(Upgrade::upgrade).collect()
    }
}

impl<T: Upgrade, E: Upgrade> Upgrade for Result<T, E> {
    type To = Result<T::To, E::To>;
    fn upgrade(self) -> Self::To {
        self.map(Upgrade::upgrade).map_err(Upgrade::upgrade)
    }
}

impl Upgrade for () {
    type To = ();
    fn upgrade(self) {}
}

impl Upgrade for (String, String) {
    type To = (String, String);
    fn upgrade(self) -> (String, String) {
        self
    }
}

impl Upgrade for String {
    type To = String;
    fn upgrade(self) -> String {
        self
    }
}

/// The host's batch as 0.1.0 takes it (a sink's `put`).
pub fn batch(batch: &now::RecordBatch) -> v1::RecordBatch {
    v1::RecordBatch {
        count: batch.count,
        frames: batch.frames.clone(),
    }
}

/// The host's positions as 0.1.0 takes them (a source's `commit`).
pub fn positions(positions: &[now::Position]) -> Vec<v1::Position> {
    positions
        .iter()
        .map(|p| v1::Position {
            partition: p.partition.clone(),
            position: p.position.clone(),
        })
        .collect()
}

/// The host's log level from 0.1.0's.
pub fn log_level(level: LogLevel) -> super::LogLevel {
    match level {
        LogLevel::Trace => super::LogLevel::Trace,
        LogLevel::Debug => super::LogLevel::Debug,
        LogLevel::Info => super::LogLevel::Info,
        LogLevel::Warn => super::LogLevel::Warn,
        LogLevel::Error => super::LogLevel::Error,
    }
}
