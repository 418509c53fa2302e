//! `errant-sink`: a test-only sink (package 0.2.0) for tests/transforms.rs. Its `put`
//! reports every record whose value contains `bad` as errant (Kafka's
//! `ErrantRecordReporter`) and accepts the others; it writes nothing anywhere.

use wasm_connect_sdk::{
    report_errant, BatchReader, Config, ConfigDef, Connector, Descriptor, Host, Kind, Position,
    SinkConnector, SinkTask, TaskError, ValueType,
};

pub struct ErrantSink;

const CONFIG_DEFS: &[ConfigDef] =
    &[ConfigDef::required("topics", "The topics it reads.").typed(ValueType::List)];

impl Connector for ErrantSink {
    fn descriptor() -> Descriptor {
        Descriptor {
            name: "errant-sink",
            version: env!("CARGO_PKG_VERSION"),
            kind: Kind::Sink,
            description: "Test-only: reports records containing `bad` as errant.",
            aliases: &[],
            config_defs: CONFIG_DEFS,
        }
    }
}

impl SinkConnector for ErrantSink {
    type Task = ErrantSinkTask;
}

pub struct ErrantSinkTask;

impl SinkTask for ErrantSinkTask {
    fn start(_config: &Config, _host: &dyn Host) -> Result<Self, TaskError> {
        Ok(ErrantSinkTask)
    }

    fn put(
        &mut self,
        _topic: &str,
        _first_offset: u64,
        records: BatchReader<'_>,
    ) -> Result<(), TaskError> {
        for (index, record) in records.enumerate() {
            let record = record.map_err(|e| TaskError::Fatal(e.to_string()))?;
            if String::from_utf8_lossy(record.value).contains("bad") {
                report_errant(index as u32, "this record is bad");
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<Vec<Position>, TaskError> {
        Ok(Vec::new())
    }
}

wasm_connect_sdk::export_sink!(ErrantSink);
