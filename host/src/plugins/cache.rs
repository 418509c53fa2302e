//! The compiled-code cache: the native code wasmtime compiled for each plugin component, in
//! `<data-dir>/plugin-cache/`, so a host restart loads plugins instead of compiling them.
//!
//! An entry is named `<sha256 of the component>-<engine compatibility hash>.cwasm`: a new
//! wasmtime version, target or compiler setting changes the name, so a stale entry is never
//! looked up. The `.cwasm` file is the compiled code as wasmtime wrote it, mapped (not copied)
//! into memory when loaded; beside it, `<same name>.mac` holds a magic tag and a keyed BLAKE3
//! MAC of the entry's name and code. The MAC's key is a secret the host generates once in
//! `<data-dir>/plugin-cache.key` (mode 0600, outside the cache directory), so a writer of the
//! cache directory can neither forge an entry nor pass one component's entry off as another's:
//! an entry whose tag or MAC does not match, or that wasmtime refuses, is recompiled and
//! overwritten, never loaded. The MAC is checked on the open file that wasmtime then maps, so
//! the file checked is the file run. Files are written to a temporary name, synced, then
//! renamed into place. The directory is private to the host (mode 0700): wasmtime runs its
//! contents as native code.
//!
//! A start does not hash each plugin file either: `<sha256 of the file's path>.file` records
//! the SHA-256 of the file's content for one look of the file (size, times, inode), MAC'd
//! like an entry; a file that looks the same again has that content (changing a file changes
//! its change time, which only the kernel sets), any other look is read and hashed anew.

use std::hash::Hasher;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::reload::Fingerprint;
use crate::sandbox::{CompileError, ConnectorComponent, Sandbox};

/// First bytes of every `.mac` file (format version 3: code and MAC in two files).
const MAGIC: &[u8; 8] = b"WCCODE03";
/// First bytes of every `.file` record.
const FILE_MAGIC: &[u8; 8] = b"WCFILE01";
/// Magic plus the MAC: a whole `.mac` file.
const TAG_LEN: usize = MAGIC.len() + blake3::OUT_LEN;
/// File name extension of entries, of their MACs and of plugin file records.
const CODE: &str = "cwasm";
const TAG: &str = "mac";
const RECORD: &str = "file";
/// File name of the MAC key, in the data dir.
const KEY_FILE: &str = "plugin-cache.key";
/// Bytes of the MAC key.
const KEY_LEN: usize = blake3::KEY_LEN;

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
        let tag = entry_mac(key, &entry).update(artifact).finalize();
        let written = write_atomically(&entry, &[artifact])
            .and_then(|()| write_atomically(&entry.with_extension(TAG), &[MAGIC, tag.as_bytes()]));
        if let Err(e) = written {
            tracing::warn!(
                "cannot write compiled-code cache entry {}: {e}",
                entry.display()
            );
        }
    }

    /// The SHA-256 of plugin `file`'s content, as recorded when the file looked like `seen`;
    /// None when there is no sound record of that look (an unusable record is logged).
    /// Blocking (reads a small file).
    pub fn recorded_hash(&self, file: &Path, seen: &Fingerprint) -> Option<String> {
        let (dir, key) = self.dir.as_ref()?;
        let record = dir.join(record_name(file));
        let bytes = std::fs::read(&record).ok()?;
        match parse_record(key, file, &bytes) {
            Ok((look, hash)) => (look == seen.to_bytes()).then(|| hash.to_string()),
            Err(reason) => {
                tracing::warn!(
                    "content record {} of plugin file {} is unusable ({reason}); hashing the file",
                    record.display(),
                    file.display()
                );
                None
            }
        }
    }

    /// Records that plugin `file`, looking like `seen`, has the content whose SHA-256 is
    /// `hash`. A record that cannot be written is logged; the file is then hashed again at
    /// the next start.
    pub fn record_hash(&self, file: &Path, seen: &Fingerprint, hash: &str) {
        let Some((dir, key)) = &self.dir else { return };
        let (record, look) = (dir.join(record_name(file)), seen.to_bytes());
        let tag = record_mac(key, file, &look, hash);
        let parts: [&[u8]; 4] = [FILE_MAGIC, tag.as_bytes(), &look, hash.as_bytes()];
        if let Err(e) = write_atomically(&record, &parts) {
            tracing::warn!(
                "cannot write the content record {} of plugin file {}: {e}",
                record.display(),
                file.display()
            );
        }
    }

    fn entry_name(&self, hash: &str) -> String {
        format!("{hash}-{}.{CODE}", self.engine)
    }

    /// Deletes every entry whose content hash is not in `keep` or that another engine
    /// configuration wrote, every record of a plugin file not in `files`, and leftover
    /// temporary files.
    pub fn retain<'a>(
        &self,
        keep: impl IntoIterator<Item = &'a str>,
        files: impl IntoIterator<Item = &'a Path>,
    ) {
        let Some((dir, _)) = &self.dir else { return };
        let keep: std::collections::HashSet<String> = keep
            .into_iter()
            .flat_map(|hash| {
                let entry = self.entry_name(hash);
                let tag = Path::new(&entry).with_extension(TAG);
                [entry, tag.to_string_lossy().into_owned()]
            })
            .chain(files.into_iter().map(record_name))
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

/// The name of plugin `file`'s content record.
fn record_name(file: &Path) -> String {
    format!(
        "{}.{RECORD}",
        sha256_hex(file.as_os_str().as_encoded_bytes())
    )
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

/// Why a cache entry (or a plugin file's content record) cannot be used; the cache then
/// compiles (or the file is hashed), so these are logged, never fatal.
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
}

/// The entry's component; None when there is no entry; an error when it is unusable.
fn load(
    sandbox: &Sandbox,
    entry: &Path,
    key: &[u8; KEY_LEN],
) -> Result<Option<ConnectorComponent>, EntryError> {
    use std::os::unix::fs::OpenOptionsExt;
    let absent = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let tag = match std::fs::read(entry.with_extension(TAG)) {
        Ok(tag) => tag,
        Err(e) if absent(&e) => return Ok(None),
        Err(e) => return Err(EntryError::Read(e)),
    };
    let code = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(entry)
    {
        Ok(code) => code,
        Err(e) if absent(&e) => return Ok(None),
        Err(e) => return Err(EntryError::Read(e)),
    };
    let expected = (tag.len() == TAG_LEN && tag.starts_with(MAGIC))
        .then(|| blake3::Hash::from_slice(&tag[MAGIC.len()..]).ok())
        .flatten()
        .ok_or(EntryError::Format)?;
    let mut mac = entry_mac(key, entry);
    mac.update_reader(&code).map_err(EntryError::Read)?;
    // `blake3::Hash` compares in constant time.
    if mac.finalize() != expected {
        return Err(EntryError::Mac);
    }
    // SAFETY: the MAC proves that this host wrote the open file's code under this name, and it
    // writes only what its own compiler produced for an engine with this compatibility hash
    // (the entry's name says so); the file's mode lets only this host's user change it.
    Ok(Some(unsafe { sandbox.load_compiled_file(&code) }?))
}

/// The look and content hash a sound record of plugin `file` holds.
fn parse_record<'a>(
    key: &[u8; KEY_LEN],
    file: &Path,
    bytes: &'a [u8],
) -> Result<(&'a [u8], &'a str), EntryError> {
    let parts = bytes
        .split_at_checked(FILE_MAGIC.len())
        .filter(|(magic, _)| magic == FILE_MAGIC)
        .and_then(|(_, rest)| rest.split_at_checked(blake3::OUT_LEN))
        .and_then(|(tag, rest)| Some((tag, rest.split_at_checked(Fingerprint::BYTES)?)));
    let Some((tag, (look, hash))) = parts else {
        return Err(EntryError::Format);
    };
    let hash = std::str::from_utf8(hash).map_err(|_| EntryError::Format)?;
    let tag = blake3::Hash::from_slice(tag).map_err(|_| EntryError::Format)?;
    if record_mac(key, file, look, hash) != tag {
        return Err(EntryError::Mac);
    }
    Ok((look, hash))
}

/// The MAC of an entry so far: over its file name (so an entry renamed cannot pass for
/// another component's); the caller adds the code.
fn entry_mac(key: &[u8; KEY_LEN], entry: &Path) -> blake3::Hasher {
    let name = entry
        .file_name()
        .map(|name| name.as_encoded_bytes())
        .unwrap_or_default();
    let mut mac = blake3::Hasher::new_keyed(key);
    mac.update(b"entry\0");
    mac.update(&(name.len() as u64).to_le_bytes());
    mac.update(name);
    mac
}

/// The MAC of a plugin file's content record: over the file's path, its look and the hash.
fn record_mac(key: &[u8; KEY_LEN], file: &Path, look: &[u8], hash: &str) -> blake3::Hash {
    let path = file.as_os_str().as_encoded_bytes();
    let mut mac = blake3::Hasher::new_keyed(key);
    mac.update(b"file\0");
    mac.update(&(path.len() as u64).to_le_bytes());
    mac.update(path);
    mac.update(look);
    mac.update(hash.as_bytes());
    mac.finalize()
}

/// Writes `parts` to `path` atomically: a temporary file in the same directory, synced,
/// renamed.
fn write_atomically(path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::other(format!(
            "{} has no directory or no file name",
            path.display()
        )));
    };
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| {
        let mut file = private_file(&temp)?;
        for part in parts {
            file.write_all(part)?;
        }
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
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
