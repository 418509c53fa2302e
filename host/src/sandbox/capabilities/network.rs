//! The network capability: a task may reach the addresses its `network.allow` lists
//! (`host:port`, `ip:port`, `ip` or `ip/prefix`, comma-separated), and nothing else.
//!
//! - Listed IPs and ranges are allowed as written (loopback and private ones included: the
//!   user named them).
//! - Listed names are resolved when the task starts; the task may connect to the addresses
//!   they resolved to, on the listed port, and may resolve exactly those names itself (wasi
//!   ip-name-lookup; every other name is refused). A resolved address that is loopback,
//!   private, link-local or otherwise not public is dropped unless a listed IP or range
//!   covers it, so a name cannot be pointed (DNS rebinding) at the host's own services.
//! - The same decision ([`NetworkGrant::connect_to`]) applies to wasi:sockets connects and to
//!   wasi:http requests (`sandbox/http.rs`), whose refusals read
//!   `connect to 127.0.0.1:9 refused: not in network.allow`.
//!
//! - The grant opens TCP (wasi:sockets, under the socket cap and byte rates of
//!   `sandbox/sockets.rs`) and wasi:http; never UDP, whose datagrams no limit would cover.
//!
//! [`NetworkCounters`] count the bytes a task sends and receives over wasi:http and TCP.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use wasmtime::component::{Linker, Resource};
use wasmtime::StoreContextMut;
use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::Host as _;
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, Network};
use wasmtime_wasi::sockets::{SocketAddrUse, WasiSocketsView};
use wasmtime_wasi::WasiCtxBuilder;

use super::Refusal;
use crate::config::{entries, is_reference};
use crate::sandbox::types::Config;
use crate::sandbox::TaskState;
use crate::storage::Properties;

/// The config key listing the addresses a connector may connect to.
pub const NETWORK_ALLOW_KEY: &str = "network.allow";

/// The interface whose `resolve-addresses` is shadowed (the version this wasmtime-wasi links).
const IP_NAME_LOOKUP: &str = "wasi:sockets/ip-name-lookup@0.2.12";

/// One entry of a `network.allow` value.
enum Entry<'a> {
    /// Every port of the addresses of this range (a single IP is a full-length prefix).
    Range(Range),
    Address(SocketAddr),
    /// A name to resolve (`host:port`, as written).
    Host(&'a str),
}

impl<'a> Entry<'a> {
    fn parse(entry: &'a str) -> Entry<'a> {
        if let Some(range) = Range::parse(entry) {
            return Entry::Range(range);
        }
        match entry.parse::<SocketAddr>() {
            Ok(address) => Entry::Address(address),
            Err(_) => Entry::Host(entry),
        }
    }

    /// The name and port of a well-formed `host:port` entry.
    fn host_port(entry: &str) -> Option<(&str, u16)> {
        let (name, port) = entry.rsplit_once(':')?;
        let port = port.parse::<u16>().ok()?;
        (!name.is_empty() && !name.contains(['/', '[', ']', ' '])).then_some((name, port))
    }
}

/// An IP address range (`10.0.0.0/8`; a plain IP is one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    base: IpAddr,
    prefix: u8,
}

impl Range {
    fn parse(entry: &str) -> Option<Range> {
        let (ip, prefix) = match entry.split_once('/') {
            Some((ip, prefix)) => (ip, Some(prefix.parse::<u8>().ok()?)),
            None => (entry, None),
        };
        let base = ip
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<IpAddr>()
            .ok()?
            .to_canonical();
        let bits = if base.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(bits);
        (prefix <= bits).then_some(Range { base, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| -> (u128, u8) {
            match ip {
                IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, 32),
                IpAddr::V6(v6) => (u128::from(v6), 128),
            }
        };
        let ((base, width), (ip, ip_width)) = (bits(self.base), bits(ip.to_canonical()));
        if width != ip_width {
            return false;
        }
        let mask = u128::MAX
            .checked_shl(128 - u32::from(self.prefix))
            .unwrap_or(0);
        base & mask == ip & mask
    }
}

/// A name `network.allow` lists, and what it resolved to when the task started.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NamedHost {
    /// Lower case, without a trailing dot.
    name: String,
    port: u16,
    addresses: Vec<IpAddr>,
}

/// What `network.allow` grants one task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkGrant {
    /// Listed IPs and ranges: every port.
    ranges: Vec<Range>,
    /// Listed `ip:port` addresses.
    addresses: Vec<SocketAddr>,
    /// Listed names, resolved.
    names: Vec<NamedHost>,
}

/// Why a connection is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectRefusal {
    #[error("connect to {0} refused: not in network.allow")]
    NotAllowed(String),
    #[error("connect to {0} refused: network.allow is not set, so the connector may reach no address; list host:port or ip:port entries in it")]
    NothingAllowed(String),
}

impl NetworkGrant {
    /// Whether nothing is granted.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty() && self.addresses.is_empty() && self.names.is_empty()
    }

    /// Whether the task may connect to `address`.
    pub fn allows(&self, address: SocketAddr) -> bool {
        let ip = address.ip().to_canonical();
        self.ranges.iter().any(|range| range.contains(ip))
            || self
                .addresses
                .iter()
                .any(|a| a.ip().to_canonical() == ip && a.port() == address.port())
            || self
                .names
                .iter()
                .any(|n| n.port == address.port() && n.addresses.contains(&ip))
    }

    /// Whether the task may resolve `name` (a listed name, or an IP literal).
    fn may_resolve(&self, name: &str) -> bool {
        let name = normalized(name);
        name.parse::<IpAddr>().is_ok() || self.names.iter().any(|n| n.name == name)
    }

    /// The checked addresses a connection to `host:port` (as a URL names them) may use: an
    /// IP is checked as it is, a name must be listed with that port and stands for the
    /// addresses it resolved to when the task started (never resolved again).
    pub fn connect_to(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ConnectRefusal> {
        let shown = || match host.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
            _ => format!("{host}:{port}"),
        };
        if self.is_empty() {
            return Err(ConnectRefusal::NothingAllowed(shown()));
        }
        let literal = host.trim_matches(|c| c == '[' || c == ']');
        if let Ok(ip) = literal.parse::<IpAddr>() {
            let address = SocketAddr::new(ip, port);
            return match self.allows(address) {
                true => Ok(vec![address]),
                false => Err(ConnectRefusal::NotAllowed(shown())),
            };
        }
        let name = normalized(host);
        self.names
            .iter()
            .find(|n| n.name == name && n.port == port)
            .map(|n| {
                n.addresses
                    .iter()
                    .map(|ip| SocketAddr::new(*ip, port))
                    .collect()
            })
            .ok_or_else(|| ConnectRefusal::NotAllowed(shown()))
    }
}

/// A host name as compared: lower case, without a trailing dot.
fn normalized(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `ip` is an address of the public internet (not loopback, private, link-local,
/// shared, unspecified, broadcast, multicast or documentation space).
fn is_public(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// A `network.allow` value written as addresses (not a `${…}` reference, resolved when a
/// task starts) must be entries of the form `host:port`, `ip:port`, `ip` or `ip/prefix`.
pub fn check(config: &Properties) -> Vec<Refusal> {
    let Some(value) = config.get(NETWORK_ALLOW_KEY) else {
        return Vec::new();
    };
    if is_reference(value) {
        return Vec::new();
    }
    entries(value)
        .filter(|entry| match Entry::parse(entry) {
            Entry::Range(_) | Entry::Address(_) => false,
            Entry::Host(host) => Entry::host_port(host).is_none(),
        })
        .map(|entry| Refusal {
            key: NETWORK_ALLOW_KEY.to_string(),
            message: format!(
                "{NETWORK_ALLOW_KEY}: {entry:?} is not an address; write host:port, ip:port, ip or ip/prefix, comma-separated"
            ),
        })
        .collect()
}

/// What the resolved `config`'s `network.allow` grants, names resolved; nothing when it has
/// no such key.
pub async fn grant(config: &Config) -> Result<NetworkGrant, String> {
    match config.iter().find(|(key, _)| key == NETWORK_ALLOW_KEY) {
        Some((_, allow)) => resolve(allow).await,
        None => Ok(NetworkGrant::default()),
    }
}

/// Resolves a `network.allow` value.
async fn resolve(value: &str) -> Result<NetworkGrant, String> {
    let mut grant = NetworkGrant::default();
    let mut hosts = Vec::new();
    for entry in entries(value) {
        match Entry::parse(entry) {
            Entry::Range(range) => grant.ranges.push(range),
            Entry::Address(address) => grant.addresses.push(address),
            Entry::Host(host) => hosts.push(host),
        }
    }
    for entry in hosts {
        let Some((name, port)) = Entry::host_port(entry) else {
            return Err(format!(
                "{NETWORK_ALLOW_KEY}: {entry:?} is not an address; write host:port, ip:port, ip or ip/prefix"
            ));
        };
        let resolved: Vec<IpAddr> = tokio::net::lookup_host((name, port))
            .await
            .map_err(|e| format!("{NETWORK_ALLOW_KEY}: cannot resolve {entry:?} (write host:port, ip:port or ip): {e}"))?
            .map(|address| address.ip().to_canonical())
            .collect();
        let listed = |ip: IpAddr| grant.allows(SocketAddr::new(ip, port));
        let (kept, refused): (Vec<IpAddr>, Vec<IpAddr>) = resolved
            .into_iter()
            .partition(|ip| is_public(*ip) || listed(*ip));
        if kept.is_empty() {
            let shown: Vec<String> = refused.iter().map(IpAddr::to_string).collect();
            return Err(format!(
                "{NETWORK_ALLOW_KEY}: {entry:?} resolves to {}, not a public address; list that address too (e.g. {}:{port}) to allow it",
                shown.join(", "),
                shown.first().map_or("127.0.0.1", String::as_str)
            ));
        }
        if !refused.is_empty() {
            tracing::warn!(
                "{NETWORK_ALLOW_KEY}: {entry:?} also resolves to {refused:?}, not public and not listed: refused"
            );
        }
        grant.names.push(NamedHost {
            name: normalized(name),
            port,
            addresses: kept,
        });
    }
    Ok(grant)
}

/// Lets the instance open TCP sockets to the granted addresses only (no UDP socket), and
/// resolve the granted names; with nothing granted, it may open no socket at all.
pub(super) fn apply(grant: &NetworkGrant, wasi: &mut WasiCtxBuilder) {
    if grant.is_empty() {
        return;
    }
    let grant = Arc::new(grant.clone());
    wasi.allow_tcp(true)
        .allow_udp(false)
        .allow_ip_name_lookup(!grant.names.is_empty())
        .socket_addr_check(move |address: SocketAddr, usage: SocketAddrUse| {
            // A connect first binds the socket to an ephemeral local address (`0.0.0.0:0`);
            // that bind grants nothing by itself, so it passes.
            let implicit_bind = matches!(usage, SocketAddrUse::TcpBind)
                && address.ip().is_unspecified()
                && address.port() == 0;
            let allowed = implicit_bind || grant.allows(address);
            Box::pin(async move { allowed })
        });
}

/// Replaces the linker's `resolve-addresses` with one that resolves only the names the
/// task's `network.allow` lists (and IP literals); any other name is `access-denied`.
pub(in crate::sandbox) fn shadow_name_lookup(
    linker: &mut Linker<TaskState>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut lookup = linker.instance(IP_NAME_LOOKUP)?;
    lookup.func_wrap(
        "resolve-addresses",
        |mut store: StoreContextMut<'_, TaskState>,
         (network, name): (Resource<Network>, String)| {
            let state = store.data_mut();
            if !state.network_grant().may_resolve(&name) {
                return Ok((Err(ErrorCode::AccessDenied),));
            }
            let resolved = match state.sockets().resolve_addresses(network, name) {
                Ok(stream) => Ok(stream),
                Err(e) => Err(e.downcast()?),
            };
            Ok((resolved,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Bytes one task sent and received over wasi:http (request and response bodies) and TCP
/// sockets (stream bytes).
#[derive(Debug, Default)]
pub struct NetworkCounters {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

impl NetworkCounters {
    pub(in crate::sandbox) fn received(&self, bytes: usize) {
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(in crate::sandbox) fn sent(&self, bytes: usize) {
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[tokio::test]
    async fn listed_ips_ranges_and_addresses_are_allowed_as_written() {
        let grant = resolve("127.0.0.1:9000, 10.0.0.1, 192.168.0.0/16, [::1]:80")
            .await
            .unwrap();
        assert!(grant.allows(address("127.0.0.1:9000")));
        assert!(!grant.allows(address("127.0.0.1:9001")));
        assert!(grant.allows(address("10.0.0.1:1")));
        assert!(grant.allows(address("192.168.7.9:443")));
        assert!(!grant.allows(address("192.169.0.1:443")));
        assert!(grant.allows(address("[::1]:80")));
        assert!(grant.allows(address("[::ffff:10.0.0.1]:5")));
        assert_eq!(
            grant.connect_to("10.0.0.2", 80).unwrap_err().to_string(),
            "connect to 10.0.0.2:80 refused: not in network.allow"
        );
        assert_eq!(grant.connect_to("::1", 80).unwrap(), [address("[::1]:80")]);
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_unless_its_address_is_listed() {
        let refused = resolve("localhost:8080").await.unwrap_err();
        assert!(refused.contains("not a public address"), "{refused}");
        let grant = resolve("localhost:8080, 127.0.0.1, ::1").await.unwrap();
        let addresses = grant.connect_to("LOCALHOST.", 8080).unwrap();
        assert!(
            addresses.iter().all(|a| a.ip().is_loopback()),
            "{addresses:?}"
        );
        assert!(grant.may_resolve("localhost"));
        assert!(!grant.may_resolve("example.com"));
        assert!(grant.connect_to("localhost", 8081).is_err());
        assert!(resolve("no such host !:1").await.is_err());
    }

    #[test]
    fn nothing_granted_refuses_every_connection_saying_so() {
        let refused = NetworkGrant::default().connect_to("example.com", 443);
        assert!(matches!(refused, Err(ConnectRefusal::NothingAllowed(_))));
    }

    #[test]
    fn only_public_addresses_are_public() {
        for ip in ["8.8.8.8", "2001:4860::8888", "::ffff:1.1.1.1"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn entries_that_are_not_addresses_are_refused_at_create() {
        let config = |value: &str| -> Properties {
            [(NETWORK_ALLOW_KEY.to_string(), value.to_string())].into()
        };
        assert!(check(&config(
            "127.0.0.1:9000, [::1], db.example:5432, 10.0.0.0/8"
        ))
        .is_empty());
        assert!(check(&config("${env:HOSTS}")).is_empty());
        let refused = check(&config(
            "10.0.0.1, db.example, :80, db.example:http, 10.0.0.0/33",
        ));
        let keys: Vec<&str> = refused.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, [NETWORK_ALLOW_KEY; 4]);
        assert_eq!(
            refused[0].message,
            "network.allow: \"db.example\" is not an address; write host:port, ip:port, ip or ip/prefix, comma-separated"
        );
    }
}
