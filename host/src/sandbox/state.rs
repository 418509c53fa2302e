//! What one store holds: its WASI context (built from nothing), its limiter and CPU budget,
//! who it is, and the host interface the guest imports.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bindings::since_v0_1_0::{self as v1, source_world::wasm_connect::connector as v1_api};
use super::bindings::since_v0_2_0::sink_world::wasm_connect::connector::errant;
use super::bindings::since_v0_2_0::transform_world::wasm_connect::connector::host;
use super::bindings::{types, LogLevel};
use super::capabilities::{Grants, NetworkCounters, NetworkGrant};
use super::disk::DiskBudget;
use super::http::{ConnectorRates, HttpHooks};
use super::output::{escape_line, GuestOutput, LineRate};
use super::redact::Redactor;
use super::sockets::SocketSlots;
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
    /// Records the sink reported errant during the `put` in flight (None outside `put`),
    /// and how many records that batch has.
    errant: Option<(u32, Vec<(u32, String)>)>,
    /// What `network.allow` grants (to wasi:sockets and wasi:http alike).
    network: Arc<NetworkGrant>,
    /// Bytes sent and received over wasi:http and TCP.
    network_counters: Arc<NetworkCounters>,
    /// The sockets the task may hold, and those its TCP sockets hold.
    pub(super) tcp: SocketSlots,
    http: WasiHttpCtx,
    http_hooks: HttpHooks,
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
        rates: ConnectorRates,
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
        let network = Arc::new(grants.network.clone());
        let network_counters = Arc::new(NetworkCounters::default());
        let tcp = SocketSlots::new(
            limits.network_connections,
            network_counters.clone(),
            rates.clone(),
            task.clone(),
        );
        let http_hooks = HttpHooks::new(
            network.clone(),
            network_counters.clone(),
            rates,
            limits.call_timeout,
            tcp.permits(),
            task,
        );
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
            errant: None,
            network,
            network_counters,
            tcp,
            http: WasiHttpCtx::new(),
            http_hooks,
        }
    }

    /// A `put` of `count` records begins: errant reports are taken until
    /// [`TaskState::errant_close`].
    pub(super) fn errant_open(&mut self, count: u32) {
        self.errant = Some((count, Vec::new()));
    }

    /// The records reported errant since [`TaskState::errant_open`], at most one per record.
    pub(super) fn errant_close(&mut self) -> Vec<(u32, String)> {
        self.errant
            .take()
            .map(|(_, errant)| errant)
            .unwrap_or_default()
    }

    /// What the task's `network.allow` grants.
    pub(super) fn network_grant(&self) -> &NetworkGrant {
        &self.network
    }

    /// The bytes this task sent and received over the network so far.
    pub fn network_counters(&self) -> &Arc<NetworkCounters> {
        &self.network_counters
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

impl WasiHttpView for TaskState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

impl types::Host for TaskState {}
impl v1_api::types::Host for TaskState {}

impl errant::Host for TaskState {
    fn report(&mut self, index: u32, message: String) {
        let Some((count, errant)) = self.errant.as_mut() else {
            return;
        };
        // Guest input: an index outside the batch, or one reported twice, is ignored.
        if index < *count && !errant.iter().any(|(i, _)| *i == index) {
            let message = escape_line(self.redactor.redact(&message).as_bytes());
            errant.push((index, message));
        }
    }
}

/// 0.1.0's host interface is 0.2.0's.
impl v1_api::host::Host for TaskState {
    fn log(&mut self, level: v1::LogLevel, message: String) {
        host::Host::log(self, v1::log_level(level), message)
    }

    fn committed_position(&mut self, partition: String) -> Option<String> {
        host::Host::committed_position(self, partition)
    }

    fn connector_name(&mut self) -> String {
        host::Host::connector_name(self)
    }

    fn task_id(&mut self) -> Option<u32> {
        host::Host::task_id(self)
    }
}

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
