//! The network limits over raw TCP (wasi:sockets, what `std::net::TcpStream` in a component
//! uses), not only wasi:http: a real `wasm-connect` process runs the hostile fixture
//! (`tests/hostile/`, built into `tests/fixtures/hostile/` by `tests/hostile/build.sh`)
//! against real listeners in this test process, granted their address in `network.allow`.
//!
//! - `limits.network.connections`: the task holds at most that many sockets; the one beyond
//!   is refused to the guest (`new-socket-limit`), the host logs the limit, and closing
//!   sockets frees their slots;
//! - `limits.network.bytes.out.per.second`: bytes written to a TCP stream are paced;
//! - UDP is not granted, even to an address `network.allow` lists, and a connector cannot
//!   listen for TCP connections (the listening address is not in its grant).

mod common;

use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::neighbourhood::{hostile_config, task_status, HOSTILE};
use common::{json_create as create, read_lines, serial, wait_for, Host, Workspace};
use serde_json::{json, Value};

/// A host running `hostile-source`, and the file its records go to (through a file sink).
fn host_with_hostile_sink() -> (Workspace, Host, std::path::PathBuf) {
    let ws = Workspace::new();
    ws.add_hostile_plugin("hostile-source.wasm");
    let host = ws.start();
    let output = ws.path("hostile-out.txt");
    let sink = json!({"connector.class": "file-sink", "file": output.display().to_string(), "topics": "hostile-out"});
    let answer = create(&host, "hostile-sink", sink);
    assert_eq!(answer.status, 201, "create hostile-sink: {}", answer.body);
    (ws, host, output)
}

fn create_hostile(host: &Host, config: Value) {
    let answer = create(host, HOSTILE, config);
    assert_eq!(answer.status, 201, "create {HOSTILE}: {}", answer.body);
}

/// Waits for at least `count` records from the hostile connector.
fn records(output: &std::path::Path, count: usize) -> Vec<String> {
    wait_for(Duration::from_secs(30), "the hostile records", || {
        read_lines(output).len() >= count
    });
    read_lines(output)
}

/// What one connection brought: its bytes, and when the first and the last came.
#[derive(Debug, Clone, Copy, Default)]
struct Received {
    bytes: usize,
    first: Option<Instant>,
    last: Option<Instant>,
}

/// A TCP listener on loopback that accepts every connection and reads it to its end, on
/// threads of its own.
struct Listener {
    addr: String,
    stop: Arc<AtomicBool>,
    /// Connections accepted so far, and open now.
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    /// What each connection brought, in the order they were accepted.
    received: Arc<Mutex<Vec<Received>>>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    fn start() -> Listener {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr").to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let (accepted, open) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let received = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, accepted, open, received) = (
                stop.clone(),
                accepted.clone(),
                open.clone(),
                received.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok((mut connection, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    connection.set_nonblocking(false).expect("blocking");
                    let index = accepted.fetch_add(1, Ordering::SeqCst);
                    open.fetch_add(1, Ordering::SeqCst);
                    received.lock().unwrap().push(Received::default());
                    let (open, received) = (open.clone(), received.clone());
                    std::thread::spawn(move || {
                        let mut buffer = vec![0u8; 64 << 10];
                        while let Ok(n @ 1..) = connection.read(&mut buffer) {
                            let now = Some(Instant::now());
                            let mut received = received.lock().unwrap();
                            let entry = &mut received[index];
                            entry.bytes += n;
                            entry.first = entry.first.or(now);
                            entry.last = now;
                        }
                        open.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            })
        };
        Listener {
            addr,
            stop,
            accepted,
            open,
            received,
            thread: Some(thread),
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn tcp_sockets_beyond_limits_network_connections_are_refused_and_closing_frees_them() {
    let _serial = serial();
    let listener = Listener::start();
    let addr = &listener.addr;
    let (_ws, host, output) = host_with_hostile_sink();
    let config = hostile_config(
        "hold-connections",
        json!({"addr": addr, "network.allow": addr, "connections": "20", "hold_ms": "2000",
               "limits.network.connections": "4"}),
    );
    create_hostile(&host, config);

    let held = records(&output, 1);
    assert!(held[0].starts_with("held 4 of 20: "), "{held:?}");
    // While the task holds its 4 connections, no 5th reaches the listener.
    wait_for(Duration::from_secs(5), "4 connections", || {
        listener.accepted() == 4
    });
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(read_lines(&output).len(), 1, "still holding");
    assert_eq!(listener.accepted(), 4, "a 5th connection got through");
    assert_eq!(listener.open(), 4);
    let log = host.log();
    assert!(
        log.contains("socket refused: the task holds 4 sockets, its limits.network.connections"),
        "the host log does not name the limit:\n{log}"
    );

    // Closing them frees their slots: the next connection is let through.
    let after = records(&output, 2);
    assert_eq!(after[1], format!("after close: connect {addr}: allowed"));
    wait_for(Duration::from_secs(5), "the 5th connection", || {
        listener.accepted() == 5
    });
    assert_eq!(task_status(&host, HOSTILE)["state"], "RUNNING");
}

#[test]
fn bytes_written_to_a_tcp_stream_are_paced_to_the_connectors_byte_rate() {
    let _serial = serial();
    let listener = Listener::start();
    let addr = &listener.addr;
    let (_ws, host, output) = host_with_hostile_sink();
    // 1 MiB at 256 KiB/s: the first second's 256 KiB pass at once, the other 768 KiB take 3 s.
    let config = hostile_config(
        "send-flood",
        json!({"addr": addr, "network.allow": addr, "bytes": "1048576",
               "limits.network.bytes.out.per.second": "256KiB"}),
    );
    create_hostile(&host, config);

    let verdict = records(&output, 1);
    let millis: u64 = verdict[0]
        .strip_prefix(&format!("sent 1048576 bytes to {addr} in "))
        .and_then(|rest| rest.strip_suffix(" ms"))
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("unexpected verdict {verdict:?}"));
    wait_for(Duration::from_secs(5), "every byte at the listener", || {
        listener.received.lock().unwrap().first().map(|r| r.bytes) == Some(1 << 20)
    });
    let received = listener.received.lock().unwrap()[0];
    let spread = received.last.unwrap() - received.first.unwrap();
    eprintln!("1 MiB sent in {millis} ms by the guest, received over {spread:?}");
    assert_eq!(received.bytes, 1 << 20);
    assert!(millis >= 2_500, "the guest sent 1 MiB in {millis} ms");
    assert!(
        spread >= Duration::from_millis(2_500),
        "received over {spread:?}"
    );
    assert!(millis < 10_000, "pacing is far too slow: {millis} ms");
}

#[test]
fn udp_is_not_granted_even_to_a_listed_address() {
    let _serial = serial();
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let addr = socket.local_addr().expect("addr").to_string();
    let (_ws, host, output) = host_with_hostile_sink();
    create_hostile(
        &host,
        hostile_config("udp", json!({"addr": addr, "network.allow": addr})),
    );
    let verdict = records(&output, 1);
    assert!(
        verdict[0].starts_with(&format!("udp {addr}: denied: ")),
        "{verdict:?}"
    );
    let mut buffer = [0u8; 64];
    assert!(
        socket.recv_from(&mut buffer).is_err(),
        "a datagram reached {addr}"
    );
}

/// Listening is checked against `network.allow` like a connect (wasmtime-wasi's `TcpListen`
/// check of the bound wildcard address): only an entry covering 0.0.0.0 (`0.0.0.0/0`)
/// would allow it.
#[test]
fn a_connector_cannot_listen_for_connections() {
    let _serial = serial();
    let (_ws, host, output) = host_with_hostile_sink();
    create_hostile(
        &host,
        hostile_config(
            "listen",
            json!({"network.allow": "127.0.0.1:9, 10.0.0.0/8"}),
        ),
    );
    let verdict = records(&output, 1);
    assert!(verdict[0].starts_with("listen: denied: "), "{verdict:?}");
}
