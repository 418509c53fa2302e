//! Who is alive, who leads, who runs which task: keys in the `live` bucket, each expiring
//! [`LIVE_TTL`] after its last refresh, so a killed worker drops out by itself.
//!
//! - `worker.<id>`: a worker's heartbeat, put every [`HEARTBEAT`].
//! - `leader`: the lease of the worker that computes the assignment; taken with `create`
//!   (refused while another holds it), kept with a compare-and-set `update`.
//! - `task.<connector>.<n>`: the lock a worker takes before it starts a task, so a task never
//!   runs on two workers at once, even while an assignment is moving it.

use std::collections::BTreeMap;
use std::time::Instant;

use async_nats::jetstream::kv;
use futures_util::TryStreamExt;
use tokio::sync::watch;

use super::{from_key_part, key_part, Cluster, ClusterError, HEARTBEAT, LIVE_TTL};
use crate::storage::StoredConnector;
use crate::worker::control::{ControlError, ControlPlane, Owner, RemoteTask, TaskLease};
use crate::worker::{RestartRequest, TaskStatus};

const WORKER_PREFIX: &str = "worker.";
const LEADER_KEY: &str = "leader";

impl Cluster {
    /// Refreshes this worker's heartbeat.
    pub async fn heartbeat(&self) -> Result<(), ClusterError> {
        let key = format!("{WORKER_PREFIX}{}", key_part(self.worker_id()));
        let put = self
            .live
            .put(key, self.worker_id().to_string().into())
            .await;
        put.map(|_| ())
            .map_err(|e| ClusterError::Heartbeat { source: e.into() })
    }

    /// Removes this worker's heartbeat, so the others rebalance at once (graceful leave).
    pub async fn leave(&self) {
        let key = format!("{WORKER_PREFIX}{}", key_part(self.worker_id()));
        if let Err(e) = self.live.delete(key).await {
            tracing::warn!("leaving the cluster: {e}");
        }
    }

    /// The ids of the workers whose heartbeat has not expired, sorted.
    pub async fn live_workers(&self) -> Result<Vec<String>, ClusterError> {
        let listing = |e: async_nats::Error| ClusterError::Workers { source: e };
        let keys: Vec<String> = self
            .live
            .keys()
            .await
            .map_err(|e| listing(e.into()))?
            .try_collect()
            .await
            .map_err(|e| listing(e.into()))?;
        let mut workers: Vec<String> = keys
            .iter()
            .filter_map(|key| from_key_part(key.strip_prefix(WORKER_PREFIX)?))
            .collect();
        workers.sort();
        Ok(workers)
    }

    /// Takes or keeps the leader lease; `held` is the revision of this worker's lease entry.
    /// True while this worker leads.
    pub async fn hold_lease(&self, held: &mut Option<u64>) -> bool {
        let me = bytes::Bytes::from(self.worker_id().to_string());
        let taken = match *held {
            Some(revision) => self.live.update(LEADER_KEY, me, revision).await.ok(),
            None => self.live.create(LEADER_KEY, me).await.ok(),
        };
        let was_leader = held.is_some();
        *held = taken;
        if held.is_some() != was_leader {
            let now = if held.is_some() {
                "now leads"
            } else {
                "no longer leads"
            };
            tracing::info!(worker = %self.worker_id(), "{now} the cluster");
        }
        held.is_some()
    }

    /// Gives the lease up (shutdown), so another worker takes it without waiting for expiry.
    pub async fn release_lease(&self, held: Option<u64>) {
        if let Some(revision) = held {
            let _ = self
                .live
                .delete_expect_revision(LEADER_KEY, Some(revision))
                .await;
        }
    }

    /// Waits until this worker holds the lock of one task, or `stop` turns true (None).
    async fn lock_task(
        &self,
        connector: &str,
        task: u32,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<TaskLock> {
        let key = format!("task.{}.{task}", key_part(connector));
        let me = bytes::Bytes::from(self.worker_id().to_string());
        let mut waited = false;
        loop {
            if *stop.borrow() {
                return None;
            }
            match self.live.create(&key, me.clone()).await {
                Ok(revision) => {
                    return Some(TaskLock {
                        live: self.live.clone(),
                        me,
                        key,
                        revision,
                    })
                }
                Err(e) if !waited => {
                    tracing::info!(task = %format!("{connector}/{task}"), "waiting for the task lock ({e})");
                    waited = true;
                }
                Err(_) => {}
            }
            let _ = tokio::time::timeout(HEARTBEAT / 4, stop.wait_for(|stop| *stop)).await;
        }
    }
}

/// This worker's lock on one task; refreshed by [`TaskLock::keep`], dropped by
/// [`TaskLock::release`].
struct TaskLock {
    live: kv::Store,
    /// This worker's id, the lock's value.
    me: bytes::Bytes,
    key: String,
    revision: u64,
}

impl TaskLock {
    /// Refreshes the lock every heartbeat; returns why, once it is lost (taken by another
    /// worker, or not refreshed in time because NATS was unreachable). A lock that expired
    /// while NATS failed over is taken again, if nobody else took it.
    async fn keep(&mut self) -> String {
        let mut refreshed = Instant::now();
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            let (me, live) = (self.me.clone(), &self.live);
            let refresh = match live.update(&self.key, me.clone(), self.revision).await {
                Ok(revision) => Ok(revision),
                // Expired while NATS failed over: take it again unless another worker did.
                Err(e) => live.create(&self.key, me).await.map_err(|_| e.to_string()),
            };
            match refresh {
                Ok(revision) => {
                    self.revision = revision;
                    refreshed = Instant::now();
                }
                Err(e) if refreshed.elapsed() + HEARTBEAT >= LIVE_TTL => {
                    return format!(
                        "lost the task lock ({e}); another worker may run the task now"
                    );
                }
                Err(e) => tracing::warn!(lock = %self.key, "refreshing the task lock: {e}"),
            }
        }
    }

    /// Frees the lock so the task's next worker starts it at once.
    async fn release(self) {
        let _ = self
            .live
            .delete_expect_revision(&self.key, Some(self.revision))
            .await;
    }
}

#[async_trait::async_trait]
impl TaskLease for TaskLock {
    async fn keep(&mut self) -> String {
        TaskLock::keep(self).await
    }

    async fn release(self: Box<Self>) {
        TaskLock::release(*self).await
    }
}

/// Configs live in the `config` bucket (the coordinator loads them), placement is the last
/// assignment applied, task leases are the task locks, states go to the `status` bucket and
/// restart requests to every worker.
#[async_trait::async_trait]
impl ControlPlane for Cluster {
    async fn persist_config(
        &self,
        name: &str,
        stored: Option<&StoredConnector>,
    ) -> Result<u64, ControlError> {
        let revision = self.put_connector(name, stored).await;
        revision.map_err(|e| e.persisting(name))
    }

    async fn stored_connectors(&self) -> Result<Vec<(String, StoredConnector)>, ControlError> {
        Ok(Vec::new())
    }

    fn tasks_here(&self, connector: &str, tasks: usize) -> Vec<usize> {
        self.applied()
            .tasks_of(connector, self.worker_id())
            .into_iter()
            .filter(|task| *task < tasks)
            .collect()
    }

    fn connector_owner(&self, connector: &str) -> Owner {
        match self.applied().connectors.get(connector) {
            Some(owner) if owner == self.worker_id() => Owner::Here,
            Some(owner) => Owner::Worker(owner.clone()),
            None => Owner::Unassigned,
        }
    }

    async fn other_workers(&self) -> Vec<String> {
        let mut workers = self.live_workers().await.unwrap_or_else(|e| {
            tracing::warn!("{e}");
            Vec::new()
        });
        workers.retain(|worker| worker != self.worker_id());
        workers
    }

    async fn remote_tasks(&self, connector: &str, tasks: usize) -> BTreeMap<usize, RemoteTask> {
        let assignment = self.applied();
        let mut reports = self.task_reports(connector, tasks).await;
        (0..tasks)
            .map(|task| {
                let owner = assignment.owner(connector, task).unwrap_or_default();
                let reported = reports
                    .remove(&task)
                    .filter(|report| report.worker == owner)
                    .map(|report| report.status);
                let owner = owner.to_string();
                (task, RemoteTask { owner, reported })
            })
            .collect()
    }

    async fn restart_elsewhere(&self, request: &RestartRequest) -> bool {
        self.request_restart(request).await;
        true
    }

    async fn lease_task(
        &self,
        connector: &str,
        task: u32,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Box<dyn TaskLease>> {
        let lock = self.lock_task(connector, task, stop).await?;
        Some(Box::new(lock))
    }

    async fn report_states(
        &self,
        connector: String,
        task: u32,
        states: watch::Receiver<TaskStatus>,
    ) {
        Cluster::report_states(self, connector, task, states).await
    }
}
