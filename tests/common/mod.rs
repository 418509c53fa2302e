//! Test harness: runs a real `wasm-connect` process on a free loopback port with its own
//! data and plugin directories, and talks to it over HTTP.

#![allow(dead_code)] // each test binary uses part of the harness

pub mod metrics;
pub mod mosquitto;
pub mod nats;
pub mod neighbourhood;
pub mod postgres;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The bundled plugins built into the repository's `plugins/`.
pub fn bundled_plugins() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins")
}

/// A test component in `tests/fixtures/` (`name` relative to it, without `.wasm`), built by
/// `scripts/build-plugins.sh` or `tests/hostile/build.sh`.
pub fn fixture(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../tests/fixtures/{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-plugins.sh or tests/hostile/build.sh",
        path.display()
    );
    path
}

/// Publishes `from` as `to` the safe way: a temporary name, then a rename.
pub fn publish(from: &Path, to: &Path) {
    let temp = to.with_file_name(format!(
        ".{}.tmp",
        to.file_name().unwrap().to_string_lossy()
    ));
    std::fs::copy(from, &temp).unwrap();
    std::fs::rename(&temp, to).unwrap();
}

/// The compiled-code cache entries (`*.cwasm`) in a data dir, sorted.
pub fn cache_entries(data_dir: &Path) -> Vec<PathBuf> {
    let dir = data_dir.join("plugin-cache");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "cwasm"))
        .collect();
    entries.sort();
    entries
}

/// A temporary directory holding the host's dirs (`host/plugins` with the bundled plugins,
/// `host/data`) apart from the files tests give connectors (`files/`): a grant never reaches
/// the host's own dirs, so connector files must not sit beside them.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        for sub in ["files", "host/plugins"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("workspace dir");
        }
        let workspace = Workspace { dir };
        for name in ["file-source.wasm", "file-sink.wasm"] {
            std::fs::copy(
                bundled_plugins().join(name),
                workspace.plugin_dir().join(name),
            )
            .unwrap_or_else(|e| panic!("copy {name} (run scripts/build-plugins.sh): {e}"));
        }
        workspace
    }

    /// A file (or directory) for connectors, under `files/`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join("files").join(name)
    }

    /// A directory of the host's own (data or plugin dir), under `host/`.
    pub fn host_path(&self, name: &str) -> PathBuf {
        self.dir.path().join("host").join(name)
    }

    pub fn plugin_dir(&self) -> PathBuf {
        self.host_path("plugins")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.host_path("data")
    }

    /// Copies the test connector `tests/fixtures/hostile/<file>` into the plugin dir.
    pub fn add_hostile_plugin(&self, file: &str) {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/hostile")
            .join(file);
        std::fs::copy(&fixture, self.plugin_dir().join(file))
            .unwrap_or_else(|e| panic!("copy {file} (run tests/hostile/build.sh): {e}"));
    }

    /// Starts a host on this workspace's directories.
    pub fn start(&self) -> Host {
        Host::start(&self.data_dir(), &self.plugin_dir())
    }
}

/// A running `wasm-connect` process; killed when dropped.
pub struct Host {
    child: Child,
    /// The RocketMQ-Connect API.
    pub base: String,
    /// The Kafka-Connect-shaped JSON API.
    pub kafka: String,
    log: Arc<Mutex<String>>,
    /// The thread copying the process's stdout into `log`; ends when the process exits.
    reader: Option<std::thread::JoinHandle<()>>,
    /// The bearer token `get` sends, when the host was started with one in its environment.
    token: Option<String>,
}

impl Host {
    pub fn start(data_dir: &Path, plugin_dir: &Path) -> Host {
        Host::start_with(data_dir, plugin_dir, &[])
    }

    /// Starts a host with extra command-line arguments.
    pub fn start_with(data_dir: &Path, plugin_dir: &Path, extra: &[&str]) -> Host {
        Host::launch(&[], data_dir, plugin_dir, extra, &[], true)
    }

    /// Starts a host and returns as soon as its APIs listen, before it logs `ready` (plugins
    /// may still be loading, stored connectors not yet restored).
    pub fn start_listening(data_dir: &Path, plugin_dir: &Path, extra: &[&str]) -> Host {
        Host::launch(&[], data_dir, plugin_dir, extra, &[], false)
    }

    /// Starts a host through `wrapper`, a command that runs the program and arguments that
    /// follow it (e.g. `["sh", "-c", "ulimit -n 256 && exec \"$@\"", "sh"]`); the process
    /// must keep its id (`exec`).
    pub fn start_via(wrapper: &[&str], data_dir: &Path, plugin_dir: &Path, extra: &[&str]) -> Host {
        Host::launch(wrapper, data_dir, plugin_dir, extra, &[], true)
    }

    /// Starts a host with extra command-line arguments and environment variables; when they
    /// set `WASM_CONNECT_AUTH_TOKEN`, `get` sends it (see [`Host::auth`]).
    pub fn start_env(
        data_dir: &Path,
        plugin_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Host {
        Host::launch(&[], data_dir, plugin_dir, extra, env, true)
    }

    fn launch(
        wrapper: &[&str],
        data_dir: &Path,
        plugin_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        until_ready: bool,
    ) -> Host {
        let kafka_port = free_port().to_string();
        let token = env
            .iter()
            .find(|(name, _)| *name == "WASM_CONNECT_AUTH_TOKEN")
            .map(|(_, token)| token.to_string());
        let binary = env!("CARGO_BIN_EXE_wasm-connect");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        let mut child = command
            .args(["--http-port", "0", "--kafka-api-port", &kafka_port])
            .args(extra)
            .envs(env.iter().copied())
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--plugin-dir")
            .arg(plugin_dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start wasm-connect");
        let stdout = child.stdout.take().expect("stdout");
        let log = Arc::new(Mutex::new(String::new()));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains(" ready") && line.contains("worker=") {
                    let _ = port_tx.send(String::new());
                } else if let Some(rest) = line.split("REST API on http://").nth(1) {
                    let _ = port_tx.send(
                        rest.split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string(),
                    );
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut wait = || {
            port_rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| {
                    let _ = child.kill();
                    panic!("wasm-connect did not start listening");
                })
        };
        let address = wait();
        if until_ready {
            let _ready = wait();
        }
        Host {
            child,
            base: format!("http://{address}"),
            kafka: format!("http://127.0.0.1:{kafka_port}"),
            log,
            reader: Some(reader),
            token,
        }
    }

    /// The `Authorization` header the host requires, if it was started with a token.
    pub fn auth(&self) -> Vec<(&'static str, String)> {
        self.token
            .iter()
            .map(|token| ("Authorization", format!("Bearer {token}")))
            .collect()
    }

    /// GET `path` (already encoded); returns status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        let auth = self.auth();
        let headers: Vec<(&str, &str)> = auth
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        let answer = call("GET", &format!("{}{path}", self.base), None, &headers);
        (answer.status, answer.body)
    }

    /// GET a 200 answer's body.
    pub fn get_ok(&self, path: &str) -> String {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path} answered {status}: {body}");
        body
    }

    /// `GET /connectors/{name}?config=<json>`, URL-encoding the config.
    pub fn create(&self, name: &str, config: &str) -> (u16, String) {
        self.get(&format!("/connectors/{name}?config={}", encode(config)))
    }

    /// Polls `/connectors/{name}/status` until it says `running`.
    pub fn wait_running(&self, name: &str) {
        wait_for(Duration::from_secs(30), &format!("{name} running"), || {
            self.get_ok(&format!("/connectors/{name}/status")) == "running"
        });
    }

    /// The process id (the host's own, also when started through a wrapper that `exec`s).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the host logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(self) -> std::process::ExitStatus {
        self.terminate_logged().0
    }

    /// SIGTERM, waits for a clean exit and returns everything the process logged.
    pub fn terminate_logged(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return (status, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "wasm-connect did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- wasm-connect log ----\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Percent-encodes a query value.
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Polls `check` until it holds, or panics after `limit`.
pub fn wait_for(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// The files under `root` whose bytes contain `needle`: for leak checks.
pub fn files_containing(root: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files_under(root)
        .into_iter()
        .filter(|file| {
            let bytes = std::fs::read(file).unwrap_or_default();
            !needle.is_empty() && bytes.windows(needle.len()).any(|window| window == needle)
        })
        .collect()
}

/// Appends `text` to `path`, creating the file when it is missing.
pub fn try_append(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(text.as_bytes())
}

/// Appends `text` to `path`, creating the file when it is missing; panics naming the file
/// when it cannot.
pub fn append(path: &Path, text: &str) {
    try_append(path, text).unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
}

/// Serialises the tests of one test binary that must not run side by side (a poisoned lock
/// is fine: the next test starts afresh).
static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the test binary's one turn until dropped.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Lines of a file, as the file sink writes them (each value plus `\n`).
pub fn read_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.split_terminator('\n').map(str::to_string).collect()
}

/// The lines of `path` that end with a newline: a line a sink is still writing is left out
/// (for outputs that are parsed line by line while they grow).
pub fn read_written_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let written = text.rfind('\n').map_or("", |end| &text[..=end]);
    written.split_terminator('\n').map(str::to_string).collect()
}

/// The media type of a `Content-Type` header value, without parameters, lower-cased.
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Ids of the live processes whose command line has `arg` as one of its arguments
/// (Linux `/proc`; empty elsewhere). A workspace's data dir names one host.
pub fn pids_with_arg(arg: &Path) -> Vec<u32> {
    let wanted = arg.as_os_str().as_encoded_bytes().to_vec();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.split(|b| *b == 0).any(|a| a == wanted.as_slice()))
        })
        .collect()
}

/// An HTTP answer: status, content type and body.
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub location: Option<String>,
    pub body: String,
}

impl Answer {
    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

/// Sends `method` to `url` with an optional JSON body and extra headers.
pub fn call(method: &str, url: &str, body: Option<&str>, headers: &[(&str, &str)]) -> Answer {
    let mut request = ureq::request(method, url).timeout(Duration::from_secs(60));
    for (name, value) in headers {
        request = request.set(name, value);
    }
    let result = match body {
        Some(body) => {
            let has_type = headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
            let request = if has_type {
                request
            } else {
                request.set("Content-Type", "application/json")
            };
            request.send_string(body)
        }
        None => request.call(),
    };
    let response = match result {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    Answer {
        status: response.status(),
        content_type: response
            .header("content-type")
            .unwrap_or_default()
            .to_string(),
        location: response.header("location").map(String::from),
        body: response.into_string().unwrap_or_default(),
    }
}

/// `GET path` on the JSON API.
pub fn json_get(host: &Host, path: &str) -> Answer {
    call("GET", &format!("{}{path}", host.kafka), None, &[])
}

/// `method path` on the JSON API with a JSON body.
pub fn json_send(host: &Host, method: &str, path: &str, body: &serde_json::Value) -> Answer {
    call(
        method,
        &format!("{}{path}", host.kafka),
        Some(&body.to_string()),
        &[],
    )
}

/// `POST /connectors` on the JSON API.
pub fn json_create(host: &Host, name: &str, config: serde_json::Value) -> Answer {
    json_send(
        host,
        "POST",
        "/connectors",
        &serde_json::json!({"name": name, "config": config}),
    )
}

/// CPU time (user + system) the process `pid` used so far, from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // The fields after the command name (which may hold spaces and parentheses).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime: fields 14 and 15 of the line, 12 and 13 after the name.
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let ticks = field(11).expect("utime") + field(12).expect("stime");
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

/// The resident set of the process `pid`, in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc status")
}

impl Workspace {
    /// Copies the bundled connector `plugins/<file>` into the plugin dir.
    pub fn add_bundled_plugin(&self, file: &str) {
        std::fs::copy(bundled_plugins().join(file), self.plugin_dir().join(file))
            .unwrap_or_else(|e| panic!("copy {file} (run scripts/build-plugins.sh): {e}"));
    }
}
