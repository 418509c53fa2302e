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
use std::sync::{Arc, Mutex, Weak};

use notify::event::EventKind;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::watch;

use super::Grants;

/// The process's watcher of granted directories, created on first use.
#[derive(Default)]
pub struct ChangeWatcher {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// None until the first watch (or when it could not be created).
    watcher: Option<RecommendedWatcher>,
    /// Each watched directory and the tasks told of its changes.
    dirs: HashMap<PathBuf, Vec<Subscriber>>,
    next_id: u64,
}

struct Subscriber {
    id: u64,
    changed: watch::Sender<()>,
}

impl ChangeWatcher {
    /// Watches the directories `grants` holds for a task that reaches nothing else: None
    /// when it has a network grant or no directory, or when a directory cannot be watched
    /// (the task then polls as any other).
    pub fn watch(&self, grants: &Grants) -> Option<DirChanges> {
        if !grants.network.is_empty() || grants.dirs.is_empty() {
            return None;
        }
        let dirs: Vec<PathBuf> = grants.dirs.iter().map(|g| g.dir.clone()).collect();
        let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.watcher.is_none() {
            let shared = Arc::downgrade(&self.shared);
            let watcher = notify::recommended_watcher(move |event| notify_all(&shared, event));
            match watcher {
                Ok(watcher) => state.watcher = Some(watcher),
                Err(e) => {
                    tracing::debug!("cannot watch granted directories, idle sources poll: {e}");
                    return None;
                }
            }
        }
        let (changed, receiver) = watch::channel(());
        let id = state.next_id;
        state.next_id += 1;
        let mut subscribed = Vec::new();
        for dir in dirs {
            if !state.dirs.contains_key(&dir) {
                let added =
                    (state.watcher.as_mut()).map(|w| w.watch(&dir, RecursiveMode::NonRecursive));
                if let Some(Err(e)) = added {
                    tracing::debug!("cannot watch {}, its sources poll: {e}", dir.display());
                    unsubscribe(&mut state, id, &subscribed);
                    return None;
                }
            }
            let subscribers = state.dirs.entry(dir.clone()).or_default();
            subscribers.push(Subscriber {
                id,
                changed: changed.clone(),
            });
            subscribed.push(dir);
        }
        Some(DirChanges {
            shared: Arc::downgrade(&self.shared),
            id,
            dirs: subscribed,
            changed: receiver,
        })
    }

    #[cfg(test)]
    fn watched(&self) -> usize {
        let state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        state.dirs.len()
    }
}

/// Tells the subscribers of each directory `event` touches; ignores opens and reads.
fn notify_all(shared: &Weak<Shared>, event: notify::Result<notify::Event>) {
    let Some(shared) = shared.upgrade() else {
        return;
    };
    let state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    let everything = || state.dirs.values().flatten();
    match event {
        Ok(event) if event.need_rescan() => everything().for_each(Subscriber::tell),
        Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
        Ok(event) => {
            for path in &event.paths {
                // A file in a watched directory, or the directory itself.
                for dir in [path.parent(), Some(path.as_path())].into_iter().flatten() {
                    state
                        .dirs
                        .get(dir)
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
fn unsubscribe(state: &mut State, id: u64, dirs: &[PathBuf]) {
    for dir in dirs {
        let Some(subscribers) = state.dirs.get_mut(dir) else {
            continue;
        };
        subscribers.retain(|s| s.id != id);
        if subscribers.is_empty() {
            state.dirs.remove(dir);
            if let Some(watcher) = state.watcher.as_mut() {
                let _ = watcher.unwatch(dir);
            }
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
            let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            unsubscribe(&mut state, self.id, &self.dirs);
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
        assert!(second.take(), "every task of the directory is told");
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
