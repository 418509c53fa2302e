//! Polyglot benchmark (issue 16): connectors written in Python and JavaScript beside the Rust
//! file connectors, in real host processes, on the same data.
//!
//! 1. Start of an 18 MB Python component: spawn-to-ready of a host whose plugin dir holds
//!    only `python-csv-source`, cold (compiled; until it is loaded) and cached (the
//!    compiled-code cache of the first start), beside a cached host start with only the
//!    bare Rust `file-source` (120 kB) and one with no plugin (the process itself), the three
//!    kinds of start taking turns.
//! 2. Records/s per language: N records (`{"id":…,"name":…,"city":…}`) through a source →
//!    topic → sink pipeline of one language: Rust `file-source` → `file-sink` (JSON lines),
//!    Python `python-csv-source` → `python-jsonl-sink` (the same rows as CSV), JavaScript
//!    `js-source` → `js-sink` (JSON lines); timed from the creates to the last output line,
//!    one pipeline at a time.
//!
//! Run: `cargo bench --bench polyglot` after `scripts/build-polyglot.sh`
//! (`POLYGLOT_RECORDS`, default 100,000; `POLYGLOT_STARTS`, default 3; `POLYGLOT_STARTS_ONLY=1`
//! measures the starts only).
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

    let starts = start_times(starts);
    println!(
        "host start, spawn to ready, median: python-csv-source (18 MB) cold {} ms, cached {} ms; \
         rust file-source cached {} ms; no plugin {} ms",
        starts.cold.as_millis(),
        starts.python.as_millis(),
        starts.rust.as_millis(),
        starts.bare.as_millis(),
    );
    println!(
        "cached python component costs {} ms over the rust one, {} ms over no plugin (goal < 50 ms)",
        starts.python.saturating_sub(starts.rust).as_millis(),
        starts.python.saturating_sub(starts.bare).as_millis(),
    );
    if std::env::var_os("POLYGLOT_STARTS_ONLY").is_some() {
        return;
    }

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

/// Medians of host starts.
struct Starts {
    /// The Python component compiled: spawn until it is loaded.
    cold: Duration,
    /// The Python component from the compiled-code cache: spawn to ready.
    python: Duration,
    /// The Rust `file-source` from the compiled-code cache: spawn to ready.
    rust: Duration,
    /// No plugin: spawn to ready.
    bare: Duration,
}

/// `starts` rounds of: python-csv-source cold, python-csv-source cached, file-source cached,
/// no plugin.
fn start_times(starts: usize) -> Starts {
    let ws = Workspace::new();
    let dir = |name: &str, plugin: Option<(&str, PathBuf)>| {
        let dir = ws.host_path(name);
        std::fs::create_dir_all(&dir).expect("plugin dir");
        if let Some((name, from)) = plugin {
            std::fs::copy(from, dir.join(format!("{name}.wasm"))).expect("copy plugin");
        }
        dir
    };
    let python = dir(
        "python",
        Some(("python-csv-source", fixture("python-csv-source"))),
    );
    let rust = dir(
        "rust",
        Some((
            "file-source",
            harness::bundled_plugins().join("file-source.wasm"),
        )),
    );
    let empty = dir("empty", None);
    // A file younger than the reload settle time (200 ms) is waited for.
    std::thread::sleep(Duration::from_millis(300));
    let rust_data = ws.host_path("data-rust");
    timed_start(&rust_data, &rust, Loaded::Compiled);
    let (mut cold, mut cached, mut rust_cached, mut bare) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..starts {
        let data = ws.host_path(&format!("data-{run}"));
        cold.push(timed_start(&data, &python, Loaded::Compiled));
        cached.push(timed_start(&data, &python, Loaded::Cached));
        rust_cached.push(timed_start(&rust_data, &rust, Loaded::Cached));
        let bare_data = ws.host_path(&format!("bare-{run}"));
        bare.push(timed_start(&bare_data, &empty, Loaded::Nothing));
    }
    Starts {
        cold: median(&mut cold),
        python: median(&mut cached),
        rust: median(&mut rust_cached),
        bare: median(&mut bare),
    }
}

/// How the one plugin of a start is expected to load.
#[derive(Clone, Copy)]
enum Loaded {
    /// Compiled: the start counts until its log says so (a compile may outlast `ready`).
    Compiled,
    /// From the compiled-code cache, before `ready`.
    Cached,
    /// There is no plugin.
    Nothing,
}

/// Spawn-to-ready (spawn-to-loaded for [`Loaded::Compiled`]) of one host.
fn timed_start(data: &Path, plugins: &Path, loaded: Loaded) -> Duration {
    let started = Instant::now();
    let host = Host::start_with(data, plugins, COMPILE_TIMEOUT);
    if let Loaded::Compiled = loaded {
        harness::wait_for(Duration::from_secs(600), "the plugin compiled", || {
            host.log().contains("; compiled in ")
        });
    }
    let took = started.elapsed();
    if let Loaded::Cached = loaded {
        let log = host.log();
        assert!(
            log.contains("; code from the compiled-code cache"),
            "expected the plugin from the compiled-code cache at this start:\n{log}"
        );
    }
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
