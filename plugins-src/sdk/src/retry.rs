//! Retries with exponential backoff and jitter, for connectors that talk to systems that
//! fail now and then (HTTP 503, a broker restarting).
//!
//! ```
//! use std::time::Duration;
//! use wasm_connect_sdk::retry::Backoff;
//! let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
//! let first = backoff.next_delay();
//! assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
//! ```
//!
//! Keep the total of the waits of one guest call well below the host's call timeout
//! (`limits.call.timeout.ms`): a call that does not return in time fails the task.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// The delays between attempts: `initial`, doubling up to `max`, each drawn at random from
/// its upper half ("equal jitter"), so tasks that failed together do not retry together.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(30)).unwrap_or(u32::MAX);
        let ceiling = self.initial.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let spread = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(random_u64() % spread.max(1))
    }

    /// Attempts made so far (delays handed out).
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A random number (std's per-map random keys: wasi:random in a component).
fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u8(0);
    hasher.finish()
}

/// Calls `attempt` until it returns `Ok`, returns an error `retry` rejects, or `max_retries`
/// retries were made; sleeps `backoff.next_delay()` between attempts.
pub fn retry<T, E>(
    max_retries: u32,
    backoff: &mut Backoff,
    mut retryable: impl FnMut(&E) -> bool,
    mut attempt: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let mut retries = 0;
    loop {
        match attempt() {
            Ok(value) => {
                backoff.reset();
                return Ok(value);
            }
            Err(e) if retryable(&e) && retries < max_retries => {
                retries += 1;
                std::thread::sleep(backoff.next_delay());
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_max_within_their_upper_half() {
        let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(40));
        let ceilings = [10, 20, 40, 40];
        for ceiling in ceilings {
            let delay = backoff.next_delay();
            let ceiling = Duration::from_millis(ceiling);
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} vs {ceiling:?}"
            );
        }
    }

    #[test]
    fn retry_stops_at_success_at_a_fatal_error_and_after_max_retries() {
        let mut backoff = Backoff::new(Duration::ZERO, Duration::ZERO);
        let mut calls = 0;
        let result: Result<(), u32> = retry(
            3,
            &mut backoff,
            |_| true,
            || {
                calls += 1;
                Err(calls)
            },
        );
        assert_eq!(result, Err(4));
        let mut calls = 0;
        let result: Result<u32, u32> = retry(
            3,
            &mut backoff,
            |e| *e != 2,
            || {
                calls += 1;
                Err(calls)
            },
        );
        assert_eq!(result, Err(2));
        let result: Result<u32, u32> = retry(3, &mut backoff, |_| true, || Ok(7));
        assert_eq!(result, Ok(7));
    }
}
