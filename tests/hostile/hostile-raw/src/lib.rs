//! `hostile-raw`: a test-only source connector that implements the WIT exports itself
//! (through the SDK's generated bindings, not its traits) to return record batches the
//! SDK's `BatchWriter` cannot build. `tests/guest_caps.rs` runs it.
//!
//! | `behaviour`        | what `poll` returns |
//! | ------------------ | ------------------- |
//! | `zero-count-batch` | `count: 0` with one well-formed record in `frames` |
//! | `count-too-high`   | `count: 2` with one well-formed record in `frames` |

use wasm_connect_sdk::{BatchWriter, Config, ConfigDef, Connector, Descriptor, Kind, Record};

/// The connector-level half (describe, validate, task configs), through the SDK.
pub struct HostileRaw;

const CONFIG_DEFS: &[ConfigDef] = &[
    ConfigDef::required("topic", "The topic the records go to."),
    ConfigDef::required(
        "behaviour",
        "zero-count-batch or count-too-high: see the crate documentation.",
    ),
];

impl Connector for HostileRaw {
    fn descriptor() -> Descriptor {
        Descriptor {
            name: "hostile-raw",
            version: env!("CARGO_PKG_VERSION"),
            kind: Kind::Source,
            description: "Test-only: returns batches whose count does not match their records.",
            aliases: &[],
            config_defs: CONFIG_DEFS,
        }
    }
}

/// The declared count of the batch `behaviour` returns, beside one real record.
fn declared_count(config: &Config) -> u32 {
    match config.get("behaviour") {
        Some("count-too-high") => 2,
        _ => 0,
    }
}

/// One well-formed record, framed.
fn one_record() -> Vec<u8> {
    let mut writer = BatchWriter::new();
    let pushed = writer.push(&Record {
        value: b"raw record",
        partition: "raw",
        position: "1",
        ..Record::default()
    });
    debug_assert!(pushed.is_ok());
    writer.into_parts().1
}

#[cfg(target_arch = "wasm32")]
mod exports {
    use super::*;
    use wasm_connect_sdk::guest::bindings;
    use wasm_connect_sdk::guest::Glue;

    use bindings::exports::wasm_connect::connector::connector as wit_connector;
    use bindings::exports::wasm_connect::connector::source as wit_source;
    use bindings::wasm_connect::connector::types as wit;

    struct Raw;

    impl wit_connector::Guest for Raw {
        fn describe() -> wit::Descriptor {
            <Glue<HostileRaw> as wit_connector::Guest>::describe()
        }

        fn validate(config: wit::Config) -> Result<(), Vec<wit::ConfigError>> {
            <Glue<HostileRaw> as wit_connector::Guest>::validate(config)
        }

        fn task_configs(config: wit::Config, max_tasks: u32) -> Result<Vec<wit::Config>, String> {
            <Glue<HostileRaw> as wit_connector::Guest>::task_configs(config, max_tasks)
        }
    }

    impl wit_source::Guest for Raw {
        type SourceTask = RawTask;
    }

    struct RawTask {
        count: u32,
    }

    impl wit_source::GuestSourceTask for RawTask {
        fn start(config: wit::Config) -> Result<wit_source::SourceTask, wit::TaskError> {
            let count = declared_count(&Config(config));
            Ok(wit_source::SourceTask::new(RawTask { count }))
        }

        fn poll(
            &self,
            _max_records: u32,
            _max_bytes: u32,
        ) -> Result<wit::RecordBatch, wit::TaskError> {
            Ok(wit::RecordBatch {
                count: self.count,
                frames: one_record(),
            })
        }

        fn commit(&self, _positions: Vec<wit::Position>) {}

        fn stop(&self) {}
    }

    bindings::export!(Raw with_types_in bindings);
}
