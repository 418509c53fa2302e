//! Blocking TCP with deadlines, for connectors that speak a protocol over a socket.
//!
//! A guest call (`poll`, `put`, `flush`, …) runs under the host's call timeout (30 s by
//! default) and calls into one instance never overlap, so a connector must never block
//! without a bound: every connect, read and write here takes a timeout. The same code runs
//! on wasm32-wasip2 (over wasi:sockets, with `std::net`) and natively.
//!
//! The pattern for a source: in `poll`, read with a short timeout (a few ms once records are
//! in hand, up to ~1 s when there are none) and return what arrived; an empty batch means
//! "nothing now". For a sink: write the batch, then read the acknowledgements with a timeout
//! well below the call timeout.
//!
//! ```no_run
//! use std::time::Duration;
//! use wasm_connect_sdk::tcp::TcpConnection;
//! # fn demo() -> Result<(), wasm_connect_sdk::TaskError> {
//! let mut conn = TcpConnection::connect("127.0.0.1:1883", Duration::from_secs(5))?;
//! conn.write_all(b"ping\n", Duration::from_secs(5))?;
//! let mut buf = [0u8; 4096];
//! match conn.read_some(&mut buf, Duration::from_millis(500))? {
//!     Some(n) => println!("got {n} bytes"),
//!     None => println!("nothing within 500 ms"),
//! }
//! # Ok(()) }
//! ```
//!
//! A connector may reach only the addresses its config's `network.allow` lists: any other
//! connect fails with [`TcpError::NotAllowed`] (`connect to 127.0.0.1:1883 refused: not in
//! network.allow; …`), which converts into a fatal [`crate::TaskError`], since retrying
//! cannot help. Every other error converts into a retriable one.

use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::TaskError;

/// The shortest timeout a socket takes (`std` refuses a zero timeout).
const MIN_TIMEOUT: Duration = Duration::from_millis(1);

/// Why a TCP step failed; the messages name the address and the fix.
#[derive(Debug)]
pub enum TcpError {
    /// The host refused the connection: the address is not in the connector's
    /// `network.allow`.
    NotAllowed { address: String },
    /// The address is not `host:port`, or the name did not resolve.
    Resolve { address: String, source: io::Error },
    /// Connecting failed (refused, unreachable, timed out).
    Connect { address: String, source: io::Error },
    /// A write did not complete within its timeout.
    WriteTimedOut { address: String, after: Duration },
    /// The peer closed the connection.
    Closed { address: String },
    /// Reading or writing failed.
    Io {
        address: String,
        what: &'static str,
        source: io::Error,
    },
}

impl fmt::Display for TcpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TcpError::NotAllowed { address } => write!(
                f,
                "connect to {address} refused: not in network.allow; add {address} to the connector's network.allow"
            ),
            TcpError::Resolve { address, source } => write!(
                f,
                "cannot resolve {address} (write host:port, and list the name in network.allow): {source}"
            ),
            TcpError::Connect { address, source } => {
                write!(f, "cannot connect to {address}: {source} (is the server running?)")
            }
            TcpError::WriteTimedOut { address, after } => write!(
                f,
                "writing to {address} did not complete within {} ms (the server does not read)",
                after.as_millis()
            ),
            TcpError::Closed { address } => write!(f, "{address} closed the connection"),
            TcpError::Io {
                address,
                what,
                source,
            } => write!(f, "cannot {what} {address}: {source}"),
        }
    }
}

impl std::error::Error for TcpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TcpError::Resolve { source, .. }
            | TcpError::Connect { source, .. }
            | TcpError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<TcpError> for TaskError {
    /// A refusal by `network.allow` is fatal (only the user's config can fix it); every
    /// other error may pass, so the host retries.
    fn from(error: TcpError) -> Self {
        match error {
            TcpError::NotAllowed { .. } => TaskError::Fatal(error.to_string()),
            _ => TaskError::Retriable(error.to_string()),
        }
    }
}

/// One connected TCP stream whose every read and write is bounded by a timeout.
#[derive(Debug)]
pub struct TcpConnection {
    stream: TcpStream,
    address: String,
    /// The read timeout currently set on the socket (set again only when it changes).
    read_timeout: Option<Duration>,
}

impl TcpConnection {
    /// Connects to `address` (`host:port`), trying each address it resolves to, each
    /// within `timeout`.
    pub fn connect(address: &str, timeout: Duration) -> Result<TcpConnection, TcpError> {
        let targets: Vec<SocketAddr> = address
            .to_socket_addrs()
            .map_err(|source| TcpError::Resolve {
                address: address.to_string(),
                source,
            })?
            .collect();
        let mut last = None;
        for target in targets {
            match TcpStream::connect_timeout(&target, timeout.max(MIN_TIMEOUT)) {
                Ok(stream) => {
                    // Small protocol packets must not wait for Nagle (a no-op on wasip2).
                    let _ = stream.set_nodelay(true);
                    return Ok(TcpConnection {
                        stream,
                        address: address.to_string(),
                        read_timeout: None,
                    });
                }
                Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                    return Err(TcpError::NotAllowed {
                        address: target.to_string(),
                    })
                }
                Err(e) => last = Some(e),
            }
        }
        Err(TcpError::Connect {
            address: address.to_string(),
            source: last.unwrap_or_else(|| {
                io::Error::new(ErrorKind::NotFound, "the name resolved to no address")
            }),
        })
    }

    /// The address this connection was opened to, as given to [`TcpConnection::connect`].
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Reads what is available into `buf`, waiting at most `timeout` for the first byte:
    /// `Ok(None)` when nothing came in time, [`TcpError::Closed`] when the peer closed.
    pub fn read_some(
        &mut self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<Option<usize>, TcpError> {
        let timeout = timeout.max(MIN_TIMEOUT);
        if self.read_timeout != Some(timeout) {
            self.stream
                .set_read_timeout(Some(timeout))
                .map_err(|source| self.io("set a read timeout on", source))?;
            self.read_timeout = Some(timeout);
        }
        match self.stream.read(buf) {
            Ok(0) => Err(TcpError::Closed {
                address: self.address.clone(),
            }),
            Ok(read) => Ok(Some(read)),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(None),
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(None),
            Err(source) => Err(self.io("read from", source)),
        }
    }

    /// Writes all of `bytes` within `timeout`.
    pub fn write_all(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), TcpError> {
        self.stream
            .set_write_timeout(Some(timeout.max(MIN_TIMEOUT)))
            .map_err(|source| self.io("set a write timeout on", source))?;
        match self.stream.write_all(bytes) {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err(TcpError::WriteTimedOut {
                    address: self.address.clone(),
                    after: timeout,
                })
            }
            Err(e) if e.kind() == ErrorKind::WriteZero => Err(TcpError::Closed {
                address: self.address.clone(),
            }),
            Err(source) => Err(self.io("write to", source)),
        }
    }

    fn io(&self, what: &'static str, source: io::Error) -> TcpError {
        TcpError::Io {
            address: self.address.clone(),
            what,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn reads_wait_at_most_their_timeout_and_see_data_and_close() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let mut conn = TcpConnection::connect(&address, Duration::from_secs(5)).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        let mut buf = [0u8; 16];
        assert!(conn
            .read_some(&mut buf, Duration::from_millis(10))
            .unwrap()
            .is_none());
        peer.write_all(b"hi").unwrap();
        let read = conn
            .read_some(&mut buf, Duration::from_secs(5))
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..read], b"hi");
        conn.write_all(b"back", Duration::from_secs(5)).unwrap();
        let mut echoed = [0u8; 4];
        peer.read_exact(&mut echoed).unwrap();
        assert_eq!(&echoed, b"back");
        drop(peer);
        assert!(matches!(
            conn.read_some(&mut buf, Duration::from_secs(5)),
            Err(TcpError::Closed { .. })
        ));
    }

    #[test]
    fn a_refused_connect_is_retriable_and_names_the_address() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let error = TcpConnection::connect(&format!("127.0.0.1:{port}"), Duration::from_secs(5))
            .unwrap_err();
        assert!(matches!(error, TcpError::Connect { .. }), "{error}");
        let task_error = TaskError::from(error);
        assert!(
            matches!(&task_error, TaskError::Retriable(m) if m.contains(&format!("127.0.0.1:{port}"))),
            "{task_error}"
        );
    }

    #[test]
    fn a_network_allow_refusal_is_fatal() {
        let error = TcpError::NotAllowed {
            address: "127.0.0.1:1883".into(),
        };
        assert_eq!(
            TaskError::from(error),
            TaskError::Fatal("connect to 127.0.0.1:1883 refused: not in network.allow; add 127.0.0.1:1883 to the connector's network.allow".into())
        );
    }
}
