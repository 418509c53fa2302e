//! The RocketMQ-Connect REST API ("legacy" API) of a real `wasm-connect` process, checked over
//! HTTP against `docs/legacy-api.md`: every route, every answer, the create checks
//! in their order, bad plugin files, reloads and restarts.

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{call, encode, media_type, pids_with_arg, wait_for, Host, Workspace};
use serde_json::{json, Map, Value};

const ROCKETMQ_FILE_SOURCE: &str = "org.apache.rocketmq.connect.file.FileSourceConnector";
const ROCKETMQ_FILE_SINK: &str = "org.apache.rocketmq.connect.file.FileSinkConnector";
const KAFKA_FILE_SINK: &str = "org.apache.kafka.connect.file.FileStreamSinkConnector";
const SAME_CONFIG: &str = "Connector with same config already exist.";
const NO_CONFIGS: &str = "ConnectorConfigs:null\nTaskConfigs:null";
const EMPTY_CONFIG_INFO: &str = "ConnectorConfigs:{}\nTaskConfigs:{}";
const NOT_AN_OBJECT: &str = "failed: config is not a JSON object:";

// ---------------------------------------------------------------------------------------------
// Helpers

/// GET `path`; asserts HTTP 200 with a `text/plain` content type and returns the body.
fn plain(host: &Host, path: &str) -> String {
    let (status, body) = typed(host, path, 200);
    assert_eq!(status, 200);
    body
}

/// GET `path`; asserts the status and a `text/plain` content type; returns status and body.
fn typed(host: &Host, path: &str, expected_status: u16) -> (u16, String) {
    let answer = call("GET", &format!("{}{path}", host.base), None, &[]);
    let (status, body) = (answer.status, answer.body);
    assert_eq!(
        status, expected_status,
        "GET {path} answered {status}: {body}"
    );
    let content_type = Some(answer.content_type)
        .filter(|content_type| !content_type.is_empty())
        .unwrap_or_else(|| panic!("GET {path} answered without a Content-Type"));
    assert_eq!(
        media_type(&content_type),
        "text/plain",
        "GET {path}: Content-Type {content_type}"
    );
    (status, body)
}

/// `GET /connectors/{name}?config=<json>` (URL-encoded); asserts 200 text/plain; the body.
fn create(host: &Host, name: &str, config: &str) -> String {
    plain(
        host,
        &format!("/connectors/{name}?config={}", encode(config)),
    )
}

fn status(host: &Host, name: &str) -> String {
    plain(host, &format!("/connectors/{name}/status"))
}

fn path_text(path: &Path) -> String {
    path.to_str().expect("UTF-8 temp path").to_string()
}

/// A file source config reading `file` (created empty if missing) into `topic`.
fn source_config(file: &Path, topic: &str) -> String {
    if !file.exists() {
        std::fs::write(file, "").expect("source file");
    }
    json!({ "connector-class": ROCKETMQ_FILE_SOURCE, "topic": topic, "filename": path_text(file) })
        .to_string()
}

/// A file sink config writing `topics` into `file`.
fn sink_config(file: &Path, topics: &str) -> String {
    json!({ "connector-class": ROCKETMQ_FILE_SINK, "topicNames": topics, "filename": path_text(file) }).to_string()
}

fn now_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis()
}

/// Splits `ConnectorConfigs:<a>\nTaskConfigs:<b>` and parses both parts as JSON.
fn split_configs(body: &str) -> (Value, Value) {
    let rest = body
        .strip_prefix("ConnectorConfigs:")
        .unwrap_or_else(|| panic!("no ConnectorConfigs: prefix in {body:?}"));
    let (connectors, tasks) = rest
        .split_once("\nTaskConfigs:")
        .unwrap_or_else(|| panic!("no \\nTaskConfigs: line in {body:?}"));
    assert!(
        !tasks.contains('\n') && !connectors.contains('\n'),
        "extra lines in {body:?}"
    );
    let parse = |part: &str| {
        serde_json::from_str::<Value>(part).unwrap_or_else(|e| panic!("{part:?} is not JSON: {e}"))
    };
    (parse(connectors), parse(tasks))
}

/// Checks `{"properties":{…}}` with every value a string; returns the properties.
fn properties(config: &Value) -> BTreeMap<String, String> {
    let object = config
        .as_object()
        .unwrap_or_else(|| panic!("config {config} is not an object"));
    assert_eq!(
        object.keys().collect::<Vec<_>>(),
        ["properties"],
        "config {config} has other keys than properties"
    );
    let props = object["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("properties of {config} is not an object"));
    props
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str()
                    .unwrap_or_else(|| panic!("value of {k} in {config} is not a string"))
                    .to_string(),
            )
        })
        .collect()
}

/// The `update-timestamp` of `props`, checked to be milliseconds within `[from, to]`.
fn timestamp(props: &BTreeMap<String, String>, from: u128, to: u128) -> u128 {
    let text = props
        .get("update-timestamp")
        .unwrap_or_else(|| panic!("no update-timestamp in {props:?}"));
    let millis: u128 = text
        .parse()
        .unwrap_or_else(|_| panic!("update-timestamp {text:?} is not a number"));
    assert!(
        (from..=to).contains(&millis),
        "update-timestamp {millis} is not between {from} and {to}"
    );
    millis
}

/// The stored connector config of `name` (its `/config` answer), without checks.
fn connector_config(host: &Host, name: &str) -> (Value, Value) {
    split_configs(&plain(host, &format!("/connectors/{name}/config")))
}

fn config_info(host: &Host) -> (Map<String, Value>, Map<String, Value>) {
    let (connectors, tasks) = split_configs(&plain(host, "/getConfigInfo"));
    let connectors = connectors
        .as_object()
        .unwrap_or_else(|| panic!("ConnectorConfigs {connectors} is not an object"))
        .clone();
    let tasks = tasks
        .as_object()
        .unwrap_or_else(|| panic!("TaskConfigs {tasks} is not an object"))
        .clone();
    (connectors, tasks)
}

/// Asserts the host stores and runs nothing, for any of `names`.
fn assert_nothing_stored(host: &Host, names: &[&str]) {
    assert_eq!(plain(host, "/getConfigInfo"), EMPTY_CONFIG_INFO);
    assert_eq!(
        plain(host, "/getAllocatedInfo"),
        "working connectors:\nworking tasks:\n"
    );
    for name in names {
        assert_eq!(
            plain(host, &format!("/connectors/{name}/config")),
            NO_CONFIGS,
            "{name} config"
        );
        assert_eq!(status(host, name), "not running", "{name} status");
    }
}

/// The log line `broken plugin <file>: <reason>`; returns the reason.
fn broken_reason(log: &str, file: &Path) -> Option<String> {
    let marker = format!("broken plugin {}: ", file.display());
    log.lines().find_map(|line| {
        line.split_once(&marker)
            .map(|(_, reason)| reason.to_string())
    })
}

/// Bytes that are no wasm at all (deterministic noise).
fn garbage(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x2545_f491;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Create, same config, update

#[test]
fn create_answers_success_then_same_config_then_update_changes_stored_config() {
    let ws = Workspace::new();
    let host = ws.start();
    let input = ws.path("in.txt");
    let config = source_config(&input, "topicA");

    assert_eq!(create(&host, "src", &config), "success");
    assert_eq!(create(&host, "src", &config), SAME_CONFIG);
    // The same keys and values in another order, or with another update-timestamp, are the same config.
    let reordered = json!({ "filename": path_text(&input), "topic": "topicA", "connector-class": ROCKETMQ_FILE_SOURCE });
    assert_eq!(create(&host, "src", &reordered.to_string()), SAME_CONFIG);
    let mut stamped = reordered.clone();
    stamped["update-timestamp"] = json!("1");
    assert_eq!(create(&host, "src", &stamped.to_string()), SAME_CONFIG);
    host.wait_running("src");
    let (before, _) = connector_config(&host, "src");
    let first_stamp = timestamp(&properties(&before), 0, now_millis());

    let updated = source_config(&input, "topicB");
    assert_eq!(create(&host, "src", &updated), "success");
    let (after, tasks) = connector_config(&host, "src");
    let props = properties(&after);
    assert_eq!(
        props["topic"], "topicB",
        "the update is not stored: {after}"
    );
    assert!(timestamp(&props, first_stamp, now_millis()) >= first_stamp);
    assert_eq!(
        properties(&tasks[0])["topic"],
        "topicB",
        "the task config is not updated: {tasks}"
    );
    host.wait_running("src");
    assert_eq!(create(&host, "src", &updated), SAME_CONFIG);
    // An added key is a change too.
    let mut with_key: Value = serde_json::from_str(&updated).unwrap();
    with_key["max-task"] = json!(1);
    assert_eq!(create(&host, "src", &with_key.to_string()), "success");
    assert_eq!(
        properties(&connector_config(&host, "src").0)["max-task"],
        "1"
    );
}

// ---------------------------------------------------------------------------------------------
// Status

#[test]
fn status_is_running_for_a_started_connector_and_not_running_otherwise() {
    let ws = Workspace::new();
    let host = ws.start();
    assert_eq!(status(&host, "nobody"), "not running");
    assert_eq!(
        create(&host, "src", &source_config(&ws.path("in.txt"), "t1")),
        "success"
    );
    host.wait_running("src");
    assert_eq!(status(&host, "src"), "running");
    assert_eq!(status(&host, "other"), "not running");
    assert_eq!(plain(&host, "/connectors/src/stop"), "success");
    assert_eq!(status(&host, "src"), "not running");
}

// ---------------------------------------------------------------------------------------------
// Config

#[test]
fn connector_config_has_the_exact_format_with_string_values_and_runtime_keys() {
    let ws = Workspace::new();
    let host = ws.start();
    let input = ws.path("in.txt");
    std::fs::write(&input, "").unwrap();
    let config = json!({
        "connector-class": ROCKETMQ_FILE_SOURCE,
        "topic": "fileTopic",
        "filename": path_text(&input),
        "max-task": 1,
        "source-record-converter": "org.apache.rocketmq.connect.runtime.converter.JsonConverter",
        "flag": true,
        "nested": { "a": [1, "b"] },
    });
    let from = now_millis();
    assert_eq!(create(&host, "cfg", &config.to_string()), "success");
    let to = now_millis();

    let body = plain(&host, "/connectors/cfg/config");
    assert!(
        body.starts_with("ConnectorConfigs:{\"properties\":{"),
        "{body:?}"
    );
    assert!(
        body.contains("}\nTaskConfigs:[{\"properties\":{"),
        "{body:?}"
    );
    assert!(body.ends_with("}}]"), "{body:?}");
    let (connector, tasks) = split_configs(&body);

    let props = properties(&connector);
    let mut expected: BTreeMap<String, String> = [
        ("connector-class", ROCKETMQ_FILE_SOURCE),
        ("topic", "fileTopic"),
        ("filename", input.to_str().unwrap()),
        ("max-task", "1"),
        (
            "source-record-converter",
            "org.apache.rocketmq.connect.runtime.converter.JsonConverter",
        ),
        ("flag", "true"),
        ("nested", r#"{"a":[1,"b"]}"#),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let stamp = timestamp(&props, from, to);
    expected.insert("update-timestamp".into(), stamp.to_string());
    assert_eq!(props, expected);

    let tasks = tasks
        .as_array()
        .unwrap_or_else(|| panic!("TaskConfigs {tasks} is not an array"));
    assert_eq!(tasks.len(), 1, "max-task 1 gives one task: {tasks:?}");
    let task = properties(&tasks[0]);
    assert_eq!(
        task.get("task-class").map(String::as_str),
        Some("file-source"),
        "task-class of {task:?}"
    );
    timestamp(&task, from, to);
    // Exactly the original's task config: the connector's keys plus task-class.
    let mut task_keys: Vec<&String> = task.keys().collect();
    let mut expected_keys: Vec<&String> = expected.keys().collect();
    let task_class = "task-class".to_string();
    expected_keys.push(&task_class);
    task_keys.sort();
    expected_keys.sort();
    assert_eq!(task_keys, expected_keys, "task config keys");

    assert_eq!(plain(&host, "/connectors/unknown/config"), NO_CONFIGS);
}

// ---------------------------------------------------------------------------------------------
// Stop, stopAll

#[test]
fn stop_deletes_the_connector_and_answers_success_for_unknown_names() {
    let ws = Workspace::new();
    let host = ws.start();
    assert_eq!(plain(&host, "/connectors/never-created/stop"), "success");
    assert_eq!(
        create(&host, "keep", &source_config(&ws.path("keep.txt"), "t1")),
        "success"
    );
    assert_eq!(
        create(&host, "gone", &sink_config(&ws.path("out.txt"), "t1")),
        "success"
    );
    host.wait_running("gone");

    assert_eq!(plain(&host, "/connectors/gone/stop"), "success");
    let (connectors, tasks) = config_info(&host);
    assert_eq!(connectors.keys().collect::<Vec<_>>(), ["keep"]);
    assert_eq!(tasks.keys().collect::<Vec<_>>(), ["keep"]);
    assert_eq!(status(&host, "gone"), "not running");
    assert_eq!(plain(&host, "/connectors/gone/config"), NO_CONFIGS);
    assert_eq!(plain(&host, "/connectors/gone/stop"), "success");

    // Deleted for good: a restart does not bring it back.
    assert!(host.terminate().success());
    let host = ws.start();
    let (connectors, _) = config_info(&host);
    assert_eq!(connectors.keys().collect::<Vec<_>>(), ["keep"]);
    assert_eq!(plain(&host, "/connectors/gone/config"), NO_CONFIGS);
}

#[test]
fn stop_all_answers_success_with_none_and_with_several_and_is_no_connector_name() {
    let ws = Workspace::new();
    let host = ws.start();
    assert_eq!(plain(&host, "/connectors/stopAll"), "success");
    assert_nothing_stored(&host, &["stopAll"]);

    for (name, topic) in [("s1", "t1"), ("s2", "t2"), ("s3", "t3")] {
        assert_eq!(
            create(
                &host,
                name,
                &source_config(&ws.path(&format!("{name}.txt")), topic)
            ),
            "success"
        );
    }
    assert_eq!(
        create(&host, "k1", &sink_config(&ws.path("out.txt"), "t1,t2")),
        "success"
    );
    assert_eq!(config_info(&host).0.len(), 4);
    host.wait_running("s1");
    assert_eq!(plain(&host, "/connectors/stopAll"), "success");
    assert_nothing_stored(&host, &["s1", "s2", "s3", "k1", "stopAll"]);

    // `/connectors/stopAll` is matched before `/connectors/{name}`: with a config it still stops
    // everything and creates no connector named stopAll.
    assert_eq!(
        create(&host, "s1", &source_config(&ws.path("s1.txt"), "t1")),
        "success"
    );
    let config = source_config(&ws.path("stopall.txt"), "t9");
    assert_eq!(create(&host, "stopAll", &config), "success");
    assert_nothing_stored(&host, &["s1", "stopAll"]);

    // And nothing comes back after a restart.
    assert!(host.terminate().success());
    let host = ws.start();
    assert_nothing_stored(&host, &["s1", "s2", "s3", "k1", "stopAll"]);
}

// ---------------------------------------------------------------------------------------------
// Plugin reload

#[test]
fn plugin_reload_makes_a_plugin_copied_in_while_running_usable() {
    let ws = Workspace::new();
    std::fs::remove_file(ws.plugin_dir().join("file-sink.wasm")).unwrap();
    let host = ws.start();
    let sink = sink_config(&ws.path("out.txt"), "t1");
    assert_eq!(
        create(&host, "sink", &sink),
        format!("failed: no connector plugin named '{ROCKETMQ_FILE_SINK}'; available: file-source")
    );
    assert_nothing_stored(&host, &["sink"]);

    std::fs::copy(
        common::bundled_plugins().join("file-sink.wasm"),
        ws.plugin_dir().join("file-sink.wasm"),
    )
    .unwrap();
    // The reload answers once the new file is loaded (the file watcher may have been faster,
    // so whether it was usable a moment before is not asserted).
    assert_eq!(plain(&host, "/plugin/reload"), "success");
    assert_eq!(create(&host, "sink", &sink), "success");
    host.wait_running("sink");
    let loaded = "loaded plugin file-sink ";
    wait_for(Duration::from_secs(10), "the reload's log line", || {
        host.log().contains(loaded)
    });
    // The plugin that was there already still works.
    assert_eq!(
        create(&host, "src", &source_config(&ws.path("in.txt"), "t1")),
        "success"
    );
    host.wait_running("src");
}

#[test]
fn same_config_is_answered_before_the_plugin_lookup() {
    let ws = Workspace::new();
    let host = ws.start();
    let config = source_config(&ws.path("in.txt"), "t1");
    assert_eq!(create(&host, "src", &config), "success");
    host.wait_running("src");
    // Remove the plugin: the stored connector's identical config is still "the same config"
    // (check 3) rather than an unknown plugin (check 5); a new connector cannot use it.
    std::fs::remove_file(ws.plugin_dir().join("file-source.wasm")).unwrap();
    assert_eq!(plain(&host, "/plugin/reload"), "success");
    assert_eq!(create(&host, "src", &config), SAME_CONFIG);
    assert_eq!(
        create(&host, "src2", &config),
        format!("failed: no connector plugin named '{ROCKETMQ_FILE_SOURCE}'; available: file-sink")
    );
    assert_eq!(plain(&host, "/connectors/src2/config"), NO_CONFIGS);
}

// ---------------------------------------------------------------------------------------------
// getConfigInfo, getClusterInfo, getAllocatedInfo

#[test]
fn config_info_lists_every_connector_and_its_tasks() {
    let ws = Workspace::new();
    let host = ws.start();
    assert_eq!(plain(&host, "/getConfigInfo"), EMPTY_CONFIG_INFO);
    assert_eq!(
        create(&host, "alpha", &source_config(&ws.path("in.txt"), "t1")),
        "success"
    );
    assert_eq!(
        create(&host, "beta", &sink_config(&ws.path("out.txt"), "t1")),
        "success"
    );

    let body = plain(&host, "/getConfigInfo");
    assert!(body.starts_with("ConnectorConfigs:{\""), "{body:?}");
    assert!(body.contains("}}\nTaskConfigs:{\""), "{body:?}");
    let (connectors, tasks) = config_info(&host);
    assert_eq!(connectors.keys().collect::<Vec<_>>(), ["alpha", "beta"]);
    assert_eq!(tasks.keys().collect::<Vec<_>>(), ["alpha", "beta"]);
    for name in ["alpha", "beta"] {
        let (connector, task_list) = connector_config(&host, name);
        assert_eq!(connectors[name], connector, "{name}");
        assert_eq!(tasks[name], task_list, "{name}");
        properties(&connectors[name]);
        let task_list = tasks[name]
            .as_array()
            .unwrap_or_else(|| panic!("tasks of {name} are not an array"));
        assert!(!task_list.is_empty());
        for task in task_list {
            assert!(properties(task).contains_key("task-class"), "{task}");
        }
    }
    assert_eq!(properties(&connectors["alpha"])["topic"], "t1");
    assert_eq!(properties(&connectors["beta"])["topicNames"], "t1");
}

#[test]
fn cluster_info_is_a_json_array_with_this_worker_as_ip_at_pid() {
    let ws = Workspace::new();
    let host = ws.start();
    let body = plain(&host, "/getClusterInfo");
    let workers: Vec<String> = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{body:?} is no array of strings: {e}"));
    assert_eq!(workers.len(), 1, "{body}");
    let (ip, pid) = workers[0]
        .split_once('@')
        .unwrap_or_else(|| panic!("{:?} is not ip@pid", workers[0]));
    assert!(
        ip.parse::<Ipv4Addr>().is_ok(),
        "{ip:?} is not a dotted IPv4 address"
    );
    assert!(
        !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()),
        "{pid:?} is not a process id"
    );
    let pid: u32 = pid.parse().unwrap();
    if cfg!(target_os = "linux") {
        assert_eq!(
            pids_with_arg(&ws.data_dir()),
            [pid],
            "the pid is not the host process's"
        );
    }
}

#[test]
fn allocated_info_lists_working_connectors_then_working_tasks() {
    let ws = Workspace::new();
    let host = ws.start();
    assert_eq!(
        plain(&host, "/getAllocatedInfo"),
        "working connectors:\nworking tasks:\n"
    );
    assert_eq!(
        create(&host, "alpha", &source_config(&ws.path("in.txt"), "t1")),
        "success"
    );
    assert_eq!(
        create(&host, "beta", &sink_config(&ws.path("out.txt"), "t1")),
        "success"
    );
    host.wait_running("alpha");
    host.wait_running("beta");

    let body = plain(&host, "/getAllocatedInfo");
    let lines: Vec<&str> = body.split_terminator('\n').collect();
    assert!(body.ends_with('\n'), "{body:?}");
    assert_eq!(lines.first(), Some(&"working connectors:"), "{body:?}");
    let tasks_at = lines
        .iter()
        .position(|l| *l == "working tasks:")
        .unwrap_or_else(|| panic!("no working tasks: in {body:?}"));
    let pairs = |part: &[&str]| -> Vec<(String, Value)> {
        assert_eq!(
            part.len() % 2,
            0,
            "not connectorName/Configs pairs: {part:?}"
        );
        part.chunks(2)
            .map(|pair| {
                let name = pair[0]
                    .strip_prefix("connectorName:")
                    .unwrap_or_else(|| panic!("{:?}", pair[0]));
                let json = pair[1]
                    .strip_prefix("Configs:")
                    .unwrap_or_else(|| panic!("{:?}", pair[1]));
                (
                    name.to_string(),
                    serde_json::from_str(json).unwrap_or_else(|e| panic!("{json:?}: {e}")),
                )
            })
            .collect()
    };
    let connectors: BTreeMap<String, Value> = pairs(&lines[1..tasks_at]).into_iter().collect();
    let tasks = pairs(&lines[tasks_at + 1..]);
    assert_eq!(connectors.keys().collect::<Vec<_>>(), ["alpha", "beta"]);
    for name in ["alpha", "beta"] {
        let (connector, task_list) = connector_config(&host, name);
        assert_eq!(connectors[name], connector, "{name}");
        let mine: Vec<Value> = tasks
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, c)| c.clone())
            .collect();
        assert_eq!(Value::Array(mine), task_list, "tasks of {name}");
    }
}

// ---------------------------------------------------------------------------------------------
// Create errors

#[test]
fn create_errors_answer_in_reference_order_and_store_nothing() {
    let ws = Workspace::new();
    let host = ws.start();
    let input = ws.path("in.txt");
    std::fs::write(&input, "line\n").unwrap();
    let file = path_text(&input);
    let out = path_text(&ws.path("out.txt"));

    // 1. No `config` query parameter.
    assert_eq!(
        plain(&host, "/connectors/e1"),
        "failed! query param 'config' is required "
    );
    assert_eq!(
        plain(&host, "/connectors/e1?conf=%7B%7D"),
        "failed! query param 'config' is required "
    );

    // 2. Not a JSON object: HTTP 400, also when everything else is missing too.
    for raw in [
        "{not json",
        r#"{"connector-class":"#,
        "[1,2]",
        r#""a string""#,
        "42",
        "null",
        "",
    ] {
        let (_, body) = typed(
            &host,
            &format!("/connectors/e2?config={}", encode(raw)),
            400,
        );
        assert!(
            body.starts_with(NOT_AN_OBJECT),
            "config {raw:?} answered {body:?}"
        );
        assert!(
            body.len() > NOT_AN_OBJECT.len() + 1,
            "config {raw:?}: no parser message in {body:?}"
        );
    }

    // 4. No connector-class (before the connector's own checks).
    assert_eq!(
        create(&host, "e4", "{}"),
        "Request config key: connector-class"
    );
    assert_eq!(
        create(
            &host,
            "e4",
            &json!({ "topic": "t", "filename": file }).to_string()
        ),
        "Request config key: connector-class"
    );

    // 5. No plugin for the class (before the connector's own checks).
    assert_eq!(
        create(
            &host,
            "e5",
            &json!({ "connector-class": "x", "topic": "t" }).to_string()
        ),
        "failed: no connector plugin named 'x'; available: file-sink, file-source"
    );
    assert_eq!(
        create(
            &host,
            "e5",
            &json!({ "connector.class": "com.example.Nope" }).to_string()
        ),
        "failed: no connector plugin named 'com.example.Nope'; available: file-sink, file-source"
    );

    // 6. The connector's own validation.
    let no_filename = json!({ "connector-class": ROCKETMQ_FILE_SOURCE, "topic": "t" });
    assert_eq!(
        create(&host, "e6", &no_filename.to_string()),
        "Request config key: filename"
    );
    let no_topics = json!({ "connector-class": ROCKETMQ_FILE_SINK, "filename": out });
    assert_eq!(
        create(&host, "e6", &no_topics.to_string()),
        "Request config key: topicNames"
    );

    // Anything else: `failed: <reason>`, e.g. a topic name that cannot be a topic.
    let bad_topic =
        json!({ "connector-class": ROCKETMQ_FILE_SOURCE, "topic": "a/b", "filename": file });
    let answer = create(&host, "e7", &bad_topic.to_string());
    assert!(
        answer.starts_with("failed: invalid topic name"),
        "{answer:?}"
    );
    let bad_sink_topic =
        json!({ "connector-class": ROCKETMQ_FILE_SINK, "topicNames": "ok,../x", "filename": out });
    let answer = create(&host, "e7", &bad_sink_topic.to_string());
    assert!(
        answer.starts_with("failed: invalid topic name"),
        "{answer:?}"
    );

    let names = ["e1", "e2", "e4", "e5", "e6", "e7"];
    assert_nothing_stored(&host, &names);
    assert!(host.terminate().success());
    let host = ws.start();
    assert_nothing_stored(&host, &names);
    assert!(
        !host.log().contains("restarting stored connector"),
        "{}",
        host.log()
    );
}

#[test]
fn failed_update_keeps_the_stored_config() {
    let ws = Workspace::new();
    let host = ws.start();
    let input = ws.path("in.txt");
    assert_eq!(
        create(&host, "src", &source_config(&input, "t1")),
        "success"
    );
    host.wait_running("src");
    let before = plain(&host, "/connectors/src/config");
    let no_filename = json!({ "connector-class": ROCKETMQ_FILE_SOURCE, "topic": "t2" });
    assert_eq!(
        create(&host, "src", &no_filename.to_string()),
        "Request config key: filename"
    );
    let bad_topic = json!({ "connector-class": ROCKETMQ_FILE_SOURCE, "topic": "a/b", "filename": path_text(&input) });
    assert!(create(&host, "src", &bad_topic.to_string()).starts_with("failed: invalid topic name"));
    assert_eq!(plain(&host, "/connectors/src/config"), before);
    assert_eq!(status(&host, "src"), "running");
    assert!(host.terminate().success());
    let host = ws.start();
    assert_eq!(plain(&host, "/connectors/src/config"), before);
}

// ---------------------------------------------------------------------------------------------
// Configs users of the original send

#[test]
fn seed_example_config_works_verbatim() {
    let ws = Workspace::new();
    let host = ws.start();
    let path = r#"/connectors/connector-example?config={"connector-class":"org.apache.rocketmq.connect.file.FileSourceConnector","topic":"fileTopic","filename":"/opt/source-file/source-file.txt"}"#;
    let (_, value) = path.split_once("?config=").unwrap();
    assert_eq!(
        plain(
            &host,
            &format!("/connectors/connector-example?config={}", encode(value))
        ),
        "success"
    );
    let props = properties(&connector_config(&host, "connector-example").0);
    assert_eq!(props["connector-class"], ROCKETMQ_FILE_SOURCE);
    assert_eq!(props["topic"], "fileTopic");
    assert_eq!(props["filename"], "/opt/source-file/source-file.txt");
    assert_eq!(
        plain(
            &host,
            &format!("/connectors/connector-example?config={}", encode(value))
        ),
        SAME_CONFIG
    );
}

#[test]
fn kafka_style_sink_config_is_accepted() {
    let ws = Workspace::new();
    let host = ws.start();
    let config = json!({ "connector.class": KAFKA_FILE_SINK, "topics": "fileTopic", "file": path_text(&ws.path("out.txt")) });
    assert_eq!(create(&host, "kafka-sink", &config.to_string()), "success");
    host.wait_running("kafka-sink");
    let (connector, tasks) = connector_config(&host, "kafka-sink");
    assert_eq!(properties(&connector)["connector.class"], KAFKA_FILE_SINK);
    assert_eq!(properties(&tasks[0])["task-class"], "file-sink");
}

// ---------------------------------------------------------------------------------------------
// Bad plugin files

#[test]
fn bad_plugin_files_are_reported_and_do_not_stop_the_host() {
    let ws = Workspace::new();
    let dir = ws.plugin_dir();
    std::fs::write(dir.join("garbage.wasm"), garbage(4096)).unwrap();
    std::fs::write(dir.join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(dir.join("empty-component.wasm"), b"\0asm\x0d\0\x01\0").unwrap();
    let host = ws.start();

    assert_eq!(
        create(&host, "src", &source_config(&ws.path("in.txt"), "t1")),
        "success"
    );
    assert_eq!(
        create(&host, "sink", &sink_config(&ws.path("out.txt"), "t1")),
        "success"
    );
    host.wait_running("src");
    host.wait_running("sink");
    // Broken files provide nothing: the list of plugins is the bundled ones.
    assert_eq!(
        create(&host, "x", r#"{"connector-class":"core"}"#),
        "failed: no connector plugin named 'core'; available: file-sink, file-source"
    );

    let garbage_file = dir.join("garbage.wasm");
    let core_file = dir.join("core.wasm");
    let component_file = dir.join("empty-component.wasm");
    wait_for(
        Duration::from_secs(10),
        "the broken-plugin log lines",
        || {
            let log = host.log();
            [&garbage_file, &core_file, &component_file]
                .iter()
                .all(|f| broken_reason(&log, f).is_some())
        },
    );
    let log = host.log();
    let garbage_reason = broken_reason(&log, &garbage_file).unwrap();
    assert!(
        !garbage_reason.trim().is_empty(),
        "no reason for garbage.wasm: {log}"
    );
    let core_reason = broken_reason(&log, &core_file).unwrap();
    assert!(
        core_reason.contains("core wasm module"),
        "core.wasm: {core_reason}"
    );
    let component_reason = broken_reason(&log, &component_file).unwrap();
    assert!(
        component_reason.contains("neither the source-connector nor the sink-connector"),
        "empty-component.wasm: {component_reason}"
    );
    // A reload of the unchanged files still answers success and logs nothing new (issue 18,
    // finding 15: only changes are logged).
    assert_eq!(plain(&host, "/plugin/reload"), "success");
    assert_eq!(host.log().matches("broken plugin").count(), 3);
    assert_eq!(status(&host, "src"), "running");
}

/// The reference: "loading is logged, one line per plugin". Every line the host logs is a
/// record of its own (tracing's `<timestamp> <LEVEL> …`), so a reason never spills onto
/// further lines, and the start's scan names each plugin file on exactly one line (a reload of
/// unchanged files names none).
#[test]
fn plugin_scan_logs_one_line_per_plugin_file() {
    let ws = Workspace::new();
    let dir = ws.plugin_dir();
    std::fs::write(dir.join("garbage.wasm"), garbage(4096)).unwrap();
    std::fs::write(dir.join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(dir.join("empty-component.wasm"), b"\0asm\x0d\0\x01\0").unwrap();
    let host = ws.start();
    assert_eq!(plain(&host, "/plugin/reload"), "success");
    let files = [
        "core.wasm",
        "empty-component.wasm",
        "file-sink.wasm",
        "file-source.wasm",
        "garbage.wasm",
    ];
    let naming = |log: &str, file: &str| {
        let path = dir.join(file).display().to_string();
        log.lines().filter(|line| line.contains(&path)).count()
    };
    wait_for(Duration::from_secs(10), "the start's log lines", || {
        let log = host.log();
        files.iter().all(|file| naming(&log, file) >= 1)
    });
    let log = host.log();
    let is_record = |line: &str| {
        line.len() > 5
            && line.as_bytes()[..4].iter().all(u8::is_ascii_digit)
            && line.as_bytes()[4] == b'-'
    };
    let continuations: Vec<&str> = log.lines().filter(|line| !is_record(line)).collect();
    assert!(
        continuations.is_empty(),
        "log records span several lines; continuation lines: {continuations:?}"
    );
    for file in files {
        assert_eq!(
            naming(&log, file),
            1,
            "lines naming {file} over a start and a reload"
        );
    }
}

#[test]
fn reload_of_a_broken_replacement_keeps_the_working_version() {
    let ws = Workspace::new();
    let host = ws.start();
    assert_eq!(
        create(&host, "before", &source_config(&ws.path("a.txt"), "t1")),
        "success"
    );
    host.wait_running("before");

    let plugin = ws.plugin_dir().join("file-source.wasm");
    std::fs::write(&plugin, garbage(8192)).unwrap();
    assert_eq!(plain(&host, "/plugin/reload"), "success");
    wait_for(
        Duration::from_secs(10),
        "the broken replacement's log lines",
        || {
            let log = host.log();
            broken_reason(&log, &plugin).is_some()
                && log.contains("keeping the working version of file-source")
        },
    );
    assert_eq!(
        create(&host, "after", &source_config(&ws.path("b.txt"), "t2")),
        "success"
    );
    host.wait_running("after");
    assert_eq!(status(&host, "before"), "running");
    // A second reload still keeps it.
    assert_eq!(plain(&host, "/plugin/reload"), "success");
    assert_eq!(
        create(&host, "again", &source_config(&ws.path("c.txt"), "t3")),
        "success"
    );
    host.wait_running("again");
}

// ---------------------------------------------------------------------------------------------
// Restart

#[test]
fn restart_keeps_connectors_and_runs_them_again() {
    let ws = Workspace::new();
    let host = ws.start();
    assert_eq!(
        create(&host, "src", &source_config(&ws.path("in.txt"), "t1")),
        "success"
    );
    assert_eq!(
        create(&host, "sink", &sink_config(&ws.path("out.txt"), "t1")),
        "success"
    );
    host.wait_running("src");
    host.wait_running("sink");
    let before = plain(&host, "/getConfigInfo");
    let src_config = plain(&host, "/connectors/src/config");

    let exit = host.terminate();
    assert!(exit.success(), "SIGTERM exit: {exit:?}");
    let host = ws.start();
    assert_eq!(plain(&host, "/getConfigInfo"), before);
    assert_eq!(plain(&host, "/connectors/src/config"), src_config);
    host.wait_running("src");
    host.wait_running("sink");
    let (connectors, _) = config_info(&host);
    assert_eq!(connectors.keys().collect::<Vec<_>>(), ["sink", "src"]);
    // The restored connector is the stored one: the same config is still the same.
    let config = source_config(&ws.path("in.txt"), "t1");
    assert_eq!(create(&host, "src", &config), SAME_CONFIG);
}
