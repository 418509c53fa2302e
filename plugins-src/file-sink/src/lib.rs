//! `file-sink`: appends each record's value and a `\n` to a file.
//!
//! `flush` syncs the file and reports its length as the committed position; after a crash
//! the task truncates the file back to that length, so records that are delivered again
//! (because their offsets were not committed) are not written twice.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};

use wasm_connect_sdk::{
    BatchReader, Config, ConfigDef, ConfigError, Connector, Descriptor, Host, Kind, PathAccess,
    Position, SinkConnector, SinkTask, TaskError, ValueType,
};

/// The keys that may name the file, in the RocketMQ and the Kafka spelling.
const FILE_KEYS: [&str; 2] = ["filename", "file"];
/// The keys that may name the topics, in the RocketMQ and the Kafka spelling.
const TOPIC_KEYS: [&str; 2] = ["topicNames", "topics"];

pub struct FileSink;

const CONFIG_DEFS: &[ConfigDef] = &[
    ConfigDef::optional(
        "filename",
        "The file to append to (Kafka spelling: `file`).",
    )
    .path(PathAccess::WriteFile),
    ConfigDef::optional("file", "Kafka spelling of `filename`.").path(PathAccess::WriteFile),
    ConfigDef::optional(
        "topicNames",
        "Comma-separated topics to read (Kafka spelling: `topics`).",
    )
    .typed(ValueType::List),
    ConfigDef::optional("topics", "Kafka spelling of `topicNames`.").typed(ValueType::List),
];

impl Connector for FileSink {
    fn descriptor() -> Descriptor {
        Descriptor {
            name: "file-sink",
            version: env!("CARGO_PKG_VERSION"),
            kind: Kind::Sink,
            description: "Appends each record's value as one line to a file.",
            aliases: &[
                "org.apache.rocketmq.connect.file.FileSinkConnector",
                "org.apache.kafka.connect.file.FileStreamSinkConnector",
            ],
            config_defs: CONFIG_DEFS,
        }
    }

    fn validate(config: &Config) -> Result<(), Vec<ConfigError>> {
        let mut errors = Vec::new();
        if config.get_any(&FILE_KEYS).is_none_or(str::is_empty) {
            errors.push(ConfigError {
                key: "filename".into(),
                message: "Request config key: filename".into(),
            });
        }
        if config
            .get_any(&TOPIC_KEYS)
            .is_none_or(|t| t.trim().is_empty())
        {
            errors.push(ConfigError {
                key: "topicNames".into(),
                message: "Request config key: topicNames".into(),
            });
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

impl SinkConnector for FileSink {
    type Task = FileSinkTask;
}

pub struct FileSinkTask {
    path: String,
    file: BufWriter<File>,
    /// Bytes in the file once everything written is flushed.
    length: u64,
}

impl SinkTask for FileSinkTask {
    fn start(config: &Config, host: &dyn Host) -> Result<Self, TaskError> {
        let path = config
            .get_any(&FILE_KEYS)
            .ok_or_else(|| TaskError::Fatal("Request config key: filename".into()))?;
        let fatal =
            |what: &str, e: std::io::Error| TaskError::Fatal(format!("cannot {what} {path}: {e}"));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| fatal("open", e))?;
        let mut length = file.metadata().map_err(|e| fatal("stat", e))?.len();
        if let Some(committed) = host.committed_position(path) {
            let committed: u64 = committed.parse().map_err(|_| {
                TaskError::Fatal(format!(
                    "committed length {committed:?} of {path} is not a number"
                ))
            })?;
            if committed < length {
                // Lines written after the last commit will be delivered again: drop them.
                file.set_len(committed).map_err(|e| fatal("truncate", e))?;
                length = committed;
            }
        }
        Ok(FileSinkTask {
            path: path.to_string(),
            file: BufWriter::with_capacity(1 << 20, file),
            length,
        })
    }

    fn put(
        &mut self,
        _topic: &str,
        _first_offset: u64,
        records: BatchReader<'_>,
    ) -> Result<(), TaskError> {
        for record in records {
            let record =
                record.map_err(|e| TaskError::Fatal(format!("bad batch from the host: {e}")))?;
            self.write(record.value).and_then(|_| self.write(b"\n"))?;
            self.length += record.value.len() as u64 + 1;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<Vec<Position>, TaskError> {
        // A failed write or sync leaves the file in an unknown state: fail the task, and
        // its restart truncates the file back to the committed length.
        let fatal =
            |e: std::io::Error| TaskError::Fatal(format!("cannot flush {}: {e}", self.path));
        self.file.flush().map_err(fatal)?;
        self.file.get_ref().sync_data().map_err(fatal)?;
        Ok(vec![Position {
            partition: self.path.clone(),
            position: self.length.to_string(),
        }])
    }

    fn stop(&mut self) {
        let _ = self.file.flush();
    }
}

impl FileSinkTask {
    fn write(&mut self, bytes: &[u8]) -> Result<(), TaskError> {
        self.file
            .write_all(bytes)
            .map_err(|e| TaskError::Fatal(format!("cannot write {}: {e}", self.path)))
    }
}

wasm_connect_sdk::export_sink!(FileSink);
