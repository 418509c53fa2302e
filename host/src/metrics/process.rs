//! The process collector: `process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_virtual_memory_bytes`, `process_open_fds` and `process_max_fds`, read from the
//! kernel at each scrape under the names every Prometheus client library uses.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Reads this process's CPU time, memory and descriptors at each scrape.
#[derive(Debug)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let cpu = ConstCounter::new(cpu_seconds());
        let e = encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time of the process, in seconds",
            None,
            cpu.metric_type(),
        )?;
        cpu.encode(e)?;
        let (virtual_bytes, resident_bytes) = memory_bytes();
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory of the process, in bytes",
                resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory of the process, in bytes",
                virtual_bytes,
            ),
            (
                "process_open_fds",
                "Open file descriptors of the process",
                open_fds(),
            ),
            (
                "process_max_fds",
                "Soft limit on open file descriptors of the process",
                max_fds(),
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            let e = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(e)?;
        }
        Ok(())
    }
}

/// User plus system CPU time of the process.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Virtual and resident memory from `/proc/self/statm` (0 where it cannot be read).
pub fn memory_bytes() -> (i64, i64) {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0);
    let mut fields = statm
        .split_whitespace()
        .map(|f| f.parse::<i64>().unwrap_or(0) * page);
    (fields.next().unwrap_or(0), fields.next().unwrap_or(0))
}

fn open_fds() -> i64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count() as i64)
}

fn max_fds() -> i64 {
    // SAFETY: getrlimit only writes the struct it is given.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    i64::try_from(limit.rlim_cur).unwrap_or(i64::MAX)
}
