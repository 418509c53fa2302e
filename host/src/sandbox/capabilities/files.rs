//! The files capability: a task gets the parent directory of each file its path-typed config
//! keys name (read-only unless the key writes), only under the `--allow-path` roots when
//! those are set, and never a directory that is, holds or lies inside the host's data or
//! plugin dir.

use std::path::{Path, PathBuf};

use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use super::{Capabilities, Refusal};
use crate::config::{entries, is_reference};
use crate::sandbox::redact::Redactor;
use crate::sandbox::types::{Config, ConfigDef, PathAccess};
use crate::storage::Properties;

/// A directory an instance may open, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    pub dir: PathBuf,
    pub writable: bool,
}

impl Capabilities {
    /// Refuses to let config key `key` name `file`: outside the `--allow-path` roots, or
    /// granting a directory (its parent) that is, holds or lies inside a host dir.
    pub fn check_path(&self, key: &str, file: &Path) -> Result<(), String> {
        if !self.allow_paths.is_empty()
            && !self.allow_paths.iter().any(|root| file.starts_with(root))
        {
            let roots: Vec<String> = self
                .allow_paths
                .iter()
                .map(|r| r.display().to_string())
                .collect();
            return Err(format!(
                "{key}: {} is outside the allowed roots ({}); the worker's --allow-path sets them",
                file.display(),
                roots.join(", ")
            ));
        }
        let Some(dir) = file.parent() else {
            return Ok(());
        };
        let dir = canonical(dir);
        let fix = "grant a directory that holds neither the data dir nor the plugin dir";
        for (kind, host_dir) in &self.host_dirs {
            let file = file.display();
            let host = host_dir.display();
            if dir.starts_with(host_dir) {
                return Err(format!(
                    "{key}: {file} is in the host's {kind} {host}; {fix}"
                ));
            }
            if host_dir.starts_with(&dir) {
                return Err(format!(
                    "{key}: the directory of {file} holds the host's {kind} {host}; {fix}"
                ));
            }
        }
        Ok(())
    }
}

/// Path-typed values written as paths (not `${…}` references, checked when a task starts)
/// must lie under the `--allow-path` roots and away from the host's own dirs; a list value
/// is checked entry by entry.
pub fn check(capabilities: &Capabilities, defs: &[ConfigDef], config: &Properties) -> Vec<Refusal> {
    defs.iter()
        .filter(|def| def.path.is_some())
        .filter_map(|def| Some((def, config.get(&def.name)?)))
        .filter(|(_, value)| !is_reference(value))
        .flat_map(|(def, value)| entries(value).map(move |entry| (def, entry)))
        .filter_map(|(def, entry)| {
            let path = std::path::absolute(entry).unwrap_or_else(|_| entry.into());
            let message = capabilities.check_path(&def.name, &path).err()?;
            Some(Refusal {
                key: def.name.clone(),
                message,
            })
        })
        .collect()
}

/// The parent directory of each file the path-typed keys name in the resolved `config`
/// (refused outside the `--allow-path` roots and near the host's own dirs), writable when
/// any key naming a file in it writes.
pub fn grant(
    capabilities: &Capabilities,
    defs: &[ConfigDef],
    config: &Config,
) -> Result<Vec<DirGrant>, String> {
    let mut dirs: Vec<DirGrant> = Vec::new();
    for def in defs {
        let Some(access) = def.path else { continue };
        let Some((_, files)) = config.iter().find(|(key, _)| *key == def.name) else {
            continue;
        };
        for file in entries(files).map(Path::new) {
            capabilities.check_path(&def.name, file)?;
            let Some(dir) = file.parent() else {
                continue;
            };
            let writable = access == PathAccess::WriteFile;
            match dirs.iter_mut().find(|g| g.dir == dir) {
                Some(grant) => grant.writable |= writable,
                None => dirs.push(DirGrant {
                    dir: dir.to_path_buf(),
                    writable,
                }),
            }
        }
    }
    Ok(dirs)
}

/// Preopens the granted directories; a missing one is not granted (the connector reports
/// the file as missing) and is logged as `redactor` shows it.
pub(super) fn apply(dirs: &[DirGrant], wasi: &mut WasiCtxBuilder, task: &str, redactor: &Redactor) {
    for grant in dirs {
        let perms = if grant.writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        if let Err(e) = wasi.preopened_dir(&grant.dir, grant.dir.to_string_lossy().as_ref(), perms)
        {
            let dir = grant.dir.to_string_lossy();
            let dir = redactor.redact(&dir);
            tracing::warn!(task, %dir, "directory not granted: {e}");
        }
    }
}

/// `path` with symlinks resolved when it exists, else made absolute.
pub(super) fn canonical(path: &Path) -> PathBuf {
    path.canonicalize()
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{def, props};

    #[test]
    fn create_refuses_each_path_entry_per_key_and_leaves_references_to_task_start() {
        let caps = Capabilities {
            allow_paths: vec![PathBuf::from("/data")],
            ..Capabilities::default()
        };
        let defs = [
            def("in", Some(PathAccess::ReadFile)),
            def("out", Some(PathAccess::WriteFile)),
            def("secret", Some(PathAccess::ReadFile)),
            def("name", None),
        ];
        let config = props(&[
            ("in", "/data/a.txt, /etc/passwd, /data/b.txt"),
            ("out", "/tmp/out.txt"),
            ("secret", "${env:SECRET_FILE}"),
            ("name", "/etc/shadow"),
        ]);
        let refused = check(&caps, &defs, &config);
        let keys: Vec<&str> = refused.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["in", "out"]);
        assert!(
            refused[0]
                .message
                .starts_with("in: /etc/passwd is outside the allowed roots (/data)"),
            "{}",
            refused[0].message
        );
        assert!(check(&caps, &defs, &props(&[("in", "/data/a.txt")])).is_empty());
    }

    #[test]
    fn a_task_gets_each_files_directory_once_writable_when_any_key_writes_there() {
        let caps = Capabilities::default();
        let defs = [
            def("in", Some(PathAccess::ReadFile)),
            def("out", Some(PathAccess::WriteFile)),
            def("name", None),
        ];
        let config: Config = [
            ("in", "/a/in.txt, /b/in.txt"),
            ("out", "/a/out.txt"),
            ("name", "/c/x.txt"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let dirs = grant(&caps, &defs, &config).unwrap();
        let dir_grant = |dir: &str, writable| DirGrant {
            dir: PathBuf::from(dir),
            writable,
        };
        assert_eq!(dirs, [dir_grant("/a", true), dir_grant("/b", false)]);
        let rooted = Capabilities {
            allow_paths: vec![PathBuf::from("/a")],
            ..Capabilities::default()
        };
        let refused = grant(&rooted, &defs, &config).unwrap_err();
        assert!(refused.starts_with("in: /b/in.txt is outside"), "{refused}");
    }

    #[test]
    fn paths_outside_the_roots_are_refused() {
        let open = Capabilities::default();
        assert!(open.check_path("f", Path::new("/etc/passwd")).is_ok());
        let rooted = Capabilities {
            allow_paths: vec![PathBuf::from("/data")],
            ..Capabilities::default()
        };
        assert!(rooted.check_path("f", Path::new("/data/in.txt")).is_ok());
        assert!(rooted
            .check_path("f", Path::new("/etc/passwd"))
            .unwrap_err()
            .contains("f: /etc/passwd is outside the allowed roots"));
    }

    #[test]
    fn grants_never_reach_the_host_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let (data, plugins) = (
            tmp.path().join("host/data"),
            tmp.path().join("host/plugins"),
        );
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(&plugins).unwrap();
        let files = tmp.path().join("files");
        std::fs::create_dir_all(&files).unwrap();
        let caps = Capabilities::default().with_host_dirs(&data, &plugins);
        let data = canonical(&data);
        let inside = caps.check_path("filename", &data.join("f")).unwrap_err();
        assert_eq!(
            inside,
            format!(
                "filename: {}/f is in the host's data dir {}; grant a directory that holds neither the data dir nor the plugin dir",
                data.display(),
                data.display()
            )
        );
        let cache = caps
            .check_path("filename", &data.join("plugin-cache/x.cwasm"))
            .unwrap_err();
        assert!(cache.contains("is in the host's data dir"), "{cache}");
        let holds = caps
            .check_path("out", &tmp.path().join("host/f.txt"))
            .unwrap_err();
        assert!(holds.starts_with("out: the directory of"), "{holds}");
        assert!(holds.contains("holds the host's data dir"), "{holds}");
        let plugin = caps
            .check_path("x", &plugins.join("evil.wasm"))
            .unwrap_err();
        assert!(plugin.contains("plugin dir"), "{plugin}");
        let root = caps.check_path("x", Path::new("/f.txt")).unwrap_err();
        assert!(root.contains("holds the host's"), "{root}");
        let link = files.join("link");
        std::os::unix::fs::symlink(&data, &link).unwrap();
        assert!(caps.check_path("x", &link.join("f")).is_err());
        assert!(caps.check_path("x", &files.join("in.txt")).is_ok());
    }
}
