//! WIT glue, compiled only for wasm: generates the bindings of the world picked by the SDK
//! feature (`source` or `sink`: package 0.1.0; `transform`: 0.2.0) and implements its
//! exports over the SDK traits.

use std::cell::RefCell;
use std::marker::PhantomData;

use crate::{Config, ConfigDef, Connector, Kind, LogLevel, PathAccess, TaskError, ValueType};

#[cfg(any(
    all(feature = "source", feature = "sink"),
    all(feature = "source", feature = "transform"),
    all(feature = "sink", feature = "transform")
))]
compile_error!(
    "enable exactly one of the SDK features `source`, `sink` and `transform` per wasm build"
);
#[cfg(not(any(feature = "source", feature = "sink", feature = "transform")))]
compile_error!(
    "enable the SDK feature `source`, `sink` or `transform` to build a connector component"
);

#[cfg(feature = "source")]
pub mod bindings {
    wit_bindgen::generate!({
        world: "source-connector",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "wasm_connect_sdk::guest::bindings",
    });
}

/// Sinks target package 0.2.0 (its `sink-connector` world adds the `errant` import); a
/// 0.1.0 sink component keeps loading in the host unchanged.
#[cfg(feature = "sink")]
pub mod bindings {
    wit_bindgen::generate!({
        world: "sink-connector",
        path: "../../wit/v0.2.0",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "wasm_connect_sdk::guest::bindings",
    });
}

#[cfg(feature = "transform")]
pub mod bindings {
    wit_bindgen::generate!({
        world: "transform-component",
        path: "../../wit/v0.2.0",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "wasm_connect_sdk::guest::bindings",
    });
}

use bindings::exports::wasm_connect::connector::connector as wit_connector;
use bindings::wasm_connect::connector::{host as wit_host, types as wit};

/// The type the export macros hand to wit-bindgen: connector `C` seen through the WIT.
pub struct Glue<C>(PhantomData<C>);

/// The [`crate::Host`] of a wasm instance: the imported `host` interface.
struct WitHost;

impl crate::Host for WitHost {
    fn log(&self, level: LogLevel, message: &str) {
        let level = match level {
            LogLevel::Trace => wit_host::LogLevel::Trace,
            LogLevel::Debug => wit_host::LogLevel::Debug,
            LogLevel::Info => wit_host::LogLevel::Info,
            LogLevel::Warn => wit_host::LogLevel::Warn,
            LogLevel::Error => wit_host::LogLevel::Error,
        };
        wit_host::log(level, message);
    }

    fn committed_position(&self, partition: &str) -> Option<String> {
        wit_host::committed_position(partition)
    }

    fn connector_name(&self) -> String {
        wit_host::connector_name()
    }

    fn task_id(&self) -> Option<u32> {
        wit_host::task_id()
    }
}

impl<C: Connector> wit_connector::Guest for Glue<C> {
    fn describe() -> wit::Descriptor {
        let d = C::descriptor();
        wit::Descriptor {
            name: d.name.into(),
            version: d.version.into(),
            kind: match d.kind {
                Kind::Source => wit::ConnectorKind::Source,
                Kind::Sink => wit::ConnectorKind::Sink,
                #[cfg(feature = "transform")]
                Kind::Transform => wit::ConnectorKind::Transform,
                // Package 0.1.0 has no transform kind: the host refuses a component whose
                // kind does not match its world, which this one would be.
                #[cfg(not(feature = "transform"))]
                Kind::Transform => wit::ConnectorKind::Source,
            },
            description: d.description.into(),
            aliases: d.aliases.iter().map(|a| a.to_string()).collect(),
            config_defs: d.config_defs.iter().map(config_def_to_wit).collect(),
        }
    }

    fn validate(config: wit::Config) -> Result<(), Vec<wit::ConfigError>> {
        C::validate(&Config(config)).map_err(|errors| {
            errors
                .into_iter()
                .map(|e| wit::ConfigError {
                    key: e.key,
                    message: e.message,
                })
                .collect()
        })
    }

    fn task_configs(config: wit::Config, max_tasks: u32) -> Result<Vec<wit::Config>, String> {
        Ok(C::task_configs(&Config(config), max_tasks)?
            .into_iter()
            .map(|c| c.0)
            .collect())
    }
}

fn config_def_to_wit(def: &ConfigDef) -> wit::ConfigDef {
    wit::ConfigDef {
        name: def.name.into(),
        description: def.description.into(),
        value_type: match def.value_type {
            ValueType::Text => wit::ValueType::Text,
            ValueType::Integer => wit::ValueType::Integer,
            ValueType::Boolean => wit::ValueType::Boolean,
            ValueType::List => wit::ValueType::List,
        },
        required: def.required,
        default_value: def.default_value.map(Into::into),
        secret: def.secret,
        path: def.path.map(|access| match access {
            PathAccess::ReadFile => wit::PathAccess::ReadFile,
            PathAccess::WriteFile => wit::PathAccess::WriteFile,
        }),
    }
}

fn task_error_to_wit(error: TaskError) -> wit::TaskError {
    match error {
        TaskError::Retriable(m) => wit::TaskError::Retriable(m),
        TaskError::Fatal(m) => wit::TaskError::Fatal(m),
    }
}

#[cfg(feature = "source")]
mod source_glue {
    use super::*;
    use crate::{BatchWriter, Position, SourceConnector, SourceTask};
    use bindings::exports::wasm_connect::connector::source as wit_source;
    use std::cell::Cell;

    fn positions_from_wit(positions: Vec<wit::Position>) -> Vec<Position> {
        positions
            .into_iter()
            .map(|p| Position {
                partition: p.partition,
                position: p.position,
            })
            .collect()
    }

    /// A source task behind the WIT resource: methods take `&self`, so state lives in cells.
    pub struct SourceTaskGlue<T> {
        task: RefCell<T>,
        /// Bytes of frames the last poll returned: the next buffer's initial capacity.
        last_size: Cell<usize>,
    }

    impl<C: SourceConnector> wit_source::Guest for Glue<C> {
        type SourceTask = SourceTaskGlue<C::Task>;
    }

    impl<T: SourceTask> wit_source::GuestSourceTask for SourceTaskGlue<T> {
        fn start(config: wit::Config) -> Result<wit_source::SourceTask, wit::TaskError> {
            let task = T::start(&Config(config), &WitHost).map_err(task_error_to_wit)?;
            let glue = SourceTaskGlue {
                task: RefCell::new(task),
                last_size: Cell::new(0),
            };
            Ok(wit_source::SourceTask::new(glue))
        }

        fn poll(
            &self,
            max_records: u32,
            max_bytes: u32,
        ) -> Result<wit::RecordBatch, wit::TaskError> {
            // The frames move out without a copy; the next buffer starts at this one's size.
            let capacity = self.last_size.get();
            let mut batch = BatchWriter::with_capacity(capacity);
            self.task
                .borrow_mut()
                .poll(&mut batch, max_records, max_bytes)
                .map_err(task_error_to_wit)?;
            self.last_size.set(batch.byte_len().max(capacity / 2));
            let (count, frames) = batch.into_parts();
            Ok(wit::RecordBatch { count, frames })
        }

        fn commit(&self, positions: Vec<wit::Position>) {
            self.task
                .borrow_mut()
                .commit(&positions_from_wit(positions));
        }

        fn stop(&self) {
            self.task.borrow_mut().stop();
        }
    }
}

#[cfg(feature = "sink")]
mod sink_glue {
    use super::*;
    use crate::{BatchReader, SinkConnector, SinkTask};
    use bindings::exports::wasm_connect::connector::sink as wit_sink;

    /// A sink task behind the WIT resource: methods take `&self`, so state lives in a cell.
    pub struct SinkTaskGlue<T> {
        task: RefCell<T>,
    }

    impl<C: SinkConnector> wit_sink::Guest for Glue<C> {
        type SinkTask = SinkTaskGlue<C::Task>;
    }

    impl<T: SinkTask> wit_sink::GuestSinkTask for SinkTaskGlue<T> {
        fn start(config: wit::Config) -> Result<wit_sink::SinkTask, wit::TaskError> {
            let task = T::start(&Config(config), &WitHost).map_err(task_error_to_wit)?;
            Ok(wit_sink::SinkTask::new(SinkTaskGlue {
                task: RefCell::new(task),
            }))
        }

        fn put(
            &self,
            topic: String,
            first_offset: u64,
            records: wit::RecordBatch,
        ) -> Result<(), wit::TaskError> {
            let reader = BatchReader::new(&records.frames);
            self.task
                .borrow_mut()
                .put(&topic, first_offset, reader)
                .map_err(task_error_to_wit)
        }

        fn flush(&self) -> Result<Vec<wit::Position>, wit::TaskError> {
            let positions = self.task.borrow_mut().flush().map_err(task_error_to_wit)?;
            Ok(positions
                .into_iter()
                .map(|p| wit::Position {
                    partition: p.partition,
                    position: p.position,
                })
                .collect())
        }

        fn stop(&self) {
            self.task.borrow_mut().stop();
        }
    }
}

#[cfg(feature = "transform")]
mod transform_glue {
    use super::*;
    use crate::{BatchReader, BatchWriter, Transform, TransformTask};
    use bindings::exports::wasm_connect::connector::transform as wit_transform;

    /// A transform behind the WIT resource: methods take `&self`, so state lives in a cell.
    pub struct TransformGlue<T> {
        task: RefCell<T>,
    }

    impl<C: Transform> wit_transform::Guest for Glue<C> {
        type TransformTask = TransformGlue<C::Task>;
    }

    impl<T: TransformTask> wit_transform::GuestTransformTask for TransformGlue<T> {
        fn start(config: wit::Config) -> Result<wit_transform::TransformTask, wit::TaskError> {
            let task = T::start(&Config(config), &WitHost).map_err(task_error_to_wit)?;
            Ok(wit_transform::TransformTask::new(TransformGlue {
                task: RefCell::new(task),
            }))
        }

        fn apply(
            &self,
            batch: wit::RecordBatch,
        ) -> Result<wit_transform::TransformOutput, wit::TaskError> {
            let mut task = self.task.borrow_mut();
            let mut out = BatchWriter::with_capacity(batch.frames.len());
            let mut origins = Vec::with_capacity(batch.count as usize);
            let mut failures = Vec::new();
            for (index, record) in BatchReader::new(&batch.frames).enumerate() {
                let index = index as u32;
                let record = record.map_err(|e| wit::TaskError::Fatal(e.to_string()))?;
                let mark = out.mark();
                match task.apply(&record, &mut out) {
                    Ok(()) => origins.resize(out.count() as usize, index),
                    Err(message) => {
                        out.rollback(mark);
                        failures.push(wit_transform::RecordFailure { index, message });
                    }
                }
            }
            let (count, frames) = out.into_parts();
            Ok(wit_transform::TransformOutput {
                batch: wit::RecordBatch { count, frames },
                origins,
                failures,
            })
        }

        fn stop(&self) {
            self.task.borrow_mut().stop();
        }
    }
}
