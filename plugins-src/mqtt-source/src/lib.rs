//! `mqtt-source`: subscribes to MQTT 3.1.1 topic filters and turns each message into a
//! record (key = the MQTT topic, value = the payload).
//!
//! At least once: with `mqtt.qos` 1 and a persistent session (`mqtt.clean.session.enabled`
//! false, the default), a message is acknowledged (PUBACK) only in `commit`, once the host
//! has stored its record; the broker redelivers whatever was not acknowledged when the task
//! stops or the host dies. Each record's position is a per-task sequence number in the
//! partition named after the client id; `commit` acknowledges every message up to it.
//!
//! The broker sends at most its `max_inflight_messages` unacknowledged messages, so `poll`
//! returns as soon as that many are waiting for a commit (`mqtt.max.inflight.messages`,
//! the broker's value), or when nothing came for [`QUIET`] once it has something to return,
//! or after [`IDLE_WAIT`] with nothing at all.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use mqtt_common::mqttbytes::v4::Packet;
use mqtt_common::mqttbytes::{valid_filter, QoS};
use mqtt_common::{config_failure, defs, Client, MqttError, Settings};
use wasm_connect_sdk::{
    BatchWriter, Config, ConfigDef, ConfigError, Connector, Descriptor, Host, Kind, LogLevel,
    Position, Record, SourceConnector, SourceTask, TaskError, ValueType,
};

/// Topic filters to subscribe to, comma-separated.
const TOPICS: &str = "mqtt.topics";
/// The broker's inflight window (mosquitto's `max_inflight_messages`).
const MAX_INFLIGHT: &str = "mqtt.max.inflight.messages";
/// The keys that may name the destination topic, Confluent's first.
const TOPIC_KEYS: [&str; 2] = ["kafka.topic", "topic"];
/// How long `poll` waits for one more message once it has something to return.
pub const QUIET: Duration = Duration::from_millis(5);
/// How long `poll` waits when it has nothing at all.
pub const IDLE_WAIT: Duration = Duration::from_millis(500);
/// How long `start` waits for the broker's SUBACK.
const SUBACK_TIMEOUT: Duration = Duration::from_secs(10);

pub struct MqttSource;

const CONFIG_DEFS: &[ConfigDef] = &[
    defs::SERVER,
    ConfigDef::required(
        TOPICS,
        "MQTT topic filters to subscribe to, comma-separated (+ and # wildcards); split over the tasks.",
    )
    .typed(ValueType::List),
    ConfigDef::optional("kafka.topic", "The topic the messages are written to (or `topic`)."),
    ConfigDef::optional("topic", "Same as kafka.topic."),
    defs::USER,
    defs::SECRET,
    defs::QUALITY,
    defs::CLIENT,
    defs::CLEAN,
    defs::KEEPALIVE_S,
    defs::CONNECT_TIMEOUT_S,
    ConfigDef::optional(
        MAX_INFLIGHT,
        "The broker's limit of unacknowledged QoS 1 messages per client (mosquitto's max_inflight_messages; 0 = none): poll returns once that many wait for a commit.",
    )
    .typed(ValueType::Integer)
    .default_value("20"),
];

impl Connector for MqttSource {
    fn descriptor() -> Descriptor {
        Descriptor {
            name: "mqtt-source",
            version: env!("CARGO_PKG_VERSION"),
            kind: Kind::Source,
            description: "Subscribes to MQTT 3.1.1 topics; key = MQTT topic, value = payload; at least once with QoS 1.",
            aliases: &["io.confluent.connect.mqtt.MqttSourceConnector"],
            config_defs: CONFIG_DEFS,
        }
    }

    fn validate(config: &Config) -> Result<(), Vec<ConfigError>> {
        let mut errors = Settings::from_config(config).err().unwrap_or_default();
        if let Err(e) = filters(config) {
            errors.push(e);
        }
        if config
            .get_any(&TOPIC_KEYS)
            .is_none_or(|t| t.trim().is_empty())
        {
            errors.push(ConfigError {
                key: "kafka.topic".into(),
                message: "Request config key: kafka.topic (or topic)".into(),
            });
        }
        if let Err(e) = max_inflight(config) {
            errors.push(e);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Spreads the topic filters over the tasks, round robin: each filter is subscribed by
    /// one task only (MQTT 3.1.1 has no shared subscriptions).
    fn task_configs(config: &Config, max_tasks: u32) -> Result<Vec<Config>, String> {
        let filters = filters(config).map_err(|e| e.message)?;
        Ok(wasm_connect_sdk::spread(&filters, max_tasks)
            .into_iter()
            .map(|mine| {
                let mut task_config = config.clone();
                task_config.set(TOPICS, &mine.join(","));
                task_config
            })
            .collect())
    }
}

impl SourceConnector for MqttSource {
    type Task = MqttSourceTask;
}

/// The filters of `mqtt.topics`, each checked.
fn filters(config: &Config) -> Result<Vec<String>, ConfigError> {
    let error = |message: String| ConfigError {
        key: TOPICS.into(),
        message,
    };
    let filters: Vec<String> = config
        .get(TOPICS)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(str::to_string)
        .collect();
    if filters.is_empty() {
        return Err(error(format!("Request config key: {TOPICS}")));
    }
    match filters
        .iter()
        .find(|f| !valid_filter(f) || f.len() > 65_535)
    {
        Some(bad) => Err(error(format!(
            "{TOPICS}: {bad:?} is not a topic filter (+ must be a whole level, # the last one)"
        ))),
        None => Ok(filters),
    }
}

fn max_inflight(config: &Config) -> Result<usize, ConfigError> {
    let text = config.get(MAX_INFLIGHT).map(str::trim).unwrap_or("20");
    match text.parse::<u16>() {
        Ok(0) => Ok(usize::from(u16::MAX)),
        Ok(n) => Ok(usize::from(n)),
        Err(_) => Err(ConfigError {
            key: MAX_INFLIGHT.into(),
            message: format!("{MAX_INFLIGHT}: {text:?} is not a number from 0 to 65535"),
        }),
    }
}

pub struct MqttSourceTask {
    settings: Settings,
    client_id: String,
    filters: Vec<String>,
    /// The topic records go to (`kafka.topic` or `topic`).
    destination: String,
    window: usize,
    client: Option<Client>,
    /// The sequence number of the last record handed to the host (the position).
    sequence: u64,
    /// QoS 1 messages handed to the host and not acknowledged yet: (sequence, packet id),
    /// oldest first, all received on the current connection.
    unacked: VecDeque<(u64, u16)>,
}

impl SourceTask for MqttSourceTask {
    fn start(config: &Config, host: &dyn Host) -> Result<Self, TaskError> {
        let settings = Settings::from_config(config).map_err(config_failure)?;
        let filters = filters(config).map_err(|e| TaskError::Fatal(e.message))?;
        let window = max_inflight(config).map_err(|e| TaskError::Fatal(e.message))?;
        let destination = config
            .get_any(&TOPIC_KEYS)
            .ok_or_else(|| TaskError::Fatal("Request config key: kafka.topic (or topic)".into()))?
            .trim()
            .to_string();
        let client_id = settings.client_id(host);
        let sequence = match host.committed_position(&client_id) {
            Some(text) => text.parse().map_err(|_| {
                TaskError::Fatal(format!(
                    "committed position {text:?} of {client_id} is not a sequence number"
                ))
            })?,
            None => 0,
        };
        let mut task = MqttSourceTask {
            settings,
            client_id,
            filters,
            destination,
            window,
            client: None,
            sequence,
            unacked: VecDeque::new(),
        };
        // Connect now so a refused grant or login fails the start; a broker that is down
        // is retried by `poll`.
        match task.connect() {
            Ok(()) => {}
            Err(e) => match TaskError::from(e) {
                fatal @ TaskError::Fatal(_) => return Err(fatal),
                TaskError::Retriable(reason) => host.log(
                    LogLevel::Warn,
                    &format!("{reason}; retrying at the next poll"),
                ),
            },
        }
        Ok(task)
    }

    fn poll(
        &mut self,
        out: &mut BatchWriter,
        max_records: u32,
        max_bytes: u32,
    ) -> Result<(), TaskError> {
        if self.client.is_none() {
            self.connect()?;
        }
        match self.receive(out, max_records, max_bytes as usize) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.drop_connection();
                match e {
                    // The records framed so far are returned; the next poll reconnects and
                    // reports the error if it persists.
                    TaskError::Retriable(_) if !out.is_empty() => Ok(()),
                    e => Err(e),
                }
            }
        }
    }

    fn commit(&mut self, positions: &[Position]) {
        let Some(committed) = positions
            .iter()
            .find(|p| p.partition == self.client_id)
            .and_then(|p| p.position.parse::<u64>().ok())
        else {
            return;
        };
        let Some(client) = self.client.as_mut() else {
            return;
        };
        let mut result = Ok(());
        while let Some(&(sequence, pkid)) = self.unacked.front() {
            if sequence > committed {
                break;
            }
            self.unacked.pop_front();
            result = result.and_then(|()| {
                client.queue(|buf| mqtt_common::mqttbytes::v4::PubAck::new(pkid).write(buf))
            });
        }
        // A lost connection is noticed (and reported) by the next poll, which reconnects.
        if result.and_then(|()| client.send()).is_err() {
            self.drop_connection();
        }
    }

    fn stop(&mut self) {
        if let Some(client) = self.client.take() {
            client.disconnect();
        }
    }
}

impl MqttSourceTask {
    fn connect(&mut self) -> Result<(), MqttError> {
        let (mut client, _session_present) = Client::connect(&self.settings, &self.client_id)?;
        client.subscribe(&self.filters, self.settings.qos, SUBACK_TIMEOUT)?;
        self.client = Some(client);
        Ok(())
    }

    /// Forgets the connection; the broker redelivers its unacknowledged messages on the
    /// next one (whose packet ids may differ, so the old ones are never acknowledged).
    fn drop_connection(&mut self) {
        self.client = None;
        self.unacked.clear();
    }

    /// Frames the messages that arrive into `out` (see the module doc for when it returns).
    fn receive(
        &mut self,
        out: &mut BatchWriter,
        max_records: u32,
        max_bytes: usize,
    ) -> Result<(), TaskError> {
        let Some(client) = self.client.as_mut() else {
            return Ok(());
        };
        client.keep_alive()?;
        let started = Instant::now();
        while out.count() < max_records
            && out.byte_len() < max_bytes
            && self.unacked.len() < self.window
        {
            let wait = if out.is_empty() && self.unacked.is_empty() {
                IDLE_WAIT.saturating_sub(started.elapsed())
            } else {
                QUIET
            };
            let Some(packet) = client.next(wait)? else {
                break;
            };
            let Packet::Publish(publish) = packet else {
                continue;
            };
            self.sequence += 1;
            let position = self.sequence.to_string();
            let record = Record {
                key: Some(publish.topic.as_bytes()),
                value: &publish.payload,
                topic: &self.destination,
                partition: &self.client_id,
                position: &position,
                ..Record::default()
            };
            out.push(&record).map_err(|e| {
                TaskError::Fatal(format!(
                    "cannot frame a message of MQTT topic {:?}: {e}",
                    publish.topic
                ))
            })?;
            if publish.qos != QoS::AtMostOnce {
                self.unacked.push_back((self.sequence, publish.pkid));
            }
        }
        Ok(())
    }
}

wasm_connect_sdk::export_source!(MqttSource);

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Config {
        pairs.iter().copied().collect()
    }

    #[test]
    fn filters_are_split_over_the_tasks() {
        let c = config(&[
            ("mqtt.server.uri", "tcp://127.0.0.1:1883"),
            (TOPICS, "a/#, b/+, c"),
            ("kafka.topic", "t"),
        ]);
        let tasks = MqttSource::task_configs(&c, 2).unwrap();
        let topics: Vec<&str> = tasks.iter().map(|t| t.get(TOPICS).unwrap()).collect();
        assert_eq!(topics, ["a/#,c", "b/+"]);
        assert_eq!(MqttSource::task_configs(&c, 8).unwrap().len(), 3);
    }

    #[test]
    fn validation_names_each_bad_key() {
        let errors = MqttSource::validate(&config(&[
            ("mqtt.server.uri", "tcp://127.0.0.1:1883"),
            (TOPICS, "a/#/b"),
            ("mqtt.qos", "2"),
        ]))
        .unwrap_err();
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["mqtt.qos", TOPICS, "kafka.topic"]);
        assert!(MqttSource::validate(&config(&[
            ("mqtt.server.uri", "tcp://127.0.0.1:1883"),
            (TOPICS, "sensors/+/temp, #"),
            ("topic", "t"),
        ]))
        .is_ok());
    }
}
