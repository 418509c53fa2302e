//! Plugin routes of the JSON API: what is installed, what each plugin's config keys are, and
//! config validation with per-key errors returned as data.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Map, Value};

use super::connectors::flag;
use super::{json_body, reply, ApiError, ApiResult, Params, Query};
use crate::api::value_text;
use crate::plugins::{kind_name, Plugin, PluginInfo, PluginStatus};
use crate::sandbox::types::{ConfigDef, ConnectorKind, ValueType};
use crate::sandbox::Identity;
use crate::storage::Properties;
use crate::worker::Worker;

/// `GET /connector-plugins[?connectorsOnly=false]`: every plugin version and broken file
/// (transforms only with `connectorsOnly=false`, as Kafka does). `class` is the plugin
/// name, `aliases` the other class names it answers to, `status` loaded, superseded (an
/// older version still pinnable), loading (being checked) or broken (with `reason`).
pub async fn list(State(worker): State<Arc<Worker>>, RawQuery(query): RawQuery) -> ApiResult {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))?;
    let connectors_only = flag(&pairs, Query::ConnectorsOnly, true)?;
    let entries: Vec<Value> = worker
        .plugins()
        .list()
        .iter()
        .filter(|info| {
            let is_transform = info
                .descriptor
                .as_ref()
                .is_some_and(|d| d.kind == ConnectorKind::Transform);
            !(connectors_only && is_transform)
        })
        .map(plugin_json)
        .collect();
    reply(StatusCode::OK, Value::Array(entries))
}

fn plugin_json(info: &PluginInfo) -> Value {
    let (status, reason) = match &info.status {
        PluginStatus::Loaded => ("loaded", None),
        PluginStatus::Superseded => ("superseded", None),
        PluginStatus::Loading => ("loading", None),
        PluginStatus::Broken { reason } => ("broken", Some(reason.clone())),
    };
    let mut entry = match &info.descriptor {
        Some(d) => {
            json!({"class": d.name, "type": kind_name(d.kind), "version": d.version, "aliases": d.aliases})
        }
        None => json!({"class": Value::Null, "type": Value::Null, "version": Value::Null}),
    };
    entry["file"] = json!(info.file.display().to_string());
    entry["status"] = json!(status);
    if let Some(reason) = reason {
        entry["reason"] = json!(reason);
    }
    entry
}

/// `GET /connector-plugins/{plugin}/config`.
pub async fn config_defs(
    State(worker): State<Arc<Worker>>,
    Params(name): Params<String>,
) -> ApiResult {
    let plugin = find(&worker, &name)?;
    let defs: Vec<Value> = plugin
        .descriptor
        .config_defs
        .iter()
        .enumerate()
        .map(|(i, d)| definition(d, i))
        .collect();
    reply(StatusCode::OK, Value::Array(defs))
}

/// `PUT /connector-plugins/{plugin}/config/validate`: 200 with `error_count` and per-key
/// errors; a connector whose own check fails to run answers 500.
pub async fn validate(
    State(worker): State<Arc<Worker>>,
    Params(name): Params<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let plugin = find(&worker, &name)?;
    let body: Map<String, Value> = json_body(&headers, body)?;
    // A null value is a key not given.
    let config: Properties = body
        .into_iter()
        .filter_map(|(k, v)| Some((k, value_text(v)?)))
        .collect();
    let connector = config.get("name").cloned().unwrap_or_default();
    let identity = Identity {
        connector,
        task: None,
    };
    let errors = worker
        .config_errors(&identity, &plugin, &config)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let defs = &plugin.descriptor.config_defs;
    let mut configs: Vec<Value> = defs
        .iter()
        .enumerate()
        .map(|(i, def)| {
            let messages: Vec<&str> = errors.iter().filter(|e| e.key == def.name).map(|e| e.message.as_str()).collect();
            json!({"definition": definition(def, i), "value": value(&def.name, config.get(&def.name), &messages)})
        })
        .collect();
    // Errors about keys the plugin does not define still reach the user.
    for error in errors
        .iter()
        .filter(|e| !defs.iter().any(|d| d.name == e.key))
    {
        configs.push(json!({"definition": Value::Null, "value": value(&error.key, config.get(&error.key), &[&error.message])}));
    }
    let body = json!({"name": plugin.descriptor.name, "error_count": errors.len(), "groups": ["Common"], "configs": configs});
    reply(StatusCode::OK, body)
}

fn find(worker: &Worker, name: &str) -> Result<Arc<Plugin>, ApiError> {
    worker.plugins().find(name).ok_or_else(|| {
        let available = worker.plugins().names().join(", ");
        ApiError::not_found(format!(
            "no connector plugin named '{name}'; available: {available}"
        ))
    })
}

/// A config key in Kafka's `ConfigKeyInfo` shape.
fn definition(def: &ConfigDef, order: usize) -> Value {
    let kind = match (def.secret, def.value_type) {
        (true, _) => "PASSWORD",
        (false, ValueType::Text) => "STRING",
        (false, ValueType::Integer) => "INT",
        (false, ValueType::Boolean) => "BOOLEAN",
        (false, ValueType::List) => "LIST",
    };
    json!({
        "name": def.name,
        "type": kind,
        "required": def.required,
        "default_value": def.default_value,
        "importance": if def.required { "HIGH" } else { "MEDIUM" },
        "documentation": def.description,
        "group": "Common",
        "order": order,
        "width": "NONE",
        "display_name": def.name,
        "dependents": [],
    })
}

fn value(name: &str, given: Option<&String>, errors: &[&str]) -> Value {
    json!({"name": name, "value": given, "recommended_values": [], "errors": errors, "visible": true})
}
