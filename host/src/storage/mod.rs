//! Durable data under `--data-dir`: connector state in redb (`state.redb`) and one
//! append-only log per topic (`topics/<topic>.log`), all readable by the owner only.

mod private;
mod state;
mod topic_log;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use state::{Properties, SinkState, StateError, StateStore, StoredConnector, TargetState};
pub use topic_log::{LogRead, Producer, ProducerCheckpoint, TopicLog};

/// The longest topic name accepted (Kafka's limit).
const MAX_TOPIC_NAME: usize = 249;

/// Everything the worker persists.
pub struct Storage {
    pub state: StateStore,
    pub topics: Topics,
}

impl Storage {
    /// Opens the data dir, creating it (mode 0700) when missing, and every topic log in it;
    /// takes away other users' access to an existing one.
    pub fn open(data_dir: &Path) -> anyhow::Result<Storage> {
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
        let topics = Topics::open(topics_dir)?;
        Ok(Storage { state, topics })
    }
}

/// The topic logs, opened on first use and kept open.
pub struct Topics {
    dir: PathBuf,
    logs: Mutex<HashMap<String, Arc<TopicLog>>>,
}

impl Topics {
    fn open(dir: PathBuf) -> anyhow::Result<Topics> {
        let topics = Topics {
            dir,
            logs: Mutex::new(HashMap::new()),
        };
        let entries = std::fs::read_dir(&topics.dir)
            .map_err(|e| anyhow::anyhow!("cannot list {}: {e}", topics.dir.display()))?;
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let name = file_name.to_string_lossy();
            if let Some(topic) = name.strip_suffix(".log") {
                if validate_topic_name(topic).is_ok() {
                    topics.get(topic)?;
                }
            }
        }
        Ok(topics)
    }

    /// The log of `topic`, created if needed.
    pub fn get(&self, topic: &str) -> io::Result<Arc<TopicLog>> {
        validate_topic_name(topic).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(log) = logs.get(topic) {
            return Ok(log.clone());
        }
        let log = Arc::new(TopicLog::open(&self.dir.join(format!("{topic}.log")))?);
        logs.insert(topic.to_string(), log.clone());
        Ok(log)
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
