//! The reload actor: the one task that rescans the plugin directory and changes the catalog.
//! File-watch hints, `GET /plugin/reload` and a periodic safety-net rescan all end in the same
//! rescan.
//!
//! A rescan stats every plugin file. A file whose size, times and inode are what they were is
//! unchanged. Any other file is read only once it is settled: unchanged for [`SETTLE`]
//! (its last change that long ago, or the same look across two checks that far apart) and
//! unchanged while being read. Its SHA-256 then decides (for a look of the file that the
//! compiled-code cache recorded, the SHA-256 recorded, without reading it: a host start
//! hashes no file it hashed before): same content, nothing to do; new content, it is
//! validated on a task of its own (compilation bounded by the sandbox, the `describe` call by
//! its own timeout), so one slow or hostile file never holds up another, and the file shows
//! as loading meanwhile. Each result is put in the catalog as it comes (first loaded wins a
//! contested name), except during the first scan, whose results are put in file-name order
//! so that the same directory always gives the same catalog.
//!
//! Only changes are logged; a reload of unchanged files logs nothing (debug at most).

use std::collections::{BTreeMap, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};

use super::cache::{sha256_hex, CodeCache};
use super::{
    one_line, read_plugin, validate, watch as file_watch, Catalog, Content, Plugin, PluginError,
    Progress,
};
use crate::sandbox::Sandbox;

/// How long a file must have stayed unchanged before it is read.
const SETTLE: Duration = Duration::from_millis(200);
/// Rescan this often even without events: the safety net for missed events.
pub(super) const RESCAN_EVERY: Duration = Duration::from_secs(30);
/// A reload (and the start) waits at most this long for files being written or loaded.
const RELOAD_WAIT: Duration = Duration::from_secs(10);

enum Request {
    /// Something in the directory changed: rescan soon.
    Hint,
    /// Rescan, wait for files being written or loaded, and answer with the report lines.
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

/// Starts watching `dir` and hands the directory to the reload actor, which loads what it
/// holds. `progress` counts the catalog's changes and says when that first scan is done
/// (every file loaded or reported, files being written waited for up to [`RELOAD_WAIT`]).
pub(super) fn start(
    dir: PathBuf,
    sandbox: Arc<Sandbox>,
    cache: Arc<CodeCache>,
    catalog: Arc<RwLock<Catalog>>,
    progress: watch::Sender<Progress>,
) -> Handle {
    let (requests, inbox) = mpsc::channel(64);
    let hints = requests.downgrade();
    let watcher = file_watch::start(&dir, move || {
        if let Some(hints) = hints.upgrade() {
            // A full queue already holds a rescan request.
            let _ = hints.try_send(Request::Hint);
        }
    });
    let (finished, results) = mpsc::unbounded_channel();
    let reloader = Reloader {
        dir,
        sandbox,
        cache,
        catalog,
        known: BTreeMap::new(),
        settling: BTreeMap::new(),
        loading: BTreeMap::new(),
        loads: 0,
        finished,
        first_scan: Some(VecDeque::new()),
        held: BTreeMap::new(),
        waiters: Vec::new(),
        progress,
    };
    tokio::spawn(reloader.run(inbox, results, watcher));
    Handle { requests }
}

/// What a file looked like when last examined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fingerprint {
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

    /// Bytes of [`Fingerprint::to_bytes`].
    pub(super) const BYTES: usize = 8 + 12 + 12 + 8;

    /// The look as bytes, for the compiled-code cache's record of the file's content hash.
    pub(super) fn to_bytes(self) -> [u8; Self::BYTES] {
        let time = |t: SystemTime| {
            let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
            (since.as_secs(), since.subsec_nanos())
        };
        let ((modified, modified_ns), (changed, changed_ns)) =
            (time(self.modified), time(self.changed));
        let mut bytes = [0; Self::BYTES];
        let parts: [&[u8]; 6] = [
            &self.len.to_le_bytes(),
            &modified.to_le_bytes(),
            &modified_ns.to_le_bytes(),
            &changed.to_le_bytes(),
            &changed_ns.to_le_bytes(),
            &self.inode.to_le_bytes(),
        ];
        let mut at = 0;
        for part in parts {
            bytes[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        bytes
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
    /// A line for every file, unchanged ones logged at debug level only (`GET /plugin/reload`
    /// and the start).
    Every,
    /// Lines only for what changed (watch hints and the periodic rescan).
    Changes,
}

/// Someone waiting for a rescan's outcome: a reload request, or the start.
struct Waiter {
    /// None for the start.
    reply: Option<oneshot::Sender<Vec<String>>>,
    lines: Vec<String>,
    deadline: Instant,
}

/// The outcome of one load, sent back to the actor.
struct Finished {
    file: PathBuf,
    /// Which load of the file this was: only the newest one counts.
    load: u64,
    hash: Option<String>,
    result: Result<Plugin, PluginError>,
}

struct Reloader {
    dir: PathBuf,
    sandbox: Arc<Sandbox>,
    cache: Arc<CodeCache>,
    catalog: Arc<RwLock<Catalog>>,
    known: BTreeMap<PathBuf, Known>,
    /// Files seen changing, with the look they had and since when.
    settling: BTreeMap<PathBuf, (Fingerprint, Instant)>,
    /// Files being validated, with the number of their newest load.
    loading: BTreeMap<PathBuf, u64>,
    /// Loads started so far.
    loads: u64,
    finished: mpsc::UnboundedSender<Finished>,
    /// While the first scan runs: its files, in file-name order, not yet put in the catalog.
    first_scan: Option<VecDeque<PathBuf>>,
    /// Results of first-scan files waiting for the files before them.
    held: BTreeMap<PathBuf, Finished>,
    waiters: Vec<Waiter>,
    /// Told of every change of the catalog, and when the first scan is done.
    progress: watch::Sender<Progress>,
}

impl Reloader {
    /// Serves requests until every [`Handle`] is gone; rescans when a file may have settled,
    /// and every [`RESCAN_EVERY`] without any request.
    async fn run(
        mut self,
        mut inbox: mpsc::Receiver<Request>,
        mut results: mpsc::UnboundedReceiver<Finished>,
        _watcher: Option<file_watch::Watcher>,
    ) {
        self.waiters.push(Waiter {
            reply: None,
            lines: Vec::new(),
            deadline: Instant::now() + RELOAD_WAIT,
        });
        self.scan(Report::Every);
        self.first_scan_spawned();
        let mut periodic = Instant::now() + RESCAN_EVERY;
        loop {
            self.answer_waiters();
            let next = self
                .settling_look()
                .into_iter()
                .chain(self.waiters.iter().map(|w| w.deadline))
                .chain([periodic])
                .min()
                .unwrap_or(periodic);
            tokio::select! {
                request = inbox.recv() => match request {
                    Some(Request::Hint) => self.scan(Report::Changes),
                    Some(Request::Reload(reply)) => {
                        self.waiters.push(Waiter {
                            reply: Some(reply),
                            lines: Vec::new(),
                            deadline: Instant::now() + RELOAD_WAIT,
                        });
                        self.scan(Report::Every);
                    }
                    None => return,
                },
                Some(done) = results.recv() => self.finish(done),
                () = tokio::time::sleep_until(next.into()) => {
                    if Instant::now() >= periodic {
                        periodic = Instant::now() + RESCAN_EVERY;
                    }
                    self.scan(Report::Changes);
                }
            }
        }
    }

    /// Logs a report line and gives it to everyone waiting; `problem` logs it as a warning.
    fn say(&mut self, (line, problem): (String, bool)) {
        if problem {
            tracing::warn!("{line}");
        } else {
            tracing::info!("{line}");
        }
        self.tell(line);
    }

    /// Gives a line to everyone waiting, without logging it.
    fn tell(&mut self, line: String) {
        for waiter in &mut self.waiters {
            waiter.lines.push(line.clone());
        }
    }

    /// When the earliest settling file should be looked at again.
    fn settling_look(&self) -> Option<Instant> {
        let now = Instant::now();
        self.settling
            .values()
            .map(|(_, since)| (*since + SETTLE).max(now))
            .min()
    }

    /// Answers every waiter whose files are all settled and loaded, or whose time is up
    /// (naming the files still in the works).
    fn answer_waiters(&mut self) {
        let idle = self.settling.is_empty() && self.loading.is_empty();
        let now = Instant::now();
        if !idle && self.waiters.iter().all(|w| w.deadline > now) {
            return;
        }
        let mut pending = Vec::new();
        if !idle {
            let settle = SETTLE.as_millis();
            for file in self.settling.keys() {
                let file = file.display();
                pending.push(format!("plugin file {file} is still being written; it loads once unchanged for {settle} ms"));
            }
            for file in self.loading.keys() {
                pending.push(format!("plugin file {} is still loading", file.display()));
            }
        }
        let (done, waiting): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|w| idle || w.deadline <= now);
        self.waiters = waiting;
        for mut waiter in done {
            for line in &pending {
                tracing::info!("{line}");
                waiter.lines.push(line.clone());
            }
            match waiter.reply {
                Some(reply) => {
                    let _ = reply.send(waiter.lines);
                }
                None => self.first_scan_done(),
            }
        }
    }

    /// The start is answered: from now on results go in the catalog as they come.
    fn first_scan_done(&mut self) {
        if let Some(order) = self.first_scan.take() {
            for file in order {
                if let Some(done) = self.held.remove(&file) {
                    self.commit(done);
                }
            }
        }
        self.progress
            .send_modify(|progress| progress.started = true);
    }

    /// Every load of the first scan has been started: its files are those loading now.
    fn first_scan_spawned(&mut self) {
        if let Some(order) = &mut self.first_scan {
            order.extend(self.loading.keys().cloned());
        }
        self.release_held();
    }

    fn scan(&mut self, report: Report) {
        let files = match plugin_files(&self.dir) {
            Ok(files) => files,
            Err(e) => {
                let dir = self.dir.display();
                self.say((
                    format!(
                        "cannot read plugin directory {dir}: {e}; create it or pass --plugin-dir"
                    ),
                    true,
                ));
                return;
            }
        };
        let mut changed = self.forget_removed(&files);
        for file in &files {
            changed |= self.examine(file, report);
        }
        if changed {
            self.cache.retain(
                self.known
                    .values()
                    .filter_map(|known| known.hash.as_deref()),
                self.known.keys().map(PathBuf::as_path),
            );
        }
    }

    /// Takes files that are gone out of the catalog; true if there were any.
    fn forget_removed(&mut self, files: &[PathBuf]) -> bool {
        self.settling.retain(|file, _| files.contains(file));
        self.loading.retain(|file, _| files.contains(file));
        let gone: Vec<PathBuf> = self
            .known
            .keys()
            .filter(|file| !files.contains(file))
            .cloned()
            .collect();
        for file in &gone {
            self.known.remove(file);
            self.held.remove(file);
            let serving = self.write().remove(file).and_then(|slot| slot.current);
            let line = match serving {
                Some(plugin) => format!(
                    "removed plugin {} ({}): running connectors keep it until they restart; new ones cannot use it",
                    plugin.label(),
                    file.display()
                ),
                None => format!("removed broken plugin file {}", file.display()),
            };
            self.say((line, false));
        }
        if !gone.is_empty() {
            self.release_held();
        }
        !gone.is_empty()
    }

    /// Looks at one file and starts loading new content once it is settled; true if its
    /// content changed.
    fn examine(&mut self, file: &Path, report: Report) -> bool {
        let Some(seen) = Fingerprint::of(file) else {
            return false;
        };
        if self
            .known
            .get(file)
            .is_some_and(|known| known.fingerprint == seen)
        {
            self.report_unchanged(file, report);
            return false;
        }
        let read = match self.read_settled(file, seen) {
            Ok(read) => read,
            Err(_) => {
                self.settling
                    .entry(file.to_path_buf())
                    .or_insert((seen, Instant::now()));
                return false;
            }
        };
        let hash = read.as_ref().ok().map(|content| content.hash.clone());
        let same = self
            .known
            .get(file)
            .is_some_and(|known| known.hash.is_some() && known.hash == hash);
        self.known.insert(
            file.to_path_buf(),
            Known {
                fingerprint: seen,
                hash: hash.clone(),
            },
        );
        if same {
            self.report_unchanged(file, report);
            return false;
        }
        self.load(file, hash, read);
        true
    }

    /// Validates new content on a task of its own; the result comes back to [`Self::finish`].
    fn load(&mut self, file: &Path, hash: Option<String>, read: Result<Content, PluginError>) {
        self.loads += 1;
        let load = self.loads;
        self.held.remove(file);
        self.loading.insert(file.to_path_buf(), load);
        self.write().set_loading(file, true);
        let (sandbox, cache, finished) = (
            self.sandbox.clone(),
            self.cache.clone(),
            self.finished.clone(),
        );
        let file = file.to_path_buf();
        tokio::spawn(async move {
            let result = match read {
                Ok(content) => validate(&sandbox, &cache, content, &file).await,
                Err(reason) => Err(reason),
            };
            let _ = finished.send(Finished {
                file,
                load,
                hash,
                result,
            });
        });
    }

    /// A load is done: its result goes in the catalog unless the file changed or went away
    /// meanwhile; during the first scan, only once every file before it is in.
    fn finish(&mut self, done: Finished) {
        if self.loading.get(&done.file) != Some(&done.load) {
            return;
        }
        let held = self
            .first_scan
            .as_ref()
            .is_some_and(|order| order.contains(&done.file));
        if held {
            self.held.insert(done.file.clone(), done);
            self.release_held();
        } else {
            self.commit(done);
        }
    }

    /// Commits the held first-scan results whose files come next in file-name order.
    fn release_held(&mut self) {
        loop {
            let Some(front) = self.first_scan.as_ref().and_then(|o| o.front().cloned()) else {
                return;
            };
            if let Some(done) = self.held.remove(&front) {
                self.commit(done);
            } else if self.loading.contains_key(&front) {
                return;
            }
            if let Some(order) = &mut self.first_scan {
                order.pop_front();
            }
        }
    }

    /// Puts a load's outcome in the catalog and reports it.
    fn commit(&mut self, done: Finished) {
        self.loading.remove(&done.file);
        let line = {
            let mut catalog = self.write();
            catalog.set_loading(&done.file, false);
            match done.result {
                Ok(plugin) => {
                    let origin = plugin.origin;
                    catalog
                        .admit(plugin)
                        .map(|(line, problem)| (format!("{line}; {origin}"), problem))
                }
                Err(reason) => {
                    catalog.set_broken(&done.file, done.hash, one_line(&reason));
                    catalog.line(&done.file)
                }
            }
        };
        self.progress.send_modify(|progress| progress.changes += 1);
        if let Some(line) = line {
            self.say(line);
        }
    }

    /// A reload tells what an unchanged file serves; only the debug log shows it.
    fn report_unchanged(&mut self, file: &Path, report: Report) {
        if report == Report::Every && !self.loading.contains_key(file) {
            let line = self.read().line(file);
            if let Some((line, _)) = line {
                tracing::debug!("unchanged: {line}");
                self.tell(line);
            }
        }
    }

    /// The file's content (or why it cannot be read), once it is settled and did not change
    /// while being read; otherwise (`Err`) when to look again. A look of the file that the
    /// compiled-code cache has a record of gives the content's hash without reading it.
    fn read_settled(
        &mut self,
        file: &Path,
        seen: Fingerprint,
    ) -> Result<Result<Content, PluginError>, Instant> {
        if let Some(look_again) = self.settle(file, seen) {
            return Err(look_again);
        }
        if let Some(hash) = self.cache.recorded_hash(file, &seen) {
            self.settling.remove(file);
            return Ok(Ok(Content { hash, wasm: None }));
        }
        let read = read_plugin(file);
        self.settling.remove(file);
        if Fingerprint::of(file) != Some(seen) {
            return Err(Instant::now() + SETTLE);
        }
        Ok(read.map(|wasm| {
            let hash = sha256_hex(&wasm);
            self.cache.record_hash(file, &seen, &hash);
            Content {
                hash,
                wasm: Some(wasm),
            }
        }))
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
