//! Cluster mode (`--nats`): several workers form one cluster on NATS JetStream.
//!
//! What lives where (every bucket and stream is named after `--cluster-id`):
//! - `wc-<cluster>-config` (KV): each connector's stored config and task configs, and the
//!   leader's `assignment`. Every worker watches it ([`coordinator`]).
//! - `wc-<cluster>-live` (KV, entries expire after [`LIVE_TTL`]): one heartbeat key per
//!   worker, the leader lease, and one lock per running task ([`membership`]).
//! - `wc-<cluster>-offsets` (KV): source positions and sink offsets, so they move with a task.
//! - `wc-<cluster>-status` (KV): the state of each task, written by the worker running it.
//! - one stream per topic, `wc-<cluster>-<topic>` ([`plane`]).
//!
//! Without `--nats` none of this runs and the worker keeps everything under `--data-dir`.

pub mod allocation;
pub mod coordinator;
pub mod error;
pub mod membership;
pub mod message;
pub mod plane;
pub mod publish;
pub mod reader;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, kv};

pub use allocation::{Assignment, Strategy};
pub use error::ClusterError;

/// How often a worker refreshes its heartbeat, the lease and its task locks, and how often
/// the leader looks at membership and configs.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A heartbeat, lease or task lock not refreshed for this long expires: a killed worker's
/// tasks move after about this long. Longer than a JetStream leader election (2–4 s), so
/// a NATS server failover does not look like every worker leaving.
pub const LIVE_TTL: Duration = Duration::from_secs(5);
/// Longest wait for one JetStream request (publish ack, KV call) before it counts as failed:
/// acks pending on a server that died are lost, and the batch waits this long for them.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts at opening or creating one bucket before the worker gives up.
const CREATE_ATTEMPTS: u32 = 10;
/// Publish acks the whole worker may wait for at once. Each source task bounds its own
/// acks in flight (`plane::PUBLISH_WINDOW`); this shared bound must never be reached, or
/// tasks holding acks would wait on each other for the rest (a deadlock seen with three
/// sources and a bound of 8192).
const MAX_ACKS_IN_FLIGHT: usize = 1 << 20;

/// How this worker joins a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// NATS server URLs, comma-separated.
    pub servers: String,
    pub cluster_id: String,
    /// Copies JetStream keeps of every stream and bucket.
    pub replicas: usize,
    pub strategy: Strategy,
    /// Most topic streams this worker opens (`--max-topics`).
    pub max_topics: usize,
}

/// This worker's connection to the cluster.
pub struct Cluster {
    pub options: ClusterOptions,
    worker_id: String,
    js: jetstream::Context,
    config: kv::Store,
    live: kv::Store,
    offsets: kv::Store,
    status: kv::Store,
    /// The topic streams opened so far, by topic.
    streams: std::sync::Mutex<std::collections::HashMap<String, Arc<publish::TopicStream>>>,
    /// The offsets values of the tasks running here, as last written (`plane::Known`).
    known_sources: plane::Known<plane::SourceOffsets>,
    known_sinks: plane::Known<crate::storage::SinkState>,
    /// Each source task's run id (new at every start), by producer: part of its message ids.
    runs: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// The assignment this worker last applied: which tasks run here.
    applied: std::sync::Mutex<Assignment>,
}

impl Cluster {
    /// Connects to NATS and creates (or opens) the cluster's buckets.
    pub async fn connect(options: ClusterOptions, worker_id: String) -> anyhow::Result<Cluster> {
        validate_cluster_id(&options.cluster_id)?;
        let servers: Vec<&str> = options.servers.split(',').map(str::trim).collect();
        let client = async_nats::ConnectOptions::new()
            .name(format!("wasm-connect {worker_id}"))
            .retry_on_initial_connect()
            .connection_timeout(REQUEST_TIMEOUT)
            .connect(servers.clone())
            .await
            .with_context(|| format!("cannot connect to NATS at {}", options.servers))?;
        let js = jetstream::ContextBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .max_ack_inflight(MAX_ACKS_IN_FLIGHT)
            .build(client);
        let bucket = |suffix: &str, max_age: Duration| kv::Config {
            bucket: format!("wc-{}-{suffix}", options.cluster_id),
            history: 1,
            max_age,
            num_replicas: options.replicas,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        };
        // Workers starting together race to create the buckets, and a request that loses
        // the race can time out: open what exists, create what does not, and try again.
        let open = async |config: kv::Config| {
            let mut last_error = None;
            for _ in 0..CREATE_ATTEMPTS {
                if let Ok(store) = js.get_key_value(&config.bucket).await {
                    return Ok(store);
                }
                match js.create_key_value(config.clone()).await {
                    Ok(store) => return Ok(store),
                    Err(e) => last_error = Some(e),
                }
                tokio::time::sleep(HEARTBEAT).await;
            }
            let cause = match &last_error {
                Some(e) => format!("{e}{}", error::replicas_hint(e, options.replicas)),
                None => "no answer".to_string(),
            };
            Err(anyhow::anyhow!("cannot create {}: {cause}", config.bucket)).with_context(|| {
                format!(
                    "cannot open the cluster's buckets: check that NATS at {} is reachable and runs JetStream (nats-server 2.11 or newer)",
                    options.servers
                )
            })
        };
        let config = open(bucket("config", Duration::ZERO)).await?;
        let live = open(bucket("live", LIVE_TTL)).await?;
        let offsets = open(bucket("offsets", Duration::ZERO)).await?;
        let status = open(bucket("status", Duration::ZERO)).await?;
        tracing::info!(
            cluster = %options.cluster_id,
            worker = %worker_id,
            servers = %options.servers,
            "joined the cluster on NATS JetStream"
        );
        Ok(Cluster {
            options,
            worker_id,
            js,
            config,
            live,
            offsets,
            status,
            streams: Default::default(),
            runs: Default::default(),
            known_sources: Default::default(),
            known_sinks: Default::default(),
            applied: Default::default(),
        })
    }

    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// The assignment this worker last applied.
    pub fn applied(&self) -> Assignment {
        self.applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes `assignment` the one this worker applies.
    pub(super) fn set_applied(&self, assignment: Assignment) {
        *self.applied.lock().unwrap_or_else(|e| e.into_inner()) = assignment;
    }
}

/// Bucket and stream names carry the cluster id: letters, digits, `-` and `_` only.
fn validate_cluster_id(id: &str) -> anyhow::Result<()> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    anyhow::ensure!(
        valid,
        "invalid --cluster-id {id:?}: use 1 to 64 letters, digits, '-' or '_'"
    );
    Ok(())
}

/// A KV key for any text (connector names hold characters keys cannot): lowercase hex.
fn key_part(text: impl AsRef<[u8]>) -> String {
    use std::fmt::Write;
    text.as_ref().iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// The text a [`key_part`] encodes; None if it is not one.
fn from_key_part(hex: &str) -> Option<String> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_parts_round_trip_any_name() {
        for name in ["a", "file source/ü.*>", ""] {
            let key = key_part(name);
            assert!(key.chars().all(|c| c.is_ascii_hexdigit()));
            assert_eq!(from_key_part(&key).as_deref(), Some(name));
        }
        assert_eq!(from_key_part("zz"), None);
        assert_eq!(from_key_part("abc"), None);
    }

    #[test]
    fn cluster_ids_become_bucket_names() {
        assert!(validate_cluster_id("DefaultConnectCluster").is_ok());
        assert!(validate_cluster_id("a.b").is_err());
        assert!(validate_cluster_id("").is_err());
    }
}
