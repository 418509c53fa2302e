//! The label sets of the metric families, and the enums their bounded labels take.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

use crate::sandbox::GuestFailure;
use crate::worker::RunState;

/// Encodes an enum label as its `name()`.
macro_rules! label_value {
    ($($t:ty),*) => {$(
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                std::fmt::Write::write_str(encoder, self.name())
            }
        }
    )*};
}

/// A guest call of a batch, as `batch_duration_seconds` labels it.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Op {
    Poll,
    Put,
    Flush,
    Commit,
}

impl Op {
    pub const ALL: [Op; 4] = [Op::Poll, Op::Put, Op::Flush, Op::Commit];

    pub fn name(self) -> &'static str {
        match self {
            Op::Poll => "poll",
            Op::Put => "put",
            Op::Flush => "flush",
            Op::Commit => "commit",
        }
    }
}

/// Where a batch failed, as `record_errors_total` labels it.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Stage {
    Poll,
    Transform,
    /// The batch check or the topic append refused it.
    Store,
    Put,
    Flush,
    Commit,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::Poll,
        Stage::Transform,
        Stage::Store,
        Stage::Put,
        Stage::Flush,
        Stage::Commit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Poll => "poll",
            Stage::Transform => "transform",
            Stage::Store => "store",
            Stage::Put => "put",
            Stage::Flush => "flush",
            Stage::Commit => "commit",
        }
    }
}

/// Why a task was restarted.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum RestartReason {
    /// It failed and was restarted after its backoff.
    Failure,
    /// A restart request (API or dashboard).
    Operator,
}

impl RestartReason {
    pub const ALL: [RestartReason; 2] = [RestartReason::Failure, RestartReason::Operator];

    pub fn name(self) -> &'static str {
        match self {
            RestartReason::Failure => "failure",
            RestartReason::Operator => "operator",
        }
    }
}

/// A limit a guest call hit (rows of the limits table).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Limit {
    Memory,
    Cpu,
    Timeout,
    Disk,
    /// No task instance slot was free (`--max-instances`).
    Instances,
}

impl Limit {
    pub const ALL: [Limit; 5] = [
        Limit::Memory,
        Limit::Cpu,
        Limit::Timeout,
        Limit::Disk,
        Limit::Instances,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Limit::Memory => "memory",
            Limit::Cpu => "cpu",
            Limit::Timeout => "timeout",
            Limit::Disk => "disk",
            Limit::Instances => "instances",
        }
    }

    /// The limit `failure` reports, if it is a limit hit.
    pub fn of(failure: &GuestFailure) -> Option<Limit> {
        match failure {
            GuestFailure::Memory { .. } => Some(Limit::Memory),
            GuestFailure::Cpu { .. } => Some(Limit::Cpu),
            GuestFailure::Timeout { .. } => Some(Limit::Timeout),
            GuestFailure::Disk { .. } => Some(Limit::Disk),
            GuestFailure::NoInstanceSlot { .. } => Some(Limit::Instances),
            GuestFailure::Panic { .. }
            | GuestFailure::Trap { .. }
            | GuestFailure::Cancelled { .. }
            | GuestFailure::Instantiate(_) => None,
        }
    }
}

/// Which REST API answered a request.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Api {
    /// The RocketMQ-Connect REST API.
    Legacy,
    /// The Kafka-Connect-shaped JSON API (with `/metrics`, the health routes and `/ui`).
    Json,
}

impl Api {
    pub fn name(self) -> &'static str {
        match self {
            Api::Legacy => "legacy",
            Api::Json => "json",
        }
    }
}

/// A connector or task state, spelled as the APIs spell it (`FAILED`).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub struct StateLabel(RunState);

impl From<RunState> for StateLabel {
    fn from(state: RunState) -> Self {
        StateLabel(state)
    }
}

impl StateLabel {
    fn name(&self) -> &'static str {
        self.0.name()
    }
}

label_value!(Op, Stage, RestartReason, Limit, Api, StateLabel);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectorLabels {
    pub connector: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectorStateLabels {
    pub connector: String,
    pub state: StateLabel,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabels {
    pub connector: String,
    pub task: u32,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskStateLabels {
    pub connector: String,
    pub task: u32,
    pub state: StateLabel,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub connector: String,
    pub task: u32,
    pub stage: Stage,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub connector: String,
    pub op: Op,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LagLabels {
    pub connector: String,
    pub topic: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RestartLabels {
    pub connector: String,
    pub task: u32,
    pub reason: RestartReason,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    pub connector: String,
    pub limit: Limit,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    pub plugin: String,
    pub version: String,
    pub digest: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    pub topic: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub api: Api,
    pub route: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
}
