//! Process and listener hardening (issue 18, findings 2–6) against a real `wasm-connect`
//! process: a private data dir, no empty auth token, slow clients that can neither hold a
//! connection nor block shutdown, and both APIs answering while idle connections exceed the
//! open-file limit.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{append, read_lines, wait_for, Host, Workspace};

/// The permission bits of `path`.
fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// A file source (with a literal password in its config) into topic `lines` and a file sink
/// out of it.
fn create_pipeline(host: &Host, input: &Path, output: &Path) {
    let source = format!(
        r#"{{"connector-class":"file-source","topic":"lines","filename":"{}","password":"hunter2"}}"#,
        input.display()
    );
    let sink = format!(
        r#"{{"connector-class":"file-sink","topicNames":"lines","filename":"{}"}}"#,
        output.display()
    );
    assert_eq!(host.create("in", &source), (200, "success".to_string()));
    assert_eq!(host.create("out", &sink), (200, "success".to_string()));
}

fn numbered_lines(range: std::ops::Range<usize>) -> String {
    range.map(|i| format!("line {i}\n")).collect()
}

fn expected(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("line {i}")).collect()
}

#[test]
fn the_data_dir_and_its_files_are_readable_by_the_owner_only() {
    let workspace = Workspace::new();
    let input = workspace.path("in.txt");
    let output = workspace.path("out.txt");
    std::fs::write(&input, numbered_lines(0..10)).expect("write input");
    let host = workspace.start();
    create_pipeline(&host, &input, &output);
    wait_for(Duration::from_secs(30), "the pipeline's output", || {
        read_lines(&output) == expected(0..10)
    });
    let data = workspace.data_dir();
    let (state, topics, log) = (
        data.join("state.redb"),
        data.join("topics"),
        data.join("topics/lines.log"),
    );
    assert_eq!(mode(&data), 0o700, "a new data dir");
    assert_eq!(mode(&topics), 0o700, "a new topics dir");
    assert_eq!(mode(&state), 0o600, "a new state.redb");
    assert_eq!(mode(&log), 0o600, "a new topic log");
    let cache = std::fs::read_dir(data.join("plugin-cache")).expect("plugin cache");
    for entry in cache.flatten() {
        assert_eq!(mode(&entry.path()), 0o600, "{}", entry.path().display());
    }
    assert!(host.terminate().success());

    // A data dir left open to other users (an older version, a copy) is closed at start.
    set_mode(&data, 0o755);
    set_mode(&topics, 0o775);
    set_mode(&state, 0o644);
    set_mode(&log, 0o664);
    let host = workspace.start();
    let log_text = host.log();
    assert_eq!(
        log_text.matches("was readable by other users").count(),
        4,
        "{log_text}"
    );
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&topics), 0o700);
    assert_eq!(mode(&state), 0o600);
    assert_eq!(mode(&log), 0o600);
    for (path, was, now) in [
        (&data, "0755", "0700"),
        (&state, "0644", "0600"),
        (&log, "0664", "0600"),
    ] {
        let line = format!(
            "{} was readable by other users (mode {was}); changed to {now}",
            path.display()
        );
        assert!(log_text.contains(&line), "log lacks {line:?}:\n{log_text}");
    }
}

/// Runs the binary with `args` and `env`, expecting it to exit on its own within 30 s.
fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let workspace = Workspace::new();
    let mut command = Command::new(env!("CARGO_BIN_EXE_wasm-connect"));
    command
        .args(["--http-port", "0", "--kafka-api-port", "0", "--data-dir"])
        .arg(workspace.data_dir())
        .arg("--plugin-dir")
        .arg(workspace.plugin_dir())
        .args(args)
        .env_remove("WASM_CONNECT_AUTH_TOKEN")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("start wasm-connect");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "wasm-connect {args:?} {env:?} kept running instead of refusing to start:\n{}",
                String::from_utf8_lossy(&output.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn an_empty_auth_token_is_refused_from_the_flag_and_from_the_environment() {
    for (args, env) in [
        (&["--auth-token", ""][..], &[][..]),
        (&[][..], &[("WASM_CONNECT_AUTH_TOKEN", "")][..]),
    ] {
        let output = run_to_exit(args, env);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} {env:?}: exit 0");
        assert!(
            stderr.contains("--auth-token")
                && stderr.contains("WASM_CONNECT_AUTH_TOKEN")
                && stderr.contains("empty token would turn authentication off"),
            "{args:?} {env:?}: the error does not name the flag, the variable and the cause: {stderr}"
        );
    }
    // A token a client cannot send is refused too, without repeating it.
    let output = run_to_exit(&[], &[("WASM_CONNECT_AUTH_TOKEN", "s3cret with spaces")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("visible ASCII characters only") && !stderr.contains("s3cret"),
        "{stderr}"
    );
}

/// Connects to `base` (`http://host:port`) and sends `text`, keeping the connection open.
fn send_partial(base: &str, text: &str) -> TcpStream {
    let address = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).expect("connect");
    stream.write_all(text.as_bytes()).expect("send");
    stream
}

/// Reads until the server closes the connection (or resets it); panics when it is still
/// open after `limit`. Returns what was received.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> String {
    stream.set_read_timeout(Some(limit)).expect("read timeout");
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "the server kept the connection open for {limit:?} ({e}); received {:?}",
                String::from_utf8_lossy(&received)
            ),
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

const HALF_SENT_HEADERS: &str = "GET /getClusterInfo HTTP/1.1\r\nHost: x\r\n";
/// A request to the JSON API whose body stops after 8 of the 100 bytes announced.
const HALF_SENT_BODY: &str = "POST /connectors HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\":";

#[test]
fn the_server_closes_connections_that_send_no_complete_request_or_stay_idle() {
    let workspace = Workspace::new();
    let host = Host::start_with(
        &workspace.data_dir(),
        &workspace.plugin_dir(),
        &["--header-read-timeout-s", "1"],
    );
    for (base, path) in [(&host.base, "/getClusterInfo"), (&host.kafka, "/")] {
        let mut half_sent = send_partial(base, HALF_SENT_HEADERS);
        let mut silent = send_partial(base, "");
        read_until_closed(&mut half_sent, Duration::from_secs(10));
        read_until_closed(&mut silent, Duration::from_secs(10));

        // A keep-alive connection gets its answer, then is closed once idle for the timeout.
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut kept_alive = send_partial(base, &request);
        let answer = read_until_closed(&mut kept_alive, Duration::from_secs(10));
        assert!(
            answer.starts_with("HTTP/1.1 200")
                && !answer.to_ascii_lowercase().contains("connection: close"),
            "{base}: {answer}"
        );
    }
    // A body that never completes gets an answer naming the timeout, then the connection
    // is closed.
    let mut trickled = send_partial(&host.kafka, HALF_SENT_BODY);
    let answer = read_until_closed(&mut trickled, Duration::from_secs(10));
    assert!(
        answer.starts_with("HTTP/1.1 400")
            && answer
                .contains("the request body did not arrive within 1 s (--header-read-timeout-s)"),
        "{answer}"
    );
}

#[test]
fn shutdown_is_bounded_by_slow_clients_and_the_tasks_still_commit() {
    let workspace = Workspace::new();
    let input = workspace.path("in.txt");
    let output = workspace.path("out.txt");
    std::fs::write(&input, numbered_lines(0..1000)).expect("write input");
    let start =
        |extra: &[&str]| Host::start_with(&workspace.data_dir(), &workspace.plugin_dir(), extra);
    let host = start(&["--header-read-timeout-s", "60", "--shutdown-timeout-s", "2"]);
    create_pipeline(&host, &input, &output);
    wait_for(Duration::from_secs(30), "the pipeline's output", || {
        read_lines(&output) == expected(0..1000)
    });
    // Half-sent headers on both APIs, and a request whose body never completes: its handler
    // is in flight (for the 60 s body deadline), so only the bound ends it.
    let _slow = [
        send_partial(&host.base, HALF_SENT_HEADERS),
        send_partial(&host.kafka, HALF_SENT_HEADERS),
        send_partial(&host.kafka, HALF_SENT_BODY),
    ];
    std::thread::sleep(Duration::from_millis(300));
    let stopping = Instant::now();
    let (status, log) = host.terminate_logged();
    let took = stopping.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(
        took < Duration::from_secs(12),
        "took {took:?} to exit with a 2 s shutdown timeout"
    );
    // Only the request in its handler held shutdown up (for the bound); half-sent headers
    // were closed at once.
    let bounded = log
        .find("Kafka Connect JSON API: answers still in flight on 1 connections 2 s after the stop signal (--shutdown-timeout-s): closing them")
        .unwrap_or_else(|| panic!("the log does not show the bound:\n{log}"));
    assert!(!log.contains("REST API: answers still in flight"), "{log}");
    assert!(
        log[bounded..].contains("shutting down: stopping tasks"),
        "{log}"
    );

    // The tasks committed: after a restart nothing is written twice, and new lines follow.
    append(&input, &numbered_lines(1000..1100));
    let host = start(&[]);
    wait_for(
        Duration::from_secs(30),
        "the lines appended after the restart",
        || read_lines(&output).len() >= 1100,
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(read_lines(&output), expected(0..1100));
    drop(host);
}

/// The soft and hard "Max open files" of process `pid`.
fn open_file_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("Max open files");
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|word| word.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

#[test]
fn both_apis_answer_while_idle_connections_exceed_the_open_file_limit() {
    let workspace = Workspace::new();
    // Soft limit 200, hard limit 300: the host raises the soft one to 300 and must then hold
    // 2 × 250 idle connections without running out of descriptors.
    let wrapper = [
        "sh",
        "-c",
        "ulimit -Sn 200 && ulimit -Hn 300 && exec \"$@\"",
        "sh",
    ];
    let host = Host::start_via(
        &wrapper,
        &workspace.data_dir(),
        &workspace.plugin_dir(),
        &[],
    );
    assert_eq!(open_file_limits(host.pid()), (300, 300));
    let mut idle = Vec::new();
    for i in 0..250 {
        for base in [&host.base, &host.kafka] {
            // Half of them never send a byte, half stop in the middle of their headers.
            let text = if i % 2 == 0 { "" } else { HALF_SENT_HEADERS };
            idle.push(send_partial(base, text));
        }
    }
    host.get_ok("/getClusterInfo");
    let answer = common::json_get(&host, "/");
    assert_eq!(answer.status, 200, "{}", answer.body);
    let log = host.log();
    assert!(
        log.contains("open-file limit raised from 200 to the hard limit 300"),
        "{log}"
    );
    assert!(
        log.contains("connections open, the cap (--max-connections"),
        "the log does not name the cap:\n{log}"
    );
    assert!(!log.contains("cannot accept"), "{log}");
    drop(idle);
}
