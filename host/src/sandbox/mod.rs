//! The WebAssembly sandbox: one wasmtime `Engine` for the process, one `Linker` that offers
//! only the `host` interface and a WASI context built from nothing, one `Store` per
//! instance, and a timeout plus epoch-based yielding around every guest call.
//!
//! `bindings` holds the generated code of each WIT world, `state` the per-store data and the
//! host functions, `limits` every limit, `instance` the typed calls into a connector.

mod bindings;
mod instance;
mod limits;
mod state;

use std::future::Future;
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

pub use bindings::types;
pub use instance::{ConnectorComponent, SinkInstance, SourceInstance, TaskSetup};
pub use limits::{Limits, EPOCH_TICK};
pub use state::{DirGrant, Identity, TaskState};

use bindings::source_world::SourceConnector;

/// Why a call into a guest did not return normally.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GuestFailure {
    #[error("{call} did not return within {} ms", limit.as_millis())]
    Timeout { call: &'static str, limit: Duration },
    #[error("guest trapped in {call}: {reason}")]
    Trap { call: &'static str, reason: String },
    #[error("cannot instantiate the component: {0}")]
    Instantiate(String),
}

/// The engine, the linker and the limits shared by every connector.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<TaskState>,
    limits: Limits,
}

impl Sandbox {
    pub fn new(limits: Limits) -> anyhow::Result<Sandbox> {
        let engine = Engine::new(&engine_config(&limits)).map_err(setup_error)?;
        start_epoch_ticker(&engine);
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(setup_error)?;
        SourceConnector::add_to_linker::<TaskState, HasSelf<TaskState>>(&mut linker, |state| state)
            .map_err(setup_error)?;
        Ok(Sandbox { engine, linker, limits })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Compiles untrusted bytes and checks that they are a connector component this host can
    /// link. CPU-heavy: call it off the async runtime.
    pub fn compile(&self, wasm: &[u8]) -> Result<ConnectorComponent, String> {
        let component = Component::from_binary(&self.engine, wasm).map_err(|e| {
            if is_core_module(wasm) {
                "a core wasm module, not a component: build it for wasm32-wasip2 (or run `wasm-tools component new`)".into()
            } else {
                format!("not a valid wasm component: {e:#}")
            }
        })?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| format!("imports something this host does not provide: {e:#}"))?;
        ConnectorComponent::from_pre(pre)
    }

    /// A fresh store for one instance.
    fn store(&self, state: TaskState) -> Store<TaskState> {
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        // Yield to the runtime at every epoch tick so one busy guest never starves another.
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        store
    }

    /// Runs one guest call under the wall-clock limit.
    async fn guarded<T>(
        &self,
        call: &'static str,
        future: impl Future<Output = wasmtime::Result<T>>,
    ) -> Result<T, GuestFailure> {
        let limit = self.limits.call_timeout;
        match tokio::time::timeout(limit, future).await {
            Err(_) => Err(GuestFailure::Timeout { call, limit }),
            Ok(Err(e)) => Err(GuestFailure::Trap { call, reason: format!("{e:#}") }),
            Ok(Ok(value)) => Ok(value),
        }
    }
}

fn engine_config(limits: &Limits) -> Config {
    let mut pooling = PoolingAllocationConfig::default();
    pooling
        .total_component_instances(limits.max_instances)
        .total_core_instances(limits.max_instances * 8)
        .total_memories(limits.max_instances * 2)
        .total_tables(limits.max_instances * 8)
        .total_stacks(limits.max_instances)
        .max_memories_per_component(8)
        .max_tables_per_component(16)
        .max_core_instances_per_component(16)
        .max_component_instance_size(1 << 20)
        .max_core_instance_size(1 << 20)
        .max_memory_size(limits.memory_bytes);
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        // No component-model-async: host→guest calls are ~4x cheaper without it.
        .concurrency_support(false)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    config
}

/// Advances the epoch every [`EPOCH_TICK`] until the engine is dropped.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new().name("epoch-ticker".into()).spawn(move || {
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

/// True when the bytes are a core module (version 1) rather than a component.
fn is_core_module(wasm: &[u8]) -> bool {
    wasm.len() >= 8 && wasm[0..4] == *b"\0asm" && wasm[4..8] == [1, 0, 0, 0]
}
