//! The REST APIs: `legacy` serves the RocketMQ-Connect API answer for answer (port 8081),
//! `kafka` the JSON API shaped like Kafka Connect's (port 8083); `auth` is the optional
//! bearer token both share.

pub mod auth;
pub mod kafka;
pub mod legacy;

use serde_json::Value;

/// A config value as stored: strings as they are, anything else as its JSON text.
pub fn value_text(value: Value) -> String {
    match value {
        Value::String(s) => s,
        other => other.to_string(),
    }
}
