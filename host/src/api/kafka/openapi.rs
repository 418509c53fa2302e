//! The OpenAPI 3.0.3 document of the JSON API, generated from the route table ([`ROUTES`]):
//! path parameters from the paths, query parameters, request bodies and answers from each
//! row. The schemas of the bodies live here, one [`Body`] each, next to the query parameters
//! the handlers read by [`Query::name`].

use axum::{Extension, Json};
use serde_json::{json, Map, Value};

use super::{Route, ROUTES};
use crate::storage::TargetState;
use crate::worker::RunState;

/// Whether the listener requires a bearer token, for `securitySchemes`.
#[derive(Debug, Clone, Copy)]
pub struct Security {
    pub secured: bool,
}

/// `GET /openapi.json`.
pub async fn document(Extension(security): Extension<Security>) -> Json<Value> {
    Json(build(security))
}

/// A query parameter a route reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    /// `expand=status`, `expand=info` (repeatable); other values are ignored, as Kafka does.
    Expand,
    /// `includeTasks=true|false`.
    IncludeTasks,
    /// `onlyFailed=true|false`.
    OnlyFailed,
    /// `connectorsOnly=true|false`: false lists transforms too.
    ConnectorsOnly,
    /// `offset=N`: the first record to show.
    Offset,
    /// `limit=N`: how many records.
    Limit,
}

impl Query {
    /// The parameter's name in the query string.
    pub fn name(self) -> &'static str {
        match self {
            Query::Expand => "expand",
            Query::IncludeTasks => "includeTasks",
            Query::OnlyFailed => "onlyFailed",
            Query::ConnectorsOnly => "connectorsOnly",
            Query::Offset => "offset",
            Query::Limit => "limit",
        }
    }

    fn parameter(self) -> Value {
        let (schema, description) = match self {
            Query::Expand => (
                json!({"type": "array", "items": {"type": "string"}}),
                "status and/or info: answer a map of names to these details; other values are ignored",
            ),
            Query::IncludeTasks => (
                json!({"type": "boolean", "default": false}),
                "also restart the tasks (answers 202 with the status)",
            ),
            Query::OnlyFailed => (
                json!({"type": "boolean", "default": false}),
                "restart only what is FAILED",
            ),
            Query::ConnectorsOnly => (
                json!({"type": "boolean", "default": true}),
                "false: list transform plugins too",
            ),
            Query::Offset => (
                json!({"type": "integer", "minimum": 0, "maximum": u64::MAX}),
                "the offset of the first record (default: the latest `limit` records)",
            ),
            Query::Limit => (
                json!({"type": "integer", "minimum": 1, "maximum": 500, "default": 20}),
                "how many records",
            ),
        };
        json!({"name": self.name(), "in": "query", "required": false, "schema": schema,
               "style": "form", "explode": true, "description": description})
    }
}

/// A JSON body a route reads or answers; each is one schema under `components/schemas`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    ServerInfo,
    Health,
    Live,
    Ready,
    /// Prometheus text (0.0.4) or OpenMetrics: not JSON.
    Metrics,
    TopicRecords,
    Document,
    ConnectorList,
    CreateRequest,
    ConnectorInfo,
    /// A config as given: values of any JSON type but null.
    Config,
    /// A config change or a config to validate: a null value deletes the key (is not given).
    ConfigChanges,
    /// A config as answered: string values.
    ConfigAnswer,
    ConnectorStatus,
    TaskState,
    Tasks,
    Offsets,
    OffsetsRequest,
    Message,
    Topics,
    Plugins,
    ConfigKeys,
    ConfigInfos,
    Error,
}

/// Every body, for `components/schemas`.
const BODIES: &[Body] = &[
    Body::ServerInfo,
    Body::Health,
    Body::Live,
    Body::Ready,
    Body::Metrics,
    Body::TopicRecords,
    Body::Document,
    Body::ConnectorList,
    Body::CreateRequest,
    Body::ConnectorInfo,
    Body::Config,
    Body::ConfigChanges,
    Body::ConfigAnswer,
    Body::ConnectorStatus,
    Body::TaskState,
    Body::Tasks,
    Body::Offsets,
    Body::OffsetsRequest,
    Body::Message,
    Body::Topics,
    Body::Plugins,
    Body::ConfigKeys,
    Body::ConfigInfos,
    Body::Error,
];

/// The states a connector may be created in; absent or null means RUNNING.
fn initial_states() -> Vec<Value> {
    let states = TargetState::ALL.iter().map(|state| json!(state));
    states.chain([Value::Null]).collect()
}

fn reference(body: Body) -> Value {
    json!({"$ref": format!("#/components/schemas/{body:?}")})
}

fn string() -> Value {
    json!({"type": "string"})
}

fn object(required: &[&str], properties: Value) -> Value {
    json!({"type": "object", "required": required, "properties": properties})
}

/// Any JSON value but null (OpenAPI 3.0 has no type list).
fn any_but_null() -> Value {
    json!({"anyOf": [
        {"type": "string"}, {"type": "number"}, {"type": "boolean"},
        {"type": "object"}, {"type": "array", "items": {}},
    ]})
}

impl Body {
    fn schema(self) -> Value {
        match self {
            Body::ServerInfo => object(
                &["version", "commit", "kafka_cluster_id"],
                json!({"version": string(), "commit": string(), "kafka_cluster_id": string()}),
            ),
            Body::Health => object(
                &["status", "message"],
                json!({"status": {"type": "string", "enum": ["starting", "healthy", "unhealthy"]}, "message": string()}),
            ),
            Body::Live => object(
                &["status"],
                json!({"status": {"type": "string", "enum": ["alive", "stuck"]}, "message": string()}),
            ),
            Body::Ready => object(
                &["status"],
                json!({
                    "status": {"type": "string", "enum": ["starting", "ready"]},
                    "message": string(),
                    "connectors": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
                    "failed": {"type": "array", "items": object(&["name", "state"], json!({
                        "name": string(),
                        "state": {"type": "string", "enum": RunState::ALL},
                        "reason": {"type": "string", "nullable": true},
                    }))},
                }),
            ),
            Body::Metrics => string(),
            Body::TopicRecords => object(
                &["topic", "end_offset", "records"],
                json!({
                    "topic": string(),
                    "end_offset": {"type": "integer", "minimum": 0},
                    "records": {"type": "array", "items": object(
                        &["offset", "timestamp", "key", "value", "headers"],
                        json!({
                            "offset": {"type": "integer", "minimum": 0},
                            "timestamp": {"type": "integer"},
                            "key": {"type": "string", "nullable": true},
                            "value": string(),
                            "headers": {"type": "object", "additionalProperties": string()},
                        }),
                    )},
                }),
            ),
            Body::Document => json!({"type": "object", "required": ["openapi", "paths"]}),
            Body::ConnectorList => json!({"oneOf": [
                {"type": "array", "items": string()},
                {"type": "object", "additionalProperties": {"type": "object", "properties": {
                    "status": reference(Body::ConnectorStatus),
                    "info": reference(Body::ConnectorInfo),
                }}},
            ]}),
            Body::CreateRequest => json!({
                "type": "object",
                "required": ["name", "config"],
                "additionalProperties": false,
                "properties": {
                    "name": string(),
                    "config": reference(Body::Config),
                    "initial_state": {"type": "string", "nullable": true, "enum": initial_states(),
                        "description": "absent or null: RUNNING"},
                },
            }),
            Body::ConnectorInfo => object(
                &["name", "config", "tasks", "type"],
                json!({
                    "name": string(),
                    "config": reference(Body::ConfigAnswer),
                    "tasks": {"type": "array", "items": object(&["connector", "task"],
                        json!({"connector": string(), "task": {"type": "integer", "minimum": 0}}))},
                    "type": {"type": "string", "enum": ["source", "sink", "unknown"]},
                }),
            ),
            Body::Config => json!({
                "type": "object",
                "description": "values of any type but null; numbers, booleans, arrays and objects are kept as their JSON text",
                "additionalProperties": any_but_null(),
            }),
            Body::ConfigChanges => json!({
                "type": "object",
                "description": "a null value deletes the key (validate: the key is not given)",
                "additionalProperties": {"anyOf": [
                    {"type": "string", "nullable": true}, {"type": "number"}, {"type": "boolean"},
                    {"type": "object"}, {"type": "array", "items": {}},
                ]},
            }),
            Body::ConfigAnswer => json!({"type": "object", "additionalProperties": string()}),
            Body::ConnectorStatus => object(
                &["name", "connector", "tasks", "type"],
                json!({
                    "name": string(),
                    "connector": object(&["state", "worker_id"], json!({
                        "state": {"type": "string", "enum": RunState::ALL},
                        "worker_id": string(),
                        "trace": string(),
                    })),
                    "tasks": {"type": "array", "items": reference(Body::TaskState)},
                    "type": {"type": "string", "enum": ["source", "sink", "unknown"]},
                }),
            ),
            Body::TaskState => object(
                &["id", "state", "worker_id"],
                json!({
                    "id": {"type": "integer", "minimum": 0},
                    "state": {"type": "string", "enum": RunState::ALL},
                    "worker_id": string(),
                    "trace": string(),
                    "errors": object(&["failed", "dead_lettered"], json!({
                        "failed": {"type": "integer", "minimum": 0},
                        "dead_lettered": {"type": "integer", "minimum": 0},
                    })),
                }),
            ),
            Body::Tasks => json!({"type": "array", "items": object(&["id", "config"], json!({
                "id": object(&["connector", "task"], json!({"connector": string(), "task": {"type": "integer", "minimum": 0}})),
                "config": reference(Body::ConfigAnswer),
            }))}),
            Body::Offsets => object(
                &["offsets"],
                json!({"offsets": {"type": "array", "items": object(&["partition", "offset"], json!({
                    "partition": {"type": "object"},
                    "offset": {"type": "object"},
                }))}}),
            ),
            Body::OffsetsRequest => json!({
                "type": "object",
                "required": ["offsets"],
                "additionalProperties": false,
                "properties": {"offsets": {"type": "array", "minItems": 1, "items": {
                    "type": "object",
                    "required": ["partition"],
                    "additionalProperties": false,
                    "properties": {
                        "partition": {"type": "object", "description": "source: {\"partition\": …}; sink: {\"kafka_topic\": …, \"kafka_partition\": 0}"},
                        "offset": {"type": "object", "nullable": true, "description": "source: {\"position\": …}; sink: {\"kafka_offset\": …}; null resets"},
                    },
                }}},
            }),
            Body::Message => object(&["message"], json!({"message": string()})),
            Body::Topics => json!({"type": "object", "additionalProperties": object(&["topics"],
                json!({"topics": {"type": "array", "items": string()}}))}),
            Body::Plugins => {
                json!({"type": "array", "items": object(&["class", "type", "version", "file", "status"], json!({
                    "class": {"type": "string", "nullable": true},
                    "type": {"type": "string", "nullable": true, "enum": ["source", "sink", "transformation", null]},
                    "version": {"type": "string", "nullable": true},
                    "aliases": {"type": "array", "items": string()},
                    "file": string(),
                    "status": {"type": "string", "enum": ["loaded", "superseded", "broken"]},
                    "reason": string(),
                }))})
            }
            Body::ConfigKeys => json!({"type": "array", "items": config_key()}),
            Body::ConfigInfos => object(
                &["name", "error_count", "groups", "configs"],
                json!({
                    "name": string(),
                    "error_count": {"type": "integer", "minimum": 0},
                    "groups": {"type": "array", "items": string()},
                    "configs": {"type": "array", "items": object(&["definition", "value"], json!({
                        "definition": {"nullable": true, "allOf": [config_key()]},
                        "value": object(&["name", "value", "recommended_values", "errors", "visible"], json!({
                            "name": string(),
                            "value": {"type": "string", "nullable": true},
                            "recommended_values": {"type": "array", "items": string()},
                            "errors": {"type": "array", "items": string()},
                            "visible": {"type": "boolean"},
                        })),
                    }))},
                }),
            ),
            Body::Error => object(
                &["error_code", "message"],
                json!({"error_code": {"type": "integer"}, "message": string()}),
            ),
        }
    }
}

/// Kafka's `ConfigKeyInfo`.
fn config_key() -> Value {
    object(
        &[
            "name",
            "type",
            "required",
            "default_value",
            "importance",
            "documentation",
            "group",
            "order",
            "width",
            "display_name",
            "dependents",
        ],
        json!({
            "name": string(),
            "type": {"type": "string", "enum": ["STRING", "INT", "BOOLEAN", "LIST", "PASSWORD"]},
            "required": {"type": "boolean"},
            "default_value": {"type": "string", "nullable": true},
            "importance": {"type": "string", "enum": ["HIGH", "MEDIUM", "LOW"]},
            "documentation": {"type": "string", "nullable": true},
            "group": string(),
            "order": {"type": "integer", "minimum": 0},
            "width": string(),
            "display_name": string(),
            "dependents": {"type": "array", "items": string()},
        }),
    )
}

fn json_content(body: Body) -> Value {
    json!({"application/json": {"schema": reference(body)}})
}

/// The media types of an answer: the metrics' two text formats, JSON for the rest.
fn answer_content(body: Body) -> Value {
    match body {
        Body::Metrics => json!({
            "text/plain": {"schema": reference(body)},
            "application/openmetrics-text": {"schema": reference(body)},
        }),
        _ => json_content(body),
    }
}

/// A request body, with an example where one helps a reader (and a fuzzer) past the
/// connector's own checks.
fn request_content(body: Body) -> Value {
    let mut content = json_content(body);
    let example = match body {
        Body::CreateRequest => Some(json!({"name": EXAMPLE_NAME, "config": example_config()})),
        Body::Config => Some(example_config()),
        Body::ConfigChanges => Some(json!({"topic": "demo", "tasks.max": null})),
        Body::OffsetsRequest => Some(json!({"offsets": [
            {"partition": {"partition": "/tmp/demo/in.txt"}, "offset": {"position": "0"}},
        ]})),
        _ => None,
    };
    if let Some(example) = example {
        content["application/json"]["example"] = example;
    }
    content
}

/// A path parameter: a task id is a number, anything else a name.
fn path_parameter(name: &str) -> Value {
    let (schema, example) = match name {
        "task" => (
            json!({"type": "integer", "minimum": 0, "maximum": u32::MAX}),
            json!(0),
        ),
        "plugin" => (string(), json!("file-source")),
        _ => (string(), json!(EXAMPLE_NAME)),
    };
    json!({"name": name, "in": "path", "required": true, "schema": schema, "example": example})
}

/// The connector name of the document's examples.
const EXAMPLE_NAME: &str = "my-connector";

/// The config of the document's examples (the README's walk-through).
fn example_config() -> Value {
    json!({"connector.class": "file-source", "file": "/tmp/demo/in.txt", "topic": "demo"})
}

fn operation(route: &Route) -> Value {
    let parameters: Vec<Value> = route
        .path
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(path_parameter)
        .chain(route.query.iter().map(|query| query.parameter()))
        .collect();
    let mut responses = Map::new();
    for (status, body) in route.answers {
        let mut answer = json!({"description": "success"});
        if let Some(body) = body {
            answer["content"] = answer_content(*body);
        }
        if *status == 201 {
            answer["headers"] = json!({"Location": {
                "description": "the new connector, its name percent-encoded",
                "schema": string(),
            }});
        }
        responses.insert(status.to_string(), answer);
    }
    responses.insert(
        "default".into(),
        json!({"description": "error", "content": json_content(Body::Error)}),
    );
    let mut operation = json!({
        "summary": route.summary,
        "operationId": format!("{}{}", route.method, route.path.replace(['/', '{', '}', '.', '-'], "_")),
        "parameters": parameters,
        "responses": responses,
    });
    if let Some(body) = route.body {
        operation["requestBody"] = json!({"required": true, "content": request_content(body)});
    }
    operation
}

/// The document: one operation per route.
pub fn build(security: Security) -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let entry = paths.entry(route.path).or_insert_with(|| json!({}));
        if let Some(entry) = entry.as_object_mut() {
            entry.insert(route.method.to_string(), operation(route));
        }
    }
    let schemas: Map<String, Value> = BODIES
        .iter()
        .map(|body| (format!("{body:?}"), body.schema()))
        .collect();
    let mut document = json!({
        "openapi": "3.0.3",
        "info": {"title": "wasm-connect JSON API (Kafka Connect compatible)", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": schemas},
    });
    if security.secured {
        document["components"]["securitySchemes"] =
            json!({"bearer": {"type": "http", "scheme": "bearer"}});
        document["security"] = json!([{"bearer": []}]);
    }
    document
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_once_with_its_method() {
        let document = build(Security { secured: false });
        let paths = document["paths"].as_object().expect("paths");
        let documented: usize = paths
            .values()
            .map(|ops| ops.as_object().map_or(0, Map::len))
            .sum();
        assert_eq!(documented, ROUTES.len());
        for route in ROUTES {
            assert!(
                paths[route.path].get(route.method).is_some(),
                "{} {} is not documented",
                route.method,
                route.path
            );
        }
    }

    #[test]
    fn every_body_a_route_names_has_a_schema() {
        let document = build(Security { secured: true });
        let schemas = &document["components"]["schemas"];
        for route in ROUTES {
            let bodies = route.body.into_iter();
            for body in bodies.chain(route.answers.iter().filter_map(|(_, body)| *body)) {
                assert!(
                    schemas.get(format!("{body:?}")).is_some(),
                    "{body:?} has no schema"
                );
            }
        }
        assert_eq!(document["security"][0]["bearer"], json!([]));
    }

    #[test]
    fn state_lists_are_spelled_as_the_api_answers_and_reads_them() {
        let document = build(Security { secured: false });
        let schemas = &document["components"]["schemas"];
        assert_eq!(
            schemas["TaskState"]["properties"]["state"]["enum"],
            json!([
                "UNASSIGNED",
                "RUNNING",
                "PAUSED",
                "STOPPED",
                "FAILED",
                "RESTARTING"
            ])
        );
        assert_eq!(
            schemas["CreateRequest"]["properties"]["initial_state"]["enum"],
            json!(["RUNNING", "PAUSED", "STOPPED", null])
        );
        for target in TargetState::ALL {
            assert_eq!(json!(target), json!(RunState::from(target)));
        }
    }
}
