//! Exact HTTP semantics of both APIs against a real `wasm-connect` process: HEAD never
//! changes state, config values are read alike by both APIs, 405 answers carry a body and an
//! `Allow` header, `Location` is percent-encoded, and the OpenAPI document is valid and
//! survives a schema-driven fuzzer (schemathesis) with every check on.

mod common;

use std::path::Path;
use std::process::Command;

use common::{call, json_create, json_get, Answer, Host, Workspace};
use serde_json::{json, Value};

/// The bearer token of the fuzzed host.
const TOKEN: &str = "conformance-token";

fn legacy(host: &Host, method: &str, path: &str) -> Answer {
    call(method, &format!("{}{path}", host.base), None, &[])
}

fn source_config(file: &Path) -> Value {
    json!({"connector-class": "file-source", "topic": "t", "filename": file.display().to_string()})
}

/// The connector names the legacy API lists.
fn legacy_names(host: &Host) -> Vec<String> {
    let body = host.get_ok("/getConfigInfo");
    let connectors = body
        .strip_prefix("ConnectorConfigs:")
        .and_then(|rest| rest.split('\n').next())
        .unwrap_or_else(|| panic!("unexpected /getConfigInfo: {body}"));
    let connectors: Value = serde_json::from_str(connectors).expect("connector configs JSON");
    connectors
        .as_object()
        .map(|map| map.keys().cloned().collect())
        .unwrap_or_default()
}

/// Whether a Python module can be imported here.
fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|status| status.success())
}

#[test]
fn head_never_changes_state_on_the_legacy_api() {
    let ws = Workspace::new();
    let input = ws.path("in.txt");
    std::fs::write(&input, "a\n").expect("input");
    let host = ws.start();
    let config = source_config(&input).to_string();
    let create = format!("/connectors/x?config={}", common::encode(&config));

    // HEAD on the create route: 405, nothing created.
    let head = legacy(&host, "HEAD", &create);
    assert_eq!(head.status, 405, "HEAD create answered {}", head.status);
    assert_eq!(head.body, "", "a HEAD answer has no body");
    assert!(legacy_names(&host).is_empty(), "HEAD created a connector");

    // HEAD on /stop, /stopAll and /plugin/reload: 405, the connector stays.
    assert_eq!(host.create("kept", &config).1, "success");
    for path in [
        "/connectors/kept/stop",
        "/connectors/stopAll",
        "/plugin/reload",
    ] {
        let head = legacy(&host, "HEAD", path);
        assert_eq!(head.status, 405, "HEAD {path} answered {}", head.status);
        let allow = call("GET", &format!("{}{path}", host.base), None, &[]);
        assert_eq!(allow.status, 200, "GET {path} still works");
        if path == "/plugin/reload" {
            continue;
        }
        // The GET did stop it: create it again for the next HEAD.
        assert_eq!(host.create("kept", &config).1, "success");
    }
    assert_eq!(legacy_names(&host), vec!["kept".to_string()]);

    // A HEAD on a read answers the read's headers, without a body.
    for path in [
        "/connectors/kept/status",
        "/connectors/kept/config",
        "/getConfigInfo",
        "/getClusterInfo",
        "/getAllocatedInfo",
    ] {
        let head = legacy(&host, "HEAD", path);
        assert_eq!(head.status, 200, "HEAD {path} answered {}", head.status);
        assert!(head.content_type.starts_with("text/plain"), "HEAD {path}");
        assert_eq!(head.body, "");
    }
    assert_eq!(legacy_names(&host), vec!["kept".to_string()]);
}

#[test]
fn method_not_allowed_answers_name_the_allowed_methods() {
    let ws = Workspace::new();
    let host = ws.start();

    // The legacy API keeps its text style.
    for (method, path, allow) in [
        ("POST", "/getClusterInfo", "GET, HEAD"),
        ("DELETE", "/connectors/x", "GET"),
        ("HEAD", "/connectors/stopAll", "GET"),
        ("PUT", "/connectors/x/status", "GET, HEAD"),
    ] {
        let url = format!("{}{path}", host.base);
        let answer = call(method, &url, (method != "HEAD").then_some(""), &[]);
        assert_eq!(answer.status, 405, "{method} {path}");
        let sent = ureq::request(method, &url).call();
        let header = match sent {
            Err(ureq::Error::Status(_, response)) => response.header("allow").map(String::from),
            other => panic!("{method} {path}: {other:?}"),
        };
        assert_eq!(header.as_deref(), Some(allow), "Allow of {method} {path}");
        if method != "HEAD" {
            assert!(
                answer.content_type.starts_with("text/plain"),
                "{method} {path}"
            );
            assert_eq!(
                answer.body,
                format!("failed: method {method} is not allowed here; this route answers {allow}")
            );
        }
    }

    // The JSON API answers its error shape, and Allow lists the served methods.
    let url = format!("{}/connector-plugins", host.kafka);
    let answer = call("DELETE", &url, None, &[]);
    assert_eq!(answer.status, 405);
    assert!(answer.content_type.starts_with("application/json"));
    let body = answer.json();
    assert_eq!(body["error_code"], 405);
    let message = body["message"].as_str().expect("message");
    assert!(
        message.contains("DELETE") && message.contains("/connector-plugins"),
        "{message}"
    );
    let allow = match ureq::request("DELETE", &url).call() {
        Err(ureq::Error::Status(405, response)) => response.header("allow").map(String::from),
        other => panic!("DELETE /connector-plugins: {other:?}"),
    };
    assert!(
        allow.as_deref().is_some_and(|allow| allow.contains("GET")),
        "Allow: {allow:?}"
    );
}

#[test]
fn config_values_are_read_alike_by_both_apis() {
    let ws = Workspace::new();
    let input = ws.path("in.txt");
    std::fs::write(&input, "").expect("input");
    let host = ws.start();

    // A null value is refused by both, naming the key, and nothing is stored.
    let mut with_null = source_config(&input);
    with_null["extra.key"] = Value::Null;
    let (status, body) = host.create("nl", &with_null.to_string());
    assert_eq!(status, 400, "legacy null: {body}");
    assert!(body.contains("\"extra.key\" is null"), "{body}");
    let answer = json_create(&host, "nj", with_null);
    assert_eq!(answer.status, 400, "JSON null: {}", answer.body);
    let message = answer.json()["message"].as_str().unwrap_or("").to_string();
    assert!(message.contains("\"extra.key\" is null"), "{message}");
    assert!(legacy_names(&host).is_empty());

    // Numbers, booleans and nested values are stored as their JSON text by both.
    let mut typed = source_config(&input);
    typed["n"] = json!(5);
    typed["f"] = json!(1.5);
    typed["b"] = json!(true);
    typed["o"] = json!({"a": [1, "x"]});
    assert_eq!(host.create("tl", &typed.to_string()).1, "success");
    assert_eq!(json_create(&host, "tj", typed).status, 201);
    let legacy_config = host.get_ok("/connectors/tl/config");
    let stored: Value = serde_json::from_str(
        legacy_config
            .strip_prefix("ConnectorConfigs:")
            .and_then(|rest| rest.split('\n').next())
            .expect("config line"),
    )
    .expect("legacy config JSON");
    let json_config = json_get(&host, "/connectors/tj/config").json();
    for (key, text) in [
        ("n", "5"),
        ("f", "1.5"),
        ("b", "true"),
        ("o", r#"{"a":[1,"x"]}"#),
    ] {
        assert_eq!(stored["properties"][key], text, "legacy {key}");
        assert_eq!(json_config[key], text, "JSON API {key}");
    }
}

#[test]
fn location_percent_encodes_the_name() {
    let ws = Workspace::new();
    let input = ws.path("in.txt");
    std::fs::write(&input, "").expect("input");
    let host = ws.start();
    let name = "a?b c#d%é";
    let answer = json_create(&host, name, source_config(&input));
    assert_eq!(answer.status, 201, "{}", answer.body);
    let location = answer.location.expect("Location header");
    assert_eq!(location, "/connectors/a%3Fb%20c%23d%25%C3%A9");
    let info = json_get(&host, &location).json();
    assert_eq!(info["name"], name, "Location leads back to the connector");
}

/// Starts a host with a token and a source and a stopped sink, so the fuzzer meets real
/// connectors, and writes its OpenAPI document to the workspace.
fn fuzz_target(ws: &Workspace) -> (Host, std::path::PathBuf) {
    let input = ws.path("in.txt");
    std::fs::write(&input, "one\ntwo\n").expect("input");
    let host = Host::start_with(&ws.data_dir(), &ws.plugin_dir(), &["--auth-token", TOKEN]);
    let auth = format!("Bearer {TOKEN}");
    let headers = [("Authorization", auth.as_str())];
    let url = |path: &str| format!("{}{path}", host.kafka);
    let body = json!({"name": "my-connector", "config": source_config(&input)}).to_string();
    let created = call("POST", &url("/connectors"), Some(&body), &headers);
    assert_eq!(created.status, 201, "{}", created.body);
    let sink = json!({"name": "my-sink", "initial_state": "STOPPED", "config": {
        "connector-class": "file-sink", "topicNames": "t", "filename": ws.path("out.txt").display().to_string()}});
    let created = call(
        "POST",
        &url("/connectors"),
        Some(&sink.to_string()),
        &headers,
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let document = call("GET", &url("/openapi.json"), None, &headers);
    assert_eq!(document.status, 200);
    let path = ws.path("openapi.json");
    std::fs::write(&path, &document.body).expect("write document");
    (host, path)
}

#[test]
fn openapi_document_is_valid_and_survives_schemathesis() {
    let ws = Workspace::new();
    let (host, document) = fuzz_target(&ws);
    let parsed: Value =
        serde_json::from_str(&std::fs::read_to_string(&document).expect("read")).expect("JSON");
    assert_eq!(
        parsed["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let create = &parsed["paths"]["/connectors"]["post"];
    assert!(create["requestBody"]["required"] == true, "{create}");
    assert!(create["responses"]["201"]["headers"]["Location"].is_object());
    assert!(
        parsed["paths"]["/connectors/{connector}"]["delete"]["responses"]["204"]
            .get("content")
            .is_none(),
        "a 204 has no body"
    );

    if !python_has("openapi_spec_validator") || !python_has("schemathesis") {
        eprintln!(
            "SKIPPED: openapi-spec-validator or schemathesis is not installed \
             (python3 -m pip install openapi-spec-validator==0.9.0 schemathesis==4.32.5; .ci/run does)"
        );
        return;
    }
    let validated = Command::new("python3")
        .args([
            "-c",
            "import json, sys; from openapi_spec_validator import validate; \
             validate(json.load(open(sys.argv[1]))); print('valid')",
        ])
        .arg(&document)
        .output()
        .expect("run openapi-spec-validator");
    assert!(
        validated.status.success(),
        "openapi-spec-validator refused the document: {}",
        String::from_utf8_lossy(&validated.stderr)
    );

    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/schemathesis.toml");
    let fuzzed = Command::new("st")
        // schemathesis keeps a cache in `.schemathesis/` of its working directory.
        .current_dir(ws.dir.path())
        .arg("--no-color")
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(&document)
        .args(["--url", &host.kafka])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--checks", "all"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", "25", "--max-time", "50", "--workers", "1"])
        .args(["--seed", "1"])
        .output()
        .expect("run st (schemathesis)");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&fuzzed.stdout),
        String::from_utf8_lossy(&fuzzed.stderr)
    );
    assert!(
        fuzzed.status.success(),
        "schemathesis found failures:\n{report}"
    );
    // The host is still up and sound after the fuzzing.
    let health = call(
        "GET",
        &format!("{}/health", host.kafka),
        None,
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    );
    assert_eq!(health.status, 200);
}
