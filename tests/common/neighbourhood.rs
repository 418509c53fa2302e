//! A neighbourhood for hostile connectors: a real host whose plugin dir holds the bundled
//! plugins and the hostile fixtures (`tests/fixtures/hostile/`, built by
//! `tests/hostile/build.sh`), a healthy file pipeline fed by a writer thread, and a probe
//! timing the JSON API. Shared by `tests/hostile.rs` and `tests/guest_caps.rs`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{
    json_create as create, json_get as get, pids_with_arg, read_lines, try_append, wait_for, Host,
    Workspace,
};

/// Lines the healthy pipeline receives while the hostile connector misbehaves (at least).
pub const NEIGHBOUR_LINES: usize = 20_000;
/// Name of the hostile connector in every test.
pub const HOSTILE: &str = "hostile";

/// `tests/fixtures/hostile/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/hostile")
        .join(name)
}

// ---------------------------------------------------------------------------------------
// The JSON API.

/// A `hostile-source` config: `behaviour`, its own topic, plus `extra` keys.
pub fn hostile_config(behaviour: &str, extra: Value) -> Value {
    let mut config = json!({"connector.class": "hostile-source", "topic": "hostile-out", "behaviour": behaviour});
    for (key, value) in extra.as_object().expect("extra keys are an object") {
        config[key] = value.clone();
    }
    config
}

/// The first task's status object of `name` (Null when there is none yet).
pub fn task_status(host: &Host, name: &str) -> Value {
    let answer = get(host, &format!("/connectors/{name}/status"));
    if answer.status != 200 {
        return Value::Null;
    }
    answer.json()["tasks"][0].clone()
}

/// Waits until task 0 of `name` is FAILED with a trace that contains every one of `words`;
/// returns the trace. Panics with the last status seen.
pub fn wait_failed_with(host: &Host, name: &str, words: &[&str], limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    let mut last = Value::Null;
    loop {
        let task = task_status(host, name);
        if task["state"] == "FAILED" {
            let trace = task["trace"].as_str().unwrap_or_default();
            if words.iter().all(|word| trace.contains(word)) {
                eprintln!("{name} task 0 FAILED: {trace}");
                return trace.to_string();
            }
        }
        if !task.is_null() {
            last = task;
        }
        assert!(Instant::now() < deadline, "task 0 of {name} was not FAILED with a trace containing {words:?}; last status: {last}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------
// The neighbourhood: a host, a healthy pipeline, a writer feeding it, a latency probe.

/// A host whose plugin dir holds the bundled plugins and the hostile fixtures, running a
/// healthy file pipeline (`healthy-in` → topic `healthy` → `healthy-out`).
pub struct Neighbourhood {
    pub ws: Workspace,
    pub host: Host,
    pub input: PathBuf,
    pub output: PathBuf,
    /// Lines appended to `input` so far.
    pub written: Arc<Mutex<usize>>,
}

impl Neighbourhood {
    pub fn start(extra_args: &[&str]) -> Neighbourhood {
        let ws = Workspace::new();
        for name in [
            "hostile-source.wasm",
            "hostile-import.wasm",
            "hostile-raw.wasm",
        ] {
            std::fs::copy(fixture(name), ws.plugin_dir().join(name)).unwrap_or_else(|e| {
                panic!("copy fixture {name} (run tests/hostile/build.sh): {e}")
            });
        }
        let host = Host::start_with(&ws.data_dir(), &ws.plugin_dir(), extra_args);
        let (input, output) = (ws.path("healthy-in.txt"), ws.path("healthy-out.txt"));
        let n = Neighbourhood {
            ws,
            host,
            input,
            output,
            written: Arc::new(Mutex::new(0)),
        };
        n.append(1_000);
        let source = json!({"connector.class": "file-source", "file": n.input.display().to_string(), "topic": "healthy"});
        let sink = json!({"connector.class": "file-sink", "file": n.output.display().to_string(), "topics": "healthy"});
        for (name, config) in [("healthy-source", source), ("healthy-sink", sink)] {
            let answer = create(&n.host, name, config);
            assert_eq!(answer.status, 201, "create {name}: {}", answer.body);
        }
        wait_for(
            Duration::from_secs(30),
            "the healthy pipeline's first lines",
            || read_lines(&n.output).len() == 1_000,
        );
        n
    }

    /// Appends `count` numbered lines to the healthy input.
    pub fn append(&self, count: usize) {
        append_lines(&self.input, &self.written, count);
    }

    /// Starts a thread that appends 500 lines every 25 ms until `stop` is set and at least
    /// `minimum` lines were appended; returns how many it appended.
    pub fn spawn_writer(&self, minimum: usize, stop: Arc<AtomicBool>) -> JoinHandle<usize> {
        let (input, written) = (self.input.clone(), self.written.clone());
        std::thread::spawn(move || {
            let mut appended = 0;
            while appended < minimum || !stop.load(Ordering::Relaxed) {
                // Fails only once a failed test removed the workspace: stop quietly then.
                if try_append_lines(&input, &written, 500).is_err() {
                    break;
                }
                appended += 500;
                std::thread::sleep(Duration::from_millis(25));
            }
            appended
        })
    }

    /// Waits for every appended line in the healthy output, then checks them one by one.
    pub fn assert_pipeline_delivered_everything(&self) {
        let total = *self
            .written
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        wait_for(
            Duration::from_secs(120),
            &format!("{total} lines through the healthy pipeline"),
            || read_lines(&self.output).len() >= total,
        );
        std::thread::sleep(Duration::from_millis(200)); // a duplicate would arrive after the last line
        let lines = read_lines(&self.output);
        assert_eq!(
            lines.len(),
            total,
            "the healthy sink has {} lines, {total} were written",
            lines.len()
        );
        if let Some(i) = (0..total).find(|&i| lines[i] != healthy_line(i)) {
            panic!(
                "healthy line {i} is {:?}, expected {:?}",
                lines[i],
                healthy_line(i)
            );
        }
    }

    pub fn assert_host_alive(&self) {
        assert!(
            !pids_with_arg(&self.ws.data_dir()).is_empty(),
            "the wasm-connect process is gone"
        );
        assert_eq!(
            get(&self.host, "/health").status,
            200,
            "the host does not answer /health"
        );
    }

    /// Lines the hostile connector's records were written to, by a file sink this adds.
    pub fn sink_hostile_records(&self) -> PathBuf {
        let output = self.ws.path("hostile-out.txt");
        let config = json!({"connector.class": "file-sink", "file": output.display().to_string(), "topics": "hostile-out"});
        let answer = create(&self.host, "hostile-sink", config);
        assert_eq!(answer.status, 201, "create hostile-sink: {}", answer.body);
        output
    }
}

pub fn healthy_line(i: usize) -> String {
    format!("healthy line {i:07} {}", "h".repeat(40))
}

pub fn append_lines(path: &Path, written: &Mutex<usize>, count: usize) {
    try_append_lines(path, written, count)
        .unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
}

/// Appends `count` numbered lines; `written` counts only lines that were appended.
pub fn try_append_lines(path: &Path, written: &Mutex<usize>, count: usize) -> std::io::Result<()> {
    let mut written = written
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let text: String = (*written..*written + count)
        .map(|i| healthy_line(i) + "\n")
        .collect();
    try_append(path, &text)?;
    *written += count;
    Ok(())
}

/// What the latency probe saw.
pub struct Latencies {
    pub requests: usize,
    pub max: Duration,
    pub slow: Vec<Duration>,
    pub errors: Vec<String>,
}

/// A thread that sends `GET /connectors` to the JSON API back to back and times each answer.
pub struct LatencyProbe {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Latencies>,
}

impl LatencyProbe {
    /// Counts as slow every answer that takes longer than `limit`.
    pub fn start(host: &Host, limit: Duration) -> LatencyProbe {
        let url = format!("{}/connectors", host.kafka);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let agent = ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(10))
                .build();
            let mut seen = Latencies {
                requests: 0,
                max: Duration::ZERO,
                slow: Vec::new(),
                errors: Vec::new(),
            };
            while !stopped.load(Ordering::Relaxed) {
                let started = Instant::now();
                let result = agent.get(&url).call();
                let took = started.elapsed();
                seen.requests += 1;
                seen.max = seen.max.max(took);
                if took > limit {
                    seen.slow.push(took);
                }
                match result {
                    Ok(response) if response.status() == 200 => {
                        let _ = response.into_string();
                    }
                    Ok(response) => seen.errors.push(format!("status {}", response.status())),
                    Err(e) => seen.errors.push(e.to_string()),
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            seen
        });
        LatencyProbe { stop, thread }
    }

    pub fn finish(self) -> Latencies {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("latency probe")
    }
}

/// Runs `hostile` (which creates the hostile connector and checks its cause) beside the
/// healthy pipeline with a writer and the latency probe running, then checks that the host
/// stayed up, that every `GET /connectors` answered within `latency_limit`, and that the
/// healthy pipeline delivered every line exactly once.
/// Returns the neighbourhood for checks after the fact.
impl Neighbourhood {
    pub fn contain(
        extra_args: &[&str],
        latency_limit: Duration,
        hostile: impl FnOnce(&Neighbourhood),
    ) -> Neighbourhood {
        let n = Neighbourhood::start(extra_args);
        let probe = LatencyProbe::start(&n.host, latency_limit);
        let stop_writer = Arc::new(AtomicBool::new(false));
        let writer = n.spawn_writer(NEIGHBOUR_LINES, stop_writer.clone());
        hostile(&n);
        stop_writer.store(true, Ordering::Relaxed);
        let appended = writer.join().expect("writer");
        n.assert_pipeline_delivered_everything();
        let latencies = probe.finish();
        n.assert_host_alive();
        eprintln!(
        "neighbour: {appended} lines appended while hostile; API: {} requests, max {:?}, {} over {latency_limit:?}",
        latencies.requests,
        latencies.max,
        latencies.slow.len()
    );
        assert!(
            latencies.errors.is_empty(),
            "the JSON API failed {} times: {:?}",
            latencies.errors.len(),
            latencies.errors
        );
        assert!(
            latencies.requests >= 20,
            "only {} API requests were made",
            latencies.requests
        );
        assert!(
            latencies.slow.is_empty(),
            "{} of {} `GET /connectors` took over {latency_limit:?} (max {:?}): {:?}",
            latencies.slow.len(),
            latencies.requests,
            latencies.max,
            latencies.slow
        );
        n
    }
}

/// Creates the hostile connector and expects 201.
pub fn create_hostile(n: &Neighbourhood, config: Value) {
    let answer = create(&n.host, HOSTILE, config);
    assert_eq!(answer.status, 201, "create {HOSTILE}: {}", answer.body);
}
