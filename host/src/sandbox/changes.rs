//! Change notifications on granted directories: one inotify watcher (through `notify`) for
//! the process, one watch per directory however many tasks share it, and for each task a
//! [`DirChanges`] that says whether a file in one of its directories was created, written,
//! renamed or removed since it last looked. An idle source whose only grants are
//! directories waits for one of these instead of polling (see `worker::idle`).
//!
//! Only the directories themselves are watched (not their subdirectories); opening or
//! reading a file is not a change. A lost or overflowing notification queue counts as a
//! change of every directory.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use notify::event::EventKind;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::watch;

use super::Grants;

/// The process's watcher of granted directories, created on first use.
#[derive(Default)]
pub struct ChangeWatcher {
    shared: Arc<Shared>,
}

/// Two locks, taken in this order: `watcher` across every watch, unwatch and change of who
/// follows a directory (the watcher's own thread answers those calls), `dirs` only briefly;
/// the watcher's thread takes `dirs` alone, so it never waits for a caller waiting for it.
#[derive(Default)]
struct Shared {
    /// None until the first watch (or when it could not be created).
    watcher: Mutex<Option<RecommendedWatcher>>,
    /// Each watched directory and the tasks told of its changes.
    dirs: Mutex<HashMap<PathBuf, Vec<Subscriber>>>,
    next_id: AtomicU64,
}

struct Subscriber {
    id: u64,
    changed: watch::Sender<()>,
}

impl Shared {
    fn dirs(&self) -> MutexGuard<'_, HashMap<PathBuf, Vec<Subscriber>>> {
        self.dirs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn watcher(&self) -> MutexGuard<'_, Option<RecommendedWatcher>> {
        self.watcher.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ChangeWatcher {
    /// Watches the directories `grants` holds for a task that reaches nothing else: None
    /// when it has a network grant or no directory, or when a directory cannot be watched
    /// (the task then polls as any other).
    pub fn watch(&self, grants: &Grants) -> Option<DirChanges> {
        if !grants.network.is_empty() || grants.dirs.is_empty() {
            return None;
        }
        let shared = &self.shared;
        let mut watcher = shared.watcher();
        if watcher.is_none() {
            let weak = Arc::downgrade(shared);
            match notify::recommended_watcher(move |event| notify_all(&weak, event)) {
                Ok(created) => *watcher = Some(created),
                Err(e) => {
                    tracing::debug!("cannot watch granted directories, idle sources poll: {e}");
                    return None;
                }
            }
        }
        let (changed, receiver) = watch::channel(());
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let mut subscribed = Vec::new();
        for grant in &grants.dirs {
            let dir = grant.dir.clone();
            if !shared.dirs().contains_key(&dir) {
                let added = (watcher.as_mut()).map(|w| w.watch(&dir, RecursiveMode::NonRecursive));
                if let Some(Err(e)) = added {
                    tracing::debug!("cannot watch {}, its sources poll: {e}", dir.display());
                    unsubscribe(shared, &mut watcher, id, &subscribed);
                    return None;
                }
            }
            shared
                .dirs()
                .entry(dir.clone())
                .or_default()
                .push(Subscriber {
                    id,
                    changed: changed.clone(),
                });
            subscribed.push(dir);
        }
        Some(DirChanges {
            shared: Arc::downgrade(shared),
            id,
            dirs: subscribed,
            changed: receiver,
        })
    }

    #[cfg(test)]
    fn watched(&self) -> usize {
        self.shared.dirs().len()
    }
}

/// Tells the subscribers of each directory `event` touches; ignores opens and reads.
fn notify_all(shared: &Weak<Shared>, event: notify::Result<notify::Event>) {
    let Some(shared) = shared.upgrade() else {
        return;
    };
    let dirs = shared.dirs();
    let everything = || dirs.values().flatten();
    match event {
        Ok(event) if event.need_rescan() => everything().for_each(Subscriber::tell),
        Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
        Ok(event) => {
            for path in &event.paths {
                // A file in a watched directory, or the directory itself.
                for dir in [path.parent(), Some(path.as_path())].into_iter().flatten() {
                    dirs.get(dir)
                        .into_iter()
                        .flatten()
                        .for_each(Subscriber::tell);
                }
            }
        }
        Err(_) => everything().for_each(Subscriber::tell),
    }
}

impl Subscriber {
    fn tell(&self) {
        self.changed.send_replace(());
    }
}

/// Drops subscriber `id` from `dirs`, and the watch of a directory nobody else follows.
fn unsubscribe(
    shared: &Shared,
    watcher: &mut Option<RecommendedWatcher>,
    id: u64,
    dirs: &[PathBuf],
) {
    for dir in dirs {
        let unfollowed = {
            let mut all = shared.dirs();
            let Some(subscribers) = all.get_mut(dir) else {
                continue;
            };
            subscribers.retain(|s| s.id != id);
            subscribers.is_empty() && all.remove(dir).is_some()
        };
        if let (true, Some(watcher)) = (unfollowed, watcher.as_mut()) {
            let _ = watcher.unwatch(dir);
        }
    }
}

/// One task's view of the changes in its granted directories; unsubscribes when dropped.
pub struct DirChanges {
    shared: Weak<Shared>,
    id: u64,
    dirs: Vec<PathBuf>,
    changed: watch::Receiver<()>,
}

impl DirChanges {
    /// Whether a directory changed since the last call (or [`DirChanges::changed`]).
    pub fn take(&mut self) -> bool {
        let changed = self.changed.has_changed().unwrap_or(false);
        self.changed.mark_unchanged();
        changed
    }

    /// Resolves at the next change (at once if one happened since the last look).
    pub async fn changed(&mut self) {
        if self.changed.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for DirChanges {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            let mut watcher = shared.watcher();
            unsubscribe(&shared, &mut watcher, self.id, &self.dirs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::capabilities::{network, DirGrant};
    use std::path::Path;
    use std::time::Duration;

    fn grants(dir: &Path) -> Grants {
        Grants {
            dirs: vec![DirGrant {
                dir: dir.to_path_buf(),
                writable: false,
            }],
            ..Grants::default()
        }
    }

    async fn changed_within(changes: &mut DirChanges, wait: Duration) -> bool {
        tokio::time::timeout(wait, changes.changed()).await.is_ok()
    }

    #[tokio::test]
    async fn a_write_in_a_granted_directory_wakes_its_tasks_and_a_read_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("in.txt");
        std::fs::write(&file, "a\n").unwrap();
        let watcher = ChangeWatcher::default();
        let mut first = watcher.watch(&grants(dir.path())).unwrap();
        let mut second = watcher.watch(&grants(dir.path())).unwrap();
        assert_eq!(watcher.watched(), 1, "one watch per directory");
        std::fs::read(&file).unwrap();
        assert!(!changed_within(&mut first, Duration::from_millis(300)).await);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"b\n"))
            .unwrap();
        assert!(changed_within(&mut first, Duration::from_secs(5)).await);
        assert!(
            changed_within(&mut second, Duration::from_secs(5)).await,
            "every task of the directory is told"
        );
        assert!(!second.take(), "a change is told once");
        drop((first, second));
        assert_eq!(watcher.watched(), 0, "the last task gone, the watch goes");
    }

    #[tokio::test]
    async fn a_task_that_reaches_the_network_or_a_missing_directory_is_not_watched() {
        let watcher = ChangeWatcher::default();
        assert!(watcher.watch(&Grants::default()).is_none());
        let dir = tempfile::tempdir().unwrap();
        let config = vec![(
            network::NETWORK_ALLOW_KEY.to_string(),
            "127.0.0.1:9".to_string(),
        )];
        let networked = Grants {
            network: network::grant(&config).await.unwrap(),
            ..grants(dir.path())
        };
        assert!(watcher.watch(&networked).is_none());
        let gone = dir.path().join("absent");
        assert!(watcher.watch(&grants(&gone)).is_none());
        assert_eq!(watcher.watched(), 0);
    }
}
