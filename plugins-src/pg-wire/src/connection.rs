//! The connection keys the JDBC connectors share (`connection.url`, `connection.user`,
//! `connection.password`, `connection.attempts`, `connection.backoff.ms`) and connecting
//! with their retries; errors become the SDK's [`TaskError`]s.

use std::time::Duration;

use wasm_connect_sdk::{Config, ConfigError, TaskError};

use crate::{Client, ConnectParams, Error};

/// Longest backoff slept between two attempts: a guest call has a wall-clock limit.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The connector's config defs: the shared connection keys followed by `$own`.
#[macro_export]
macro_rules! config_defs {
    ($($own:expr),* $(,)?) => {
        &[
            wasm_connect_sdk::ConfigDef::required(
                "connection.url",
                "jdbc:postgresql://host:port/database or postgres://user:password@host:port/database; list host:port in `network.allow`.",
            ),
            wasm_connect_sdk::ConfigDef::optional("connection.user", "The user to log in as (default: from the URL, else postgres)."),
            wasm_connect_sdk::ConfigDef {
                secret: true,
                ..wasm_connect_sdk::ConfigDef::optional("connection.password", "The user's password (trust authentication needs none).")
            },
            wasm_connect_sdk::ConfigDef::optional("connection.attempts", "How many times to try connecting before giving up.")
                .typed(wasm_connect_sdk::ValueType::Integer)
                .default_value("3"),
            wasm_connect_sdk::ConfigDef::optional("connection.backoff.ms", "Pause between connection attempts, in milliseconds (at most 5000 is slept).")
                .typed(wasm_connect_sdk::ValueType::Integer)
                .default_value("10000"),
            $($own),*
        ]
    };
}

/// Where to connect and how hard to try.
#[derive(Debug, Clone)]
pub struct Connection {
    pub params: ConnectParams,
    attempts: u32,
    backoff: Duration,
}

impl Connection {
    /// Reads the connection keys; the errors name the key.
    pub fn from_config(config: &Config) -> Result<Connection, ConfigError> {
        let error = |key: &str, message: String| ConfigError {
            key: key.into(),
            message,
        };
        let url = config
            .get("connection.url")
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                error(
                    "connection.url",
                    "Request config key: connection.url".into(),
                )
            })?;
        let mut params =
            ConnectParams::from_url(url).map_err(|e| error("connection.url", e.to_string()))?;
        if let Some(user) = config.get("connection.user").filter(|u| !u.is_empty()) {
            params.user = user.to_string();
        }
        if let Some(password) = config.get("connection.password") {
            params.password = Some(password.to_string());
        }
        Ok(Connection {
            params,
            attempts: positive(config, "connection.attempts", 3)?.max(1) as u32,
            backoff: Duration::from_millis(positive(config, "connection.backoff.ms", 10_000)?),
        })
    }

    /// Connects, trying again after `connection.backoff.ms` while the failure may pass
    /// (refused, reset, too many connections), up to `connection.attempts` times.
    pub fn connect(&self) -> Result<Client, TaskError> {
        let mut attempt = 1;
        loop {
            match Client::connect(&self.params) {
                Ok(client) => return Ok(client),
                Err(e) if e.is_transient() && attempt < self.attempts => {
                    attempt += 1;
                    std::thread::sleep(self.backoff.min(MAX_BACKOFF));
                }
                Err(e) => return Err(task_error(e)),
            }
        }
    }
}

/// A non-negative integer key, or its default.
pub fn positive(config: &Config, key: &str, default: u64) -> Result<u64, ConfigError> {
    match config.get(key) {
        None => Ok(default),
        Some(text) => text.trim().parse().map_err(|_| ConfigError {
            key: key.into(),
            message: format!("{key} must be a non-negative integer, not {text:?}"),
        }),
    }
}

/// Errors that may pass are retriable, everything else (a wrong password, a missing table)
/// fails the task with the server's reason.
pub fn task_error(e: Error) -> TaskError {
    if e.is_transient() {
        TaskError::Retriable(e.to_string())
    } else {
        TaskError::Fatal(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_password_keys_override_the_url() {
        let config: Config = [
            (
                "connection.url",
                "jdbc:postgresql://127.0.0.1:5999/db?user=a&password=b",
            ),
            ("connection.user", "app"),
            ("connection.password", "s3cret"),
            ("connection.attempts", "5"),
        ]
        .into_iter()
        .collect();
        let c = Connection::from_config(&config).unwrap();
        assert_eq!(
            (c.params.user.as_str(), c.params.password.as_deref()),
            ("app", Some("s3cret"))
        );
        assert_eq!((c.attempts, c.backoff), (5, Duration::from_secs(10)));
        let bad: Config = [
            ("connection.url", "jdbc:postgresql://h/db"),
            ("connection.attempts", "x"),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            Connection::from_config(&bad).unwrap_err().key,
            "connection.attempts"
        );
    }
}
