//! The compiled-code cache: the native code wasmtime compiled for each plugin component, in
//! `<data-dir>/plugin-cache/`, so a host restart loads plugins instead of compiling them.
//!
//! An entry is named `<sha256 of the component>-<engine compatibility hash>.cwasm`: a new
//! wasmtime version, target or compiler setting changes the name, so a stale entry is never
//! looked up. Each entry is a magic tag, an HMAC-SHA256 of its name and payload, and the
//! payload (the compiled code). The MAC's key is a secret the host generates once in
//! `<data-dir>/plugin-cache.key` (mode 0600, outside the cache directory), so a writer of the
//! cache directory can neither forge an entry nor pass one component's entry off as another's:
//! an entry whose tag or MAC does not match, or that wasmtime refuses, is recompiled and
//! overwritten, never loaded. Entries are written to a temporary name, synced, then renamed
//! into place. The directory is private to the host (mode 0700): wasmtime runs its contents as
//! native code.

use std::hash::Hasher;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::sandbox::{CompileError, ConnectorComponent, Sandbox};

/// First bytes of every entry (format version 2: MAC'd).
const MAGIC: &[u8; 8] = b"WCCODE02";
/// Magic plus the MAC.
const HEADER_LEN: usize = MAGIC.len() + 32;
/// File name suffix of entries.
const SUFFIX: &str = ".cwasm";
/// File name of the MAC key, in the data dir.
const KEY_FILE: &str = "plugin-cache.key";
/// Bytes of the MAC key.
const KEY_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

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
    /// The directory and the MAC key; None when either cannot be used: everything is
    /// compiled, nothing stored.
    dir: Option<(PathBuf, [u8; KEY_LEN])>,
    /// Hex of this engine's compatibility hash.
    engine: String,
}

impl CodeCache {
    /// Opens `<data_dir>/plugin-cache`, creating it private to this user, and its MAC key. A
    /// directory or key that cannot be used is logged and the cache is off (plugins still
    /// load, compiled).
    pub fn open(data_dir: &Path, sandbox: &Sandbox) -> CodeCache {
        let dir = data_dir.join("plugin-cache");
        let engine = engine_hash(sandbox);
        let opened = create_private_dir(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))
            .and_then(|()| mac_key(&data_dir.join(KEY_FILE)));
        match opened {
            Ok(key) => CodeCache {
                dir: Some((dir, key)),
                engine,
            },
            Err(reason) => {
                tracing::warn!(
                    "compiled-code cache off: {reason}; plugins are compiled at every start"
                );
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

    /// The component whose SHA-256 is `hash`, from a sound entry; None when there is none
    /// (an unusable entry is logged). Blocking: call it off the async runtime.
    pub fn lookup(&self, sandbox: &Sandbox, hash: &str) -> Option<ConnectorComponent> {
        let (dir, key) = self.dir.as_ref()?;
        let entry = dir.join(self.entry_name(hash));
        match load(sandbox, &entry, key) {
            Ok(found) => found,
            Err(reason) => {
                tracing::warn!(
                    "compiled-code cache entry {} is unusable ({reason}); recompiling",
                    entry.display()
                );
                None
            }
        }
    }

    /// Keeps `artifact`, the compiled code of the component whose SHA-256 is `hash`.
    pub fn store(&self, hash: &str, artifact: &[u8]) {
        let Some((dir, key)) = &self.dir else { return };
        let entry = dir.join(self.entry_name(hash));
        if let Err(e) = store(&entry, key, artifact) {
            tracing::warn!(
                "cannot write compiled-code cache entry {}: {e}",
                entry.display()
            );
        }
    }

    fn entry_name(&self, hash: &str) -> String {
        format!("{hash}-{}{SUFFIX}", self.engine)
    }

    /// Deletes every entry (and leftover temporary file) whose content hash is not in `keep`
    /// or that another engine configuration wrote.
    pub fn retain<'a>(&self, keep: impl IntoIterator<Item = &'a str>) {
        let Some((dir, _)) = &self.dir else { return };
        let keep: std::collections::HashSet<String> =
            keep.into_iter().map(|hash| self.entry_name(hash)).collect();
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
    #[error("MAC mismatch: corrupt, or not written by this host")]
    Mac,
    #[error(transparent)]
    Load(#[from] CompileError),
    #[error("entry path {0} has no directory or no file name")]
    Path(PathBuf),
    #[error("{0}")]
    Write(#[source] std::io::Error),
}

/// The entry's component; None when there is no entry; an error when it is unusable.
fn load(
    sandbox: &Sandbox,
    entry: &Path,
    key: &[u8; KEY_LEN],
) -> Result<Option<ConnectorComponent>, EntryError> {
    let bytes = match std::fs::read(entry) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(EntryError::Read(e)),
    };
    let (header, payload) = bytes.split_at(HEADER_LEN.min(bytes.len()));
    if header.len() < HEADER_LEN || header[..MAGIC.len()] != MAGIC[..] {
        return Err(EntryError::Format);
    }
    mac(key, entry, payload)
        .verify_slice(&header[MAGIC.len()..])
        .map_err(|_| EntryError::Mac)?;
    // SAFETY: the MAC proves that this host wrote the payload under this name, and it writes
    // only what its own compiler produced for an engine with this compatibility hash (the
    // entry's name says so).
    Ok(Some(unsafe { sandbox.load_compiled(payload) }?))
}

/// The MAC of an entry: over its file name (so an entry renamed cannot pass for another
/// component's) and its payload.
fn mac(key: &[u8; KEY_LEN], entry: &Path, payload: &[u8]) -> HmacSha256 {
    let name = entry
        .file_name()
        .map(|name| name.as_encoded_bytes())
        .unwrap_or_default();
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(&(name.len() as u64).to_le_bytes());
    mac.update(name);
    mac.update(payload);
    mac
}

/// Writes an entry atomically: a temporary file in the same directory, synced, renamed.
fn store(entry: &Path, key: &[u8; KEY_LEN], artifact: &[u8]) -> Result<(), EntryError> {
    let (Some(dir), Some(name)) = (entry.parent(), entry.file_name()) else {
        return Err(EntryError::Path(entry.to_path_buf()));
    };
    let name = name.to_string_lossy();
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = private_file(&temp)?;
        file.write_all(MAGIC)?;
        file.write_all(&mac(key, entry, artifact).finalize().into_bytes())?;
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

/// The MAC key in `file`, generated (random, mode 0600) when there is none yet. A key file
/// that others may read is made private, with a warning.
fn mac_key(file: &Path) -> Result<[u8; KEY_LEN], String> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let cannot = |what: &str, e: &dyn std::fmt::Display| {
        format!("cannot {what} the MAC key {}: {e}", file.display())
    };
    let mut key = [0u8; KEY_LEN];
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(file)
    {
        Ok(mut created) => {
            getrandom::getrandom(&mut key).map_err(|e| cannot("generate", &e))?;
            created
                .write_all(&key)
                .and_then(|()| created.sync_all())
                .map_err(|e| cannot("write", &e))?;
            return Ok(key);
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(cannot("create", &e)),
    }
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(file)
        .map_err(|e| cannot("open", &e))?;
    let meta = opened.metadata().map_err(|e| cannot("read", &e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "the MAC key {} was open to other users; made it private (mode 0600)",
            file.display()
        );
        opened
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| cannot("make private", &e))?;
    }
    let mut read = Vec::with_capacity(KEY_LEN);
    opened
        .take(KEY_LEN as u64 + 1)
        .read_to_end(&mut read)
        .map_err(|e| cannot("read", &e))?;
    key.copy_from_slice(read.get(..KEY_LEN).filter(|_| read.len() == KEY_LEN).ok_or_else(|| {
        format!(
            "{} is not a {KEY_LEN}-byte key; delete it and restart (every cache entry is then recompiled)",
            file.display()
        )
    })?);
    Ok(key)
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
