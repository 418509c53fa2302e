//! What an instance may reach outside its memory: directories and network addresses. Nothing
//! by default; a task gets the parents of the files its path-typed config keys name (only
//! under `--allow-path` roots when those are set) and the addresses its `network.allow` lists.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

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

/// Worker-wide capability settings.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    /// When not empty, granted directories must lie under one of these.
    pub allow_paths: Vec<PathBuf>,
}

impl Capabilities {
    /// Refuses a file outside the `--allow-path` roots.
    pub fn check_path(&self, file: &Path) -> Result<(), String> {
        if self.allow_paths.is_empty() || self.allow_paths.iter().any(|root| file.starts_with(root))
        {
            return Ok(());
        }
        let roots: Vec<String> = self
            .allow_paths
            .iter()
            .map(|r| r.display().to_string())
            .collect();
        Err(format!(
            "{} is outside the allowed roots ({}); the worker's --allow-path sets them",
            file.display(),
            roots.join(", ")
        ))
    }
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
    /// Applies the grants to a WASI context that starts with nothing.
    pub(super) fn apply(&self, wasi: &mut WasiCtxBuilder, task: &str) {
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
                tracing::warn!(task, dir = %grant.dir.display(), "directory not granted: {e}");
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
        assert!(open.check_path(Path::new("/etc/passwd")).is_ok());
        let rooted = Capabilities {
            allow_paths: vec![PathBuf::from("/data")],
        };
        assert!(rooted.check_path(Path::new("/data/in.txt")).is_ok());
        assert!(rooted
            .check_path(Path::new("/etc/passwd"))
            .unwrap_err()
            .contains("outside the allowed roots"));
    }
}
