//! Where and as whom to connect: [`ConnectParams`], read from the URL forms users know
//! (`jdbc:postgresql://host:port/db?user=…&password=…`, `postgres://user:pass@host:port/db`).

use std::time::Duration;

use crate::Error;

/// The port PostgreSQL listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 5432;

/// Everything [`crate::Client::connect`] needs.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectParams {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// `None` for trust authentication.
    pub password: Option<String>,
    pub database: String,
    /// Connect as a walsender (`replication=database`) for logical replication.
    pub replication: bool,
    /// Bound on connecting and on every read or write.
    pub timeout: Duration,
}

impl std::fmt::Debug for ConnectParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectParams")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "********"))
            .field("database", &self.database)
            .field("replication", &self.replication)
            .finish()
    }
}

impl ConnectParams {
    /// Reads `jdbc:postgresql://host[:port]/db[?user=u&password=p]` or
    /// `postgres[ql]://[user[:password]@]host[:port]/db`. The user defaults to `postgres`,
    /// the database to the user's name.
    pub fn from_url(url: &str) -> Result<ConnectParams, Error> {
        let bad = |why: &str| {
            Error::Url(format!("{why}; write jdbc:postgresql://host:port/database or postgres://user:password@host:port/database"))
        };
        let rest = ["jdbc:postgresql://", "postgresql://", "postgres://"]
            .iter()
            .find_map(|scheme| url.strip_prefix(scheme))
            .ok_or_else(|| bad("the URL does not start with jdbc:postgresql:// or postgres://"))?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let (host, port) =
            split_host_port(hostport).ok_or_else(|| bad("the port is not a number"))?;
        if host.is_empty() {
            return Err(bad("the URL names no host"));
        }
        let mut user = None;
        let mut password = None;
        if let Some(userinfo) = userinfo {
            let (u, p) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            user = Some(percent_decode(u).ok_or_else(|| bad("the user is badly percent-encoded"))?);
            password = p
                .map(|p| {
                    percent_decode(p).ok_or_else(|| bad("the password is badly percent-encoded"))
                })
                .transpose()?;
        }
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v =
                percent_decode(v).ok_or_else(|| bad("a URL parameter is badly percent-encoded"))?;
            match k {
                "user" => user = Some(v),
                "password" => password = Some(v),
                _ => {} // sslmode, ApplicationName…: nothing to do over a plain socket
            }
        }
        let user = user.unwrap_or_else(|| "postgres".to_string());
        let database = percent_decode(database)
            .ok_or_else(|| bad("the database name is badly percent-encoded"))?;
        Ok(ConnectParams {
            host: host.to_string(),
            port,
            database: if database.is_empty() {
                user.clone()
            } else {
                database
            },
            user,
            password,
            replication: false,
            timeout: Duration::from_secs(10),
        })
    }

    /// `host:port`, the form `network.allow` lists.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(hostport: &str) -> Option<(&str, u16)> {
    if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(port) => Some((host, port.parse().ok()?)),
            None if after.is_empty() => Some((host, DEFAULT_PORT)),
            None => None,
        };
    }
    match hostport.split_once(':') {
        Some((host, port)) => Some((host, port.parse().ok()?)),
        None => Some((hostport, DEFAULT_PORT)),
    }
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jdbc_and_postgres_urls_are_read() {
        let p = ConnectParams::from_url(
            "jdbc:postgresql://127.0.0.1:5433/shop?user=app&password=p%40ss&sslmode=disable",
        )
        .unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.database.as_str()),
            ("127.0.0.1", 5433, "shop")
        );
        assert_eq!(
            (p.user.as_str(), p.password.as_deref()),
            ("app", Some("p@ss"))
        );
        let p = ConnectParams::from_url("postgres://bob:s%3Acret@db.local/inventory").unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.user.as_str()),
            ("db.local", 5432, "bob")
        );
        assert_eq!(p.password.as_deref(), Some("s:cret"));
        let p = ConnectParams::from_url("postgresql://[::1]:6000").unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.database.as_str()),
            ("::1", 6000, "postgres")
        );
        assert_eq!(p.address(), "[::1]:6000");
    }

    #[test]
    fn bad_urls_say_what_to_write() {
        for url in [
            "mysql://h/db",
            "postgres://h:port/db",
            "postgres:///db",
            "postgres://u:%zz@h/db",
        ] {
            let err = ConnectParams::from_url(url).unwrap_err().to_string();
            assert!(
                err.contains("jdbc:postgresql://host:port/database"),
                "{url}: {err}"
            );
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let p = ConnectParams::from_url("postgres://u:hunter2@h/db").unwrap();
        assert!(!format!("{p:?}").contains("hunter2"));
    }
}
