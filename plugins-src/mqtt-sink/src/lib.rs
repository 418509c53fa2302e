//! `mqtt-sink`: publishes each record's value to an MQTT 3.1.1 broker, on `mqtt.topic` or
//! else on the MQTT topic its key names.
//!
//! With `mqtt.qos` 1, `flush` returns only once the broker acknowledged (PUBACK) every
//! message put since the last flush, so the host commits offsets only for delivered
//! records. A connection lost in between is reopened and the unacknowledged messages are
//! sent again (with the DUP flag): at least once. At most [`MAX_INFLIGHT`] messages wait
//! for their PUBACK at a time; `put` waits for acknowledgements beyond that.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mqtt_common::mqttbytes::v4::{Packet, Publish};
use mqtt_common::mqttbytes::valid_topic;
use mqtt_common::{config_failure, defs, Client, MqttError, Qos, Settings};
use wasm_connect_sdk::{
    BatchReader, Config, ConfigDef, ConfigError, Connector, Descriptor, Host, Kind, Position,
    SinkConnector, SinkTask, TaskError, ValueType,
};

/// The MQTT topic to publish to (default: each record's key).
const TARGET: &str = "mqtt.topic";
const RETAIN: &str = "mqtt.retain.enabled";
/// The keys that may name the input topics, in the RocketMQ and the Kafka spelling.
const TOPIC_KEYS: [&str; 2] = ["topicNames", "topics"];
/// Messages that may wait for their PUBACK at once.
pub const MAX_INFLIGHT: usize = 1000;
/// Longest `flush` (or a full window in `put`) waits for PUBACKs, below the call timeout.
const ACK_TIMEOUT: Duration = Duration::from_secs(20);
/// Bytes of encoded messages gathered before they are written.
const SEND_CHUNK: usize = 64 << 10;

pub struct MqttSink;

const CONFIG_DEFS: &[ConfigDef] = &[
    defs::SERVER,
    ConfigDef::optional(
        TARGET,
        "The MQTT topic to publish to; default: the record key (a record without key fails the task).",
    ),
    ConfigDef::optional(
        "topics",
        "Comma-separated topics to read (RocketMQ spelling: `topicNames`).",
    )
    .typed(ValueType::List),
    ConfigDef::optional("topicNames", "Same as topics.").typed(ValueType::List),
    defs::QUALITY,
    ConfigDef::optional(RETAIN, "true: the broker retains the last message of each topic.")
        .typed(ValueType::Boolean)
        .default_value("false"),
    defs::USER,
    defs::SECRET,
    defs::CLIENT,
    defs::CLEAN,
    defs::KEEPALIVE_S,
    defs::CONNECT_TIMEOUT_S,
];

impl Connector for MqttSink {
    fn descriptor() -> Descriptor {
        Descriptor {
            name: "mqtt-sink",
            version: env!("CARGO_PKG_VERSION"),
            kind: Kind::Sink,
            description: "Publishes each record's value to an MQTT 3.1.1 broker; flush waits for every PUBACK.",
            aliases: &["io.confluent.connect.mqtt.MqttSinkConnector"],
            config_defs: CONFIG_DEFS,
        }
    }

    fn validate(config: &Config) -> Result<(), Vec<ConfigError>> {
        let mut errors = Settings::from_config(config).err().unwrap_or_default();
        if config
            .get_any(&TOPIC_KEYS)
            .is_none_or(|t| t.trim().is_empty())
        {
            errors.push(ConfigError {
                key: "topics".into(),
                message: "Request config key: topics (or topicNames)".into(),
            });
        }
        if let Err(e) = target(config) {
            errors.push(e);
        }
        if let Err(e) = retain(config) {
            errors.push(e);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

impl SinkConnector for MqttSink {
    type Task = MqttSinkTask;
}

/// `mqtt.topic`, checked, if set.
fn target(config: &Config) -> Result<Option<String>, ConfigError> {
    match config.get(TARGET) {
        None => Ok(None),
        Some(topic) => check_topic(topic)
            .map(|()| Some(topic.to_string()))
            .map_err(|m| ConfigError {
                key: TARGET.into(),
                message: format!("{TARGET}: {m}"),
            }),
    }
}

fn retain(config: &Config) -> Result<bool, ConfigError> {
    match config.get(RETAIN).map(str::trim).unwrap_or("false") {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(ConfigError {
            key: RETAIN.into(),
            message: format!("{RETAIN}: {other:?} is not true or false"),
        }),
    }
}

/// A topic a message may be published to: 1 to 65535 bytes, no wildcards.
fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic.len() > 65_535 || !valid_topic(topic) || topic.contains('\0') {
        return Err(format!(
            "{topic:?} is not an MQTT topic to publish to (1 to 65535 bytes, no + or #)"
        ));
    }
    Ok(())
}

pub struct MqttSinkTask {
    settings: Settings,
    client_id: String,
    target: Option<String>,
    retain: bool,
    client: Option<Client>,
    /// QoS 1 messages sent and not acknowledged, by packet id, with their send order.
    inflight: HashMap<u16, (u64, Publish)>,
    /// Messages published so far (orders `inflight` for a resend).
    sent: u64,
    last_pkid: u16,
}

impl SinkTask for MqttSinkTask {
    fn start(config: &Config, host: &dyn Host) -> Result<Self, TaskError> {
        let settings = Settings::from_config(config).map_err(config_failure)?;
        let target = target(config).map_err(|e| TaskError::Fatal(e.message))?;
        let retain = retain(config).map_err(|e| TaskError::Fatal(e.message))?;
        let client_id = settings.client_id(host);
        let mut task = MqttSinkTask {
            settings,
            client_id,
            target,
            retain,
            client: None,
            inflight: HashMap::new(),
            sent: 0,
            last_pkid: 0,
        };
        // Connect now so a refused grant or login fails the start; a broker that is down
        // is retried by `put` and `flush`.
        if let Err(e) = task.connected() {
            if let fatal @ TaskError::Fatal(_) = TaskError::from(e) {
                return Err(fatal);
            }
        }
        Ok(task)
    }

    fn put(
        &mut self,
        topic: &str,
        first_offset: u64,
        records: BatchReader<'_>,
    ) -> Result<(), TaskError> {
        for (offset, record) in (first_offset..).zip(records) {
            let record =
                record.map_err(|e| TaskError::Fatal(format!("bad batch from the host: {e}")))?;
            let mqtt_topic = match &self.target {
                Some(target) => target.clone(),
                None => topic_of_key(record.key).map_err(|m| {
                    TaskError::Fatal(format!(
                        "record {offset} of topic {topic}: {m}; set mqtt.topic to publish every record there"
                    ))
                })?,
            };
            self.publish(mqtt_topic, Bytes::copy_from_slice(record.value))
                .map_err(|e| self.failed(e))?;
        }
        self.send().map_err(|e| self.failed(e))
    }

    fn flush(&mut self) -> Result<Vec<Position>, TaskError> {
        self.send().map_err(|e| self.failed(e))?;
        self.wait_for_acks(0).map_err(|e| self.failed(e))?;
        Ok(Vec::new())
    }

    fn stop(&mut self) {
        if let Some(client) = self.client.take() {
            client.disconnect();
        }
    }
}

/// The MQTT topic a record's key names.
fn topic_of_key(key: Option<&[u8]>) -> Result<String, String> {
    let key = key.ok_or("the record has no key to name its MQTT topic")?;
    let topic = std::str::from_utf8(key).map_err(|_| "the record's key is not UTF-8 text")?;
    check_topic(topic)?;
    Ok(topic.to_string())
}

impl MqttSinkTask {
    /// The client, connected (and the unacknowledged messages sent again) if it was not.
    fn connected(&mut self) -> Result<&mut Client, MqttError> {
        let client = match self.client.take() {
            Some(client) => client,
            None => self.reconnect()?,
        };
        Ok(self.client.insert(client))
    }

    /// A new connection, on which the messages still unacknowledged are sent again.
    fn reconnect(&self) -> Result<Client, MqttError> {
        let (mut client, _) = Client::connect(&self.settings, &self.client_id)?;
        let mut resend: Vec<&(u64, Publish)> = self.inflight.values().collect();
        resend.sort_by_key(|(order, _)| *order);
        for (_, publish) in resend {
            let mut again = publish.clone();
            again.dup = true;
            client.queue(|buf| again.write(buf))?;
        }
        client.send()?;
        Ok(client)
    }

    /// Queues one message; writes when enough is queued, and waits for PUBACKs when the
    /// window is full.
    fn publish(&mut self, topic: String, payload: Bytes) -> Result<(), MqttError> {
        let qos = self.settings.qos;
        let mut publish = Publish::from_bytes(topic, qos.into(), payload);
        publish.retain = self.retain;
        if qos == Qos::AtLeastOnce {
            self.wait_for_acks(MAX_INFLIGHT - 1)?;
            publish.pkid = self.free_pkid();
        }
        let client = self.connected()?;
        client.queue(|buf| publish.write(buf))?;
        let full = client.queued() >= SEND_CHUNK;
        if qos == Qos::AtLeastOnce {
            self.sent += 1;
            self.inflight.insert(publish.pkid, (self.sent, publish));
        }
        if full {
            self.send()?;
        }
        Ok(())
    }

    /// Writes what is queued and takes in the PUBACKs that already arrived.
    fn send(&mut self) -> Result<(), MqttError> {
        self.connected()?.send()?;
        self.take_acks(Duration::ZERO)
    }

    /// Waits until at most `left` messages wait for their PUBACK.
    fn wait_for_acks(&mut self, left: usize) -> Result<(), MqttError> {
        let started = Instant::now();
        while self.inflight.len() > left {
            let remaining = ACK_TIMEOUT.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                let client = self.connected()?;
                return Err(client.no_answer("PUBACK for every message", ACK_TIMEOUT));
            }
            self.connected()?.keep_alive()?;
            self.take_acks(remaining.min(Duration::from_secs(1)))?;
        }
        Ok(())
    }

    /// Reads the PUBACKs that arrive within `wait` (at least those already received).
    fn take_acks(&mut self, wait: Duration) -> Result<(), MqttError> {
        self.connected()?;
        let Some(client) = self.client.as_mut() else {
            return Ok(());
        };
        let mut wait = wait;
        while let Some(packet) = client.next(wait)? {
            if let Packet::PubAck(ack) = packet {
                self.inflight.remove(&ack.pkid);
            }
            wait = Duration::ZERO;
        }
        Ok(())
    }

    /// A packet id no message in flight uses.
    fn free_pkid(&mut self) -> u16 {
        loop {
            self.last_pkid = self.last_pkid.checked_add(1).unwrap_or(1);
            if !self.inflight.contains_key(&self.last_pkid) {
                return self.last_pkid;
            }
        }
    }

    /// Drops the connection after an error (the next call reconnects and resends what
    /// is unacknowledged) and turns the error into the task's.
    fn failed(&mut self, error: MqttError) -> TaskError {
        self.client = None;
        error.into()
    }
}

wasm_connect_sdk::export_sink!(MqttSink);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_names_the_topic_unless_it_cannot() {
        assert_eq!(topic_of_key(Some(b"sensors/a")).unwrap(), "sensors/a");
        assert!(topic_of_key(None).unwrap_err().contains("no key"));
        assert!(topic_of_key(Some(b"a/+"))
            .unwrap_err()
            .contains("no + or #"));
        assert!(topic_of_key(Some(&[0xff])).unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn validation_names_each_bad_key() {
        let config: Config = [
            ("mqtt.server.uri", "tcp://127.0.0.1:1883"),
            (TARGET, "out/#"),
            (RETAIN, "yes"),
        ]
        .into_iter()
        .collect();
        let errors = MqttSink::validate(&config).unwrap_err();
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["topics", TARGET, RETAIN]);
    }
}
