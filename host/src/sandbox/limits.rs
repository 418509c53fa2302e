//! Every limit a guest runs under, in one place.
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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 256 << 20,
            cpu_per_call: Duration::from_secs(10),
            cpu_percent: 100,
            call_timeout: Duration::from_secs(30),
            batch_records: 16384,
            batch_bytes: 4 << 20,
            records_per_second: 0,
            max_tasks: 16,
            hostcall_fuel: 16 << 20,
            max_resources: 10_000,
        }
    }
}

impl Limits {
    /// The limits of a connector whose config is `config`: this worker's values, lowered by
    /// the config's `limits.*` keys. A value above the worker's is an error naming both.
    pub fn for_connector(&self, config: &Properties) -> Result<Limits, LimitError> {
        let mut limits = self.clone();
        limits.memory_bytes = lowered(
            config,
            "limits.memory",
            self.memory_bytes,
            Unit::Size,
            "--max-memory-mib",
        )?;
        let cpu_ms = lowered(
            config,
            "limits.cpu.ms",
            millis(self.cpu_per_call),
            Unit::Count,
            "--max-cpu-ms",
        )?;
        limits.cpu_per_call = Duration::from_millis(cpu_ms as u64);
        limits.cpu_percent = lowered(
            config,
            "limits.cpu.percent",
            self.cpu_percent as usize,
            Unit::Count,
            "--max-cpu-percent",
        )? as u32;
        let timeout_ms = lowered(
            config,
            "limits.call.timeout.ms",
            millis(self.call_timeout),
            Unit::Count,
            "--call-timeout-ms",
        )?;
        limits.call_timeout = Duration::from_millis(timeout_ms as u64);
        limits.batch_records = lowered(
            config,
            "limits.poll.records",
            self.batch_records as usize,
            Unit::Count,
            "--max-poll-records",
        )? as u32;
        limits.batch_bytes = lowered(
            config,
            "limits.poll.bytes",
            self.batch_bytes as usize,
            Unit::Size,
            "--max-poll-bytes",
        )? as u32;
        limits.max_tasks = lowered(
            config,
            "limits.tasks",
            self.max_tasks as usize,
            Unit::Count,
            "--max-tasks",
        )? as u32;
        limits.hostcall_fuel = lowered(
            config,
            "limits.hostcall.fuel",
            self.hostcall_fuel,
            Unit::Size,
            "--max-hostcall-fuel",
        )?;
        limits.max_resources = lowered(
            config,
            "limits.resources",
            self.max_resources,
            Unit::Count,
            "--max-resources",
        )?;
        limits.records_per_second = records_per_second(config, self.records_per_second)?;
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
    /// Most instances alive at once (tasks plus short-lived connector-level instances).
    pub max_instances: u32,
    /// How failed tasks are restarted.
    pub restart: RestartPolicy,
    /// Wall-clock and CPU limit of a plugin's `describe` while it loads (`--describe-timeout-ms`).
    pub describe_timeout: Duration,
    /// Wall-clock and CPU-seconds limit of compiling one plugin component.
    pub compile_time: Duration,
    /// Address space of the child process that compiles a plugin component.
    pub compile_memory: u64,
}

impl Default for WorkerLimits {
    fn default() -> Self {
        WorkerLimits {
            connector: Limits::default(),
            max_instances: 256,
            restart: RestartPolicy::default(),
            describe_timeout: Duration::from_secs(2),
            compile_time: Duration::from_secs(60),
            compile_memory: 4 << 30,
        }
    }
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

/// How often the engine's epoch advances: a running guest yields to the runtime this often,
/// and CPU budgets are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

fn millis(duration: Duration) -> usize {
    duration.as_millis() as usize
}

/// The config's value for `key`, parsed, if it does not exceed `ceiling`; `ceiling` if unset.
fn lowered(
    config: &Properties,
    key: &'static str,
    ceiling: usize,
    unit: Unit,
    flag: &str,
) -> Result<usize, LimitError> {
    let Some(text) = config.get(key) else {
        return Ok(ceiling);
    };
    let value = unit
        .parse(text.trim())
        .filter(|v| *v > 0)
        .ok_or_else(|| LimitError {
            key,
            message: format!("{key} must be a positive {}, not {text:?}", unit.name()),
        })?;
    if value > ceiling {
        let message = format!(
            "{key} {text} exceeds the worker ceiling {} (set by {flag})",
            unit.show(ceiling)
        );
        return Err(LimitError { key, message });
    }
    Ok(value)
}

/// How a limit's value is written.
#[derive(Clone, Copy)]
enum Unit {
    Count,
    Size,
}

impl Unit {
    fn parse(self, text: &str) -> Option<usize> {
        match self {
            Unit::Count => text.parse().ok(),
            Unit::Size => parse_size(text),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Unit::Count => "number",
            Unit::Size => "size such as 64MiB",
        }
    }

    fn show(self, value: usize) -> String {
        match self {
            Unit::Size if value.is_multiple_of(1 << 20) => format!("{} MiB", value >> 20),
            Unit::Count | Unit::Size => value.to_string(),
        }
    }
}

fn records_per_second(config: &Properties, ceiling: u32) -> Result<u32, LimitError> {
    const KEY: &str = "limits.records.per.second";
    let Some(text) = config.get(KEY) else {
        return Ok(ceiling);
    };
    let value = Unit::Count
        .parse(text.trim())
        .filter(|v| *v > 0 && *v <= u32::MAX as usize)
        .ok_or_else(|| LimitError {
            key: KEY,
            message: format!("{KEY} must be a positive number, not {text:?}"),
        })? as u32;
    if ceiling != 0 && value > ceiling {
        let message = format!(
            "{KEY} {value} exceeds the worker ceiling {ceiling} (set by --max-records-per-second)"
        );
        return Err(LimitError { key: KEY, message });
    }
    Ok(value)
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

    fn config(pairs: &[(&str, &str)]) -> Properties {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

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
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("512 KiB"), Some(512 << 10));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("1TiB"), None);
        assert_eq!(parse_size("MiB"), None);
    }
}
