//! # pg-wire: a small blocking PostgreSQL client for connectors
//!
//! Runs inside a wasm32-wasip2 component over `std::net` (wasi:sockets), with no async
//! runtime: the connector WIT exports are synchronous. The message codecs and SCRAM come
//! from `postgres-protocol`; this crate adds the socket, the timeouts and the flows:
//! startup and authentication (trust, password, md5, SCRAM-SHA-256), the simple and the
//! extended query protocol with text parameters, `COPY … FROM STDIN`, and logical
//! replication (CopyBoth, standby status, [`pgoutput`] decoding, LSN text).
//!
//! Every value travels as text: the server parses parameters as the types the statement
//! needs and formats results, so the client needs no per-type encoding.

mod client;
pub mod connection;
mod params;
pub mod pgoutput;

pub use client::{Client, QueryResult, ReplicationMessage, Row, MAX_MESSAGE_BYTES};
pub use connection::{task_error, Connection};
pub use params::{ConnectParams, DEFAULT_PORT};

use std::fmt;

/// An error the server reported (an ErrorResponse).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// `ERROR`, `FATAL` or `PANIC`.
    pub severity: String,
    /// The SQLSTATE code, e.g. `28P01` (wrong password).
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl ServerError {
    /// Whether trying again later may succeed: connection trouble (class 08), too many
    /// connections or other resource limits (53), shutdowns (57P0x), serialization
    /// failures and deadlocks (40001, 40P01).
    pub fn is_transient(&self) -> bool {
        self.code.starts_with("08")
            || self.code.starts_with("53")
            || self.code.starts_with("57P")
            || matches!(self.code.as_str(), "40001" | "40P01")
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.code, self.message)?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "; hint: {hint}")?;
        }
        Ok(())
    }
}

/// Why a connection or a statement failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad connection URL: {0}")]
    Url(String),
    #[error("cannot connect to {address}: {source}; check that the server runs there and that `network.allow` lists {address}")]
    Connect {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connection to the server failed while {doing}: {source}")]
    Io {
        doing: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the server closed the connection")]
    Closed,
    #[error("the server says: {0}")]
    Server(ServerError),
    #[error("the server asks for {0} authentication, which is not supported; allow scram-sha-256, md5 or password for this user in pg_hba.conf")]
    UnsupportedAuth(String),
    #[error("the server asks for a password and none is configured; set `connection.password` (or a password in the URL)")]
    PasswordRequired,
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("the server sent a message of {0} bytes (at most {MAX_MESSAGE_BYTES} accepted)")]
    TooLarge(usize),
}

impl Error {
    /// Whether trying again later (on a new connection) may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::Io { .. } | Error::Closed => true,
            Error::Server(e) => e.is_transient(),
            _ => false,
        }
    }
}

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01), the epoch of the
/// timestamps in the replication protocol.
pub const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

/// A WAL position (log sequence number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    /// PostgreSQL's text form, `16/B374D848`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl std::str::FromStr for Lsn {
    type Err = String;

    fn from_str(text: &str) -> Result<Lsn, String> {
        let bad = || format!("{text:?} is not an LSN (like 16/B374D848)");
        let (hi, lo) = text.split_once('/').ok_or_else(bad)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

/// Quotes an identifier (`my "table"` → `"my ""table"""`), for names taken from config.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_text_round_trips() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn, Lsn(0x16_B374_D848));
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!(Lsn(0).to_string(), "0/0");
        assert!("16B374D848".parse::<Lsn>().is_err());
        assert!("x/1".parse::<Lsn>().is_err());
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("orders"), "\"orders\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn only_passing_server_errors_are_transient() {
        let error = |code: &str| ServerError {
            code: code.into(),
            ..ServerError::default()
        };
        assert!(error("08006").is_transient());
        assert!(error("57P01").is_transient());
        assert!(!error("28P01").is_transient());
        assert!(!error("42P01").is_transient());
    }
}
