//! The reload actor: the one task that rescans the plugin directory and changes the catalog.
//! File-watch hints, `GET /plugin/reload` and a periodic safety-net rescan all end in the same
//! rescan; requests that arrive while one runs are served by the next, together.
//!
//! A rescan stats every plugin file. A file whose size, times and inode are what they were is
//! unchanged. Any other file is read only once it is settled: unchanged for [`SETTLE`]
//! (its last change that long ago, or the same look across two checks that far apart) and
//! unchanged while being read. Its SHA-256 then decides: same content, nothing to do; new
//! content, it is validated, and either becomes the version the file serves or is reported
//! broken beside the version that keeps serving.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};

use super::cache::{sha256_hex, CodeCache};
use super::{one_line, read_plugin, validate, watch, Catalog, PluginError};
use crate::sandbox::Sandbox;

/// How long a file must have stayed unchanged before it is read.
const SETTLE: Duration = Duration::from_millis(200);
/// Rescan this often even without events: the safety net for missed events.
pub(super) const RESCAN_EVERY: Duration = Duration::from_secs(30);
/// A reload (and the start) waits at most this long for files still being written.
const RELOAD_WAIT: Duration = Duration::from_secs(10);

enum Request {
    /// Something in the directory changed: rescan soon.
    Hint,
    /// Rescan, wait for files being written, and answer with the report lines.
    Reload(oneshot::Sender<Vec<String>>),
}

/// Sends requests to the reload actor.
pub(super) struct Handle {
    requests: mpsc::Sender<Request>,
}

impl Handle {
    /// Asks for a full rescan and waits for its report.
    pub(super) async fn reload(&self) -> Vec<String> {
        let (reply, answer) = oneshot::channel();
        let stopped = || {
            vec![
                "the plugin reload task has stopped; restart the host to reload plugins"
                    .to_string(),
            ]
        };
        if self.requests.send(Request::Reload(reply)).await.is_err() {
            return stopped();
        }
        answer.await.unwrap_or_else(|_| stopped())
    }
}

/// Starts watching `dir`, loads what it holds (waiting for files being written), and hands
/// the directory to the reload actor.
pub(super) async fn start(
    dir: PathBuf,
    sandbox: Arc<Sandbox>,
    cache: Arc<CodeCache>,
    catalog: Arc<RwLock<Catalog>>,
) -> Handle {
    let (requests, inbox) = mpsc::channel(64);
    let hints = requests.downgrade();
    let watcher = watch::start(&dir, move || {
        if let Some(hints) = hints.upgrade() {
            // A full queue already holds a rescan request.
            let _ = hints.try_send(Request::Hint);
        }
    });
    let mut reloader = Reloader {
        dir,
        sandbox,
        cache,
        catalog,
        known: BTreeMap::new(),
        settling: BTreeMap::new(),
    };
    let first = reloader.settle_all().await;
    tokio::spawn(reloader.run(inbox, watcher, first.next_look()));
    Handle { requests }
}

/// What a file looked like when last examined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    modified: SystemTime,
    changed: SystemTime,
    inode: u64,
}

impl Fingerprint {
    /// None for a path that is gone or not a regular file.
    fn of(file: &Path) -> Option<Fingerprint> {
        let meta = std::fs::metadata(file)
            .ok()
            .filter(std::fs::Metadata::is_file)?;
        let changed = SystemTime::UNIX_EPOCH
            + Duration::new(
                u64::try_from(meta.ctime()).unwrap_or(0),
                u32::try_from(meta.ctime_nsec()).unwrap_or(0),
            );
        Some(Fingerprint {
            len: meta.len(),
            modified: meta.modified().ok()?,
            changed,
            inode: meta.ino(),
        })
    }

    /// How long ago the file last changed (content, name or metadata); zero when in the future.
    fn age(&self) -> Duration {
        SystemTime::now()
            .duration_since(self.modified.max(self.changed))
            .unwrap_or_default()
    }
}

/// A file examined before, and the hash of its content then (None when it was unreadable).
struct Known {
    fingerprint: Fingerprint,
    hash: Option<String>,
}

/// How much a rescan reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Report {
    /// A line for every file (start and `GET /plugin/reload`).
    Every,
    /// Lines only for what changed (watch hints and the periodic rescan).
    Changes,
}

/// What one rescan found.
#[derive(Default)]
struct Outcome {
    lines: Vec<String>,
    /// Files still being written, and when to look at each again.
    settling: BTreeMap<PathBuf, Instant>,
}

impl Outcome {
    /// Logs and keeps one report line; `problem` logs it as a warning.
    fn say(&mut self, (line, problem): (String, bool)) {
        if problem {
            tracing::warn!("{line}");
        } else {
            tracing::info!("{line}");
        }
        self.lines.push(line);
    }

    /// When the earliest settling file should be looked at again.
    fn next_look(&self) -> Option<Instant> {
        self.settling.values().min().copied()
    }
}

struct Reloader {
    dir: PathBuf,
    sandbox: Arc<Sandbox>,
    cache: Arc<CodeCache>,
    catalog: Arc<RwLock<Catalog>>,
    known: BTreeMap<PathBuf, Known>,
    /// Files seen changing, with the look they had and since when.
    settling: BTreeMap<PathBuf, (Fingerprint, Instant)>,
}

impl Reloader {
    /// Serves requests until every [`Handle`] is gone; rescans at `next` without one.
    async fn run(
        mut self,
        mut inbox: mpsc::Receiver<Request>,
        _watcher: Option<watch::Watcher>,
        next: Option<Instant>,
    ) {
        let mut next = next.unwrap_or_else(|| Instant::now() + RESCAN_EVERY);
        loop {
            let first = tokio::select! {
                request = inbox.recv() => match request {
                    Some(request) => Some(request),
                    None => return,
                },
                () = tokio::time::sleep_until(next.into()) => None,
            };
            let replies: Vec<oneshot::Sender<Vec<String>>> = first
                .into_iter()
                .chain(std::iter::from_fn(|| inbox.try_recv().ok()))
                .filter_map(|request| match request {
                    Request::Reload(reply) => Some(reply),
                    Request::Hint => None,
                })
                .collect();
            let outcome = if replies.is_empty() {
                self.scan(Report::Changes).await
            } else {
                self.settle_all().await
            };
            for reply in replies {
                let _ = reply.send(outcome.lines.clone());
            }
            next = outcome
                .next_look()
                .unwrap_or_else(|| Instant::now() + RESCAN_EVERY);
        }
    }

    /// A full rescan that also waits for files being written, up to [`RELOAD_WAIT`].
    async fn settle_all(&mut self) -> Outcome {
        let deadline = Instant::now() + RELOAD_WAIT;
        let mut outcome = self.scan(Report::Every).await;
        while let Some(at) = outcome.next_look().filter(|at| *at <= deadline) {
            tokio::time::sleep_until(at.into()).await;
            let later = self.scan(Report::Changes).await;
            outcome.lines.extend(later.lines);
            outcome.settling = later.settling;
        }
        let still: Vec<PathBuf> = outcome.settling.keys().cloned().collect();
        for file in still {
            let (file, settle) = (file.display(), SETTLE.as_millis());
            outcome.say((format!("plugin file {file} is still being written; it loads once unchanged for {settle} ms"), false));
        }
        outcome
    }

    async fn scan(&mut self, report: Report) -> Outcome {
        let mut outcome = Outcome::default();
        let files = match plugin_files(&self.dir) {
            Ok(files) => files,
            Err(e) => {
                let dir = self.dir.display();
                outcome.say((
                    format!(
                        "cannot read plugin directory {dir}: {e}; create it or pass --plugin-dir"
                    ),
                    true,
                ));
                return outcome;
            }
        };
        let mut changed = self.forget_removed(&files, &mut outcome);
        for file in &files {
            changed |= self.examine(file, report, &mut outcome).await;
        }
        if changed {
            self.cache.retain(
                self.known
                    .values()
                    .filter_map(|known| known.hash.as_deref()),
            );
        }
        outcome
    }

    /// Takes files that are gone out of the catalog; true if there were any.
    fn forget_removed(&mut self, files: &[PathBuf], outcome: &mut Outcome) -> bool {
        self.settling.retain(|file, _| files.contains(file));
        let gone: Vec<PathBuf> = self
            .known
            .keys()
            .filter(|file| !files.contains(file))
            .cloned()
            .collect();
        for file in &gone {
            self.known.remove(file);
            let serving = self.write().remove(file).and_then(|slot| slot.current);
            let line = match serving {
                Some(plugin) => format!(
                    "removed plugin {} ({}): running connectors keep it until they restart; new ones cannot use it",
                    plugin.label(),
                    file.display()
                ),
                None => format!("removed broken plugin file {}", file.display()),
            };
            outcome.say((line, false));
        }
        !gone.is_empty()
    }

    /// Looks at one file and loads new content once it is settled; true if the catalog changed.
    async fn examine(&mut self, file: &Path, report: Report, outcome: &mut Outcome) -> bool {
        let Some(seen) = Fingerprint::of(file) else {
            return false;
        };
        if self
            .known
            .get(file)
            .is_some_and(|known| known.fingerprint == seen)
        {
            self.report_unchanged(file, report, outcome);
            return false;
        }
        let read = match self.read_settled(file, seen) {
            Ok(read) => read,
            Err(look_again) => {
                outcome.settling.insert(file.to_path_buf(), look_again);
                return false;
            }
        };
        let hash = read.as_ref().ok().map(|(_, hash)| hash.clone());
        let same = self
            .known
            .get(file)
            .is_some_and(|known| known.hash.is_some() && known.hash == hash);
        self.known.insert(
            file.to_path_buf(),
            Known {
                fingerprint: seen,
                hash,
            },
        );
        if same {
            self.report_unchanged(file, report, outcome);
            return false;
        }
        if let Some(line) = self.load(file, read).await {
            outcome.say(line);
        }
        true
    }

    /// The file's bytes and their hash (or why it cannot be read), once it is settled and did
    /// not change while being read; otherwise (`Err`) when to look again.
    fn read_settled(
        &mut self,
        file: &Path,
        seen: Fingerprint,
    ) -> Result<Result<(Vec<u8>, String), PluginError>, Instant> {
        if let Some(look_again) = self.settle(file, seen) {
            return Err(look_again);
        }
        let read = read_plugin(file);
        self.settling.remove(file);
        if Fingerprint::of(file) != Some(seen) {
            return Err(Instant::now() + SETTLE);
        }
        Ok(read.map(|wasm| {
            let hash = sha256_hex(&wasm);
            (wasm, hash)
        }))
    }

    /// Validates new content and puts the outcome in the catalog; the line that reports it.
    async fn load(
        &self,
        file: &Path,
        read: Result<(Vec<u8>, String), PluginError>,
    ) -> Option<(String, bool)> {
        let hash = read.as_ref().ok().map(|(_, hash)| hash.clone());
        let validated = match read {
            Ok((wasm, hash)) => validate(&self.sandbox, &self.cache, wasm, &hash, file).await,
            Err(reason) => Err(reason),
        };
        let mut catalog = self.write();
        match validated {
            Ok((plugin, origin)) => {
                catalog.set_loaded(Arc::new(plugin));
                catalog
                    .line(file)
                    .map(|(line, problem)| (format!("{line}; {origin}"), problem))
            }
            Err(reason) => {
                catalog.set_broken(file, hash, one_line(&reason));
                catalog.line(file)
            }
        }
    }

    fn report_unchanged(&self, file: &Path, report: Report, outcome: &mut Outcome) {
        if report == Report::Every {
            if let Some(line) = self.read().line(file) {
                outcome.say(line);
            }
        }
    }

    /// None when `file` has been unchanged for [`SETTLE`]; otherwise when to look again.
    fn settle(&mut self, file: &Path, seen: Fingerprint) -> Option<Instant> {
        let now = Instant::now();
        let since = match self.settling.get(file) {
            Some((look, since)) if *look == seen => *since,
            _ => {
                self.settling.insert(file.to_path_buf(), (seen, now));
                now
            }
        };
        let still_for = seen.age().max(now - since);
        (still_for < SETTLE).then(|| now + (SETTLE - still_for))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Catalog> {
        self.catalog.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Catalog> {
        self.catalog.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// The plugin files of `dir`, sorted.
fn plugin_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|entry| entry.path())
        .filter(|p| is_plugin_name(p))
        .collect();
    files.sort();
    Ok(files)
}

/// Plugin files are `*.wasm`; dotfiles and editor or download temporaries (`#…`, `~…`,
/// `….tmp.wasm`, `….part.wasm`) are skipped, so a publisher can write under such a name and
/// rename into place. Names that are not UTF-8 are skipped too.
pub(super) fn is_plugin_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
        return false;
    };
    let Some(stem) = name.strip_suffix(".wasm") else {
        return false;
    };
    !stem.is_empty()
        && !name.starts_with(['.', '#', '~'])
        && ![".tmp", ".part", ".partial"]
            .iter()
            .any(|t| stem.ends_with(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_wasm_files_that_are_no_dotfiles_or_temporaries_are_plugins() {
        for name in ["a.wasm", "file-source.wasm", "v1.2.wasm"] {
            assert!(is_plugin_name(Path::new(name)), "{name}");
        }
        for name in [
            ".a.wasm",
            "#a.wasm",
            "~a.wasm",
            "a.tmp.wasm",
            "a.part.wasm",
            "a.wasm.part",
            "a.wasm~",
            "a.wat",
            ".wasm",
        ] {
            assert!(!is_plugin_name(Path::new(name)), "{name}");
        }
    }
}
