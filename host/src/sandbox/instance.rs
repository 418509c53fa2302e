//! Typed calls into a connector component: connector-level calls on short-lived instances,
//! and the source and sink task instances that task actors own.

use std::collections::BTreeMap;

use wasmtime::component::{InstancePre, ResourceAny};
use wasmtime::Store;

use super::bindings::sink_world::{SinkConnector, SinkConnectorPre};
use super::bindings::source_world::{SourceConnector, SourceConnectorPre};
use super::bindings::types::{Config, ConfigError, Descriptor, Position, RecordBatch, TaskError};
use super::{DirGrant, GuestFailure, Identity, Sandbox, TaskState};

/// A compiled, linked connector component and the world it targets.
#[derive(Clone)]
pub enum ConnectorComponent {
    Source(SourceConnectorPre<TaskState>),
    Sink(SinkConnectorPre<TaskState>),
}

/// A connector-level instance of either world.
enum AnyInstance {
    Source(SourceConnector),
    Sink(SinkConnector),
}

/// Runs `$call` on the `connector` interface under the call limits, whichever world the
/// instance targets.
macro_rules! on_connector {
    ($sandbox:expr, $name:literal, $instance:expr, |$c:ident| $call:expr) => {
        match $instance {
            AnyInstance::Source(i) => {
                let $c = i.wasm_connect_connector_connector();
                $sandbox.guarded($name, $call).await
            }
            AnyInstance::Sink(i) => {
                let $c = i.wasm_connect_connector_connector();
                $sandbox.guarded($name, $call).await
            }
        }
    };
}

impl ConnectorComponent {
    /// Picks the world by the exports the component has.
    pub(super) fn from_pre(pre: InstancePre<TaskState>) -> Result<Self, String> {
        let source_err = match SourceConnectorPre::new(pre.clone()) {
            Ok(source) => return Ok(ConnectorComponent::Source(source)),
            Err(e) => e,
        };
        match SinkConnectorPre::new(pre) {
            Ok(sink) => Ok(ConnectorComponent::Sink(sink)),
            Err(sink_err) => Err(format!(
                "targets neither the source-connector nor the sink-connector world of \
                 wasm-connect:connector@0.1.0 (as a source: {source_err:#}; as a sink: {sink_err:#})"
            )),
        }
    }

    /// True for the `source-connector` world.
    pub fn is_source(&self) -> bool {
        matches!(self, ConnectorComponent::Source(_))
    }

    pub async fn describe(&self, sandbox: &Sandbox) -> Result<Descriptor, GuestFailure> {
        let identity = Identity { connector: String::new(), task: None };
        let (mut store, instance) = self.instantiate(sandbox, identity).await?;
        on_connector!(sandbox, "describe", &instance, |c| c.call_describe(&mut store))
    }

    pub async fn validate(
        &self,
        sandbox: &Sandbox,
        identity: Identity,
        config: &Config,
    ) -> Result<Result<(), Vec<ConfigError>>, GuestFailure> {
        let (mut store, instance) = self.instantiate(sandbox, identity).await?;
        on_connector!(sandbox, "validate", &instance, |c| c.call_validate(&mut store, config))
    }

    pub async fn task_configs(
        &self,
        sandbox: &Sandbox,
        identity: Identity,
        config: &Config,
        max_tasks: u32,
    ) -> Result<Result<Vec<Config>, String>, GuestFailure> {
        let (mut store, instance) = self.instantiate(sandbox, identity).await?;
        on_connector!(sandbox, "task-configs", &instance, |c| c.call_task_configs(&mut store, config, max_tasks))
    }

    async fn instantiate(&self, sandbox: &Sandbox, identity: Identity) -> Result<(Store<TaskState>, AnyInstance), GuestFailure> {
        let mut store = sandbox.store(TaskState::new(identity, &[], BTreeMap::new(), &sandbox.limits));
        let instance = match self {
            ConnectorComponent::Source(pre) => pre.instantiate_async(&mut store).await.map(AnyInstance::Source),
            ConnectorComponent::Sink(pre) => pre.instantiate_async(&mut store).await.map(AnyInstance::Sink),
        };
        let instance = instance.map_err(|e| GuestFailure::Instantiate(format!("{e:#}")))?;
        Ok((store, instance))
    }
}

/// What a task instance starts from.
pub struct TaskSetup<'a> {
    pub identity: Identity,
    pub grants: &'a [DirGrant],
    pub committed: BTreeMap<String, String>,
    pub config: &'a Config,
}

/// A running source task: its own store, instance and task resource.
pub struct SourceInstance<'s> {
    sandbox: &'s Sandbox,
    store: Store<TaskState>,
    bindings: SourceConnector,
    task: ResourceAny,
}

impl<'s> SourceInstance<'s> {
    /// Instantiates `pre` and calls `source-task.start`.
    pub async fn start(
        sandbox: &'s Sandbox,
        pre: &SourceConnectorPre<TaskState>,
        setup: TaskSetup<'_>,
    ) -> Result<Result<Self, TaskError>, GuestFailure> {
        let mut store = sandbox.store(TaskState::new(setup.identity, setup.grants, setup.committed, &sandbox.limits));
        let bindings = pre.instantiate_async(&mut store).await.map_err(|e| GuestFailure::Instantiate(format!("{e:#}")))?;
        let api = bindings.wasm_connect_connector_source();
        let started = sandbox.guarded("start", api.source_task().call_start(&mut store, setup.config)).await?;
        Ok(started.map(|task| SourceInstance { sandbox, store, bindings, task }))
    }

    pub async fn poll(&mut self, max_records: u32, max_bytes: u32) -> Result<Result<RecordBatch, TaskError>, GuestFailure> {
        let api = self.bindings.wasm_connect_connector_source().source_task();
        self.sandbox.guarded("poll", api.call_poll(&mut self.store, self.task, max_records, max_bytes)).await
    }

    pub async fn commit(&mut self, positions: &[Position]) -> Result<(), GuestFailure> {
        let api = self.bindings.wasm_connect_connector_source().source_task();
        self.sandbox.guarded("commit", api.call_commit(&mut self.store, self.task, positions)).await
    }

    /// Calls `stop` and drops the task resource.
    pub async fn stop(mut self) -> Result<(), GuestFailure> {
        let api = self.bindings.wasm_connect_connector_source().source_task();
        self.sandbox.guarded("stop", api.call_stop(&mut self.store, self.task)).await?;
        self.sandbox.guarded("stop", self.task.resource_drop_async(&mut self.store)).await
    }
}

/// A running sink task: its own store, instance and task resource.
pub struct SinkInstance<'s> {
    sandbox: &'s Sandbox,
    store: Store<TaskState>,
    bindings: SinkConnector,
    task: ResourceAny,
}

impl<'s> SinkInstance<'s> {
    /// Instantiates `pre` and calls `sink-task.start`.
    pub async fn start(
        sandbox: &'s Sandbox,
        pre: &SinkConnectorPre<TaskState>,
        setup: TaskSetup<'_>,
    ) -> Result<Result<Self, TaskError>, GuestFailure> {
        let mut store = sandbox.store(TaskState::new(setup.identity, setup.grants, setup.committed, &sandbox.limits));
        let bindings = pre.instantiate_async(&mut store).await.map_err(|e| GuestFailure::Instantiate(format!("{e:#}")))?;
        let api = bindings.wasm_connect_connector_sink();
        let started = sandbox.guarded("start", api.sink_task().call_start(&mut store, setup.config)).await?;
        Ok(started.map(|task| SinkInstance { sandbox, store, bindings, task }))
    }

    pub async fn put(&mut self, topic: &str, first_offset: u64, batch: &RecordBatch) -> Result<Result<(), TaskError>, GuestFailure> {
        let api = self.bindings.wasm_connect_connector_sink().sink_task();
        self.sandbox.guarded("put", api.call_put(&mut self.store, self.task, topic, first_offset, batch)).await
    }

    pub async fn flush(&mut self) -> Result<Result<Vec<Position>, TaskError>, GuestFailure> {
        let api = self.bindings.wasm_connect_connector_sink().sink_task();
        self.sandbox.guarded("flush", api.call_flush(&mut self.store, self.task)).await
    }

    /// Calls `stop` and drops the task resource.
    pub async fn stop(mut self) -> Result<(), GuestFailure> {
        let api = self.bindings.wasm_connect_connector_sink().sink_task();
        self.sandbox.guarded("stop", api.call_stop(&mut self.store, self.task)).await?;
        self.sandbox.guarded("stop", self.task.resource_drop_async(&mut self.store)).await
    }
}
