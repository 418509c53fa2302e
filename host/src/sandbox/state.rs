//! What one store holds: its WASI context (built from nothing), its limiter, who it is,
//! and the host interface the guest imports.

use std::collections::BTreeMap;
use std::path::PathBuf;

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::{source_world::wasm_connect::connector::host, types, LogLevel};
use super::Limits;

/// Which connector and task an instance serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub connector: String,
    /// None for connector-level calls (`describe`, `validate`, `task-configs`).
    pub task: Option<u32>,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.task {
            Some(task) => write!(f, "{}/{task}", self.connector),
            None => write!(f, "{}", self.connector),
        }
    }
}

/// A directory the instance may open, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    pub dir: PathBuf,
    pub writable: bool,
}

/// The per-store state.
pub struct TaskState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limits: StoreLimits,
    identity: Identity,
    committed: BTreeMap<String, String>,
}

impl TaskState {
    /// State for one instance: no env, no args, no stdio, no network; only `grants`.
    pub fn new(identity: Identity, grants: &[DirGrant], committed: BTreeMap<String, String>, limits: &Limits) -> Self {
        let mut wasi = WasiCtxBuilder::new();
        // Granted files are read and written on the task's own thread instead of a
        // `spawn_blocking` round trip per 4 KiB chunk (wasmtime#7973): several times faster
        // for file connectors. Must precede `preopened_dir`, which captures the setting.
        wasi.allow_blocking_current_thread(true);
        for grant in grants {
            let perms = if grant.writable { FsPerms::ReadWrite } else { FsPerms::ReadOnly };
            let guest_path = grant.dir.to_string_lossy();
            // A missing directory is not granted; the connector reports the file as missing.
            if let Err(e) = wasi.preopened_dir(&grant.dir, guest_path.as_ref(), perms) {
                tracing::warn!(task = %identity, dir = %grant.dir.display(), "directory not granted: {e}");
            }
        }
        let limits = StoreLimitsBuilder::new().memory_size(limits.memory_bytes).instances(64).tables(64).memories(16).build();
        TaskState { wasi: wasi.build(), table: ResourceTable::new(), limits, identity, committed }
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }
}

impl WasiView for TaskState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl types::Host for TaskState {}

impl host::Host for TaskState {
    fn log(&mut self, level: LogLevel, message: String) {
        let task = &self.identity;
        match level {
            LogLevel::Trace => tracing::trace!(%task, "{message}"),
            LogLevel::Debug => tracing::debug!(%task, "{message}"),
            LogLevel::Info => tracing::info!(%task, "{message}"),
            LogLevel::Warn => tracing::warn!(%task, "{message}"),
            LogLevel::Error => tracing::error!(%task, "{message}"),
        }
    }

    fn committed_position(&mut self, partition: String) -> Option<String> {
        self.committed.get(&partition).cloned()
    }

    fn connector_name(&mut self) -> String {
        self.identity.connector.clone()
    }

    fn task_id(&mut self) -> Option<u32> {
        self.identity.task
    }
}
