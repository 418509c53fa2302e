//! mqtt-source messages per second: N messages of 100 B queued at a mosquitto broker for
//! the source's persistent session, then drained (1) by the wasm `mqtt-source` in a real
//! `wasm-connect` process into a topic, and on to a file through `file-sink` (timed from the
//! resume until the file holds every message), and (2) natively: the same connector code
//! compiled into this process, calling `poll` and `commit` in a loop with nothing stored.
//! Each with the broker's `max_inflight_messages` at mosquitto's default (20) and at 1000.
//!
//! Run: `cargo bench --bench network` (`MQTT_BENCH_MESSAGES`, default 50,000).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::harness::mosquitto::{mqtt_workspace, start_host, Mosquitto};
use crate::harness::{json_create, json_send};
use mqtt_source::MqttSourceTask;
use serde_json::json;
use wasm_connect_sdk::{BatchReader, BatchWriter, Host, LogLevel, Position, SourceTask};

/// Bytes of each message payload.
const PAYLOAD_BYTES: usize = 100;

pub fn run() {
    let messages = std::env::var("MQTT_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(50_000);
    println!("mqtt-source benchmark: {messages} queued QoS 1 messages of {PAYLOAD_BYTES} B");
    let payloads: Vec<String> = (0..messages)
        .map(|i| format!("{i:010}{}", "x".repeat(PAYLOAD_BYTES - 10)))
        .collect();
    for window in [20, 1000] {
        let wasm = wasm_rate(&payloads, window);
        let native = native_rate(&payloads, window);
        println!(
            "max_inflight_messages {window:>4}: wasm mqtt-source -> topic -> file {wasm:>9.0} msg/s, \
             native poll+commit {native:>9.0} msg/s, wasm/native {:.2}",
            wasm / native
        );
    }
}

/// A broker whose inflight window is `window`.
fn broker(window: usize) -> Mosquitto {
    Mosquitto::start_with(&format!("max_inflight_messages {window}"))
}

fn wasm_rate(payloads: &[String], window: usize) -> f64 {
    let broker = broker(window);
    let ws = mqtt_workspace();
    let out = ws.path("out.txt");
    let host = start_host(&ws);
    let source = json!({
        "connector.class": "mqtt-source",
        "mqtt.server.uri": broker.uri(),
        "mqtt.topics": "bench/#",
        "kafka.topic": "bench",
        "mqtt.max.inflight.messages": window.to_string(),
        "network.allow": broker.address(),
    });
    let sink = json!({
        "connector.class": "file-sink",
        "topics": "bench",
        "file": out.display().to_string(),
    });
    assert_eq!(json_create(&host, "in", source).status, 201);
    assert_eq!(json_create(&host, "out", sink).status, 201);
    broker.wait_subscribed("wasm-connect-in-0", "bench/#");
    // Paused, the task keeps its session: the broker queues what is published meanwhile.
    assert_eq!(
        json_send(&host, "PUT", "/connectors/in/pause", &json!({})).status,
        202
    );
    broker.publish_lines("bench/a", payloads);
    let expected = (payloads.len() * (PAYLOAD_BYTES + 1)) as u64;
    let started = Instant::now();
    assert_eq!(
        json_send(&host, "PUT", "/connectors/in/resume", &json!({})).status,
        202
    );
    let deadline = started + Duration::from_secs(600);
    while std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0) < expected {
        assert!(
            Instant::now() < deadline,
            "the pipeline did not finish in 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    payloads.len() as f64 / started.elapsed().as_secs_f64()
}

/// The task's host in this process: no committed positions.
struct NativeHost;

impl Host for NativeHost {
    fn log(&self, _level: LogLevel, message: &str) {
        println!("{message}");
    }
    fn committed_position(&self, _partition: &str) -> Option<String> {
        None
    }
    fn connector_name(&self) -> String {
        "native-bench".into()
    }
    fn task_id(&self) -> Option<u32> {
        Some(0)
    }
}

fn native_rate(payloads: &[String], window: usize) -> f64 {
    let broker = broker(window);
    let config = [
        ("mqtt.server.uri", broker.uri()),
        ("mqtt.topics", "bench/#".to_string()),
        ("kafka.topic", "bench".to_string()),
        ("mqtt.max.inflight.messages", window.to_string()),
    ]
    .into_iter()
    .collect();
    // `start` connects and subscribes: the session exists before anything is published.
    let mut task = MqttSourceTask::start(&config, &NativeHost).expect("native mqtt-source start");
    broker.publish_lines("bench/a", payloads);
    let started = Instant::now();
    let mut received = 0;
    let deadline = started + Duration::from_secs(600);
    while received < payloads.len() {
        assert!(
            Instant::now() < deadline,
            "the native source did not finish in 10 minutes"
        );
        let mut out = BatchWriter::new();
        task.poll(&mut out, 16_384, 4 << 20).expect("native poll");
        let (count, frames) = out.into_parts();
        let records = BatchReader::read_all(&frames, count).expect("native batch");
        let mut last = BTreeMap::new();
        for record in &records {
            last.insert(record.partition.to_string(), record.position.to_string());
        }
        received += records.len();
        let positions: Vec<Position> = last
            .into_iter()
            .map(|(partition, position)| Position {
                partition,
                position,
            })
            .collect();
        task.commit(&positions);
    }
    let rate = received as f64 / started.elapsed().as_secs_f64();
    task.stop();
    rate
}
