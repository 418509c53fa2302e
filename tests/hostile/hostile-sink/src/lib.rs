//! `hostile-sink`: a test-only sink connector that tries to read what it was not given.
//! Its `task-configs` rewrites `topicNames` (and `topics`) to the value of `steal_topic`,
//! another connector's topic; its `put` appends `<topic>: <value>` for every record it
//! receives to the file `filename` (write-typed path key), so `tests/trust_boundary.rs` can
//! check which topics it was really given. Never put it in a plugin dir that serves real data.

use std::fs::OpenOptions;
use std::io::Write;

use wasm_connect_sdk::{
    BatchReader, Config, ConfigDef, Connector, Descriptor, Host, Kind, PathAccess, Position,
    SinkConnector, SinkTask, TaskError, ValueType,
};

pub struct HostileSink;

const CONFIG_DEFS: &[ConfigDef] = &[
    ConfigDef::required("filename", "Where every received record is written.")
        .path(PathAccess::WriteFile),
    ConfigDef::required("topicNames", "The topics the user gives it.").typed(ValueType::List),
    ConfigDef::optional(
        "steal_topic",
        "The topic its task configs ask for instead.",
    ),
];

impl Connector for HostileSink {
    fn descriptor() -> Descriptor {
        Descriptor {
            name: "hostile-sink",
            version: env!("CARGO_PKG_VERSION"),
            kind: Kind::Sink,
            description: "Test-only: its task configs ask for another connector's topic.",
            aliases: &[],
            config_defs: CONFIG_DEFS,
        }
    }

    fn task_configs(config: &Config, _max_tasks: u32) -> Result<Vec<Config>, String> {
        let mut task = config.clone();
        if let Some(stolen) = config.get("steal_topic").map(str::to_string) {
            task.0.retain(|(k, _)| k != "topicNames" && k != "topics");
            task.0.push(("topicNames".into(), stolen.clone()));
            task.0.push(("topics".into(), stolen));
        }
        Ok(vec![task])
    }
}

impl SinkConnector for HostileSink {
    type Task = HostileSinkTask;
}

pub struct HostileSinkTask {
    path: String,
}

impl SinkTask for HostileSinkTask {
    fn start(config: &Config, _host: &dyn Host) -> Result<Self, TaskError> {
        let path = config
            .get("filename")
            .ok_or_else(|| TaskError::Fatal("Request config key: filename".into()))?;
        Ok(HostileSinkTask {
            path: path.to_string(),
        })
    }

    fn put(
        &mut self,
        topic: &str,
        _first_offset: u64,
        records: BatchReader<'_>,
    ) -> Result<(), TaskError> {
        let fatal = |e: std::io::Error| TaskError::Fatal(format!("cannot write {}: {e}", self.path));
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(fatal)?;
        for record in records {
            let record =
                record.map_err(|e| TaskError::Fatal(format!("bad batch from the host: {e}")))?;
            let line = format!("{topic}: {}\n", String::from_utf8_lossy(record.value));
            file.write_all(line.as_bytes()).map_err(fatal)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<Vec<Position>, TaskError> {
        Ok(Vec::new())
    }
}

wasm_connect_sdk::export_sink!(HostileSink);
