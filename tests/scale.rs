//! One worker, many connectors (issue 17), against a real `wasm-connect` process:
//! - the number of task instances follows `--max-instances`: a create beyond it is refused
//!   with a message naming the flag, validation still answers at the ceiling (it has slots
//!   of its own), and a slot freed by a stopped connector serves the next create;
//! - idle sources back off: the CPU time the process spends over an idle window with
//!   sources on empty files is far below the same sources polled every 10 ms
//!   (`limits.poll.idle.ms`), and a line appended after a long idle spell still arrives;
//! - a file source idle for longer than its quiet spell waits for a change in its file's
//!   directory: with a poll ceiling of 10 minutes (`--max-poll-watched-ms`), an appended line
//!   arrives within seconds, and so does an unterminated last line once its file is quiet.

mod common;

use std::time::{Duration, Instant};

use common::{cpu_time, json_create, json_get, json_send, wait_for, Host, Workspace};
use serde_json::json;

/// Creates file source `name` on `file` (JSON API), with extra config keys `extra`.
fn create_source(host: &Host, ws: &Workspace, name: &str, extra: &[(&str, &str)]) -> (u16, String) {
    let file = ws.path(&format!("{name}.txt"));
    if !file.exists() {
        std::fs::write(&file, "").expect("input file");
    }
    let mut config = json!({
        "connector.class": "file-source",
        "file": file.to_string_lossy(),
        "topic": format!("t-{name}"),
    });
    for (key, value) in extra {
        config[*key] = json!(value);
    }
    let answer = json_create(host, name, config);
    (answer.status, answer.body)
}

/// Waits until every task of `name` is RUNNING.
fn wait_running(host: &Host, name: &str) {
    wait_for(Duration::from_secs(30), &format!("{name} RUNNING"), || {
        let status = json_get(host, &format!("/connectors/{name}/status")).json();
        status["tasks"]
            .as_array()
            .is_some_and(|tasks| !tasks.is_empty() && tasks.iter().all(|t| t["state"] == "RUNNING"))
    });
}

/// The CPU time `host` spends over `window`.
fn cpu_over(host: &Host, window: Duration) -> Duration {
    let before = cpu_time(host.pid());
    std::thread::sleep(window);
    cpu_time(host.pid()) - before
}

#[test]
fn creates_beyond_max_instances_are_refused_naming_the_flag() {
    let ws = Workspace::new();
    let host = Host::start_with(&ws.data_dir(), &ws.plugin_dir(), &["--max-instances", "3"]);
    for name in ["a", "b", "c"] {
        let (status, body) = create_source(&host, &ws, name, &[]);
        assert_eq!(status, 201, "create {name}: {body}");
        wait_running(&host, name);
    }
    // At the ceiling, validation still runs the connector's own check (slots of its own).
    let answer = json_send(
        &host,
        "PUT",
        "/connector-plugins/file-source/config/validate",
        &json!({"connector.class": "file-source", "topic": "t"}),
    );
    assert_eq!(
        answer.status, 200,
        "validate at the ceiling: {}",
        answer.body
    );
    assert!(
        answer.body.contains("Request config key: filename"),
        "the connector's own validation ran: {}",
        answer.body
    );
    let (status, body) = create_source(&host, &ws, "d", &[]);
    assert_eq!(
        status, 400,
        "a create beyond the ceiling is refused: {body}"
    );
    assert!(
        body.contains("--max-instances 3") && body.contains("4 would be more"),
        "the refusal names the flag and the count: {body}"
    );
    // The legacy API gives the same reason.
    let (_, body) = host.create(
        "e",
        &json!({"connector-class": "file-source", "filename": ws.path("a.txt").to_string_lossy(), "topic": "x"}).to_string(),
    );
    assert!(body.contains("--max-instances 3"), "legacy API: {body}");
    assert_eq!(
        json_get(&host, "/connectors/d").status,
        404,
        "nothing stored"
    );
    // A stopped connector frees its slot: the next create runs (its task waits for the
    // stopping one to end).
    let stop = json_send(&host, "PUT", "/connectors/a/stop", &json!({}));
    assert_eq!(stop.status, 204, "stop a: {}", stop.body);
    let (status, body) = create_source(&host, &ws, "d", &[]);
    assert_eq!(status, 201, "create after a stop: {body}");
    wait_running(&host, "d");
    // Resuming the stopped one now has no slot: its task fails naming the flag.
    let resume = json_send(&host, "PUT", "/connectors/a/resume", &json!({}));
    assert_eq!(resume.status, 202, "resume a: {}", resume.body);
    wait_for(
        Duration::from_secs(30),
        "a's task to fail for lack of a slot",
        || {
            let status = json_get(&host, "/connectors/a/status").json();
            status["tasks"][0]["trace"]
                .as_str()
                .is_some_and(|trace| trace.contains("--max-instances 3"))
        },
    );
}

#[test]
fn idle_sources_back_off_and_still_pick_up_new_lines() {
    const SOURCES: usize = 20;
    const WINDOW: Duration = Duration::from_secs(4);
    // Sources polled every 10 ms at most, for comparison (their connector key).
    let busy = {
        let ws = Workspace::new();
        let host = ws.start();
        for i in 0..SOURCES {
            let (status, body) = create_source(
                &host,
                &ws,
                &format!("s{i}"),
                &[
                    ("limits.poll.idle.ms", "10"),
                    ("limits.poll.watched.ms", "10"),
                ],
            );
            assert_eq!(status, 201, "{body}");
        }
        (0..SOURCES).for_each(|i| wait_running(&host, &format!("s{i}")));
        std::thread::sleep(Duration::from_secs(1));
        cpu_over(&host, WINDOW)
    };
    // The same sources with the worker's default ceiling (1 s).
    let ws = Workspace::new();
    let host = ws.start();
    for i in 0..SOURCES {
        let (status, body) = create_source(&host, &ws, &format!("s{i}"), &[]);
        assert_eq!(status, 201, "{body}");
    }
    (0..SOURCES).for_each(|i| wait_running(&host, &format!("s{i}")));
    // 1 + 2 + … + 512 ms: the pause reaches its ceiling within about a second.
    std::thread::sleep(Duration::from_secs(2));
    let idle = cpu_over(&host, WINDOW);
    eprintln!(
        "{SOURCES} idle sources over {WINDOW:?}: CPU {idle:?} (ceiling 1 s) vs {busy:?} (10 ms)"
    );
    assert!(
        idle * 5 <= busy,
        "idle sources at the 1 s ceiling used {idle:?} of CPU over {WINDOW:?}, not well below {busy:?} at 10 ms"
    );
    // After the idle spell, a new line still arrives.
    let appended = Instant::now();
    common::append(&ws.path("s0.txt"), "hello\n");
    wait_for(
        Duration::from_secs(10),
        "the appended line to be read",
        || {
            json_get(&host, "/connectors/s0/offsets")
                .body
                .contains("\"6\"")
        },
    );
    eprintln!("line read {:?} after it was appended", appended.elapsed());
}

#[test]
fn a_watched_idle_source_wakes_on_a_change_in_its_directory() {
    let ws = Workspace::new();
    // Polled every 10 minutes at most once quiet: only the change notification can be prompt.
    let host = Host::start_with(
        &ws.data_dir(),
        &ws.plugin_dir(),
        &["--max-poll-watched-ms", "600000"],
    );
    let (status, body) = create_source(&host, &ws, "w", &[]);
    assert_eq!(status, 201, "{body}");
    wait_running(&host, "w");
    let offset_is = |offset: &str| {
        json_get(&host, "/connectors/w/offsets")
            .body
            .contains(&format!("\"{offset}\""))
    };
    for (text, offset) in [("hello\n", "6"), ("again\n", "12")] {
        // Past the quiet spell (3 s) and the climb to the 1 s ceiling: waiting for a change.
        std::thread::sleep(Duration::from_secs(5));
        let appended = Instant::now();
        common::append(&ws.path("w.txt"), text);
        wait_for(Duration::from_secs(3), "the appended line", || {
            offset_is(offset)
        });
        eprintln!(
            "{text:?} read {:?} after it was appended",
            appended.elapsed()
        );
    }
    // A last line without terminator is delivered once its file has been quiet for 1 s,
    // although nothing changes after it is appended.
    std::thread::sleep(Duration::from_secs(5));
    let appended = Instant::now();
    common::append(&ws.path("w.txt"), "tail");
    wait_for(Duration::from_secs(5), "the unterminated line", || {
        offset_is("16")
    });
    eprintln!(
        "unterminated line read {:?} after it was appended",
        appended.elapsed()
    );
}
