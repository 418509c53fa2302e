//! Caps on what a guest makes the host keep (issue 10, findings 3, 5 and 8, and the disk
//! budget): each test runs a real `wasm-connect` process with a hostile fixture
//! (`tests/hostile/`, built into `tests/fixtures/hostile/` by `tests/hostile/build.sh`)
//! that really attempts to make the host store, log or write without bound, beside a
//! healthy file pipeline, and asserts that the host stays up, its JSON API answers every
//! `GET /connectors` within [`API_LATENCY_LIMIT`], the healthy pipeline delivers every
//! line, the hostile task's status names the limit and the key to raise it, and what the
//! host keeps (memory, open files, topic files, log, disk) stays bounded.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::neighbourhood::{
    create_hostile, hostile_config, task_status, wait_failed_with, Neighbourhood, HOSTILE,
};
use common::{json_get as get, pids_with_arg, serial};
use serde_json::{json, Value};

/// The slowest answer to `GET /connectors` accepted while a hostile connector runs.
const API_LATENCY_LIMIT: Duration = Duration::from_secs(2);
/// How long a hostile task may take to hit its cap.
const HIT_WITHIN: Duration = Duration::from_secs(30);
/// The most resident memory the host may use in these tests (it grew by 1.7 GiB before).
const MAX_RSS_KIB: u64 = 400 << 10;
/// Host flags that restart a failed task soon, for tests that watch it fail again.
const QUICK_RESTART: [&str; 2] = ["--restart-backoff-ms", "100"];

fn contained(extra_args: &[&str], hostile: impl FnOnce(&Neighbourhood)) -> Neighbourhood {
    Neighbourhood::contain(extra_args, API_LATENCY_LIMIT, hostile)
}

/// The host process's id (the one whose command line names this data dir).
fn host_pid(n: &Neighbourhood) -> u32 {
    let pids = pids_with_arg(&n.ws.data_dir());
    assert_eq!(pids.len(), 1, "one host process expected: {pids:?}");
    pids[0]
}

/// Resident memory of `pid` in KiB (`VmRSS` of /proc/<pid>/status).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Open file descriptors of `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |fds| fds.count())
}

fn assert_memory_bounded(n: &Neighbourhood) {
    let rss = rss_kib(host_pid(n));
    eprintln!("host RSS: {} MiB", rss >> 10);
    assert!(rss > 0 && rss < MAX_RSS_KIB, "host RSS is {rss} KiB");
}

/// Waits until `name` has failed (with a trace holding `words`) at least `times` times in
/// a row of restarts, so the task was given the chance to keep going after a restart.
fn wait_failed_again(n: &Neighbourhood, words: &[&str], times: usize) -> String {
    let mut trace = String::new();
    for _ in 0..times {
        trace = wait_failed_with(&n.host, HOSTILE, words, HIT_WITHIN);
        // Until the restart the status stays FAILED.
        let restarted = Instant::now() + Duration::from_secs(5);
        while task_status(&n.host, HOSTILE)["state"] == "FAILED" && Instant::now() < restarted {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    trace
}

/// Topic log files in the data dir.
fn topic_files(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("topics")).map_or(0, |entries| entries.count())
}

// ---------------------------------------------------------------------------------------
// Finding 3: positions, partitions and topics.

#[test]
fn long_positions_fail_the_task_naming_the_limit_and_nothing_is_stored() {
    let _serial = serial();
    let n = contained(&QUICK_RESTART, |n| {
        create_hostile(n, hostile_config("fresh-partitions", json!({})));
        let trace = wait_failed_again(n, &["limits.position.bytes 4 KiB"], 2);
        assert!(trace.contains("65000 bytes"), "{trace}");
        let offsets = get(&n.host, &format!("/connectors/{HOSTILE}/offsets"));
        assert_eq!(offsets.status, 200, "{}", offsets.body);
        assert_eq!(
            offsets.json()["offsets"],
            json!([]),
            "no position was stored"
        );
        assert_memory_bounded(n);
    });
    let state = std::fs::metadata(n.ws.data_dir().join("state.redb")).map_or(0, |m| m.len());
    assert!(state < 16 << 20, "state.redb grew to {state} bytes");
}

#[test]
fn fresh_partitions_stop_at_the_partition_limit_and_what_was_stored_is_kept() {
    let _serial = serial();
    contained(&[], |n| {
        let config = json!({"position_bytes": "8", "limits.partitions": "1000"});
        create_hostile(n, hostile_config("fresh-partitions", config));
        let trace = wait_failed_with(&n.host, HOSTILE, &["limits.partitions"], HIT_WITHIN);
        assert!(trace.contains("positions in 1000 partitions"), "{trace}");
        let started = Instant::now();
        let offsets = get(&n.host, &format!("/connectors/{HOSTILE}/offsets"));
        assert_eq!(offsets.status, 200, "{}", offsets.body);
        assert!(started.elapsed() < API_LATENCY_LIMIT);
        let stored = offsets.json()["offsets"].as_array().map_or(0, Vec::len);
        assert_eq!(stored, 1000, "the positions stored before the cap are kept");
        assert_memory_bounded(n);
    });
}

#[test]
fn records_to_topics_the_config_does_not_name_fail_the_task() {
    let _serial = serial();
    let n = contained(&[], |n| {
        create_hostile(n, hostile_config("topic-per-record", json!({})));
        let trace = wait_failed_with(
            &n.host,
            HOSTILE,
            &["\"hostile-out-0\"", "topics.allow"],
            HIT_WITHIN,
        );
        eprintln!("{trace}");
    });
    // The healthy topic only: no record of the hostile connector reached a topic.
    assert_eq!(topic_files(&n.ws.data_dir()), 1);
}

#[test]
fn a_topic_per_record_stops_at_the_worker_topic_cap_with_few_files_open() {
    let _serial = serial();
    let args = [
        "--max-topics",
        "100",
        "--max-open-topic-files",
        "8",
        QUICK_RESTART[0],
        QUICK_RESTART[1],
    ];
    let n = contained(&args, |n| {
        let pid = host_pid(n);
        let fds_before = open_fds(pid);
        let config = json!({"topics.allow": "hostile-out-[0-9]+"});
        create_hostile(n, hostile_config("topic-per-record", config));
        let trace = wait_failed_again(n, &["more than --max-topics 100"], 2);
        eprintln!("{trace}");
        let fds = open_fds(pid);
        eprintln!("open fds: {fds_before} before, {fds} at the cap");
        assert!(
            fds <= fds_before + 16,
            "{fds} fds open, {fds_before} before"
        );
        assert_memory_bounded(n);
    });
    let files = topic_files(&n.ws.data_dir());
    assert!(files <= 100, "{files} topic files");
}

// ---------------------------------------------------------------------------------------
// Finding 5: the `log` host call.

#[test]
fn a_log_flood_is_rate_limited_escaped_and_the_task_keeps_running() {
    let _serial = serial();
    let flood = Duration::from_secs(4);
    let n = contained(&[], |n| {
        create_hostile(n, hostile_config("log-flood", json!({})));
        std::thread::sleep(flood);
        assert_eq!(task_status(&n.host, HOSTILE)["state"], "RUNNING");
    });
    let log = n.host.log();
    let logged = log.matches("hostile log line").count();
    eprintln!(
        "{logged} guest log lines kept, host log {} KiB",
        log.len() >> 10
    );
    let seconds = flood.as_secs() as usize + 30; // generous: the pipeline may run on after
    assert!(logged > 0, "no guest log line reached the host log");
    assert!(
        logged <= 100 * seconds,
        "{logged} guest log lines were logged"
    );
    assert!(log.contains("dropped"), "the drops are not reported");
    assert!(
        log.contains("\\u{1b}[31mforged"),
        "control characters are not escaped"
    );
    assert!(
        !log.contains('\u{1b}'),
        "a raw escape character reached the log"
    );
    assert!(
        !log.lines().any(|line| line.starts_with("forged")),
        "the guest forged a log line"
    );
    assert!(log.len() < 8 << 20, "the host log is {} bytes", log.len());
}

// ---------------------------------------------------------------------------------------
// Finding 8: batches whose count does not match their records.

fn raw_config(behaviour: &str) -> Value {
    json!({"connector.class": "hostile-raw", "topic": "hostile-out", "behaviour": behaviour})
}

#[test]
fn a_batch_with_count_zero_and_bytes_fails_the_task() {
    let _serial = serial();
    let n = contained(&[], |n| {
        create_hostile(n, raw_config("zero-count-batch"));
        wait_failed_with(
            &n.host,
            HOSTILE,
            &["poll declared 0 records but returned 1"],
            HIT_WITHIN,
        );
    });
    assert_eq!(topic_files(&n.ws.data_dir()), 1, "nothing reached a topic");
}

#[test]
fn a_batch_declaring_more_records_than_it_holds_fails_the_task() {
    let _serial = serial();
    contained(&[], |n| {
        create_hostile(n, raw_config("count-too-high"));
        wait_failed_with(
            &n.host,
            HOSTILE,
            &["poll declared 2 records but returned 1"],
            HIT_WITHIN,
        );
    });
}

// ---------------------------------------------------------------------------------------
// The disk budget.

#[test]
fn filling_a_granted_file_fails_the_task_at_the_disk_budget() {
    let _serial = serial();
    contained(&[], |n| {
        let dir = n.ws.path("fill");
        std::fs::create_dir(&dir).expect("fill dir");
        let file = dir.join("fill.bin");
        let config = json!({"fill_file": file.display().to_string(), "limits.disk.bytes": "8MiB"});
        create_hostile(n, hostile_config("disk-fill", config));
        let trace = wait_failed_with(
            &n.host,
            HOSTILE,
            &["disk budget 8 MiB exceeded", "limits.disk.bytes"],
            HIT_WITHIN,
        );
        eprintln!("{trace}");
        // Checked before the restart (1 s later), which may write up to the budget again.
        let size = std::fs::metadata(&file).map_or(0, |m| m.len());
        assert!(size <= 8 << 20, "the granted file grew to {size} bytes");
        assert!(size >= 7 << 20, "the task stopped early, at {size} bytes");
    });
}

// ---------------------------------------------------------------------------------------
// The limits table drives the flags.

#[test]
fn every_limit_has_its_flag_in_help() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wasm-connect"))
        .arg("--help")
        .output()
        .expect("run wasm-connect --help");
    let help = String::from_utf8_lossy(&output.stdout);
    for limit in wasm_connect::sandbox::LIMITS {
        let flag = format!("--{} <", limit.flag);
        assert!(help.contains(&flag), "--help lacks {flag}: {help}");
        let scope = limit
            .key
            .map_or("worker only".to_string(), |k| format!("`{k}`"));
        assert!(help.contains(&scope), "--help does not name {scope}");
    }
}
