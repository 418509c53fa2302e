//! What goes wrong talking to the cluster's NATS servers, typed: a task decides whether to
//! retry by the variant ([`PlaneError::is_transient`]), never by the text.

use async_nats::jetstream::context::{CreateStreamError, CreateStreamErrorKind};
use async_nats::jetstream::ErrorCode;

use crate::storage::TopicError;
use crate::worker::control::ControlError;
use crate::worker::plane::PlaneError;

/// Any error the NATS client returns.
pub type NatsError = async_nats::Error;

/// Why a request to the cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A KV read or write of `key` failed (or was refused: another writer came first).
    #[error("{key}: {source}")]
    Kv {
        key: String,
        #[source]
        source: NatsError,
    },
    /// A value in the cluster's buckets is not the JSON this version writes.
    #[error("{key}: unreadable value: {source}")]
    Json {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    /// A topic's stream could not be opened or created.
    #[error("cannot open or create stream {stream}: {source}{}", replicas_hint(source, *replicas))]
    Stream {
        stream: String,
        replicas: usize,
        #[source]
        source: CreateStreamError,
    },
    /// This worker opened as many topic streams as `--max-topics` allows.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// Messages whose ack never came, after publishing them again for `seconds`.
    #[error("{failed} messages of records not stored in {seconds} s: {source}")]
    Publish {
        failed: usize,
        seconds: u64,
        #[source]
        source: NatsError,
    },
    /// Reading a topic stream's state or one of its messages failed.
    #[error("cannot read stream {stream}: {source}")]
    Read {
        stream: String,
        #[source]
        source: NatsError,
    },
    /// A topic stream exists with the subjects of an older layout (one record per message).
    #[error("stream {stream} was created by an older wasm-connect (one record per message, subjects {subjects:?}): delete it (`nats stream rm {stream}`) or start the cluster with a new --cluster-id")]
    OldStream {
        stream: String,
        subjects: Vec<String>,
    },
    /// A topic stream holds a message without the headers of the current message layout
    /// (`cluster::message`).
    #[error("message {sequence} of stream {stream} has no Wc-Offset/Wc-Count headers: the stream was written by an older wasm-connect (one record per message); delete the stream or start the cluster with a new --cluster-id")]
    Layout { stream: String, sequence: u64 },
    /// A message of a topic stream does not hold the records its headers announce.
    #[error("message {sequence} of stream {stream} is corrupt: {reason}")]
    Corrupt {
        stream: String,
        sequence: u64,
        reason: String,
    },
    /// One record is larger than a NATS message may be.
    #[error("a record of {bytes} B does not fit in one NATS message (the servers' max_payload is {max} B): raise max_payload in the NATS servers' configuration, or make the records smaller")]
    TooLarge { bytes: usize, max: usize },
    #[error("cannot create consumer {name}: {source}")]
    Consumer {
        name: String,
        #[source]
        source: NatsError,
    },
    /// A fetch failed part way.
    #[error("fetch: {source}")]
    Fetch {
        #[source]
        source: NatsError,
    },
    /// The server ended a fetch with an error status before its first record: among other
    /// causes, the next record alone is larger than the fetch's byte budget.
    #[error("fetch refused: {source}")]
    FetchRefused {
        #[source]
        source: NatsError,
    },
    /// The stream delivered a record past the one expected (it is read again from there).
    #[error("fetch skipped from offset {from} to {to}; reading again")]
    Skipped { from: u64, to: u64 },
    #[error("heartbeat: {source}")]
    Heartbeat {
        #[source]
        source: NatsError,
    },
    #[error("listing workers: {source}")]
    Workers {
        #[source]
        source: NatsError,
    },
}

impl ClusterError {
    /// A failed KV call on `key`.
    pub fn kv(key: &str, source: impl Into<NatsError>) -> ClusterError {
        ClusterError::Kv {
            key: key.to_string(),
            source: source.into(),
        }
    }

    /// An unreadable (or unwritable) JSON value under `key`.
    pub fn json(key: &str, source: serde_json::Error) -> ClusterError {
        ClusterError::Json {
            key: key.to_string(),
            source,
        }
    }

    /// This error as the control plane reports a failed config write of `connector`.
    pub fn persisting(self, connector: &str) -> ControlError {
        ControlError::Persist {
            connector: connector.to_string(),
            source: Box::new(self),
        }
    }
}

/// A full topic table is the task's to report; anything else is the servers failing over.
impl From<ClusterError> for PlaneError {
    fn from(error: ClusterError) -> Self {
        match error {
            ClusterError::Topic(e) => PlaneError::Topic(e),
            other => PlaneError::Cluster(Box::new(other)),
        }
    }
}

/// The fix, when creating a stream or bucket failed because the servers cannot hold the
/// replicas asked for (told by the server's error code, anywhere in `error`'s sources).
pub fn replicas_hint(error: &(dyn std::error::Error + 'static), replicas: usize) -> &'static str {
    let too_few_servers = std::iter::successors(Some(error), |e| e.source())
        .filter_map(|e| e.downcast_ref::<CreateStreamError>())
        .any(|e| match e.kind() {
            CreateStreamErrorKind::JetStream(e) => matches!(
                e.error_code(),
                ErrorCode::INSUFFICIENT_RESOURCES | ErrorCode::STREAM_REPLICAS_NOT_SUPPORTED
            ),
            _ => false,
        });
    if replicas > 1 && too_few_servers {
        "; a single NATS server holds one copy only: pass --nats-replicas 1, or join more servers"
    } else {
        ""
    }
}
