//! The MQTT connectors against real mosquitto brokers, through a real `wasm-connect`
//! process: `mosquitto_pub` → mqtt-source → topic → mqtt-sink → `mosquitto_sub` exactly;
//! a `kill -9` of the host mid-stream loses no message (duplicates are counted and
//! reported); a connector whose `network.allow` does not list the broker fails with
//! `not in network.allow` and the broker sees no connection; and the connector code itself
//! acknowledges a message only in `commit`.
//! Needs `mosquitto` and `mosquitto-clients` (the "MQTT connectors" block of `.ci/run`).

mod common;

use std::collections::BTreeSet;
use std::io::Read;
use std::time::Duration;

use common::mosquitto::{mqtt_workspace as workspace, start_host, Mosquitto};
use common::neighbourhood::wait_failed_with;
use common::{free_port, json_create, read_lines, serial, wait_for};
use serde_json::json;

/// `count` message payloads tagged with `tag`.
fn payloads(tag: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{tag}-{i:06} héllo")).collect()
}

#[test]
fn messages_cross_mqtt_source_topic_and_mqtt_sink_exactly() {
    let _turn = serial();
    let inbound = Mosquitto::start();
    let outbound = Mosquitto::start();
    let ws = workspace();
    let host = start_host(&ws);
    let (a, b) = (payloads("a", 0..1500), payloads("b", 0..1500));
    let expected: Vec<String> = a
        .iter()
        .map(|p| format!("sensors/a {p}"))
        .chain(b.iter().map(|p| format!("sensors/b {p}")))
        .collect();
    let mut check = outbound.subscriber("check", "sensors/#", expected.len(), 90);

    // The source through the JSON API under its Confluent class name; the sink through
    // the RocketMQ API, publishing each record on the MQTT topic its key names.
    let created = json_create(
        &host,
        "mqtt-in",
        json!({
            "connector.class": "io.confluent.connect.mqtt.MqttSourceConnector",
            "mqtt.server.uri": inbound.uri(),
            "mqtt.topics": "sensors/+",
            "kafka.topic": "readings",
            "mqtt.qos": "1",
            "network.allow": inbound.address(),
        }),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let sink = json!({
        "connector-class": "mqtt-sink",
        "mqtt.server.uri": outbound.uri(),
        "topicNames": "readings",
        "network.allow": outbound.address(),
    });
    assert_eq!(
        host.create("mqtt-out", &sink.to_string()),
        (200, "success".to_string())
    );
    inbound.wait_subscribed("wasm-connect-mqtt-in-0", "sensors/+");

    inbound.publish_lines("sensors/a", &a);
    inbound.publish_lines("sensors/b", &b);
    let mut received = String::new();
    check
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut received)
        .expect("read mosquitto_sub");
    let _ = check.wait();
    let received: Vec<&str> = received.lines().collect();
    assert_eq!(
        received.len(),
        expected.len(),
        "mosquitto_sub got {} of {} messages",
        received.len(),
        expected.len()
    );
    assert_eq!(received, expected);
}

#[test]
fn a_kill_9_mid_stream_loses_no_message() {
    let _turn = serial();
    let broker = Mosquitto::start();
    let ws = workspace();
    let out = ws.path("out.txt");
    let host = start_host(&ws);
    let source = json!({
        "connector-class": "mqtt-source",
        "mqtt.server.uri": broker.uri(),
        "mqtt.topics": "load/#",
        "topic": "load",
        "network.allow": broker.address(),
    });
    let sink = json!({
        "connector-class": "file-sink",
        "topicNames": "load",
        "filename": out.display().to_string(),
    });
    assert_eq!(host.create("load-in", &source.to_string()).0, 200);
    assert_eq!(host.create("load-out", &sink.to_string()).0, 200);
    broker.wait_subscribed("wasm-connect-load-in-0", "load/#");

    // The first half streams in; the host dies while it does. The second half is published
    // while the host is down (the broker queues it for the persistent session).
    let all = payloads("m", 0..20_000);
    let (first, second) = all.split_at(all.len() / 2);
    let mut publisher = broker.publisher("load/x");
    let mut stdin = publisher.stdin.take().expect("stdin");
    let feeder = {
        let first = first.to_vec();
        std::thread::spawn(move || {
            use std::io::Write;
            for line in first {
                writeln!(stdin, "{line}").expect("write to mosquitto_pub");
            }
            stdin
        })
    };
    wait_for(Duration::from_secs(60), "records to flow", || {
        read_lines(&out).len() >= first.len() / 10
    });
    let before_kill = read_lines(&out).len();
    host.kill9();
    assert!(
        before_kill < first.len(),
        "the kill came after the stream ({before_kill} lines): nothing was in flight"
    );
    let mut stdin = feeder.join().expect("feeder");
    {
        use std::io::Write;
        for line in second {
            writeln!(stdin, "{line}").expect("write to mosquitto_pub");
        }
    }
    drop(stdin);
    assert!(publisher.wait().expect("mosquitto_pub").success());

    let host = start_host(&ws);
    let expected: BTreeSet<&String> = all.iter().collect();
    wait_for(
        Duration::from_secs(90),
        "every message after the restart",
        || {
            let lines = read_lines(&out);
            let seen: BTreeSet<&String> = lines.iter().collect();
            expected.iter().all(|m| seen.contains(m))
        },
    );
    // Settle: duplicates still in flight land now.
    std::thread::sleep(Duration::from_millis(500));
    let lines = read_lines(&out);
    let distinct: BTreeSet<&String> = lines.iter().collect();
    let unexpected: Vec<&&String> = distinct.difference(&expected).collect();
    assert!(unexpected.is_empty(), "messages never sent: {unexpected:?}");
    let duplicates = lines.len() - distinct.len();
    println!(
        "kill -9 after {before_kill} of {} messages: all {} delivered, {duplicates} duplicates ({:.2}%)",
        all.len(),
        all.len(),
        100.0 * duplicates as f64 / all.len() as f64
    );
    // Each record's position is the task's sequence number: the last one counts them all.
    let offsets = common::json_get(&host, "/connectors/load-in/offsets").json();
    assert_eq!(
        offsets["offsets"][0]["offset"]["position"],
        lines.len().to_string(),
        "{offsets}"
    );
    // A duplicate is a message the host stored whose PUBACK had not reached the broker at
    // the kill; the broker sends it again to the resumed session. Counted, not bounded:
    // at least once allows them.
    drop(host);
}

#[test]
fn a_broker_missing_from_network_allow_is_never_connected_to() {
    let _turn = serial();
    let broker = Mosquitto::start();
    let ws = workspace();
    let host = start_host(&ws);
    let elsewhere = format!("127.0.0.1:{}", free_port());
    let source = json!({
        "connector.class": "mqtt-source",
        "mqtt.server.uri": broker.uri(),
        "mqtt.topics": "t/#",
        "kafka.topic": "t",
        "network.allow": elsewhere,
    });
    let created = json_create(&host, "src", source);
    assert_eq!(created.status, 201, "{}", created.body);
    // No network.allow at all: the task may open no socket.
    let sink = json!({
        "connector.class": "io.confluent.connect.mqtt.MqttSinkConnector",
        "mqtt.server.uri": broker.uri(),
        "topics": "t",
    });
    let created = json_create(&host, "dst", sink);
    assert_eq!(created.status, 201, "{}", created.body);
    let refused = format!(
        "connect to {} refused: not in network.allow",
        broker.address()
    );
    let limit = Duration::from_secs(30);
    wait_failed_with(&host, "src", &[&refused], limit);
    wait_failed_with(&host, "dst", &[&refused], limit);
    assert!(
        !broker.log().contains("New connection"),
        "the broker saw a connection:\n{}",
        broker.log()
    );
}

/// The source's task host for the test below: no committed positions.
struct NoPositions;

impl wasm_connect_sdk::Host for NoPositions {
    fn log(&self, _level: wasm_connect_sdk::LogLevel, message: &str) {
        eprintln!("{message}");
    }
    fn committed_position(&self, _partition: &str) -> Option<String> {
        None
    }
    fn connector_name(&self) -> String {
        "acks".into()
    }
    fn task_id(&self) -> Option<u32> {
        Some(0)
    }
}

/// Polls `task` until it returned `count` records or `limit` passed; returns their values
/// and the last record's position.
fn poll_values(
    task: &mut mqtt_source::MqttSourceTask,
    count: usize,
    limit: Duration,
) -> (Vec<String>, Vec<wasm_connect_sdk::Position>) {
    use wasm_connect_sdk::{BatchReader, BatchWriter, Position, SourceTask};
    let (mut values, mut last) = (Vec::new(), Vec::new());
    let deadline = std::time::Instant::now() + limit;
    while values.len() < count && std::time::Instant::now() < deadline {
        let mut out = BatchWriter::new();
        task.poll(&mut out, 100, 1 << 20).expect("poll");
        let (n, frames) = out.into_parts();
        for record in BatchReader::read_all(&frames, n).expect("batch") {
            values.push(String::from_utf8_lossy(record.value).into_owned());
            last = vec![Position {
                partition: record.partition.to_string(),
                position: record.position.to_string(),
            }];
        }
    }
    (values, last)
}

/// The connector code itself (compiled natively) against a real broker: a message is
/// acknowledged only by `commit`, so one polled but not committed comes again in the next
/// session, and one committed never does.
#[test]
fn a_message_is_acknowledged_only_when_committed() {
    use mqtt_source::MqttSourceTask;
    use wasm_connect_sdk::{Config, SourceTask};
    let _turn = serial();
    let broker = Mosquitto::start();
    let config: Config = [
        ("mqtt.server.uri", broker.uri()),
        ("mqtt.topics", "acks/#".to_string()),
        ("kafka.topic", "t".to_string()),
    ]
    .into_iter()
    .collect();
    let start = || MqttSourceTask::start(&config, &NoPositions).expect("start");
    let sent = ["one".to_string(), "two".to_string()];

    let mut task = start();
    broker.publish_lines("acks/x", &sent);
    let (values, _) = poll_values(&mut task, 2, Duration::from_secs(10));
    assert_eq!(values, sent);
    task.stop(); // no commit

    let mut task = start();
    let (values, positions) = poll_values(&mut task, 2, Duration::from_secs(10));
    assert_eq!(values, sent, "uncommitted messages must come again");
    task.commit(&positions);
    task.stop();

    let mut task = start();
    let (values, _) = poll_values(&mut task, 1, Duration::from_secs(1));
    assert!(
        values.is_empty(),
        "committed messages came again: {values:?}"
    );
    task.stop();
}
