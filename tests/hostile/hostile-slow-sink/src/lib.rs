//! `hostile-slow-sink`: a test-only sink connector whose `put` sleeps for an hour, blocked in
//! the host and burning no CPU, as a sink waiting on a dead remote system would.
//! `tests/api_responsiveness.rs` proves that no API call waits for it: stop, update, delete
//! and stopAll answer at once, and so does everything else meanwhile. Its `start`, `flush`
//! and `stop` return at once. `start` and `put` say so on stderr first ([`STARTED`],
//! [`PUT_SLEEPING`]), which the host logs: how a test knows a put is under way.

use std::time::Duration;

use wasm_connect_sdk::{
    BatchReader, Config, ConfigDef, Connector, Descriptor, Host, Kind, Position, SinkConnector,
    SinkTask, TaskError, ValueType,
};

/// The stderr line of each `start`.
pub const STARTED: &str = "slow sink: started";
/// The stderr line of each `put`, before it sleeps.
pub const PUT_SLEEPING: &str = "slow sink: put sleeping";
/// How long each `put` sleeps.
const PUT_SLEEP: Duration = Duration::from_secs(3600);

pub struct SlowSink;

const CONFIG_DEFS: &[ConfigDef] = &[ConfigDef::required(
    "topicNames",
    "Comma-separated topics to read; every put on them sleeps.",
)
.typed(ValueType::List)];

impl Connector for SlowSink {
    fn descriptor() -> Descriptor {
        Descriptor {
            name: "hostile-slow-sink",
            version: env!("CARGO_PKG_VERSION"),
            kind: Kind::Sink,
            description: "Test-only: every put sleeps for an hour.",
            aliases: &[],
            config_defs: CONFIG_DEFS,
        }
    }
}

impl SinkConnector for SlowSink {
    type Task = SlowTask;
}

pub struct SlowTask;

impl SinkTask for SlowTask {
    fn start(_config: &Config, _host: &dyn Host) -> Result<Self, TaskError> {
        eprintln!("{STARTED}");
        Ok(SlowTask)
    }

    fn put(
        &mut self,
        _topic: &str,
        _first_offset: u64,
        _records: BatchReader<'_>,
    ) -> Result<(), TaskError> {
        eprintln!("{PUT_SLEEPING}");
        std::thread::sleep(PUT_SLEEP);
        Ok(())
    }

    fn flush(&mut self) -> Result<Vec<Position>, TaskError> {
        Ok(Vec::new())
    }
}

wasm_connect_sdk::export_sink!(SlowSink);
