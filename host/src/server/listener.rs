//! The REST listeners: accept TCP connections under a cap, serve each with hyper's HTTP/1
//! under a header-read timeout, and stop within a bound on shutdown.
//!
//! axum's `serve` has no header timeout, no connection cap and an unbounded graceful
//! shutdown (one half-sent request kept the process alive), so connections are served here
//! with hyper directly; the axum `Router` is the service.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Body;
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;

/// What the listeners allow their clients (the `--max-connections`,
/// `--header-read-timeout-s` and `--shutdown-timeout-s` flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Most connections one listener holds open. At the cap the oldest idle connection is
    /// closed to make room; when none is idle, new connections wait in the kernel's queue.
    /// Lowered at start to fit the open-file limit.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, from connecting or from the end of the
    /// previous answer: it also closes keep-alive connections left idle that long.
    pub header_read_timeout: Duration,
    /// How long shutdown waits for answers in flight before closing their connections.
    pub shutdown_timeout: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            max_connections: 512,
            header_read_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// Least time between two log lines about the same trouble on one listener.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// Pause after an accept error that concerns the process (out of file descriptors), so a
/// full table does not turn the accept loop into a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// One API's bound socket.
pub struct Listener {
    tcp: TcpListener,
    what: &'static str,
}

impl Listener {
    /// Binds `address` for the API named `what` and logs where it listens.
    pub async fn bind(address: SocketAddr, what: &'static str) -> anyhow::Result<Listener> {
        let tcp = TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address} for the {what}"))?;
        tracing::info!("{what} on http://{}", tcp.local_addr()?);
        Ok(Listener { tcp, what })
    }

    /// Serves `app` until `shutdown` turns true; then stops accepting, lets answers in flight
    /// finish for up to `limits.shutdown_timeout` and closes what is left.
    /// `max_connections` is the cap after fitting it to the open-file limit.
    pub async fn serve(
        self,
        app: axum::Router,
        limits: ListenerLimits,
        max_connections: usize,
        shutdown: watch::Receiver<bool>,
    ) {
        let Listener { tcp, what } = self;
        let mut stop = shutdown.clone();
        let stopped = async move {
            let _ = stop.wait_for(|stop| *stop).await;
        };
        tokio::pin!(stopped);
        let app = TowerToHyperService::new(app);
        let permits = Arc::new(Semaphore::new(max_connections));
        let open = Arc::new(OpenConnections::default());
        let mut connections = JoinSet::new();
        let mut at_cap_log = Throttle::default();
        let mut accept_log = Throttle::default();
        loop {
            let accepted = tokio::select! {
                accepted = tcp.accept() => accepted,
                _ = &mut stopped => break,
                Some(_) = connections.join_next() => continue,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    if let Some(suppressed) = accept_log.ready() {
                        tracing::warn!("{what}: cannot accept a connection: {e}{}", repeats(suppressed));
                    }
                    if is_process_wide(&e) {
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                    continue;
                }
            };
            let permit = match permits.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    let closed_idle = open.close_oldest_idle();
                    if let Some(suppressed) = at_cap_log.ready() {
                        let action = if closed_idle {
                            "closing the oldest idle one to make room"
                        } else {
                            "none is idle, so new connections wait until one closes"
                        };
                        tracing::warn!(
                            "{what}: {max_connections} connections open, the cap (--max-connections, fitted to the open-file limit): {action}{}",
                            repeats(suppressed)
                        );
                    }
                    tokio::select! {
                        permit = permits.clone().acquire_owned() => match permit {
                            Ok(permit) => permit,
                            Err(_) => break,
                        },
                        _ = &mut stopped => break,
                    }
                }
            };
            let (id, state) = open.register();
            let connection = serve_connection(
                stream,
                app.clone(),
                limits.header_read_timeout,
                state,
                shutdown.clone(),
            );
            let open = open.clone();
            connections.spawn(async move {
                connection.await;
                open.remove(id);
                drop(permit);
            });
        }
        drop(tcp);
        let grace = tokio::time::sleep(limits.shutdown_timeout);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                next = connections.join_next() => if next.is_none() { return },
                _ = &mut grace => break,
            }
        }
        tracing::warn!(
            "{what}: answers still in flight on {} connections {} s after the stop signal (--shutdown-timeout-s): closing them",
            connections.len(),
            limits.shutdown_timeout.as_secs_f32()
        );
        connections.shutdown().await;
    }
}

/// Serves one connection until the client closes it, the header-read timeout closes it, it
/// is closed to make room (while idle), or shutdown closes it (at once when idle, else once
/// its answer is sent).
async fn serve_connection(
    stream: TcpStream,
    app: TowerToHyperService<axum::Router>,
    header_read_timeout: Duration,
    state: Arc<ConnectionState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let requests = state.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let busy = Busy::start(requests.clone());
        let answer = hyper::service::Service::call(&app, request);
        async move {
            let response = answer.await?;
            Ok::<_, Infallible>(response.map(|body| Body::new(TrackedBody { body, _busy: busy })))
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!("connection closed: {e}");
                }
                return;
            }
            _ = state.close.notified() => {
                if state.is_idle() {
                    return;
                }
            }
            _ = shutdown.wait_for(|stop| *stop), if !stopping => {
                // hyper's graceful shutdown leaves a connection with half-sent headers open:
                // an idle connection is closed here, a busy one once its answer is sent.
                if state.is_idle() {
                    return;
                }
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// The open connections of one listener, oldest first.
#[derive(Default)]
struct OpenConnections {
    by_age: Mutex<BTreeMap<u64, Arc<ConnectionState>>>,
    next_id: AtomicU64,
}

impl OpenConnections {
    fn register(&self) -> (u64, Arc<ConnectionState>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnectionState::default());
        self.lock().insert(id, state.clone());
        (id, state)
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Asks the oldest connection without a request in flight to close; false when every
    /// connection is busy.
    fn close_oldest_idle(&self) -> bool {
        let open = self.lock();
        match open.values().find(|state| state.is_idle()) {
            Some(state) => {
                state.close.notify_one();
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<ConnectionState>>> {
        self.by_age.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the accept loop knows of one connection.
#[derive(Default)]
struct ConnectionState {
    /// Requests whose answer is not fully sent yet.
    in_flight: AtomicUsize,
    /// Asks the connection to close if it is still idle.
    close: Notify,
}

impl ConnectionState {
    /// No request in flight: waiting for (the rest of) a request's headers, or kept alive.
    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }
}

/// Counts a request as in flight from the moment hyper hands it over until its answer's
/// body is sent (or dropped).
struct Busy(Arc<ConnectionState>);

impl Busy {
    fn start(state: Arc<ConnectionState>) -> Busy {
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(state)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An answer's body that keeps its request counted as in flight until hyper drops it.
struct TrackedBody {
    body: Body,
    _busy: Busy,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Lets one log line through per [`LOG_EVERY`] and counts the ones held back.
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// Some(lines held back since the last one) when a line may be logged now.
    fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|last| now.duration_since(last) < LOG_EVERY) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

fn repeats(suppressed: u64) -> String {
    if suppressed == 0 {
        String::new()
    } else {
        format!(" ({suppressed} more times since the last such line)")
    }
}

/// Accept errors that concern the process rather than one connection: out of descriptors
/// or memory.
fn is_process_wide(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
