//! Transforms and error handling (issue 15) through a real `wasm-connect` process: bundled
//! transforms between a file source and a file sink, predicates, `errors.tolerance`, the
//! dead letter queue with its context headers, and a hostile transform contained like a
//! hostile connector. The transforms are the committed components of `plugins/` and
//! `tests/fixtures/hostile/hostile-transform.wasm` (built by `scripts/build-plugins.sh` and
//! `tests/hostile/build.sh`).

mod common;

use std::path::Path;
use std::time::Duration;

use common::{
    append, bundled_plugins, files_containing, json_create, json_get, read_lines, wait_for, Host,
    Workspace,
};
use serde_json::{json, Value};

/// A workspace whose plugin dir also holds the bundled transforms `names`.
fn workspace_with(names: &[&str]) -> Workspace {
    let ws = Workspace::new();
    for name in names {
        let file = format!("{name}.wasm");
        std::fs::copy(bundled_plugins().join(&file), ws.plugin_dir().join(&file))
            .unwrap_or_else(|e| panic!("copy {file} (run scripts/build-plugins.sh): {e}"));
    }
    ws
}

/// Waits until the host lists every plugin of `names` (transforms included): plugins
/// compile in the background after the host starts.
fn wait_plugins(host: &Host, names: &[&str]) {
    wait_for(Duration::from_secs(60), "the plugins loaded", || {
        let listed = json_get(host, "/connector-plugins?connectorsOnly=false").json();
        let loaded: Vec<&str> = listed
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["status"] == "loaded")
            .filter_map(|p| p["class"].as_str())
            .collect();
        names.iter().all(|n| loaded.contains(n))
    });
}

/// Creates connector `name` on the JSON API; panics unless it is created.
fn create(host: &Host, name: &str, config: Value) {
    let answer = json_create(host, name, config);
    assert_eq!(answer.status, 201, "create {name}: {}", answer.body);
}

/// A file sink of `topic` into `file`.
fn sink(host: &Host, name: &str, topic: &str, file: &Path) {
    create(
        host,
        name,
        json!({"connector.class": "file-sink", "topics": topic, "file": file}),
    );
}

fn status(host: &Host, name: &str) -> Value {
    json_get(host, &format!("/connectors/{name}/status")).json()
}

fn task_state(host: &Host, name: &str) -> (String, String) {
    let status = status(host, name);
    let task = &status["tasks"][0];
    (
        task["state"].as_str().unwrap_or_default().to_string(),
        task["trace"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn regex_router_and_mask_field_deliver_exactly_the_transformed_lines() {
    let ws = workspace_with(&["regex-router", "mask-field"]);
    let (input, output) = (ws.path("in.jsonl"), ws.path("out.jsonl"));
    let lines: String = (0..500)
        .map(|i| {
            format!("{{\"user\":\"u{i}\",\"password\":\"secret{i}\",\"n\":{i},\"ok\":true}}\n")
        })
        .collect();
    append(&input, &lines);
    let host = ws.start();
    wait_plugins(
        &host,
        &["file-source", "file-sink", "regex-router", "mask-field"],
    );
    create(
        &host,
        "source",
        json!({
            "connector.class": "file-source", "file": input, "topic": "raw-events",
            "topics.allow": "clean-.*",
            "transforms": "route,mask",
            "transforms.route.type": "org.apache.kafka.connect.transforms.RegexRouter",
            "transforms.route.regex": "raw-(.*)",
            "transforms.route.replacement": "clean-$1",
            "transforms.mask.type": "org.apache.kafka.connect.transforms.MaskField$Value",
            "transforms.mask.fields": "password,n",
        }),
    );
    sink(&host, "sink", "clean-events", &output);
    let expected: Vec<String> = (0..500)
        .map(|i| format!("{{\"user\":\"u{i}\",\"password\":\"\",\"n\":0,\"ok\":true}}"))
        .collect();
    wait_for(Duration::from_secs(60), "500 masked lines", || {
        read_lines(&output).len() >= expected.len()
    });
    assert_eq!(read_lines(&output), expected);
    let topics = json_get(&host, "/connectors/source/topics").json();
    assert_eq!(topics["source"]["topics"], json!(["clean-events"]));
}

#[test]
fn a_filter_guarded_by_a_predicate_drops_exactly_the_matching_records() {
    let ws = workspace_with(&["filter"]);
    let (input, output, kept) = (ws.path("in.txt"), ws.path("out.txt"), ws.path("kept.txt"));
    // Every third line is empty: a tombstone (empty value).
    let lines: Vec<String> = (0..300)
        .map(|i| {
            if i % 3 == 0 {
                String::new()
            } else {
                format!("line {i}")
            }
        })
        .collect();
    append(&input, &(lines.join("\n") + "\n"));
    let host = ws.start();
    wait_plugins(&host, &["file-source", "file-sink", "filter"]);
    let filtered = |name: &str, topic: &str, negate: bool| {
        json!({
            "connector.class": "file-source", "file": input, "topic": topic,
            "transforms": "dropTombstones",
            "transforms.dropTombstones.type": "org.apache.kafka.connect.transforms.Filter",
            "transforms.dropTombstones.predicate": "isTombstone",
            "transforms.dropTombstones.negate": negate.to_string(),
            "predicates": "isTombstone",
            "predicates.isTombstone.type":
                "org.apache.kafka.connect.transforms.predicates.RecordIsTombstone",
            "tasks.max": "1", "name": name,
        })
    };
    create(&host, "drop-empty", filtered("drop-empty", "full", false));
    create(&host, "keep-empty", filtered("keep-empty", "empty", true));
    sink(&host, "sink-full", "full", &output);
    sink(&host, "sink-empty", "empty", &kept);
    let non_empty: Vec<String> = lines.iter().filter(|l| !l.is_empty()).cloned().collect();
    wait_for(Duration::from_secs(60), "the non-empty lines", || {
        read_lines(&output).len() >= non_empty.len() && read_lines(&kept).len() >= 100
    });
    assert_eq!(read_lines(&output), non_empty);
    assert_eq!(read_lines(&kept), vec![String::new(); 100]);
}

/// `line 0` … `line n-1`, one per line.
fn numbered(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("line {i}")).collect()
}

/// A source of `input` into `topic` through the hostile transform failing every tenth line,
/// with `errors` keys.
fn failing_source(input: &Path, topic: &str, errors: Value) -> Value {
    let mut config = json!({
        "connector.class": "file-source", "file": input, "topic": topic,
        "transforms": "tenth",
        "transforms.tenth.type": "com.example.HostileTransform",
        "transforms.tenth.behaviour": "fail-every-tenth",
    });
    if let (Some(config), Some(errors)) = (config.as_object_mut(), errors.as_object()) {
        config.extend(errors.clone());
    }
    config
}

#[test]
fn with_tolerance_all_failed_records_go_to_the_dead_letter_queue_with_context_headers() {
    let ws = Workspace::new();
    ws.add_hostile_plugin("hostile-transform.wasm");
    let (input, output, dead) = (ws.path("in.txt"), ws.path("out.txt"), ws.path("dead.txt"));
    let lines = numbered(1000);
    append(&input, &(lines.join("\n") + "\n"));
    let host = ws.start();
    wait_plugins(&host, &["file-source", "file-sink", "hostile-transform"]);
    let errors = json!({
        "errors.tolerance": "all",
        "errors.deadletterqueue.topic.name": "dlq",
        "errors.deadletterqueue.context.headers.enable": "true",
    });
    create(&host, "source", failing_source(&input, "events", errors));
    sink(&host, "sink", "events", &output);
    sink(&host, "dead", "dlq", &dead);
    let (passed, failed): (Vec<String>, Vec<String>) =
        lines.iter().cloned().partition(|l| !l.ends_with('0'));
    wait_for(Duration::from_secs(60), "90% out, 10% dead", || {
        read_lines(&output).len() >= passed.len() && read_lines(&dead).len() >= failed.len()
    });
    assert_eq!(read_lines(&output), passed);
    assert_eq!(read_lines(&dead), failed);
    // The dead letter records carry Kafka's context headers (stored in the topic log).
    for header in [
        "__connect.errors.topic",
        "__connect.errors.stage",
        "__connect.errors.connector.name",
        "__connect.errors.task.id",
        "__connect.errors.exception.message",
        "__connect.errors.offset",
    ] {
        assert!(
            !files_containing(&ws.data_dir(), header.as_bytes()).is_empty(),
            "no {header} header stored"
        );
    }
    assert!(!files_containing(&ws.data_dir(), b"refusing line 990: divisible by ten").is_empty());
    assert_eq!(task_state(&host, "source").0, "RUNNING");
    let task = &status(&host, "source")["tasks"][0];
    assert_eq!(task["errors"], json!({"failed": 100, "dead_lettered": 100}));
}

#[test]
fn with_tolerance_none_the_task_fails_at_the_failed_record_and_commits_nothing_after_it() {
    let ws = Workspace::new();
    ws.add_hostile_plugin("hostile-transform.wasm");
    let (input, output) = (ws.path("in.txt"), ws.path("out.txt"));
    // Lines 1..=9 pass; line 10 fails.
    let lines: Vec<String> = (1..=50).map(|i| format!("line {i}")).collect();
    append(&input, &(lines.join("\n") + "\n"));
    let host = ws.start();
    wait_plugins(&host, &["file-source", "file-sink", "hostile-transform"]);
    create(&host, "source", failing_source(&input, "events", json!({})));
    sink(&host, "sink", "events", &output);
    wait_for(Duration::from_secs(30), "the source FAILED", || {
        task_state(&host, "source").0 == "FAILED"
    });
    let (_, trace) = task_state(&host, "source");
    assert!(trace.contains("transform tenth"), "{trace}");
    assert!(trace.contains("refusing line 10"), "{trace}");
    // Its position: the byte offset after `line 10`.
    let position = lines[..10].iter().map(|l| l.len() + 1).sum::<usize>();
    assert!(
        trace.contains(&format!("position \"{position}\"")),
        "{trace}"
    );
    std::thread::sleep(Duration::from_secs(1));
    let delivered = read_lines(&output);
    assert!(
        delivered.iter().all(|l| lines[..9].contains(l)),
        "records from the failed one on were committed: {delivered:?}"
    );
    let offsets = json_get(&host, "/connectors/source/offsets").json();
    let committed: usize = offsets["offsets"]
        .as_array()
        .and_then(|o| o.first())
        .and_then(|o| o["offset"]["position"].as_str())
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    assert!(committed < position, "committed position {committed}");
}

#[test]
fn a_hostile_transform_is_contained_like_a_hostile_connector() {
    let ws = Workspace::new();
    ws.add_hostile_plugin("hostile-transform.wasm");
    let input = ws.path("in.txt");
    append(&input, &(numbered(20).join("\n") + "\n"));
    let host = ws.start();
    wait_plugins(&host, &["file-source", "hostile-transform"]);
    // The transform runs under its connector's limits.
    for (behaviour, limit, value) in [
        ("loop", "limits.cpu.ms", "50"),
        ("memory", "limits.memory", "64MiB"),
        ("malformed", "limits.memory", "64MiB"),
    ] {
        let config = json!({
            "connector.class": "file-source", "file": input, "topic": behaviour,
            limit: value,
            "transforms": "bad",
            "transforms.bad.type": "hostile-transform",
            "transforms.bad.behaviour": behaviour,
        });
        create(&host, behaviour, config);
    }
    wait_for(Duration::from_secs(60), "the three FAILED", || {
        ["loop", "memory", "malformed"]
            .iter()
            .all(|name| task_state(&host, name).0 == "FAILED")
    });
    let trace = |name| task_state(&host, name).1;
    assert!(trace("loop").contains("transform bad"), "{}", trace("loop"));
    assert!(
        trace("loop").contains("cpu budget") || trace("loop").contains("did not return"),
        "{}",
        trace("loop")
    );
    assert!(
        trace("memory").contains("memory limit"),
        "{}",
        trace("memory")
    );
    assert!(
        trace("malformed").contains("malformed answer"),
        "{}",
        trace("malformed")
    );
    // The host still serves, and nothing reached the topics.
    assert_eq!(json_get(&host, "/connectors").status, 200);
    for topic in ["loop", "memory", "malformed"] {
        let topics = json_get(&host, &format!("/connectors/{topic}/topics")).json();
        assert_eq!(topics[topic]["topics"], json!([]), "{topic}");
    }
}

#[test]
fn transform_plugins_are_listed_only_with_connectors_only_false_and_validated_per_key() {
    let ws = workspace_with(&["mask-field"]);
    let host = ws.start();
    wait_plugins(&host, &["file-source", "mask-field"]);
    let listed = |query: &str| -> Vec<String> {
        json_get(&host, &format!("/connector-plugins{query}"))
            .json()
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["class"].as_str().map(str::to_string))
            .collect()
    };
    assert!(!listed("").contains(&"mask-field".to_string()));
    assert!(listed("?connectorsOnly=false").contains(&"mask-field".to_string()));
    // A missing key of a transform is reported under its full name.
    let answer = json_create(
        &host,
        "bad",
        json!({"connector.class": "file-source", "file": ws.path("in.txt"), "topic": "t",
               "transforms": "m", "transforms.m.type": "mask-field"}),
    );
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(
        answer.body.contains("transforms.m.fields"),
        "{}",
        answer.body
    );
    // A transform is no connector.
    let answer = json_create(&host, "t", json!({"connector.class": "mask-field"}));
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(answer.body.contains("is a transform"), "{}", answer.body);
}

#[test]
fn records_a_sink_reports_errant_go_to_the_dead_letter_queue_and_the_rest_is_committed() {
    let ws = Workspace::new();
    ws.add_hostile_plugin("errant-sink.wasm");
    let (input, dead) = (ws.path("in.txt"), ws.path("dead.txt"));
    let lines: Vec<String> = (0..200)
        .map(|i| {
            if i % 10 == 3 {
                format!("bad line {i}")
            } else {
                format!("line {i}")
            }
        })
        .collect();
    append(&input, &(lines.join("\n") + "\n"));
    let host = ws.start();
    wait_plugins(&host, &["file-source", "file-sink", "errant-sink"]);
    create(
        &host,
        "source",
        json!({"connector.class": "file-source", "file": input, "topic": "events"}),
    );
    create(
        &host,
        "errant",
        json!({
            "connector.class": "errant-sink", "topics": "events",
            "errors.tolerance": "all",
            "errors.deadletterqueue.topic.name": "sink-dlq",
            "errors.deadletterqueue.context.headers.enable": "true",
        }),
    );
    sink(&host, "dead", "sink-dlq", &dead);
    let bad: Vec<String> = lines
        .iter()
        .filter(|l| l.contains("bad"))
        .cloned()
        .collect();
    wait_for(
        Duration::from_secs(60),
        "the errant records in the DLQ",
        || read_lines(&dead).len() >= bad.len(),
    );
    assert_eq!(read_lines(&dead), bad);
    assert!(!files_containing(&ws.data_dir(), b"TASK_PUT").is_empty());
    wait_for(Duration::from_secs(30), "every offset committed", || {
        let offsets = json_get(&host, "/connectors/errant/offsets").json();
        offsets["offsets"][0]["offset"]["kafka_offset"] == json!(200)
    });
}
