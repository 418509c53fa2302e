//! The REST APIs: `legacy` serves the RocketMQ-Connect API answer for answer (port 8081),
//! `kafka` the JSON API shaped like Kafka Connect's (port 8083); `auth` is the optional
//! bearer token both share. The contracts are `docs/legacy-api.md` and
//! `docs/kafka-connect-api.md`.
//!
//! Both APIs read a connector config the same way ([`config_from_object`]): strings as they
//! are; numbers, booleans, arrays and objects as their JSON text (`5`, `true`, `{"a":1}`);
//! a `null` value is refused with the key named.

pub mod auth;
pub mod kafka;
pub mod legacy;
pub mod observe;

use serde_json::{Map, Value};

use crate::storage::Properties;

/// Why a request's config was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("config key {0:?} is null; give it a value or leave the key out")]
    Null(String),
}

/// A config value as stored: strings as they are, numbers, booleans, arrays and objects as
/// their JSON text; `None` for `null` (no value).
pub fn value_text(value: Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

/// A connector config from a JSON object, as both APIs store it (see the module doc).
pub fn config_from_object(object: Map<String, Value>) -> Result<Properties, ConfigError> {
    object
        .into_iter()
        .map(|(key, value)| match value_text(value) {
            Some(text) => Ok((key, text)),
            None => Err(ConfigError::Null(key)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_become_their_json_text_and_null_is_refused_by_key() {
        let Value::Object(object) = json!({"s": "x", "n": 5, "f": 1.5, "b": true, "o": {"a": [1]}})
        else {
            unreachable!()
        };
        let config = config_from_object(object).expect("no null");
        assert_eq!(config["s"], "x");
        assert_eq!(config["n"], "5");
        assert_eq!(config["f"], "1.5");
        assert_eq!(config["b"], "true");
        assert_eq!(config["o"], r#"{"a":[1]}"#);
        let Value::Object(object) = json!({"topic": "t", "file": null}) else {
            unreachable!()
        };
        assert_eq!(
            config_from_object(object),
            Err(ConfigError::Null("file".into()))
        );
    }
}
