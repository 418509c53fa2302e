//! Connectors written in Python and JavaScript (issue 16), run end to end by a real host
//! through the REST API: the examples of `plugins-src/examples/`, built by
//! `scripts/build-polyglot.sh` into `tests/fixtures/polyglot/` (the `.ci/run` block
//! "Python and JavaScript connectors" installs the toolchains and runs it).
//!
//! One host data dir serves the whole scenario, so each 18 MB Python component is compiled
//! once and the restart loads it from the compiled-code cache.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use common::neighbourhood::{task_status, wait_failed_with};
use common::{append, json_create, read_lines, serial, wait_for, Host, Workspace};

const EXAMPLES: [&str; 4] = [
    "python-csv-source",
    "python-jsonl-sink",
    "js-source",
    "js-sink",
];

/// `tests/fixtures/polyglot/<name>.wasm`; fails naming the script that builds it.
fn polyglot_fixture(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../tests/fixtures/polyglot/{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-polyglot.sh (CI: the .ci/run block \
         \"Python and JavaScript connectors\" installs componentize-py and componentize-qjs \
         and runs it)",
        path.display()
    );
    path
}

fn workspace() -> Workspace {
    let ws = Workspace::new();
    for name in EXAMPLES {
        std::fs::copy(
            polyglot_fixture(name),
            ws.plugin_dir().join(format!("{name}.wasm")),
        )
        .unwrap_or_else(|e| panic!("copy {name}.wasm into the plugin dir: {e}"));
    }
    ws
}

/// Starts a host on `ws`. A Python component takes ~5 s of CPU to compile; the compile limit
/// is raised so that a busy machine (CI shares its cores) does not refuse it.
fn start(ws: &Workspace) -> Host {
    Host::start_with(
        &ws.data_dir(),
        &ws.plugin_dir(),
        &["--compile-timeout-s", "600"],
    )
}

/// Creates a connector through the JSON API, waiting while the plugin dir still compiles
/// (an 18 MB Python component takes seconds to compile on a busy machine).
fn create(host: &Host, name: &str, config: Value) {
    let mut last = String::new();
    wait_for(Duration::from_secs(240), &format!("create {name}"), || {
        let answer = json_create(host, name, config.clone());
        last = format!("{} {}", answer.status, answer.body);
        answer.status == 201
    });
    eprintln!("created {name}: {last}");
}

fn csv_rows(range: std::ops::Range<usize>) -> String {
    range
        .map(|i| format!("{i},name-{i},\"city, {i}\"\n"))
        .collect()
}

fn jsonl_lines(range: std::ops::Range<usize>) -> String {
    range
        .map(|i| format!("{{\"id\":{i},\"name\":\"js-{i}\",\"drop\":true}}\n"))
        .collect()
}

/// What the JS sink writes for CSV rows `range` read by the Python source: the topic offset
/// (row number, from 0) and the row as a JSON object keyed by the header.
fn js_sink_expected(range: std::ops::Range<usize>) -> Vec<String> {
    range
        .map(|i| format!(r#"{i} {{"id": "{i}", "name": "name-{i}", "city": "city, {i}"}}"#))
        .collect()
}

/// What the Python sink writes for JSON lines `range` read by the JS source, keeping the
/// fields `id,name`.
fn python_sink_expected(range: std::ops::Range<usize>) -> Vec<String> {
    range
        .map(|i| format!(r#"{{"id":{i},"name":"js-{i}"}}"#))
        .collect()
}

fn wait_lines(path: &Path, expected: &[String], what: &str) {
    wait_for(Duration::from_secs(120), what, || {
        read_lines(path).len() >= expected.len()
    });
    assert_eq!(
        read_lines(path),
        expected,
        "{what}: the file's lines differ"
    );
}

fn create_pipelines(host: &Host, ws: &Workspace) {
    create(
        host,
        "py-csv",
        json!({"connector.class": "python-csv-source", "topic": "rows",
               "filename": ws.path("in.csv"), "key.field": "id"}),
    );
    create(
        host,
        "js-lines",
        json!({"connector.class": "js-sink", "topics": "rows",
               "filename": ws.path("rows.txt"), "include.offset": "true"}),
    );
    create(
        host,
        "js-jsonl",
        json!({"connector.class": "js-source", "topic": "events",
               "filename": ws.path("in.jsonl"), "key.field": "id"}),
    );
    create(
        host,
        "py-jsonl",
        json!({"connector.class": "python-jsonl-sink", "topics": "events",
               "filename": ws.path("events.jsonl"), "fields": "id,name"}),
    );
}

#[test]
fn python_and_javascript_connectors_run_end_to_end_resume_after_restart_and_hit_limits() {
    // One test at a time: both compile 18 MB Python components, which takes seconds.
    let _serial = serial();
    let ws = workspace();
    std::fs::write(
        ws.path("in.csv"),
        format!("id,name,city\n{}", csv_rows(0..100)),
    )
    .unwrap();
    std::fs::write(ws.path("in.jsonl"), jsonl_lines(0..100)).unwrap();
    let host = start(&ws);
    create_pipelines(&host, &ws);

    // Python source → topic → JS sink, and JS source → topic → Python sink.
    wait_lines(
        &ws.path("rows.txt"),
        &js_sink_expected(0..100),
        "python-csv-source → js-sink",
    );
    wait_lines(
        &ws.path("events.jsonl"),
        &python_sink_expected(0..100),
        "js-source → python-jsonl-sink",
    );

    // A restart resumes each source from its committed position and each sink from its
    // committed length: the rows added while the host was down arrive once, nothing twice.
    assert!(host.terminate().success(), "the host did not stop cleanly");
    append(&ws.path("in.csv"), &csv_rows(100..150));
    append(&ws.path("in.jsonl"), &jsonl_lines(100..150));
    let host = start(&ws);
    wait_lines(
        &ws.path("rows.txt"),
        &js_sink_expected(0..150),
        "after the restart, python-csv-source → js-sink",
    );
    wait_lines(
        &ws.path("events.jsonl"),
        &python_sink_expected(0..150),
        "after the restart, js-source → python-jsonl-sink",
    );
    // The restart loaded the 18 MB Python components from the compiled-code cache.
    for plugin in [
        "python-csv-source 0.1.0 (source)",
        "python-jsonl-sink 0.1.0 (sink)",
    ] {
        let log = host.log();
        assert!(
            log.lines()
                .any(|line| line.contains(&format!("loaded plugin {plugin}"))
                    && line.ends_with("code from the compiled-code cache")),
            "{plugin} was not loaded from the compiled-code cache at the restart:\n{log}"
        );
    }
    for name in ["py-csv", "js-lines", "js-jsonl", "py-jsonl"] {
        assert_eq!(
            task_status(&host, name)["state"],
            "RUNNING",
            "{name} after the restart"
        );
    }

    // A Python task that needs more memory than its limit (a 48 MiB row under
    // `limits.memory` 64MiB) fails like any other connector, with the limit named.
    let big_row = format!("0,{},x\n", "y".repeat(48 << 20));
    std::fs::write(ws.path("big.csv"), format!("id,name,city\n{big_row}")).unwrap();
    create(
        &host,
        "py-big",
        json!({"connector.class": "python-csv-source", "topic": "big",
               "filename": ws.path("big.csv"), "limits.memory": "64MiB"}),
    );
    wait_failed_with(
        &host,
        "py-big",
        &["memory limit 64 MiB exceeded"],
        Duration::from_secs(60),
    );
    // The other connectors carry on.
    append(&ws.path("in.csv"), &csv_rows(150..151));
    wait_lines(
        &ws.path("rows.txt"),
        &js_sink_expected(0..151),
        "a row after the memory failure",
    );
}

/// Runs `program args` in `dir`; panics with its output when it fails.
fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let output = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} in {}: {e}", dir.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{program} {args:?} in {} failed ({}):\n{text}",
        dir.display(),
        output.status
    );
    text
}

/// `wasm-connect new NAME --lang LANG --kind KIND` in `parent`, then the project's own
/// `build.sh`, then `plugin check` of what it built: returns the built component.
fn new_project(parent: &Path, name: &str, lang: &str, kind: &str, language: &str) -> PathBuf {
    let binary = env!("CARGO_BIN_EXE_wasm-connect");
    run(
        parent,
        binary,
        &["new", name, "--lang", lang, "--kind", kind],
    );
    let dir = parent.join(name);
    run(&dir, "./build.sh", &[]);
    let wasm = dir.join(format!("{name}.wasm"));
    let file = format!("{name}.wasm");
    let check = run(
        &dir,
        binary,
        &["plugin", "check", &file, "--compile-timeout-s", "600"],
    );
    for expected in [
        format!("world        {kind}-connector"),
        format!("plugin       {name} 0.1.0 ({kind})"),
        format!("language     {language}"),
        "runnable     yes".to_string(),
    ] {
        assert!(
            check.contains(&expected),
            "plugin check lacks {expected:?}:\n{check}"
        );
    }
    wasm
}

#[test]
fn new_projects_in_every_language_build_pass_plugin_check_and_run_as_they_are() {
    let _serial = serial();
    let ws = Workspace::new();
    let projects = ws.path("projects");
    std::fs::create_dir_all(&projects).unwrap();
    let sources = [
        ("rs-hello", "rust", "Rust"),
        ("py-hello", "python", "Python (componentize-py"),
        ("js-hello", "js", "JavaScript (QuickJS"),
    ];
    for (name, lang, language) in sources {
        let wasm = new_project(&projects, name, lang, "source", language);
        std::fs::copy(&wasm, ws.plugin_dir().join(format!("{name}.wasm"))).unwrap();
    }
    let sink = new_project(&projects, "js-logger", "js", "sink", "JavaScript (QuickJS");
    std::fs::copy(&sink, ws.plugin_dir().join("js-logger.wasm")).unwrap();
    // The generated JS test passes as generated.
    run(&projects.join("js-logger"), "node", &["--test"]);

    let host = start(&ws);
    for (name, _, _) in sources {
        // Each generated source needs no key but `topic`; the bundled file sink shows
        // what it produced.
        create(&host, name, json!({"connector.class": name, "topic": name}));
        create(
            &host,
            &format!("{name}-out"),
            json!({"connector.class": "file-sink", "topics": name,
                   "filename": ws.path(&format!("{name}.txt"))}),
        );
    }
    create(
        &host,
        "logger",
        json!({"connector.class": "js-logger", "topics": "js-hello"}),
    );
    for (name, _, _) in sources {
        let expected: Vec<String> = (0..5).map(|i| format!("record {i} from {name}")).collect();
        wait_lines(&ws.path(&format!("{name}.txt")), &expected, name);
    }
    wait_for(Duration::from_secs(60), "the JS sink's log lines", || {
        host.log().contains("js-hello@4: record 4 from js-hello")
    });
}
