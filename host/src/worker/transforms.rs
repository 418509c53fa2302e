//! Transforms (Kafka Connect's single-message transforms) and their predicates: the
//! [`Stages`] a batch passes through in a task, between a source's `poll` and the store, and
//! between a sink's read and its `put`.
//!
//! Config (Kafka's keys, all host-interpreted, see `keys`): `transforms=a,b` names the
//! stages in order; `transforms.a.type` the transform plugin (name, `name@version` or a
//! Kafka class alias); `transforms.a.<key>` its own keys (handed to it without the prefix);
//! `transforms.a.predicate=p` and `transforms.a.negate` guard it with predicate `p`,
//! configured as `predicates=p`, `predicates.p.type` and `predicates.p.<key>`.
//!
//! Each transform runs as its own component instance (its own store, under the connector's
//! limits, cancelled with the task); a trap fails the task like a connector's. Predicates
//! are evaluated by the host ([`Predicate`]). A transform answers per batch with the output
//! records, the input record each came from, and the records that failed; the chain maps
//! every failure back to the record it was given ([`ChainOutput`]).

use std::sync::Arc;

use regex::Regex;
use wasm_connect_sdk::{BatchReader, BatchWriter, RecordRef};

use super::errors::{interleave, ErrorPolicy, FailedIn, Failure, Retry};
use super::task::TaskContext;
use crate::plugins::{Plugin, PluginRegistry};
use crate::sandbox::types::{Config, ConnectorKind, RecordBatch, TaskError};
use crate::sandbox::{
    ConnectorComponent, GuestFailure, Identity, Limits, Sandbox, TaskSetup, TransformInstance,
    TransformOutput,
};
use crate::storage::Properties;

/// The key listing the transforms, in order.
pub const TRANSFORMS: &str = "transforms";
/// The key listing the predicates.
pub const PREDICATES: &str = "predicates";

/// Kafka's predicate class names, by the predicate they name.
const PREDICATE_CLASSES: [(&str, PredicateKind); 3] = [
    ("TopicNameMatches", PredicateKind::TopicNameMatches),
    ("HasHeaderKey", PredicateKind::HasHeaderKey),
    ("RecordIsTombstone", PredicateKind::RecordIsTombstone),
];
/// The package of Kafka's predicate classes.
const PREDICATE_PACKAGE: &str = "org.apache.kafka.connect.transforms.predicates.";

/// A problem with one transform or predicate key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct StageConfigError {
    pub key: String,
    pub message: String,
}

fn config_error(key: impl Into<String>, message: impl Into<String>) -> StageConfigError {
    StageConfigError {
        key: key.into(),
        message: message.into(),
    }
}

/// Why a batch could not pass the stages: the task fails with it (a retriable one is tried
/// again).
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("transform {alias}: {failure}")]
    Guest {
        alias: String,
        failure: GuestFailure,
    },
    #[error("transform {alias} failed: {reason}")]
    Fatal { alias: String, reason: String },
    #[error("transform {alias}: {reason} (retriable)")]
    Retriable { alias: String, reason: String },
    #[error("transform {alias} returned a malformed answer: {reason}")]
    Malformed { alias: String, reason: String },
    #[error("the batch given to the transforms is malformed: {0}")]
    Input(wasm_connect_sdk::FrameError),
    #[error("transforms are not started: {0}")]
    NotStarted(String),
}

impl StageError {
    /// Whether trying the batch again later may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(self, StageError::Retriable { .. })
    }
}

/// Which predicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PredicateKind {
    TopicNameMatches,
    HasHeaderKey,
    RecordIsTombstone,
}

/// A condition on a record, evaluated by the host.
#[derive(Debug, Clone)]
pub enum Predicate {
    /// The topic matches the regex as a whole (Java's `matches()`).
    TopicNameMatches(Regex),
    /// The record has a header of this name.
    HasHeaderKey(String),
    /// The value is empty.
    RecordIsTombstone,
}

impl Predicate {
    fn test(&self, record: &RecordRef<'_>) -> bool {
        match self {
            Predicate::TopicNameMatches(regex) => regex.is_match(record.topic),
            Predicate::HasHeaderKey(name) => record.headers().any(|(n, _)| n == name),
            Predicate::RecordIsTombstone => record.value.is_empty(),
        }
    }

    /// Predicate `name` as `config` configures it.
    fn configured(name: &str, config: &Properties) -> Result<Predicate, StageConfigError> {
        let prefix = format!("{PREDICATES}.{name}.");
        let type_key = format!("{prefix}type");
        let class = config.get(&type_key).map(|c| c.trim()).unwrap_or_default();
        let short = class.strip_prefix(PREDICATE_PACKAGE).unwrap_or(class);
        let Some((_, kind)) = PREDICATE_CLASSES.iter().find(|(n, _)| *n == short) else {
            return Err(config_error(
                type_key,
                format!(
                    "unknown predicate type {class:?}; use TopicNameMatches, HasHeaderKey or \
                     RecordIsTombstone (or their {PREDICATE_PACKAGE}… class names)"
                ),
            ));
        };
        let required = |key: &str| {
            let full = format!("{prefix}{key}");
            config
                .get(&full)
                .filter(|v| !v.is_empty())
                .cloned()
                .ok_or_else(|| config_error(&full, format!("Request config key: {full}")))
        };
        Ok(match kind {
            PredicateKind::TopicNameMatches => {
                let key = format!("{prefix}pattern");
                let pattern = required("pattern")?;
                let regex = Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
                    config_error(
                        key,
                        format!("not a valid regex ({e}); write e.g. `orders-.*`"),
                    )
                })?;
                Predicate::TopicNameMatches(regex)
            }
            PredicateKind::HasHeaderKey => Predicate::HasHeaderKey(required("name")?),
            PredicateKind::RecordIsTombstone => Predicate::RecordIsTombstone,
        })
    }
}

/// A predicate as a transform uses it: records pass through the transform when the
/// predicate holds (or, negated, when it does not); the others pass unchanged.
#[derive(Debug, Clone)]
struct Guard {
    predicate: Predicate,
    negate: bool,
}

impl Guard {
    fn admits(&self, record: &RecordRef<'_>) -> bool {
        self.predicate.test(record) != self.negate
    }
}

/// One configured transform, and its instance once the task started it.
pub struct Stage {
    alias: String,
    plugin: Arc<Plugin>,
    /// Its `transforms.<alias>.*` keys without the prefix.
    config: Config,
    guard: Option<Guard>,
    /// A store is not `Sync`; the lock makes the stage so (the task context is shared by
    /// reference across awaits) and is only ever taken through `&mut` (`get_mut`).
    instance: Option<std::sync::Mutex<TransformInstance>>,
}

/// What the stages made of a batch.
pub struct ChainOutput {
    pub batch: RecordBatch,
    /// For each output record, the index of the record it came from in the batch given.
    pub origins: Vec<u32>,
    pub failures: Vec<Failure>,
}

/// The transforms of a connector, in order (see the module doc). Empty by default.
#[derive(Default)]
pub struct Stages {
    stages: Vec<Stage>,
    /// Why the configured stages cannot run (a plugin gone since the create): the task fails
    /// with it when it starts.
    problem: Option<String>,
    /// The buffer of the batch last given to the stages, kept for the next one (see
    /// [`Stages::input_buffer`]).
    input: Vec<u8>,
}

impl Stages {
    /// The stages `config` configures, with their plugins from `plugins`; a problem is kept
    /// and reported when a task starts.
    pub fn configured(plugins: &PluginRegistry, config: &Properties) -> Stages {
        match configure(plugins, config) {
            Ok(stages) => Stages {
                stages,
                ..Stages::default()
            },
            Err(e) => Stages {
                problem: Some(e.to_string()),
                ..Stages::default()
            },
        }
    }

    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// A buffer to build the next batch for the stages in (the one [`through_stages`] kept):
    /// a fresh multi-megabyte buffer per batch costs its page faults every time.
    pub fn input_buffer(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.input)
    }

    /// Starts one instance of every transform for the task `ctx` runs: its own store under
    /// the connector's limits, no grants, the task's stop signal.
    pub async fn start(ctx: &mut TaskContext) -> Result<(), String> {
        let mut stages = std::mem::take(&mut ctx.stages);
        let started = stages.start_all(ctx).await;
        ctx.stages = stages;
        started
    }

    async fn start_all(&mut self, ctx: &TaskContext) -> Result<(), String> {
        if let Some(problem) = &self.problem {
            return Err(problem.clone());
        }
        for stage in &mut self.stages {
            let ConnectorComponent::Transform(pre) = &stage.plugin.component else {
                return Err(format!(
                    "transform {}: the plugin is not a transform",
                    stage.alias
                ));
            };
            let setup = TaskSetup {
                identity: ctx.identity.clone(),
                grants: &Default::default(),
                committed: Default::default(),
                config: &stage.config,
                limits: ctx.limits.clone(),
                redactor: ctx.redactor.clone(),
                stop: Some(ctx.stop.clone()),
            };
            let alias = &stage.alias;
            match TransformInstance::start(&ctx.sandbox, pre, setup).await {
                Ok(Ok(instance)) => stage.instance = Some(std::sync::Mutex::new(instance)),
                Ok(Err(TaskError::Retriable(reason) | TaskError::Fatal(reason))) => {
                    return Err(format!("transform {alias}: start failed: {reason}"))
                }
                Err(failure) => return Err(format!("transform {alias}: {failure}")),
            }
        }
        Ok(())
    }

    /// Stops every started transform; the stages stay configured, so a restart of the task
    /// starts them again.
    pub async fn stop(ctx: &mut TaskContext) {
        let mut stages = std::mem::take(&mut ctx.stages);
        for stage in &mut stages.stages {
            if let Some(instance) = stage.instance.take() {
                let instance = instance.into_inner().unwrap_or_else(|e| e.into_inner());
                if let Err(e) = instance.stop().await {
                    let reason = format!("transform {}: stop: {e}", stage.alias);
                    tracing::warn!(task = %ctx.identity, "{}", ctx.redact(&reason));
                }
            }
        }
        ctx.stages = stages;
    }

    /// `batch` through every stage, in order. Failed records are left out of the output
    /// and listed, by their index in `batch`.
    pub async fn apply(&mut self, batch: &RecordBatch) -> Result<ChainOutput, StageError> {
        let mut failures = Vec::new();
        // For each record of the current batch, its index in `batch`.
        let mut origins: Vec<u32> = (0..batch.count).collect();
        let mut current: Option<RecordBatch> = None;
        for stage in &mut self.stages {
            let input = current.as_ref().unwrap_or(batch);
            let (next, next_origins) = stage.apply(input, &origins, &mut failures).await?;
            current = Some(next);
            origins = next_origins;
        }
        Ok(ChainOutput {
            batch: current.unwrap_or_else(|| clone_batch(batch)),
            origins,
            failures,
        })
    }
}

/// `batch` (built by the host) through the task's stages, its failed records handled by
/// `policy` (dead letter records take the places of the records they stand for); a
/// retriable error is retried as the policy says. `default_topic` is the topic of records
/// that name none. Err: the reason the task fails. The stages keep the buffer of `batch`
/// for the next one ([`Stages::input_buffer`]).
pub async fn through_stages(
    ctx: &mut TaskContext,
    policy: &ErrorPolicy,
    batch: RecordBatch,
    default_topic: &str,
) -> Result<RecordBatch, String> {
    if ctx.stages.is_empty() {
        return Ok(batch);
    }
    let out = stages_output(ctx, policy, &batch, default_topic).await;
    ctx.stages.input = batch.frames;
    out
}

async fn stages_output(
    ctx: &mut TaskContext,
    policy: &ErrorPolicy,
    batch: &RecordBatch,
    default_topic: &str,
) -> Result<RecordBatch, String> {
    let mut retry = Retry::new(policy);
    let out = loop {
        match ctx.stages.apply(batch).await {
            Ok(out) => break out,
            Err(e) if e.is_retriable() && !ctx.stopping() => match retry.next_delay() {
                Some(delay) => {
                    tracing::debug!(task = %ctx.identity, "{}; retrying", ctx.redact(&e.to_string()));
                    ctx.pause(delay).await;
                }
                None => return Err(format!("{e}; still failing after errors.retry.timeout")),
            },
            Err(e) => return Err(e.to_string()),
        }
    };
    if out.failures.is_empty() {
        return Ok(out.batch);
    }
    let dead = policy.handle(&ctx.identity, batch, default_topic, out.failures)?;
    Ok(interleave(out.batch, &out.origins, dead))
}

impl Stage {
    /// One stage over `batch` (well-formed: built by the host or checked transform output),
    /// whose records came from `origins`: the new batch and the origins of its records;
    /// failures are added to `failures`.
    async fn apply(
        &mut self,
        batch: &RecordBatch,
        origins: &[u32],
        failures: &mut Vec<Failure>,
    ) -> Result<(RecordBatch, Vec<u32>), StageError> {
        let alias = &self.alias;
        let Some(instance) = self.instance.as_mut() else {
            return Err(StageError::NotStarted(alias.clone()));
        };
        let instance = instance.get_mut().unwrap_or_else(|e| e.into_inner());
        if origins.len() != batch.count as usize {
            return Err(StageError::Input(
                wasm_connect_sdk::FrameError::CountMismatch {
                    declared: batch.count,
                    found: origins.len() as u32,
                },
            ));
        }
        // With a guard that holds for some records only: the records and the indexes of those
        // the transform sees; they alone are handed to it.
        let guarded = match &self.guard {
            None => None,
            Some(guard) => {
                let records =
                    BatchReader::read_all(&batch.frames, batch.count).map_err(StageError::Input)?;
                let selected: Vec<usize> = (0..records.len())
                    .filter(|i| guard.admits(&records[*i]))
                    .collect();
                if selected.is_empty() {
                    return Ok((clone_batch(batch), origins.to_vec()));
                }
                (selected.len() < records.len()).then_some((records, selected))
            }
        };
        let guarded_input;
        let input = match &guarded {
            None => batch,
            Some((records, selected)) => {
                let mut writer = BatchWriter::new();
                for i in selected {
                    writer.push_frame(records[*i].frame);
                }
                let (count, frames) = writer.into_parts();
                guarded_input = RecordBatch { count, frames };
                &guarded_input
            }
        };
        let out = match instance.apply(input).await {
            Ok(Ok(out)) => out,
            Ok(Err(TaskError::Fatal(reason))) => {
                return Err(StageError::Fatal {
                    alias: alias.clone(),
                    reason,
                })
            }
            Ok(Err(TaskError::Retriable(reason))) => {
                return Err(StageError::Retriable {
                    alias: alias.clone(),
                    reason,
                })
            }
            Err(failure) => {
                // A trapped or cancelled instance takes no further call, `stop` included.
                self.instance = None;
                return Err(StageError::Guest {
                    alias: alias.clone(),
                    failure,
                });
            }
        };
        let malformed = |reason: String| StageError::Malformed {
            alias: alias.clone(),
            reason,
        };
        check_output(&out, input.count as usize).map_err(malformed)?;
        // The index in `batch` of the record the transform saw at `index`.
        let given = |index: u32| match &guarded {
            None => index as usize,
            Some((_, selected)) => selected[index as usize],
        };
        for failure in &out.failures {
            failures.push(Failure {
                index: origins[given(failure.index)],
                failed_in: FailedIn::Transformation,
                by: alias.clone(),
                message: failure.message.clone(),
            });
        }
        let Some((records, selected)) = guarded else {
            let next = out.origins.iter().map(|o| origins[*o as usize]).collect();
            return Ok((out.batch, next));
        };
        // Merge: unselected records in place, each selected one replaced by its outputs.
        let mut writer = BatchWriter::with_capacity(batch.frames.len());
        let mut next = Vec::with_capacity(records.len());
        let produced = BatchReader::new(&out.batch.frames);
        let mut outputs = out.origins.iter().zip(produced).peekable();
        let mut selected_iter = selected.iter().enumerate().peekable();
        for (i, record) in records.iter().enumerate() {
            match selected_iter.peek() {
                Some((k, s)) if **s == i => {
                    let k = *k as u32;
                    selected_iter.next();
                    while let Some((_, produced)) = outputs.next_if(|(o, _)| **o == k) {
                        // Checked above: every output record reads.
                        let produced = produced.map_err(|e| malformed(e.to_string()))?;
                        writer.push_frame(produced.frame);
                        next.push(origins[i]);
                    }
                }
                _ => {
                    writer.push_frame(record.frame);
                    next.push(origins[i]);
                }
            }
        }
        let (count, frames) = writer.into_parts();
        Ok((RecordBatch { count, frames }, next))
    }
}

fn clone_batch(batch: &RecordBatch) -> RecordBatch {
    RecordBatch {
        count: batch.count,
        frames: batch.frames.clone(),
    }
}

/// Checks a transform's answer for an input of `inputs` records (it is guest output): a
/// well-formed batch, one origin per output record, origins in order and within the input,
/// failures within the input.
fn check_output(out: &TransformOutput, inputs: usize) -> Result<(), String> {
    let mut records = 0usize;
    for record in BatchReader::new(&out.batch.frames) {
        record.map_err(|e| format!("the batch: {e}"))?;
        records += 1;
    }
    if records != out.batch.count as usize {
        let e = wasm_connect_sdk::FrameError::CountMismatch {
            declared: out.batch.count,
            found: records as u32,
        };
        return Err(format!("the batch: {e}"));
    }
    if out.origins.len() != records {
        return Err(format!(
            "{} origins for {} records; give one origin per output record",
            out.origins.len(),
            records
        ));
    }
    if let Some(o) = out.origins.iter().find(|o| **o as usize >= inputs) {
        return Err(format!("origin {o} is outside the {inputs} input records"));
    }
    if out.origins.windows(2).any(|w| w[0] > w[1]) {
        return Err("origins are not in order; output records must keep the input order".into());
    }
    if let Some(f) = out.failures.iter().find(|f| f.index as usize >= inputs) {
        return Err(format!(
            "failure index {} is outside the {inputs} input records",
            f.index
        ));
    }
    Ok(())
}

/// The stages `config` names, resolved against `plugins`.
fn configure(
    plugins: &PluginRegistry,
    config: &Properties,
) -> Result<Vec<Stage>, StageConfigError> {
    let no_pin = Properties::new();
    aliases(config, TRANSFORMS)
        .map(|alias| {
            let prefix = format!("{TRANSFORMS}.{alias}.");
            let type_key = format!("{prefix}type");
            let class = config
                .get(&type_key)
                .map(|c| c.trim())
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    config_error(&type_key, format!("Request config key: {type_key}"))
                })?;
            let plugin = plugins
                .resolve(class, &no_pin, None)
                .map_err(|e| config_error(&type_key, e.to_string()))?;
            if plugin.kind() != ConnectorKind::Transform {
                return Err(config_error(
                    &type_key,
                    format!("{class} is a connector, not a transform"),
                ));
            }
            let guard = match config.get(&format!("{prefix}predicate")).map(|p| p.trim()) {
                Some(name) if !name.is_empty() => Some(guard(config, &prefix, name)?),
                _ => None,
            };
            // As Kafka does: every key under the prefix, `type` included (a transform
            // serving `…$Key` and `…$Value` reads which one the user named).
            let own = config
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?, v)))
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            Ok(Stage {
                alias: alias.to_string(),
                plugin,
                config: own,
                guard,
                instance: None,
            })
        })
        .collect()
}

/// The predicate guard of the transform whose keys start with `prefix`.
fn guard(config: &Properties, prefix: &str, name: &str) -> Result<Guard, StageConfigError> {
    let key = format!("{prefix}predicate");
    if !aliases(config, PREDICATES).any(|p| p == name) {
        return Err(config_error(
            key,
            format!("predicate {name} is not listed in {PREDICATES}"),
        ));
    }
    let negate_key = format!("{prefix}negate");
    let negate = match config.get(&negate_key).map(|v| v.trim()) {
        None | Some("") | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(config_error(
                negate_key,
                format!("must be true or false, not {other:?}"),
            ))
        }
    };
    Ok(Guard {
        predicate: Predicate::configured(name, config)?,
        negate,
    })
}

/// The names a list key (`transforms`, `predicates`) gives.
fn aliases<'a>(config: &'a Properties, key: &str) -> impl Iterator<Item = &'a str> {
    config
        .get(key)
        .into_iter()
        .flat_map(|v| crate::config::entries(v))
}

/// Every problem with the transform and predicate keys of `config`, keyed as the user wrote
/// them (`transforms.a.<key>`): unknown plugins or predicates, missing required keys, and
/// each transform's own `validate`, run in a fresh instance under `limits`.
pub async fn config_errors(
    plugins: &PluginRegistry,
    sandbox: &Sandbox,
    identity: &Identity,
    limits: &Limits,
    config: &Properties,
) -> Vec<StageConfigError> {
    // A create right after the host starts finds the transforms present at start, as it
    // finds its connector: a transform still loading is waited for (up to a few seconds).
    let no_pin = Properties::new();
    for alias in aliases(config, TRANSFORMS) {
        if let Some(class) = config.get(&format!("{TRANSFORMS}.{alias}.type")) {
            let _ = plugins.resolve_for_put(class.trim(), &no_pin).await;
        }
    }
    let stages = match configure(plugins, config) {
        Ok(stages) => stages,
        Err(e) => return vec![e],
    };
    let mut errors = Vec::new();
    for stage in &stages {
        let prefix = format!("{TRANSFORMS}.{}.", stage.alias);
        let given = |name: &str| stage.config.iter().any(|(k, v)| k == name && !v.is_empty());
        let missing: Vec<StageConfigError> = stage
            .plugin
            .descriptor
            .config_defs
            .iter()
            .filter(|d| d.required && !given(&d.name))
            .map(|d| {
                let key = format!("{prefix}{}", d.name);
                config_error(&key, format!("Request config key: {key}"))
            })
            .collect();
        if !missing.is_empty() {
            errors.extend(missing);
            continue;
        }
        match stage
            .plugin
            .component
            .validate(sandbox, identity.clone(), limits, &stage.config)
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(found)) => errors.extend(
                found
                    .into_iter()
                    .map(|e| config_error(format!("{prefix}{}", e.key), e.message)),
            ),
            Err(failure) => errors.push(config_error(
                format!("{prefix}type"),
                format!("validate: {failure}"),
            )),
        }
    }
    errors
}
