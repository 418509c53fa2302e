//! Connector routes of the JSON API: CRUD, lifecycle, status, offsets and topics.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::de::value::{Error as ValueError, StrDeserializer};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{connector_location, json_body, reply, reply_with, ApiError, ApiResult, Params, Query};
use crate::api::{config_from_object, value_text};
use crate::plugins::kind_name;
use crate::sandbox::types::ConnectorKind;
use crate::storage::{Properties, StoredConnector, TargetState};
use crate::worker::{
    ConnectorOffsets, ConnectorStatus, LifecycleError, OffsetChanges, OffsetsError, Put, PutError,
    PutMode, PutOutcome, RunState, TaskView, Worker, UPDATE_TIMESTAMP,
};

/// `GET /`.
pub async fn server_info() -> ApiResult {
    reply(
        StatusCode::OK,
        json!({"version": env!("CARGO_PKG_VERSION"), "commit": "", "kafka_cluster_id": "wasm-connect"}),
    )
}

/// `GET /connectors[?expand=status&expand=info]`.
pub async fn list(State(worker): State<Arc<Worker>>, RawQuery(query): RawQuery) -> ApiResult {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    let expand: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k == Query::Expand.name())
        .map(|(_, v)| v.as_str())
        .collect();
    let (status, info) = (expand.contains(&"status"), expand.contains(&"info"));
    if !status && !info {
        return reply(StatusCode::OK, json!(worker.names().await));
    }
    // One bulk read of every status, not one per connector; the configs (each masked) only
    // when `info` asks for them.
    let statuses = worker.statuses().await;
    let configs = match info {
        true => Some(worker.configs().await),
        false => None,
    };
    let mut out = std::collections::BTreeMap::new();
    for (name, connector) in &statuses {
        let info = match &configs {
            // A connector deleted meanwhile is left out, as Kafka Connect does.
            Some(configs) => match configs.get(name) {
                Some(stored) => Some(info_json(name, stored, connector.kind)),
                None => continue,
            },
            None => None,
        };
        let status = status.then(|| status_body(name, connector));
        out.insert(name.as_str(), ListEntry { status, info });
    }
    reply_with(StatusCode::OK, &out)
}

/// One connector of `GET /connectors?expand=…`.
#[derive(Serialize)]
struct ListEntry<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusBody<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<Value>,
}

/// The body of `POST /connectors`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    name: String,
    config: Map<String, Value>,
    #[serde(default)]
    initial_state: Option<String>,
}

/// `POST /connectors`: 201 with `Location`, 409 if the name is taken.
pub async fn create(
    State(worker): State<Arc<Worker>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let request: CreateRequest = json_body(&headers, body)?;
    let initial = match request.initial_state.as_deref() {
        None => TargetState::Running,
        Some(given) => TargetState::deserialize(StrDeserializer::<ValueError>::new(given))
            .map_err(|_| {
                ApiError::bad_request(format!(
                    "initial_state must be RUNNING, PAUSED or STOPPED, not {given:?}"
                ))
            })?,
    };
    let config = config_from_json(&request.name, request.config)?;
    let put = worker
        .put_with(&request.name, config, PutMode::CreateOnly, Some(initial))
        .await
        .map_err(put_error)?;
    let info = put_info(&request.name, &put);
    let location = connector_location(&request.name);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(info),
    )
        .into_response())
}

/// `GET /connectors/{connector}`.
pub async fn info(State(worker): State<Arc<Worker>>, Params(name): Params<String>) -> ApiResult {
    reply(StatusCode::OK, info_of(&worker, &name).await?)
}

/// `DELETE /connectors/{connector}`.
pub async fn remove(State(worker): State<Arc<Worker>>, Params(name): Params<String>) -> ApiResult {
    match worker.delete(&name).await {
        Ok(true) => Ok(StatusCode::NO_CONTENT.into_response()),
        Ok(false) => Err(not_found(&name)),
        Err(reason) => Err(ApiError::internal(reason)),
    }
}

/// `GET /connectors/{connector}/config`.
pub async fn get_config(
    State(worker): State<Arc<Worker>>,
    Params(name): Params<String>,
) -> ApiResult {
    let stored = worker.config(&name).await.ok_or_else(|| not_found(&name))?;
    reply(StatusCode::OK, config_json(&name, &stored.config))
}

/// `PUT /connectors/{connector}/config`: 201 when created, 200 when updated.
pub async fn put_config(
    State(worker): State<Arc<Worker>>,
    Params(name): Params<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let config = config_from_json(&name, json_body(&headers, body)?)?;
    let put = worker.put(&name, config).await.map_err(put_error)?;
    let status = if put.outcome == PutOutcome::Created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    reply(status, put_info(&name, &put))
}

/// `PATCH /connectors/{connector}/config`: a `null` value deletes the key.
pub async fn patch_config(
    State(worker): State<Arc<Worker>>,
    Params(name): Params<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let patch: Map<String, Value> = json_body(&headers, body)?;
    let changes = patch
        .into_iter()
        .filter(|(key, _)| key != "name")
        .map(|(key, value)| (key, value_text(value)))
        .collect();
    let put = worker
        .patch(&name, changes)
        .await
        .ok_or_else(|| not_found(&name))?
        .map_err(put_error)?;
    reply(StatusCode::OK, put_info(&name, &put))
}

/// `GET /connectors/{connector}/status`.
pub async fn status(State(worker): State<Arc<Worker>>, Params(name): Params<String>) -> ApiResult {
    let status = worker.status(&name).await.ok_or_else(|| not_found(&name))?;
    reply_with(StatusCode::OK, &status_body(&name, &status))
}

/// `GET /connectors/{connector}/tasks`.
pub async fn tasks(State(worker): State<Arc<Worker>>, Params(name): Params<String>) -> ApiResult {
    let stored = worker.config(&name).await.ok_or_else(|| not_found(&name))?;
    let tasks: Vec<Value> = stored
        .tasks
        .iter()
        .enumerate()
        .map(|(task, config)| json!({"id": {"connector": name, "task": task}, "config": config_json(&name, config)}))
        .collect();
    reply(StatusCode::OK, Value::Array(tasks))
}

/// `GET /connectors/{connector}/tasks/{task}/status`.
pub async fn task_status(
    State(worker): State<Arc<Worker>>,
    Params((name, task)): Params<(String, String)>,
) -> ApiResult {
    let status = worker.status(&name).await.ok_or_else(|| not_found(&name))?;
    let id = task_id(&name, &task)?;
    let task = status
        .tasks
        .get(id)
        .ok_or_else(|| task_not_found(&name, id))?;
    reply_with(StatusCode::OK, &task_body(id, task))
}

/// `POST /connectors/{connector}/restart[?includeTasks=&onlyFailed=]`.
pub async fn restart(
    State(worker): State<Arc<Worker>>,
    Params(name): Params<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))?;
    let include_tasks = flag(&pairs, Query::IncludeTasks, false)?;
    let only_failed = flag(&pairs, Query::OnlyFailed, false)?;
    if !include_tasks {
        // The connector itself has no running instance here: a plain restart only checks it.
        worker.status(&name).await.ok_or_else(|| not_found(&name))?;
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let restarted = worker
        .restart(&name, only_failed)
        .await
        .map_err(lifecycle_error)?;
    let mut status = worker.status(&name).await.ok_or_else(|| not_found(&name))?;
    for id in restarted {
        if let Some(task) = status.tasks.get_mut(id) {
            task.state = RunState::Restarting;
            task.trace = None;
        }
    }
    reply_with(StatusCode::ACCEPTED, &status_body(&name, &status))
}

/// A boolean query parameter: absent is `default`; `true` or `false` in any case, else 400.
pub(super) fn flag(
    pairs: &[(String, String)],
    query: Query,
    default: bool,
) -> Result<bool, ApiError> {
    let mut value = default;
    for (_, given) in pairs.iter().filter(|(key, _)| key == query.name()) {
        value = match given.to_ascii_lowercase().as_str() {
            "true" => true,
            "false" => false,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "{} must be true or false, not {given:?}",
                    query.name()
                )))
            }
        };
    }
    Ok(value)
}

/// `POST /connectors/{connector}/tasks/{task}/restart`.
pub async fn restart_task(
    State(worker): State<Arc<Worker>>,
    Params((name, task)): Params<(String, String)>,
) -> ApiResult {
    let id = task_id(&name, &task)?;
    worker
        .restart_task(&name, id)
        .await
        .map_err(lifecycle_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /connectors/{connector}/pause`.
pub async fn pause(State(worker): State<Arc<Worker>>, Params(name): Params<String>) -> ApiResult {
    worker
        .set_target(&name, TargetState::Paused)
        .await
        .map_err(lifecycle_error)?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `PUT /connectors/{connector}/resume`.
pub async fn resume(State(worker): State<Arc<Worker>>, Params(name): Params<String>) -> ApiResult {
    worker
        .set_target(&name, TargetState::Running)
        .await
        .map_err(lifecycle_error)?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `PUT /connectors/{connector}/stop`.
pub async fn stop(State(worker): State<Arc<Worker>>, Params(name): Params<String>) -> ApiResult {
    worker
        .set_target(&name, TargetState::Stopped)
        .await
        .map_err(lifecycle_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /connectors/{connector}/offsets`.
pub async fn get_offsets(
    State(worker): State<Arc<Worker>>,
    Params(name): Params<String>,
) -> ApiResult {
    let offsets = match worker.offsets(&name).await.map_err(offsets_error)? {
        ConnectorOffsets::Source(positions) => positions
            .into_iter()
            .map(|(partition, position)| json!({"partition": {"partition": partition}, "offset": {"position": position}}))
            .collect::<Vec<_>>(),
        ConnectorOffsets::Sink(offsets) => offsets
            .into_iter()
            .map(|(topic, offset)| {
                json!({"partition": {"kafka_topic": topic, "kafka_partition": 0}, "offset": {"kafka_offset": offset}})
            })
            .collect(),
    };
    reply(StatusCode::OK, json!({ "offsets": offsets }))
}

/// The body of `PATCH /connectors/{connector}/offsets`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OffsetsRequest {
    offsets: Vec<OffsetEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OffsetEntry {
    partition: Map<String, Value>,
    offset: Option<Map<String, Value>>,
}

/// `PATCH /connectors/{connector}/offsets`: only while STOPPED; `"offset": null` resets.
pub async fn alter_offsets(
    State(worker): State<Arc<Worker>>,
    Params(name): Params<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let request: OffsetsRequest = json_body(&headers, body)?;
    if request.offsets.is_empty() {
        return Err(ApiError::bad_request(
            "the offsets list is empty: give at least one partition",
        ));
    }
    let status = worker.status(&name).await.ok_or_else(|| not_found(&name))?;
    let changes = match status.kind {
        Some(ConnectorKind::Source) => OffsetChanges::Source(
            request
                .offsets
                .iter()
                .map(source_change)
                .collect::<Result<_, _>>()?,
        ),
        Some(ConnectorKind::Sink) => OffsetChanges::Sink(
            request
                .offsets
                .iter()
                .map(sink_change)
                .collect::<Result<_, _>>()?,
        ),
        Some(ConnectorKind::Transform) | None => {
            return Err(ApiError::internal(format!(
                "the plugin of {name} is not loaded"
            )))
        }
    };
    worker
        .alter_offsets(&name, changes)
        .await
        .map_err(offsets_error)?;
    reply(
        StatusCode::OK,
        json!({"message": "The offsets for this connector have been altered successfully"}),
    )
}

/// `DELETE /connectors/{connector}/offsets`: only while STOPPED.
pub async fn reset_offsets(
    State(worker): State<Arc<Worker>>,
    Params(name): Params<String>,
) -> ApiResult {
    worker.reset_offsets(&name).await.map_err(offsets_error)?;
    reply(
        StatusCode::OK,
        json!({"message": "The offsets for this connector have been reset successfully"}),
    )
}

/// `GET /connectors/{connector}/topics`.
pub async fn topics(State(worker): State<Arc<Worker>>, Params(name): Params<String>) -> ApiResult {
    let topics = worker.topics(&name).await.map_err(offsets_error)?;
    reply(StatusCode::OK, json!({ name: {"topics": topics} }))
}

fn source_change(entry: &OffsetEntry) -> Result<(String, Option<String>), ApiError> {
    let partition = string_field(&entry.partition, "partition")?;
    let position = match &entry.offset {
        None => None,
        Some(offset) => Some(match offset.get("position") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                return Err(ApiError::bad_request(
                    "a source offset is {\"position\": \"…\"}",
                ))
            }
        }),
    };
    Ok((partition, position))
}

fn sink_change(entry: &OffsetEntry) -> Result<(String, Option<u64>), ApiError> {
    let topic = string_field(&entry.partition, "kafka_topic")?;
    if entry
        .partition
        .get("kafka_partition")
        .is_some_and(|p| p.as_u64() != Some(0))
    {
        return Err(ApiError::bad_request(
            "topics here have one partition: kafka_partition must be 0",
        ));
    }
    let offset = match &entry.offset {
        None => None,
        Some(offset) => Some(
            offset
                .get("kafka_offset")
                .and_then(Value::as_u64)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "a sink offset is {\"kafka_offset\": <non-negative integer>}",
                    )
                })?,
        ),
    };
    Ok((topic, offset))
}

fn string_field(map: &Map<String, Value>, key: &str) -> Result<String, ApiError> {
    map.get(key)
        .and_then(Value::as_str)
        .map(String::from)
        .ok_or_else(|| ApiError::bad_request(format!("the partition needs a string field {key:?}")))
}

/// A request config as both APIs read it ([`config_from_object`]); `name`, if given, must
/// match the connector and is not stored.
fn config_from_json(name: &str, mut config: Map<String, Value>) -> Result<Properties, ApiError> {
    match config.remove("name") {
        Some(Value::String(given)) if given != name => {
            return Err(ApiError::bad_request(format!(
                "config name {given:?} differs from the connector name {name:?}"
            )));
        }
        _ => {}
    }
    config_from_object(config).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// A config as the JSON API shows it: with `name`, without the legacy `update-timestamp`.
fn config_json(name: &str, config: &Properties) -> Value {
    let mut out: Map<String, Value> = config
        .iter()
        .filter(|(k, _)| *k != UPDATE_TIMESTAMP)
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    out.insert("name".into(), Value::String(name.to_string()));
    Value::Object(out)
}

async fn info_of(worker: &Worker, name: &str) -> Result<Value, ApiError> {
    let stored = worker.config(name).await.ok_or_else(|| not_found(name))?;
    let status = worker.status(name).await.ok_or_else(|| not_found(name))?;
    Ok(info_json(name, &stored, status.kind))
}

/// The info of what a create or update stored (not read again: it may have changed since).
fn put_info(name: &str, put: &Put) -> Value {
    info_json(name, &put.stored, put.kind)
}

fn info_json(name: &str, stored: &StoredConnector, kind: Option<ConnectorKind>) -> Value {
    let tasks: Vec<Value> = (0..stored.tasks.len())
        .map(|task| json!({"connector": name, "task": task}))
        .collect();
    json!({"name": name, "config": config_json(name, &stored.config), "tasks": tasks, "type": type_name(kind)})
}

/// A connector's status as the API shows it, borrowed from the worker's view and serialized
/// as is (no JSON tree: `?expand=status` writes a thousand of them per request).
#[derive(Serialize)]
struct StatusBody<'a> {
    name: &'a str,
    connector: StateBody<'a>,
    tasks: Vec<TaskBody<'a>>,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct StateBody<'a> {
    state: RunState,
    worker_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace: Option<&'a str>,
}

#[derive(Serialize)]
struct TaskBody<'a> {
    id: usize,
    state: RunState,
    worker_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace: Option<&'a str>,
    /// Shown once a record failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<ErrorsBody>,
}

#[derive(Serialize)]
struct ErrorsBody {
    failed: u64,
    dead_lettered: u64,
}

fn status_body<'a>(name: &'a str, status: &'a ConnectorStatus) -> StatusBody<'a> {
    let (state, trace) = &status.state;
    let tasks = if status.target == TargetState::Stopped {
        Vec::new()
    } else {
        status
            .tasks
            .iter()
            .enumerate()
            .map(|(id, task)| task_body(id, task))
            .collect()
    };
    StatusBody {
        name,
        connector: StateBody {
            state: *state,
            worker_id: &status.worker,
            trace: trace.as_deref(),
        },
        tasks,
        kind: type_name(status.kind),
    }
}

fn task_body(id: usize, task: &TaskView) -> TaskBody<'_> {
    let errors = task.errors;
    TaskBody {
        id,
        state: task.state,
        worker_id: &task.worker,
        trace: task.trace.as_deref(),
        errors: (errors.failed > 0).then_some(ErrorsBody {
            failed: errors.failed,
            dead_lettered: errors.dead_lettered,
        }),
    }
}

fn type_name(kind: Option<ConnectorKind>) -> &'static str {
    kind.map_or("unknown", kind_name)
}

fn task_id(name: &str, task: &str) -> Result<usize, ApiError> {
    task.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "task id {task:?} of connector {name} is not a number"
        ))
    })
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("Connector {name} not found"))
}

fn task_not_found(name: &str, task: usize) -> ApiError {
    ApiError::not_found(format!("Task {task} of connector {name} not found"))
}

fn put_error(error: PutError) -> ApiError {
    match error {
        PutError::AlreadyExists(_) => ApiError::new(StatusCode::CONFLICT, error.to_string()),
        PutError::MissingKey(_) | PutError::Invalid(_) => ApiError::bad_request(format!(
            "Connector configuration is invalid and contains the following 1 error(s):\n{error}\n\
             You can also find the above list of errors at the endpoint `/connector-plugins/{{connectorType}}/config/validate`"
        )),
        PutError::InvalidName(_) | PutError::UnknownPlugin { .. } | PutError::Other(_) | PutError::NoRoom(_) => ApiError::bad_request(error.to_string()),
        PutError::Guest(_) | PutError::Storage(_) => ApiError::internal(error.to_string()),
    }
}

fn lifecycle_error(error: LifecycleError) -> ApiError {
    match error {
        LifecycleError::NotFound(_) | LifecycleError::TaskNotFound { .. } => {
            ApiError::not_found(error.to_string())
        }
        LifecycleError::Storage(_) => ApiError::internal(error.to_string()),
    }
}

fn offsets_error(error: OffsetsError) -> ApiError {
    match error {
        OffsetsError::NotFound(_) => ApiError::not_found(error.to_string()),
        OffsetsError::NotStopped(_) | OffsetsError::Invalid(_) => {
            ApiError::bad_request(error.to_string())
        }
        OffsetsError::Storage(_) => ApiError::internal(error.to_string()),
    }
}
