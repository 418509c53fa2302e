//! Typed calls into a connector: connector-level calls on short-lived instances, and the
//! source and sink task instances that task actors own. Every call runs through
//! [`guarded`], which arms the CPU budget, applies the wall-clock limit, cancels the call when
//! its task is stopping (after [`STOP_GRACE`]) and explains a failure.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;
use wasmtime::component::{InstancePre, ResourceAny};
use wasmtime::Store;

use super::bindings::since_v0_1_0::sink_world::{SinkConnector, SinkConnectorPre};
use super::bindings::since_v0_1_0::source_world::{SourceConnector, SourceConnectorPre};
use super::bindings::since_v0_1_0::{self as v1, Upgrade};
use super::bindings::since_v0_2_0::sink_world as sink_v2;
use super::bindings::since_v0_2_0::transform_world::exports::wasm_connect::connector::transform::TransformOutput;
use super::bindings::since_v0_2_0::transform_world::{TransformComponent, TransformComponentPre};
use super::bindings::types::{
    Config, ConfigError, ConnectorKind, Descriptor, Position, RecordBatch, TaskError,
};
use super::{
    CompileError, DirChanges, Grants, GuestFailure, Identity, InstanceSlot, Limits,
    NetworkCounters, Redactor, Sandbox, TaskState, STOP_GRACE,
};

/// A compiled, linked connector component and the world it targets.
#[derive(Clone)]
pub enum ConnectorComponent {
    Source(SourceConnectorPre<TaskState>),
    Sink(SinkComponent),
    Transform(TransformComponentPre<TaskState>),
}

/// A sink component, by the contract version it was built against.
#[derive(Clone)]
pub enum SinkComponent {
    V1(SinkConnectorPre<TaskState>),
    /// Built against 0.2.0: may report errant records.
    V2(sink_v2::SinkConnectorPre<TaskState>),
}

/// A connector-level instance of any world.
enum AnyInstance {
    Source(SourceConnector),
    Sink(SinkConnector),
    SinkV2(sink_v2::SinkConnector),
    Transform(TransformComponent),
}

/// One call on the `connector` interface of instance `$i` under the call limits.
macro_rules! connector_call {
    ($store:expr, $limits:expr, $name:literal, $i:expr, |$c:ident, $s:ident| $call:expr) => {{
        let $c = $i.wasm_connect_connector_connector();
        guarded($store, $limits, &mut Cancel::never(), $name, async |$s| {
            $call.await
        })
        .await
    }};
}

/// A short-lived connector-level instance, its store and its slot (dropped in this order).
struct ConnectorCall {
    store: Store<TaskState>,
    instance: AnyInstance,
    _slot: InstanceSlot,
}

/// Runs `$call` (given the interface `$c` and the store `$s`) on the `connector` interface
/// under the call limits, whichever world the instance targets; a 0.1.0 answer is
/// converted to the host's types.
macro_rules! on_connector {
    ($store:expr, $limits:expr, $name:literal, $instance:expr, |$c:ident, $s:ident| $call:expr) => {
        match $instance {
            AnyInstance::Source(i) => {
                connector_call!($store, $limits, $name, i, |$c, $s| $call).map(Upgrade::upgrade)
            }
            AnyInstance::Sink(i) => {
                connector_call!($store, $limits, $name, i, |$c, $s| $call).map(Upgrade::upgrade)
            }
            AnyInstance::SinkV2(i) => connector_call!($store, $limits, $name, i, |$c, $s| $call),
            AnyInstance::Transform(i) => {
                connector_call!($store, $limits, $name, i, |$c, $s| $call)
            }
        }
    };
}

impl ConnectorComponent {
    /// Picks the world by the exports the component has.
    pub(super) fn from_pre(pre: InstancePre<TaskState>) -> Result<Self, CompileError> {
        let as_source = match SourceConnectorPre::new(pre.clone()) {
            Ok(source) => return Ok(ConnectorComponent::Source(source)),
            Err(e) => e,
        };
        let as_sink = match SinkConnectorPre::new(pre.clone()) {
            Ok(sink) => return Ok(ConnectorComponent::Sink(SinkComponent::V1(sink))),
            Err(e) => e,
        };
        if let Ok(sink) = sink_v2::SinkConnectorPre::new(pre.clone()) {
            return Ok(ConnectorComponent::Sink(SinkComponent::V2(sink)));
        }
        match TransformComponentPre::new(pre) {
            Ok(transform) => Ok(ConnectorComponent::Transform(transform)),
            Err(as_transform) => Err(CompileError::NoWorld {
                as_source,
                as_sink,
                as_transform,
            }),
        }
    }

    /// The kind of the world the component targets.
    pub fn kind(&self) -> ConnectorKind {
        match self {
            ConnectorComponent::Source(_) => ConnectorKind::Source,
            ConnectorComponent::Sink(_) => ConnectorKind::Sink,
            ConnectorComponent::Transform(_) => ConnectorKind::Transform,
        }
    }

    /// Calls `describe`, under the worker's limits with the wall-clock and CPU time cut to
    /// the describe timeout: a plugin that does not describe itself promptly does not load.
    pub async fn describe(&self, sandbox: &Sandbox) -> Result<Descriptor, GuestFailure> {
        let worker = sandbox.limits();
        let limits = &Limits {
            call_timeout: worker
                .connector
                .call_timeout
                .min(worker.worker.describe_timeout),
            cpu_per_call: worker
                .connector
                .cpu_per_call
                .min(worker.worker.describe_timeout),
            ..worker.connector.clone()
        };
        let identity = Identity {
            connector: String::new(),
            task: None,
        };
        let mut call = self.instantiate(sandbox, identity, limits).await?;
        on_connector!(
            &mut call.store,
            limits,
            "describe",
            &call.instance,
            |c, s| c.call_describe(s)
        )
    }

    pub async fn validate(
        &self,
        sandbox: &Sandbox,
        identity: Identity,
        limits: &Limits,
        config: &Config,
    ) -> Result<Result<(), Vec<ConfigError>>, GuestFailure> {
        let mut call = self.instantiate(sandbox, identity, limits).await?;
        on_connector!(
            &mut call.store,
            limits,
            "validate",
            &call.instance,
            |c, s| c.call_validate(s, config)
        )
    }

    pub async fn task_configs(
        &self,
        sandbox: &Sandbox,
        identity: Identity,
        limits: &Limits,
        config: &Config,
        max_tasks: u32,
    ) -> Result<Result<Vec<Config>, String>, GuestFailure> {
        let mut call = self.instantiate(sandbox, identity, limits).await?;
        on_connector!(
            &mut call.store,
            limits,
            "task-configs",
            &call.instance,
            |c, s| c.call_task_configs(s, config, max_tasks)
        )
    }

    async fn instantiate(
        &self,
        sandbox: &Sandbox,
        identity: Identity,
        limits: &Limits,
    ) -> Result<ConnectorCall, GuestFailure> {
        let slot = sandbox.call_slot().await?;
        let mut store = sandbox.store(
            TaskState::new(
                identity,
                &Grants::default(),
                BTreeMap::new(),
                limits,
                Redactor::default(),
                Default::default(),
            ),
            limits,
        );
        let instance = match self {
            ConnectorComponent::Source(pre) => pre
                .instantiate_async(&mut store)
                .await
                .map(AnyInstance::Source),
            ConnectorComponent::Sink(SinkComponent::V1(pre)) => pre
                .instantiate_async(&mut store)
                .await
                .map(AnyInstance::Sink),
            ConnectorComponent::Sink(SinkComponent::V2(pre)) => pre
                .instantiate_async(&mut store)
                .await
                .map(AnyInstance::SinkV2),
            ConnectorComponent::Transform(pre) => pre
                .instantiate_async(&mut store)
                .await
                .map(AnyInstance::Transform),
        };
        let instance = instance.map_err(instantiate_failure)?;
        Ok(ConnectorCall {
            store,
            instance,
            _slot: slot,
        })
    }
}

/// When the guest calls of a task are cut short: [`STOP_GRACE`] after the task is told to
/// stop. A call cancelled midway may leave its instance in any state, so once one was, no
/// call reaches that store again.
struct Cancel {
    /// The task's stop signal; None for calls nothing cancels.
    stop: Option<watch::Receiver<bool>>,
    /// Set once the stop was seen: the end of the grace.
    deadline: Option<Instant>,
    /// A call was cancelled: the store is never called again.
    fired: bool,
}

impl Cancel {
    fn new(stop: Option<watch::Receiver<bool>>) -> Self {
        Cancel {
            stop,
            deadline: None,
            fired: false,
        }
    }

    /// For calls that are never cancelled (connector-level calls, bounded by their timeout).
    fn never() -> Self {
        Cancel::new(None)
    }

    /// Resolves when the call in flight must be dropped.
    async fn due(&mut self) {
        let deadline = match (self.deadline, self.stop.as_mut()) {
            (Some(deadline), _) => deadline,
            (None, Some(stop)) => {
                // A stop signal whose sender is gone without a stop never fires.
                if stop.wait_for(|stop| *stop).await.is_err() {
                    return std::future::pending().await;
                }
                *self.deadline.insert(Instant::now() + STOP_GRACE)
            }
            (None, None) => return std::future::pending().await,
        };
        tokio::time::sleep_until(deadline).await;
    }
}

/// Runs one guest call on `store`: arms the CPU budget, applies the wall-clock limit, drops
/// the call when `cancel` is due, and on failure says which limit was hit, the panic message,
/// or the trap.
async fn guarded<T>(
    store: &mut Store<TaskState>,
    limits: &Limits,
    cancel: &mut Cancel,
    call: &'static str,
    run: impl AsyncFnOnce(&mut Store<TaskState>) -> wasmtime::Result<T>,
) -> Result<T, GuestFailure> {
    if cancel.fired {
        return Err(GuestFailure::Cancelled { call });
    }
    let state = store.data_mut();
    state.cpu_ticks_left = limits.cpu_ticks();
    state.cpu_exhausted = false;
    store.set_epoch_deadline(1);
    let started = std::time::Instant::now();
    let outcome = tokio::select! {
        outcome = tokio::time::timeout(limits.call_timeout, run(store)) => outcome,
        () = cancel.due() => {
            cancel.fired = true;
            return Err(GuestFailure::Cancelled { call });
        }
    };
    let pause = limits.pause_after(started.elapsed());
    if !pause.is_zero() {
        tokio::time::sleep(pause).await;
    }
    // A refused write may have been swallowed or reported by the guest: either way the
    // task fails with the host's reason.
    if let Some((budget, written)) = store.data().disk.as_ref().and_then(|d| d.exceeded()) {
        return Err(GuestFailure::Disk {
            call,
            budget,
            written,
        });
    }
    // Likewise a refused memory growth: a guest that turns it into an error of its own
    // (Python raises MemoryError, which the SDK reports as a task error) still fails with
    // the host's reason, like one that traps.
    if store.data().limiter.memory_hit {
        return Err(GuestFailure::Memory {
            call,
            limit: limits.memory_bytes,
        });
    }
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Err(_) => Err(GuestFailure::Timeout {
            call,
            limit: limits.call_timeout,
        }),
        Ok(Err(error)) => Err(explain(call, &error, store.data(), limits)),
    }
}

fn explain(
    call: &'static str,
    error: &wasmtime::Error,
    state: &TaskState,
    limits: &Limits,
) -> GuestFailure {
    if state.cpu_exhausted {
        GuestFailure::Cpu {
            call,
            budget: limits.cpu_per_call,
        }
    } else if let Some(message) = state.stderr.panic_message() {
        GuestFailure::Panic { call, message }
    } else {
        // The trap itself; the wasm backtrace goes to the debug log.
        let trap = format!("{error:?}");
        tracing::debug!(task = %state.identity(), "trap in {call}: {}", state.redact(&trap));
        let reason = match error.downcast_ref::<wasmtime::Trap>() {
            Some(trap) => trap.to_string(),
            None => format!("{error:#}"),
        };
        GuestFailure::Trap { call, reason }
    }
}

/// Calls a task's `stop` with `call_stop` and drops its resource; does nothing once a call
/// was cancelled (the store is dropped unused).
async fn stop_task(
    store: &mut Store<TaskState>,
    limits: &Limits,
    cancel: &mut Cancel,
    task: ResourceAny,
    call_stop: impl AsyncFnOnce(&mut Store<TaskState>) -> wasmtime::Result<()>,
) -> Result<(), GuestFailure> {
    if cancel.fired {
        return Ok(());
    }
    guarded(store, limits, cancel, "stop", call_stop).await?;
    guarded(store, limits, cancel, "stop", async |s| {
        task.resource_drop_async(s).await
    })
    .await
}

/// What a task instance starts from.
pub struct TaskSetup<'a> {
    pub identity: Identity,
    pub grants: &'a Grants,
    pub committed: BTreeMap<String, String>,
    pub config: &'a Config,
    pub limits: Limits,
    /// Shows resolved secrets as their references in the task's log lines and output.
    pub redactor: Redactor,
    /// The task's stop signal: its calls are cancelled [`STOP_GRACE`] after it is set. None:
    /// calls end only by returning or by the call timeout.
    pub stop: Option<watch::Receiver<bool>>,
}

impl<'a> TaskSetup<'a> {
    /// A store for this task, its limits, its cancellation and its config.
    fn into_store(self, sandbox: &Sandbox) -> (Store<TaskState>, Limits, Cancel, &'a Config) {
        let rates = sandbox.connector_rates(&self.identity.connector, &self.limits);
        let state = TaskState::new(
            self.identity,
            self.grants,
            self.committed,
            &self.limits,
            self.redactor,
            rates,
        );
        let store = sandbox.store(state, &self.limits);
        (store, self.limits, Cancel::new(self.stop), self.config)
    }
}

fn instantiate_failure(error: wasmtime::Error) -> GuestFailure {
    GuestFailure::Instantiate(format!("{error:#}"))
}

/// A running source task: its own store, instance and task resource.
pub struct SourceInstance {
    store: Store<TaskState>,
    bindings: SourceConnector,
    task: ResourceAny,
    limits: Limits,
    cancel: Cancel,
    /// The changes in its granted directories, when it reaches nothing else.
    changes: Option<DirChanges>,
    /// Last: freed once the store is gone.
    _slot: InstanceSlot,
}

impl SourceInstance {
    /// The bytes this task sent and received over the network so far.
    pub fn network_counters(&self) -> &Arc<NetworkCounters> {
        self.store.data().network_counters()
    }

    /// Instantiates `pre` and calls `source-task.start`.
    pub async fn start(
        sandbox: &Sandbox,
        pre: &SourceConnectorPre<TaskState>,
        setup: TaskSetup<'_>,
    ) -> Result<Result<Self, TaskError>, GuestFailure> {
        let slot = sandbox.task_slot(setup.stop.clone()).await?;
        // Before the first poll, so that no change after it goes unseen.
        let changes = sandbox.watch_changes(setup.grants);
        let (mut store, limits, mut cancel, config) = setup.into_store(sandbox);
        let bindings = pre
            .instantiate_async(&mut store)
            .await
            .map_err(instantiate_failure)?;
        let api = bindings.wasm_connect_connector_source().source_task();
        let started = guarded(&mut store, &limits, &mut cancel, "start", async |s| {
            api.call_start(s, config).await
        })
        .await?;
        Ok(started
            .map_err(Upgrade::upgrade)
            .map(|task| SourceInstance {
                store,
                bindings,
                task,
                limits,
                cancel,
                changes,
                _slot: slot,
            }))
    }

    pub async fn poll(
        &mut self,
        max_records: u32,
        max_bytes: u32,
    ) -> Result<Result<RecordBatch, TaskError>, GuestFailure> {
        let api = self.bindings.wasm_connect_connector_source().source_task();
        let task = self.task;
        guarded(
            &mut self.store,
            &self.limits,
            &mut self.cancel,
            "poll",
            async |s| api.call_poll(s, task, max_records, max_bytes).await,
        )
        .await
        .map(Upgrade::upgrade)
    }

    pub async fn commit(&mut self, positions: &[Position]) -> Result<(), GuestFailure> {
        let api = self.bindings.wasm_connect_connector_source().source_task();
        let (task, positions) = (self.task, v1::positions(positions));
        guarded(
            &mut self.store,
            &self.limits,
            &mut self.cancel,
            "commit",
            async |s| api.call_commit(s, task, &positions).await,
        )
        .await
    }

    /// The instance's linear memory now, in bytes.
    pub fn memory_used(&self) -> usize {
        self.store.data().limiter.memory_used
    }

    /// The changes in its granted directories, when it reaches nothing else.
    pub fn changes(&mut self) -> Option<&mut DirChanges> {
        self.changes.as_mut()
    }

    /// Calls `stop` and drops the task resource (see [`stop_task`]).
    pub async fn stop(mut self) -> Result<(), GuestFailure> {
        let api = self.bindings.wasm_connect_connector_source().source_task();
        let task = self.task;
        let call_stop = async |s: &mut Store<TaskState>| api.call_stop(s, task).await;
        stop_task(
            &mut self.store,
            &self.limits,
            &mut self.cancel,
            task,
            call_stop,
        )
        .await
    }
}

/// A sink instance, by contract version.
enum SinkBindings {
    V1(SinkConnector),
    V2(sink_v2::SinkConnector),
}

/// A running sink task: its own store, instance and task resource.
pub struct SinkInstance {
    store: Store<TaskState>,
    bindings: SinkBindings,
    task: ResourceAny,
    limits: Limits,
    cancel: Cancel,
    /// Last: freed once the store is gone.
    _slot: InstanceSlot,
}

impl SinkInstance {
    /// The instance's linear memory now, in bytes.
    pub fn memory_used(&self) -> usize {
        self.store.data().limiter.memory_used
    }

    /// The bytes this task sent and received over the network so far.
    pub fn network_counters(&self) -> &Arc<NetworkCounters> {
        self.store.data().network_counters()
    }

    /// Instantiates `pre` and calls `sink-task.start`.
    pub async fn start(
        sandbox: &Sandbox,
        pre: &SinkComponent,
        setup: TaskSetup<'_>,
    ) -> Result<Result<Self, TaskError>, GuestFailure> {
        let slot = sandbox.task_slot(setup.stop.clone()).await?;
        let (mut store, limits, mut cancel, config) = setup.into_store(sandbox);
        let (bindings, started) = match pre {
            SinkComponent::V1(pre) => {
                let bindings = pre
                    .instantiate_async(&mut store)
                    .await
                    .map_err(instantiate_failure)?;
                let api = bindings.wasm_connect_connector_sink().sink_task();
                let started = guarded(&mut store, &limits, &mut cancel, "start", async |s| {
                    api.call_start(s, config).await
                })
                .await?;
                (
                    SinkBindings::V1(bindings),
                    started.map_err(Upgrade::upgrade),
                )
            }
            SinkComponent::V2(pre) => {
                let bindings = pre
                    .instantiate_async(&mut store)
                    .await
                    .map_err(instantiate_failure)?;
                let api = bindings.wasm_connect_connector_sink().sink_task();
                let started = guarded(&mut store, &limits, &mut cancel, "start", async |s| {
                    api.call_start(s, config).await
                })
                .await?;
                (SinkBindings::V2(bindings), started)
            }
        };
        Ok(started.map(|task| SinkInstance {
            store,
            bindings,
            task,
            limits,
            cancel,
            _slot: slot,
        }))
    }

    /// Puts a batch; the records the sink reported errant (a 0.2.0 sink) are then in
    /// [`SinkInstance::take_errant`].
    pub async fn put(
        &mut self,
        topic: &str,
        first_offset: u64,
        batch: &RecordBatch,
    ) -> Result<Result<(), TaskError>, GuestFailure> {
        let task = self.task;
        let (store, limits, cancel) = (&mut self.store, &self.limits, &mut self.cancel);
        store.data_mut().errant_open(batch.count);
        match &self.bindings {
            SinkBindings::V1(b) => {
                let api = b.wasm_connect_connector_sink().sink_task();
                let old = v1::batch(batch);
                guarded(store, limits, cancel, "put", async |s| {
                    api.call_put(s, task, topic, first_offset, &old).await
                })
                .await
                .map(Upgrade::upgrade)
            }
            SinkBindings::V2(b) => {
                let api = b.wasm_connect_connector_sink().sink_task();
                guarded(store, limits, cancel, "put", async |s| {
                    api.call_put(s, task, topic, first_offset, batch).await
                })
                .await
            }
        }
    }

    /// The records the last `put` reported errant: (index in its batch, message).
    pub fn take_errant(&mut self) -> Vec<(u32, String)> {
        self.store.data_mut().errant_close()
    }

    pub async fn flush(&mut self) -> Result<Result<Vec<Position>, TaskError>, GuestFailure> {
        let task = self.task;
        let (store, limits, cancel) = (&mut self.store, &self.limits, &mut self.cancel);
        match &self.bindings {
            SinkBindings::V1(b) => {
                let api = b.wasm_connect_connector_sink().sink_task();
                guarded(store, limits, cancel, "flush", async |s| {
                    api.call_flush(s, task).await
                })
                .await
                .map(Upgrade::upgrade)
            }
            SinkBindings::V2(b) => {
                let api = b.wasm_connect_connector_sink().sink_task();
                guarded(store, limits, cancel, "flush", async |s| {
                    api.call_flush(s, task).await
                })
                .await
            }
        }
    }

    /// Calls `stop` and drops the task resource (see [`stop_task`]).
    pub async fn stop(mut self) -> Result<(), GuestFailure> {
        let task = self.task;
        let (store, limits, cancel) = (&mut self.store, &self.limits, &mut self.cancel);
        match &self.bindings {
            SinkBindings::V1(b) => {
                let api = b.wasm_connect_connector_sink().sink_task();
                let call_stop = async |s: &mut Store<TaskState>| api.call_stop(s, task).await;
                stop_task(store, limits, cancel, task, call_stop).await
            }
            SinkBindings::V2(b) => {
                let api = b.wasm_connect_connector_sink().sink_task();
                let call_stop = async |s: &mut Store<TaskState>| api.call_stop(s, task).await;
                stop_task(store, limits, cancel, task, call_stop).await
            }
        }
    }
}

/// A running transform: its own store, instance and transform-task resource.
pub struct TransformInstance {
    store: Store<TaskState>,
    bindings: TransformComponent,
    task: ResourceAny,
    limits: Limits,
    cancel: Cancel,
}

impl TransformInstance {
    /// Instantiates `pre` and calls `transform-task.start`.
    pub async fn start(
        sandbox: &Sandbox,
        pre: &TransformComponentPre<TaskState>,
        setup: TaskSetup<'_>,
    ) -> Result<Result<Self, TaskError>, GuestFailure> {
        let (mut store, limits, mut cancel, config) = setup.into_store(sandbox);
        let bindings = pre
            .instantiate_async(&mut store)
            .await
            .map_err(instantiate_failure)?;
        let api = bindings.wasm_connect_connector_transform().transform_task();
        let started = guarded(&mut store, &limits, &mut cancel, "start", async |s| {
            api.call_start(s, config).await
        })
        .await?;
        Ok(started.map(|task| TransformInstance {
            store,
            bindings,
            task,
            limits,
            cancel,
        }))
    }

    pub async fn apply(
        &mut self,
        batch: &RecordBatch,
    ) -> Result<Result<TransformOutput, TaskError>, GuestFailure> {
        let api = self
            .bindings
            .wasm_connect_connector_transform()
            .transform_task();
        let task = self.task;
        guarded(
            &mut self.store,
            &self.limits,
            &mut self.cancel,
            "apply",
            async |s| api.call_apply(s, task, batch).await,
        )
        .await
    }

    /// The instance's linear memory now, in bytes.
    pub fn memory_used(&self) -> usize {
        self.store.data().limiter.memory_used
    }

    /// Calls `stop` and drops the task resource (see [`stop_task`]).
    pub async fn stop(mut self) -> Result<(), GuestFailure> {
        let api = self
            .bindings
            .wasm_connect_connector_transform()
            .transform_task();
        let task = self.task;
        let call_stop = async |s: &mut Store<TaskState>| api.call_stop(s, task).await;
        stop_task(
            &mut self.store,
            &self.limits,
            &mut self.cancel,
            task,
            call_stop,
        )
        .await
    }
}
