//! The plugin directory: every `*.wasm` file in it is compiled, checked against the WIT
//! worlds and described; this module answers which plugin serves a `connector-class`.
//!
//! A file that fails (garbage, a core module, the wrong world, a failing `describe`) is
//! listed as broken with the reason and never replaces a plugin that works.

pub mod check;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::sandbox::types::{ConnectorKind, Descriptor};
use crate::sandbox::{ConnectorComponent, Sandbox};

/// Largest plugin file accepted.
const MAX_PLUGIN_BYTES: u64 = 64 << 20;

/// A loaded connector plugin.
pub struct Plugin {
    pub descriptor: Descriptor,
    pub component: ConnectorComponent,
    pub file: PathBuf,
}

impl Plugin {
    /// True when `class` names this plugin (its name or one of its aliases).
    pub fn answers_to(&self, class: &str) -> bool {
        self.descriptor.name == class || self.descriptor.aliases.iter().any(|alias| alias == class)
    }

    pub fn is_source(&self) -> bool {
        self.component.is_source()
    }
}

/// A plugin file that could not be loaded, and why.
#[derive(Debug, Clone)]
pub struct BrokenPlugin {
    pub file: PathBuf,
    pub reason: String,
}

#[derive(Default)]
struct Catalog {
    plugins: Vec<Arc<Plugin>>,
    broken: Vec<BrokenPlugin>,
}

/// The plugins of one directory.
pub struct PluginRegistry {
    dir: PathBuf,
    catalog: RwLock<Catalog>,
}

impl PluginRegistry {
    pub fn new(dir: PathBuf) -> Self {
        PluginRegistry { dir, catalog: RwLock::new(Catalog::default()) }
    }

    /// Rescans the directory and returns one log line per file.
    pub async fn scan(&self, sandbox: &Arc<Sandbox>) -> Vec<String> {
        let mut fresh = Catalog::default();
        let mut lines = Vec::new();
        for file in wasm_files(&self.dir, &mut lines) {
            match load(sandbox, &file).await {
                Ok(plugin) => {
                    let d = &plugin.descriptor;
                    lines.push(format!("loaded plugin {} {} ({}) from {}", d.name, d.version, kind_name(d.kind), file.display()));
                    fresh.plugins.push(Arc::new(plugin));
                }
                Err(reason) => {
                    // One log line per plugin: wasmtime's messages may span several.
                    let reason = reason.split_whitespace().collect::<Vec<_>>().join(" ");
                    lines.push(format!("broken plugin {}: {reason}", file.display()));
                    fresh.broken.push(BrokenPlugin { file, reason });
                }
            }
        }
        let mut catalog = self.catalog.write().unwrap_or_else(|e| e.into_inner());
        // A file that broke keeps serving the version that worked.
        for kept in catalog.plugins.iter().filter(|old| fresh.broken.iter().any(|b| b.file == old.file)) {
            lines.push(format!("keeping the working version of {} from {}", kept.descriptor.name, kept.file.display()));
            fresh.plugins.push(kept.clone());
        }
        *catalog = fresh;
        for line in &lines {
            tracing::info!("{line}");
        }
        lines
    }

    /// The plugin that answers to `class`.
    pub fn find(&self, class: &str) -> Option<Arc<Plugin>> {
        let catalog = self.catalog.read().unwrap_or_else(|e| e.into_inner());
        catalog.plugins.iter().find(|p| p.answers_to(class)).cloned()
    }

    /// Names of the loaded plugins, sorted.
    pub fn names(&self) -> Vec<String> {
        let catalog = self.catalog.read().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<String> = catalog.plugins.iter().map(|p| p.descriptor.name.clone()).collect();
        names.sort();
        names
    }

    /// Files that failed to load.
    pub fn broken(&self) -> Vec<BrokenPlugin> {
        self.catalog.read().unwrap_or_else(|e| e.into_inner()).broken.clone()
    }
}

/// The `*.wasm` files of `dir`, sorted, skipping dotfiles.
fn wasm_files(dir: &Path, lines: &mut Vec<String>) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            lines.push(format!("cannot read plugin dir {}: {e}", dir.display()));
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wasm"))
        .filter(|path| !path.file_name().is_some_and(|name| name.to_string_lossy().starts_with('.')))
        .collect();
    files.sort();
    files
}

async fn load(sandbox: &Arc<Sandbox>, file: &Path) -> Result<Plugin, String> {
    let size = std::fs::metadata(file).map_err(|e| format!("cannot read: {e}"))?.len();
    if size > MAX_PLUGIN_BYTES {
        return Err(format!("{size} bytes is over the {MAX_PLUGIN_BYTES}-byte limit for a plugin"));
    }
    let wasm = std::fs::read(file).map_err(|e| format!("cannot read: {e}"))?;
    let compiler = sandbox.clone();
    let component = tokio::task::spawn_blocking(move || compiler.compile(&wasm))
        .await
        .map_err(|e| format!("compiler crashed: {e}"))??;
    let descriptor = component.describe(sandbox).await.map_err(|e| e.to_string())?;
    let world_is_source = component.is_source();
    if world_is_source != (descriptor.kind == ConnectorKind::Source) {
        return Err(format!(
            "describes itself as a {} but targets the {} world",
            kind_name(descriptor.kind),
            if world_is_source { "source-connector" } else { "sink-connector" }
        ));
    }
    if descriptor.name.is_empty() {
        return Err("describes itself with an empty name".into());
    }
    Ok(Plugin { descriptor, component, file: file.to_path_buf() })
}

pub fn kind_name(kind: ConnectorKind) -> &'static str {
    match kind {
        ConnectorKind::Source => "source",
        ConnectorKind::Sink => "sink",
    }
}
