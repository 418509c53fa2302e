//! Metrics and health probes of a real `wasm-connect` process (issue 13): `GET /metrics`
//! parsed by Python's `prometheus_client` (`common::metrics`), counts after a real
//! file pipeline, a real hostile connector hitting its memory limit, the series of a deleted
//! connector, and `/livez`, `/readyz`, `/health` around a crash-looping connector.

mod common;

use std::time::Duration;

use common::metrics::{scrape, value, Sample};
use common::neighbourhood::{hostile_config, wait_failed_with};
use common::{call, json_create as create, json_get as get, read_lines, wait_for, Workspace};
use serde_json::{json, Value};

#[test]
fn a_file_pipeline_is_counted_and_a_deleted_connector_leaves_no_series() {
    let ws = Workspace::new();
    let host = ws.start();
    // Declared from start-up, before any connector exists.
    let answer = get(&host, "/metrics");
    for family in [
        "wasm_connect_connector_status",
        "wasm_connect_task_status",
        "wasm_connect_records_in_total",
        "wasm_connect_records_out_total",
        "wasm_connect_bytes_in_total",
        "wasm_connect_bytes_out_total",
        "wasm_connect_record_errors_total",
        "wasm_connect_batch_duration_seconds",
        "wasm_connect_sink_lag_records",
        "wasm_connect_last_record_timestamp_seconds",
        "wasm_connect_task_restarts_total",
        "wasm_connect_task_memory_bytes",
        "wasm_connect_task_memory_limit_bytes",
        "wasm_connect_task_cpu_seconds_total",
        "wasm_connect_limit_hits_total",
        "wasm_connect_plugin_info",
        "wasm_connect_plugins_broken",
        "wasm_connect_topic_log_bytes",
        "wasm_connect_rest_requests_total",
        "wasm_connect_build_info",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ] {
        assert!(
            answer.body.contains(&format!("# TYPE {family} ")),
            "{family} is not declared:\n{}",
            answer.body
        );
    }

    const LINES: usize = 2500;
    let input = ws.path("in.txt");
    let output = ws.path("out.txt");
    let text: String = (0..LINES).map(|i| format!("line {i}\n")).collect();
    std::fs::write(&input, text).expect("input");
    let source = create(
        &host,
        "src",
        json!({"connector.class": "file-source", "file": input, "topic": "lines"}),
    );
    assert_eq!(source.status, 201, "{}", source.body);
    let sink = create(
        &host,
        "dst",
        json!({"connector.class": "file-sink", "file": output, "topics": "lines"}),
    );
    assert_eq!(sink.status, 201, "{}", sink.body);
    wait_for(Duration::from_secs(60), "every line delivered", || {
        read_lines(&output).len() == LINES
    });
    let n = LINES as f64;
    let sink_labels = [("connector", "dst"), ("task", "0")];
    wait_for(
        Duration::from_secs(10),
        "the sink's count and commit",
        || {
            let samples = scrape(&host, None);
            value(&samples, "wasm_connect_records_out_total", &sink_labels) == Some(n)
                && value(
                    &samples,
                    "wasm_connect_sink_lag_records",
                    &[("connector", "dst")],
                ) == Some(0.0)
        },
    );
    let samples = scrape(&host, Some("application/openmetrics-text; version=1.0.0"));
    let src = [("connector", "src"), ("task", "0")];
    // OpenMetrics names a counter's sample `<family>_total` too.
    assert_eq!(
        value(&samples, "wasm_connect_records_out_total", &sink_labels),
        Some(n)
    );
    assert_eq!(
        value(&samples, "wasm_connect_records_in_total", &sink_labels),
        Some(n)
    );
    assert_eq!(
        value(&samples, "wasm_connect_records_in_total", &src),
        Some(n)
    );
    assert_eq!(
        value(&samples, "wasm_connect_records_out_total", &src),
        Some(n)
    );
    let bytes = value(&samples, "wasm_connect_bytes_out_total", &src).unwrap_or(0.0);
    assert!(bytes >= n * 6.0, "bytes out {bytes}");
    let running = [("connector", "dst"), ("task", "0"), ("state", "RUNNING")];
    assert_eq!(
        value(&samples, "wasm_connect_task_status", &running),
        Some(1.0)
    );
    let failed = [("connector", "dst"), ("task", "0"), ("state", "FAILED")];
    assert_eq!(
        value(&samples, "wasm_connect_task_status", &failed),
        Some(0.0)
    );
    let memory = value(&samples, "wasm_connect_task_memory_bytes", &src).unwrap_or(0.0);
    let limit = value(&samples, "wasm_connect_task_memory_limit_bytes", &src).unwrap_or(0.0);
    assert!(
        memory > 0.0 && memory < limit,
        "memory {memory}, limit {limit}"
    );
    let polls = value(
        &samples,
        "wasm_connect_batch_duration_seconds_count",
        &[("connector", "src"), ("op", "poll")],
    );
    assert!(polls.is_some_and(|p| p >= 1.0), "{polls:?}");
    assert!(
        value(
            &samples,
            "wasm_connect_plugin_info",
            &[("plugin", "file-sink")]
        ) == Some(1.0)
    );
    assert!(value(
        &samples,
        "wasm_connect_topic_log_bytes",
        &[("topic", "lines")]
    )
    .is_some_and(|b| b > 0.0));
    assert!(value(
        &samples,
        "wasm_connect_rest_requests_total",
        &[("api", "json"), ("route", "/connectors"), ("status", "201")]
    )
    .is_some_and(|c| c >= 2.0));

    let deleted = call(
        "DELETE",
        &format!("{}/connectors/dst", host.kafka),
        None,
        &[],
    );
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    let samples = scrape(&host, None);
    let left: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.labels.get("connector").and_then(Value::as_str) == Some("dst"))
        .collect();
    assert!(left.is_empty(), "series of the deleted connector: {left:?}");
    assert_eq!(
        value(&samples, "wasm_connect_records_out_total", &src),
        Some(n)
    );
}

#[test]
fn a_crash_looping_connector_is_failed_in_metrics_and_probes_but_the_worker_stays_healthy() {
    let ws = Workspace::new();
    ws.add_hostile_plugin("hostile-source.wasm");
    let host = common::Host::start_with(
        &ws.data_dir(),
        &ws.plugin_dir(),
        &["--restart-backoff-ms", "3000"],
    );
    for probe in ["/livez", "/readyz", "/health"] {
        let answer = get(&host, probe);
        assert_eq!(answer.status, 200, "{probe}: {}", answer.body);
    }
    assert_eq!(get(&host, "/health").json()["status"], "healthy");
    let ready = get(&host, "/readyz").json();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["failed"], json!([]));

    let bomb = create(
        &host,
        "bomb",
        hostile_config("memory-bomb", json!({"limits.memory": "64MiB"})),
    );
    assert_eq!(bomb.status, 201, "{}", bomb.body);
    // Waiting out its backoff, the task stays FAILED and says so.
    let trace = wait_failed_with(
        &host,
        "bomb",
        &[
            "memory limit 64 MiB exceeded",
            "restarting in 3 s (failure 1 of 5)",
        ],
        Duration::from_secs(30),
    );
    assert!(trace.contains("memory limit"), "{trace}");
    let samples = scrape(&host, None);
    let failed = [("connector", "bomb"), ("task", "0"), ("state", "FAILED")];
    assert_eq!(
        value(&samples, "wasm_connect_task_status", &failed),
        Some(1.0)
    );
    let hits = value(
        &samples,
        "wasm_connect_limit_hits_total",
        &[("connector", "bomb"), ("limit", "memory")],
    );
    assert!(hits.is_some_and(|h| h >= 1.0), "limit hits {hits:?}");

    // A failed connector is listed by /readyz and never makes the worker unhealthy.
    let ready = get(&host, "/readyz");
    assert_eq!(ready.status, 200, "{}", ready.body);
    let ready = ready.json();
    assert_eq!(ready["failed"][0]["name"], "bomb", "{ready}");
    assert!(ready["failed"][0]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("memory limit")));
    let health = get(&host, "/health");
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(get(&host, "/livez").status, 200);

    // After its backoff it is restarted, and the restart is counted.
    wait_for(Duration::from_secs(30), "a counted restart", || {
        let samples = scrape(&host, None);
        value(
            &samples,
            "wasm_connect_task_restarts_total",
            &[("connector", "bomb"), ("reason", "failure")],
        )
        .is_some_and(|r| r >= 1.0)
    });
}
