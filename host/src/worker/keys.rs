//! The config keys the host itself reads (the one home of their spellings), and the trust
//! rule for task configs: `task-configs` is guest output, so everything the host interprets
//! comes from the user's validated config only.
//!
//! - Host-interpreted keys ([`is_host_interpreted`]) in a task config are replaced by the
//!   user's values, or removed when the user's config has none.
//! - Path-typed values in a task config must be paths the user's config names under a
//!   path-typed key (a write-typed key needs a path the user named under a write-typed key);
//!   otherwise the create fails naming the key ([`check_paths`]).
//! - Only values the user wrote are resolved (`${env:…}` / `${file:…}`): a task-config value
//!   counts as user-written when it equals the user's value of the same key ([`user_wrote`]).

use std::path::PathBuf;

use crate::config::{entries, is_reference};
use crate::plugins::PLUGIN_VERSION;
use crate::sandbox::types::{ConfigDef, PathAccess};
use crate::sandbox::NETWORK_ALLOW_KEY;
use crate::storage::Properties;

/// The keys that may name the connector's plugin.
pub const CLASS_KEYS: [&str; 2] = ["connector-class", "connector.class"];
/// The keys that may set the number of tasks.
pub const MAX_TASK_KEYS: [&str; 3] = ["max-task", "max-tasks", "tasks.max"];
/// The key naming a source's default topic.
pub const SOURCE_TOPIC: &str = "topic";
/// The keys naming the topics a sink reads, in the order they are looked up.
pub const SINK_TOPICS: [&str; 2] = ["topicNames", "topics"];
/// The keys whose values (comma-separated) name topics, Kafka's spellings included. The
/// 0.1.0 WIT `config-def` has no field for a plugin to declare its topic keys (it comes
/// with package 0.2.0), so these well-known keys are the declaration for now.
pub const TOPIC_NAME_KEYS: [&str; 4] =
    [SOURCE_TOPIC, SINK_TOPICS[0], SINK_TOPICS[1], "kafka.topic"];
/// The keys whose value is a prefix of the topics a source writes.
pub const TOPIC_PREFIX_KEYS: [&str; 1] = ["topic.prefix"];
/// The key holding a regex of further topics a source may write.
pub const TOPICS_ALLOW: &str = "topics.allow";
/// Prefixes of key families the host reads (`limits.*`, and the error handling,
/// transformation and predicate families).
const HOST_PREFIXES: [&str; 4] = ["limits.", "errors.", "transforms.", "predicates."];

/// True when the host itself reads `key` (path-typed keys aside: see [`check_paths`]).
pub fn is_host_interpreted(key: &str) -> bool {
    CLASS_KEYS.contains(&key)
        || MAX_TASK_KEYS.contains(&key)
        || TOPIC_NAME_KEYS.contains(&key)
        || TOPIC_PREFIX_KEYS.contains(&key)
        || key == TOPICS_ALLOW
        || key == NETWORK_ALLOW_KEY
        || key == PLUGIN_VERSION
        || HOST_PREFIXES.iter().any(|prefix| key.starts_with(prefix))
}

/// The first of `keys` the config has, with its value.
pub fn first_of<'a>(
    config: &'a Properties,
    keys: &[&'static str],
) -> Option<(&'static str, &'a str)> {
    keys.iter()
        .find_map(|key| Some((*key, config.get(*key)?.as_str())))
}

/// `task` with every host-interpreted key taken from `user`: replaced by the user's value,
/// removed when the user has none, added when only the user has it.
pub fn with_user_host_keys(user: &Properties, task: Properties) -> Properties {
    task.into_iter()
        .filter(|(key, _)| !is_host_interpreted(key))
        .chain(
            user.iter()
                .filter(|(key, _)| is_host_interpreted(key))
                .map(|(key, value)| (key.clone(), value.clone())),
        )
        .collect()
}

/// True when the user's config has `value` for `key`: the value is the user's own, so its
/// references may be resolved.
pub fn user_wrote(user: &Properties, key: &str, value: &str) -> bool {
    user.get(key).is_some_and(|v| v == value)
}

/// Why a task config returned by the plugin is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskConfigError {
    #[error("{key}: the connector's task config names a path that the connector config does not name; a task may only use the files the config gives under its path-typed keys")]
    PathNotNamed { key: String },
    #[error("{key}: the connector's task config writes to a path that the connector config names only for reading; name it under a write-typed key to let the task write it")]
    NotWritable { key: String },
    #[error("{key}: the connector's task config gives a reference that is not the config's value of {key}; only the config's own values are resolved")]
    ForeignReference { key: String },
}

/// Checks the path-typed values (per the plugin's `defs`) of a task config against the paths
/// the user's config names (list values split on `,`): each must be one of them, one named
/// under a write-typed key if the task's key writes, and a `${…}` reference only as the
/// user's value of the same key.
pub fn check_paths(
    defs: &[ConfigDef],
    user: &Properties,
    task: &Properties,
) -> Result<(), TaskConfigError> {
    let named = |writes_only: bool| -> Vec<PathBuf> {
        defs.iter()
            .filter(|d| {
                d.path
                    .is_some_and(|a| !writes_only || a == PathAccess::WriteFile)
            })
            .filter_map(|d| user.get(&d.name))
            .flat_map(|value| entries(value))
            .map(as_path)
            .collect()
    };
    let (readable, writable) = (named(false), named(true));
    for def in defs {
        let Some(access) = def.path else { continue };
        let Some(value) = task.get(&def.name) else {
            continue;
        };
        let key = def.name.clone();
        for entry in entries(value) {
            if is_reference(entry) && !user_wrote(user, &key, value) {
                return Err(TaskConfigError::ForeignReference { key });
            }
            let path = as_path(entry);
            if !readable.contains(&path) {
                return Err(TaskConfigError::PathNotNamed { key });
            }
            if access == PathAccess::WriteFile && !writable.contains(&path) {
                return Err(TaskConfigError::NotWritable { key });
            }
        }
    }
    Ok(())
}

/// A path entry as compared: a reference as written, a path made absolute (so `in.txt` and
/// `<working dir>/in.txt` name the same file).
fn as_path(entry: &str) -> PathBuf {
    if is_reference(entry) {
        return PathBuf::from(entry);
    }
    std::path::absolute(entry).unwrap_or_else(|_| PathBuf::from(entry))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::tests::{def, props};

    #[test]
    fn host_keys_come_from_the_user_and_private_keys_from_the_task() {
        let user = props(&[
            ("connector-class", "file-sink"),
            ("topicNames", "mine"),
            ("limits.memory", "64MiB"),
            ("secret", "${env:S}"),
        ]);
        let task = props(&[
            ("topicNames", "theirs"),
            ("network.allow", "127.0.0.1:8081"),
            ("transforms.x.type", "y"),
            ("errors.tolerance", "all"),
            ("tasks.max", "99"),
            ("plugin.version", "9.9.9"),
            ("private.key", "kept"),
        ]);
        let merged = with_user_host_keys(&user, task);
        assert_eq!(
            merged,
            props(&[
                ("connector-class", "file-sink"),
                ("topicNames", "mine"),
                ("limits.memory", "64MiB"),
                ("private.key", "kept"),
            ])
        );
        assert!(user_wrote(&user, "secret", "${env:S}"));
        assert!(!user_wrote(&user, "other", "${env:S}"));
        assert!(!user_wrote(&user, "secret", "${env:T}"));
    }

    #[test]
    fn task_paths_must_be_paths_the_user_named() {
        let defs = [
            def("in", Some(PathAccess::ReadFile)),
            def("out", Some(PathAccess::WriteFile)),
            def("extra", Some(PathAccess::WriteFile)),
        ];
        let user = props(&[("in", "/f/a.txt, /f/b.txt"), ("out", "${env:OUT}")]);
        let check = |task: &[(&str, &str)]| check_paths(&defs, &user, &props(task));
        assert_eq!(check(&[("in", "/f/b.txt")]), Ok(()));
        let relative = std::env::current_dir().unwrap().join("rel.txt");
        let user = props(&[("in", "rel.txt")]);
        let task = props(&[("in", relative.to_str().unwrap())]);
        assert_eq!(check_paths(&defs, &user, &task), Ok(()));
        assert_eq!(
            check(&[("in", "/f/a.txt,/f/b.txt"), ("out", "${env:OUT}")]),
            Ok(())
        );
        let key = |k: &str| k.to_string();
        assert_eq!(
            check(&[("extra", "/plugins/x.wasm")]),
            Err(TaskConfigError::PathNotNamed { key: key("extra") })
        );
        assert_eq!(
            check(&[("extra", "/f/a.txt")]),
            Err(TaskConfigError::NotWritable { key: key("extra") })
        );
        assert_eq!(
            check(&[("extra", "${env:OUT}")]),
            Err(TaskConfigError::ForeignReference { key: key("extra") })
        );
        assert_eq!(
            check(&[("in", "${env:OUT}")]),
            Err(TaskConfigError::ForeignReference { key: key("in") })
        );
    }

    #[test]
    fn every_documented_host_key_is_host_interpreted() {
        for key in [
            "connector-class",
            "connector.class",
            "tasks.max",
            "max-task",
            "max-tasks",
            "topic",
            "topics",
            "topicNames",
            "kafka.topic",
            "topic.prefix",
            "topics.allow",
            "network.allow",
            "plugin.version",
            "limits.cpu.ms",
            "errors.deadletterqueue.topic.name",
            "transforms.mask.type",
            "predicates.p.pattern",
        ] {
            assert!(is_host_interpreted(key), "{key}");
        }
        for key in ["filename", "behaviour", "topic-ish", "limits"] {
            assert!(!is_host_interpreted(key), "{key}");
        }
    }
}
