//! The JSON API shaped like Kafka Connect's (default port 8083), over the same state as the
//! legacy API. Routes, shapes, states, status codes and the error body
//! `{"error_code":…, "message":…}` follow `docs/kafka-connect-api.md`.
//!
//! Every route is listed once, in [`routes!`] below, with its query parameters, request body
//! and answers: that list builds the router and the OpenAPI document served at
//! `GET /openapi.json` (`openapi.rs`), so the two cannot drift apart. Handlers live in
//! `connectors.rs` (connectors, lifecycle, offsets) and `plugins.rs`.

mod connectors;
mod openapi;
mod plugins;

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::worker::Worker;
pub use openapi::{Body, Query};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// One served route, as the OpenAPI document describes it.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    /// The query parameters the handler reads.
    pub query: &'static [Query],
    /// The JSON request body, when the route reads one.
    pub body: Option<Body>,
    /// Each success status and its JSON body (None: no body).
    pub answers: &'static [(u16, Option<Body>)],
}

macro_rules! optional_body {
    () => {
        None
    };
    ($body:ident) => {
        Some(Body::$body)
    };
}

/// Declares every route once: builds [`ROUTES`] and the router from the same lines.
macro_rules! routes {
    ($( $method:ident $path:literal => $handler:path, $summary:literal,
        query [$($query:ident),*], body [$($body:ident)?],
        answers [$($status:literal $($answer:ident)?),+]; )*) => {
        /// Every route of this API.
        pub const ROUTES: &[Route] = &[$(Route {
            method: stringify!($method),
            path: $path,
            summary: $summary,
            query: &[$(Query::$query),*],
            body: optional_body!($($body)?),
            answers: &[$(($status, optional_body!($($answer)?))),+],
        }),*];

        fn handlers() -> Router<Arc<Worker>> {
            Router::new()$(.route($path, $method($handler)))*
        }
    };
}

routes! {
    get "/" => connectors::server_info, "Version of this worker",
        query [], body [], answers [200 ServerInfo];
    get "/health" => crate::api::observe::health, "Kafka Connect's health check (KIP-1017): 503 starting, 200 healthy, 500 unhealthy",
        query [], body [], answers [200 Health, 500 Health, 503 Health];
    get "/livez" => crate::api::observe::livez, "Liveness: the worker's control state and task runtime answer",
        query [], body [], answers [200 Live, 500 Live];
    get "/readyz" => crate::api::observe::readyz, "Readiness: 503 until the stored connectors were attempted; then counts and failed connectors",
        query [], body [], answers [200 Ready, 503 Ready];
    get "/metrics" => crate::api::observe::metrics, "Prometheus metrics: text 0.0.4, or OpenMetrics when Accept asks for it",
        query [], body [], answers [200 Metrics];
    get "/openapi.json" => openapi::document, "This API as an OpenAPI 3 document",
        query [], body [], answers [200 Document];
    get "/connectors" => connectors::list, "Connector names, or with expand=status|info a map of details",
        query [Expand], body [], answers [200 ConnectorList];
    post "/connectors" => connectors::create, "Create a connector; 409 if the name is taken",
        query [], body [CreateRequest], answers [201 ConnectorInfo];
    get "/connectors/{connector}" => connectors::info, "A connector's config, tasks and type",
        query [], body [], answers [200 ConnectorInfo];
    delete "/connectors/{connector}" => connectors::remove, "Stop and delete a connector",
        query [], body [], answers [204];
    get "/connectors/{connector}/config" => connectors::get_config, "A connector's config",
        query [], body [], answers [200 ConfigAnswer];
    put "/connectors/{connector}/config" => connectors::put_config, "Create (201) or update (200) a connector",
        query [], body [Config], answers [200 ConnectorInfo, 201 ConnectorInfo];
    patch "/connectors/{connector}/config" => connectors::patch_config, "Change some config keys; null deletes a key",
        query [], body [ConfigChanges], answers [200 ConnectorInfo];
    get "/connectors/{connector}/status" => connectors::status, "State of a connector and its tasks",
        query [], body [], answers [200 ConnectorStatus];
    get "/connectors/{connector}/tasks" => connectors::tasks, "Task ids and configs",
        query [], body [], answers [200 Tasks];
    get "/connectors/{connector}/tasks/{task}/status" => connectors::task_status, "State of one task",
        query [], body [], answers [200 TaskState];
    post "/connectors/{connector}/restart" => connectors::restart, "Restart; with includeTasks 202 and the status, the restarted items RESTARTING",
        query [IncludeTasks, OnlyFailed], body [], answers [202 ConnectorStatus, 204];
    post "/connectors/{connector}/tasks/{task}/restart" => connectors::restart_task, "Restart one task",
        query [], body [], answers [204];
    put "/connectors/{connector}/pause" => connectors::pause, "Pause: tasks stay allocated but stop working",
        query [], body [], answers [202];
    put "/connectors/{connector}/resume" => connectors::resume, "Resume a paused or stopped connector",
        query [], body [], answers [202];
    put "/connectors/{connector}/stop" => connectors::stop, "Stop: tasks shut down, config and offsets kept",
        query [], body [], answers [204];
    get "/connectors/{connector}/offsets" => connectors::get_offsets, "Committed source positions or sink offsets",
        query [], body [], answers [200 Offsets];
    patch "/connectors/{connector}/offsets" => connectors::alter_offsets, "Alter offsets of a STOPPED connector (400 otherwise)",
        query [], body [OffsetsRequest], answers [200 Message];
    delete "/connectors/{connector}/offsets" => connectors::reset_offsets, "Reset offsets of a STOPPED connector (400 otherwise)",
        query [], body [], answers [200 Message];
    get "/connectors/{connector}/topics" => connectors::topics, "Topics the connector uses",
        query [], body [], answers [200 Topics];
    get "/topics/{topic}/records" => crate::api::observe::topic_records, "Records of a topic for inspection: the latest limit (20), or limit from offset; values cut for display",
        query [Offset, Limit], body [], answers [200 TopicRecords];
    get "/connector-plugins" => plugins::list, "Installed connector plugins (with connectorsOnly=false, transforms too)",
        query [ConnectorsOnly], body [], answers [200 Plugins];
    get "/connector-plugins/{plugin}/config" => plugins::config_defs, "Config keys a plugin understands",
        query [], body [], answers [200 ConfigKeys];
    put "/connector-plugins/{plugin}/config/validate" => plugins::validate, "Validate a config; errors come back as data (null: not given)",
        query [], body [ConfigChanges], answers [200 ConfigInfos];
}

/// The router of the JSON API; `secured` says whether a bearer token guards it (the
/// document then declares it).
pub fn router(worker: Arc<Worker>, secured: bool) -> Router {
    handlers()
        .merge(crate::ui::router())
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(refuse_announced_oversize))
        .layer(axum::Extension(openapi::Security { secured }))
        .with_state(worker)
}

/// Answers 413 at once when `Content-Length` announces more than [`MAX_BODY_BYTES`], instead
/// of reading the body first.
async fn refuse_announced_oversize(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        let message = format!("request body is larger than {MAX_BODY_BYTES} bytes");
        return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, message).into_response();
    }
    next.run(request).await
}

/// 405 with the error body (axum adds the `Allow` header listing the route's methods).
async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "method {method} is not allowed on {}; the Allow header lists those that are, and GET /openapi.json describes them",
            uri.path()
        ),
    )
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no route for {method} {}; see GET /openapi.json",
            uri.path()
        ),
    )
}

/// An error answer: `{"error_code": <status>, "message": …}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error_code": self.status.as_u16(), "message": self.message });
        (self.status, Json(body)).into_response()
    }
}

pub type ApiResult = Result<Response, ApiError>;

/// The path parameters of a route; a malformed one (say, a bad percent-encoding) is a 400
/// with the error body instead of axum's plain-text answer.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(params)) => Ok(Params(params)),
            Err(rejection) => Err(ApiError::new(rejection.status(), rejection.body_text())),
        }
    }
}

/// The path `/connectors/{name}` with `name` percent-encoded as one path segment.
pub fn connector_location(name: &str) -> String {
    let mut location = String::from("/connectors/");
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            location.push(char::from(byte));
        } else {
            location.push_str(&format!("%{byte:02X}"));
        }
    }
    location
}

/// A JSON answer with `status`.
pub fn reply(status: StatusCode, body: serde_json::Value) -> ApiResult {
    reply_with(status, &body)
}

/// A JSON answer serialized straight from `body`, with no JSON tree in between.
pub fn reply_with(status: StatusCode, body: &impl serde::Serialize) -> ApiResult {
    Ok((status, Json(body)).into_response())
}

/// Reads a JSON body of type `T`: the content type must be JSON, the body at most
/// [`MAX_BODY_BYTES`], and unknown fields are refused where `T` says so.
pub fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {MAX_BODY_BYTES} bytes"),
        ),
        status => ApiError::new(status, e.body_text()),
    })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be application/json, not {content_type:?}"),
        ));
    }
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}
