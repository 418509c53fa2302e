//! The plugin directory: every `*.wasm` file in it is a connector plugin, loaded (compiled or
//! taken from the compiled-code cache, linked, checked against the WIT worlds and asked to
//! `describe` itself) while the host runs. This module owns the catalog of plugin versions
//! and answers which plugin version serves a `connector-class`.
//!
//! - `reload`: the one reload actor. File-watch events, `GET /plugin/reload` and a periodic
//!   safety-net rescan all end in its rescan; changes are detected by content hash, and a
//!   file is read only once it has stopped changing.
//! - `watch`: the debounced file watcher that sends rescan hints to the actor.
//! - `cache`: compiled native code in `<data-dir>/plugin-cache/`, keyed by content hash and
//!   engine compatibility hash, and a record of each plugin file's content hash.
//! - `check`: `wasm-connect plugin check FILE.wasm`, the same validation offline.
//!
//! Versions: each file serves one plugin version (its `current`). Replacing a file adds the
//! new version; the one it replaced stays selectable by pin (`superseded`) until the host
//! restarts, and running connectors keep whatever version they started with. A file that
//! fails validation never replaces the working version of that file; a removed file takes
//! its versions out of the catalog (running connectors keep theirs, new creates get an
//! error). New connectors get the newest loaded version unless their config pins one with
//! `connector-class` = `name@version` or `plugin.version`.
//!
//! Trust: what a component says about itself is untrusted. Its name, aliases and version must
//! be valid names (`crate::names`), and a name or alias already served by a plugin of another
//! name (from another file) is refused: the first loaded keeps it; at start, the first by file
//! name. A new version of the same name, from any file, is an upgrade (logged as a warning
//! when another file serves that name): whoever may write the plugin directory is trusted.

mod cache;
pub use cache::Origin;
pub mod check;
mod reload;
mod watch;

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use crate::names::{self, NameKind};
use crate::sandbox::types::{ConnectorKind, Descriptor};
use crate::sandbox::{CompileError, ConnectorComponent, GuestFailure, Sandbox};
use crate::storage::Properties;

use cache::CodeCache;

/// Config key that pins a plugin version; also stamped on every task config with the exact
/// version the task runs.
pub const PLUGIN_VERSION: &str = "plugin.version";
/// Largest plugin file accepted.
const MAX_PLUGIN_BYTES: u64 = 64 << 20;
/// Longest a create waits for the first scan of the plugin directory when its class is not
/// loaded yet.
const START_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A loaded connector plugin: one version of one plugin, from one file.
pub struct Plugin {
    pub descriptor: Descriptor,
    pub component: ConnectorComponent,
    pub file: PathBuf,
    /// SHA-256 of the file's bytes, hex.
    pub content_hash: String,
    /// Where its code came from: compiled now (and how long that took) or the cache.
    pub origin: Origin,
}

impl Plugin {
    /// True when `class` names this plugin (its name or one of its aliases), without version.
    pub fn answers_to(&self, class: &str) -> bool {
        self.descriptor.name == class || self.descriptor.aliases.iter().any(|alias| alias == class)
    }

    pub fn kind(&self) -> ConnectorKind {
        self.component.kind()
    }

    fn is_version(&self, version: &str) -> bool {
        self.descriptor.version == version
    }

    /// `name version`, for messages.
    fn label(&self) -> String {
        format!("{} {}", self.descriptor.name, self.descriptor.version)
    }

    /// `name version from file.wasm`, for messages about another plugin.
    fn origin(&self) -> String {
        let file = self.file.file_name().unwrap_or(self.file.as_os_str());
        format!("{} from {}", self.label(), file.to_string_lossy())
    }
}

/// One row of [`PluginRegistry::list`]: a plugin version, or a file that does not load.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    pub file: PathBuf,
    /// Name, version, kind, aliases, description and config definitions, as the component
    /// describes itself; None for a broken file.
    pub descriptor: Option<Descriptor>,
    /// SHA-256 of the bytes this row is about, hex (None when the file could not be read).
    pub content_hash: Option<String>,
    pub status: PluginStatus,
    /// How a version's code was loaded (compiled, and how long it took, or from the cache);
    /// None for a file loading or broken.
    pub origin: Option<Origin>,
}

/// Where a [`PluginInfo`] row stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginStatus {
    /// Served by its file: new connectors may get it.
    Loaded,
    /// Replaced in its file by another version since the host started: selectable only by
    /// pinning its version; gone after a host restart.
    Superseded,
    /// The file's present content is being compiled and checked. A working version of the
    /// same file, if any, is listed as `Loaded` beside it.
    Loading,
    /// The file's present content failed validation; `reason` says why and what to fix. A
    /// working version of the same file, if any, is listed as `Loaded` beside it.
    Broken { reason: String },
}

/// Why no plugin version could be chosen for a connector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// No loaded plugin answers to the class (the message the legacy API answers with).
    #[error("no connector plugin named '{class}'; available: {available}")]
    Unknown { class: String, available: String },
    /// No loaded plugin answers to the class yet, and the plugin directory is still loading.
    #[error("no connector plugin named '{class}' yet: the plugin directory is still loading ({loading} files); retry in a few seconds")]
    StillLoading { class: String, loading: usize },
    #[error(
        "plugin {name} has no version {version} loaded (loaded: {available}); pin one of those, \
         or drop the {version} build into the plugin directory"
    )]
    NoSuchVersion {
        name: String,
        version: String,
        available: String,
    },
    /// The version pin itself is unusable.
    #[error("{0}")]
    BadPin(String),
}

/// The working and failed content of one plugin file.
#[derive(Default)]
struct Slot {
    /// The working version this file serves (kept while newer content of it is broken).
    current: Option<Arc<Plugin>>,
    /// Earlier working versions of this file since the host started.
    superseded: Vec<Arc<Plugin>>,
    /// The file's present content when it fails validation: (content hash, reason).
    broken: Option<(Option<String>, String)>,
    /// True while the file's present content is being validated.
    loading: bool,
}

/// Every plugin file the reload actor has examined.
#[derive(Default)]
struct Catalog {
    files: BTreeMap<PathBuf, Slot>,
}

impl Catalog {
    /// `plugin` is now what its file serves; the version it replaces becomes superseded.
    fn set_loaded(&mut self, plugin: Arc<Plugin>) {
        let slot = self.files.entry(plugin.file.clone()).or_default();
        slot.broken = None;
        let same_version = |p: &Arc<Plugin>| {
            p.descriptor.name == plugin.descriptor.name && p.is_version(&plugin.descriptor.version)
        };
        slot.superseded.retain(|p| !same_version(p));
        if let Some(old) = slot.current.replace(plugin.clone()) {
            if !same_version(&old) {
                slot.superseded.push(old);
            }
        }
    }

    /// Puts a validated plugin in the catalog unless it claims a name or alias that a plugin
    /// of another name serves; the line that reports the outcome. A new version of a name
    /// another file serves is a warning.
    fn admit(&mut self, plugin: Plugin) -> Option<(String, bool)> {
        let file = plugin.file.clone();
        if let Some(reason) = self.claimed(&plugin) {
            let hash = Some(plugin.content_hash.clone());
            self.set_broken(&file, hash, reason);
            return self.line(&file);
        }
        let beside = self
            .current()
            .find(|p| p.file != plugin.file && p.descriptor.name == plugin.descriptor.name)
            .map(|p| p.origin());
        self.set_loaded(Arc::new(plugin));
        let (line, problem) = self.line(&file)?;
        Some(match beside {
            Some(other) => (
                format!("{line}; another file serves this plugin too ({other}): new connectors get the newest version unless they pin one"),
                true,
            ),
            None => (line, problem),
        })
    }

    /// Why `plugin` may not have its names: the first of its name and aliases that a current
    /// plugin of another name, from another file, answers to.
    fn claimed(&self, plugin: &Plugin) -> Option<String> {
        let d = &plugin.descriptor;
        let claims =
            std::iter::once(("name", &d.name)).chain(d.aliases.iter().map(|a| ("alias", a)));
        for (what, claim) in claims {
            let holder = self.current().find(|p| {
                p.file != plugin.file && p.descriptor.name != d.name && p.answers_to(claim)
            });
            if let Some(holder) = holder {
                return Some(format!(
                    "{what} '{claim}' is already provided by {}",
                    holder.origin()
                ));
            }
        }
        None
    }

    fn set_loading(&mut self, file: &Path, loading: bool) {
        match self.files.get_mut(file) {
            Some(slot) => slot.loading = loading,
            None if loading => {
                self.files.insert(
                    file.to_path_buf(),
                    Slot {
                        loading,
                        ..Slot::default()
                    },
                );
            }
            None => {}
        }
    }

    /// Files being validated.
    fn loading(&self) -> usize {
        self.files.values().filter(|slot| slot.loading).count()
    }

    /// The file's present content is broken; its working version, if any, keeps serving.
    fn set_broken(
        &mut self,
        file: &Path,
        hash: Option<String>,
        reason: String,
    ) -> Option<Arc<Plugin>> {
        let slot = self.files.entry(file.to_path_buf()).or_default();
        slot.broken = Some((hash, reason));
        slot.current.clone()
    }

    fn remove(&mut self, file: &Path) -> Option<Slot> {
        self.files.remove(file)
    }

    fn current(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.files.values().filter_map(|slot| slot.current.as_ref())
    }

    /// Current versions first, then superseded ones.
    fn every_version(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.current()
            .chain(self.files.values().flat_map(|slot| slot.superseded.iter()))
    }

    /// The newest current version answering to `class`; ties go to the file sorting last.
    fn newest(&self, class: &str) -> Option<Arc<Plugin>> {
        self.current()
            .filter(|p| p.answers_to(class))
            .max_by(|a, b| compare_versions(&a.descriptor.version, &b.descriptor.version))
            .cloned()
    }

    /// The version `version` of the plugin answering to `class`, current before superseded.
    fn exact(&self, class: &str, version: &str) -> Option<Arc<Plugin>> {
        self.every_version()
            .find(|p| p.answers_to(class) && p.is_version(version))
            .cloned()
    }

    /// The one log line that says what a file serves, as of now, and whether it is a problem.
    fn line(&self, file: &Path) -> Option<(String, bool)> {
        let slot = self.files.get(file)?;
        let file = file.display();
        Some(match (&slot.broken, &slot.current) {
            (Some((_, reason)), Some(kept)) => (
                format!(
                    "broken plugin {file}: {reason}; keeping the working version of {}",
                    kept.label()
                ),
                true,
            ),
            (Some((_, reason)), None) => (format!("broken plugin {file}: {reason}"), true),
            (None, Some(plugin)) => {
                let d = &plugin.descriptor;
                (
                    format!(
                        "loaded plugin {} {} ({}) from {file}",
                        d.name,
                        d.version,
                        kind_name(d.kind)
                    ),
                    false,
                )
            }
            (None, None) => return None,
        })
    }

    fn rows(&self) -> Vec<PluginInfo> {
        let row = |plugin: &Arc<Plugin>, status: PluginStatus| PluginInfo {
            file: plugin.file.clone(),
            descriptor: Some(plugin.descriptor.clone()),
            content_hash: Some(plugin.content_hash.clone()),
            status,
            origin: Some(plugin.origin),
        };
        let mut rows = Vec::new();
        for (file, slot) in &self.files {
            rows.extend(slot.current.iter().map(|p| row(p, PluginStatus::Loaded)));
            rows.extend(
                slot.superseded
                    .iter()
                    .map(|p| row(p, PluginStatus::Superseded)),
            );
            if slot.loading {
                rows.push(PluginInfo {
                    file: file.clone(),
                    descriptor: None,
                    content_hash: None,
                    status: PluginStatus::Loading,
                    origin: None,
                });
            } else if let Some((hash, reason)) = &slot.broken {
                let status = PluginStatus::Broken {
                    reason: reason.clone(),
                };
                rows.push(PluginInfo {
                    file: file.clone(),
                    descriptor: None,
                    content_hash: hash.clone(),
                    status,
                    origin: None,
                });
            }
        }
        rows
    }
}

/// How far the reload actor got.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    /// The first scan of the directory is done.
    started: bool,
    /// Outcomes put in the catalog so far.
    changes: u64,
}

/// The plugins of one directory, kept up to date by the reload actor.
pub struct PluginRegistry {
    catalog: Arc<RwLock<Catalog>>,
    reloads: reload::Handle,
    progress: tokio::sync::watch::Receiver<Progress>,
}

impl PluginRegistry {
    /// Starts loading every plugin of `dir` (compiled code cached under `data_dir`) in the
    /// background, and keeps the catalog in step with the directory: file-watch events,
    /// [`PluginRegistry::reload`] and a periodic rescan all run the same rescan. Returns at
    /// once; [`PluginRegistry::started`] tells when the first scan is done. Needs a tokio
    /// runtime.
    pub fn spawn(dir: PathBuf, data_dir: &Path, sandbox: Arc<Sandbox>) -> PluginRegistry {
        let catalog = Arc::new(RwLock::new(Catalog::default()));
        let cache = Arc::new(CodeCache::open(data_dir, &sandbox));
        let (progress_tx, progress) = tokio::sync::watch::channel(Progress::default());
        let reloads = reload::start(dir, sandbox, cache, catalog.clone(), progress_tx);
        PluginRegistry {
            catalog,
            reloads,
            progress,
        }
    }

    /// [`PluginRegistry::spawn`], returning once the first scan is done.
    pub async fn start(dir: PathBuf, data_dir: &Path, sandbox: Arc<Sandbox>) -> PluginRegistry {
        let registry = PluginRegistry::spawn(dir, data_dir, sandbox);
        registry.started().await;
        registry
    }

    /// Resolves once the first scan of the directory is done: every file present at start
    /// loaded or reported broken (files still being written waited for up to 10 s).
    pub async fn started(&self) {
        let mut progress = self.progress.clone();
        let _ = progress.wait_for(|p| p.started).await;
    }

    /// Rescans the directory now and returns once every changed file is loaded or reported
    /// (a file still being written is waited for, up to a few seconds): one line per file,
    /// each also logged. Backs `GET /plugin/reload`.
    pub async fn reload(&self) -> Vec<String> {
        self.reloads.reload().await
    }

    /// The newest loaded version of the plugin that answers to `class` (a plugin name or an
    /// alias, without version).
    pub fn find(&self, class: &str) -> Option<Arc<Plugin>> {
        self.read().newest(class)
    }

    /// The plugin version a connector with `config` runs: the version pinned by its class
    /// (`name@version`) or by `plugin.version`; else `recorded` (the version its tasks
    /// recorded) while that is still loaded; else the newest loaded version.
    ///
    /// Creates and updates pass `recorded = None`, so they move to the newest version; task
    /// starts (host restart, resume, task restart) pass the recorded one, so a connector comes
    /// back on the version it had while that version is loaded.
    pub fn resolve(
        &self,
        class: &str,
        config: &Properties,
        recorded: Option<&str>,
    ) -> Result<Arc<Plugin>, SelectError> {
        let (name, pin) = pinned(class, config)?;
        let catalog = self.read();
        let newest = catalog.newest(name).ok_or_else(|| SelectError::Unknown {
            class: name.to_string(),
            available: names_of(&catalog).join(", "),
        })?;
        let Some(version) = pin else {
            return Ok(recorded
                .and_then(|v| catalog.exact(name, v))
                .unwrap_or(newest));
        };
        catalog
            .exact(name, version)
            .ok_or_else(|| SelectError::NoSuchVersion {
                name: newest.descriptor.name.clone(),
                version: version.to_string(),
                available: versions_of(&catalog, name).join(", "),
            })
    }

    /// [`PluginRegistry::resolve`] for a create or update: while the first scan of the
    /// directory runs, a class that is not loaded yet is waited for (up to 10 s, until it
    /// loads or the scan is done), so a create right after the host starts finds the plugins
    /// present at start.
    pub async fn resolve_for_put(
        &self,
        class: &str,
        config: &Properties,
    ) -> Result<Arc<Plugin>, SelectError> {
        let deadline = Instant::now() + START_WAIT;
        let mut progress = self.progress.clone();
        loop {
            let started = progress.borrow_and_update().started;
            match self.resolve(class, config, None) {
                Err(SelectError::Unknown { class, .. }) if !started => {
                    let changed = tokio::time::timeout_at(deadline.into(), progress.changed());
                    if !matches!(changed.await, Ok(Ok(()))) {
                        let loading = self.read().loading();
                        return Err(SelectError::StillLoading { class, loading });
                    }
                }
                resolved => return resolved,
            }
        }
    }

    /// Names of the loaded plugins, sorted, each once.
    pub fn names(&self) -> Vec<String> {
        names_of(&self.read())
    }

    /// Every plugin version and every broken file, by file: for listings such as
    /// `GET /connector-plugins`. A file whose new content is broken while its previous version
    /// keeps serving has two rows (`Loaded` and `Broken`); a replaced version is `Superseded`.
    pub fn list(&self) -> Vec<PluginInfo> {
        self.read().rows()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Catalog> {
        self.catalog.read().unwrap_or_else(|e| e.into_inner())
    }
}

fn names_of(catalog: &Catalog) -> Vec<String> {
    let mut names: Vec<String> = catalog
        .current()
        .map(|p| p.descriptor.name.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Every loaded version of the plugin answering to `class`, oldest first.
fn versions_of(catalog: &Catalog, class: &str) -> Vec<String> {
    let mut versions: Vec<String> = catalog
        .every_version()
        .filter(|p| p.answers_to(class))
        .map(|p| p.descriptor.version.clone())
        .collect();
    versions.sort_by(|a, b| compare_versions(a, b));
    versions.dedup();
    versions
}

/// Splits `name@version` and reads `plugin.version`: the class without version, and the
/// pinned version if any.
fn pinned<'a>(
    class: &'a str,
    config: &'a Properties,
) -> Result<(&'a str, Option<&'a str>), SelectError> {
    let (name, in_class) = match class.rsplit_once('@') {
        Some((name, version)) => (name, Some(version)),
        None => (class, None),
    };
    let in_key = config
        .get(PLUGIN_VERSION)
        .map(String::as_str)
        .filter(|v| !v.is_empty());
    match (in_class, in_key) {
        (Some(""), _) => Err(SelectError::BadPin(format!(
            "connector-class '{class}' ends in '@' without a version; write name@version or leave out the '@'"
        ))),
        (Some(a), Some(b)) if a != b => Err(SelectError::BadPin(format!(
            "connector-class pins version {a} but {PLUGIN_VERSION} pins {b}; give the version once"
        ))),
        (pin, other) => Ok((name, pin.or(other))),
    }
}

/// Version order: semantic versions by semver precedence, above any other version string;
/// other strings compare as text.
fn compare_versions(a: &str, b: &str) -> Ordering {
    match (semver::Version::parse(a), semver::Version::parse(b)) {
        (Ok(a), Ok(b)) => a.cmp(&b),
        (Ok(_), Err(_)) => Ordering::Greater,
        (Err(_), Ok(_)) => Ordering::Less,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

pub fn kind_name(kind: ConnectorKind) -> &'static str {
    match kind {
        ConnectorKind::Source => "source",
        ConnectorKind::Sink => "sink",
        ConnectorKind::Transform => "transformation",
    }
}

/// The WIT world a plugin of `kind` targets.
pub fn world_name(kind: ConnectorKind) -> &'static str {
    match kind {
        ConnectorKind::Source => "source-connector",
        ConnectorKind::Sink => "sink-connector",
        ConnectorKind::Transform => "transform-component",
    }
}

/// Why a plugin file cannot serve: the reason a broken plugin is reported with.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot read: {0}")]
    Read(#[source] std::io::Error),
    #[error("{0} bytes is over the {MAX_PLUGIN_BYTES}-byte limit for a plugin")]
    TooBig(u64),
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error(transparent)]
    Describe(#[from] GuestFailure),
    #[error("describes itself as a {} but targets the {} world", kind_name(*described), world_name(*world))]
    WorldMismatch {
        described: ConnectorKind,
        world: ConnectorKind,
    },
    #[error(transparent)]
    Name(#[from] names::NameError),
    #[error("the name or alias '{0}' contains '@', which separates a name from a version in connector-class")]
    AtInName(String),
}

/// Reads a plugin file, refusing one over the size cap before reading it.
fn read_plugin(file: &Path) -> Result<Vec<u8>, PluginError> {
    let opened = std::fs::File::open(file).map_err(PluginError::Read)?;
    let size = opened.metadata().map_err(PluginError::Read)?.len();
    if size > MAX_PLUGIN_BYTES {
        return Err(PluginError::TooBig(size));
    }
    let mut wasm = Vec::with_capacity(size as usize);
    opened
        .take(MAX_PLUGIN_BYTES + 1)
        .read_to_end(&mut wasm)
        .map_err(PluginError::Read)?;
    if wasm.len() as u64 > MAX_PLUGIN_BYTES {
        return Err(PluginError::TooBig(wasm.len() as u64));
    }
    Ok(wasm)
}

/// A plugin file's content as found: its SHA-256, and its bytes unless the hash came from the
/// compiled-code cache's record of the file (they are then read only if the code must be
/// compiled).
pub(crate) struct Content {
    pub hash: String,
    pub wasm: Option<Vec<u8>>,
}

/// The component of `file` with `content`: from the compiled-code cache, or compiled by the
/// sandbox (in a child process, within the compile limits) and stored; with the SHA-256 of
/// the content it is.
async fn compile(
    sandbox: &Arc<Sandbox>,
    cache: &Arc<CodeCache>,
    content: Content,
    file: &Path,
) -> Result<(ConnectorComponent, cache::Origin, String), PluginError> {
    let Content { hash, wasm } = content;
    let (from_sandbox, from_cache, key) = (sandbox.clone(), cache.clone(), hash.clone());
    let cached = tokio::task::spawn_blocking(move || from_cache.lookup(&from_sandbox, &key))
        .await
        .ok()
        .flatten();
    if let Some(component) = cached {
        return Ok((component, cache::Origin::Cache, hash));
    }
    // Read now if only the hash was known: the file is what the record says, unless it was
    // replaced meanwhile (then these bytes are compiled, and the next rescan sees the change).
    let (wasm, hash) = match wasm {
        Some(wasm) => (wasm, hash),
        None => {
            let wasm = read_plugin(file)?;
            let hash = cache::sha256_hex(&wasm);
            (wasm, hash)
        }
    };
    let started = Instant::now();
    let (component, artifact) = sandbox.compile(wasm).await?;
    let took = started.elapsed();
    let (cache, key) = (cache.clone(), hash.clone());
    let _ = tokio::task::spawn_blocking(move || cache.store(&key, &artifact)).await;
    Ok((component, cache::Origin::Compiled(took), hash))
}

/// Compiles, links and describes a component and checks what it says about itself: what
/// every plugin file goes through before it can serve, and what `plugin check` runs.
async fn validate(
    sandbox: &Arc<Sandbox>,
    cache: &Arc<CodeCache>,
    content: Content,
    file: &Path,
) -> Result<Plugin, PluginError> {
    let (component, origin, hash) = compile(sandbox, cache, content, file).await?;
    let descriptor = component.describe(sandbox).await?;
    check_descriptor(&descriptor, component.kind())?;
    let plugin = Plugin {
        descriptor,
        component,
        file: file.to_path_buf(),
        content_hash: hash,
        origin,
    };
    Ok(plugin)
}

/// What a component says about itself must fit the world it targets and the `@` pin syntax.
fn check_descriptor(descriptor: &Descriptor, world: ConnectorKind) -> Result<(), PluginError> {
    if world != descriptor.kind {
        return Err(PluginError::WorldMismatch {
            described: descriptor.kind,
            world,
        });
    }
    names::validate(NameKind::Plugin, &descriptor.name)?;
    names::validate(NameKind::Version, &descriptor.version)?;
    for alias in &descriptor.aliases {
        names::validate(NameKind::Alias, alias)?;
    }
    let with_at = std::iter::once(&descriptor.name)
        .chain(&descriptor.aliases)
        .find(|n| n.contains('@'));
    if let Some(name) = with_at {
        return Err(PluginError::AtInName(name.clone()));
    }
    Ok(())
}

/// Reduces a reason to one line (wasmtime's messages may span several) of at most 2,000
/// characters, invisible characters escaped: a reason may quote what a guest said.
fn one_line(reason: &impl std::fmt::Display) -> String {
    let words = reason
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    names::visible(&words, 2000)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::tests::props as config;

    #[test]
    fn semver_orders_by_precedence_and_beats_other_strings() {
        assert_eq!(compare_versions("1.10.0", "1.9.0"), Ordering::Greater);
        assert_eq!(compare_versions("2.0.0-rc.1", "2.0.0"), Ordering::Less);
        assert_eq!(compare_versions("0.1.0", "nightly"), Ordering::Greater);
        assert_eq!(compare_versions("b", "a"), Ordering::Greater);
    }

    #[test]
    fn pins_come_from_the_class_or_plugin_version_and_must_agree() {
        let none = config(&[]);
        assert_eq!(pinned("file-source", &none), Ok(("file-source", None)));
        assert_eq!(
            pinned("file-source@1.2.3", &none),
            Ok(("file-source", Some("1.2.3")))
        );
        let key = config(&[(PLUGIN_VERSION, "1.2.3")]);
        assert_eq!(
            pinned("org.Example", &key),
            Ok(("org.Example", Some("1.2.3")))
        );
        assert_eq!(
            pinned("org.Example@1.2.3", &key),
            Ok(("org.Example", Some("1.2.3")))
        );
        assert!(
            matches!(pinned("x@2.0.0", &key), Err(SelectError::BadPin(m)) if m.contains("1.2.3") && m.contains("2.0.0"))
        );
        assert!(
            matches!(pinned("x@", &none), Err(SelectError::BadPin(m)) if m.contains("without a version"))
        );
    }
}
