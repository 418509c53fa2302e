//! Every limit a guest runs under, in one place: the table [`LIMITS`], one row per limit
//! (connector key, worker flag, unit, default, what happens when it is hit), which drives
//! the parsing of connector keys and of the worker's flags, and which the README's limits
//! table is checked against.
//!
//! [`Limits`] are per connector: the worker's values (its `--max-*` flags) are both the
//! defaults and the ceilings, and a connector config may lower them with `limits.*` keys,
//! never raise them. [`WorkerLimits`] adds what only the worker sets.

use std::time::Duration;

use crate::storage::Properties;

/// What one connector's instances may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Cap on one instance's linear memory (`limits.memory`, e.g. `64MiB`).
    pub memory_bytes: usize,
    /// CPU time one guest call may use, counted in epoch ticks (`limits.cpu.ms`).
    pub cpu_per_call: Duration,
    /// Share of one core the connector's calls may use over time, in percent: after each call
    /// the task pauses in proportion to the time the call took (`limits.cpu.percent`).
    pub cpu_percent: u32,
    /// Wall-clock limit on one guest call (`limits.call.timeout.ms`).
    pub call_timeout: Duration,
    /// Most records per `poll` / `put` (`limits.poll.records`).
    pub batch_records: u32,
    /// About this many bytes of frames per `poll` / `put` (`limits.poll.bytes`).
    pub batch_bytes: u32,
    /// Records a source may produce per second; 0 is unlimited (`limits.records.per.second`).
    pub records_per_second: u32,
    /// Most tasks (`limits.tasks`).
    pub max_tasks: u32,
    /// Bytes the host copies out of the guest in one host call (`limits.hostcall.fuel`).
    pub hostcall_fuel: usize,
    /// Most resource handles an instance holds at once (`limits.resources`).
    pub max_resources: usize,
    /// Longest position a source record may carry (`limits.position.bytes`).
    pub position_bytes: usize,
    /// Most distinct partitions a source connector may keep positions for (`limits.partitions`).
    pub partitions: usize,
    /// Bytes a task may write to files through its grants; 0 is unlimited
    /// (`limits.disk.bytes`).
    pub disk_bytes: u64,
    /// Longest pause between two polls of a source that found nothing: each empty poll
    /// doubles the pause up to this (`limits.poll.idle.ms`).
    pub poll_idle: Duration,
    /// Longest pause of an idle source whose only grants are directories the worker watches
    /// for changes: a change ends it at once (`limits.poll.watched.ms`).
    pub poll_watched: Duration,
    /// Sockets a task may hold open at once, wasi:http connections and TCP sockets together
    /// (`limits.network.connections`).
    pub network_connections: usize,
    /// Bytes per second the connector's tasks may send over wasi:http and TCP; 0 is unlimited
    /// (`limits.network.bytes.out.per.second`).
    pub network_bytes_out: u64,
    /// Bytes per second they may receive; 0 is unlimited (`limits.network.bytes.in.per.second`).
    pub network_bytes_in: u64,
}

impl Default for Limits {
    fn default() -> Self {
        WorkerLimits::default().connector
    }
}

impl Limits {
    /// The limits of a connector whose config is `config`: this worker's values, lowered by
    /// the config's `limits.*` keys. A value above the worker's is an error naming both.
    pub fn for_connector(&self, config: &Properties) -> Result<Limits, LimitError> {
        let mut limits = self.clone();
        let mut unused = WorkerFields::zero();
        for limit in LIMITS {
            let (Some(key), Field::Connector { get, .. }) = (limit.key, &limit.field) else {
                continue;
            };
            let Some(text) = config.get(key) else {
                continue;
            };
            let value = limit.lowered(key, text, get(self))?;
            limit.field.set(&mut limits, &mut unused, value);
        }
        Ok(limits)
    }

    /// How long to pause after a call that took `took`, to keep to `cpu_percent`.
    pub fn pause_after(&self, took: Duration) -> Duration {
        let percent = self.cpu_percent.clamp(1, 100);
        took * (100 - percent) / percent
    }

    /// Epoch ticks one call may run for (at least one).
    pub fn cpu_ticks(&self) -> u64 {
        (self.cpu_per_call.as_millis() as u64)
            .div_ceil(EPOCH_TICK.as_millis() as u64)
            .max(1)
    }
}

/// A `limits.*` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct LimitError {
    pub key: &'static str,
    pub message: String,
}

/// What only the worker sets.
#[derive(Debug, Clone)]
pub struct WorkerLimits {
    /// Defaults and ceilings of every connector.
    pub connector: Limits,
    /// How failed tasks are restarted.
    pub restart: RestartPolicy,
    /// The worker-only rows of [`LIMITS`].
    pub worker: WorkerFields,
    /// Address space of the child process that compiles a plugin component.
    pub compile_memory: u64,
}

/// The values of the worker-only rows of [`LIMITS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerFields {
    /// Most topics this worker stores (`--max-topics`).
    pub topics: usize,
    /// Most topic-log files open at once; idle ones are closed (`--max-open-topic-files`).
    pub open_topic_files: usize,
    /// Wall-clock and CPU limit of a plugin's `describe` while it loads (`--describe-timeout-ms`).
    pub describe_timeout: Duration,
    /// Wall-clock and CPU-seconds limit of compiling one plugin component
    /// (`--compile-timeout-s`).
    pub compile_time: Duration,
    /// Task instances alive at once (`--max-instances`); connector-level calls (validate,
    /// task-configs, describe) have [`CONNECTOR_CALL_SLOTS`] slots of their own.
    pub instances: usize,
}

impl WorkerFields {
    fn zero() -> Self {
        WorkerFields {
            topics: 0,
            open_topic_files: 0,
            describe_timeout: Duration::ZERO,
            compile_time: Duration::ZERO,
            instances: 0,
        }
    }
}

/// Instances kept for connector-level calls (validate, task-configs, describe) beside the
/// `--max-instances` task instances, so those calls never compete with running tasks; more
/// such calls at once wait for a slot.
pub const CONNECTOR_CALL_SLOTS: usize = 16;

impl Default for WorkerFields {
    fn default() -> Self {
        WorkerLimits::default().worker
    }
}

impl Default for WorkerLimits {
    fn default() -> Self {
        WorkerLimits::from_values(|limit| limit.default)
    }
}

impl WorkerLimits {
    /// Worker limits with the value `value_of` gives each row of [`LIMITS`] (in the row's
    /// stored unit: bytes, milliseconds or a count).
    pub fn from_values(value_of: impl Fn(&Limit) -> usize) -> WorkerLimits {
        let mut limits = Limits {
            memory_bytes: 0,
            cpu_per_call: Duration::ZERO,
            cpu_percent: 0,
            call_timeout: Duration::ZERO,
            batch_records: 0,
            batch_bytes: 0,
            records_per_second: 0,
            max_tasks: 0,
            hostcall_fuel: 0,
            max_resources: 0,
            position_bytes: 0,
            partitions: 0,
            disk_bytes: 0,
            poll_idle: Duration::ZERO,
            poll_watched: Duration::ZERO,
            network_connections: 0,
            network_bytes_out: 0,
            network_bytes_in: 0,
        };
        let mut worker = WorkerFields::zero();
        for limit in LIMITS {
            limit.field.set(&mut limits, &mut worker, value_of(limit));
        }
        WorkerLimits {
            connector: limits,
            restart: RestartPolicy::default(),
            worker,
            compile_memory: 4 << 30,
        }
    }
}

/// One row of the limits table.
pub struct Limit {
    /// The connector key that lowers it; None for a limit only the worker sets.
    pub key: Option<&'static str>,
    /// The worker flag, without `--`, that sets the default and ceiling.
    pub flag: &'static str,
    /// How the connector key is written; values are stored in its base unit.
    pub unit: Unit,
    /// How the flag is written.
    pub flag_unit: Unit,
    /// The worker default, in the stored unit.
    pub default: usize,
    /// 0 means unlimited (a connector may then set any positive value).
    pub zero_is_unlimited: bool,
    /// The largest value the flag accepts.
    pub max: usize,
    /// What it limits (the flag's `--help` line).
    pub help: &'static str,
    /// What happens when it is hit (the README table's last column).
    pub hit: &'static str,
    pub field: Field,
}

/// Where a row's value lives.
pub enum Field {
    Connector {
        get: fn(&Limits) -> usize,
        set: fn(&mut Limits, usize),
    },
    Worker {
        set: fn(&mut WorkerFields, usize),
    },
}

impl Field {
    fn set(&self, limits: &mut Limits, worker: &mut WorkerFields, value: usize) {
        match self {
            Field::Connector { set, .. } => set(limits, value),
            Field::Worker { set } => set(worker, value),
        }
    }
}

/// Every limit. Order is the README's and `--help`'s.
pub const LIMITS: &[Limit] = &[
    Limit {
        key: Some("limits.memory"),
        flag: "max-memory-mib",
        unit: Unit::Size,
        flag_unit: Unit::Mib,
        default: 256 << 20,
        zero_is_unlimited: false,
        max: usize::MAX >> 20,
        help: "Linear memory of one instance, in MiB",
        hit: "`memory limit 64 MiB exceeded in poll`",
        field: Field::Connector {
            get: |l| l.memory_bytes,
            set: |l, v| l.memory_bytes = v,
        },
    },
    Limit {
        key: Some("limits.cpu.ms"),
        flag: "max-cpu-ms",
        unit: Unit::Count,
        flag_unit: Unit::Count,
        default: 10_000,
        zero_is_unlimited: false,
        max: usize::MAX,
        help: "CPU time one guest call may use, in ms, counted in 10 ms ticks",
        hit: "`cpu budget 50 ms exceeded in poll` (counted in 10 ms epoch ticks while wasm runs)",
        field: Field::Connector {
            get: |l| millis(l.cpu_per_call),
            set: |l, v| l.cpu_per_call = Duration::from_millis(v as u64),
        },
    },
    Limit {
        key: Some("limits.cpu.percent"),
        flag: "max-cpu-percent",
        unit: Unit::Count,
        flag_unit: Unit::Count,
        default: 100,
        zero_is_unlimited: false,
        max: 100,
        help: "Share of one core a connector's calls may use over time, in percent",
        hit: "after each call the task pauses in proportion to the call's time, keeping it to this share of a core",
        field: Field::Connector {
            get: |l| l.cpu_percent as usize,
            set: |l, v| l.cpu_percent = saturated(v),
        },
    },
    Limit {
        key: Some("limits.call.timeout.ms"),
        flag: "call-timeout-ms",
        unit: Unit::Count,
        flag_unit: Unit::Count,
        default: 30_000,
        zero_is_unlimited: false,
        max: usize::MAX,
        help: "Wall-clock limit of one guest call, in ms",
        hit: "`poll did not return within 2000 ms` (every call: validate, start, poll, put, …)",
        field: Field::Connector {
            get: |l| millis(l.call_timeout),
            set: |l, v| l.call_timeout = Duration::from_millis(v as u64),
        },
    },
    Limit {
        key: Some("limits.poll.records"),
        flag: "max-poll-records",
        unit: Unit::Count,
        flag_unit: Unit::Count,
        default: 16_384,
        zero_is_unlimited: false,
        max: u32::MAX as usize,
        help: "Records per poll or put",
        hit: "`poll returned 400 records, more than the 100 asked for`",
        field: Field::Connector {
            get: |l| l.batch_records as usize,
            set: |l, v| l.batch_records = saturated(v),
        },
    },
    Limit {
        key: Some("limits.poll.bytes"),
        flag: "max-poll-bytes",
        unit: Unit::Size,
        flag_unit: Unit::Size,
        default: 4 << 20,
        zero_is_unlimited: false,
        max: u32::MAX as usize,
        help: "Bytes of records per poll or put, e.g. 4MiB",
        hit: "a batch beyond twice this (+1 MiB) is refused",
        field: Field::Connector {
            get: |l| l.batch_bytes as usize,
            set: |l, v| l.batch_bytes = saturated(v),
        },
    },
    Limit {
        key: Some("limits.records.per.second"),
        flag: "max-records-per-second",
        unit: Unit::Count,
        flag_unit: Unit::Count,
        default: 0,
        zero_is_unlimited: true,
        max: u32::MAX as usize,
        help: "Records a source may produce per second; 0 is unlimited",
        hit: "the source is paced",
        field: Field::Connector {
            get: |l| l.records_per_second as usize,
            set: |l, v| l.records_per_second = saturated(v),
        },
    },
    Limit {
        key: Some("limits.tasks"),
        flag: "max-tasks",
        unit: Unit::Count,
        flag_unit: Unit::Count,
        default: 16,
        zero_is_unlimited: false,
        max: u32::MAX as usize,
        help: "Tasks of one connector",
        hit: "`tasks.max` above it is refused",
        field: Field::Connector {
            get: |l| l.max_tasks as usize,
            set: |l, v| l.max_tasks = saturated(v),
        },
    },
    Limit {
        key: Some("limits.hostcall.fuel"),
        flag: "max-hostcall-fuel",
        unit: Unit::Size,
        flag_unit: Unit::Size,
        default: 16 << 20,
        zero_is_unlimited: false,
        max: usize::MAX,
        help: "Bytes the host copies out of a guest in one call, e.g. 16MiB",
        hit: "bytes the host copies out of the guest per call",
        field: Field::Connector {
            get: |l| l.hostcall_fuel,
            set: |l, v| l.hostcall_fuel = v,
        },
    },
    Limit {
        key: Some("limits.resources"),
        flag: "max-resources",
        unit: Unit::Count,
        flag_unit: Unit::Count,
        default: 10_000,
        zero_is_unlimited: false,
        max: usize::MAX,
        help: "Resource handles one instance may hold",
        hit: "resource handles per instance",
        field: Field::Connector {
            get: |l| l.max_resources,
            set: |l, v| l.max_resources = v,
        },
    },
    Limit {
        key: Some("limits.position.bytes"),
        flag: "max-position-bytes",
        unit: Unit::Size,
        flag_unit: Unit::Size,
        default: 4 << 10,
        zero_is_unlimited: false,
        max: u16::MAX as usize,
        help: "Longest position a source record may carry, e.g. 4KiB (at most 65535 bytes)",
        hit: "`a record's position is 65000 bytes, more than limits.position.bytes 4 KiB`: the task fails",
        field: Field::Connector {
            get: |l| l.position_bytes,
            set: |l, v| l.position_bytes = v,
        },
    },
    Limit {
        key: Some("limits.partitions"),
        flag: "max-partitions",
        unit: Unit::Count,
        flag_unit: Unit::Count,
        default: 10_000,
        zero_is_unlimited: false,
        max: usize::MAX,
        help: "Distinct partitions a source connector may keep positions for",
        hit: "`the source has positions in 10000 partitions and a record names another; …`: the task fails",
        field: Field::Connector {
            get: |l| l.partitions,
            set: |l, v| l.partitions = v,
        },
    },
    Limit {
        key: Some("limits.disk.bytes"),
        flag: "max-disk-bytes",
        unit: Unit::Size,
        flag_unit: Unit::Size,
        default: 0,
        zero_is_unlimited: true,
        max: usize::MAX,
        help: "Bytes a task may write to files through its grants, e.g. 10GiB; 0 is unlimited",
        hit: "the write beyond it is refused and the task fails: `disk budget 1 MiB exceeded in poll: …`",
        field: Field::Connector {
            get: |l| usize::try_from(l.disk_bytes).unwrap_or(usize::MAX),
            set: |l, v| l.disk_bytes = v as u64,
        },
    },
    Limit {
        key: Some("limits.poll.idle.ms"),
        flag: "max-poll-idle-ms",
        unit: Unit::Count,
        flag_unit: Unit::Count,
        default: 1_000,
        zero_is_unlimited: false,
        max: 3_600_000,
        help: "Longest pause between polls of a source that finds nothing, in ms: each empty poll doubles the pause from 1 ms up to this, the first non-empty poll resets it",
        hit: "an idle source is polled at most this often (each empty poll doubles the pause from 1 ms up to it; a poll that returns records resets it)",
        field: Field::Connector {
            get: |l| millis(l.poll_idle),
            set: |l, v| l.poll_idle = Duration::from_millis(v as u64),
        },
    },
    Limit {
        key: Some("limits.poll.watched.ms"),
        flag: "max-poll-watched-ms",
        unit: Unit::Count,
        flag_unit: Unit::Count,
        default: 10_000,
        zero_is_unlimited: false,
        max: 3_600_000,
        help: "Longest pause, in ms, of an idle source whose only grants are directories: after 3 s without records or changes it waits for a file in them to change, or this long",
        hit: "an idle source that reaches only its granted directories is polled at most this often once they have been quiet for 3 s; a file created, written, renamed or removed in them wakes it at once",
        field: Field::Connector {
            get: |l| millis(l.poll_watched),
            set: |l, v| l.poll_watched = Duration::from_millis(v as u64),
        },
    },
    Limit {
        key: None,
        flag: "max-instances",
        unit: Unit::Count,
        flag_unit: Unit::Count,
        default: 1_024,
        zero_is_unlimited: false,
        max: 8_192,
        help: "Task instances this worker runs at once (one per task); validation and other connector-level calls have slots of their own",
        hit: "`connector c needs 1 task instance(s) and the other connectors run 1024: 1025 would be more than --max-instances 1024 on this worker; …`: the create is refused (a task that finds no slot within 5 s fails naming the flag)",
        field: Field::Worker {
            set: |w, v| w.instances = v,
        },
    },
    Limit {
        key: Some("limits.network.connections"),
        flag: "max-network-connections",
        unit: Unit::Count,
        flag_unit: Unit::Count,
        default: 16,
        zero_is_unlimited: false,
        max: 4096,
        help: "Sockets a task may hold open at once: wasi:http connections and TCP sockets together",
        hit: "the request beyond it fails with `connection-limit-reached`, the TCP socket beyond it with `new-socket-limit` (EMFILE in the guest; logged once naming the limit)",
        field: Field::Connector {
            get: |l| l.network_connections,
            set: |l, v| l.network_connections = v,
        },
    },
    Limit {
        key: Some("limits.network.bytes.out.per.second"),
        flag: "max-network-bytes-out-per-second",
        unit: Unit::Size,
        flag_unit: Unit::Size,
        default: 0,
        zero_is_unlimited: true,
        max: usize::MAX,
        help: "Bytes per second a connector's tasks may send over wasi:http and TCP, e.g. 10MiB; 0 is unlimited",
        hit: "request bodies and TCP writes are paced",
        field: Field::Connector {
            get: |l| usize::try_from(l.network_bytes_out).unwrap_or(usize::MAX),
            set: |l, v| l.network_bytes_out = v as u64,
        },
    },
    Limit {
        key: Some("limits.network.bytes.in.per.second"),
        flag: "max-network-bytes-in-per-second",
        unit: Unit::Size,
        flag_unit: Unit::Size,
        default: 0,
        zero_is_unlimited: true,
        max: usize::MAX,
        help: "Bytes per second a connector's tasks may receive over wasi:http and TCP, e.g. 10MiB; 0 is unlimited",
        hit: "response bodies and TCP reads are paced",
        field: Field::Connector {
            get: |l| usize::try_from(l.network_bytes_in).unwrap_or(usize::MAX),
            set: |l, v| l.network_bytes_in = v as u64,
        },
    },
    Limit {
        key: None,
        flag: "max-topics",
        unit: Unit::Count,
        flag_unit: Unit::Count,
        default: 1_000,
        zero_is_unlimited: false,
        max: usize::MAX,
        help: "Topics this worker stores; a source writing a new one beyond this fails",
        hit: "`topic t would be topic 1001 of this worker, more than --max-topics 1000`: the task fails",
        field: Field::Worker {
            set: |w, v| w.topics = v,
        },
    },
    Limit {
        key: None,
        flag: "max-open-topic-files",
        unit: Unit::Count,
        flag_unit: Unit::Count,
        default: 256,
        zero_is_unlimited: false,
        max: usize::MAX,
        help: "Topic-log files open at once; the least recently used are closed and reopened on demand",
        hit: "the least recently used topic file is closed (reopened when next used)",
        field: Field::Worker {
            set: |w, v| w.open_topic_files = v,
        },
    },
    Limit {
        key: None,
        flag: "describe-timeout-ms",
        unit: Unit::Count,
        flag_unit: Unit::Count,
        default: 2_000,
        zero_is_unlimited: false,
        max: usize::MAX,
        help: "Time a plugin's `describe` may take while it loads, in ms; a slower plugin is reported broken and holds up no other",
        hit: "`broken plugin x.wasm: describe did not return within 2000 ms`",
        field: Field::Worker {
            set: |w, v| w.describe_timeout = Duration::from_millis(v as u64),
        },
    },
    Limit {
        key: None,
        flag: "compile-timeout-s",
        unit: Unit::Count,
        flag_unit: Unit::Count,
        default: 60,
        zero_is_unlimited: false,
        max: 3_600,
        help: "Wall-clock and CPU seconds compiling one plugin component may take, in s (an 18 MB Python component takes ~5 s on a free core); a slower one is reported broken",
        hit: "`broken plugin x.wasm: compiling took longer than 60 s and was stopped; …`",
        field: Field::Worker {
            set: |w, v| w.compile_time = Duration::from_secs(v as u64),
        },
    },
];

impl Limit {
    /// The connector's value `text` for `key`, if it is a positive number that does not
    /// exceed `ceiling` (any positive number when the ceiling is unlimited).
    fn lowered(&self, key: &'static str, text: &str, ceiling: usize) -> Result<usize, LimitError> {
        let value = self
            .unit
            .parse(text.trim())
            .filter(|v| *v > 0)
            .ok_or_else(|| LimitError {
                key,
                message: format!(
                    "{key} must be a positive {}, not {text:?}",
                    self.unit.name()
                ),
            })?;
        let unlimited = self.zero_is_unlimited && ceiling == 0;
        if !unlimited && value > ceiling {
            let message = format!(
                "{key} {} exceeds the worker ceiling {} (set by --{})",
                text.trim(),
                self.unit.show(ceiling),
                self.flag
            );
            return Err(LimitError { key, message });
        }
        Ok(value)
    }

    /// Parses the flag's value into the stored unit.
    pub fn parse_flag(&self, text: &str) -> Result<usize, String> {
        let value = self.flag_unit.parse(text.trim()).ok_or_else(|| {
            format!(
                "--{} must be a {}, not {text:?}",
                self.flag,
                self.flag_unit.name()
            )
        })?;
        let stored_max = self.flag_unit.to_stored(self.max);
        if value > stored_max || (value == 0 && !self.zero_is_unlimited) {
            return Err(format!(
                "--{} must be between 1 and {}",
                self.flag,
                self.flag_unit.show_flag(stored_max)
            ));
        }
        Ok(value)
    }

    /// The flag's default as written on the command line.
    pub fn flag_default(&self) -> String {
        self.flag_unit.show_flag(self.default)
    }
}

/// How a limit's value is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// A plain number (of records, milliseconds, percent, …).
    Count,
    /// Bytes: `64MiB`, `512KiB` or a plain number.
    Size,
    /// A number of MiB (flags only); stored as bytes.
    Mib,
}

impl Unit {
    fn parse(self, text: &str) -> Option<usize> {
        match self {
            Unit::Count => text.parse().ok(),
            Unit::Size => parse_size(text),
            Unit::Mib => text.parse::<usize>().ok()?.checked_mul(1 << 20),
        }
    }

    fn to_stored(self, value: usize) -> usize {
        match self {
            Unit::Mib => value.saturating_mul(1 << 20),
            Unit::Count | Unit::Size => value,
        }
    }

    /// The placeholder of a flag's value in `--help`.
    pub fn value_name(self) -> &'static str {
        match self {
            Unit::Count => "N",
            Unit::Size => "SIZE",
            Unit::Mib => "MIB",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Unit::Count => "number",
            Unit::Size => "size such as 64MiB",
            Unit::Mib => "number of MiB",
        }
    }

    /// A stored value for messages.
    fn show(self, value: usize) -> String {
        match self {
            Unit::Size | Unit::Mib if value != 0 && value.is_multiple_of(1 << 20) => {
                format!("{} MiB", value >> 20)
            }
            Unit::Size | Unit::Mib if value != 0 && value.is_multiple_of(1 << 10) => {
                format!("{} KiB", value >> 10)
            }
            Unit::Count | Unit::Size | Unit::Mib => value.to_string(),
        }
    }

    /// A stored value as the flag is written.
    fn show_flag(self, value: usize) -> String {
        match self {
            Unit::Mib => (value >> 20).to_string(),
            Unit::Size => self.show(value).replace(' ', ""),
            Unit::Count => value.to_string(),
        }
    }
}

/// Shows a byte count the way limit messages do (`4 KiB`, `64 MiB`, `1000`).
pub fn show_size(bytes: usize) -> String {
    Unit::Size.show(bytes)
}

fn saturated(value: usize) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// Automatic restarts of failed tasks: exponential backoff, then quarantine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Pause before the first restart; doubles each time, up to [`MAX_BACKOFF`].
    pub backoff: Duration,
    /// Failures within `window` after which a task stays FAILED until the operator restarts it.
    pub quarantine_after: u32,
    pub window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            backoff: Duration::from_secs(1),
            quarantine_after: 5,
            window: Duration::from_secs(300),
        }
    }
}

/// The longest pause between two restarts of a failing task.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How long a task told to stop may still spend in guest calls (finishing the call in flight,
/// the last flush, `stop`) before the call is cancelled and its store dropped unused.
pub const STOP_GRACE: Duration = Duration::from_secs(1);

/// How often the engine's epoch advances: a running guest yields to the runtime this often,
/// and CPU budgets are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

fn millis(duration: Duration) -> usize {
    duration.as_millis() as usize
}

/// `64MiB`, `512KiB`, `1GiB`, `100B` or a plain number of bytes.
pub fn parse_size(text: &str) -> Option<usize> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number.parse().ok()?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::tests::props as config;

    #[test]
    fn a_connector_may_lower_limits_but_not_raise_them() {
        let worker = Limits::default();
        let lowered = worker
            .for_connector(&config(&[
                ("limits.memory", "64MiB"),
                ("limits.cpu.ms", "50"),
            ]))
            .unwrap();
        assert_eq!(lowered.memory_bytes, 64 << 20);
        assert_eq!(lowered.cpu_per_call, Duration::from_millis(50));
        assert_eq!(lowered.cpu_ticks(), 5);
        let error = worker
            .for_connector(&config(&[("limits.memory", "1GiB")]))
            .unwrap_err();
        assert_eq!(error.key, "limits.memory");
        assert!(
            error.message.contains("exceeds the worker ceiling 256 MiB"),
            "{}",
            error.message
        );
        let error = worker
            .for_connector(&config(&[("limits.poll.records", "lots")]))
            .unwrap_err();
        assert!(
            error.message.contains("must be a positive number"),
            "{}",
            error.message
        );
    }

    #[test]
    fn zero_is_unlimited_only_where_the_row_says_so() {
        let worker = Limits::default();
        let paced = worker
            .for_connector(&config(&[("limits.records.per.second", "500")]))
            .unwrap();
        assert_eq!(paced.records_per_second, 500);
        let disk = worker
            .for_connector(&config(&[("limits.disk.bytes", "1MiB")]))
            .unwrap();
        assert_eq!(disk.disk_bytes, 1 << 20);
        let row = LIMITS.iter().find(|l| l.flag == "max-tasks").unwrap();
        assert!(row.parse_flag("0").is_err());
        let row = LIMITS
            .iter()
            .find(|l| l.flag == "max-position-bytes")
            .unwrap();
        assert!(row
            .parse_flag("1MiB")
            .unwrap_err()
            .contains("between 1 and 65535"));
        assert_eq!(row.parse_flag("4KiB"), Ok(4096));
    }

    /// Every row of the README's limits table is a row of [`LIMITS`] (key, flag, default
    /// and what happens), in the same order, and every row of [`LIMITS`] is in the README.
    #[test]
    fn the_readme_limits_table_matches_the_limits_table() {
        let readme = include_str!("../../../README.md");
        let rows: Vec<(String, String, String)> = readme
            .lines()
            .filter(|line| line.starts_with("| `limits.") || line.starts_with("| — | `--"))
            .map(|line| {
                let cells: Vec<&str> = line.splitn(3, " | ").collect();
                let cell = |i: usize| cells.get(i).copied().unwrap_or_default();
                (
                    cell(0).trim_start_matches("| ").to_string(),
                    cell(1).to_string(),
                    cell(2).trim_end_matches(" |").to_string(),
                )
            })
            .collect();
        let expected: Vec<(String, String, String)> = LIMITS
            .iter()
            .map(|limit| {
                let key = limit.key.map_or("—".to_string(), |k| format!("`{k}`"));
                let default = if limit.zero_is_unlimited && limit.default == 0 {
                    "0 = unlimited".to_string()
                } else {
                    limit.flag_default()
                };
                (
                    key,
                    format!("`--{}` ({default})", limit.flag),
                    limit.hit.to_string(),
                )
            })
            .collect();
        assert_eq!(
            rows, expected,
            "README.md's limits table differs from LIMITS"
        );
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("512 KiB"), Some(512 << 10));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("1TiB"), None);
        assert_eq!(parse_size("MiB"), None);
    }
}
