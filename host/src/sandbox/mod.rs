//! The WebAssembly sandbox: one wasmtime `Engine` for the process, one `Linker` that offers
//! only the `host` interface, a WASI context built from nothing and outgoing wasi:http, one
//! `Store` per instance, and a timeout plus epoch-based yielding around every guest call.
//!
//! `bindings` holds the generated code of each WIT world, `compiler` compiles untrusted
//! components (in a child process under rlimits), `state` the per-store data and the
//! host functions, `limits` every limit, `capabilities` what an instance may reach (one
//! module per capability), `changes` the change notifications of granted directories,
//! `output` the guest's stdout/stderr, `redact` what keeps resolved
//! secrets out of messages, `disk` the disk budget, `http` outgoing wasi:http requests
//! (through the network grant), `sockets` TCP sockets under the network limits, `instance` the typed calls into a
//! connector (each armed with its CPU budget and wall-clock limit, failures explained).

mod bindings;
pub mod capabilities;
mod changes;
mod compiler;
mod disk;
mod http;
mod instance;
mod limits;
mod output;
mod redact;
mod sockets;
mod state;

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline,
};

pub use bindings::since_v0_2_0::transform_world::exports::wasm_connect::connector::transform::{
    RecordFailure, TransformOutput,
};
pub use bindings::types;
pub use capabilities::network::NETWORK_ALLOW_KEY;
pub use capabilities::{Capabilities, Grants, HostDirKind, NetworkCounters};
pub use changes::DirChanges;
pub use compiler::{run_child as run_compiler_child, CompileError, Compiler, COMPILE_SUBCOMMAND};
pub use instance::{
    ConnectorComponent, SinkComponent, SinkInstance, SourceInstance, TaskSetup, TransformInstance,
};
pub use limits::{
    parse_size, show_size, Field, Limit, LimitError, Limits, RestartPolicy, Unit, WorkerFields,
    WorkerLimits, CONNECTOR_CALL_SLOTS, EPOCH_TICK, LIMITS, MAX_BACKOFF, STOP_GRACE,
};
pub use redact::Redactor;
pub use state::{Identity, TaskState};

use bindings::since_v0_1_0::source_world::SourceConnector;
use bindings::since_v0_2_0::sink_world::wasm_connect::connector::errant;
use bindings::since_v0_2_0::transform_world::TransformComponent;

/// Why a call into a guest did not return normally.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GuestFailure {
    #[error("{call} did not return within {} ms", limit.as_millis())]
    Timeout { call: &'static str, limit: Duration },
    #[error("cpu budget {} ms exceeded in {call}", budget.as_millis())]
    Cpu {
        call: &'static str,
        budget: Duration,
    },
    #[error("memory limit {} MiB exceeded in {call}", limit >> 20)]
    Memory { call: &'static str, limit: usize },
    #[error("disk budget {} exceeded in {call}: the task wrote {} to its granted files and was refused more; raise limits.disk.bytes (ceiling --max-disk-bytes)", show_size(*budget as usize), show_size(*written as usize))]
    Disk {
        call: &'static str,
        budget: u64,
        written: u64,
    },
    #[error("guest panicked: {message}")]
    Panic { call: &'static str, message: String },
    #[error("guest trapped in {call}: {reason}")]
    Trap { call: &'static str, reason: String },
    /// The task was told to stop and the call outlived [`STOP_GRACE`]: it was dropped, and
    /// the store is never called again.
    #[error("{call} was cancelled: the task is stopping")]
    Cancelled { call: &'static str },
    #[error("cannot instantiate the component: {0}")]
    Instantiate(String),
    /// Every task instance slot stayed taken for [`TASK_SLOT_WAIT`].
    #[error("no free instance slot: this worker runs its --max-instances {max} task instances already; raise --max-instances, or stop or delete connectors")]
    NoInstanceSlot { max: usize },
}

/// How long a starting task waits for a task instance slot (one may be held by a task still
/// stopping, which ends within [`STOP_GRACE`] plus its last commit) before it fails.
pub const TASK_SLOT_WAIT: Duration = Duration::from_secs(5);

/// What one instance holds while it lives: a slot of the pooling allocator, counted by the
/// semaphore of its kind. Dropped after the instance's store (keep it the last field).
pub type InstanceSlot = tokio::sync::OwnedSemaphorePermit;

/// The engine, the linker, the limits and the capability settings shared by every connector.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<TaskState>,
    limits: WorkerLimits,
    capabilities: Capabilities,
    compiler: Compiler,
    /// One permit per core: compilations running at once.
    compiling: tokio::sync::Semaphore,
    /// One permit per task instance (`--max-instances`).
    task_slots: Arc<tokio::sync::Semaphore>,
    /// One permit per connector-level instance ([`CONNECTOR_CALL_SLOTS`]).
    call_slots: Arc<tokio::sync::Semaphore>,
    /// Each connector's network byte rates (wasi:http and TCP), shared by its tasks.
    rates: http::RateTable,
    /// Changes in the directories granted to sources that reach nothing else.
    changes: changes::ChangeWatcher,
}

impl Sandbox {
    pub fn new(limits: WorkerLimits, capabilities: Capabilities) -> anyhow::Result<Sandbox> {
        let engine = Engine::new(&engine_config(&limits)).map_err(setup_error)?;
        start_epoch_ticker(&engine);
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(setup_error)?;
        disk::shadow_file_writes(&mut linker).map_err(setup_error)?;
        capabilities::network::shadow_name_lookup(&mut linker).map_err(setup_error)?;
        sockets::shadow_tcp(&mut linker).map_err(setup_error)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(setup_error)?;
        SourceConnector::add_to_linker::<TaskState, HasSelf<TaskState>>(&mut linker, |state| state)
            .map_err(setup_error)?;
        TransformComponent::add_to_linker::<TaskState, HasSelf<TaskState>>(&mut linker, |state| {
            state
        })
        .map_err(setup_error)?;
        errant::add_to_linker::<TaskState, HasSelf<TaskState>>(&mut linker, |state| state)
            .map_err(setup_error)?;
        Ok(Sandbox {
            engine,
            linker,
            capabilities,
            compiler: Compiler::default(),
            compiling: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, usize::from),
            ),
            task_slots: Arc::new(tokio::sync::Semaphore::new(limits.worker.instances)),
            call_slots: Arc::new(tokio::sync::Semaphore::new(CONNECTOR_CALL_SLOTS)),
            rates: Default::default(),
            changes: Default::default(),
            limits,
        })
    }

    /// A slot for a task instance, waiting up to [`TASK_SLOT_WAIT`] for one to free up;
    /// a task told to stop meanwhile (`stop`) gives up at once.
    async fn task_slot(
        &self,
        stop: Option<tokio::sync::watch::Receiver<bool>>,
    ) -> Result<InstanceSlot, GuestFailure> {
        let max = self.limits.worker.instances;
        let acquire = self.task_slots.clone().acquire_owned();
        let stopped = async {
            if let Some(mut stop) = stop {
                if stop.wait_for(|stop| *stop).await.is_ok() {
                    return;
                }
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            waited = tokio::time::timeout(TASK_SLOT_WAIT, acquire) => match waited {
                Ok(Ok(slot)) => Ok(slot),
                Ok(Err(_)) | Err(_) => Err(GuestFailure::NoInstanceSlot { max }),
            },
            () = stopped => Err(GuestFailure::Cancelled { call: "start" }),
        }
    }

    /// A slot for a connector-level instance: these never take a task's slot, and wait
    /// for one another.
    async fn call_slot(&self) -> Result<InstanceSlot, GuestFailure> {
        self.call_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| GuestFailure::Instantiate("the sandbox is shutting down".into()))
    }

    /// Compiles plugin components as `compiler` says (in process by default).
    pub fn with_compiler(mut self, compiler: Compiler) -> Sandbox {
        self.compiler = compiler;
        self
    }

    pub fn limits(&self) -> &WorkerLimits {
        &self.limits
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// Compiles untrusted bytes (in a child process or on a thread, see [`Compiler`], within
    /// the worker's compile limits) and checks that they are a connector component this host
    /// can link: the component and its compiled code, as `Component::serialize` writes it.
    /// At most one compilation per core runs at once; the others wait their turn.
    pub async fn compile(
        &self,
        wasm: Vec<u8>,
    ) -> Result<(ConnectorComponent, Vec<u8>), CompileError> {
        let _turn = self
            .compiling
            .acquire()
            .await
            .map_err(|_| CompileError::ShutDown)?;
        let artifact = compiler::compile(
            &self.compiler,
            &self.engine,
            wasm,
            self.limits.worker.compile_time,
            self.limits.compile_memory,
        )
        .await?;
        // SAFETY: this host's own compiler (this binary, or this process) just produced the
        // artifact for an engine of this configuration; it has not been stored anywhere.
        let component = unsafe { self.load_compiled(&artifact) }?;
        Ok((component, artifact))
    }

    /// Checks that a compiled component is a connector this host can link.
    fn link(&self, component: &Component) -> Result<ConnectorComponent, CompileError> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(CompileError::Imports)?;
        ConnectorComponent::from_pre(pre)
    }

    /// The byte rates `connector`'s tasks share under `limits`.
    fn connector_rates(&self, connector: &str, limits: &Limits) -> http::ConnectorRates {
        self.rates.of(
            connector,
            (limits.network_bytes_out, limits.network_bytes_in),
        )
    }

    /// The changes in the directories of `grants`, for a task that reaches nothing else.
    fn watch_changes(&self, grants: &Grants) -> Option<DirChanges> {
        self.changes.watch(grants)
    }

    /// A fresh store for one instance, under `limits`.
    fn store(&self, state: TaskState, limits: &Limits) -> Store<TaskState> {
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.set_hostcall_fuel(limits.hostcall_fuel);
        // At every epoch tick a running guest yields to the runtime, so one busy guest never
        // starves another, and spends one tick of its call's CPU budget.
        store.epoch_deadline_callback(|mut context| {
            let state = context.data_mut();
            if state.cpu_ticks_left == 0 {
                state.cpu_exhausted = true;
                return Ok(UpdateDeadline::Interrupt);
            }
            state.cpu_ticks_left -= 1;
            Ok(UpdateDeadline::Yield(1))
        });
        store.set_epoch_deadline(1);
        store
    }

    /// Feeds `state` everything a compiled artifact must match to be loadable by this engine
    /// (wasmtime version, target, compiler flags, tunables): the compiled-code cache's key.
    pub fn hash_compatibility(&self, state: &mut impl std::hash::Hasher) {
        std::hash::Hash::hash(&self.engine.precompile_compatibility_hash(), state);
    }

    /// Links a component that this host compiled and serialized earlier, like `compile` does
    /// with wasm bytes. Wasmtime re-checks the artifact's version and flags, not its code.
    ///
    /// # Safety
    /// `artifact` runs as native code: it must be bytes `Component::serialize` produced for an
    /// engine of the same compatibility hash, read back intact (checksummed) from a place only
    /// this host writes.
    pub unsafe fn load_compiled(
        &self,
        artifact: &[u8],
    ) -> Result<ConnectorComponent, CompileError> {
        // SAFETY: the caller vouches for the artifact's origin and integrity.
        let component = unsafe { Component::deserialize(&self.engine, artifact) }
            .map_err(CompileError::NotLoadable)?;
        self.link(&component)
    }

    /// [`Sandbox::load_compiled`] for an artifact in an open file, which wasmtime maps
    /// instead of copying: it opens `/proc/self/fd/<fd>`, the very file the caller checked,
    /// even if its path has been replaced since.
    ///
    /// # Safety
    /// As for [`Sandbox::load_compiled`], for the file's content, which must also not change
    /// while the component lives.
    pub unsafe fn load_compiled_file(
        &self,
        file: &std::fs::File,
    ) -> Result<ConnectorComponent, CompileError> {
        use std::os::fd::AsRawFd;
        let path = format!("/proc/self/fd/{}", file.as_raw_fd());
        // SAFETY: the caller vouches for the file's origin, integrity and stability.
        let component = unsafe { Component::deserialize_file(&self.engine, path) }
            .map_err(CompileError::NotLoadable)?;
        self.link(&component)
    }
}

fn engine_config(limits: &WorkerLimits) -> Config {
    // Every task instance and every connector-level call has its slot (see `task_slot`,
    // `call_slot`), so the pool is never what refuses an instance.
    let instances =
        u32::try_from(limits.worker.instances + CONNECTOR_CALL_SLOTS).unwrap_or(u32::MAX);
    let mut pooling = PoolingAllocationConfig::default();
    pooling
        .total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(8))
        .total_memories(instances.saturating_mul(2))
        .total_tables(instances.saturating_mul(8))
        .total_stacks(instances)
        .max_memories_per_component(8)
        .max_tables_per_component(16)
        .max_core_instances_per_component(16)
        .max_component_instance_size(1 << 20)
        .max_core_instance_size(1 << 20)
        .max_memory_size(limits.connector.memory_bytes);
    let mut config = compiler::compiler_config();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    config
}

/// Advances the epoch every [`EPOCH_TICK`] until the engine is dropped.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the epoch ticker; guests will not yield: {e}");
    }
}

fn setup_error(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("cannot set up the wasm engine: {e:#}")
}
