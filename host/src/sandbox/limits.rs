//! Every limit a guest runs under, in one place.

use std::time::Duration;

/// Worker-wide limits applied to every connector instance.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Cap on one instance's linear memory.
    pub memory_bytes: usize,
    /// Wall-clock limit on one guest call (`describe`, `validate`, `start`, `poll`, `put`, …).
    pub call_timeout: Duration,
    /// Most records a source may return from one `poll`, and the host reads for one `put`.
    pub batch_records: u32,
    /// About this many bytes of frames per `poll` / `put`.
    pub batch_bytes: u32,
    /// Most instances alive at once (tasks plus short-lived connector-level instances).
    pub max_instances: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 256 << 20,
            call_timeout: Duration::from_secs(30),
            batch_records: 16384,
            batch_bytes: 4 << 20,
            max_instances: 256,
        }
    }
}

/// How often the engine's epoch advances; a running guest yields to the runtime this often.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
