//! The network capability: a task may connect over wasi:sockets to the addresses its
//! `network.allow` lists (`host:port`, `ip:port` or `ip`, comma-separated), and to nothing
//! else.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::WasiCtxBuilder;

use super::Refusal;
use crate::config::{entries, is_reference};
use crate::sandbox::types::Config;
use crate::storage::Properties;

/// The config key listing the addresses a connector may connect to.
pub const NETWORK_ALLOW_KEY: &str = "network.allow";

/// One entry of a `network.allow` value.
enum Entry<'a> {
    /// Every port of this address.
    Ip(IpAddr),
    Address(SocketAddr),
    /// A name to resolve (`host:port`, as written).
    Host(&'a str),
}

impl<'a> Entry<'a> {
    fn parse(entry: &'a str) -> Entry<'a> {
        if let Ok(ip) = entry
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<IpAddr>()
        {
            return Entry::Ip(ip);
        }
        match entry.parse::<SocketAddr>() {
            Ok(address) => Entry::Address(address),
            Err(_) => Entry::Host(entry),
        }
    }
}

/// A `network.allow` value written as addresses (not a `${…}` reference, resolved when a
/// task starts) must be entries of the form `host:port`, `ip:port` or `ip`.
pub fn check(config: &Properties) -> Vec<Refusal> {
    let Some(value) = config.get(NETWORK_ALLOW_KEY) else {
        return Vec::new();
    };
    if is_reference(value) {
        return Vec::new();
    }
    entries(value)
        .filter(|entry| match Entry::parse(entry) {
            Entry::Ip(_) | Entry::Address(_) => false,
            Entry::Host(host) => !host
                .rsplit_once(':')
                .is_some_and(|(name, port)| !name.is_empty() && port.parse::<u16>().is_ok()),
        })
        .map(|entry| Refusal {
            key: NETWORK_ALLOW_KEY.to_string(),
            message: format!(
                "{NETWORK_ALLOW_KEY}: {entry:?} is not an address; write host:port, ip:port or ip, comma-separated"
            ),
        })
        .collect()
}

/// The addresses the resolved `config`'s `network.allow` lists, host names resolved; none
/// when it has no such key.
pub async fn grant(config: &Config) -> Result<Vec<(IpAddr, Option<u16>)>, String> {
    match config.iter().find(|(key, _)| key == NETWORK_ALLOW_KEY) {
        Some((_, allow)) => resolve(allow).await,
        None => Ok(Vec::new()),
    }
}

/// Resolves a `network.allow` value.
async fn resolve(value: &str) -> Result<Vec<(IpAddr, Option<u16>)>, String> {
    let mut allowed = Vec::new();
    for entry in entries(value) {
        match Entry::parse(entry) {
            Entry::Ip(ip) => allowed.push((ip, None)),
            Entry::Address(address) => allowed.push((address.ip(), Some(address.port()))),
            Entry::Host(host) => {
                let resolved = tokio::net::lookup_host(host)
                    .await
                    .map_err(|e| format!("{NETWORK_ALLOW_KEY}: cannot resolve {entry:?} (write host:port, ip:port or ip): {e}"))?;
                allowed.extend(resolved.map(|address| (address.ip(), Some(address.port()))));
            }
        }
    }
    Ok(allowed)
}

/// Lets the instance open sockets to the `allowed` addresses only; with none, it may open no
/// socket at all.
pub(super) fn apply(allowed: &[(IpAddr, Option<u16>)], wasi: &mut WasiCtxBuilder) {
    if allowed.is_empty() {
        return;
    }
    let allowed = Arc::new(allowed.to_vec());
    wasi.allow_tcp(true).allow_udp(true).socket_addr_check(
        move |address: SocketAddr, usage: SocketAddrUse| {
            // A connect first binds the socket to an ephemeral local address (`0.0.0.0:0`);
            // that bind grants nothing by itself, so it passes.
            let implicit_bind = matches!(usage, SocketAddrUse::TcpBind | SocketAddrUse::UdpBind)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn network_entries_resolve_to_addresses_and_ports() {
        let allowed = resolve("127.0.0.1:9000, 10.0.0.1, localhost:80")
            .await
            .unwrap();
        assert!(allowed.contains(&("127.0.0.1".parse().unwrap(), Some(9000))));
        assert!(allowed.contains(&("10.0.0.1".parse().unwrap(), None)));
        assert!(allowed
            .iter()
            .any(|(ip, port)| ip.is_loopback() && *port == Some(80)));
        assert!(resolve("no such host !").await.is_err());
    }

    #[test]
    fn entries_that_are_not_addresses_are_refused_at_create() {
        let config = |value: &str| -> Properties {
            [(NETWORK_ALLOW_KEY.to_string(), value.to_string())].into()
        };
        assert!(check(&config("127.0.0.1:9000, [::1], db.example:5432")).is_empty());
        assert!(check(&config("${env:HOSTS}")).is_empty());
        let refused = check(&config("10.0.0.1, db.example, :80, db.example:http"));
        let keys: Vec<&str> = refused.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, [NETWORK_ALLOW_KEY; 3]);
        assert_eq!(
            refused[0].message,
            "network.allow: \"db.example\" is not an address; write host:port, ip:port or ip, comma-separated"
        );
    }
}
