//! wasi:sockets TCP under the network limits (what `std::net::TcpStream` in a component
//! uses). The linker's `create-tcp-socket`, `tcp-socket.finish-connect`,
//! `tcp-socket.accept` and the `tcp-socket` destructor are shadowed by wrappers that
//!
//! - hold one permit of [`SocketSlots`] per TCP socket the guest holds (from its creation,
//!   when the host opens the file descriptor, to its drop), drawn from the same permits as
//!   the task's wasi:http connections (`sandbox/http.rs`): a task holds at most
//!   `limits.network.connections` sockets of both kinds together. A socket beyond it is
//!   refused with `new-socket-limit` (what the guest sees as EMFILE), and the first
//!   refusal of an instance is logged naming the limit; the task goes on, as it does when
//!   wasi:http answers `connection-limit-reached`;
//! - wrap the input and output streams of a connected (or accepted) socket in [`Metered`]
//!   streams, which count the bytes in the task's [`NetworkCounters`] and pace them to the
//!   connector's byte rates ([`ByteRate`], shared with wasi:http).
//!
//! (Accepting needs a listening socket, which wasmtime-wasi allows only when
//! `network.allow` covers the wildcard address, e.g. `0.0.0.0/0`; accepted sockets are
//! held and metered like connected ones.)
//!
//! UDP is not granted at all (`capabilities/network.rs`): no connector needs it, and its
//! datagrams would be neither capped nor counted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use wasmtime::component::{Linker, Resource, ResourceType};
use wasmtime::StoreContextMut;
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddressFamily};
use wasmtime_wasi::p2::bindings::sockets::tcp::HostTcpSocket;
use wasmtime_wasi::p2::bindings::sockets::tcp_create_socket::Host as _;
use wasmtime_wasi::p2::{
    DynInputStream, DynOutputStream, InputStream, OutputStream, Pollable, SocketResult,
    StreamError, TcpSocket,
};
use wasmtime_wasi::sockets::WasiSocketsView;
use wasmtime_wasi::WasiView;

use super::capabilities::NetworkCounters;
use super::http::{ByteRate, ConnectorRates};
use super::TaskState;

/// The interfaces whose functions are shadowed (the versions this wasmtime-wasi links).
const TCP: &str = "wasi:sockets/tcp@0.2.12";
const TCP_CREATE_SOCKET: &str = "wasi:sockets/tcp-create-socket@0.2.12";

/// The sockets one task may hold open: one permit each, for wasi:http connections and TCP
/// sockets alike (`limits.network.connections`).
pub struct SocketSlots {
    permits: Arc<Semaphore>,
    limit: usize,
    /// The permit of each TCP socket the guest holds, by the socket's handle.
    held: HashMap<u32, OwnedSemaphorePermit>,
    /// The task, for the log; whether a refusal was logged already.
    task: String,
    refusal_logged: bool,
    /// What the task's TCP streams count and keep to.
    counters: Arc<NetworkCounters>,
    rates: ConnectorRates,
}

impl SocketSlots {
    pub fn new(
        limit: usize,
        counters: Arc<NetworkCounters>,
        rates: ConnectorRates,
        task: String,
    ) -> Self {
        SocketSlots {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            held: HashMap::new(),
            task,
            refusal_logged: false,
            counters,
            rates,
        }
    }

    /// The permits, for the task's wasi:http connections.
    pub fn permits(&self) -> Arc<Semaphore> {
        self.permits.clone()
    }

    /// A permit for one more socket, or `new-socket-limit` when the task holds its limit.
    fn take(&mut self) -> Result<OwnedSemaphorePermit, ErrorCode> {
        self.permits.clone().try_acquire_owned().map_err(|_| {
            if !std::mem::replace(&mut self.refusal_logged, true) {
                tracing::warn!(
                    task = %self.task,
                    "socket refused: the task holds {} sockets, its limits.network.connections; raise it (ceiling --max-network-connections) if the connector needs more",
                    self.limit
                );
            }
            ErrorCode::NewSocketLimit
        })
    }

    /// The streams of a connected socket, metered.
    fn metered(
        &self,
        input: DynInputStream,
        output: DynOutputStream,
    ) -> (DynInputStream, DynOutputStream) {
        let counters = &self.counters;
        (
            Box::new(Metered::new(
                input,
                counters.clone(),
                self.rates.received.clone(),
            )),
            Box::new(Metered::new(
                output,
                counters.clone(),
                self.rates.sent.clone(),
            )),
        )
    }
}

/// Replaces the linker's TCP socket creation, connection, acceptance and destruction with
/// ones that hold the task's socket permits and meter the streams.
pub fn shadow_tcp(linker: &mut Linker<TaskState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.instance(TCP_CREATE_SOCKET)?.func_wrap(
        "create-tcp-socket",
        |mut store: StoreContextMut<'_, TaskState>, (family,): (IpAddressFamily,)| {
            let state = store.data_mut();
            let permit = match state.tcp.take() {
                Ok(permit) => permit,
                Err(refused) => return Ok((Err(refused),)),
            };
            let created = state.sockets().create_tcp_socket(family);
            let socket = match guest_error(created)? {
                Ok(socket) => socket,
                Err(code) => return Ok((Err(code),)),
            };
            state.tcp.held.insert(socket.rep(), permit);
            Ok((Ok(socket),))
        },
    )?;
    let mut tcp = linker.instance(TCP)?;
    tcp.func_wrap(
        "[method]tcp-socket.finish-connect",
        |mut store: StoreContextMut<'_, TaskState>, (socket,): (Resource<TcpSocket>,)| {
            let state = store.data_mut();
            let parent = Resource::<TcpSocket>::new_borrow(socket.rep());
            let connected = guest_error(state.sockets().finish_connect(socket))?;
            let (input, output) = match connected {
                Ok(streams) => streams,
                Err(code) => return Ok((Err(code),)),
            };
            let streams = meter_streams(state, &parent, input, output)?;
            Ok((Ok(streams),))
        },
    )?;
    tcp.func_wrap(
        "[method]tcp-socket.accept",
        |mut store: StoreContextMut<'_, TaskState>, (listener,): (Resource<TcpSocket>,)| {
            let state = store.data_mut();
            let (socket, input, output) = match guest_error(state.sockets().accept(listener))? {
                Ok(accepted) => accepted,
                Err(code) => return Ok((Err(code),)),
            };
            let permit = match state.tcp.take() {
                Ok(permit) => permit,
                Err(refused) => {
                    // Closes the connection just accepted: streams first, then the socket.
                    let table = state.ctx().table;
                    table.delete(input)?;
                    table.delete(output)?;
                    table.delete(socket)?;
                    return Ok((Err(refused),));
                }
            };
            state.tcp.held.insert(socket.rep(), permit);
            let (input, output) = meter_streams(state, &socket, input, output)?;
            Ok((Ok((socket, input, output)),))
        },
    )?;
    tcp.resource(
        "tcp-socket",
        ResourceType::host::<TcpSocket>(),
        |mut store: StoreContextMut<'_, TaskState>, rep: u32| {
            let state = store.data_mut();
            HostTcpSocket::drop(&mut state.sockets(), Resource::new_own(rep))?;
            state.tcp.held.remove(&rep);
            Ok(())
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// A socket call's outcome as the guest sees it (an error code), or the trap.
fn guest_error<T>(result: SocketResult<T>) -> wasmtime::Result<Result<T, ErrorCode>> {
    match result {
        Ok(value) => Ok(Ok(value)),
        Err(e) => Ok(Err(e.downcast()?)),
    }
}

/// Replaces the streams of `socket` with metered ones (children of the socket, as the
/// originals were).
fn meter_streams(
    state: &mut TaskState,
    socket: &Resource<TcpSocket>,
    input: Resource<DynInputStream>,
    output: Resource<DynOutputStream>,
) -> wasmtime::Result<(Resource<DynInputStream>, Resource<DynOutputStream>)> {
    let table = state.ctx().table;
    let (input, output) = (table.delete(input)?, table.delete(output)?);
    let (input, output) = state.tcp.metered(input, output);
    let table = state.ctx().table;
    Ok((
        table.push_child(input, socket)?,
        table.push_child(output, socket)?,
    ))
}

/// One stream of a TCP socket (input or output): the bytes that pass are counted in the
/// task's counters and taken from the connector's byte rate in that direction; while the
/// rate is overdrawn the stream lets nothing pass (reads return nothing, `check-write`
/// answers 0) and its pollable is not ready until the debt is paid.
struct Metered<S> {
    stream: S,
    counters: Arc<NetworkCounters>,
    rate: Option<Arc<ByteRate>>,
    /// When bytes may pass again (in the past once the debt is paid).
    resume: Option<Instant>,
}

impl<S> Metered<S> {
    fn new(stream: S, counters: Arc<NetworkCounters>, rate: Option<Arc<ByteRate>>) -> Self {
        Metered {
            stream,
            counters,
            rate,
            resume: None,
        }
    }

    fn paused(&self) -> bool {
        self.resume.is_some_and(|at| Instant::now() < at)
    }

    /// Takes `bytes` that passed from the rate.
    fn pace(&mut self, bytes: usize) {
        let wait = self.rate.as_ref().map_or(Duration::ZERO, |r| r.take(bytes));
        if !wait.is_zero() {
            self.resume = Some(Instant::now() + wait);
        }
    }
}

#[async_trait::async_trait]
impl<S: Pollable> Pollable for Metered<S> {
    async fn ready(&mut self) {
        if let Some(at) = self.resume {
            tokio::time::sleep_until(at).await;
        }
        self.stream.ready().await;
    }
}

#[async_trait::async_trait]
impl InputStream for Metered<DynInputStream> {
    fn read(&mut self, size: usize) -> Result<Bytes, StreamError> {
        if self.paused() {
            return Ok(Bytes::new());
        }
        let bytes = self.stream.read(size)?;
        self.counters.received(bytes.len());
        self.pace(bytes.len());
        Ok(bytes)
    }

    async fn cancel(&mut self) {
        self.stream.cancel().await;
    }
}

#[async_trait::async_trait]
impl OutputStream for Metered<DynOutputStream> {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        let length = bytes.len();
        self.stream.write(bytes)?;
        self.counters.sent(length);
        self.pace(length);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        self.stream.flush()
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        if self.paused() {
            return Ok(0);
        }
        self.stream.check_write()
    }

    async fn cancel(&mut self) {
        self.stream.cancel().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};

    use super::*;
    use crate::sandbox::http::RateTable;

    #[test]
    fn tcp_sockets_and_http_connections_draw_on_the_same_permits() {
        let mut slots = SocketSlots::new(2, Default::default(), Default::default(), "c/0".into());
        let http = slots.permits();
        let tcp = slots.take().unwrap();
        let connection = http.clone().try_acquire_owned().unwrap();
        assert!(matches!(slots.take(), Err(ErrorCode::NewSocketLimit)));
        assert!(http.clone().try_acquire_owned().is_err());
        drop(tcp);
        assert!(slots.take().is_ok(), "a closed socket frees its permit");
        drop(connection);
    }

    #[tokio::test]
    async fn tcp_streams_count_their_bytes_and_let_nothing_pass_while_the_rate_is_overdrawn() {
        let counters = Arc::new(NetworkCounters::default());
        let rates = RateTable::default().of("c", (1000, 1000));
        let slots = SocketSlots::new(1, counters.clone(), rates, "c/0".into());
        let (mut input, mut output) = slots.metered(
            Box::new(MemoryInputPipe::new(vec![b'i'; 3000])),
            Box::new(MemoryOutputPipe::new(1 << 20)),
        );

        // One second of bytes passes at once, and 500 more are owed.
        assert_eq!(input.read(1500).unwrap().len(), 1500);
        assert!(input.read(10).unwrap().is_empty(), "nothing passes in debt");
        let started = Instant::now();
        input.ready().await;
        assert!(started.elapsed() >= Duration::from_millis(400));
        assert_eq!(input.read(10).unwrap().len(), 10);

        output.write(Bytes::from(vec![b'o'; 1200])).unwrap();
        assert_eq!(output.check_write().unwrap(), 0, "nothing passes in debt");
        let started = Instant::now();
        output.ready().await;
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert!(output.check_write().unwrap() > 0);

        assert_eq!(counters.bytes_in.load(Ordering::Relaxed), 1510);
        assert_eq!(counters.bytes_out.load(Ordering::Relaxed), 1200);
    }
}
