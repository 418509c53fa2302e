//! What an instance may reach outside its memory, one module per capability (`files`,
//! `network`). Nothing by default. Each capability has a `check`, run when a connector is
//! created (per-key refusals of the values the user wrote), a `grant`, run when a task starts
//! (what the resolved task config grants), and an `apply` that puts the grant into the WASI
//! context of an instance. This module holds what they share: the worker-wide settings
//! ([`Capabilities`]) and one instance's grants ([`Grants`]).

pub mod files;
pub mod network;

use std::path::{Path, PathBuf};

use wasmtime_wasi::WasiCtxBuilder;

use super::redact::Redactor;
use super::types::{Config, ConfigDef};
use crate::storage::Properties;
pub use files::DirGrant;
pub use network::{ConnectRefusal, NetworkCounters, NetworkGrant};

/// Everything one instance is granted.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    pub dirs: Vec<DirGrant>,
    /// Addresses it may connect to and names it may resolve.
    pub network: NetworkGrant,
}

/// A directory the host itself owns; no grant may reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostDirKind {
    /// `--data-dir`: state, topics and the compiled-code cache (loaded as native code).
    Data,
    /// `--plugin-dir`: the components the host loads.
    Plugin,
}

impl std::fmt::Display for HostDirKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HostDirKind::Data => "data dir",
            HostDirKind::Plugin => "plugin dir",
        })
    }
}

/// Worker-wide capability settings.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    /// When not empty, granted directories must lie under one of these.
    pub allow_paths: Vec<PathBuf>,
    /// The host's own directories (canonical when they exist): never granted, never inside
    /// a grant, never holding one.
    pub host_dirs: Vec<(HostDirKind, PathBuf)>,
}

impl Capabilities {
    /// These settings, knowing the host's data and plugin dirs.
    pub fn with_host_dirs(mut self, data_dir: &Path, plugin_dir: &Path) -> Self {
        self.host_dirs = vec![
            (HostDirKind::Data, files::canonical(data_dir)),
            (HostDirKind::Plugin, files::canonical(plugin_dir)),
        ];
        self
    }
}

/// A value of a connector config that a capability refuses at create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub key: String,
    /// What is wrong and how to fix it; names the key.
    pub message: String,
}

/// Every capability's refusals of the user's `config` (per the plugin's `defs`), checked
/// when the connector is created.
pub fn check(capabilities: &Capabilities, defs: &[ConfigDef], config: &Properties) -> Vec<Refusal> {
    let mut refusals = files::check(capabilities, defs, config);
    refusals.extend(network::check(config));
    refusals
}

/// What a task may reach, from its resolved `config`: refused (naming the key) when a value
/// breaks the worker's capability settings or cannot be resolved.
pub async fn grant(
    capabilities: &Capabilities,
    defs: &[ConfigDef],
    config: &Config,
) -> Result<Grants, String> {
    Ok(Grants {
        dirs: files::grant(capabilities, defs, config)?,
        network: network::grant(config).await?,
    })
}

impl Grants {
    /// Applies the grants to a WASI context that starts with nothing; what it logs shows
    /// resolved secrets as `redactor` says.
    pub(in crate::sandbox) fn apply(
        &self,
        wasi: &mut WasiCtxBuilder,
        task: &str,
        redactor: &Redactor,
    ) {
        files::apply(&self.dirs, wasi, task, redactor);
        network::apply(&self.network, wasi);
    }
}
