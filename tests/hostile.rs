//! Containment of hostile connectors (issue 4): each test runs a real `wasm-connect` process
//! with the test-only `hostile-source` plugin (`tests/hostile/`, built into
//! `tests/fixtures/hostile/` by `tests/hostile/build.sh`) misbehaving one way, beside a
//! healthy file-source → topic → file-sink pipeline that keeps receiving lines, and asserts
//! that
//!   (a) the host process stays up,
//!   (b) the JSON API answers every `GET /connectors` within [`API_LATENCY_LIMIT`] throughout,
//!   (c) the healthy pipeline delivers every line, exactly once,
//!   (d) the hostile connector's status names the cause (`tasks[0].state == "FAILED"` and a
//!       `trace` with the reason), and for the capability probes
//!   (e) the probe's record says `denied` and nothing leaked.
//! Also: per-connector limits above the worker ceilings are refused, crash loops are
//! restarted with backoff and then quarantined, the records-per-second limit holds, guest
//! stdout/stderr reach the log tagged and rate-limited, and a plugin importing an unknown
//! interface is refused at load while the host keeps serving.
//!
//! The neighbourhood (host, healthy pipeline, latency probe) is `tests/common/neighbourhood.rs`.
//! The tests run one at a time (see [`serial`]): each measures API latency on a 2-core
//! machine, and two hosts with spinning guests side by side would measure each other.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use common::neighbourhood::{
    create_hostile, hostile_config, task_status, wait_failed_with, Neighbourhood, HOSTILE,
};
use common::{
    call, files_containing, json_create as create, json_get as get, read_lines, serial, wait_for,
    Host,
};
use serde_json::json;

/// The slowest answer to `GET /connectors` a test accepts while a hostile connector runs.
const API_LATENCY_LIMIT: Duration = Duration::from_millis(100);
/// The panic message of `behaviour=panic` (`tests/hostile/hostile-source`).
const PANIC_MESSAGE: &str = "hostile panic for testing";

/// Runs `hostile` beside the healthy pipeline (see [`Neighbourhood::contain`]), with every
/// `GET /connectors` answered within [`API_LATENCY_LIMIT`].
fn contained(extra_args: &[&str], hostile: impl FnOnce(&Neighbourhood)) -> Neighbourhood {
    Neighbourhood::contain(extra_args, API_LATENCY_LIMIT, hostile)
}

/// Waits for the one record a probing behaviour emits, and checks that it is alone.
fn probe_verdict(output: &Path) -> String {
    wait_for(
        Duration::from_secs(30),
        "the hostile probe's record",
        || !read_lines(output).is_empty(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let lines = read_lines(output);
    assert_eq!(
        lines.len(),
        1,
        "the probe emitted more than one record: {lines:?}"
    );
    lines[0].clone()
}

// ---------------------------------------------------------------------------------------
// Loops, memory, stack, panics and traps.

#[test]
fn loop_in_poll_is_stopped_by_the_cpu_budget() {
    let _serial = serial();
    contained(&[], |n| {
        create_hostile(
            n,
            hostile_config("loop-poll", json!({"limits.cpu.ms": "50"})),
        );
        wait_failed_with(
            &n.host,
            HOSTILE,
            &["cpu budget 50 ms exceeded in poll"],
            Duration::from_secs(30),
        );
    });
}

#[test]
fn loop_in_start_is_stopped_by_the_cpu_budget() {
    let _serial = serial();
    contained(&[], |n| {
        create_hostile(
            n,
            hostile_config("loop-start", json!({"limits.cpu.ms": "50"})),
        );
        wait_failed_with(
            &n.host,
            HOSTILE,
            &["cpu budget 50 ms exceeded in start"],
            Duration::from_secs(30),
        );
    });
}

#[test]
fn poll_blocked_without_using_cpu_is_stopped_by_the_call_timeout() {
    let _serial = serial();
    contained(&[], |n| {
        let created = Instant::now();
        create_hostile(
            n,
            hostile_config("sleep-poll", json!({"limits.call.timeout.ms": "2000"})),
        );
        wait_failed_with(
            &n.host,
            HOSTILE,
            &["poll did not return within 2000 ms"],
            Duration::from_secs(30),
        );
        let took = created.elapsed();
        assert!(
            took >= Duration::from_millis(2000),
            "failed after {took:?}, before its 2000 ms timeout"
        );
        assert!(
            took < Duration::from_millis(6000),
            "the 2000 ms call timeout fired only after {took:?}"
        );
    });
}

#[test]
fn loop_in_validate_fails_the_create_within_the_call_timeout_and_stores_nothing() {
    let _serial = serial();
    // A CPU ceiling well above the call timeout, so the wall-clock limit is what fires.
    contained(
        &["--call-timeout-ms", "2000", "--max-cpu-ms", "60000"],
        |n| {
            let started = Instant::now();
            let answer = create(&n.host, HOSTILE, hostile_config("loop-validate", json!({})));
            let took = started.elapsed();
            assert_eq!(
                answer.status, 500,
                "a looping validate must fail the create: {}",
                answer.body
            );
            let message = answer.json()["message"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(
                message.contains("validate") && message.contains("did not return within 2000 ms"),
                "{message}"
            );
            assert!(
                took < Duration::from_millis(4000),
                "the create took {took:?}, more than the call timeout + 2 s"
            );
            assert_eq!(
                get(&n.host, &format!("/connectors/{HOSTILE}")).status,
                404,
                "a failed create stored the connector"
            );

            // The legacy API says the same in its own words.
            let started = Instant::now();
            let legacy = hostile_config("loop-validate", json!({})).to_string();
            let (status, body) = n.host.create("hostile-legacy", &legacy);
            assert!(
                started.elapsed() < Duration::from_millis(4000),
                "the legacy create took {:?}",
                started.elapsed()
            );
            assert!(
                body.starts_with("failed") && body.contains("did not return within 2000 ms"),
                "legacy create: {status} {body}"
            );
            let listed = get(&n.host, "/connectors").json();
            assert_eq!(
                listed,
                json!(["healthy-sink", "healthy-source"]),
                "a failed create stored a connector"
            );
        },
    );
}

#[test]
fn memory_bomb_is_stopped_at_the_memory_limit() {
    let _serial = serial();
    contained(&[], |n| {
        create_hostile(
            n,
            hostile_config("memory-bomb", json!({"limits.memory": "64MiB"})),
        );
        wait_failed_with(
            &n.host,
            HOSTILE,
            &["memory limit 64 MiB exceeded"],
            Duration::from_secs(30),
        );
    });
}

#[test]
fn unbounded_recursion_fails_with_stack_exhausted() {
    let _serial = serial();
    contained(&[], |n| {
        create_hostile(n, hostile_config("recursion", json!({})));
        wait_failed_with(&n.host, HOSTILE, &["stack"], Duration::from_secs(30));
    });
}

#[test]
fn oversized_batch_is_refused_and_nothing_of_it_is_stored() {
    let _serial = serial();
    let n = contained(&[], |n| {
        let output = n.sink_hostile_records();
        // The connector returns 4 × max_records records of 1 KiB each.
        create_hostile(
            n,
            hostile_config("oversized-batch", json!({"limits.poll.records": "100"})),
        );
        let trace = wait_failed_with(
            &n.host,
            HOSTILE,
            &["more than the 100"],
            Duration::from_secs(30),
        );
        assert!(
            trace.contains("400 records"),
            "the trace does not say how many records came back: {trace}"
        );
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            read_lines(&output).len(),
            0,
            "records of a refused batch were delivered"
        );
    });
    let offsets = get(&n.host, &format!("/connectors/{HOSTILE}/offsets")).json();
    assert_eq!(
        offsets["offsets"],
        json!([]),
        "a refused batch committed a position: {offsets}"
    );
}

#[test]
fn panic_is_reported_with_its_message() {
    let _serial = serial();
    contained(&[], |n| {
        create_hostile(n, hostile_config("panic", json!({})));
        let trace = wait_failed_with(&n.host, HOSTILE, &[PANIC_MESSAGE], Duration::from_secs(30));
        assert!(trace.starts_with("guest panicked: "), "trace: {trace}");
    });
}

#[test]
fn crash_loop_is_restarted_with_backoff_then_quarantined_until_the_operator_restarts_it() {
    let _serial = serial();
    let extra = [
        "--restart-backoff-ms",
        "100",
        "--quarantine-after",
        "3",
        "--quarantine-window-s",
        "60",
    ];
    let n = contained(&extra, |n| {
        let created = Instant::now();
        create_hostile(n, hostile_config("trap-always", json!({})));
        let trace = wait_failed_with(&n.host, HOSTILE, &["quarantined"], Duration::from_secs(30));
        // Three failures with backoffs of 100 and 200 ms between them.
        let took = created.elapsed();
        assert!(
            took >= Duration::from_millis(300),
            "quarantined after {took:?}: no backoff between restarts"
        );
        assert!(
            trace.contains("unreachable"),
            "the quarantine trace does not name the trap: {trace}"
        );
        let failures = failures_logged(&n.host, HOSTILE);
        assert!(
            failures >= 3,
            "only {failures} failures were logged before the quarantine"
        );

        // Quarantined: no more restarts, even after many backoff periods.
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            let task = task_status(&n.host, HOSTILE);
            assert_eq!(
                task["state"], "FAILED",
                "a quarantined task left FAILED: {task}"
            );
            assert!(
                task["trace"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("quarantined"),
                "{task}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            failures_logged(&n.host, HOSTILE),
            failures,
            "a quarantined task was restarted"
        );

        // The operator's restart runs it again (and it fails again: that is all it does).
        let restart = call(
            "POST",
            &format!(
                "{}/connectors/{HOSTILE}/restart?includeTasks=true",
                n.host.kafka
            ),
            None,
            &[],
        );
        assert!(
            restart.status == 202 || restart.status == 204,
            "restart: {} {}",
            restart.status,
            restart.body
        );
        wait_for(
            Duration::from_secs(10),
            "a start after the operator's restart",
            || failures_logged(&n.host, HOSTILE) > failures,
        );
    });
    // The legacy API says the same thing.
    assert_eq!(
        n.host.get_ok(&format!("/connectors/{HOSTILE}/status")),
        "not running"
    );
}

/// How many `task failed` entries the host logged for task 0 of `connector`.
fn failures_logged(host: &Host, connector: &str) -> usize {
    let tag = format!("task={connector}/0");
    log_entries(&host.log())
        .iter()
        .filter(|entry| entry.contains("task failed") && entry.contains(&tag))
        .count()
}

/// The host log split into entries: a message spanning several lines (a wasm backtrace)
/// stays one entry, with the fields that follow it.
fn log_entries(log: &str) -> Vec<String> {
    let starts_entry = |line: &str| {
        let bytes = line.as_bytes();
        bytes.len() > 20
            && bytes[..4].iter().all(u8::is_ascii_digit)
            && bytes[4] == b'-'
            && bytes[10] == b'T'
    };
    let mut entries: Vec<String> = Vec::new();
    for line in log.lines() {
        match entries.last_mut() {
            Some(entry) if !starts_entry(line) => {
                entry.push('\n');
                entry.push_str(line);
            }
            _ => entries.push(line.to_string()),
        }
    }
    entries
}

// ---------------------------------------------------------------------------------------
// Capabilities: nothing by default.

/// The first line of the real `/etc/passwd`, for the leak checks.
fn passwd_first_line() -> Option<String> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines()
        .find(|line| !line.trim().is_empty())
        .map(str::to_string)
}

#[test]
fn reading_etc_passwd_is_denied() {
    let _serial = serial();
    let n = contained(&[], |n| {
        let output = n.sink_hostile_records();
        create_hostile(n, hostile_config("read-passwd", json!({})));
        let verdict = probe_verdict(&output);
        assert!(
            verdict.starts_with("read /etc/passwd: denied: "),
            "{verdict}"
        );
        assert_eq!(
            task_status(&n.host, HOSTILE)["state"],
            "RUNNING",
            "a denied read must not fail the task"
        );
    });
    let secret = passwd_first_line().expect("this machine has an /etc/passwd");
    let leaked = files_containing(n.ws.dir.path(), secret.as_bytes());
    assert!(
        leaked.is_empty(),
        "/etc/passwd content ended up in {leaked:?}"
    );
}

#[test]
fn writing_outside_the_granted_directories_is_denied() {
    let _serial = serial();
    let elsewhere = tempfile::tempdir().expect("temp dir");
    contained(&[], |n| {
        let output = n.sink_hostile_records();
        // The healthy pipeline's own directory: granted to the file connectors, not to this one.
        let target = n.ws.path("stolen.txt");
        create_hostile(
            n,
            hostile_config(
                "write-outside",
                json!({"target": target.display().to_string()}),
            ),
        );
        let verdict = probe_verdict(&output);
        assert!(
            verdict.starts_with(&format!("write {}: denied: ", target.display())),
            "{verdict}"
        );
        assert!(
            !target.exists(),
            "the hostile connector created {}",
            target.display()
        );

        let target = elsewhere.path().join("stolen.txt");
        let output = n.ws.path("hostile-out-2.txt");
        let sink = json!({"connector.class": "file-sink", "file": output.display().to_string(), "topics": "hostile-out-2"});
        assert_eq!(create(&n.host, "hostile-sink-2", sink).status, 201);
        let mut config = hostile_config(
            "write-outside",
            json!({"target": target.display().to_string()}),
        );
        config["topic"] = json!("hostile-out-2");
        assert_eq!(create(&n.host, "hostile-2", config).status, 201);
        let verdict = probe_verdict(&output);
        assert!(
            verdict.starts_with(&format!("write {}: denied: ", target.display())),
            "{verdict}"
        );
        assert!(
            !target.exists(),
            "the hostile connector created {}",
            target.display()
        );
    });
}

/// A listener on loopback, and whether anything connected to it.
fn loopback_listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr").to_string();
    (listener, addr)
}

fn someone_connected(listener: &TcpListener) -> bool {
    match listener.accept() {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(e) => panic!("accept: {e}"),
    }
}

#[test]
fn connecting_to_loopback_is_denied_by_default() {
    let _serial = serial();
    let (listener, addr) = loopback_listener();
    contained(&[], |n| {
        let output = n.sink_hostile_records();
        create_hostile(n, hostile_config("socket", json!({"addr": addr})));
        let verdict = probe_verdict(&output);
        assert!(
            verdict.starts_with(&format!("connect {addr}: denied: ")),
            "{verdict}"
        );
        assert!(
            !someone_connected(&listener),
            "the hostile connector reached {addr}"
        );
    });
}

#[test]
fn connecting_to_an_address_listed_in_network_allow_works() {
    let _serial = serial();
    let (listener, addr) = loopback_listener();
    let (_other, other_addr) = loopback_listener();
    contained(&[], |n| {
        let output = n.sink_hostile_records();
        // Listing one address grants that one only.
        let config = hostile_config("socket", json!({"addr": addr, "network.allow": other_addr}));
        create_hostile(n, config);
        let verdict = probe_verdict(&output);
        assert!(
            verdict.starts_with(&format!("connect {addr}: denied: ")),
            "{verdict}"
        );
        assert!(
            !someone_connected(&listener),
            "the hostile connector reached {addr}, which is not listed"
        );

        let output = n.ws.path("hostile-out-2.txt");
        let sink = json!({"connector.class": "file-sink", "file": output.display().to_string(), "topics": "hostile-out-2"});
        assert_eq!(create(&n.host, "hostile-sink-2", sink).status, 201);
        let mut config = hostile_config("socket", json!({"addr": addr, "network.allow": addr}));
        config["topic"] = json!("hostile-out-2");
        assert_eq!(create(&n.host, "hostile-2", config).status, 201);
        assert_eq!(probe_verdict(&output), format!("connect {addr}: allowed"));
        wait_for(
            Duration::from_secs(5),
            "the listed address to be reached",
            || someone_connected(&listener),
        );
    });
}

#[test]
fn the_environment_and_arguments_are_empty() {
    let _serial = serial();
    contained(&[], |n| {
        let output = n.sink_hostile_records();
        create_hostile(n, hostile_config("env", json!({})));
        assert_eq!(probe_verdict(&output), "env: 0 vars, args: 0");
    });
}

// ---------------------------------------------------------------------------------------
// Noisy neighbours, rates, logs, limits.

#[test]
fn cpu_spinning_neighbour_under_its_budget_keeps_running_beside_the_pipeline() {
    let _serial = serial();
    contained(&[], |n| {
        let output = n.sink_hostile_records();
        create_hostile(
            n,
            hostile_config("spin-cpu", json!({"spin_ms": "40", "limits.cpu.ms": "50"})),
        );
        wait_for(
            Duration::from_secs(30),
            "records from the spinning connector",
            || read_lines(&output).len() >= 20,
        );
        assert_eq!(
            task_status(&n.host, HOSTILE)["state"],
            "RUNNING",
            "{}",
            task_status(&n.host, HOSTILE)
        );
    });
}

#[test]
fn records_per_second_limit_caps_a_source() {
    let _serial = serial();
    contained(&[], |n| {
        let output = n.sink_hostile_records();
        // spin_ms 0: one record per poll, as fast as the host polls.
        create_hostile(
            n,
            hostile_config(
                "spin-cpu",
                json!({"spin_ms": "0", "limits.records.per.second": "50"}),
            ),
        );
        wait_for(Duration::from_secs(30), "the first records", || {
            !read_lines(&output).is_empty()
        });
        let started = Instant::now();
        let before = read_lines(&output).len();
        std::thread::sleep(Duration::from_secs(3));
        let delivered = read_lines(&output).len() - before;
        let allowed = 50.0 * started.elapsed().as_secs_f64();
        assert!(delivered > 0, "the rate-limited source delivered nothing");
        assert!(
            (delivered as f64) <= allowed * 1.2 + 50.0,
            "{delivered} records in {:?} with limits.records.per.second=50",
            started.elapsed()
        );
        assert_eq!(task_status(&n.host, HOSTILE)["state"], "RUNNING");
    });
}

#[test]
fn guest_stdout_and_stderr_reach_the_log_tagged_and_rate_limited() {
    let _serial = serial();
    contained(&[], |n| {
        let output = n.sink_hostile_records();
        // Each poll writes 1,000 lines to stdout and 1,000 to stderr, and emits one record.
        let chatty_lines = 1_000;
        let config = json!({"chatty_lines": chatty_lines.to_string()});
        create_hostile(n, hostile_config("chatty", config));
        wait_for(Duration::from_secs(30), "guest output in the log", || {
            let log = n.host.log();
            log.contains("hostile stdout line") && log.contains("hostile stderr line")
        });
        std::thread::sleep(Duration::from_secs(3));
        let log = n.host.log();
        let polls = read_lines(&output).len();
        let written = polls * 2 * chatty_lines;
        let logged: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("hostile stdout line") || l.contains("hostile stderr line"))
            .collect();
        for line in &logged {
            assert!(
                line.contains(&format!("{HOSTILE}/0")),
                "a guest line is not tagged with connector and task: {line}"
            );
        }
        eprintln!(
            "chatty: {polls} polls wrote {written} lines, the log kept {}",
            logged.len()
        );
        assert!(polls >= 2, "only {polls} polls of the chatty connector");
        assert!(
            logged.len() * 2 < written,
            "{} of {written} guest lines logged: stdout/stderr are not rate-limited",
            logged.len()
        );
        assert_eq!(task_status(&n.host, HOSTILE)["state"], "RUNNING");
    });
}

#[test]
fn limits_above_the_worker_ceilings_are_refused_at_create() {
    let _serial = serial();
    let ceilings = [
        "--max-memory-mib",
        "128",
        "--max-cpu-ms",
        "500",
        "--call-timeout-ms",
        "5000",
        "--max-poll-records",
        "1000",
        "--max-poll-bytes",
        "1048576",
        "--max-records-per-second",
        "1000",
        "--max-tasks",
        "2",
    ];
    let n = Neighbourhood::start(&ceilings);
    let over = [
        ("limits.memory", "256MiB"),
        ("limits.memory", "1GiB"),
        ("limits.cpu.ms", "501"),
        ("limits.call.timeout.ms", "5001"),
        ("limits.poll.records", "1001"),
        ("limits.poll.bytes", "1048577"),
        ("limits.records.per.second", "1001"),
        ("limits.tasks", "3"),
    ];
    for (key, value) in over {
        let answer = create(
            &n.host,
            HOSTILE,
            hostile_config("quiet", json!({key: value})),
        );
        assert_eq!(
            answer.status, 400,
            "{key}={value} above its ceiling was not refused: {}",
            answer.body
        );
        let message = answer.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            message.contains("exceeds the worker ceiling") && message.contains(key),
            "{key}={value}: {message}"
        );
        assert_eq!(
            get(&n.host, &format!("/connectors/{HOSTILE}")).status,
            404,
            "{key}={value}: a refused create stored it"
        );
    }
    // At the ceilings (and in other units) is fine.
    let at = json!({
        "limits.memory": "131072KiB", "limits.cpu.ms": "500", "limits.call.timeout.ms": "5000",
        "limits.poll.records": "1000", "limits.poll.bytes": "1048576", "limits.records.per.second": "1000",
        "limits.tasks": "2",
    });
    let answer = create(&n.host, HOSTILE, hostile_config("quiet", at));
    assert_eq!(
        answer.status, 201,
        "limits at the ceilings were refused: {}",
        answer.body
    );
    n.host.wait_running(HOSTILE);
    n.assert_host_alive();
}

#[test]
fn a_plugin_importing_an_unknown_interface_is_refused_and_the_host_keeps_serving() {
    let _serial = serial();
    let n = contained(&[], |n| {
        let log = n.host.log();
        let line = log
            .lines()
            .find(|line| line.contains("broken plugin") && line.contains("hostile-import.wasm"))
            .unwrap_or_else(|| {
                panic!("no broken-plugin line for hostile-import.wasm in the log:\n{log}")
            });
        assert!(
            line.contains("imports something this host does not provide"),
            "{line}"
        );
        let answer = create(
            &n.host,
            "imports",
            json!({"connector.class": "hostile-import", "topic": "t"}),
        );
        assert_eq!(answer.status, 400, "{}", answer.body);
        assert!(answer.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no connector plugin named 'hostile-import'"));
    });
    let plugins = get(&n.host, "/connector-plugins").json();
    let classes: Vec<&str> = plugins
        .as_array()
        .expect("plugin list")
        .iter()
        .filter_map(|p| p["class"].as_str())
        .collect();
    assert!(
        classes.contains(&"hostile-source"),
        "the loadable fixture is missing: {plugins}"
    );
    assert!(
        !classes.contains(&"hostile-import"),
        "the broken plugin is listed as loaded: {plugins}"
    );
}
