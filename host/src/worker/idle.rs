//! How a source waits after a poll that found nothing: the first pause is 1 ms and each
//! further empty poll doubles it up to `limits.poll.idle.ms`. A source whose only grants
//! are directories (see `sandbox::DirChanges`) that have been quiet (no records polled, no
//! file in them changed) for [`QUIET_BEFORE_WATCHING`] then waits for a change in them, or
//! `limits.poll.watched.ms` at most; the change ends the wait at once. A change keeps the
//! source polling at its ceiling for the next [`QUIET_BEFORE_WATCHING`], so what a source
//! does some time after a change (the file source delivers an unterminated last line once
//! its file has been quiet for 1 s) still happens on time.

use std::time::{Duration, Instant};

use super::task::TaskContext;
use crate::sandbox::DirChanges;

/// The pause after the first empty poll.
const FIRST_IDLE_PAUSE: Duration = Duration::from_millis(1);
/// How long a watched source's directories and polls stay quiet before it waits for a change.
pub const QUIET_BEFORE_WATCHING: Duration = Duration::from_secs(3);

/// The backoff of one source task.
pub struct Idle {
    next: Duration,
    /// The last poll with records or the last change seen in the source's directories.
    quiet_since: Instant,
}

impl Default for Idle {
    fn default() -> Self {
        Idle {
            next: FIRST_IDLE_PAUSE,
            quiet_since: Instant::now(),
        }
    }
}

impl Idle {
    /// A poll returned records.
    pub fn reset(&mut self) {
        *self = Idle::default();
    }

    /// Waits after an empty poll (less if the task is told to stop); `changes` are those of
    /// the task's directories when they are watched.
    pub async fn pause(&mut self, ctx: &mut TaskContext, changes: Option<&mut DirChanges>) {
        let (ceiling, watched) = (ctx.limits.poll_idle, ctx.limits.poll_watched);
        let pause = self.next.min(ceiling);
        self.next = (pause * 2).min(ceiling);
        let Some(changes) = changes else {
            return ctx.idle_pause(pause).await;
        };
        if changes.take() {
            self.quiet_since = Instant::now();
        }
        let quiet = pause >= ceiling && self.quiet_since.elapsed() >= QUIET_BEFORE_WATCHING;
        if !quiet || watched <= ceiling {
            return ctx.idle_pause(pause).await;
        }
        tokio::select! {
            () = ctx.idle_pause(watched) => {}
            () = changes.changed() => self.quiet_since = Instant::now(),
        }
    }
}
