//! A real MQTT broker for the MQTT tests and benchmark: Debian's `mosquitto` on a free
//! loopback port with its own config and log, killed by PID when dropped; plus the
//! `mosquitto_pub`/`mosquitto_sub` clients. `.ci/run` installs them (its "MQTT connectors"
//! block).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A workspace whose plugin dir also holds the bundled MQTT connectors.
pub fn mqtt_workspace() -> super::Workspace {
    let ws = super::Workspace::new();
    for name in ["mqtt-source.wasm", "mqtt-sink.wasm"] {
        std::fs::copy(
            super::bundled_plugins().join(name),
            ws.plugin_dir().join(name),
        )
        .unwrap_or_else(|e| panic!("copy {name} (run scripts/build-plugins.sh): {e}"));
    }
    ws
}

/// Starts a host on `ws` and waits until the MQTT connectors are loaded (on a busy
/// machine their compilation may outlast the host's `ready`).
pub fn start_host(ws: &super::Workspace) -> super::Host {
    let host = ws.start();
    super::wait_for(
        Duration::from_secs(120),
        "the MQTT connectors to load",
        || {
            let body = super::json_get(&host, "/connector-plugins").body;
            body.contains("mqtt-source") && body.contains("mqtt-sink") && !body.contains("loading")
        },
    );
    host
}

/// The path of `program` (on PATH, or in `/usr/sbin` where Debian puts the broker);
/// panics naming the `.ci/run` block that installs it when it is missing.
pub fn require(program: &str) -> PathBuf {
    let runs = |path: &PathBuf| {
        Command::new(path)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    [
        PathBuf::from(program),
        PathBuf::from("/usr/sbin").join(program),
    ]
    .into_iter()
    .find(runs)
    .unwrap_or_else(|| {
        panic!(
            "{program} is not installed: the \"MQTT connectors\" block of .ci/run installs it \
                 (apt-get install -y --no-install-recommends mosquitto mosquitto-clients)"
        )
    })
}

/// One broker process.
pub struct Mosquitto {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl Mosquitto {
    /// Starts a broker (anonymous access, no persistence, no queue limit for offline
    /// sessions, mosquitto's default inflight window of 20) and waits until it accepts
    /// connections.
    pub fn start() -> Mosquitto {
        Mosquitto::start_with("")
    }

    /// Starts a broker with extra config lines.
    pub fn start_with(extra: &str) -> Mosquitto {
        let mosquitto = require("mosquitto");
        let dir = tempfile::tempdir().expect("temp dir");
        let port = super::free_port();
        let log = dir.path().join("mosquitto.log");
        let config = dir.path().join("mosquitto.conf");
        // `user root` keeps a broker started by root from switching to the `mosquitto`
        // user, who could not write the log in this directory.
        let text = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             max_queued_messages 0\nuser root\nlog_dest file {}\nlog_type error\n\
             log_type warning\nlog_type notice\nlog_type information\nlog_type subscribe\n{extra}\n",
            log.display()
        );
        std::fs::write(&config, text).expect("write mosquitto config");
        let child = Command::new(mosquitto)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        let broker = Mosquitto { port, dir, child };
        // Waiting for the log line rather than connecting keeps the broker's log free of
        // connections the test did not make.
        super::wait_for(Duration::from_secs(10), "mosquitto to listen", || {
            broker.log().contains(" running")
        });
        broker
    }

    /// `tcp://127.0.0.1:<port>`, for `mqtt.server.uri`.
    pub fn uri(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>`, for `network.allow`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Everything the broker logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// The log file's path.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.log")
    }

    /// Waits until `client` subscribed to `filter` (the broker logs `<client> <qos> <filter>`).
    pub fn wait_subscribed(&self, client: &str, filter: &str) {
        let needle = format!(": {client} ");
        super::wait_for(
            Duration::from_secs(30),
            &format!("{client} to subscribe to {filter}"),
            || {
                self.log()
                    .lines()
                    .any(|l| l.contains(&needle) && l.ends_with(&format!(" {filter}")))
            },
        );
    }

    /// Publishes each of `lines` as one message on `topic` with QoS 1 (`mosquitto_pub -l`)
    /// and waits until the client is done.
    pub fn publish_lines(&self, topic: &str, lines: &[String]) {
        let mut publisher = self.publisher(topic);
        let mut stdin = publisher.stdin.take().expect("stdin");
        for line in lines {
            writeln!(stdin, "{line}").expect("write to mosquitto_pub");
        }
        drop(stdin);
        let status = publisher.wait().expect("wait for mosquitto_pub");
        assert!(status.success(), "mosquitto_pub failed: {status}");
    }

    /// A `mosquitto_pub -l` on `topic` (QoS 1) that publishes each line written to its
    /// stdin and exits when stdin closes.
    pub fn publisher(&self, topic: &str) -> Child {
        self.client("mosquitto_pub")
            .args(["-t", topic, "-l"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start mosquitto_pub")
    }

    /// A `mosquitto_sub -v` (QoS 1, client id `id`) on `filter` that exits after `count`
    /// messages or `timeout_s` seconds; its stdout lines are `<topic> <payload>`. Returns
    /// once the broker logged the subscription.
    pub fn subscriber(&self, id: &str, filter: &str, count: usize, timeout_s: u32) -> Child {
        let child = self
            .client("mosquitto_sub")
            .args(["-v", "-i", id, "-t", filter, "-C", &count.to_string(), "-W"])
            .arg(timeout_s.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start mosquitto_sub");
        self.wait_subscribed(id, filter);
        child
    }
}

impl Mosquitto {
    /// `program` (a mosquitto client) aimed at this broker with QoS 1.
    fn client(&self, program: &str) -> Command {
        let mut command = Command::new(require(program));
        command.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q", "1"]);
        command
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- mosquitto log (port {}) ----\n{}",
                self.port,
                self.log()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
