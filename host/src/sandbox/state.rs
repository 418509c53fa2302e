//! What one store holds: its WASI context (built from nothing), its limiter and CPU budget,
//! who it is, and the host interface the guest imports.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::{source_world::wasm_connect::connector::host, types, LogLevel};
use super::capabilities::Grants;
use super::disk::DiskBudget;
use super::output::{escape_line, GuestOutput, LineRate};
use super::redact::Redactor;
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

/// The per-store state.
pub struct TaskState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limiter: GuestLimiter,
    identity: Identity,
    committed: BTreeMap<String, String>,
    /// Epoch ticks the current call may still run for.
    pub(super) cpu_ticks_left: u64,
    /// Set when the current call ran out of CPU budget.
    pub(super) cpu_exhausted: bool,
    pub(super) stderr: GuestOutput,
    /// Shows resolved secrets in `log` messages as their references.
    redactor: Redactor,
    /// Rate limit of the `log` host call.
    log_rate: LineRate,
    /// What the task may still write to files (`limits.disk.bytes`; None: unlimited).
    pub(super) disk: Option<Arc<DiskBudget>>,
}

impl TaskState {
    /// State for one instance: no env, no args, no network and no files but `grants`;
    /// stdout and stderr go to the log.
    pub fn new(
        identity: Identity,
        grants: &Grants,
        committed: BTreeMap<String, String>,
        limits: &Limits,
        redactor: Redactor,
    ) -> Self {
        let task = identity.to_string();
        let stderr = GuestOutput::new(task.clone(), "stderr", redactor.clone());
        let mut wasi = WasiCtxBuilder::new();
        // Granted files are read and written on the task's own thread instead of a
        // `spawn_blocking` round trip per 4 KiB chunk (wasmtime#7973): several times faster
        // for file connectors. Must precede `preopened_dir`, which captures the setting.
        wasi.allow_blocking_current_thread(true);
        wasi.stdout(GuestOutput::new(task.clone(), "stdout", redactor.clone()))
            .stderr(stderr.clone());
        grants.apply(&mut wasi, &task, &redactor);
        let mut table = ResourceTable::new();
        table.set_max_capacity(limits.max_resources);
        TaskState {
            wasi: wasi.build(),
            table,
            limiter: GuestLimiter {
                memory_bytes: limits.memory_bytes,
                memory_hit: false,
                memory_used: 0,
            },
            identity,
            committed,
            cpu_ticks_left: limits.cpu_ticks(),
            cpu_exhausted: false,
            stderr,
            redactor,
            log_rate: LineRate::new(),
            disk: DiskBudget::new(limits.disk_bytes),
        }
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// `text` with the values resolved for this task shown as their references.
    pub fn redact<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        self.redactor.redact(text)
    }
}

/// Caps linear memory and remembers that the cap was hit: a Rust guest whose allocation fails
/// aborts with a plain `unreachable` trap, so this is how the host can say why it died.
pub(super) struct GuestLimiter {
    memory_bytes: usize,
    pub(super) memory_hit: bool,
    /// Linear memory the instance's memories hold now, in bytes.
    pub(super) memory_used: usize,
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.memory_bytes;
        self.memory_hit |= !allowed;
        if allowed {
            self.memory_used += desired.saturating_sub(current);
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES_PER_STORE
    }

    fn tables(&self) -> usize {
        MAX_INSTANCES_PER_STORE
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES_PER_STORE
    }
}

/// Core instances, tables and memories one store may create (a Rust wasip2 component uses a
/// handful of each).
const MAX_INSTANCES_PER_STORE: usize = 64;
const MAX_MEMORIES_PER_STORE: usize = 16;
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl WasiView for TaskState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for TaskState {}

impl host::Host for TaskState {
    fn log(&mut self, level: LogLevel, message: String) {
        let task = &self.identity;
        if !self.log_rate.admit(task, "log") {
            return;
        }
        // Redacted before it is cut, so no cut can leave part of a secret behind.
        let message = escape_line(self.redactor.redact(&message).as_bytes());
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
