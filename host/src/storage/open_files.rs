//! Caps the topic-log files open at once (`--max-open-topic-files`): each log holds its
//! file in a [`FileSlot`] that is opened on demand; when opening one goes over the cap, the
//! least recently used other slot is closed. A read or append in flight keeps its file
//! alive until it ends (the slot hands out `Arc<File>`s), so closing never fails one.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// The open topic-log files of one storage.
pub struct OpenFiles {
    max: usize,
    /// Bumped by every use; a slot's last use is the clock value it saw.
    clock: AtomicU64,
    open: Mutex<Vec<Weak<FileSlot>>>,
}

impl OpenFiles {
    pub fn new(max: usize) -> Arc<OpenFiles> {
        Arc::new(OpenFiles {
            max: max.max(1),
            clock: AtomicU64::new(0),
            open: Mutex::new(Vec::new()),
        })
    }

    /// How many files are open now.
    pub fn count(&self) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.iter().filter(|slot| slot.strong_count() > 0).count()
    }

    /// Records that `slot` opened its file and closes the least recently used others while
    /// more than the cap are open.
    fn opened(&self, slot: &Arc<FileSlot>) {
        let victims: Vec<Arc<FileSlot>> = {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            open.retain(|s| s.strong_count() > 0);
            open.push(Arc::downgrade(slot));
            let mut victims = Vec::new();
            while open.len() > self.max {
                let oldest = open
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| Some((i, s.upgrade()?)))
                    .filter(|(_, s)| !Arc::ptr_eq(s, slot))
                    .min_by_key(|(_, s)| s.last_used.load(Ordering::Relaxed));
                let Some((i, victim)) = oldest else { break };
                open.swap_remove(i);
                victims.push(victim);
            }
            victims
        };
        // Closed outside the list's lock: a slot's lock is never taken while holding it.
        for victim in victims {
            victim.close();
        }
    }
}

/// One topic log's file, open or closed.
pub struct FileSlot {
    path: PathBuf,
    file: Mutex<Option<Arc<File>>>,
    last_used: AtomicU64,
    files: Arc<OpenFiles>,
}

impl FileSlot {
    /// Opens (creating) the file at `path` under `files`' cap.
    pub fn open(path: &Path, files: &Arc<OpenFiles>) -> io::Result<Arc<FileSlot>> {
        let slot = Arc::new(FileSlot {
            path: path.to_path_buf(),
            file: Mutex::new(None),
            last_used: AtomicU64::new(0),
            files: files.clone(),
        });
        slot.get()?;
        Ok(slot)
    }

    /// The file, reopened if it was closed.
    pub fn get(self: &Arc<Self>) -> io::Result<Arc<File>> {
        let now = self.files.clock.fetch_add(1, Ordering::Relaxed);
        self.last_used.store(now, Ordering::Relaxed);
        if let Some(file) = self.lock().as_ref() {
            return Ok(file.clone());
        }
        let file = Arc::new(
            super::private::file_options()
                .read(true)
                .append(true)
                .create(true)
                .open(&self.path)?,
        );
        {
            let mut slot = self.lock();
            if let Some(open) = slot.as_ref() {
                return Ok(open.clone()); // another thread opened it meanwhile
            }
            *slot = Some(file.clone());
        }
        self.files.opened(self);
        Ok(file)
    }

    fn close(&self) {
        self.lock().take();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<File>>> {
        self.file.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_least_recently_used_file_is_closed_and_reopened_on_demand() {
        let dir = tempfile::tempdir().unwrap();
        let files = OpenFiles::new(2);
        let slots: Vec<Arc<FileSlot>> = (0..3)
            .map(|i| FileSlot::open(&dir.path().join(format!("{i}.log")), &files).unwrap())
            .collect();
        assert_eq!(files.count(), 2);
        assert!(slots[0].lock().is_none(), "the oldest was closed");
        let file = slots[0].get().unwrap();
        (&*file).write_all(b"x").unwrap();
        assert_eq!(files.count(), 2);
        assert!(slots[1].lock().is_none(), "the next oldest was closed");
        assert_eq!(std::fs::read(dir.path().join("0.log")).unwrap(), b"x");
    }
}
