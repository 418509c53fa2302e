//! Keeps this worker in step with the cluster:
//! - loads every connector from the `config` bucket at start, then follows it by watch, so a
//!   change made through any worker's API reaches every worker;
//! - every [`HEARTBEAT`]: refreshes this worker's heartbeat, takes or keeps the leader lease,
//!   and, while leading, recomputes the assignment from the live workers and the connectors
//!   and writes it when it changed (a join, a leave, a new, changed or removed connector);
//! - applies every assignment it sees: starts the tasks given to this worker, stops the rest.
//!
//! It also holds the cluster's config writes and the task states workers report.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::allocation::{allocate, Assignment};
use super::{from_key_part, key_part, Cluster, ClusterError, HEARTBEAT, LIVE_TTL};
use crate::storage::StoredConnector;
use crate::worker::control::Reconcile;
use crate::worker::{RestartRequest, TaskStatus};

const CONNECTOR_PREFIX: &str = "connector.";
const ASSIGNMENT_KEY: &str = "assignment";
/// A config watch that saw nothing for this long is opened again from the last revision
/// seen: a watch can go quiet without an error after a server failover.
const WATCH_IDLE: Duration = Duration::from_secs(10);

/// A restart request on the wire: which worker asked (it restarted its own tasks already).
#[derive(Debug, Serialize, Deserialize)]
struct RestartMessage {
    from: String,
    request: RestartRequest,
}

/// What the worker running a task last reported about it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskReport {
    pub worker: String,
    pub status: TaskStatus,
}

impl Cluster {
    /// Stores a connector's config (or deletes it, with None) for the whole cluster; returns
    /// the revision of the change.
    pub(super) async fn put_connector(
        &self,
        name: &str,
        stored: Option<&StoredConnector>,
    ) -> Result<u64, ClusterError> {
        let key = format!("{CONNECTOR_PREFIX}{}", key_part(name));
        let failed = |e: async_nats::Error| ClusterError::kv(&key, e);
        match stored {
            Some(stored) => {
                let json = serde_json::to_vec(stored).map_err(|e| ClusterError::json(&key, e))?;
                let put = self.config.put(&key, json.into()).await;
                put.map_err(|e| failed(e.into()))
            }
            None => {
                let deleted = self.config.delete(&key).await;
                deleted.map_err(|e| failed(e.into()))?;
                let entry = self.config.entry(&key).await;
                let entry = entry.map_err(|e| failed(e.into()))?;
                Ok(entry.map_or(0, |e| e.revision))
            }
        }
    }

    /// The current assignment (empty before the first leader wrote one).
    pub async fn stored_assignment(&self) -> Result<Assignment, ClusterError> {
        let read = self.config.get(ASSIGNMENT_KEY).await;
        match read.map_err(|e| ClusterError::kv(ASSIGNMENT_KEY, e))? {
            Some(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| ClusterError::json(ASSIGNMENT_KEY, e))
            }
            None => Ok(Assignment::default()),
        }
    }

    /// Asks every other worker to restart the tasks `request` names that it runs (core
    /// NATS, at most once: a worker disconnected at that moment misses it).
    pub async fn request_restart(&self, request: &RestartRequest) {
        let message = RestartMessage {
            from: self.worker_id().to_string(),
            request: request.clone(),
        };
        let Ok(json) = serde_json::to_vec(&message) else {
            return;
        };
        if let Err(e) = self
            .js
            .client()
            .publish(self.restart_subject(), json.into())
            .await
        {
            tracing::warn!(
                "asking the other workers to restart {}: {e}",
                request.connector
            );
        }
    }

    fn restart_subject(&self) -> String {
        format!("wc.{}.restart", self.options.cluster_id)
    }

    /// Reports every state of one task until the task ends (its state sender is dropped).
    pub(super) async fn report_states(
        &self,
        connector: String,
        task: u32,
        mut states: watch::Receiver<TaskStatus>,
    ) {
        let key = format!("task.{}.{task}", key_part(&connector));
        loop {
            let report = TaskReport {
                worker: self.worker_id().to_string(),
                status: states.borrow_and_update().clone(),
            };
            if let Ok(json) = serde_json::to_vec(&report) {
                if let Err(e) = self.status.put(&key, json.into()).await {
                    tracing::warn!(task = %format!("{connector}/{task}"), "reporting the task state: {e}");
                }
            }
            if states.changed().await.is_err() {
                return;
            }
        }
    }

    /// What the workers last reported about the tasks of `connector`, by task number.
    pub async fn task_reports(&self, connector: &str, tasks: usize) -> BTreeMap<usize, TaskReport> {
        let mut reports = BTreeMap::new();
        for task in 0..tasks {
            let key = format!("task.{}.{task}", key_part(connector));
            if let Ok(Some(bytes)) = self.status.get(key).await {
                if let Ok(report) = serde_json::from_slice(&bytes) {
                    reports.insert(task, report);
                }
            }
        }
        reports
    }
}

/// Runs this worker's part of the cluster until `shutdown` turns true; call after the
/// worker is built and before the APIs serve. Returns once the cluster's connectors are
/// loaded; the loops go on in the background, and the returned handle ends when they have
/// stopped (the lease given up), so the worker can then stop its tasks without new ones
/// being started.
pub async fn start(
    cluster: Arc<Cluster>,
    worker: Arc<dyn Reconcile>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    cluster.heartbeat().await?;
    let revision = load(&cluster, worker.as_ref()).await?;
    let restarts = cluster
        .js
        .client()
        .subscribe(cluster.restart_subject())
        .await
        .map_err(|e| anyhow::anyhow!("cannot subscribe to restart requests: {e}"))?;
    let follow = follow_configs(cluster.clone(), worker.clone(), revision);
    spawn_until(shutdown.clone(), follow);
    spawn_until(
        shutdown.clone(),
        follow_restarts(cluster.clone(), worker.clone(), restarts),
    );
    Ok(tokio::spawn(tick(cluster, worker, shutdown)))
}

/// Runs `work` in the background until it ends or `shutdown` turns true.
fn spawn_until(
    mut shutdown: watch::Receiver<bool>,
    work: impl std::future::Future<Output = ()> + Send + 'static,
) {
    tokio::spawn(async move {
        tokio::select! {
            _ = work => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
    });
}

/// Applies every connector and the assignment the bucket holds; returns the newest revision.
async fn load(cluster: &Cluster, worker: &dyn Reconcile) -> anyhow::Result<u64> {
    let keys: Vec<String> = match cluster.config.keys().await {
        Ok(keys) => keys.try_collect().await?,
        Err(e) => anyhow::bail!("cannot list the cluster's connectors: {e}"),
    };
    let mut newest = 0;
    let connectors = keys
        .iter()
        .filter(|k| k.starts_with(CONNECTOR_PREFIX))
        .count();
    for key in keys {
        if let Some(entry) = cluster.config.entry(&key).await? {
            newest = newest.max(entry.revision);
            apply(cluster, worker, entry).await;
        }
    }
    tracing::info!(connectors, "loaded the cluster's connectors");
    Ok(newest)
}

/// Follows the config bucket from `revision` on, for as long as the process runs.
async fn follow_configs(cluster: Arc<Cluster>, worker: Arc<dyn Reconcile>, mut revision: u64) {
    loop {
        let mut watch = match cluster.config.watch_all_from_revision(revision + 1).await {
            Ok(watch) => watch,
            Err(e) => {
                tracing::warn!("watching the cluster's configs: {e}; retrying");
                tokio::time::sleep(HEARTBEAT).await;
                continue;
            }
        };
        while let Ok(Some(next)) = tokio::time::timeout(WATCH_IDLE, watch.next()).await {
            match next {
                Ok(entry) => {
                    revision = revision.max(entry.revision);
                    apply(&cluster, worker.as_ref(), entry).await;
                }
                Err(e) => {
                    tracing::warn!("watching the cluster's configs: {e}; watching again");
                    break;
                }
            }
        }
    }
}

/// Restarts what other workers ask this one to restart.
async fn follow_restarts(
    cluster: Arc<Cluster>,
    worker: Arc<dyn Reconcile>,
    mut requests: async_nats::Subscriber,
) {
    while let Some(message) = requests.next().await {
        let Ok(message) = serde_json::from_slice::<RestartMessage>(&message.payload) else {
            continue;
        };
        if message.from == cluster.worker_id() {
            continue;
        }
        let connector = &message.request.connector;
        match worker.restart_here(&message.request).await {
            Ok(tasks) if !tasks.is_empty() => {
                tracing::info!(%connector, ?tasks, from = %message.from, "restarted on request");
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(%connector, "restart request: {e}"),
        }
    }
}

/// Applies one change of the config bucket to this worker.
async fn apply(cluster: &Cluster, worker: &dyn Reconcile, entry: kv::Entry) {
    let is_put = entry.operation == kv::Operation::Put;
    if entry.key == ASSIGNMENT_KEY {
        match serde_json::from_slice::<Assignment>(&entry.value) {
            Ok(assignment) if is_put => {
                let generation = assignment.generation;
                cluster.set_applied(assignment);
                tracing::info!(generation, "applying the cluster's assignment");
                worker.placement_changed().await;
            }
            Ok(_) => {}
            Err(e) => tracing::error!("unreadable assignment in the cluster: {e}"),
        }
        return;
    }
    let Some(name) = entry
        .key
        .strip_prefix(CONNECTOR_PREFIX)
        .and_then(from_key_part)
    else {
        return;
    };
    if !is_put {
        return worker.apply_deleted(&name, entry.revision).await;
    }
    match serde_json::from_slice::<StoredConnector>(&entry.value) {
        Ok(stored) => worker.apply_stored(&name, stored, entry.revision).await,
        Err(e) => tracing::error!(connector = %name, "unreadable config in the cluster: {e}"),
    }
}

/// The heartbeat, lease and rebalance loop; on shutdown gives up the lease.
///
/// The leader rebalances only once its own heartbeats have succeeded for a whole
/// [`LIVE_TTL`]: after NATS was unreachable (a failover), every heartbeat may have expired
/// meanwhile, and the live workers are known again only when each has refreshed its own.
async fn tick(
    cluster: Arc<Cluster>,
    worker: Arc<dyn Reconcile>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut lease = None;
    // `start` put this worker's heartbeat: the others' are current unless NATS fails over.
    let mut healthy_since = Instant::now()
        .checked_sub(LIVE_TTL)
        .unwrap_or_else(Instant::now);
    loop {
        if tokio::time::timeout(HEARTBEAT, shutdown.wait_for(|stop| *stop))
            .await
            .is_ok()
        {
            break;
        }
        if let Err(e) = cluster.heartbeat().await {
            tracing::warn!("{e}");
            healthy_since = Instant::now();
            continue;
        }
        if cluster.hold_lease(&mut lease).await && healthy_since.elapsed() >= LIVE_TTL {
            if let Err(e) = rebalance(&cluster, worker.as_ref()).await {
                tracing::warn!("rebalance: {e}");
            }
        }
    }
    cluster.release_lease(lease).await;
}

/// Leader only: writes a new assignment when the live workers or the connectors changed.
async fn rebalance(cluster: &Cluster, worker: &dyn Reconcile) -> Result<(), ClusterError> {
    let workers = cluster.live_workers().await?;
    let connectors = worker.task_counts().await;
    let mut next = allocate(cluster.options.strategy, &workers, &connectors);
    let current = cluster.stored_assignment().await?;
    if next.same_placement(&current) || workers.is_empty() {
        return Ok(());
    }
    next.generation = current.generation + 1;
    let json = serde_json::to_vec(&next).map_err(|e| ClusterError::json(ASSIGNMENT_KEY, e))?;
    let put = cluster.config.put(ASSIGNMENT_KEY, json.into()).await;
    put.map_err(|e| ClusterError::kv(ASSIGNMENT_KEY, e))?;
    let tasks: usize = next.tasks.values().map(Vec::len).sum();
    tracing::info!(
        generation = next.generation,
        workers = workers.len(),
        tasks,
        "rebalanced: {}",
        workers.join(", ")
    );
    Ok(())
}
