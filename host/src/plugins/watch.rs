//! The file watcher: notify events from the plugin directory, debounced, become rescan hints
//! for the reload actor. Events are only hints (the rescan compares content hashes and waits
//! for files to settle), so a spurious event costs one cheap rescan and a missed one is
//! caught by the periodic rescan.

use std::path::Path;
use std::time::Duration;

use notify_debouncer_full::notify::event::{AccessKind, AccessMode};
use notify_debouncer_full::notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{
    new_debouncer, DebounceEventResult, DebouncedEvent, Debouncer, RecommendedCache,
};

use super::reload::{is_plugin_name, RESCAN_EVERY};

/// A running watcher; dropping it stops watching.
pub(super) type Watcher = Debouncer<RecommendedWatcher, RecommendedCache>;

/// Events on one path closer together than this arrive as one.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Watches `dir` (not its subdirectories) and calls `on_change` after events that may concern
/// a plugin file. None, with a warning, when the platform cannot watch it.
pub(super) fn start(dir: &Path, on_change: impl Fn() + Send + 'static) -> Option<Watcher> {
    let handler = move |result: DebounceEventResult| match result {
        Ok(events) => {
            if events.iter().any(concerns_a_plugin) {
                on_change();
            }
        }
        Err(errors) => {
            for e in errors {
                tracing::warn!("watching the plugin directory: {e}; {}", fallback());
            }
        }
    };
    let watching = new_debouncer(DEBOUNCE, None, handler).and_then(|mut watcher| {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
        Ok(watcher)
    });
    match watching {
        Ok(watcher) => Some(watcher),
        Err(e) => {
            tracing::warn!(
                "cannot watch the plugin directory {}: {e}; {}",
                dir.display(),
                fallback()
            );
            None
        }
    }
}

fn fallback() -> String {
    format!(
        "changes are still picked up by the rescan every {} s and by GET /plugin/reload",
        RESCAN_EVERY.as_secs()
    )
}

/// Any change to a plugin-named path; reads and opens (the rescan's own) are not changes.
fn concerns_a_plugin(event: &DebouncedEvent) -> bool {
    let is_change = match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    };
    is_change && (event.paths.is_empty() || event.paths.iter().any(|path| is_plugin_name(path)))
}
