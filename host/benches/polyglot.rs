//! Polyglot benchmark (issue 16): connectors written in Python and JavaScript beside the Rust
//! file connectors, in real host processes, on the same data.
//!
//! 1. Start of an 18 MB Python component: spawn-to-ready of a host whose plugin dir holds
//!    only `python-csv-source`, cold (compiled) and cached (the compiled-code cache of the
//!    first start), minus the spawn-to-ready of a host with no plugin (the process itself).
//! 2. Records/s per language: N records (`{"id":…,"name":…,"city":…}`) through a source →
//!    topic → sink pipeline of one language: Rust `file-source` → `file-sink` (JSON lines),
//!    Python `python-csv-source` → `python-jsonl-sink` (the same rows as CSV), JavaScript
//!    `js-source` → `js-sink` (JSON lines); timed from the creates to the last output line,
//!    one pipeline at a time.
//!
//! Run: `cargo bench --bench polyglot` after `scripts/build-polyglot.sh`
//! (`POLYGLOT_RECORDS`, default 100,000; `POLYGLOT_STARTS`, default 3).
//! Goal: a cached start of the Python component under 50 ms.

mod common;
#[path = "../../tests/common/mod.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::env_count;
use harness::{json_create, Host, Workspace};
use serde_json::{json, Value};

/// A Python component takes seconds of CPU to compile: room for a busy machine.
const COMPILE_TIMEOUT: &[&str] = &["--compile-timeout-s", "600"];

fn main() {
    let records = env_count("POLYGLOT_RECORDS", 100_000);
    let starts = env_count("POLYGLOT_STARTS", 3);
    println!("polyglot benchmark: {records} records per language, {starts} starts");

    let (cold, cached, bare) = start_times(starts);
    println!(
        "python-csv-source (18 MB) host start, spawn to ready: cold median {} ms, cached median {} ms, no plugin {} ms: the cached component costs {} ms (goal < 50 ms)",
        cold.as_millis(),
        cached.as_millis(),
        bare.as_millis(),
        cached.saturating_sub(bare).as_millis()
    );

    let ws = Workspace::new();
    for name in [
        "python-csv-source",
        "python-jsonl-sink",
        "js-source",
        "js-sink",
    ] {
        std::fs::copy(fixture(name), ws.plugin_dir().join(format!("{name}.wasm")))
            .unwrap_or_else(|e| panic!("copy {name}: {e}"));
    }
    write_inputs(&ws, records);
    let host = Host::start_with(&ws.data_dir(), &ws.plugin_dir(), COMPILE_TIMEOUT);
    let rust = rate(&host, &ws, records, Pipeline::RUST);
    println!("rust       file-source → file-sink:               {rust:>10.0} records/s");
    for pipeline in [Pipeline::PYTHON, Pipeline::JS] {
        let rate = rate(&host, &ws, records, pipeline);
        println!(
            "{:<10} {:<40} {rate:>10.0} records/s ({:.1}x slower than rust)",
            pipeline.language,
            format!("{} → {}:", pipeline.source, pipeline.sink),
            rust / rate
        );
    }
    assert!(host.terminate().success(), "the host did not stop cleanly");
}

fn fixture(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../tests/fixtures/polyglot/{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-polyglot.sh",
        path.display()
    );
    path
}

/// Spawn-to-ready medians: python-csv-source cold, the same cached, and no plugin at all.
fn start_times(starts: usize) -> (Duration, Duration, Duration) {
    let ws = Workspace::new();
    let (python, empty) = (ws.host_path("python"), ws.host_path("empty"));
    std::fs::create_dir_all(&python).expect("plugin dir");
    std::fs::create_dir_all(&empty).expect("plugin dir");
    std::fs::copy(
        fixture("python-csv-source"),
        python.join("python-csv-source.wasm"),
    )
    .expect("copy python-csv-source");
    let (mut cold, mut cached, mut bare) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..starts {
        let data = ws.host_path(&format!("data-{run}"));
        cold.push(timed_start(&data, &python, "; compiled in "));
        cached.push(timed_start(
            &data,
            &python,
            "; code from the compiled-code cache",
        ));
        bare.push(timed_start(
            &ws.host_path(&format!("bare-{run}")),
            &empty,
            "",
        ));
    }
    (median(&mut cold), median(&mut cached), median(&mut bare))
}

/// Spawn-to-ready of one host; its log must show the plugin loaded as `origin` says.
fn timed_start(data: &Path, plugins: &Path, origin: &str) -> Duration {
    let started = Instant::now();
    let host = Host::start_with(data, plugins, COMPILE_TIMEOUT);
    let took = started.elapsed();
    let log = host.log();
    assert!(
        origin.is_empty() || log.contains(origin),
        "expected {origin:?} at this start:\n{log}"
    );
    // The SIGTERM handler is installed just after `ready` (see benches/plugins.rs).
    std::thread::sleep(Duration::from_millis(100));
    assert!(host.terminate().success(), "the host did not stop cleanly");
    took
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// One language's pipeline: plugin names, input and output files.
#[derive(Clone, Copy)]
struct Pipeline {
    language: &'static str,
    source: &'static str,
    sink: &'static str,
    input: &'static str,
}

impl Pipeline {
    const RUST: Pipeline = Pipeline {
        language: "rust",
        source: "file-source",
        sink: "file-sink",
        input: "in.jsonl",
    };
    const PYTHON: Pipeline = Pipeline {
        language: "python",
        source: "python-csv-source",
        sink: "python-jsonl-sink",
        input: "in.csv",
    };
    const JS: Pipeline = Pipeline {
        language: "javascript",
        source: "js-source",
        sink: "js-sink",
        input: "in.jsonl",
    };
}

/// The same rows as JSON lines and as CSV with a header.
fn write_inputs(ws: &Workspace, records: usize) {
    let (mut jsonl, mut csv) = (String::new(), String::from("id,name,city\n"));
    for i in 0..records {
        jsonl.push_str(&format!(
            "{{\"id\":\"{i}\",\"name\":\"name-{i}\",\"city\":\"city-{i}\"}}\n"
        ));
        csv.push_str(&format!("{i},name-{i},city-{i}\n"));
    }
    std::fs::write(ws.path("in.jsonl"), jsonl).expect("write in.jsonl");
    std::fs::write(ws.path("in.csv"), csv).expect("write in.csv");
}

/// Records/s of `pipeline`: from its creates to `records` lines in its output file.
fn rate(host: &Host, ws: &Workspace, records: usize, pipeline: Pipeline) -> f64 {
    let (topic, output) = (
        pipeline.language,
        ws.path(&format!("out-{}", pipeline.language)),
    );
    let source: Value = json!({"connector.class": pipeline.source, "topic": topic,
                               "filename": ws.path(pipeline.input)});
    let sink: Value = json!({"connector.class": pipeline.sink, "topics": topic,
                             "topicNames": topic, "filename": output});
    // A Python component compiles for seconds; the host is ready before that (it lists the
    // file as loading), so the clock starts once both plugins are loaded.
    harness::wait_for(
        Duration::from_secs(600),
        &format!("{} and {} loaded", pipeline.source, pipeline.sink),
        || {
            let plugins = harness::json_get(host, "/connector-plugins").body;
            [pipeline.source, pipeline.sink]
                .iter()
                .all(|p| plugins.contains(&format!("\"{p}\"")))
        },
    );
    let started = Instant::now();
    for (name, config) in [("source", source), ("sink", sink)] {
        let name = format!("{}-{name}", pipeline.language);
        let answer = json_create(host, &name, config);
        assert_eq!(answer.status, 201, "create {name}: {}", answer.body);
    }
    harness::wait_for(
        Duration::from_secs(600),
        &format!("{records} lines from the {} pipeline", pipeline.language),
        || lines(&output) >= records,
    );
    records as f64 / started.elapsed().as_secs_f64()
}

fn lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|bytes| bytes.iter().filter(|b| **b == b'\n').count())
        .unwrap_or(0)
}
