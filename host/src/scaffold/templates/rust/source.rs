//! `{{name}}`: a source connector made by `wasm-connect new`. It emits a few records with
//! its name in them, then nothing; replace `poll` with reading your system.

use wasm_connect_sdk::{
    export_source, BatchWriter, Config, ConfigDef, Connector, Descriptor, Host, Kind, Record,
    SourceConnector, SourceTask, TaskError,
};

/// How many records the example emits.
const RECORDS: u64 = 5;

pub struct Plugin;

const CONFIG_DEFS: &[ConfigDef] = &[ConfigDef::required(
    "topic",
    "The topic the records are written to.",
)];

impl Connector for Plugin {
    fn descriptor() -> Descriptor {
        Descriptor {
            name: "{{name}}",
            version: "0.1.0",
            kind: Kind::Source,
            description: "{{name}}: emits a few records (made by wasm-connect new).",
            aliases: &[],
            config_defs: CONFIG_DEFS,
        }
    }
}

impl SourceConnector for Plugin {
    type Task = Task;
}

pub struct Task {
    /// The number of the next record; also the position committed after each record.
    next: u64,
}

impl SourceTask for Task {
    fn start(_config: &Config, host: &dyn Host) -> Result<Self, TaskError> {
        let next = match host.committed_position("{{name}}") {
            Some(text) => text.parse().map_err(|_| {
                TaskError::Fatal(format!("committed position {text:?} is not a count"))
            })?,
            None => 0,
        };
        Ok(Task { next })
    }

    fn poll(
        &mut self,
        out: &mut BatchWriter,
        max_records: u32,
        _max_bytes: u32,
    ) -> Result<(), TaskError> {
        while self.next < RECORDS && out.count() < max_records {
            let value = format!("record {} from {{name}}", self.next);
            self.next += 1;
            let position = self.next.to_string();
            let record = Record {
                value: value.as_bytes(),
                partition: "{{name}}",
                position: &position,
                ..Record::default()
            };
            out.push(&record)
                .map_err(|e| TaskError::Fatal(e.to_string()))?;
        }
        Ok(())
    }
}

export_source!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_connect_sdk::{BatchReader, LogLevel};

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
    fn emits_its_records_once() {
        let mut task = Task::start(&Config::default(), &NewHost).expect("start");
        let mut out = BatchWriter::new();
        task.poll(&mut out, 100, 1 << 20).expect("poll");
        let (count, frames) = out.into_parts();
        let records = BatchReader::read_all(&frames, count).expect("frames");
        assert_eq!(records.len() as u64, RECORDS);
        assert_eq!(records[0].value, b"record 0 from {{name}}");
        let mut again = BatchWriter::new();
        task.poll(&mut again, 100, 1 << 20).expect("poll");
        assert!(again.is_empty());
    }
}
