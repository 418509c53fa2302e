//! The RocketMQ-Connect REST API (default port 8081), as `docs/legacy-api.md` specifies:
//! every route is `GET`, every handled outcome is HTTP 200 `text/plain` (the original's
//! scripts test the body), except a `config` that is not a JSON object or has a `null` value
//! (400).
//!
//! `HEAD` never changes state: on a route that changes state it answers 405 (`Allow: GET`);
//! on a read it answers the read's headers. Any other method answers 405 with a text body
//! naming the allowed methods.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Router;
use serde_json::{json, Value};

use crate::plugins::PLUGIN_VERSION;
use crate::storage::{Properties, StoredConnector};
use crate::worker::{PutError, PutOutcome, Worker};

/// What a route does to the worker's state, which decides what `HEAD` gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// Only reads: `HEAD` answers the `GET` headers.
    Reads,
    /// Creates, deletes or reloads: `HEAD` is refused with 405.
    Changes,
}

impl Effect {
    /// The `Allow` header of a route with this effect.
    fn allow(self) -> &'static str {
        match self {
            Effect::Reads => "GET, HEAD",
            Effect::Changes => "GET",
        }
    }
}

pub fn router(worker: Arc<Worker>) -> Router {
    Router::new()
        .route("/connectors/stopAll", route(get(stop_all), Effect::Changes))
        .route("/connectors/{name}", route(get(create), Effect::Changes))
        .route("/connectors/{name}/stop", route(get(stop), Effect::Changes))
        .route(
            "/connectors/{name}/status",
            route(get(status), Effect::Reads),
        )
        .route(
            "/connectors/{name}/config",
            route(get(config), Effect::Reads),
        )
        .route("/plugin/reload", route(get(reload), Effect::Changes))
        .route("/getConfigInfo", route(get(config_info), Effect::Reads))
        .route("/getClusterInfo", route(get(cluster_info), Effect::Reads))
        .route(
            "/getAllocatedInfo",
            route(get(allocated_info), Effect::Reads),
        )
        .with_state(worker)
}

/// A `GET` route whose other methods answer 405; one that changes state refuses `HEAD` too
/// (axum would run the `GET` handler for it).
fn route(get: MethodRouter<Arc<Worker>>, effect: Effect) -> MethodRouter<Arc<Worker>> {
    let refuse = move |method: Method| async move { method_not_allowed(&method, effect) };
    match effect {
        Effect::Reads => get.fallback(refuse),
        Effect::Changes => get.head(refuse).fallback(refuse),
    }
}

/// 405 in this API's text style, with the route's `Allow` header.
fn method_not_allowed(method: &Method, effect: Effect) -> Response {
    let body = format!(
        "failed: method {method} is not allowed here; this route answers {}",
        effect.allow()
    );
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [
            (header::ALLOW, effect.allow()),
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        ],
        body,
    )
        .into_response()
}

/// `GET /connectors/{name}?config={json}`: create, or update (upsert).
async fn create(
    State(worker): State<Arc<Worker>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(config) = query_param(query.as_deref().unwrap_or(""), "config") else {
        return text("failed! query param 'config' is required ");
    };
    let config = match parse_config(&config) {
        Ok(config) => config,
        Err(reason) => {
            return (StatusCode::BAD_REQUEST, format!("failed: {reason}")).into_response()
        }
    };
    match worker.put(&name, config).await.map(|put| put.outcome) {
        Ok(PutOutcome::Created | PutOutcome::Updated) => text("success"),
        Ok(PutOutcome::Unchanged) => text("Connector with same config already exist."),
        Err(e @ (PutError::MissingKey(_) | PutError::Invalid(_))) => text(e.to_string()),
        Err(e @ PutError::InvalidName(_)) => {
            (StatusCode::BAD_REQUEST, format!("failed: {e}")).into_response()
        }
        Err(
            e @ (PutError::UnknownPlugin { .. }
            | PutError::AlreadyExists(_)
            | PutError::Other(_)
            | PutError::NoRoom(_)
            | PutError::Guest(_)
            | PutError::Storage(_)),
        ) => text(format!("failed: {e}")),
    }
}

/// `GET /connectors/{name}/stop`: stop and delete; `success` also for an unknown name.
async fn stop(State(worker): State<Arc<Worker>>, Path(name): Path<String>) -> Response {
    match worker.delete(&name).await {
        Ok(_) => text("success"),
        Err(reason) => text(format!("failed: {reason}")),
    }
}

/// `GET /connectors/stopAll`: stop and delete every connector.
async fn stop_all(State(worker): State<Arc<Worker>>) -> Response {
    match worker.delete_all().await {
        Ok(()) => text("success"),
        Err(reason) => text(format!("failed: {reason}")),
    }
}

/// `GET /connectors/{name}/status`: `running` when the connector and all its tasks run.
async fn status(State(worker): State<Arc<Worker>>, Path(name): Path<String>) -> Response {
    text(if worker.is_running(&name).await {
        "running"
    } else {
        "not running"
    })
}

/// `GET /connectors/{name}/config`.
async fn config(State(worker): State<Arc<Worker>>, Path(name): Path<String>) -> Response {
    match worker.config(&name).await {
        Some(stored) => {
            let tasks: Vec<Value> = task_properties(&stored);
            text(format!(
                "ConnectorConfigs:{}\nTaskConfigs:{}",
                properties(&stored.config),
                Value::Array(tasks)
            ))
        }
        None => text("ConnectorConfigs:null\nTaskConfigs:null"),
    }
}

/// `GET /plugin/reload`: rescan the plugin directory (each file's outcome is logged).
async fn reload(State(worker): State<Arc<Worker>>) -> Response {
    worker.plugins().reload().await;
    text("success")
}

/// `GET /getConfigInfo`.
async fn config_info(State(worker): State<Arc<Worker>>) -> Response {
    let configs = worker.configs().await;
    let connectors: BTreeMap<&String, Value> = configs
        .iter()
        .map(|(n, c)| (n, properties(&c.config)))
        .collect();
    let tasks: BTreeMap<&String, Vec<Value>> = configs
        .iter()
        .map(|(n, c)| (n, task_properties(c)))
        .collect();
    text(format!(
        "ConnectorConfigs:{}\nTaskConfigs:{}",
        json!(connectors),
        json!(tasks)
    ))
}

/// `GET /getClusterInfo`: the live workers; in one-process mode, this one.
async fn cluster_info(State(worker): State<Arc<Worker>>) -> Response {
    text(json!(worker.live_workers().await).to_string())
}

/// `GET /getAllocatedInfo`: the connectors and tasks this worker runs.
async fn allocated_info(State(worker): State<Arc<Worker>>) -> Response {
    let configs = worker.configs().await;
    let allocated = worker.allocated().await;
    let mut body = String::from("working connectors:\n");
    for (name, stored) in &configs {
        if allocated.get(name).is_some_and(|(owns, _)| *owns) {
            body.push_str(&format!(
                "connectorName:{name}\nConfigs:{}\n",
                properties(&stored.config)
            ));
        }
    }
    body.push_str("working tasks:\n");
    for (name, stored) in &configs {
        let Some((_, tasks)) = allocated.get(name) else {
            continue;
        };
        for (id, task) in task_properties(stored).into_iter().enumerate() {
            if tasks.contains(&id) {
                body.push_str(&format!("connectorName:{name}\nConfigs:{task}\n"));
            }
        }
    }
    text(body)
}

/// A connector's task configs as the original showed them: the connector config plus
/// `task-class` and `update-timestamp`. The plugin version a task records for this host is
/// left out unless the user's config pinned it.
fn task_properties(stored: &StoredConnector) -> Vec<Value> {
    let pinned = stored.config.contains_key(PLUGIN_VERSION);
    stored
        .tasks
        .iter()
        .map(|task| {
            let mut task = task.clone();
            if !pinned {
                task.remove(PLUGIN_VERSION);
            }
            properties(&task)
        })
        .collect()
}

/// A config as the original serialised it: `{"properties":{…}}`.
fn properties(config: &Properties) -> Value {
    json!({ "properties": config })
}

fn text(body: impl Into<String>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

/// The decoded value of `name` in a query string; malformed escapes are kept as they are.
fn query_param(query: &str, name: &str) -> Option<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .ok()?
        .into_iter()
        .find_map(|(key, value)| (key == name).then_some(value))
}

/// Why a legacy `config` query parameter was refused; its text is the answer's reason.
#[derive(Debug, thiserror::Error)]
enum ParseError {
    #[error("config is not a JSON object: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("config is not a JSON object: got {0}")]
    NotObject(&'static str),
    #[error(transparent)]
    Config(#[from] super::ConfigError),
}

/// A JSON object read as [`super::config_from_object`] reads it.
fn parse_config(raw: &str) -> Result<Properties, ParseError> {
    let value: Value = serde_json::from_str(raw).map_err(ParseError::NotJson)?;
    let Value::Object(map) = value else {
        return Err(ParseError::NotObject(json_kind(&value)));
    };
    Ok(super::config_from_object(map)?)
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
