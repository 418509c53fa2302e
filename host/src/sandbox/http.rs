//! Outgoing wasi:http requests of a task. The linker offers `wasi:http/outgoing-handler`
//! (from `wasmtime-wasi-http`) to every component; each request goes through [`HttpHooks`],
//! which applies the task's network grant to the request's host and port before any
//! connection is made (a refusal reaches the guest as `internal-error` with the reason,
//! e.g. `connect to 127.0.0.1:9 refused: not in network.allow`), connects to the checked
//! address itself (a listed name is never resolved again), speaks TLS for `https` with the
//! webpki root certificates, bounds the connect, first-byte and between-bytes timeouts by
//! the call timeout, holds at most `limits.network.connections` connections open at once
//! (the same permits as the task's TCP sockets, `sandbox/sockets.rs`), counts the body bytes in the task's [`NetworkCounters`], and paces bodies to the
//! connector's byte rates ([`ByteRate`]).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Scheme;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::capabilities::{NetworkCounters, NetworkGrant};

/// The future `send_request` returns.
type Sent = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

/// How one task's wasi:http requests are sent.
pub struct HttpHooks {
    grant: Arc<NetworkGrant>,
    counters: Arc<NetworkCounters>,
    rates: ConnectorRates,
    /// Upper bound of every timeout of a request: the call timeout.
    timeout: Duration,
    /// One permit per connection the task may hold open (shared with its TCP sockets).
    connections: Arc<Semaphore>,
    /// Who is asking, for the log.
    task: String,
}

impl HttpHooks {
    pub fn new(
        grant: Arc<NetworkGrant>,
        counters: Arc<NetworkCounters>,
        rates: ConnectorRates,
        timeout: Duration,
        connections: Arc<Semaphore>,
        task: String,
    ) -> Self {
        HttpHooks {
            grant,
            counters,
            rates,
            timeout,
            connections,
            task,
        }
    }
}

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Sent {
        let bound = |set: Option<Duration>| set.map_or(self.timeout, |t| t.min(self.timeout));
        let timeouts = Timeouts {
            connect: bound(options.and_then(|o| o.connect_timeout)),
            first_byte: bound(options.and_then(|o| o.first_byte_timeout)),
            between_bytes: bound(options.and_then(|o| o.between_bytes_timeout)),
        };
        let (grant, counters, rates) = (
            self.grant.clone(),
            self.counters.clone(),
            self.rates.clone(),
        );
        let (connections, task) = (self.connections.clone(), self.task.clone());
        Box::new(async move {
            let (response, io) = send(&grant, counters, &rates, &connections, timeouts, request)
                .await
                .inspect_err(|e| tracing::debug!(%task, "outgoing request failed: {e}"))?;
            Ok((response, Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Timeouts {
    connect: Duration,
    first_byte: Duration,
    between_bytes: Duration,
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// Sends `request` to a granted address: the response, and the connection's future (which
/// holds the connection permit until the connection ends).
async fn send(
    grant: &NetworkGrant,
    counters: Arc<NetworkCounters>,
    rates: &ConnectorRates,
    connections: &Arc<Semaphore>,
    timeouts: Timeouts,
    mut request: http::Request<WasiBody>,
) -> Result<
    (
        http::Response<WasiBody>,
        impl Future<Output = Result<(), Error>> + Send,
    ),
    Error,
> {
    let uri = request.uri().clone();
    let tls = uri.scheme() == Some(&Scheme::HTTPS);
    let host = uri.host().ok_or(Error::HttpRequestUriInvalid)?;
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let addresses = grant
        .connect_to(host, port)
        .map_err(|refusal| Error::InternalError(Some(refusal.to_string())))?;
    let permit = connections
        .clone()
        .try_acquire_owned()
        .map_err(|_| Error::ConnectionLimitReached)?;
    let stream = connect(&addresses, timeouts.connect).await?;
    let stream: Box<dyn Stream> = if tls {
        let name = match host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<IpAddr>()
        {
            Ok(ip) => rustls::pki_types::ServerName::from(ip),
            Err(_) => rustls::pki_types::ServerName::try_from(host.to_string())?,
        };
        let connector = tokio_rustls::TlsConnector::from(tls_config());
        let handshake = connector.connect(name, stream);
        match tokio::time::timeout(timeouts.connect, handshake).await {
            Ok(stream) => Box::new(stream.map_err(Error::Tls)?),
            Err(_) => return Err(Error::ConnectionTimeout),
        }
    } else {
        Box::new(stream)
    };
    let handshake = hyper::client::conn::http1::handshake(TokioIo::new(stream));
    let (mut sender, connection) = tokio::time::timeout(timeouts.connect, handshake)
        .await
        .map_err(|_| Error::ConnectionTimeout)??;
    let connection = wasmtime_wasi::runtime::spawn(async move {
        let ended = connection.await;
        drop(permit);
        ended
    });
    // The request line carries the path only (the authority is in the Host header).
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    *request.uri_mut() = http::Uri::try_from(path).map_err(|_| Error::HttpRequestUriInvalid)?;
    let request = request
        .map(|body| Metered::new(body, Direction::Sent, counters.clone(), rates.sent.clone()));
    let response = tokio::time::timeout(timeouts.first_byte, sender.send_request(request))
        .await
        .map_err(|_| Error::ConnectionReadTimeout)??;
    let response = response.map(|incoming| {
        Metered::new(
            incoming,
            Direction::Received,
            counters,
            rates.received.clone(),
        )
        .quiet_after(timeouts.between_bytes)
        .boxed_unsync()
    });
    Ok((
        response,
        async move { connection.await.map_err(Error::from) },
    ))
}

/// A TCP connection to the first of `addresses` that answers within `timeout`.
async fn connect(addresses: &[SocketAddr], timeout: Duration) -> Result<TcpStream, Error> {
    let mut last = Error::ConnectionRefused;
    for address in addresses {
        match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last = Error::Connect(e),
            Err(_) => last = Error::ConnectionTimeout,
        }
    }
    Err(last)
}

/// The TLS client settings: the webpki roots, ring's provider (whatever else the process
/// links), TLS 1.2 and 1.3.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = match rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
            {
                Ok(builder) => builder.with_root_certificates(roots).with_no_client_auth(),
                // ring offers the default versions; this only keeps a panic out of the host.
                Err(_) => rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            };
            Arc::new(config)
        })
        .clone()
}

/// Bytes per second one connector may move in one direction over wasi:http and TCP
/// (`limits.network.bytes.out.per.second`, `limits.network.bytes.in.per.second`), shared
/// by its tasks: a token bucket holding at most one second of bytes, which a body may
/// overdraw; the body (or TCP stream) then waits until the debt is paid.
#[derive(Debug)]
pub struct ByteRate {
    per_second: f64,
    /// Bytes available (negative: owed) and when that was computed.
    bucket: Mutex<(f64, Instant)>,
}

impl ByteRate {
    /// A rate of `per_second` bytes; None when it is 0 (unlimited).
    pub fn new(per_second: u64) -> Option<Arc<ByteRate>> {
        (per_second > 0).then(|| {
            Arc::new(ByteRate {
                per_second: per_second as f64,
                bucket: Mutex::new((per_second as f64, Instant::now())),
            })
        })
    }

    /// Takes `bytes`; how long to wait before they may pass.
    pub(super) fn take(&self, bytes: usize) -> Duration {
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let refilled = now.duration_since(bucket.1).as_secs_f64() * self.per_second;
        let available = (bucket.0 + refilled).min(self.per_second) - bytes as f64;
        *bucket = (available, now);
        if available >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-available / self.per_second)
        }
    }
}

/// The byte rates of one connector, both directions.
#[derive(Debug, Clone, Default)]
pub struct ConnectorRates {
    /// Bytes per second (sent, received) they were made for; 0 is unlimited.
    limits: (u64, u64),
    pub sent: Option<Arc<ByteRate>>,
    pub received: Option<Arc<ByteRate>>,
}

/// Each connector's byte rates.
#[derive(Debug, Default)]
pub struct RateTable(Mutex<HashMap<String, ConnectorRates>>);

impl RateTable {
    /// The rates `connector`'s tasks share at `limits` bytes per second (sent, received):
    /// made anew when its limits changed; rates no task holds any more are forgotten.
    pub fn of(&self, connector: &str, limits: (u64, u64)) -> ConnectorRates {
        let mut table = self.0.lock().unwrap_or_else(|e| e.into_inner());
        table.retain(|_, held| {
            [&held.sent, &held.received]
                .into_iter()
                .any(|rate| rate.as_ref().is_some_and(|r| Arc::strong_count(r) > 1))
        });
        if let Some(held) = table.get(connector).filter(|held| held.limits == limits) {
            return held.clone();
        }
        let made = ConnectorRates {
            limits,
            sent: ByteRate::new(limits.0),
            received: ByteRate::new(limits.1),
        };
        table.insert(connector.to_string(), made.clone());
        made
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Sent,
    Received,
}

/// A body that counts the bytes it yields in the task's counters, keeps to the connector's
/// byte rate, and (a response body) fails when the server is quiet for longer than the
/// between-bytes timeout.
struct Metered<B> {
    inner: B,
    direction: Direction,
    counters: Arc<NetworkCounters>,
    rate: Option<Arc<ByteRate>>,
    /// A frame held back until the rate lets it pass, and until when.
    held: Option<Frame<Bytes>>,
    pause: Pin<Box<tokio::time::Sleep>>,
    /// Response bodies: the between-bytes timeout and its deadline.
    quiet: Option<(Duration, Pin<Box<tokio::time::Sleep>>)>,
}

impl<B> Metered<B> {
    fn new(
        inner: B,
        direction: Direction,
        counters: Arc<NetworkCounters>,
        rate: Option<Arc<ByteRate>>,
    ) -> Self {
        Metered {
            inner,
            direction,
            counters,
            rate,
            held: None,
            pause: Box::pin(tokio::time::sleep(Duration::ZERO)),
            quiet: None,
        }
    }

    fn quiet_after(mut self, timeout: Duration) -> Self {
        self.quiet = Some((timeout, Box::pin(tokio::time::sleep(timeout))));
        self
    }
}

impl<B> Body for Metered<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Error>,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        if this.held.is_some() {
            if this.pause.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            return Poll::Ready(this.held.take().map(Ok));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let bytes = frame.data_ref().map_or(0, Bytes::len);
                match this.direction {
                    Direction::Sent => this.counters.sent(bytes),
                    Direction::Received => this.counters.received(bytes),
                }
                if let Some((timeout, deadline)) = this.quiet.as_mut() {
                    deadline
                        .as_mut()
                        .reset(tokio::time::Instant::now() + *timeout);
                }
                let wait = this.rate.as_ref().map_or(Duration::ZERO, |r| r.take(bytes));
                if wait.is_zero() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                this.pause
                    .as_mut()
                    .reset(tokio::time::Instant::now() + wait);
                this.held = Some(frame);
                match this.pause.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(this.held.take().map(Ok)),
                    Poll::Pending => Poll::Pending,
                }
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if let Some((_, deadline)) = this.quiet.as_mut() {
                    if deadline.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Some(Err(Error::ConnectionReadTimeout)));
                    }
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byte_rate_lets_one_second_of_bytes_pass_then_makes_the_overdraft_wait() {
        assert!(ByteRate::new(0).is_none());
        let rate = ByteRate::new(1000).unwrap();
        assert_eq!(rate.take(1000), Duration::ZERO);
        let wait = rate.take(500);
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        // The debt carries over: the next bytes wait for it too.
        assert!(rate.take(500) > Duration::from_millis(900));
    }
}
