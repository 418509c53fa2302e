//! `{{name}}`: a sink connector made by `wasm-connect new`. It counts the records it is
//! given and commits the count; replace `put` and `flush` with writing your system.

use wasm_connect_sdk::{
    export_sink, BatchReader, Config, ConfigDef, Connector, Descriptor, Host, Kind, Position,
    SinkConnector, SinkTask, TaskError,
};

pub struct Plugin;

const CONFIG_DEFS: &[ConfigDef] = &[ConfigDef::required(
    "topics",
    "Comma-separated topics to consume.",
)];

impl Connector for Plugin {
    fn descriptor() -> Descriptor {
        Descriptor {
            name: "{{name}}",
            version: "0.1.0",
            kind: Kind::Sink,
            description: "{{name}}: counts the records it consumes (made by wasm-connect new).",
            aliases: &[],
            config_defs: CONFIG_DEFS,
        }
    }
}

impl SinkConnector for Plugin {
    type Task = Task;
}

pub struct Task {
    /// Records seen, committed as this sink's position.
    count: u64,
}

impl SinkTask for Task {
    fn start(_config: &Config, host: &dyn Host) -> Result<Self, TaskError> {
        let count = match host.committed_position("{{name}}") {
            Some(text) => text.parse().map_err(|_| {
                TaskError::Fatal(format!("committed position {text:?} is not a count"))
            })?,
            None => 0,
        };
        Ok(Task { count })
    }

    fn put(
        &mut self,
        _topic: &str,
        _first_offset: u64,
        records: BatchReader<'_>,
    ) -> Result<(), TaskError> {
        for record in records {
            record.map_err(|e| TaskError::Fatal(e.to_string()))?;
            self.count += 1;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<Vec<Position>, TaskError> {
        Ok(vec![Position {
            partition: "{{name}}".into(),
            position: self.count.to_string(),
        }])
    }
}

export_sink!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_connect_sdk::{BatchWriter, LogLevel, Record};

    /// A host with nothing committed yet.
    struct NewHost;
    impl Host for NewHost {
        fn log(&self, _level: LogLevel, _message: &str) {}
        fn committed_position(&self, _partition: &str) -> Option<String> {
            None
        }
        fn connector_name(&self) -> String {
            "test".into()
        }
        fn task_id(&self) -> Option<u32> {
            Some(0)
        }
    }

    #[test]
    fn counts_what_it_is_given() {
        let mut task = Task::start(&Config::default(), &NewHost).expect("start");
        let mut batch = BatchWriter::new();
        for value in [&b"a"[..], b"b", b"c"] {
            batch.push(&Record { value, ..Record::default() }).expect("push");
        }
        task.put("topic", 0, BatchReader::new(batch.frames())).expect("put");
        let positions = task.flush().expect("flush");
        assert_eq!(positions[0].position, "3");
    }
}
