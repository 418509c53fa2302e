//! `file-source`: one record per line of a file, tailing it for lines appended later.
//!
//! Lines end at `\n`; a `\r` before it is stripped too. The position committed for the file
//! is the byte offset just after the last line delivered, so a restart resumes exactly
//! there. A last line without terminator is delivered once the file has stopped growing
//! for [`UNTERMINATED_QUIET`]; a `\n` that arrives for it later is not a new line.
//! At end of file the task closes the file and reopens it at the same offset once a `stat`
//! shows it longer, which is how it tails (and sees a file that is created later).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::time::{Duration, Instant};

use wasm_connect_sdk::{
    BatchWriter, Config, ConfigDef, ConfigError, Connector, Descriptor, Host, Kind, PathAccess,
    Record, SourceConnector, SourceTask, TaskError,
};

/// How long the file must stop growing before an unterminated last line counts as complete.
pub const UNTERMINATED_QUIET: Duration = Duration::from_secs(1);
/// Bytes read from the file at a time.
const READ_CHUNK: usize = 256 * 1024;
/// The keys that may name the file, in the RocketMQ and the Kafka spelling.
const FILE_KEYS: [&str; 2] = ["filename", "file"];

pub struct FileSource;

const CONFIG_DEFS: &[ConfigDef] = &[
    ConfigDef::optional(
        "filename",
        "The file to read, one record per line (Kafka spelling: `file`).",
    )
    .path(PathAccess::ReadFile),
    ConfigDef::optional("file", "Kafka spelling of `filename`.").path(PathAccess::ReadFile),
    ConfigDef::required("topic", "The topic the lines are written to."),
];

impl Connector for FileSource {
    fn descriptor() -> Descriptor {
        Descriptor {
            name: "file-source",
            version: env!("CARGO_PKG_VERSION"),
            kind: Kind::Source,
            description: "Reads a text file line by line and keeps tailing it.",
            aliases: &[
                "org.apache.rocketmq.connect.file.FileSourceConnector",
                "org.apache.kafka.connect.file.FileStreamSourceConnector",
            ],
            config_defs: CONFIG_DEFS,
        }
    }

    fn validate(config: &Config) -> Result<(), Vec<ConfigError>> {
        match config.get_any(&FILE_KEYS) {
            Some(name) if !name.is_empty() => Ok(()),
            _ => Err(vec![ConfigError {
                key: "filename".into(),
                message: "Request config key: filename".into(),
            }]),
        }
    }
}

impl SourceConnector for FileSource {
    type Task = FileSourceTask;
}

pub struct FileSourceTask {
    path: String,
    file: Option<File>,
    /// Offset just after the last line delivered.
    position: u64,
    /// Bytes read past `position` that do not yet end in `\n`.
    pending: Pending,
    /// Start of the unscanned part of `pending` (everything before it holds no `\n`).
    scanned: usize,
    /// When the last read returned data.
    last_growth: Instant,
    /// The last delivery was an unterminated line: a `\n` arriving next belongs to it.
    owe_terminator: bool,
}

impl SourceTask for FileSourceTask {
    fn start(config: &Config, host: &dyn Host) -> Result<Self, TaskError> {
        let path = config
            .get_any(&FILE_KEYS)
            .ok_or_else(|| TaskError::Fatal("Request config key: filename".into()))?;
        let position = match host.committed_position(path) {
            Some(text) => text.parse().map_err(|_| {
                TaskError::Fatal(format!(
                    "committed position {text:?} of {path} is not a byte offset"
                ))
            })?,
            None => 0,
        };
        Ok(FileSourceTask {
            path: path.to_string(),
            file: None,
            position,
            pending: Pending::default(),
            scanned: 0,
            last_growth: Instant::now(),
            owe_terminator: false,
        })
    }

    fn poll(
        &mut self,
        out: &mut BatchWriter,
        max_records: u32,
        max_bytes: u32,
    ) -> Result<(), TaskError> {
        if self.file.is_none() && !self.grown() {
            return self.flush_unterminated(out);
        }
        self.open_if_needed()?;
        loop {
            self.emit_lines(out, max_records, max_bytes as usize)?;
            if out.count() >= max_records || out.byte_len() >= max_bytes as usize {
                break;
            }
            if self.read_more()? == 0 {
                break;
            }
        }
        self.flush_unterminated(out)
    }
}

impl FileSourceTask {
    /// Whether the file may hold bytes past those already read: one `stat`, which costs an
    /// idle poll less than reopening the file to read nothing. A file that cannot be
    /// stat'ed counts as grown, so that opening it reports why.
    fn grown(&self) -> bool {
        let read = self.position + self.pending.len() as u64;
        std::fs::metadata(&self.path).map_or(true, |meta| meta.len() > read)
    }

    fn open_if_needed(&mut self) -> Result<(), TaskError> {
        if self.file.is_some() {
            return Ok(());
        }
        let mut file = File::open(&self.path)
            .map_err(|e| TaskError::Retriable(format!("cannot open {}: {e}", self.path)))?;
        let offset = self.position + self.pending.len() as u64;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| TaskError::Fatal(format!("cannot seek {} to {offset}: {e}", self.path)))?;
        self.file = Some(file);
        Ok(())
    }

    fn read_more(&mut self) -> Result<usize, TaskError> {
        let Some(file) = self.file.as_mut() else {
            return Ok(0);
        };
        let read = match file.read(self.pending.spare(READ_CHUNK)) {
            Ok(read) => read,
            Err(e) => {
                return Err(TaskError::Retriable(format!(
                    "cannot read {}: {e}",
                    self.path
                )));
            }
        };
        self.pending.filled(read);
        if read > 0 {
            self.last_growth = Instant::now();
        } else {
            // A WASI input stream stays at end-of-file once it got there: reopen at the
            // same offset on the next poll to see lines appended since.
            self.file = None;
        }
        Ok(read)
    }

    /// Moves complete lines from `pending` into `out`, within the limits.
    fn emit_lines(
        &mut self,
        out: &mut BatchWriter,
        max_records: u32,
        max_bytes: usize,
    ) -> Result<(), TaskError> {
        let mut consumed = 0;
        let pending = self.pending.bytes();
        if self.owe_terminator && !pending.is_empty() {
            self.owe_terminator = false;
            if pending[0] == b'\n' {
                consumed = 1;
                self.position += 1;
            }
        }
        let mut position_text = itoa::Buffer::new();
        while out.count() < max_records && out.byte_len() < max_bytes {
            let rest = &pending[consumed.max(self.scanned)..];
            let Some(newline) = memchr::memchr(b'\n', rest) else {
                self.scanned = pending.len();
                break;
            };
            let end = consumed.max(self.scanned) + newline;
            let line = strip_cr(&pending[consumed..end]);
            self.position += (end + 1 - consumed) as u64;
            push(&self.path, self.position, out, line, &mut position_text)?;
            consumed = end + 1;
            self.scanned = consumed;
        }
        self.pending.consume(consumed);
        self.scanned = self.scanned.saturating_sub(consumed);
        Ok(())
    }

    /// Delivers a last line without terminator once the file has been quiet long enough.
    fn flush_unterminated(&mut self, out: &mut BatchWriter) -> Result<(), TaskError> {
        if self.pending.is_empty()
            || !out.is_empty()
            || memchr::memchr(b'\n', self.pending.bytes()).is_some()
        {
            return Ok(());
        }
        if self.last_growth.elapsed() < UNTERMINATED_QUIET {
            return Ok(());
        }
        let line = self.pending.bytes();
        let len = line.len();
        self.position += len as u64;
        self.scanned = 0;
        self.owe_terminator = true;
        let pushed = push(
            &self.path,
            self.position,
            out,
            strip_cr(line),
            &mut itoa::Buffer::new(),
        );
        self.pending.consume(len);
        pushed
    }
}

/// Frames `line` of the file at `path`, which ends at `position`.
fn push(
    path: &str,
    position: u64,
    out: &mut BatchWriter,
    line: &[u8],
    position_text: &mut itoa::Buffer,
) -> Result<(), TaskError> {
    let record = Record {
        value: line,
        partition: path,
        position: position_text.format(position),
        ..Record::default()
    };
    out.push(&record)
        .map_err(|e| TaskError::Fatal(format!("cannot frame a line of {path}: {e}")))
}

/// The bytes read and not yet delivered, in a buffer that is zeroed only where it grows: a
/// WASI read fills at most 64 KiB, and zeroing a whole [`READ_CHUNK`] before each one cost
/// more than the read.
#[derive(Default)]
struct Pending {
    buffer: Vec<u8>,
    len: usize,
}

impl Pending {
    fn bytes(&self) -> &[u8] {
        &self.buffer[..self.len]
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Room for up to `bytes` more after those held.
    fn spare(&mut self, bytes: usize) -> &mut [u8] {
        let end = self.len + bytes;
        if self.buffer.len() < end {
            self.buffer.resize(end, 0);
        }
        &mut self.buffer[self.len..end]
    }

    /// The first `bytes` of [`Pending::spare`] were filled.
    fn filled(&mut self, bytes: usize) {
        self.len += bytes;
    }

    /// Drops the first `bytes` (delivered).
    fn consume(&mut self, bytes: usize) {
        self.buffer.copy_within(bytes..self.len, 0);
        self.len -= bytes;
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

wasm_connect_sdk::export_source!(FileSource);

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::Write;
    use wasm_connect_sdk::{BatchReader, LogLevel};

    struct TestHost(BTreeMap<String, String>);

    impl Host for TestHost {
        fn log(&self, _level: LogLevel, _message: &str) {}
        fn committed_position(&self, partition: &str) -> Option<String> {
            self.0.get(partition).cloned()
        }
        fn connector_name(&self) -> String {
            "test".into()
        }
        fn task_id(&self) -> Option<u32> {
            Some(0)
        }
    }

    fn start(path: &std::path::Path, committed: Option<u64>) -> FileSourceTask {
        let file = path.display().to_string();
        let config: Config = [("filename", file.as_str()), ("topic", "t")]
            .into_iter()
            .collect();
        let committed = committed
            .map(|c| (file.clone(), c.to_string()))
            .into_iter()
            .collect();
        FileSourceTask::start(&config, &TestHost(committed)).unwrap()
    }

    /// (value, position) of every record one poll returns.
    fn poll(task: &mut FileSourceTask) -> Vec<(String, u64)> {
        let mut out = BatchWriter::new();
        task.poll(&mut out, 1000, 1 << 20).unwrap();
        let (count, frames) = out.into_parts();
        let records = BatchReader::read_all(&frames, count).unwrap();
        records
            .iter()
            .map(|r| {
                (
                    String::from_utf8(r.value.to_vec()).unwrap(),
                    r.position.parse().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn lines_lose_their_terminators_and_positions_are_byte_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        std::fs::write(&path, "a\r\n\nwörld\n").unwrap();
        let mut task = start(&path, None);
        let expected = [
            ("a".to_string(), 3),
            (String::new(), 4),
            ("wörld".to_string(), 11),
        ];
        assert_eq!(poll(&mut task), expected);
        assert!(poll(&mut task).is_empty());
    }

    #[test]
    fn a_restart_resumes_at_the_committed_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        std::fs::write(&path, "one\ntwo\nthree\n").unwrap();
        let mut task = start(&path, Some(4));
        assert_eq!(
            poll(&mut task),
            [("two".to_string(), 8), ("three".to_string(), 14)]
        );
    }

    #[test]
    fn appended_lines_are_picked_up_and_a_split_line_waits_for_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        std::fs::write(&path, "first\nhal").unwrap();
        let mut task = start(&path, None);
        assert_eq!(poll(&mut task), [("first".to_string(), 6)]);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all("f\nnext\n".as_bytes())
            .unwrap();
        assert_eq!(
            poll(&mut task),
            [("half".to_string(), 11), ("next".to_string(), 16)]
        );
    }

    #[test]
    fn an_unterminated_last_line_is_delivered_once_the_file_is_quiet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        std::fs::write(&path, "x\nlast").unwrap();
        let mut task = start(&path, None);
        assert_eq!(poll(&mut task), [("x".to_string(), 2)]);
        std::thread::sleep(UNTERMINATED_QUIET + Duration::from_millis(50));
        assert_eq!(poll(&mut task), [("last".to_string(), 6)]);
        // Its terminator arriving later is not an empty line.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"\nmore\n")
            .unwrap();
        assert_eq!(poll(&mut task), [("more".to_string(), 12)]);
    }

    #[test]
    fn a_missing_file_is_a_retriable_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut task = start(&dir.path().join("absent.txt"), None);
        let mut out = BatchWriter::new();
        assert!(matches!(
            task.poll(&mut out, 10, 1000),
            Err(TaskError::Retriable(_))
        ));
    }

    #[test]
    fn validation_names_the_missing_file_key() {
        let config: Config = [("topic", "t")].into_iter().collect();
        let errors = FileSource::validate(&config).unwrap_err();
        assert_eq!(errors[0].message, "Request config key: filename");
    }
}
