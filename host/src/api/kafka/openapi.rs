//! The OpenAPI 3 document of the JSON API, generated from the route list.

use axum::Json;
use serde_json::{json, Map, Value};

use super::ROUTES;

/// `GET /openapi.json`.
pub async fn document() -> Json<Value> {
    Json(build())
}

/// The document: one operation per route, with its path parameters and success status.
pub fn build() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let entry = paths.entry(route.path).or_insert_with(|| json!({}));
        let parameters: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let operation = json!({
            "summary": route.summary,
            "parameters": parameters,
            "responses": {
                route.success.to_string(): {"description": "success", "content": {"application/json": {}}},
                "default": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        });
        if let Some(entry) = entry.as_object_mut() {
            entry.insert(route.method.to_string(), operation);
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "wasm-connect JSON API (Kafka Connect compatible)", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": {"Error": {
            "type": "object",
            "required": ["error_code", "message"],
            "properties": {"error_code": {"type": "integer"}, "message": {"type": "string"}},
        }}},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_once_with_its_method() {
        let document = build();
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
}
