//! Owner-only modes under the data dir: it holds literal config values (passwords written
//! as such rather than as `${env:…}` / `${file:…}` references) in `state.redb` and every
//! record of every topic. Directories are created 0700 and files 0600, and the modes of an
//! existing data dir are tightened at start.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of every directory the host creates under the data dir.
const DIR_MODE: u32 = 0o700;
/// Mode of every file the host creates under the data dir.
const FILE_MODE: u32 = 0o600;
/// The permission bits of the group and of other users: none are left under the data dir.
const SHARED_BITS: u32 = 0o077;

/// Creates `dir` with mode 0700 (its missing parents with the default mode); an existing
/// directory is left as it is.
pub(super) fn create_dir(dir: &Path) -> io::Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match DirBuilder::new().mode(DIR_MODE).create(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        result => result,
    }
}

/// Options that create a missing file with mode 0600.
pub(super) fn file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(FILE_MODE);
    options
}

/// Creates `path` with mode 0600 when missing, so that a library opening it afterwards
/// (redb) finds a private file; an existing file is left as it is.
pub(super) fn create_file(path: &Path) -> io::Result<File> {
    file_options().write(true).create(true).truncate(false).open(path)
}

/// Removes the group's and other users' permissions from `data_dir` and everything under it
/// (symbolic links are not followed), logging each change. A mode that cannot be changed is
/// logged with the command that fixes it; the host still starts.
pub(super) fn tighten(data_dir: &Path) {
    let mut pending = vec![data_dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let Ok(metadata) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if metadata.file_type().is_symlink() {
            continue;
        }
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & SHARED_BITS != 0 {
            let tightened = mode & !SHARED_BITS;
            match std::fs::set_permissions(&path, Permissions::from_mode(tightened)) {
                Ok(()) => tracing::warn!(
                    "data dir: {} was readable by other users (mode {mode:04o}); changed to {tightened:04o}",
                    path.display()
                ),
                Err(e) => tracing::warn!(
                    "data dir: {} is readable by other users (mode {mode:04o}) and its mode cannot be changed ({e}): run `chmod -R go-rwx {}`",
                    path.display(),
                    data_dir.display()
                ),
            }
        }
        if metadata.is_dir() {
            match std::fs::read_dir(&path) {
                Ok(entries) => pending.extend(entries.flatten().map(|entry| entry.path())),
                Err(e) => tracing::warn!(
                    "data dir: cannot list {} to check its modes: {e}",
                    path.display()
                ),
            }
        }
    }
}
