//! The compiled-code cache: the native code wasmtime compiled for each plugin component, in
//! `<data-dir>/plugin-cache/`, so a host restart loads plugins instead of compiling them.
//!
//! An entry is named `<sha256 of the component>-<engine compatibility hash>.cwasm`: a new
//! wasmtime version, target or compiler setting changes the name, so a stale entry is never
//! looked up. Each entry is a magic tag, the SHA-256 of the payload and the payload (what
//! `Component::serialize` wrote); an entry whose tag or checksum does not match, or that
//! wasmtime refuses, is recompiled and overwritten, never trusted. Entries are written to a
//! temporary name, synced, then renamed into place. The directory is private to the host
//! (mode 0700): wasmtime runs its contents as native code.

use std::hash::Hasher;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::sandbox::{CompileError, ConnectorComponent, Sandbox};

/// First bytes of every entry (format version 1).
const MAGIC: &[u8; 8] = b"WCCODE01";
/// Magic plus the payload checksum.
const HEADER_LEN: usize = MAGIC.len() + 32;
/// File name suffix of entries.
const SUFFIX: &str = ".cwasm";

/// Where a component's code came from.
#[derive(Debug, Clone, Copy)]
pub enum Origin {
    Cache,
    /// Compiled now, taking this long.
    Compiled(Duration),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Cache => write!(f, "code from the compiled-code cache"),
            Origin::Compiled(took) => write!(f, "compiled in {} ms", took.as_millis()),
        }
    }
}

/// The cache directory of one engine configuration.
pub struct CodeCache {
    /// None when the directory cannot be used: everything is compiled, nothing stored.
    dir: Option<PathBuf>,
    /// Hex of this engine's compatibility hash.
    engine: String,
}

impl CodeCache {
    /// Opens `<data_dir>/plugin-cache`, creating it private to this user. A directory that
    /// cannot be created is logged and the cache is off (plugins still load, compiled).
    pub fn open(data_dir: &Path, sandbox: &Sandbox) -> CodeCache {
        let dir = data_dir.join("plugin-cache");
        let engine = engine_hash(sandbox);
        match create_private_dir(&dir) {
            Ok(()) => CodeCache {
                dir: Some(dir),
                engine,
            },
            Err(e) => {
                tracing::warn!("compiled-code cache off: cannot create {}: {e}; plugins are compiled at every start", dir.display());
                CodeCache { dir: None, engine }
            }
        }
    }

    /// A cache that stores nothing: every component is compiled (for `plugin check`).
    pub fn off(sandbox: &Sandbox) -> CodeCache {
        CodeCache {
            dir: None,
            engine: engine_hash(sandbox),
        }
    }

    /// The component of `wasm`, whose SHA-256 is `hash`: loaded from a sound entry, or
    /// compiled and stored. Blocking and CPU-heavy on a miss: call it off the async runtime.
    pub fn component(
        &self,
        sandbox: &Sandbox,
        wasm: &[u8],
        hash: &str,
    ) -> Result<(ConnectorComponent, Origin), CompileError> {
        let entry = self
            .dir
            .as_ref()
            .map(|dir| dir.join(format!("{hash}-{}{SUFFIX}", self.engine)));
        if let Some(entry) = &entry {
            match load(sandbox, entry) {
                Ok(Some(component)) => return Ok((component, Origin::Cache)),
                Ok(None) => {}
                Err(reason) => tracing::warn!(
                    "compiled-code cache entry {} is unusable ({reason}); recompiling",
                    entry.display()
                ),
            }
        }
        let started = Instant::now();
        let component = sandbox.compile(wasm)?;
        let took = started.elapsed();
        if let Some(entry) = &entry {
            if let Err(e) = serialize(&component).and_then(|artifact| store(entry, &artifact)) {
                tracing::warn!(
                    "cannot write compiled-code cache entry {}: {e}",
                    entry.display()
                );
            }
        }
        Ok((component, Origin::Compiled(took)))
    }

    /// Deletes every entry (and leftover temporary file) whose content hash is not in `keep`
    /// or that another engine configuration wrote.
    pub fn retain<'a>(&self, keep: impl IntoIterator<Item = &'a str>) {
        let Some(dir) = &self.dir else { return };
        let keep: std::collections::HashSet<String> = keep
            .into_iter()
            .map(|hash| format!("{hash}-{}{SUFFIX}", self.engine))
            .collect();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                if let Err(e) = std::fs::remove_file(entry.path()) {
                    tracing::warn!(
                        "cannot delete unused compiled-code cache entry {}: {e}",
                        entry.path().display()
                    );
                }
            }
        }
    }
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The engine's compatibility hash through SHA-256, which (unlike `DefaultHasher`) gives the
/// same bytes in every build.
fn engine_hash(sandbox: &Sandbox) -> String {
    struct Sha256Hasher(Sha256);
    impl Hasher for Sha256Hasher {
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
        fn finish(&self) -> u64 {
            let digest = self.0.clone().finalize();
            u64::from_le_bytes([
                digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6],
                digest[7],
            ])
        }
    }
    let mut hasher = Sha256Hasher(Sha256::new());
    sandbox.hash_compatibility(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// Why a cache entry cannot be used or written; the cache then compiles (or stays without
/// the entry), so these are logged, never fatal.
#[derive(Debug, thiserror::Error)]
enum EntryError {
    #[error("cannot read it: {0}")]
    Read(#[source] std::io::Error),
    #[error("not a cache entry of this format")]
    Format,
    #[error("checksum mismatch")]
    Checksum,
    #[error(transparent)]
    Load(#[from] CompileError),
    #[error("cannot serialize the compiled code: {0:#}")]
    Serialize(#[source] wasmtime::Error),
    #[error("entry path {0} has no directory or no file name")]
    Path(PathBuf),
    #[error("{0}")]
    Write(#[source] std::io::Error),
}

/// The entry's component; None when there is no entry; an error when it is unusable.
fn load(sandbox: &Sandbox, entry: &Path) -> Result<Option<ConnectorComponent>, EntryError> {
    let bytes = match std::fs::read(entry) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(EntryError::Read(e)),
    };
    let (header, payload) = bytes.split_at(HEADER_LEN.min(bytes.len()));
    if header.len() < HEADER_LEN || header[..MAGIC.len()] != MAGIC[..] {
        return Err(EntryError::Format);
    }
    if header[MAGIC.len()..] != Sha256::digest(payload)[..] {
        return Err(EntryError::Checksum);
    }
    // SAFETY: the payload is what `serialize` wrote for an engine with this compatibility
    // hash (the entry's name says so), in the host-private cache directory, and its checksum
    // matches: it is read back intact.
    Ok(Some(unsafe { sandbox.load_compiled(payload) }?))
}

/// The compiled code of a component, as `Component::serialize` writes it.
fn serialize(component: &ConnectorComponent) -> Result<Vec<u8>, EntryError> {
    let pre = match component {
        ConnectorComponent::Source(pre) => pre.instance_pre(),
        ConnectorComponent::Sink(pre) => pre.instance_pre(),
    };
    pre.component().serialize().map_err(EntryError::Serialize)
}

/// Writes an entry atomically: a temporary file in the same directory, synced, renamed.
fn store(entry: &Path, artifact: &[u8]) -> Result<(), EntryError> {
    let (Some(dir), Some(name)) = (entry.parent(), entry.file_name()) else {
        return Err(EntryError::Path(entry.to_path_buf()));
    };
    let name = name.to_string_lossy();
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = private_file(&temp)?;
        file.write_all(MAGIC)?;
        file.write_all(&Sha256::digest(artifact))?;
        file.write_all(artifact)?;
        file.sync_all()?;
        std::fs::rename(&temp, entry)
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        EntryError::Write(e)
    })
}

/// Creates (or truncates) `path` readable by the owner only, like everything in the data dir.
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}
