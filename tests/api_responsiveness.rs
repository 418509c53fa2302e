//! No API call waits on a guest (issue 10, finding 4), and answers describe what was stored
//! under concurrent changes (issue 18, findings 7 and 8). Each test runs a real
//! `wasm-connect` process:
//! - with the test-only `hostile-slow-sink` (`tests/hostile/`, every `put` sleeps for an
//!   hour): while its put sleeps, stop, update, delete and the legacy stop and stopAll each
//!   answer within [`ANSWER_LIMIT`], and so do `GET /connectors` and another connector's
//!   status throughout; an update's new task starts only after the old one has ended;
//! - with `hostile-source` `behaviour=sleep-poll`: stop and delete answer at once;
//! - `PATCH …/offsets` racing `PUT …/resume`: either the PATCH is refused, or the resumed
//!   task re-reads from the patched position (the sink receives the file again);
//! - creates and updates racing deletes: every answer agrees with the state that follows.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{
    call, json_create, json_get, json_send, read_lines, wait_for, Answer, Host, Workspace,
};
use serde_json::json;

/// The slowest answer accepted. The goal is 100 ms; the margin is for a loaded CI machine
/// (the bug this guards against made them take the whole 30 s call timeout).
const ANSWER_LIMIT: Duration = Duration::from_millis(500);
/// What `hostile-slow-sink` prints on stderr before each put sleeps, and at each start.
const PUT_SLEEPING: &str = "slow sink: put sleeping";
const SINK_STARTED: &str = "slow sink: started";
/// How long the probe keeps asking after a stop: past the host's stop grace (1 s), while
/// the stopped task's guest call is being cancelled.
const AFTER_STOP: Duration = Duration::from_millis(1500);

fn bare(host: &Host, method: &str, path: &str) -> Answer {
    call(method, &format!("{}{path}", host.kafka), None, &[])
}

/// Runs `f` and says how long it took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let value = f();
    (value, started.elapsed())
}

/// Writes `lines` lines `line <i>` to `path`; returns the file's length.
fn write_lines(path: &std::path::Path, lines: usize) -> usize {
    let text: String = (0..lines).map(|i| format!("line {i}\n")).collect();
    std::fs::write(path, &text).expect("write input");
    text.len()
}

/// Asks the JSON API for `paths` over and over until finished; reports the slowest answer
/// to each.
struct Probe {
    done: Arc<AtomicBool>,
    thread: JoinHandle<Vec<(String, Duration)>>,
}

impl Probe {
    fn start(host: &Host, paths: &[&str]) -> Probe {
        let done = Arc::new(AtomicBool::new(false));
        let base = host.kafka.clone();
        let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
        let flag = done.clone();
        let thread = std::thread::spawn(move || {
            let mut worst: Vec<(String, Duration)> =
                paths.iter().map(|p| (p.clone(), Duration::ZERO)).collect();
            while !flag.load(Ordering::Relaxed) {
                for (path, slowest) in worst.iter_mut() {
                    let (_, took) = timed(|| call("GET", &format!("{base}{path}"), None, &[]));
                    *slowest = (*slowest).max(took);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            worst
        });
        Probe { done, thread }
    }

    /// Stops asking; the slowest answer to each path.
    fn finish(self) -> Vec<(String, Duration)> {
        self.done.store(true, Ordering::Relaxed);
        self.thread.join().expect("probe thread")
    }
}

/// Asserts that every probed path answered within [`ANSWER_LIMIT`], printing the figures.
fn assert_probed_fast(what: &str, worst: &[(String, Duration)]) {
    for (path, slowest) in worst {
        eprintln!("  while {what}: slowest GET {path}: {slowest:?}");
        assert!(
            *slowest <= ANSWER_LIMIT,
            "GET {path} took {slowest:?} while {what}"
        );
    }
}

/// How many times the host logged `line`.
fn logged(host: &Host, line: &str) -> usize {
    host.log().matches(line).count()
}

/// The operations that must not wait for a guest call.
#[derive(Debug, Clone, Copy)]
enum Op {
    Stop,
    Update,
    Delete,
    LegacyStop,
    LegacyStopAll,
}

impl Op {
    /// Runs the operation on connector `name` and checks its answer.
    fn run(self, host: &Host, name: &str) {
        match self {
            Op::Stop => assert_eq!(
                bare(host, "PUT", &format!("/connectors/{name}/stop")).status,
                204
            ),
            Op::Update => {
                let answer = json_send(
                    host,
                    "PUT",
                    &format!("/connectors/{name}/config"),
                    &json!({"connector.class": "hostile-slow-sink", "topicNames": "slow", "updated": "yes"}),
                );
                assert_eq!(answer.status, 200, "update: {}", answer.body);
                assert_eq!(answer.json()["config"]["updated"], "yes", "{}", answer.body);
            }
            Op::Delete => assert_eq!(
                bare(host, "DELETE", &format!("/connectors/{name}")).status,
                204
            ),
            Op::LegacyStop => {
                assert_eq!(host.get_ok(&format!("/connectors/{name}/stop")), "success")
            }
            Op::LegacyStopAll => assert_eq!(host.get_ok("/connectors/stopAll"), "success"),
        }
    }
}

#[test]
fn sink_blocked_in_put_delays_no_api_call() {
    let ws = Workspace::new();
    ws.add_hostile_plugin("hostile-slow-sink.wasm");
    let host = ws.start();
    let (feed, other) = (ws.path("feed.txt"), ws.path("other.txt"));
    write_lines(&feed, 10);
    write_lines(&other, 10);
    // A feed that gives the slow sink records to put, and a bystander whose status is probed.
    for (name, file, topic) in [("feed", &feed, "slow"), ("bystander", &other, "other")] {
        let config = json!({"connector.class": "file-source", "file": file.display().to_string(), "topic": topic});
        assert_eq!(json_create(&host, name, config).status, 201);
        host.wait_running(name);
    }
    let slow = json!({"connector.class": "hostile-slow-sink", "topicNames": "slow"});
    for op in [
        Op::Stop,
        Op::Update,
        Op::Delete,
        Op::LegacyStop,
        Op::LegacyStopAll,
    ] {
        let puts = logged(&host, PUT_SLEEPING);
        let created = json_create(&host, "slow", slow.clone());
        assert_eq!(created.status, 201, "create slow: {}", created.body);
        wait_for(Duration::from_secs(20), "the slow sink's put", || {
            logged(&host, PUT_SLEEPING) > puts
        });
        let starts = logged(&host, SINK_STARTED);
        let probe = Probe::start(&host, &["/connectors", "/connectors/bystander/status"]);
        let ((), took) = timed(|| op.run(&host, "slow"));
        std::thread::sleep(AFTER_STOP);
        let worst = probe.finish();
        eprintln!("{op:?} while a put sleeps answered in {took:?}");
        assert!(
            took <= ANSWER_LIMIT,
            "{op:?} took {took:?} while a put slept"
        );
        assert_probed_fast(&format!("{op:?} stopped a sleeping put"), &worst);
        if let Op::Update = op {
            // The updated connector's task starts once the old one's put was cancelled,
            // never beside it.
            wait_for(Duration::from_secs(20), "the updated task's put", || {
                logged(&host, SINK_STARTED) > starts && logged(&host, PUT_SLEEPING) > puts + 1
            });
            let log = host.log();
            let cancelled = log.rfind("put was cancelled");
            let started = log.rfind(SINK_STARTED);
            assert!(
                cancelled.is_some() && cancelled < started,
                "the new task started before the old one's put was cancelled:\n{log}"
            );
        }
        if let Op::Stop | Op::Update = op {
            assert_eq!(bare(&host, "DELETE", "/connectors/slow").status, 204);
        }
        assert_eq!(
            json_get(&host, "/connectors/slow/status").status,
            404,
            "after {op:?}"
        );
    }
    assert_eq!(json_get(&host, "/connectors").json(), json!([]));
}

#[test]
fn source_blocked_in_poll_stops_and_is_deleted_at_once() {
    let ws = Workspace::new();
    ws.add_hostile_plugin("hostile-source.wasm");
    let host = ws.start();
    let config = json!({"connector.class": "hostile-source", "topic": "hostile-out", "behaviour": "sleep-poll"});
    assert_eq!(json_create(&host, "sleeper", config).status, 201);
    wait_for(Duration::from_secs(20), "sleeper running", || {
        json_get(&host, "/connectors/sleeper/status").json()["tasks"][0]["state"] == "RUNNING"
    });
    // The first poll starts right after the task does, and sleeps.
    std::thread::sleep(Duration::from_millis(300));
    let probe = Probe::start(&host, &["/connectors", "/connectors/sleeper/status"]);
    let (stopped, stop_took) = timed(|| bare(&host, "PUT", "/connectors/sleeper/stop"));
    assert_eq!(stopped.status, 204);
    let status = json_get(&host, "/connectors/sleeper/status").json();
    assert_eq!(status["connector"]["state"], "STOPPED", "{status}");
    std::thread::sleep(AFTER_STOP);
    assert_probed_fast("a sleeping poll was stopped", &probe.finish());
    wait_for(Duration::from_secs(10), "the poll's cancellation", || {
        host.log().contains("poll was cancelled")
    });
    // Resumed, it sleeps again; a delete does not wait for it either.
    assert_eq!(bare(&host, "PUT", "/connectors/sleeper/resume").status, 202);
    wait_for(Duration::from_secs(20), "sleeper running again", || {
        json_get(&host, "/connectors/sleeper/status").json()["tasks"][0]["state"] == "RUNNING"
    });
    std::thread::sleep(Duration::from_millis(300));
    let (deleted, delete_took) = timed(|| bare(&host, "DELETE", "/connectors/sleeper"));
    assert_eq!(deleted.status, 204);
    eprintln!("stop answered in {stop_took:?}, delete in {delete_took:?} while a poll slept");
    assert!(stop_took <= ANSWER_LIMIT, "stop took {stop_took:?}");
    assert!(delete_took <= ANSWER_LIMIT, "delete took {delete_took:?}");
}

/// Rounds of PATCH offsets racing resume.
const OFFSET_ROUNDS: usize = 20;

#[test]
fn offsets_patch_racing_resume_is_refused_or_re_read() {
    let ws = Workspace::new();
    let host = ws.start();
    let (input, output) = (ws.path("in.txt"), ws.path("out.txt"));
    let lines = 5;
    let length = write_lines(&input, lines).to_string();
    let file = input.display().to_string();
    let source = json!({"connector.class": "file-source", "file": file, "topic": "t"});
    let sink = json!({"connector.class": "file-sink", "file": output.display().to_string(), "topics": "t"});
    assert_eq!(json_create(&host, "src", source).status, 201);
    assert_eq!(json_create(&host, "sink", sink).status, 201);
    let at_end = || {
        json_get(&host, "/connectors/src/offsets").json()
            == json!({"offsets": [{"partition": {"partition": file}, "offset": {"position": length}}]})
    };
    wait_for(
        Duration::from_secs(20),
        "src at the end of its file",
        at_end,
    );
    let rewind =
        json!({"offsets": [{"partition": {"partition": file}, "offset": {"position": "0"}}]});
    let (mut accepted, mut refused) = (0, 0);
    for round in 0..OFFSET_ROUNDS {
        assert_eq!(bare(&host, "PUT", "/connectors/src/stop").status, 204);
        let (patch, resume) = std::thread::scope(|s| {
            let patch = s.spawn(|| json_send(&host, "PATCH", "/connectors/src/offsets", &rewind));
            // Vary which one arrives first.
            std::thread::sleep(Duration::from_millis((round % 4) as u64));
            let resume = s.spawn(|| bare(&host, "PUT", "/connectors/src/resume"));
            (
                patch.join().expect("patch thread"),
                resume.join().expect("resume thread"),
            )
        });
        assert_eq!(resume.status, 202, "resume: {}", resume.body);
        match patch.status {
            200 => accepted += 1,
            400 if patch.body.contains("STOPPED") => refused += 1,
            other => panic!("PATCH offsets answered {other}: {}", patch.body),
        }
        // Re-read from 0 after an accepted PATCH (else it never moves from 0 again), or
        // never rewound: either way back at the end.
        wait_for(
            Duration::from_secs(20),
            &format!("round {round}: src at the end after PATCH {}", patch.status),
            at_end,
        );
    }
    eprintln!("PATCH offsets racing resume: {accepted} accepted (re-read), {refused} refused");
    assert!(
        accepted > 0,
        "no PATCH was accepted in {OFFSET_ROUNDS} rounds"
    );
    // Each accepted rewind delivered the file once more, and nothing else did.
    let expected = lines * (1 + accepted);
    wait_for(Duration::from_secs(20), "the sink's lines", || {
        read_lines(&output).len() >= expected
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(read_lines(&output).len(), expected);
}

/// Rounds of creates and updates racing deletes.
const RACE_ROUNDS: usize = 45;

/// How a round creates: POST on an absent name, PUT on an absent or a present one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Race {
    PostAbsent,
    PutAbsent,
    PutPresent,
}

#[test]
fn creates_racing_deletes_answer_what_was_stored() {
    let ws = Workspace::new();
    let host = ws.start();
    let input = ws.path("in.txt");
    write_lines(&input, 3);
    let config = |marker: &str| json!({"connector.class": "file-source", "file": input.display().to_string(), "topic": "race", "marker": marker});
    let path = "/connectors/c";
    let mut orders = std::collections::BTreeMap::new();
    for round in 0..RACE_ROUNDS {
        let race = [Race::PostAbsent, Race::PutAbsent, Race::PutPresent][round % 3];
        let marker = round.to_string();
        if race == Race::PutPresent {
            let base = json_send(&host, "PUT", "/connectors/c/config", &config("base"));
            assert!([200, 201].contains(&base.status), "{}", base.body);
        } else {
            assert!([204, 404].contains(&bare(&host, "DELETE", path).status));
        }
        let (created, deleted) = std::thread::scope(|s| {
            let create = s.spawn(|| match race {
                Race::PostAbsent => json_create(&host, "c", config(&marker)),
                Race::PutAbsent | Race::PutPresent => {
                    json_send(&host, "PUT", "/connectors/c/config", &config(&marker))
                }
            });
            // Vary which one is stored first.
            std::thread::sleep(Duration::from_millis((round % 5 * 3) as u64));
            let delete = s.spawn(|| bare(&host, "DELETE", path));
            (
                create.join().expect("create thread"),
                delete.join().expect("delete thread"),
            )
        });
        let context = format!(
            "round {round} ({race:?}): create answered {} {}, delete {}",
            created.status, created.body, deleted.status
        );
        assert!(
            [200, 201].contains(&created.status),
            "a create or update racing a delete must succeed: {context}"
        );
        assert_eq!(
            created.json()["config"]["marker"],
            marker.as_str(),
            "{context}"
        );
        let after = json_get(&host, "/connectors/c/config");
        let present = match after.status {
            200 => {
                assert_eq!(after.json()["marker"], marker.as_str(), "{context}");
                true
            }
            404 => false,
            other => panic!("GET config answered {other}: {context}"),
        };
        // The delete came second exactly when nothing is left; the answers say which came first.
        let delete_first = match race {
            Race::PutPresent => {
                assert_eq!(deleted.status, 204, "{context}");
                created.status == 201
            }
            Race::PostAbsent | Race::PutAbsent => {
                assert_eq!(created.status, 201, "{context}");
                deleted.status == 404
            }
        };
        assert_eq!(
            present, delete_first,
            "state after the race contradicts: {context}"
        );
        *orders.entry((race, delete_first)).or_insert(0) += 1;
    }
    eprintln!("create/delete races (kind, delete first) → rounds: {orders:?}");
}
