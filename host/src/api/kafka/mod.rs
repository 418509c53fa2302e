//! The JSON API shaped like Kafka Connect's (default port 8083), over the same state as the
//! legacy API. Routes, shapes, states, status codes and the error body
//! `{"error_code":…, "message":…}` follow `shared/reference/kafka-connect-api.md`.
//!
//! Every route is listed once, in [`routes!`] below: that list builds the router and the
//! OpenAPI document served at `GET /openapi.json`, so the two cannot drift apart.
//! Handlers live in `connectors.rs` (connectors, lifecycle, offsets) and `plugins.rs`.

mod connectors;
mod openapi;
mod plugins;

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::worker::Worker;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// One served route: method, path, summary and the success status, for the OpenAPI document.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub success: u16,
}

/// Declares every route once: builds [`ROUTES`] and the router from the same lines.
macro_rules! routes {
    ($( $method:ident $path:literal $success:literal => $handler:path, $summary:literal; )*) => {
        /// Every route of this API.
        pub const ROUTES: &[Route] = &[$(Route { method: stringify!($method), path: $path, summary: $summary, success: $success }),*];

        fn handlers() -> Router<Arc<Worker>> {
            Router::new()$(.route($path, $method($handler)))*
        }
    };
}

routes! {
    get "/" 200 => connectors::server_info, "Version of this worker";
    get "/health" 200 => connectors::health, "Whether the worker is ready";
    get "/openapi.json" 200 => openapi::document, "This API as an OpenAPI 3 document";
    get "/connectors" 200 => connectors::list, "Connector names, or with expand=status|info a map of details";
    post "/connectors" 201 => connectors::create, "Create a connector (body: name, config, initial_state)";
    get "/connectors/{connector}" 200 => connectors::info, "A connector's config, tasks and type";
    delete "/connectors/{connector}" 204 => connectors::remove, "Stop and delete a connector";
    get "/connectors/{connector}/config" 200 => connectors::get_config, "A connector's config";
    put "/connectors/{connector}/config" 200 => connectors::put_config, "Create (201) or update (200) a connector";
    patch "/connectors/{connector}/config" 200 => connectors::patch_config, "Change some config keys; null deletes a key";
    get "/connectors/{connector}/status" 200 => connectors::status, "State of a connector and its tasks";
    get "/connectors/{connector}/tasks" 200 => connectors::tasks, "Task ids and configs";
    get "/connectors/{connector}/tasks/{task}/status" 200 => connectors::task_status, "State of one task";
    post "/connectors/{connector}/restart" 204 => connectors::restart, "Restart (includeTasks, onlyFailed: 202 with the status)";
    post "/connectors/{connector}/tasks/{task}/restart" 204 => connectors::restart_task, "Restart one task";
    put "/connectors/{connector}/pause" 202 => connectors::pause, "Pause: tasks stay allocated but stop working";
    put "/connectors/{connector}/resume" 202 => connectors::resume, "Resume a paused or stopped connector";
    put "/connectors/{connector}/stop" 204 => connectors::stop, "Stop: tasks shut down, config and offsets kept";
    get "/connectors/{connector}/offsets" 200 => connectors::get_offsets, "Committed source positions or sink offsets";
    patch "/connectors/{connector}/offsets" 200 => connectors::alter_offsets, "Alter offsets of a STOPPED connector";
    delete "/connectors/{connector}/offsets" 200 => connectors::reset_offsets, "Reset offsets of a STOPPED connector";
    get "/connectors/{connector}/topics" 200 => connectors::topics, "Topics the connector uses";
    get "/connector-plugins" 200 => plugins::list, "Installed connector plugins";
    get "/connector-plugins/{plugin}/config" 200 => plugins::config_defs, "Config keys a plugin understands";
    put "/connector-plugins/{plugin}/config/validate" 200 => plugins::validate, "Validate a config; errors come back as data";
}

/// The router of the JSON API.
pub fn router(worker: Arc<Worker>) -> Router {
    handlers()
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(refuse_announced_oversize))
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

/// A JSON answer with `status`.
pub fn reply(status: StatusCode, body: serde_json::Value) -> ApiResult {
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
