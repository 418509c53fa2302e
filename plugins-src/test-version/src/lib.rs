//! `versioned-source`: a test-only plugin for the hot-reload tests. It reads a file line by
//! line like `file-source` and writes each line as `<version>:<line>`, so a test can tell
//! from the records which version of the plugin a running connector executes.
//!
//! Built twice by `scripts/build-plugins.sh`: as 1.0.0, and with the feature `v2` as 2.0.0,
//! into `tests/fixtures/` (never into `plugins/`).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use wasm_connect_sdk::{
    BatchWriter, Config, ConfigDef, Connector, Descriptor, Host, Kind, PathAccess, Record,
    SourceConnector, SourceTask, TaskError,
};

/// The version this build describes itself with.
pub const VERSION: &str = if cfg!(feature = "v2") {
    "2.0.0"
} else {
    "1.0.0"
};
/// Bytes read from the file per poll at most.
const READ_CHUNK: u64 = 64 * 1024;

pub struct VersionedSource;

const CONFIG_DEFS: &[ConfigDef] = &[
    ConfigDef::required(
        "filename",
        "The file to read, one record per complete line.",
    )
    .path(PathAccess::ReadFile),
    ConfigDef::required("topic", "The topic the lines are written to."),
];

impl Connector for VersionedSource {
    fn descriptor() -> Descriptor {
        Descriptor {
            name: "versioned-source",
            version: VERSION,
            kind: Kind::Source,
            description: "Test plugin: file lines prefixed with the plugin version.",
            aliases: &["com.example.VersionedSource"],
            config_defs: CONFIG_DEFS,
        }
    }
}

impl SourceConnector for VersionedSource {
    type Task = VersionedTask;
}

pub struct VersionedTask {
    path: String,
    /// Offset just after the last line delivered.
    position: u64,
}

impl SourceTask for VersionedTask {
    fn start(config: &Config, host: &dyn Host) -> Result<Self, TaskError> {
        let path = config
            .get("filename")
            .ok_or_else(|| TaskError::Fatal("Request config key: filename".into()))?;
        let position = host
            .committed_position(path)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        Ok(VersionedTask {
            path: path.to_string(),
            position,
        })
    }

    fn poll(
        &mut self,
        out: &mut BatchWriter,
        max_records: u32,
        _max_bytes: u32,
    ) -> Result<(), TaskError> {
        let chunk = self.read_chunk()?;
        let mut start = 0;
        for (end, _) in chunk.iter().enumerate().filter(|(_, b)| **b == b'\n') {
            if out.count() >= max_records {
                break;
            }
            let line = String::from_utf8_lossy(&chunk[start..end]);
            let value = format!("{VERSION}:{line}");
            let position = (self.position + end as u64 + 1).to_string();
            let record = Record {
                value: value.as_bytes(),
                partition: &self.path,
                position: &position,
                ..Record::default()
            };
            out.push(&record)
                .map_err(|e| TaskError::Fatal(e.to_string()))?;
            start = end + 1;
        }
        self.position += start as u64;
        Ok(())
    }
}

impl VersionedTask {
    /// Up to [`READ_CHUNK`] bytes from the current position; empty when the file is missing.
    fn read_chunk(&self) -> Result<Vec<u8>, TaskError> {
        let Ok(mut file) = File::open(&self.path) else {
            return Ok(Vec::new());
        };
        file.seek(SeekFrom::Start(self.position))
            .map_err(|e| TaskError::Retriable(e.to_string()))?;
        let mut chunk = Vec::new();
        file.take(READ_CHUNK)
            .read_to_end(&mut chunk)
            .map_err(|e| TaskError::Retriable(e.to_string()))?;
        Ok(chunk)
    }
}

wasm_connect_sdk::export_source!(VersionedSource);
