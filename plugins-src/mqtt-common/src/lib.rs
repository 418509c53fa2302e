//! What `mqtt-source` and `mqtt-sink` share: the config keys both read (Confluent's
//! spellings), their parsed form [`Settings`], and [`Client`], a blocking MQTT 3.1.1 client
//! over the SDK's [`TcpConnection`] whose every wait is bounded (packets encoded and decoded
//! by `mqttbytes`).

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mqttbytes::v4::{self, ConnectReturnCode, Packet};
use mqttbytes::QoS;
use wasm_connect_sdk::tcp::{TcpConnection, TcpError};
use wasm_connect_sdk::{Config, ConfigDef, ConfigError, Host, TaskError, ValueType};

pub use mqttbytes;

/// Comma-separated broker URIs, `tcp://host:port`.
pub const SERVER_URI: &str = "mqtt.server.uri";
pub const USERNAME: &str = "mqtt.username";
pub const PASSWORD: &str = "mqtt.password";
pub const QOS: &str = "mqtt.qos";
pub const CLIENT_ID: &str = "mqtt.client.id";
pub const CLEAN_SESSION: &str = "mqtt.clean.session.enabled";
pub const KEEPALIVE: &str = "mqtt.keepalive.interval.seconds";
pub const CONNECT_TIMEOUT: &str = "mqtt.connect.timeout.seconds";

/// The definitions of the keys both connectors read (each connector lists them in its
/// `describe`).
pub mod defs {
    use super::*;

    pub const SERVER: ConfigDef = ConfigDef::required(
        SERVER_URI,
        "Broker URIs, comma-separated, tried in order: tcp://host:port (list the address in network.allow).",
    );
    pub const USER: ConfigDef = ConfigDef::optional(USERNAME, "User name sent in CONNECT.");
    pub const SECRET: ConfigDef = ConfigDef {
        secret: true,
        ..ConfigDef::optional(PASSWORD, "Password sent in CONNECT (needs mqtt.username).")
    };
    pub const QUALITY: ConfigDef =
        ConfigDef::optional(QOS, "0 (at most once) or 1 (at least once).")
            .typed(ValueType::Integer)
            .default_value("1");
    pub const CLIENT: ConfigDef = ConfigDef::optional(
        CLIENT_ID,
        "MQTT client id; default wasm-connect-<connector>-<task> (tasks 1 and up append -<task> to a set id).",
    );
    pub const CLEAN: ConfigDef = ConfigDef::optional(
        CLEAN_SESSION,
        "true: the broker forgets the session at disconnect (messages sent while the task is down are lost).",
    )
    .typed(ValueType::Boolean)
    .default_value("false");
    pub const KEEPALIVE_S: ConfigDef = ConfigDef::optional(
        KEEPALIVE,
        "Keep-alive interval in seconds (0 turns it off).",
    )
    .typed(ValueType::Integer)
    .default_value("60");
    pub const CONNECT_TIMEOUT_S: ConfigDef = ConfigDef::optional(
        CONNECT_TIMEOUT,
        "Seconds to connect and get the broker's CONNACK (at most 25, below the host's call timeout).",
    )
    .typed(ValueType::Integer)
    .default_value("10");
}

/// Longest connect timeout: a connect runs inside a guest call (30 s by default).
const MAX_CONNECT_TIMEOUT_S: u64 = 25;
/// Largest packet accepted from a broker.
pub const MAX_PACKET_BYTES: usize = 16 << 20;
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 << 10;
/// Longest a write of queued packets may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The quality of service the connector asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    AtMostOnce,
    AtLeastOnce,
}

impl From<Qos> for QoS {
    fn from(qos: Qos) -> QoS {
        match qos {
            Qos::AtMostOnce => QoS::AtMostOnce,
            Qos::AtLeastOnce => QoS::AtLeastOnce,
        }
    }
}

/// A broker address taken from `mqtt.server.uri`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// `host:port`, as the socket connects to it.
    pub address: String,
}

impl Server {
    /// Parses `tcp://host:port` (also `mqtt://`; port 1883 when left out).
    fn parse(uri: &str) -> Result<Server, String> {
        let rest = uri
            .strip_prefix("tcp://")
            .or_else(|| uri.strip_prefix("mqtt://"))
            .ok_or_else(|| {
                if uri.starts_with("ssl://") || uri.starts_with("mqtts://") {
                    format!("{uri}: TLS is not supported yet; use tcp://host:port")
                } else {
                    format!("{uri}: write tcp://host:port")
                }
            })?
            .trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') || rest.contains('@') {
            return Err(format!("{uri}: write tcp://host:port"));
        }
        let has_port = match rest.rsplit_once(':') {
            // `[::1]` alone has colons but no port.
            Some((host, port)) if !host.is_empty() && !port.contains(']') => {
                port.parse::<u16>()
                    .map_err(|_| format!("{uri}: {port:?} is not a port number"))?;
                true
            }
            _ => false,
        };
        Ok(Server {
            address: if has_port {
                rest.to_string()
            } else {
                format!("{rest}:1883")
            },
        })
    }
}

/// The connection settings both connectors read from their config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub servers: Vec<Server>,
    pub login: Option<(String, String)>,
    pub qos: Qos,
    /// `mqtt.client.id` as set, before the task number is applied.
    pub client_id: Option<String>,
    pub clean_session: bool,
    pub keepalive: Duration,
    pub connect_timeout: Duration,
}

impl Settings {
    /// Reads and checks the common keys; every problem is returned, one per key.
    pub fn from_config(config: &Config) -> Result<Settings, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut error = |key: &str, message: String| {
            errors.push(ConfigError {
                key: key.to_string(),
                message,
            })
        };
        let mut bad_uri = false;
        let servers: Vec<Server> = config
            .get(SERVER_URI)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|uri| !uri.is_empty())
            .filter_map(|uri| {
                Server::parse(uri)
                    .map_err(|m| {
                        bad_uri = true;
                        error(SERVER_URI, format!("{SERVER_URI}: {m}"))
                    })
                    .ok()
            })
            .collect();
        if servers.is_empty() && !bad_uri {
            error(SERVER_URI, format!("Request config key: {SERVER_URI}"));
        }
        let login = match (config.get(USERNAME), config.get(PASSWORD)) {
            (Some(user), password) => {
                Some((user.to_string(), password.unwrap_or_default().to_string()))
            }
            (None, Some(_)) => {
                error(
                    PASSWORD,
                    format!("{PASSWORD} needs {USERNAME} (MQTT 3.1.1 sends no password alone)"),
                );
                None
            }
            (None, None) => None,
        };
        let qos = match config.get(QOS).map(str::trim).unwrap_or("1") {
            "0" => Qos::AtMostOnce,
            "1" => Qos::AtLeastOnce,
            other => {
                error(
                    QOS,
                    format!("{QOS}: {other:?} is not supported; use 0 or 1"),
                );
                Qos::AtLeastOnce
            }
        };
        let clean_session = match config.get(CLEAN_SESSION).map(str::trim).unwrap_or("false") {
            "true" => true,
            "false" => false,
            other => {
                error(
                    CLEAN_SESSION,
                    format!("{CLEAN_SESSION}: {other:?} is not true or false"),
                );
                false
            }
        };
        let mut seconds = |key: &str, default: u64, max: u64| -> u64 {
            match config.get(key).map(str::trim) {
                None => default,
                Some(text) => match text.parse::<u64>() {
                    Ok(n) if n <= max => n,
                    _ => {
                        error(
                            key,
                            format!("{key}: {text:?} is not a number of seconds from 0 to {max}"),
                        );
                        default
                    }
                },
            }
        };
        let keepalive = seconds(KEEPALIVE, 60, u64::from(u16::MAX));
        let connect_timeout = seconds(CONNECT_TIMEOUT, 10, MAX_CONNECT_TIMEOUT_S).max(1);
        let client_id = config.get(CLIENT_ID).map(str::to_string);
        if client_id
            .as_deref()
            .is_some_and(|id| id.is_empty() || id.len() > 65_535)
        {
            error(CLIENT_ID, format!("{CLIENT_ID}: must be 1 to 65535 bytes"));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Settings {
            servers,
            login,
            qos,
            client_id,
            clean_session,
            keepalive: Duration::from_secs(keepalive),
            connect_timeout: Duration::from_secs(connect_timeout),
        })
    }

    /// The client id of this task: `mqtt.client.id` (with `-<task>` from task 1 on), or
    /// `wasm-connect-<connector>-<task>`.
    pub fn client_id(&self, host: &dyn Host) -> String {
        let task = host.task_id().unwrap_or(0);
        match &self.client_id {
            Some(id) if task == 0 => id.clone(),
            Some(id) => format!("{id}-{task}"),
            None => format!("wasm-connect-{}-{task}", host.connector_name()),
        }
    }
}

/// Turns the error list of [`Settings::from_config`] into a task error (for `start`).
pub fn config_failure(errors: Vec<ConfigError>) -> TaskError {
    let messages: Vec<String> = errors.into_iter().map(|e| e.message).collect();
    TaskError::Fatal(messages.join("; "))
}

/// Why talking to the broker failed.
#[derive(Debug)]
pub enum MqttError {
    Tcp(TcpError),
    /// The broker answered CONNECT with a refusal.
    Refused {
        server: String,
        code: ConnectReturnCode,
    },
    /// The broker sent bytes that are not an MQTT 3.1.1 packet.
    Malformed {
        server: String,
        error: mqttbytes::Error,
    },
    /// A packet could not be encoded (e.g. a topic over 65535 bytes).
    Encode(mqttbytes::Error),
    /// The broker did not answer in time.
    NoAnswer {
        server: String,
        waiting_for: &'static str,
        after: Duration,
    },
    /// The broker answered with another packet than the protocol allows here.
    Unexpected {
        server: String,
        waiting_for: &'static str,
    },
    /// The broker refused a subscription.
    SubscriptionRefused {
        server: String,
        filter: String,
    },
    /// `mqtt.server.uri` names no broker.
    NoServer,
}

impl fmt::Display for MqttError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MqttError::Tcp(e) => e.fmt(f),
            MqttError::Refused { server, code } => {
                let fix = match code {
                    ConnectReturnCode::BadUserNamePassword => {
                        "check mqtt.username and mqtt.password"
                    }
                    ConnectReturnCode::NotAuthorized => "the broker's ACL must allow this client",
                    ConnectReturnCode::BadClientId => "set another mqtt.client.id",
                    ConnectReturnCode::RefusedProtocolVersion => "the broker must speak MQTT 3.1.1",
                    ConnectReturnCode::ServiceUnavailable | ConnectReturnCode::Success => {
                        "retrying"
                    }
                };
                write!(
                    f,
                    "broker {server} refused the connection ({code:?}); {fix}"
                )
            }
            MqttError::Malformed { server, error } => {
                write!(f, "broker {server} sent a malformed packet: {error:?}")
            }
            MqttError::Encode(error) => write!(f, "cannot encode an MQTT packet: {error:?}"),
            MqttError::NoAnswer {
                server,
                waiting_for,
                after,
            } => write!(
                f,
                "broker {server} sent no {waiting_for} within {} ms",
                after.as_millis()
            ),
            MqttError::Unexpected {
                server,
                waiting_for,
            } => write!(f, "broker {server} sent another packet than {waiting_for}"),
            MqttError::NoServer => write!(f, "{SERVER_URI} names no broker; write tcp://host:port"),
            MqttError::SubscriptionRefused { server, filter } => write!(
                f,
                "broker {server} refused the subscription to {filter:?} (check its ACL)"
            ),
        }
    }
}

impl std::error::Error for MqttError {}

impl From<TcpError> for MqttError {
    fn from(e: TcpError) -> Self {
        MqttError::Tcp(e)
    }
}

impl From<MqttError> for TaskError {
    /// Refusals only the config can fix are fatal; everything else may pass (retriable).
    fn from(error: MqttError) -> Self {
        match error {
            MqttError::Tcp(e) => e.into(),
            MqttError::Refused { code, .. }
                if !matches!(code, ConnectReturnCode::ServiceUnavailable) =>
            {
                TaskError::Fatal(error.to_string())
            }
            MqttError::Encode(_) | MqttError::SubscriptionRefused { .. } | MqttError::NoServer => {
                TaskError::Fatal(error.to_string())
            }
            _ => TaskError::Retriable(error.to_string()),
        }
    }
}

/// One MQTT 3.1.1 connection to a broker. Packets are queued into a buffer and sent by
/// [`Client::send`]; [`Client::next`] waits a bounded time for the next packet.
pub struct Client {
    conn: TcpConnection,
    inbox: BytesMut,
    outbox: BytesMut,
    keepalive: Duration,
    last_sent: Instant,
    last_received: Instant,
    /// When the PINGREQ still unanswered was sent.
    ping_sent: Option<Instant>,
    /// The last packet id handed out (1..=65535).
    last_pkid: u16,
    /// Packets read while waiting for another one, handed out first by `next`.
    early: VecDeque<Packet>,
}

impl Client {
    /// Connects to the first server of `settings` that answers, sends CONNECT and waits for
    /// the CONNACK; returns the client and whether the broker kept a session.
    pub fn connect(settings: &Settings, client_id: &str) -> Result<(Client, bool), MqttError> {
        let mut last = None;
        for server in &settings.servers {
            match Self::connect_to(settings, server, client_id) {
                Ok(connected) => return Ok(connected),
                // A refusal by network.allow is the config's, not this server's: say so.
                Err(e @ MqttError::Tcp(TcpError::NotAllowed { .. })) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(MqttError::NoServer))
    }

    fn connect_to(
        settings: &Settings,
        server: &Server,
        client_id: &str,
    ) -> Result<(Client, bool), MqttError> {
        let conn = TcpConnection::connect(&server.address, settings.connect_timeout)?;
        let now = Instant::now();
        let mut client = Client {
            conn,
            inbox: BytesMut::with_capacity(READ_CHUNK),
            outbox: BytesMut::new(),
            keepalive: settings.keepalive,
            last_sent: now,
            last_received: now,
            ping_sent: None,
            last_pkid: 0,
            early: VecDeque::new(),
        };
        let mut connect = v4::Connect::new(client_id);
        connect.keep_alive = u16::try_from(settings.keepalive.as_secs()).unwrap_or(u16::MAX);
        connect.clean_session = settings.clean_session;
        if let Some((user, password)) = &settings.login {
            connect.set_login(user.as_str(), password.as_str());
        }
        client.queue(|buf| connect.write(buf))?;
        client.send()?;
        match client.expect("CONNACK", settings.connect_timeout)? {
            Packet::ConnAck(ack) if ack.code == ConnectReturnCode::Success => {
                Ok((client, ack.session_present))
            }
            Packet::ConnAck(ack) => Err(MqttError::Refused {
                server: server.address.clone(),
                code: ack.code,
            }),
            _ => Err(client.unexpected("CONNACK")),
        }
    }

    /// Subscribes to `filters` and waits for the SUBACK.
    pub fn subscribe(
        &mut self,
        filters: &[String],
        qos: Qos,
        timeout: Duration,
    ) -> Result<(), MqttError> {
        let mut subscribe = v4::Subscribe::new_many(
            filters
                .iter()
                .map(|f| v4::SubscribeFilter::new(f.clone(), qos.into())),
        );
        subscribe.pkid = self.next_pkid();
        self.queue(|buf| subscribe.write(buf))?;
        self.send()?;
        // Publishes may arrive before the SUBACK (a persistent session's backlog): they
        // are kept for `next`.
        let deadline = Instant::now() + timeout;
        let mut early = Vec::new();
        let answer = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_packet(left)? {
                Some(Packet::SubAck(ack)) => break ack,
                Some(other) => early.push(other),
                None => return Err(self.no_answer("SUBACK", timeout)),
            }
        };
        self.early.extend(early);
        let refused = answer
            .return_codes
            .iter()
            .position(|code| matches!(code, v4::SubscribeReasonCode::Failure));
        match refused {
            Some(index) => Err(MqttError::SubscriptionRefused {
                server: self.server().to_string(),
                filter: filters.get(index).cloned().unwrap_or_default(),
            }),
            None => Ok(()),
        }
    }

    /// A fresh packet id (never 0).
    pub fn next_pkid(&mut self) -> u16 {
        self.last_pkid = self.last_pkid.checked_add(1).unwrap_or(1);
        self.last_pkid
    }

    /// Encodes a packet into the send buffer.
    pub fn queue(
        &mut self,
        write: impl FnOnce(&mut BytesMut) -> Result<usize, mqttbytes::Error>,
    ) -> Result<(), MqttError> {
        write(&mut self.outbox).map(drop).map_err(MqttError::Encode)
    }

    /// Bytes queued and not sent yet.
    pub fn queued(&self) -> usize {
        self.outbox.len()
    }

    /// Sends everything queued.
    pub fn send(&mut self) -> Result<(), MqttError> {
        if self.outbox.is_empty() {
            return Ok(());
        }
        self.conn.write_all(&self.outbox, WRITE_TIMEOUT)?;
        self.outbox.clear();
        self.last_sent = Instant::now();
        Ok(())
    }

    /// Sends a PINGREQ when nothing was sent for half the keep-alive interval, and fails
    /// when the last one got no answer within the interval.
    pub fn keep_alive(&mut self) -> Result<(), MqttError> {
        if self.keepalive.is_zero() {
            return Ok(());
        }
        if let Some(sent) = self.ping_sent {
            if self.last_received > sent {
                self.ping_sent = None;
            } else if sent.elapsed() > self.keepalive {
                return Err(self.no_answer("PINGRESP", self.keepalive));
            }
        }
        if self.ping_sent.is_none() && self.last_sent.elapsed() >= self.keepalive / 2 {
            self.queue(|buf| v4::PingReq.write(buf))?;
            self.send()?;
            self.ping_sent = Some(Instant::now());
        }
        Ok(())
    }

    /// The next packet from the broker, waiting at most `wait` for it (at least one read of
    /// a millisecond); `None` when none came. PINGRESPs are consumed here.
    pub fn next(&mut self, wait: Duration) -> Result<Option<Packet>, MqttError> {
        match self.early.pop_front() {
            Some(packet) => Ok(Some(packet)),
            None => self.read_packet(wait),
        }
    }

    /// The next packet read from the socket, waiting at most `wait`.
    fn read_packet(&mut self, wait: Duration) -> Result<Option<Packet>, MqttError> {
        let deadline = Instant::now() + wait;
        loop {
            match v4::read(&mut self.inbox, MAX_PACKET_BYTES) {
                Ok(Packet::PingResp) => continue,
                Ok(packet) => return Ok(Some(packet)),
                Err(mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(error) => return Err(self.malformed(error)),
            }
            // At least one short read, even when `wait` is zero or over.
            let left = deadline.saturating_duration_since(Instant::now());
            if !self.fill(left)? {
                return Ok(None);
            }
        }
    }

    /// Reads more bytes into the inbox, waiting at most `wait`; false when none came.
    fn fill(&mut self, wait: Duration) -> Result<bool, MqttError> {
        let start = self.inbox.len();
        self.inbox.resize(start + READ_CHUNK, 0);
        let read = self.conn.read_some(&mut self.inbox[start..], wait);
        let read = match read {
            Ok(read) => read.unwrap_or(0),
            Err(e) => {
                self.inbox.truncate(start);
                return Err(e.into());
            }
        };
        self.inbox.truncate(start + read);
        if read > 0 {
            self.last_received = Instant::now();
        }
        Ok(read > 0)
    }

    /// Waits up to `timeout` for the next packet, which must be `what`.
    fn expect(&mut self, what: &'static str, timeout: Duration) -> Result<Packet, MqttError> {
        self.read_packet(timeout)?
            .ok_or_else(|| self.no_answer(what, timeout))
    }

    /// Sends DISCONNECT (best effort: the connection is dropped anyway).
    pub fn disconnect(mut self) {
        if self.queue(|buf| v4::Disconnect.write(buf)).is_ok() {
            let _ = self.send();
        }
    }

    /// The `host:port` this client is connected to.
    pub fn server(&self) -> &str {
        self.conn.address()
    }

    pub fn unexpected(&self, waiting_for: &'static str) -> MqttError {
        MqttError::Unexpected {
            server: self.server().to_string(),
            waiting_for,
        }
    }

    pub fn no_answer(&self, waiting_for: &'static str, after: Duration) -> MqttError {
        MqttError::NoAnswer {
            server: self.server().to_string(),
            waiting_for,
            after,
        }
    }

    fn malformed(&self, error: mqttbytes::Error) -> MqttError {
        MqttError::Malformed {
            server: self.server().to_string(),
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Config {
        pairs.iter().copied().collect()
    }

    #[test]
    fn server_uris_take_tcp_host_port_and_refuse_tls_with_the_fix() {
        let settings = Settings::from_config(&config(&[(
            SERVER_URI,
            "tcp://127.0.0.1:1884, mqtt://broker",
        )]))
        .unwrap();
        let addresses: Vec<&str> = settings
            .servers
            .iter()
            .map(|s| s.address.as_str())
            .collect();
        assert_eq!(addresses, ["127.0.0.1:1884", "broker:1883"]);
        assert_eq!(settings.qos, Qos::AtLeastOnce);
        assert!(!settings.clean_session);
        let errors = Settings::from_config(&config(&[(SERVER_URI, "ssl://b:8883")])).unwrap_err();
        assert_eq!(errors[0].key, SERVER_URI);
        assert!(
            errors[0].message.contains("TLS is not supported"),
            "{}",
            errors[0].message
        );
        let errors = Settings::from_config(&config(&[(SERVER_URI, "tcp://b:x")])).unwrap_err();
        assert!(errors[0].message.contains("not a port number"));
    }

    #[test]
    fn every_bad_key_is_reported_once() {
        let errors = Settings::from_config(&config(&[
            (QOS, "2"),
            (PASSWORD, "p"),
            (CONNECT_TIMEOUT, "60"),
            (CLEAN_SESSION, "yes"),
        ]))
        .unwrap_err();
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [SERVER_URI, PASSWORD, QOS, CLEAN_SESSION, CONNECT_TIMEOUT]
        );
        let errors = Settings::from_config(&config(&[(SERVER_URI, " , ")])).unwrap_err();
        assert_eq!(errors[0].message, "Request config key: mqtt.server.uri");
    }

    #[test]
    fn a_refused_login_is_fatal_and_a_busy_broker_retriable() {
        let refused = |code| MqttError::Refused {
            server: "b:1883".into(),
            code,
        };
        assert!(matches!(
            TaskError::from(refused(ConnectReturnCode::BadUserNamePassword)),
            TaskError::Fatal(m) if m.contains("check mqtt.username and mqtt.password")
        ));
        assert!(matches!(
            TaskError::from(refused(ConnectReturnCode::ServiceUnavailable)),
            TaskError::Retriable(_)
        ));
    }
}
