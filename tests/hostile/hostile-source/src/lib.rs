//! `hostile-source`: a test-only source connector that misbehaves on purpose, one way per
//! connector, picked by the config key `behaviour`. `tests/hostile.rs` runs it beside a
//! healthy pipeline to prove that the host contains it. Never put it in a plugin dir that
//! serves real data.
//!
//! | `behaviour`       | what it does |
//! | ----------------- | ------------ |
//! | `loop-validate`   | the connector's `validate` spins forever |
//! | `loop-start`      | the task's `start` spins forever |
//! | `loop-poll`       | `poll` spins forever |
//! | `sleep-poll`      | `poll` sleeps for an hour: blocked in the host, burning no CPU |
//! | `memory-bomb`     | `poll` allocates and touches memory, 1 MiB at a time, until it dies |
//! | `recursion`       | `poll` recurses without bound (wasm call stack, not linear memory) |
//! | `oversized-batch` | `poll` returns `4 × max_records` records of 1 KiB each |
//! | `read-passwd`     | `poll` reads `/etc/passwd`; emits one record `read /etc/passwd: allowed` or `… denied: <error>` |
//! | `write-outside`   | `poll` creates the file named by `target`; emits `write <path>: allowed` or `… denied: <error>` |
//! | `socket`          | `poll` connects to `addr` over TCP; emits `connect <addr>: allowed` or `… denied: <error>` |
//! | `env`             | `poll` emits `env: <n> vars, args: <m>` |
//! | `panic`           | `poll` panics with `hostile panic for testing` |
//! | `trap-always`     | every task `start` traps (`unreachable`): a crash loop |
//! | `spin-cpu`        | each `poll` burns `spin_ms` ms of CPU (default 40) and returns one small record, forever |
//! | `chatty`          | each `poll` writes `chatty_lines` lines (default 1000) to stdout and to stderr, and returns one record `chatty poll <n>` |
//! | `quiet`           | behaves: returns nothing |
//! | `echo-config`     | the task's `start` writes every config value it was given to the host `log`, stdout and stderr (`<stream> <key>=<value>`); `poll` returns nothing |
//! | `task-config-attack` | `task-configs` adds `stolen.env` = `${env:WASM_CONNECT_AUTH_TOKEN}`, `stolen.file` = `${file:<secret_file>:password}`, `network.allow` = `addr`, and (when `plugin_dir` is set) its own write-typed path key `escalate.path` = `<plugin_dir>/owned.wasm`; `poll` emits one record `env=<stolen.env> file=<stolen.file> \| connect <addr>: … \| write <escalate.path>: …` |
//! | `fresh-partitions` | each poll returns 100 records, each in a new partition with a `position_bytes`-byte position (default 65000) |
//! | `topic-per-record` | each poll returns 100 records, each to a new topic `<topic>-<n>` |
//! | `log-flood`       | each poll makes `log_calls` (default 1,000,000) calls of the `log` host function, then returns one record |
//! | `disk-fill`       | each poll appends 1 MiB to `fill_file` (a path-typed key: a granted file), without end, and returns one record |
//! | `hold-connections` | the first poll opens `connections` (default 20) TCP connections to `addr` and keeps them open, emitting `held <k> of <n>` and, when one was refused, `: <error>`; the first poll `hold_ms` ms later (default 0) closes them all and connects once more, emitting `after close: connect <addr>: allowed` or `… denied: <error>` |
//! | `send-flood`      | the first poll connects to `addr` and writes `bytes` bytes (default 1 MiB) to it, emitting `sent <n> bytes to <addr> in <ms> ms` or `send-flood <addr>: <error>` |
//! | `udp`             | the first poll sends one datagram to `addr` over UDP; emits `udp <addr>: allowed` or `… denied: <error>` |
//! | `listen`          | the first poll listens for TCP connections on `0.0.0.0:0`; emits `listen: allowed on <address>` or `listen: denied: <error>` |
//!
//! The probing behaviours (`read-passwd`, `write-outside`, `socket`, `env`, `send-flood`,
//! `udp`, `listen`) emit their one record to the connector's `topic` and then return nothing, so a test reads the verdict
//! with a file sink. `target` and `addr` are plain text keys, not path-typed ones: the host
//! grants this connector no files at all.

use std::hint::black_box;
use std::io::Write;
use std::str::FromStr;
use std::time::{Duration, Instant};

use wasm_connect_sdk::{
    BatchWriter, Config, ConfigDef, ConfigError, Connector, Descriptor, Host, Kind, LogLevel,
    PathAccess, Record, SourceConnector, SourceTask, TaskError, ValueType,
};

/// The panic message of `behaviour=panic`; tests look for it in the task's trace.
pub const PANIC_MESSAGE: &str = "hostile panic for testing";
/// Value size of each record of `oversized-batch`.
const OVERSIZED_VALUE: usize = 1024;
/// Partition of every record this connector emits.
const PARTITION: &str = "hostile";

/// One way to misbehave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    LoopValidate,
    LoopStart,
    LoopPoll,
    SleepPoll,
    MemoryBomb,
    Recursion,
    OversizedBatch,
    ReadPasswd,
    WriteOutside,
    Socket,
    Env,
    Panic,
    TrapAlways,
    SpinCpu,
    Chatty,
    Quiet,
    TaskConfigAttack,
    FreshPartitions,
    TopicPerRecord,
    LogFlood,
    DiskFill,
    EchoConfig,
    HoldConnections,
    SendFlood,
    Udp,
    Listen,
}

/// Every behaviour with its config spelling.
const BEHAVIOURS: &[(&str, Behaviour)] = &[
    ("loop-validate", Behaviour::LoopValidate),
    ("loop-start", Behaviour::LoopStart),
    ("loop-poll", Behaviour::LoopPoll),
    ("sleep-poll", Behaviour::SleepPoll),
    ("memory-bomb", Behaviour::MemoryBomb),
    ("recursion", Behaviour::Recursion),
    ("oversized-batch", Behaviour::OversizedBatch),
    ("read-passwd", Behaviour::ReadPasswd),
    ("write-outside", Behaviour::WriteOutside),
    ("socket", Behaviour::Socket),
    ("env", Behaviour::Env),
    ("panic", Behaviour::Panic),
    ("trap-always", Behaviour::TrapAlways),
    ("spin-cpu", Behaviour::SpinCpu),
    ("chatty", Behaviour::Chatty),
    ("quiet", Behaviour::Quiet),
    ("task-config-attack", Behaviour::TaskConfigAttack),
    ("fresh-partitions", Behaviour::FreshPartitions),
    ("topic-per-record", Behaviour::TopicPerRecord),
    ("log-flood", Behaviour::LogFlood),
    ("disk-fill", Behaviour::DiskFill),
    ("echo-config", Behaviour::EchoConfig),
    ("hold-connections", Behaviour::HoldConnections),
    ("send-flood", Behaviour::SendFlood),
    ("udp", Behaviour::Udp),
    ("listen", Behaviour::Listen),
];

/// Records per poll of `fresh-partitions` and `topic-per-record`.
const FLOOD_RECORDS: u32 = 100;

impl FromStr for Behaviour {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        BEHAVIOURS
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, b)| *b)
            .ok_or_else(|| {
                let names: Vec<&str> = BEHAVIOURS.iter().map(|(name, _)| *name).collect();
                format!("unknown behaviour {text:?}; one of: {}", names.join(", "))
            })
    }
}

pub struct HostileSource;

const CONFIG_DEFS: &[ConfigDef] = &[
    ConfigDef::required("topic", "The topic the emitted records go to."),
    ConfigDef::required(
        "behaviour",
        "How to misbehave: see the crate documentation.",
    ),
    ConfigDef::optional(
        "target",
        "write-outside: the file to create (not a granted path).",
    ),
    ConfigDef::optional(
        "addr",
        "socket, hold-connections, send-flood, udp: the `ip:port` or `host:port` to reach.",
    ),
    ConfigDef::optional(
        "connections",
        "hold-connections: TCP connections to open and keep.",
    )
    .typed(ValueType::Integer)
    .default_value("20"),
    ConfigDef::optional(
        "hold_ms",
        "hold-connections: how long to keep them before closing them.",
    )
    .typed(ValueType::Integer)
    .default_value("0"),
    ConfigDef::optional("bytes", "send-flood: bytes to send.")
        .typed(ValueType::Integer)
        .default_value("1048576"),
    ConfigDef::optional("spin_ms", "spin-cpu: milliseconds of CPU burnt per poll.")
        .typed(ValueType::Integer)
        .default_value("40"),
    ConfigDef::optional(
        "chatty_lines",
        "chatty: lines written to stdout and to stderr per poll.",
    )
    .typed(ValueType::Integer)
    .default_value("1000"),
    ConfigDef::optional(
        "escalate.path",
        "task-config-attack: a write-typed path key the connector sets for itself.",
    )
    .path(PathAccess::WriteFile),
    ConfigDef::optional(
        "secret_file",
        "task-config-attack: a properties file whose `password` line it asks the host for.",
    ),
    ConfigDef::optional(
        "plugin_dir",
        "task-config-attack: the host's plugin dir, which it grants itself through `escalate.path`.",
    ),
    ConfigDef::optional(
        "position_bytes",
        "fresh-partitions: length of each record's position.",
    )
    .typed(ValueType::Integer)
    .default_value("65000"),
    ConfigDef::optional("log_calls", "log-flood: `log` host calls per poll.")
        .typed(ValueType::Integer)
        .default_value("1000000"),
    ConfigDef::optional("fill_file", "disk-fill: the granted file to fill.")
        .path(PathAccess::WriteFile),
];

impl Connector for HostileSource {
    fn descriptor() -> Descriptor {
        Descriptor {
            name: "hostile-source",
            version: env!("CARGO_PKG_VERSION"),
            kind: Kind::Source,
            description: "Test-only: misbehaves as its config key `behaviour` says.",
            aliases: &[],
            config_defs: CONFIG_DEFS,
        }
    }

    fn validate(config: &Config) -> Result<(), Vec<ConfigError>> {
        let behaviour = behaviour_of(config).map_err(|message| {
            vec![ConfigError {
                key: "behaviour".into(),
                message,
            }]
        })?;
        if behaviour == Behaviour::LoopValidate {
            spin_forever();
        }
        Ok(())
    }

    /// `task-config-attack` writes into its task config what the host must not honour.
    fn task_configs(config: &Config, _max_tasks: u32) -> Result<Vec<Config>, String> {
        let mut task = config.clone();
        if behaviour_of(config) == Ok(Behaviour::TaskConfigAttack) {
            let set = |task: &mut Config, key: &str, value: String| {
                task.0.retain(|(k, _)| k != key);
                task.0.push((key.to_string(), value));
            };
            set(&mut task, "stolen.env", "${env:WASM_CONNECT_AUTH_TOKEN}".into());
            let secret_file = config.get("secret_file").unwrap_or("/etc/passwd");
            set(&mut task, "stolen.file", format!("${{file:{secret_file}:password}}"));
            if let Some(addr) = config.get("addr") {
                set(&mut task, "network.allow", addr.to_string());
            }
            if let Some(dir) = config.get("plugin_dir") {
                set(&mut task, "escalate.path", format!("{dir}/owned.wasm"));
            }
        }
        Ok(vec![task])
    }
}

impl SourceConnector for HostileSource {
    type Task = HostileTask;
}

pub struct HostileTask {
    behaviour: Behaviour,
    config: Config,
    /// A probing behaviour emitted its one record.
    probed: bool,
    /// Records emitted so far: the next record's position.
    emitted: u64,
    /// What `memory-bomb` holds on to.
    hoard: Vec<Vec<u8>>,
    /// The connections `hold-connections` keeps open, since when.
    held: Vec<std::net::TcpStream>,
    held_since: Option<Instant>,
}

impl SourceTask for HostileTask {
    fn start(config: &Config, host: &dyn Host) -> Result<Self, TaskError> {
        let behaviour = behaviour_of(config).map_err(TaskError::Fatal)?;
        match behaviour {
            Behaviour::LoopStart => spin_forever(),
            Behaviour::TrapAlways => trap(),
            Behaviour::EchoConfig => {
                for (key, value) in &config.0 {
                    host.log(LogLevel::Info, &format!("log {key}={value}"));
                    println!("stdout {key}={value}");
                    eprintln!("stderr {key}={value}");
                }
            }
            _ => {}
        }
        Ok(HostileTask {
            behaviour,
            config: config.clone(),
            probed: false,
            emitted: 0,
            hoard: Vec::new(),
            held: Vec::new(),
            held_since: None,
        })
    }

    fn poll(
        &mut self,
        out: &mut BatchWriter,
        max_records: u32,
        _max_bytes: u32,
    ) -> Result<(), TaskError> {
        match self.behaviour {
            Behaviour::LoopValidate
            | Behaviour::LoopStart
            | Behaviour::TrapAlways
            | Behaviour::EchoConfig
            | Behaviour::Quiet => Ok(()),
            Behaviour::LoopPoll => spin_forever(),
            Behaviour::SleepPoll => {
                std::thread::sleep(Duration::from_secs(3600));
                Ok(())
            }
            Behaviour::MemoryBomb => self.memory_bomb(),
            Behaviour::Recursion => {
                let depth = recurse(0);
                Err(TaskError::Fatal(format!(
                    "recursion ended at depth {depth}, which it never should"
                )))
            }
            Behaviour::OversizedBatch => {
                let value = [b'x'; OVERSIZED_VALUE];
                for _ in 0..max_records.saturating_mul(4).max(4) {
                    self.emit(out, &value)?;
                }
                Ok(())
            }
            Behaviour::ReadPasswd => {
                self.probe_once(out, || match std::fs::read_to_string("/etc/passwd") {
                    Ok(_) => "read /etc/passwd: allowed".to_string(),
                    Err(e) => format!("read /etc/passwd: denied: {e}"),
                })
            }
            Behaviour::WriteOutside => {
                let target = self
                    .config
                    .get("target")
                    .unwrap_or("/tmp/wasm-connect-hostile-write-outside")
                    .to_string();
                self.probe_once(out, || {
                    match std::fs::File::create(&target)
                        .and_then(|mut f| f.write_all(b"hostile-source was here\n"))
                    {
                        Ok(()) => format!("write {target}: allowed"),
                        Err(e) => format!("write {target}: denied: {e}"),
                    }
                })
            }
            Behaviour::Socket => {
                let addr = self.addr();
                self.probe_once(out, || match std::net::TcpStream::connect(addr.as_str()) {
                    Ok(mut stream) => {
                        let _ = stream.write_all(b"hostile-source was here\n");
                        format!("connect {addr}: allowed")
                    }
                    Err(e) => format!("connect {addr}: denied: {e}"),
                })
            }
            Behaviour::Env => self.probe_once(out, || {
                format!(
                    "env: {} vars, args: {}",
                    std::env::vars_os().count(),
                    std::env::args_os().count()
                )
            }),
            Behaviour::Panic => panic!("{PANIC_MESSAGE}"),
            Behaviour::SpinCpu => {
                let spin = Duration::from_millis(self.number("spin_ms", 40));
                let started = Instant::now();
                let mut state = 0x9E37_79B9_7F4A_7C15u64;
                while started.elapsed() < spin {
                    for _ in 0..1000 {
                        state = black_box(state.rotate_left(5) ^ 0xA5A5_A5A5);
                    }
                }
                let value = format!("spin {} {state:x}", self.emitted);
                self.emit(out, value.as_bytes())
            }
            Behaviour::TaskConfigAttack => {
                let seen = |key: &str| self.config.get(key).unwrap_or("<unset>").to_string();
                let (env, file) = (seen("stolen.env"), seen("stolen.file"));
                let addr = self.config.get("addr").map(str::to_string);
                let escalate = self.config.get("escalate.path").map(str::to_string);
                self.probe_once(out, || {
                    let mut verdict = format!("env={env} file={file}");
                    if let Some(addr) = addr {
                        let outcome = match std::net::TcpStream::connect(addr.as_str()) {
                            Ok(_) => "allowed".to_string(),
                            Err(e) => format!("denied: {e}"),
                        };
                        verdict.push_str(&format!(" | connect {addr}: {outcome}"));
                    }
                    if let Some(path) = escalate {
                        let outcome = match std::fs::write(&path, b"hostile-source was here\n") {
                            Ok(()) => "allowed".to_string(),
                            Err(e) => format!("denied: {e}"),
                        };
                        verdict.push_str(&format!(" | write {path}: {outcome}"));
                    }
                    verdict
                })
            }
            Behaviour::Chatty => {
                let lines = self.number("chatty_lines", 1000);
                let (mut stdout, mut stderr) = (std::io::stdout().lock(), std::io::stderr().lock());
                for i in 0..lines {
                    let _ = writeln!(stdout, "hostile stdout line {i}");
                    let _ = writeln!(stderr, "hostile stderr line {i}");
                }
                let _ = stdout.flush();
                // One record per poll lets a test count the lines written.
                let value = format!("chatty poll {}", self.emitted);
                self.emit(out, value.as_bytes())
            }
            Behaviour::FreshPartitions => {
                let position = "9".repeat(self.number("position_bytes", 65_000) as usize);
                for _ in 0..max_records.min(FLOOD_RECORDS) {
                    let partition = format!("fresh-{}", self.emitted);
                    self.emitted += 1;
                    out.push(&Record {
                        value: b"fresh",
                        partition: &partition,
                        position: &position,
                        ..Record::default()
                    })
                    .map_err(|e| TaskError::Fatal(e.to_string()))?;
                }
                Ok(())
            }
            Behaviour::TopicPerRecord => {
                let prefix = self.config.get("topic").unwrap_or("hostile").to_string();
                for _ in 0..max_records.min(FLOOD_RECORDS) {
                    let topic = format!("{prefix}-{}", self.emitted);
                    self.emitted += 1;
                    let position = self.emitted.to_string();
                    out.push(&Record {
                        value: b"topic per record",
                        topic: &topic,
                        partition: PARTITION,
                        position: &position,
                        ..Record::default()
                    })
                    .map_err(|e| TaskError::Fatal(e.to_string()))?;
                }
                Ok(())
            }
            Behaviour::LogFlood => {
                for i in 0..self.number("log_calls", 1_000_000) {
                    host_log(&format!("hostile log line {i}\n\u{1b}[31mforged"));
                }
                let value = format!("log-flood poll {}", self.emitted);
                self.emit(out, value.as_bytes())
            }
            Behaviour::HoldConnections => self.hold_connections(out),
            Behaviour::SendFlood => {
                let addr = self.addr();
                let bytes = self.number("bytes", 1 << 20) as usize;
                self.probe_once(out, || {
                    let started = Instant::now();
                    let sent =
                        std::net::TcpStream::connect(addr.as_str()).and_then(|mut stream| {
                            let chunk = vec![b'f'; 64 << 10];
                            let mut left = bytes;
                            while left > 0 {
                                let n = left.min(chunk.len());
                                stream.write_all(&chunk[..n])?;
                                left -= n;
                            }
                            stream.flush()
                        });
                    match sent {
                        Ok(()) => format!(
                            "sent {bytes} bytes to {addr} in {} ms",
                            started.elapsed().as_millis()
                        ),
                        Err(e) => format!("send-flood {addr}: {e}"),
                    }
                })
            }
            Behaviour::Udp => {
                let addr = self.addr();
                self.probe_once(out, || {
                    let sent = std::net::UdpSocket::bind("0.0.0.0:0").and_then(|socket| {
                        socket.send_to(b"hostile-source was here", addr.as_str())
                    });
                    match sent {
                        Ok(_) => format!("udp {addr}: allowed"),
                        Err(e) => format!("udp {addr}: denied: {e}"),
                    }
                })
            }
            Behaviour::Listen => self.probe_once(out, || {
                match std::net::TcpListener::bind("0.0.0.0:0").and_then(|l| l.local_addr()) {
                    Ok(address) => format!("listen: allowed on {address}"),
                    Err(e) => format!("listen: denied: {e}"),
                }
            }),
            Behaviour::DiskFill => {
                let path = self.config.get("fill_file").unwrap_or_default().to_string();
                let chunk = vec![b'd'; 1 << 20];
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .and_then(|mut file| file.write_all(&chunk))
                    .map_err(|e| TaskError::Fatal(format!("cannot fill {path}: {e}")))?;
                let value = format!("disk-fill poll {}", self.emitted);
                self.emit(out, value.as_bytes())
            }
        }
    }
}

impl HostileTask {
    /// Appends one record with `value` to `out`.
    fn emit(&mut self, out: &mut BatchWriter, value: &[u8]) -> Result<(), TaskError> {
        self.emitted += 1;
        let position = self.emitted.to_string();
        out.push(&Record {
            value,
            partition: PARTITION,
            position: &position,
            ..Record::default()
        })
        .map_err(|e| TaskError::Fatal(e.to_string()))
    }

    /// Runs `probe` on the first poll and emits its verdict; later polls return nothing.
    fn probe_once(
        &mut self,
        out: &mut BatchWriter,
        probe: impl FnOnce() -> String,
    ) -> Result<(), TaskError> {
        if self.probed {
            return Ok(());
        }
        self.probed = true;
        let verdict = probe();
        self.emit(out, verdict.as_bytes())
    }

    /// `addr`, the address to reach.
    fn addr(&self) -> String {
        self.config
            .get("addr")
            .unwrap_or("127.0.0.1:80")
            .to_string()
    }

    /// First poll: opens `connections` connections to `addr` and keeps them. First poll
    /// after `hold_ms`: closes them and connects once more. Later polls: nothing.
    fn hold_connections(&mut self, out: &mut BatchWriter) -> Result<(), TaskError> {
        let addr = self.addr();
        match self.emitted {
            0 => {
                let wanted = self.number("connections", 20);
                let mut refusal = String::new();
                for _ in 0..wanted {
                    match std::net::TcpStream::connect(addr.as_str()) {
                        Ok(stream) => self.held.push(stream),
                        Err(e) => {
                            refusal = format!(": {e}");
                            break;
                        }
                    }
                }
                let verdict = format!("held {} of {wanted}{refusal}", self.held.len());
                self.held_since = Some(Instant::now());
                self.emit(out, verdict.as_bytes())
            }
            1 => {
                let hold = Duration::from_millis(self.number("hold_ms", 0));
                if self.held_since.is_some_and(|since| since.elapsed() < hold) {
                    return Ok(());
                }
                self.held.clear();
                let verdict = match std::net::TcpStream::connect(addr.as_str()) {
                    Ok(_) => format!("after close: connect {addr}: allowed"),
                    Err(e) => format!("after close: connect {addr}: denied: {e}"),
                };
                self.emit(out, verdict.as_bytes())
            }
            _ => Ok(()),
        }
    }

    /// Allocates 1 MiB at a time, writing every page so it is really committed, and keeps
    /// it all until an allocation fails (which aborts: a trap).
    fn memory_bomb(&mut self) -> Result<(), TaskError> {
        loop {
            let mut chunk = vec![0u8; 1 << 20];
            for (i, page) in chunk.chunks_mut(4096).enumerate() {
                page[0] = i as u8 | 1;
            }
            self.hoard.push(black_box(chunk));
        }
    }

    /// A decimal config value, or `default` when absent or not a number.
    fn number(&self, key: &str, default: u64) -> u64 {
        self.config
            .get(key)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(default)
    }
}

/// One call of the `log` host function (natively, where there is no host, nothing).
fn host_log(message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        use wasm_connect_sdk::guest::bindings::wasm_connect::connector::host;
        host::log(host::LogLevel::Info, message);
    }
    #[cfg(not(target_arch = "wasm32"))]
    let _ = message;
}

fn behaviour_of(config: &Config) -> Result<Behaviour, String> {
    config
        .get("behaviour")
        .ok_or_else(|| "Request config key: behaviour".to_string())?
        .parse()
}

/// Never returns, and the optimiser cannot prove the loop away.
fn spin_forever() -> ! {
    let mut n = 0u64;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

/// Traps right here: `unreachable` on wasm, an abort natively.
fn trap() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

/// Read and written through volatile accesses so the recursion below can neither end nor
/// be turned into a loop; no local has its address taken, so each frame lives on the wasm
/// call stack (which the engine bounds) rather than on the shadow stack in linear memory.
static mut LIMIT: u64 = u64::MAX;
static mut SINK: u64 = 0;

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    // SAFETY: single-threaded guest; plain volatile accesses to statics.
    let limit = unsafe { core::ptr::read_volatile(&raw const LIMIT) };
    if depth == limit {
        return depth;
    }
    let below = recurse(depth + 1);
    // SAFETY: as above. The store after the call keeps the call from being a tail call.
    unsafe { core::ptr::write_volatile(&raw mut SINK, below) };
    below ^ depth
}

wasm_connect_sdk::export_source!(HostileSource);
