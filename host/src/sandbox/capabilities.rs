//! What an instance may reach outside its memory: directories and network addresses. Nothing
//! by default; a task gets the parents of the files its path-typed config keys name (only
//! under `--allow-path` roots when those are set, never the host's data or plugin dir) and
//! the addresses its `network.allow` lists.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use super::redact::Redactor;

/// The config key listing the addresses a connector may connect to.
pub const NETWORK_ALLOW_KEY: &str = "network.allow";

/// A directory an instance may open, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    pub dir: PathBuf,
    pub writable: bool,
}

/// Everything one instance is granted.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    pub dirs: Vec<DirGrant>,
    /// Addresses it may connect to; a port of None allows every port of that address.
    pub network: Vec<(IpAddr, Option<u16>)>,
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
            (HostDirKind::Data, canonical(data_dir)),
            (HostDirKind::Plugin, canonical(plugin_dir)),
        ];
        self
    }

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

/// `path` with symlinks resolved when it exists, else made absolute.
fn canonical(path: &Path) -> PathBuf {
    path.canonicalize()
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

/// Resolves a `network.allow` value (`host:port`, `ip:port` or `ip`, comma-separated).
pub async fn resolve_network_allow(value: &str) -> Result<Vec<(IpAddr, Option<u16>)>, String> {
    let mut allowed = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if let Ok(ip) = entry
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<IpAddr>()
        {
            allowed.push((ip, None));
            continue;
        }
        if let Ok(address) = entry.parse::<SocketAddr>() {
            allowed.push((address.ip(), Some(address.port())));
            continue;
        }
        let resolved = tokio::net::lookup_host(entry)
            .await
            .map_err(|e| format!("{NETWORK_ALLOW_KEY}: cannot resolve {entry:?} (write host:port, ip:port or ip): {e}"))?;
        allowed.extend(resolved.map(|address| (address.ip(), Some(address.port()))));
    }
    Ok(allowed)
}

impl Grants {
    /// Applies the grants to a WASI context that starts with nothing; what it logs shows
    /// resolved secrets as `redactor` says.
    pub(super) fn apply(&self, wasi: &mut WasiCtxBuilder, task: &str, redactor: &Redactor) {
        for grant in &self.dirs {
            let perms = if grant.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            // A missing directory is not granted; the connector reports the file as missing.
            if let Err(e) =
                wasi.preopened_dir(&grant.dir, grant.dir.to_string_lossy().as_ref(), perms)
            {
                let dir = grant.dir.to_string_lossy();
                let dir = redactor.redact(&dir);
                tracing::warn!(task, %dir, "directory not granted: {e}");
            }
        }
        if self.network.is_empty() {
            return;
        }
        let allowed = Arc::new(self.network.clone());
        wasi.allow_tcp(true).allow_udp(true).socket_addr_check(
            move |address: SocketAddr, usage: SocketAddrUse| {
                // A connect first binds the socket to an ephemeral local address (`0.0.0.0:0`);
                // that bind grants nothing by itself, so it passes.
                let implicit_bind =
                    matches!(usage, SocketAddrUse::TcpBind | SocketAddrUse::UdpBind)
                        && address.ip().is_unspecified()
                        && address.port() == 0;
                let allowed = allowed.clone();
                Box::pin(async move {
                    implicit_bind
                        || allowed.iter().any(|(ip, port)| {
                            *ip == address.ip() && port.is_none_or(|p| p == address.port())
                        })
                })
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn network_entries_resolve_to_addresses_and_ports() {
        let allowed = resolve_network_allow("127.0.0.1:9000, 10.0.0.1, localhost:80")
            .await
            .unwrap();
        assert!(allowed.contains(&("127.0.0.1".parse().unwrap(), Some(9000))));
        assert!(allowed.contains(&("10.0.0.1".parse().unwrap(), None)));
        assert!(allowed
            .iter()
            .any(|(ip, port)| ip.is_loopback() && *port == Some(80)));
        assert!(resolve_network_allow("no such host !").await.is_err());
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
