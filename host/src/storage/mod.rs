//! Durable data under `--data-dir`: connector state in redb (`state.redb`) and one
//! append-only log per topic (`topics/<topic>.log`), at most `--max-topics` of them, with
//! at most `--max-open-topic-files` open at once; all readable by the owner only.

mod control;
mod open_files;
mod plane;
mod private;
mod state;
mod topic_log;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use state::{Properties, SinkState, StateError, StateStore, StoredConnector, TargetState};
pub use topic_log::{LogRead, Producer, ProducerCheckpoint, TopicLog};

use crate::sandbox::WorkerFields;
pub use control::EmbeddedControl;
pub use open_files::OpenFiles;
pub use plane::EmbeddedPlane;

/// The longest topic name accepted (Kafka's limit).
const MAX_TOPIC_NAME: usize = 249;

/// Everything the worker persists.
pub struct Storage {
    pub state: StateStore,
    pub topics: Topics,
}

impl Storage {
    /// Opens the data dir, creating it (mode 0700) when missing, and every topic log in it,
    /// under the default limits; takes away other users' access to an existing one.
    pub fn open(data_dir: &Path) -> anyhow::Result<Storage> {
        Storage::open_limited(data_dir, &WorkerFields::default())
    }

    /// Opens the data dir under the worker's `limits` (topics and open files).
    pub fn open_limited(data_dir: &Path, limits: &WorkerFields) -> anyhow::Result<Storage> {
        let topics_dir = data_dir.join("topics");
        for dir in [data_dir, &topics_dir] {
            private::create_dir(dir)
                .map_err(|e| anyhow::anyhow!("cannot create data dir {}: {e}", dir.display()))?;
        }
        private::tighten(data_dir);
        let state_path = data_dir.join("state.redb");
        private::create_file(&state_path)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", state_path.display()))?;
        let state = StateStore::open(&state_path)?;
        let topics = Topics::open(topics_dir, limits)?;
        Ok(Storage { state, topics })
    }
}

/// The topic logs, loaded on first use and kept (their files are closed when idle).
pub struct Topics {
    dir: PathBuf,
    logs: Mutex<HashMap<String, Arc<TopicLog>>>,
    /// Most topics; existing ones beyond it (a lowered flag) still open.
    max_topics: usize,
    files: Arc<OpenFiles>,
}

/// Why a topic log cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("{0}")]
    InvalidName(String),
    #[error("topic {topic} would be topic {} of this worker, more than --max-topics {max}; remove unused topics or raise --max-topics", max + 1)]
    TooMany { topic: String, max: usize },
    #[error("cannot open topic {topic}: {source}")]
    Io {
        topic: String,
        #[source]
        source: io::Error,
    },
}

impl Topics {
    fn open(dir: PathBuf, limits: &WorkerFields) -> anyhow::Result<Topics> {
        let topics = Topics {
            dir,
            logs: Mutex::new(HashMap::new()),
            max_topics: limits.topics,
            files: OpenFiles::new(limits.open_topic_files),
        };
        let entries = std::fs::read_dir(&topics.dir)
            .map_err(|e| anyhow::anyhow!("cannot list {}: {e}", topics.dir.display()))?;
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let name = file_name.to_string_lossy();
            if let Some(topic) = name.strip_suffix(".log") {
                if validate_topic_name(topic).is_ok() {
                    topics.load(topic, false)?;
                }
            }
        }
        Ok(topics)
    }

    /// The log of `topic`, created if needed (within `--max-topics`).
    pub fn get(&self, topic: &str) -> Result<Arc<TopicLog>, TopicError> {
        validate_topic_name(topic).map_err(TopicError::InvalidName)?;
        self.load(topic, true)
    }

    /// The log of `topic`, loaded or created; a new one only within `--max-topics` when
    /// `capped`.
    fn load(&self, topic: &str, capped: bool) -> Result<Arc<TopicLog>, TopicError> {
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(log) = logs.get(topic) {
            return Ok(log.clone());
        }
        if capped && logs.len() >= self.max_topics {
            return Err(TopicError::TooMany {
                topic: topic.to_string(),
                max: self.max_topics,
            });
        }
        let path = self.dir.join(format!("{topic}.log"));
        let log = TopicLog::open(&path, &self.files).map_err(|source| TopicError::Io {
            topic: topic.to_string(),
            source,
        })?;
        let log = Arc::new(log);
        logs.insert(topic.to_string(), log.clone());
        Ok(log)
    }

    /// Topic-log files open now.
    pub fn open_files(&self) -> usize {
        self.files.count()
    }

    /// Every open topic log.
    pub fn all(&self) -> Vec<(String, Arc<TopicLog>)> {
        let logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        logs.iter()
            .map(|(name, log)| (name.clone(), log.clone()))
            .collect()
    }
}

/// Topic names become file names: letters, digits, `.`, `_` and `-` only.
pub fn validate_topic_name(topic: &str) -> Result<(), String> {
    let valid_chars = topic
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if topic.is_empty()
        || topic.len() > MAX_TOPIC_NAME
        || !valid_chars
        || topic == "."
        || topic == ".."
    {
        return Err(format!(
            "invalid topic name {topic:?}: use 1 to {MAX_TOPIC_NAME} letters, digits, '.', '_' or '-'"
        ));
    }
    Ok(())
}
