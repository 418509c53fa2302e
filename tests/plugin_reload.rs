//! Hot reload of the plugin directory, checked against a real `wasm-connect` process with
//! real files and real components: drops picked up by the file watcher and by
//! `GET /plugin/reload`, replaced versions that running connectors keep, pinned versions side
//! by side, removed files, slowly written and broken files, and the compiled-code cache
//! across restarts. A file pipeline runs through the disruptive tests and must lose nothing.
//!
//! `versioned-source` (tests/fixtures, built by scripts/build-plugins.sh as 1.0.0 and 2.0.0)
//! writes each line of its file as `<version>:<line>`, so the records show which version of
//! the plugin a connector really runs.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{append, cache_entries, publish, read_lines, wait_for, Host, Workspace};
use serde_json::{json, Value};

const VERSIONED: &str = "versioned-source";
const V1: &str = "1.0.0";
const V2: &str = "2.0.0";
/// Generous: a 2-core CI machine runs several hosts at once.
const LIMIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Helpers

/// The test build of `versioned-source` at `version`.
fn fixture(version: &str) -> PathBuf {
    common::fixture(&format!("versioned-source-{version}"))
}

/// `lines`, each ended by `\n`, as they are appended to a file.
fn as_lines(lines: &[&str]) -> String {
    lines.iter().map(|line| format!("{line}\n")).collect()
}

fn text(path: &Path) -> String {
    path.to_str().unwrap().to_string()
}

fn create_ok(host: &Host, name: &str, config: &Value) {
    assert_eq!(
        host.create(name, &config.to_string()),
        (200, "success".to_string()),
        "create {name}: {config}"
    );
}

/// The first task config of `name`, from the JSON API (the legacy API leaves the recorded
/// plugin version out, as the original's task configs had no such key).
fn task_config(host: &Host, name: &str) -> Value {
    let tasks = common::json_get(host, &format!("/connectors/{name}/tasks")).json();
    tasks[0]["config"].clone()
}

/// The plugin version the tasks of `name` recorded.
fn task_version(host: &Host, name: &str) -> String {
    let props = task_config(host, name);
    props["plugin.version"]
        .as_str()
        .unwrap_or_else(|| panic!("no plugin.version in {props}"))
        .to_string()
}

fn wait_log(host: &Host, what: &str) {
    wait_for(LIMIT, &format!("log line {what:?}"), || {
        host.log().contains(what)
    });
}

fn wait_lines(path: &Path, expected: &[String]) {
    wait_for(
        LIMIT,
        &format!("{} to hold {expected:?}", path.display()),
        || read_lines(path) == expected,
    );
}

/// Lines as `versioned-source` at `version` writes them.
fn versioned(version: &str, lines: &[&str]) -> Vec<String> {
    lines.iter().map(|l| format!("{version}:{l}")).collect()
}

/// A `versioned-source` connector and a file sink that writes what it produces.
struct Versioned {
    name: String,
    input: PathBuf,
    output: PathBuf,
}

impl Versioned {
    /// Creates `name` reading `<name>.in` with `class` (and `extra` keys), and `<name>-out`
    /// writing its records to `<name>.out`.
    fn create(
        host: &Host,
        ws: &Workspace,
        name: &str,
        class: &str,
        extra: &[(&str, &str)],
    ) -> Versioned {
        let (input, output) = (
            ws.path(&format!("{name}.in")),
            ws.path(&format!("{name}.out")),
        );
        std::fs::write(&input, "").unwrap();
        let mut config =
            json!({ "connector-class": class, "topic": name, "filename": text(&input) });
        for (key, value) in extra {
            config[*key] = json!(value);
        }
        create_ok(host, name, &config);
        let sink = json!({ "connector-class": "file-sink", "topicNames": name, "filename": text(&output) });
        create_ok(host, &format!("{name}-out"), &sink);
        host.wait_running(name);
        Versioned {
            name: name.to_string(),
            input,
            output,
        }
    }

    /// Appends `lines` and waits until the output holds `expected`, whole.
    fn feed(&self, lines: &[&str], expected: &[String]) {
        append(&self.input, &as_lines(lines));
        wait_lines(&self.output, expected);
    }
}

/// A file-source → file-sink pipeline on the bundled plugins, fed by a thread that appends a
/// line every few milliseconds until [`Pipeline::finish`]: everything written must arrive.
struct Pipeline {
    output: PathBuf,
    stop: Arc<AtomicBool>,
    writer: JoinHandle<usize>,
}

impl Pipeline {
    fn start(host: &Host, ws: &Workspace) -> Pipeline {
        let (input, output) = (ws.path("pipeline.in"), ws.path("pipeline.out"));
        std::fs::write(&input, "").unwrap();
        let source = json!({ "connector-class": "org.apache.rocketmq.connect.file.FileSourceConnector",
                             "topic": "pipeline", "filename": text(&input) });
        let sink = json!({ "connector-class": "org.apache.rocketmq.connect.file.FileSinkConnector",
                           "topicNames": "pipeline", "filename": text(&output) });
        create_ok(host, "pipeline-src", &source);
        create_ok(host, "pipeline-sink", &sink);
        host.wait_running("pipeline-src");
        host.wait_running("pipeline-sink");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let writer = std::thread::spawn(move || {
            let mut written = 0;
            loop {
                append(&input, &format!("pipeline line {written}\n"));
                written += 1;
                if stopped.load(Ordering::Relaxed) {
                    return written;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Pipeline {
            output,
            stop,
            writer,
        }
    }

    /// Stops writing; every line written arrives once, in order, and both ends still run.
    fn finish(self, host: &Host) {
        self.stop.store(true, Ordering::Relaxed);
        let written = self.writer.join().unwrap();
        let expected: Vec<String> = (0..written).map(|i| format!("pipeline line {i}")).collect();
        wait_lines(&self.output, &expected);
        assert_eq!(host.get_ok("/connectors/pipeline-src/status"), "running");
        assert_eq!(host.get_ok("/connectors/pipeline-sink/status"), "running");
    }
}

/// The answer to creating `name` with `config`.
fn create_answer(host: &Host, name: &str, config: &Value) -> String {
    let (status, body) = host.create(name, &config.to_string());
    assert_eq!(status, 200, "{body}");
    body
}

fn versioned_config(ws: &Workspace, class: &str) -> Value {
    json!({ "connector-class": class, "topic": "probe", "filename": text(&ws.path("probe.in")) })
}

// ---------------------------------------------------------------------------------------------
// Triggers: the file watcher, and GET /plugin/reload

#[test]
fn a_dropped_plugin_is_usable_within_a_second_without_a_reload_call() {
    let ws = Workspace::new();
    let host = ws.start();
    let probe = versioned_config(&ws, VERSIONED);
    assert!(create_answer(&host, "early", &probe)
        .starts_with("failed: no connector plugin named 'versioned-source'"));

    let dropped = Instant::now();
    std::fs::copy(fixture(V1), ws.plugin_dir().join("versioned.wasm")).unwrap();
    wait_for(LIMIT, "the dropped plugin to serve creates", || {
        host.create("probe", &probe.to_string()).1 == "success"
    });
    let latency = dropped.elapsed();
    eprintln!("drop-to-usable: {} ms", latency.as_millis());
    // The latency goal is 1 s (see the benchmark); a loaded test machine gets slack.
    assert!(
        latency < Duration::from_secs(5),
        "drop-to-usable took {latency:?}"
    );

    let connector = Versioned::create(&host, &ws, "vs", VERSIONED, &[]);
    connector.feed(&["a", "b"], &versioned(V1, &["a", "b"]));
    assert!(host.log().contains(&format!(
        "loaded plugin versioned-source 1.0.0 (source) from {}",
        ws.plugin_dir().join("versioned.wasm").display()
    )));
}

#[test]
fn plugin_reload_answers_once_a_just_written_plugin_is_loaded_and_ignores_temporary_names() {
    let ws = Workspace::new();
    let host = ws.start();
    let probe = versioned_config(&ws, VERSIONED);

    // A temporary name is never loaded, even by an explicit reload ...
    let temp = ws.plugin_dir().join(".versioned.wasm.tmp");
    std::fs::copy(fixture(V1), &temp).unwrap();
    let part = ws.plugin_dir().join("versioned.part.wasm");
    std::fs::copy(fixture(V1), &part).unwrap();
    assert_eq!(host.get_ok("/plugin/reload"), "success");
    assert!(create_answer(&host, "probe", &probe).starts_with("failed: no connector plugin named"));
    std::fs::remove_file(&part).unwrap();

    // ... and a reload right after a copy waits for the file to settle and loads it: the
    // create right after the reload succeeds without any polling.
    std::fs::copy(fixture(V1), ws.plugin_dir().join("copied.wasm")).unwrap();
    assert_eq!(host.get_ok("/plugin/reload"), "success");
    assert_eq!(create_answer(&host, "probe", &probe), "success");
    assert_eq!(task_version(&host, "probe"), V1);

    // The rename of the temporary file into place is picked up by the watcher.
    std::fs::remove_file(ws.plugin_dir().join("copied.wasm")).unwrap();
    wait_log(&host, "removed plugin versioned-source 1.0.0");
    std::fs::rename(&temp, ws.plugin_dir().join("renamed.wasm")).unwrap();
    wait_for(LIMIT, "the renamed plugin to serve creates", || {
        create_answer(&host, "probe2", &probe) == "success"
    });
}

// ---------------------------------------------------------------------------------------------
// Replace, pin, remove

#[test]
fn a_replaced_plugin_serves_new_connectors_while_running_ones_keep_their_version_until_restarted() {
    let ws = Workspace::new();
    let file = ws.plugin_dir().join("versioned.wasm");
    std::fs::copy(fixture(V1), &file).unwrap();
    let host = ws.start();
    let pipeline = Pipeline::start(&host, &ws);
    let old = Versioned::create(&host, &ws, "old", VERSIONED, &[]);
    old.feed(&["a1", "a2"], &versioned(V1, &["a1", "a2"]));
    assert_eq!(task_version(&host, "old"), V1);

    publish(&fixture(V2), &file);
    wait_log(
        &host,
        &format!(
            "loaded plugin versioned-source 2.0.0 (source) from {}",
            file.display()
        ),
    );
    // The running connector still runs 1.0.0 ...
    let mut expected = versioned(V1, &["a1", "a2", "b1", "b2"]);
    old.feed(&["b1", "b2"], &expected);
    assert_eq!(task_version(&host, old.name.as_str()), V1);
    // ... a new one gets 2.0.0 ...
    let new = Versioned::create(&host, &ws, "new", VERSIONED, &[]);
    new.feed(&["n1"], &versioned(V2, &["n1"]));
    assert_eq!(task_version(&host, "new"), V2);
    // ... and the replaced 1.0.0 can still be pinned until the host restarts.
    let pinned = Versioned::create(&host, &ws, "pinned", &format!("{VERSIONED}@{V1}"), &[]);
    pinned.feed(&["p1"], &versioned(V1, &["p1"]));

    // A restart of the connector (an update of its config) moves it to 2.0.0, resuming after
    // the last line it delivered.
    let updated = json!({ "connector-class": VERSIONED, "topic": "old", "filename": text(&old.input), "max-task": "1" });
    create_ok(&host, "old", &updated);
    host.wait_running("old");
    assert_eq!(task_version(&host, "old"), V2);
    expected.extend(versioned(V2, &["c1", "c2"]));
    old.feed(&["c1", "c2"], &expected);
    pipeline.finish(&host);
}

#[test]
fn pinned_versions_run_side_by_side_and_survive_host_restarts_while_present() {
    let ws = Workspace::new();
    let v1_file = ws.plugin_dir().join("versioned-1.wasm");
    std::fs::copy(fixture(V1), &v1_file).unwrap();
    let host = ws.start();
    let unpinned = Versioned::create(&host, &ws, "unpinned", VERSIONED, &[]);
    let by_class = Versioned::create(&host, &ws, "by-class", &format!("{VERSIONED}@{V1}"), &[]);
    // An alias works with plugin.version too.
    let by_key = Versioned::create(
        &host,
        &ws,
        "by-key",
        "com.example.VersionedSource",
        &[("plugin.version", V1)],
    );

    // 2.0.0 arrives beside 1.0.0: new connectors get it, pinned and running ones do not move.
    std::fs::copy(fixture(V2), ws.plugin_dir().join("versioned-2.wasm")).unwrap();
    wait_log(&host, "loaded plugin versioned-source 2.0.0");
    let newest = Versioned::create(&host, &ws, "newest", VERSIONED, &[]);
    let all = [&unpinned, &by_class, &by_key, &newest];
    let check = |host: &Host, lines: &[&str], versions: [&str; 4]| {
        for (connector, version) in all.iter().zip(versions) {
            assert_eq!(
                task_version(host, &connector.name),
                version,
                "{}",
                connector.name
            );
        }
        let before: Vec<Vec<String>> = all
            .iter()
            .map(|connector| read_lines(&connector.output))
            .collect();
        for connector in all {
            append(&connector.input, &as_lines(lines));
        }
        for ((connector, version), mut expected) in all.iter().zip(versions).zip(before) {
            expected.extend(versioned(version, lines));
            wait_lines(&connector.output, &expected);
        }
    };
    check(&host, &["x"], [V1, V1, V1, V2]);

    // Pins that cannot be met are refused with the reason; nothing is stored.
    let missing = create_answer(
        &host,
        "bad",
        &versioned_config(&ws, &format!("{VERSIONED}@3.0.0")),
    );
    assert_eq!(
        missing,
        "failed: plugin versioned-source has no version 3.0.0 loaded (loaded: 1.0.0, 2.0.0); pin one of those, or drop the 3.0.0 build into the plugin directory"
    );
    let mut conflicting = versioned_config(&ws, &format!("{VERSIONED}@{V1}"));
    conflicting["plugin.version"] = json!(V2);
    assert!(create_answer(&host, "bad", &conflicting)
        .contains("pins version 1.0.0 but plugin.version pins 2.0.0"));
    assert_eq!(
        host.get_ok("/connectors/bad/config"),
        "ConnectorConfigs:null\nTaskConfigs:null"
    );

    // A host restart brings every connector back on the version its tasks recorded.
    assert!(host.terminate().success());
    let host = ws.start();
    check(&host, &["y"], [V1, V1, V1, V2]);

    // Removing 1.0.0 stops nothing that runs it; new pins on it are refused.
    std::fs::remove_file(&v1_file).unwrap();
    wait_log(&host, "removed plugin versioned-source 1.0.0");
    check(&host, &["z"], [V1, V1, V1, V2]);
    let gone = create_answer(
        &host,
        "bad",
        &versioned_config(&ws, &format!("{VERSIONED}@{V1}")),
    );
    assert!(
        gone.starts_with(
            "failed: plugin versioned-source has no version 1.0.0 loaded (loaded: 2.0.0)"
        ),
        "{gone}"
    );

    // After the next host restart the unpinned connector runs the newest version; the pinned
    // ones stay stopped and say why.
    assert!(host.terminate().success());
    let host = ws.start();
    host.wait_running("unpinned");
    append(&unpinned.input, "w\n");
    let mut expected = read_lines(&unpinned.output);
    expected.extend(versioned(V2, &["w"]));
    wait_lines(&unpinned.output, &expected);
    for name in ["by-class", "by-key"] {
        assert_eq!(
            host.get_ok(&format!("/connectors/{name}/status")),
            "not running",
            "{name}"
        );
    }
    let stays_stopped = "plugin versioned-source has no version 1.0.0 loaded (loaded: 2.0.0); pin one of those, \
                         or drop the 1.0.0 build into the plugin directory; the connector stays stopped";
    assert_eq!(
        host.log().matches(stays_stopped).count(),
        2,
        "{}",
        host.log()
    );
}

#[test]
fn removed_plugins_keep_running_connectors_and_refuse_new_ones() {
    let ws = Workspace::new();
    let host = ws.start();
    let pipeline = Pipeline::start(&host, &ws);
    let source = ws.plugin_dir().join("file-source.wasm");
    let sink = ws.plugin_dir().join("file-sink.wasm");
    std::fs::remove_file(&source).unwrap();
    std::fs::remove_file(&sink).unwrap();
    wait_log(
        &host,
        &format!("removed plugin file-source 0.1.0 ({})", source.display()),
    );
    wait_log(
        &host,
        &format!("removed plugin file-sink 0.1.0 ({})", sink.display()),
    );

    let config = json!({ "connector-class": "file-source", "topic": "t", "filename": text(&ws.path("x.in")) });
    assert_eq!(
        create_answer(&host, "new", &config),
        "failed: no connector plugin named 'file-source'; available: "
    );
    assert_eq!(
        host.get_ok("/connectors/new/config"),
        "ConnectorConfigs:null\nTaskConfigs:null"
    );

    // Back in place, it serves again.
    publish(&common::bundled_plugins().join("file-source.wasm"), &source);
    wait_for(LIMIT, "file-source to serve again", || {
        host.create("new", &config.to_string()).1 == "success"
    });
    pipeline.finish(&host);
}

// ---------------------------------------------------------------------------------------------
// Partial and broken files

#[test]
fn a_slowly_written_plugin_is_never_loaded_half_written() {
    let ws = Workspace::new();
    let host = ws.start();
    let file = ws.plugin_dir().join("slow.wasm");
    let bytes = std::fs::read(fixture(V1)).unwrap();
    let mut out = std::fs::File::create(&file).unwrap();
    let (chunks, pause) = (8, Duration::from_millis(40));
    let mut longest_gap = Duration::ZERO;
    let mut last = Instant::now();
    for chunk in bytes.chunks(bytes.len().div_ceil(chunks)) {
        out.write_all(chunk).unwrap();
        out.flush().unwrap();
        longest_gap = longest_gap.max(last.elapsed());
        std::thread::sleep(pause);
        last = Instant::now();
    }
    drop(out);
    let probe = versioned_config(&ws, VERSIONED);
    wait_for(LIMIT, "the slowly written plugin to serve creates", || {
        host.create("probe", &probe.to_string()).1 == "success"
    });

    let log = host.log();
    let naming: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&file.display().to_string()))
        .collect();
    // Under 200 ms between writes the file never looks settled; a machine that stalled the
    // writer longer may have seen a partial file, which must then be reported, never loaded.
    if longest_gap < Duration::from_millis(150) {
        assert_eq!(naming.len(), 1, "lines naming the file: {naming:#?}");
    }
    let loaded: Vec<&&str> = naming
        .iter()
        .filter(|l| l.contains("loaded plugin versioned-source 1.0.0"))
        .collect();
    assert_eq!(loaded.len(), 1, "{naming:#?}");
    assert!(
        naming
            .iter()
            .all(|l| l.contains("loaded plugin") || l.contains("broken plugin")),
        "{naming:#?}"
    );
}

#[test]
fn garbage_over_a_working_plugin_keeps_the_working_version_serving() {
    let ws = Workspace::new();
    let file = ws.plugin_dir().join("versioned.wasm");
    std::fs::copy(fixture(V1), &file).unwrap();
    let host = ws.start();
    let pipeline = Pipeline::start(&host, &ws);
    let running = Versioned::create(&host, &ws, "running", VERSIONED, &[]);

    // No reload call: the watcher sees both writes.
    let garbage: Vec<u8> = (0..50_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&file, &garbage).unwrap();
    std::fs::write(ws.plugin_dir().join("file-source.wasm"), &garbage[..1000]).unwrap();
    wait_log(&host, &format!("broken plugin {}: ", file.display()));
    wait_log(
        &host,
        "; keeping the working version of versioned-source 1.0.0",
    );
    wait_log(&host, "; keeping the working version of file-source 0.1.0");
    let line = host
        .log()
        .lines()
        .find(|l| l.contains(&format!("broken plugin {}: ", file.display())))
        .unwrap()
        .to_string();
    assert!(line.contains("not a valid wasm component"), "{line}");

    running.feed(&["r1"], &versioned(V1, &["r1"]));
    let fresh = Versioned::create(&host, &ws, "fresh", VERSIONED, &[]);
    fresh.feed(&["f1"], &versioned(V1, &["f1"]));
    assert_eq!(task_version(&host, "fresh"), V1);

    // A reload of the unchanged directory logs nothing new (issue 18.15); the listing still
    // shows the broken content beside the working version.
    let reported = |host: &Host| {
        host.log()
            .matches(&format!("broken plugin {}: ", file.display()))
            .count()
    };
    let before = reported(&host);
    assert_eq!(host.get_ok("/plugin/reload"), "success");
    assert_eq!(reported(&host), before);
    let listed = common::json_get(&host, "/connector-plugins").json();
    let statuses: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["file"] == json!(file.display().to_string()))
        .map(|row| &row["status"])
        .collect();
    assert_eq!(statuses, [&json!("loaded"), &json!("broken")], "{listed}");

    // A good file replaces the garbage.
    publish(&fixture(V2), &file);
    wait_log(&host, "loaded plugin versioned-source 2.0.0");
    let newer = Versioned::create(&host, &ws, "newer", VERSIONED, &[]);
    newer.feed(&["n1"], &versioned(V2, &["n1"]));
    running.feed(&["r2"], &versioned(V1, &["r1", "r2"]));
    pipeline.finish(&host);
}

// ---------------------------------------------------------------------------------------------
// Compiled-code cache

/// How many plugins the host's start loaded from the cache and how many it compiled.
fn load_origins(host: &Host) -> (usize, usize) {
    let log = host.log();
    let loads = log.lines().filter(|l| l.contains("loaded plugin "));
    let (cached, compiled): (Vec<&str>, Vec<&str>) =
        loads.partition(|l| l.ends_with("code from the compiled-code cache"));
    assert!(
        compiled.iter().all(|l| l.contains("; compiled in ")),
        "{compiled:#?}"
    );
    (cached.len(), compiled.len())
}

#[test]
fn compiled_code_cache_survives_restarts_and_corrupt_entries_are_recompiled() {
    let ws = Workspace::new();
    let host = ws.start();
    assert_eq!(load_origins(&host), (0, 2), "a fresh data dir compiles");
    let entries = cache_entries(&ws.data_dir());
    assert_eq!(entries.len(), 2, "{entries:?}");
    let pipeline = Pipeline::start(&host, &ws);
    pipeline.finish(&host);
    assert!(host.terminate().success());

    // A stray entry (another engine's, say) is deleted; the real ones are used.
    let stray = ws
        .data_dir()
        .join("plugin-cache")
        .join(format!("{}-0000000000000000.cwasm", "0".repeat(64)));
    std::fs::write(&stray, b"stale").unwrap();
    let host = ws.start();
    assert_eq!(load_origins(&host), (2, 0), "{}", host.log());
    assert!(!stray.exists(), "the stray entry is still there");
    host.wait_running("pipeline-src");
    host.wait_running("pipeline-sink");
    assert!(host.terminate().success());

    // One entry's code with a flipped byte, another's MAC file cut short: both are
    // recompiled, never trusted.
    let mut flipped = std::fs::read(&entries[0]).unwrap();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    std::fs::write(&entries[0], &flipped).unwrap();
    std::fs::write(entries[1].with_extension("mac"), b"WCCO").unwrap();
    let host = ws.start();
    assert_eq!(load_origins(&host), (0, 2), "{}", host.log());
    let log = host.log();
    assert!(
        log.contains(&format!(
            "compiled-code cache entry {} is unusable (MAC mismatch: corrupt, or not written by this host); recompiling",
            entries[0].display()
        )),
        "{log}"
    );
    assert!(log.contains(&format!("compiled-code cache entry {} is unusable (not a cache entry of this format); recompiling", entries[1].display())), "{log}");
    let pipeline_again = ws.path("pipeline.in");
    append(&pipeline_again, "after the corrupt cache\n");
    wait_for(LIMIT, "the pipeline to run on recompiled code", || {
        read_lines(&ws.path("pipeline.out"))
            .last()
            .is_some_and(|l| l == "after the corrupt cache")
    });
    assert!(host.terminate().success());

    // The rewritten entries serve the next start.
    let host = ws.start();
    assert_eq!(load_origins(&host), (2, 0), "{}", host.log());
    assert_eq!(cache_entries(&ws.data_dir()), entries);
}

#[test]
fn plugin_check_describes_a_component_and_fails_precisely_on_one_it_cannot_run() {
    let run = |file: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wasm-connect"))
            .arg("plugin")
            .arg("check")
            .arg(file)
            .output()
            .unwrap()
    };
    let good = run(&fixture(V2));
    let stdout = String::from_utf8_lossy(&good.stdout);
    assert!(
        good.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&good.stderr)
    );
    for expected in [
        "world        source-connector",
        "plugin       versioned-source 2.0.0 (source)",
        "aliases      com.example.VersionedSource",
        "exports      wasm-connect:connector/connector@0.1.0, wasm-connect:connector/source@0.1.0",
        "  wasm-connect:connector/host@0.1.0",
        "  filename  [required, text, reads the file it names]  The file to read, one record per complete line.",
        "runnable     yes",
    ] {
        assert!(stdout.lines().any(|l| l.starts_with(expected)), "no line {expected:?} in:\n{stdout}");
    }

    let ws = Workspace::new();
    let half = ws.path("half.wasm");
    let bytes = std::fs::read(fixture(V1)).unwrap();
    std::fs::write(&half, &bytes[..bytes.len() / 2]).unwrap();
    let bad = run(&half);
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains(&format!(
            "wasm-connect: {} cannot run on this host: not a valid wasm component",
            half.display()
        )),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&bad.stdout).contains("runnable     no: "));

    let sink_world_mismatch = ws.path("empty.wasm");
    std::fs::write(&sink_world_mismatch, b"\0asm\x0d\0\x01\0").unwrap();
    let empty = run(&sink_world_mismatch);
    assert_eq!(empty.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&empty.stderr)
        .contains("targets neither the source-connector nor the sink-connector world"));
}
