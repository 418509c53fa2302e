//! The host's check of every batch a source returns, before anything of it is stored: the
//! declared count matches the records (a `count` of 0 with bytes included), the batch is
//! within what was asked for, every record goes to a topic the connector may write, no
//! position is longer than `limits.position.bytes`, and the connector keeps positions in
//! no more than `limits.partitions` partitions. [`BatchChecks::check`] is the one check the
//! embedded and the cluster paths both use.
//!
//! Topics a source may write: the ones its config names through the topic keys
//! ([`keys::TOPIC_NAME_KEYS`], exact names, and [`keys::TOPIC_PREFIX_KEYS`], prefixes), and
//! those matching the `topics.allow` regex ([`keys::TOPICS_ALLOW`]). All of them are
//! host-interpreted keys: they come from the user's config, never from the plugin.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use regex::Regex;
use wasm_connect_sdk::{BatchReader, RecordRef};

use super::keys;
use crate::sandbox::types::RecordBatch;
use crate::sandbox::{show_size, Limits};
use crate::storage::{validate_topic_name, Properties};

/// Which topics a source may write.
#[derive(Debug, Clone)]
pub struct TopicPolicy {
    names: BTreeSet<String>,
    prefixes: Vec<String>,
    allow: Option<Regex>,
}

impl TopicPolicy {
    /// The topics `config` lets its source write; an invalid `topics.allow` is an error.
    pub fn from_config(config: &Properties) -> Result<TopicPolicy, String> {
        let values = |keys: &[&str]| -> Vec<String> {
            keys.iter()
                .filter_map(|key| config.get(*key))
                .flat_map(|value| value.split(','))
                .map(str::trim)
                .filter(|topic| !topic.is_empty())
                .map(str::to_string)
                .collect()
        };
        let allow = match config.get(keys::TOPICS_ALLOW).map(|v| v.trim()) {
            Some(pattern) if !pattern.is_empty() => Some(
                // Anchored: the whole topic name must match.
                Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
                    format!(
                        "{} is not a valid regex ({e}); write e.g. `orders-.*`",
                        keys::TOPICS_ALLOW
                    )
                })?,
            ),
            _ => None,
        };
        Ok(TopicPolicy {
            names: values(&keys::TOPIC_NAME_KEYS).into_iter().collect(),
            prefixes: values(&keys::TOPIC_PREFIX_KEYS),
            allow,
        })
    }

    fn allows(&self, topic: &str) -> bool {
        self.names.contains(topic)
            || self.prefixes.iter().any(|p| topic.starts_with(p.as_str()))
            || self.allow.as_ref().is_some_and(|re| re.is_match(topic))
    }
}

/// What a source's polled batches are checked against.
pub struct BatchChecks {
    /// Records the poll asked for.
    pub max_records: u32,
    pub limits: Limits,
    pub topics: Arc<TopicPolicy>,
    /// Shared with the batch being stored while the next is polled.
    pub partitions: Arc<Mutex<Partitions>>,
}

/// The partitions a source task has positions in: those committed when it started and
/// those its batches added since.
#[derive(Debug, Default)]
pub struct Partitions(BTreeSet<String>);

impl Partitions {
    pub fn new(committed: impl IntoIterator<Item = String>) -> Self {
        Partitions(committed.into_iter().collect())
    }
}

/// Why a polled batch is refused; the task fails with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("poll returned {count} records, more than the {max} asked for")]
    TooManyRecords { count: u32, max: u32 },
    #[error("poll returned {bytes} bytes of records, more than the {tolerated} tolerated")]
    TooManyBytes { bytes: usize, tolerated: usize },
    #[error("poll returned a malformed batch: {0}")]
    Malformed(String),
    #[error("poll declared {declared} records but returned {found}")]
    CountMismatch { declared: u32, found: u32 },
    #[error("{0}")]
    Topic(String),
    #[error("a record names topic {topic:?}, which the connector's config does not name; name it in `topic` or widen `topics.allow` (a regex)")]
    TopicNotAllowed { topic: String },
    #[error("a record's position is {bytes} bytes, more than limits.position.bytes {}; raise limits.position.bytes (ceiling --max-position-bytes)", show_size(*limit))]
    PositionTooLong { bytes: usize, limit: usize },
    #[error("the source has positions in {limit} partitions and a record names another; raise limits.partitions (ceiling --max-partitions)")]
    TooManyPartitions { limit: usize },
}

/// Checks a polled batch record by record and hands each record with its topic to `each`;
/// returns the last position of every partition the batch names, in first-seen order.
/// Nothing the batch holds is accepted unless all of it passes.
impl BatchChecks {
    pub fn check<'a>(
        &self,
        batch: &'a RecordBatch,
        default_topic: &'a str,
        mut each: impl FnMut(RecordRef<'a>, &'a str) -> Result<(), String>,
    ) -> Result<Vec<(&'a str, &'a str)>, String> {
        self.check_records(batch, default_topic, &mut each)
            .map_err(|e| e.to_string())
    }

    fn check_records<'a>(
        &self,
        batch: &'a RecordBatch,
        default_topic: &'a str,
        each: &mut impl FnMut(RecordRef<'a>, &'a str) -> Result<(), String>,
    ) -> Result<Vec<(&'a str, &'a str)>, BatchError> {
        let mut partitions = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        if batch.count > self.max_records {
            return Err(BatchError::TooManyRecords {
                count: batch.count,
                max: self.max_records,
            });
        }
        // One record may exceed the byte budget on its own; a batch may not go far beyond it.
        let tolerated = 2 * self.limits.batch_bytes as usize + (1 << 20);
        if batch.frames.len() > tolerated {
            return Err(BatchError::TooManyBytes {
                bytes: batch.frames.len(),
                tolerated,
            });
        }
        let mut positions: Vec<(&str, &str)> = Vec::new();
        let mut found = 0u32;
        let mut checked_topic: Option<&str> = None;
        for record in BatchReader::new(&batch.frames) {
            let record = record.map_err(|e| BatchError::Malformed(e.to_string()))?;
            found += 1;
            if found > batch.count {
                break; // reported below, without reading the rest
            }
            let topic = if record.topic.is_empty() {
                default_topic
            } else {
                record.topic
            };
            // The records of a batch mostly share a topic: each run of one is checked once.
            if checked_topic != Some(topic) {
                self.check_topic(topic)?;
                checked_topic = Some(topic);
            }
            if record.position.len() > self.limits.position_bytes {
                return Err(BatchError::PositionTooLong {
                    bytes: record.position.len(),
                    limit: self.limits.position_bytes,
                });
            }
            if !record.partition.is_empty() {
                match positions.iter_mut().find(|(p, _)| *p == record.partition) {
                    Some(entry) => entry.1 = record.position,
                    None => {
                        if !partitions.0.contains(record.partition) {
                            if partitions.0.len() >= self.limits.partitions {
                                return Err(BatchError::TooManyPartitions {
                                    limit: self.limits.partitions,
                                });
                            }
                            partitions.0.insert(record.partition.to_string());
                        }
                        positions.push((record.partition, record.position));
                    }
                }
            }
            each(record, topic).map_err(BatchError::Topic)?;
        }
        if found != batch.count {
            return Err(BatchError::CountMismatch {
                declared: batch.count,
                found,
            });
        }
        Ok(positions)
    }

    /// A record may go to `topic`: a valid name the config lets the source write.
    fn check_topic(&self, topic: &str) -> Result<(), BatchError> {
        if topic.is_empty() {
            return Err(BatchError::Topic(
                "a record names no topic and the task config has no `topic`".into(),
            ));
        }
        validate_topic_name(topic).map_err(BatchError::Topic)?;
        if !self.topics.allows(topic) {
            return Err(BatchError::TopicNotAllowed {
                topic: topic.to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_connect_sdk::{BatchWriter, Record};

    use crate::config::tests::props as config;

    fn batch(records: &[(&str, &str, &str)]) -> RecordBatch {
        let mut writer = BatchWriter::new();
        for (topic, partition, position) in records {
            writer
                .push(&Record {
                    value: b"v",
                    topic,
                    partition,
                    position,
                    ..Record::default()
                })
                .unwrap();
        }
        let (count, frames) = writer.into_parts();
        RecordBatch { count, frames }
    }

    fn check(
        batch: &RecordBatch,
        config: &Properties,
        limits: &Limits,
        partitions: &mut Partitions,
    ) -> Result<usize, BatchError> {
        let checks = BatchChecks {
            max_records: 100,
            limits: limits.clone(),
            topics: Arc::new(TopicPolicy::from_config(config).unwrap()),
            partitions: Arc::new(Mutex::new(std::mem::take(partitions))),
        };
        let default_topic = config.get("topic").map_or("", |t| t.as_str());
        let checked = checks
            .check_records(batch, default_topic, &mut |_, _| Ok(()))
            .map(|p| p.len());
        *partitions = std::mem::take(&mut *checks.partitions.lock().unwrap());
        checked
    }

    #[test]
    fn a_count_that_does_not_match_the_records_is_refused() {
        let limits = Limits::default();
        let cfg = config(&[("topic", "t")]);
        let mut lying = batch(&[("", "p", "1"), ("", "p", "2")]);
        lying.count = 0;
        assert_eq!(
            check(&lying, &cfg, &limits, &mut Partitions::default()),
            Err(BatchError::CountMismatch {
                declared: 0,
                found: 1
            })
        );
        lying.count = 3;
        assert_eq!(
            check(&lying, &cfg, &limits, &mut Partitions::default()),
            Err(BatchError::CountMismatch {
                declared: 3,
                found: 2
            })
        );
    }

    #[test]
    fn only_topics_the_config_names_may_be_written() {
        let limits = Limits::default();
        let cfg = config(&[("topic", "t"), ("topic.prefix", "pre-")]);
        let ok = batch(&[("", "p", "1"), ("t", "p", "2"), ("pre-x", "p", "3")]);
        assert_eq!(check(&ok, &cfg, &limits, &mut Partitions::default()), Ok(1));
        let other = batch(&[("other", "p", "1")]);
        assert!(matches!(
            check(&other, &cfg, &limits, &mut Partitions::default()),
            Err(BatchError::TopicNotAllowed { .. })
        ));
        let widened = config(&[("topic", "t"), ("topics.allow", "oth.*")]);
        assert_eq!(
            check(&other, &widened, &limits, &mut Partitions::default()),
            Ok(1)
        );
        assert!(TopicPolicy::from_config(&config(&[("topics.allow", "(")])).is_err());
        // Each record's topic is checked, not only the first of a batch.
        let mixed = batch(&[("t", "p", "1"), ("t", "p", "2"), ("other", "p", "3")]);
        assert!(matches!(
            check(&mixed, &cfg, &limits, &mut Partitions::default()),
            Err(BatchError::TopicNotAllowed { topic }) if topic == "other"
        ));
        let back = batch(&[
            ("t", "p", "1"),
            ("", "p", "2"),
            ("other", "p", "3"),
            ("t", "p", "4"),
        ]);
        assert!(check(&back, &cfg, &limits, &mut Partitions::default()).is_err());
    }

    #[test]
    fn a_null_value_passes_the_checks_and_reaches_the_log_as_null() {
        let mut writer = BatchWriter::new();
        writer
            .push(&Record {
                key: Some(b"7"),
                tombstone: true,
                partition: "p",
                position: "1",
                ..Record::default()
            })
            .unwrap();
        let (count, frames) = writer.into_parts();
        let batch = RecordBatch { count, frames };
        let checks = BatchChecks {
            max_records: 100,
            limits: Limits::default(),
            topics: Arc::new(TopicPolicy::from_config(&config(&[("topic", "t")])).unwrap()),
            partitions: Arc::new(Mutex::new(Partitions::default())),
        };
        let mut stored = BatchWriter::new();
        checks
            .check_records(&batch, "t", &mut |record, _| {
                stored.push_content(record.content, 1);
                Ok(())
            })
            .unwrap();
        let (count, frames) = stored.into_parts();
        let logged = BatchReader::read_all(&frames, count).unwrap();
        assert!(logged[0].tombstone);
        assert_eq!(logged[0].key, Some(&b"7"[..]));
    }

    #[test]
    fn long_positions_and_too_many_partitions_are_refused() {
        let limits = Limits {
            position_bytes: 4,
            partitions: 2,
            ..Limits::default()
        };
        let cfg = config(&[("topic", "t")]);
        let long = batch(&[("", "p", "12345")]);
        assert!(matches!(
            check(&long, &cfg, &limits, &mut Partitions::default()),
            Err(BatchError::PositionTooLong { bytes: 5, .. })
        ));
        let mut known = Partitions::new(["a".to_string()]);
        assert_eq!(
            check(
                &batch(&[("", "a", "1"), ("", "b", "1")]),
                &cfg,
                &limits,
                &mut known
            ),
            Ok(2)
        );
        assert_eq!(
            check(&batch(&[("", "c", "1")]), &cfg, &limits, &mut known),
            Err(BatchError::TooManyPartitions { limit: 2 })
        );
    }
}
