//! The routes that watch the worker, on the JSON API listener (behind its token like every
//! route there: a Kubernetes probe sends it with `httpHeaders`): `GET /metrics` (Prometheus
//! text 0.0.4, or OpenMetrics when `Accept` asks for it), `GET /livez`, `GET /readyz` and
//! `GET /health` in Kafka Connect's KIP-1017 shape. A failed connector never makes the
//! worker unhealthy; `/readyz` lists it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::json;

use super::kafka::{reply, ApiError, ApiResult};
use crate::metrics::Format;
use crate::worker::{RunState, Worker};

/// How long the worker's control state and task runtime get to answer a probe (KIP-1017's
/// 10 s, shorter than any client timeout, so consecutive failed probes are seen quickly).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a liveness probe found the worker stuck.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Stuck {
    #[error("the connector map stayed locked for {} s", PROBE_TIMEOUT.as_secs())]
    ConnectorMap,
    #[error("the task runtime did not run a no-op within {} s", PROBE_TIMEOUT.as_secs())]
    TaskRuntime,
}

/// Whether the worker's control state and its task runtime answer, within [`PROBE_TIMEOUT`]
/// each.
pub async fn probe(worker: &Worker) -> Result<(), Stuck> {
    tokio::time::timeout(PROBE_TIMEOUT, worker.ping())
        .await
        .map_err(|_| Stuck::ConnectorMap)?;
    match tokio::time::timeout(PROBE_TIMEOUT, worker.ping_tasks()).await {
        Ok(true) => Ok(()),
        Ok(false) | Err(_) => Err(Stuck::TaskRuntime),
    }
}

/// `GET /metrics`.
pub async fn metrics(State(worker): State<Arc<Worker>>, headers: HeaderMap) -> ApiResult {
    let Some(metrics) = worker.metrics() else {
        return Err(ApiError::not_found(
            "metrics are off in this worker; the wasm-connect binary always serves them",
        ));
    };
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::from_accept(accept);
    let view = worker.view().await;
    let body = metrics.scrape(&view, format).await;
    Ok(([(header::CONTENT_TYPE, format.content_type())], body).into_response())
}

/// `GET /livez`: 200 while the worker's control state and task runtime answer, whatever
/// its connectors do; 500 naming where it is stuck.
pub async fn livez(State(worker): State<Arc<Worker>>) -> ApiResult {
    match probe(&worker).await {
        Ok(()) => reply(StatusCode::OK, json!({"status": "alive"})),
        Err(stuck) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"status": "stuck", "message": stuck.to_string()}),
        ),
    }
}

/// `GET /readyz`: 503 `starting` until the stored connectors were attempted after the first
/// plugin scan; then 200 with the connector counts and the failed connectors (a failed
/// connector does not make the worker unready).
pub async fn readyz(State(worker): State<Arc<Worker>>) -> ApiResult {
    if !worker.is_ready() {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "starting", "message": "loading plugins and starting the stored connectors"}),
        );
    }
    let view = worker.view().await;
    let count = |state: RunState| {
        view.connectors
            .iter()
            .filter(|c| c.state() == state && !c.failed())
            .count()
    };
    let failed: Vec<_> = view
        .connectors
        .iter()
        .filter(|c| c.failed())
        .map(|c| json!({"name": c.name, "state": c.state(), "reason": c.reason()}))
        .collect();
    reply(
        StatusCode::OK,
        json!({
            "status": "ready",
            "connectors": {
                "total": view.connectors.len(),
                "running": count(RunState::Running),
                "paused": count(RunState::Paused),
                "stopped": count(RunState::Stopped),
                "failed": failed.len(),
            },
            "failed": failed,
        }),
    )
}

/// `GET /health`, as Kafka Connect 3.9 answers it (KIP-1017): 503 `starting`, 200 `healthy`,
/// or 500 `unhealthy` naming the stage the worker is stuck in.
pub async fn health(State(worker): State<Arc<Worker>>) -> ApiResult {
    if !worker.is_ready() {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "starting", "message": "Worker is still starting up."}),
        );
    }
    match probe(&worker).await {
        Ok(()) => reply(
            StatusCode::OK,
            json!({"status": "healthy", "message": "Worker has completed startup and is ready to handle requests."}),
        ),
        Err(stuck) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"status": "unhealthy", "message": format!("Worker was unable to handle this request and may be unable to handle other requests: {stuck}")}),
        ),
    }
}

/// `router` with every answer of its routes counted in `rest_requests_total` (by the route
/// pattern, never the raw path, so the label stays bounded).
pub fn counted(
    router: axum::Router,
    api: crate::metrics::Api,
    metrics: Arc<crate::metrics::Metrics>,
) -> axum::Router {
    router.route_layer(axum::middleware::from_fn_with_state(
        (api, metrics),
        count_request,
    ))
}

async fn count_request(
    State((api, metrics)): State<(crate::metrics::Api, Arc<crate::metrics::Metrics>)>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let response = next.run(request).await;
    metrics.request(api, &route, response.status().as_u16());
    response
}

/// `GET /topics/{topic}/records?offset=&limit=`: records of a topic for inspection (the
/// latest `limit`, 20 by default, when no offset is given; at most
/// [`crate::worker::observe::MAX_INSPECTED`]), values cut for display.
pub async fn topic_records(
    State(worker): State<Arc<Worker>>,
    super::kafka::Params(topic): super::kafka::Params<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> ApiResult {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    let number = |name: &str| -> Result<Option<u64>, ApiError> {
        match pairs.iter().find(|(k, _)| k == name) {
            None => Ok(None),
            Some((_, v)) => v.parse::<u64>().map(Some).map_err(|_| {
                ApiError::bad_request(format!("{name} must be a whole number, not {v:?}"))
            }),
        }
    };
    let offset = number(super::kafka::Query::Offset.name())?;
    let max = crate::worker::observe::MAX_INSPECTED;
    let limit = match number(super::kafka::Query::Limit.name())? {
        None => 20,
        Some(n) if (1..=u64::from(max)).contains(&n) => n as u32,
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "limit must be 1 to {max}, not {n}"
            )))
        }
    };
    match worker.topic_records(&topic, offset, limit) {
        Ok(records) => reply(StatusCode::OK, json!(records)),
        Err(e @ crate::worker::InspectError::NotFound(_)) => {
            Err(ApiError::not_found(e.to_string()))
        }
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}
