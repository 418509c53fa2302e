//! The process's open-file limit: raised to the hard limit at start, and the share of it
//! the REST listeners may fill with connections, so storage, plugins and tasks always keep
//! file descriptors of their own.

use std::io;

/// File descriptors kept for everything but API connections, as a share of the limit...
const RESERVE_DIVISOR: u64 = 4;
/// ...and at least this many: state store, topic logs, plugin files, task preopens, NATS.
const MIN_RESERVE: u64 = 64;

/// The soft open-file limit after [`raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFileLimit(u64);

impl OpenFileLimit {
    /// How many connections each of `listeners` listeners may hold open: the limit minus
    /// the reserve, shared equally (at least one).
    pub fn connections_per_listener(self, listeners: usize) -> usize {
        let reserve = (self.0 / RESERVE_DIVISOR).max(MIN_RESERVE);
        let shared = self.0.saturating_sub(reserve) / (listeners.max(1) as u64);
        usize::try_from(shared).unwrap_or(usize::MAX).max(1)
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit and logs the outcome. When the limit
/// cannot be read, the listeners are sized for 1,024 descriptors (the usual default).
pub fn raise() -> OpenFileLimit {
    let (soft, hard) = match get() {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!("cannot read the open-file limit ({e}); sizing the listeners for 1024 file descriptors");
            return OpenFileLimit(1024);
        }
    };
    if soft >= hard {
        tracing::info!("open-file limit: {soft} (the hard limit)");
        return OpenFileLimit(soft);
    }
    match set(hard, hard) {
        Ok(()) => {
            tracing::info!("open-file limit raised from {soft} to the hard limit {hard}");
            OpenFileLimit(hard)
        }
        Err(e) => {
            tracing::warn!("open-file limit stays {soft}: cannot raise it to the hard limit {hard} ({e})");
            OpenFileLimit(soft)
        }
    }
}

fn get() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((limit.rlim_cur as u64, limit.rlim_max as u64))
}

fn set(soft: u64, hard: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit only reads the struct it is given, which lives for the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::OpenFileLimit;

    #[test]
    fn connections_leave_a_reserve_for_everything_else() {
        assert_eq!(OpenFileLimit(1024).connections_per_listener(2), 384);
        assert_eq!(OpenFileLimit(256).connections_per_listener(2), 96);
        assert_eq!(OpenFileLimit(256).connections_per_listener(1), 192);
        assert_eq!(OpenFileLimit(40).connections_per_listener(2), 1);
    }
}
