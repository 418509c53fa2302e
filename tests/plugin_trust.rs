//! The plugin directory as a trust boundary (issue 10 findings 2, 6, 7 and the compile and
//! cache bullets, issue 18 findings 14 and 15), against a real `wasm-connect` process with
//! real components that attempt each attack: `hostile-impostor` built by
//! `tests/hostile/build.sh` into `tests/fixtures/hostile/impostor-*.wasm`, each describing
//! itself as it was built to (another plugin's name or aliases, bad names, or a `describe` that
//! never returns).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    cache_entries, json_create, json_get, publish, read_lines, wait_for, Host, Workspace,
};
use serde_json::{json, Value};

/// Generous: a 2-core CI machine runs several hosts at once.
const LIMIT: Duration = Duration::from_secs(30);
/// The API answers within this long of the host's start, whatever the plugins do.
const API_LIMIT: Duration = Duration::from_secs(1);
/// A plugin dropped into the directory is usable within a second (the goal, printed); a
/// loaded test machine gets slack, as in plugin_reload.
const DROP_LIMIT: Duration = Duration::from_secs(5);
const SEED_SOURCE: &str = "org.apache.rocketmq.connect.file.FileSourceConnector";

fn hostile(name: &str) -> PathBuf {
    common::fixture(&format!("hostile/{name}"))
}

fn versioned_source() -> PathBuf {
    common::fixture("versioned-source-1.0.0")
}

fn wait_log(host: &Host, what: &str) {
    wait_for(LIMIT, &format!("log line {what:?}"), || {
        host.log().contains(what)
    });
}

/// The log line that contains `what` (the first one).
fn log_line(host: &Host, what: &str) -> String {
    wait_log(host, what);
    host.log()
        .lines()
        .find(|l| l.contains(what))
        .unwrap()
        .to_string()
}

/// The seed's own example: a file source by its RocketMQ class name.
fn seed_config(ws: &Workspace, class: &str, topic: &str) -> Value {
    let input = ws.path(&format!("{topic}.in"));
    std::fs::write(&input, "").unwrap();
    json!({"connector-class": class, "topic": topic, "filename": input.to_str().unwrap()})
}

/// The plugin name and version the tasks of `name` run.
fn task_plugin(host: &Host, name: &str) -> (String, String) {
    let tasks = json_get(host, &format!("/connectors/{name}/tasks")).json();
    let config = &tasks[0]["config"];
    (
        config["task-class"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        config["plugin.version"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// `GET /connector-plugins` rows whose file is `file`.
fn plugin_rows(host: &Host, file: &Path) -> Vec<Value> {
    let rows = json_get(host, "/connector-plugins").json();
    rows.as_array()
        .unwrap()
        .iter()
        .filter(|row| row["file"] == json!(file.display().to_string()))
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Names and aliases are unique across plugin names

#[test]
fn an_impostor_cannot_take_another_plugins_name_or_alias_and_a_same_name_version_is_a_warned_upgrade(
) {
    let ws = Workspace::new();
    let host = ws.start();

    // A plugin of another name that lists file-source's name and class among its aliases.
    let thief = ws.plugin_dir().join("impostor-alias-thief.wasm");
    publish(&hostile("impostor-alias-thief"), &thief);
    let refused = log_line(&host, &format!("broken plugin {}: ", thief.display()));
    assert!(
        refused.contains(
            "alias 'file-source' is already provided by file-source 0.1.0 from file-source.wasm"
        ),
        "{refused}"
    );
    assert!(refused.contains("WARN"), "{refused}");
    assert_eq!(
        plugin_rows(&host, &thief)[0]["status"],
        json!("broken"),
        "{:?}",
        plugin_rows(&host, &thief)
    );
    // The seed's example still gets file-source, by either of its class names.
    for (name, class) in [("by-class", SEED_SOURCE), ("by-name", "file-source")] {
        let config = seed_config(&ws, class, name);
        assert_eq!(
            host.create(name, &config.to_string()),
            (200, "success".to_string())
        );
        assert_eq!(
            task_plugin(&host, name),
            ("file-source".to_string(), "0.1.0".to_string())
        );
    }

    // A new version under the same name is the upgrade path: loaded, with a warning that
    // names its file; the older version stays pinnable.
    let upgrade = ws.plugin_dir().join("impostor-same-name.wasm");
    publish(&hostile("impostor-same-name"), &upgrade);
    let warned = log_line(
        &host,
        &format!(
            "loaded plugin file-source 99.0.0 (source) from {}",
            upgrade.display()
        ),
    );
    assert!(warned.contains("WARN"), "{warned}");
    assert!(
        warned.contains(
            "another file serves this plugin too (file-source 0.1.0 from file-source.wasm)"
        ),
        "{warned}"
    );
    let pinned = seed_config(&ws, &format!("{SEED_SOURCE}@0.1.0"), "pinned");
    assert_eq!(
        host.create("pinned", &pinned.to_string()),
        (200, "success".to_string())
    );
    assert_eq!(
        task_plugin(&host, "pinned"),
        ("file-source".to_string(), "0.1.0".to_string())
    );
    std::fs::remove_file(&upgrade).unwrap();
    wait_log(&host, "removed plugin file-source 99.0.0");

    // At start the first file by name keeps a contested alias: file-source.wasm sorts before
    // impostor-alias-thief.wasm, whichever finishes loading first.
    assert!(host.terminate().success());
    let host = ws.start();
    let refused_again = host
        .log()
        .lines()
        .filter(|l| l.contains(&format!("broken plugin {}: ", thief.display())))
        .count();
    assert_eq!(refused_again, 1, "{}", host.log());
    let config = seed_config(&ws, SEED_SOURCE, "after-restart");
    assert_eq!(
        host.create("after-restart", &config.to_string()),
        (200, "success".to_string())
    );
    assert_eq!(task_plugin(&host, "after-restart").0, "file-source");
}

// ---------------------------------------------------------------------------------------------
// Names validated, and escaped in the log

#[test]
fn plugins_with_bad_names_are_refused_and_their_names_never_reach_the_log_raw() {
    let ws = Workspace::new();
    let host = ws.start();
    let cases = [
        ("impostor-dotdot", "invalid plugin name \"../x\": it contains a slash"),
        (
            "impostor-newline",
            "invalid plugin name \"evil\\nINFO forged log line\": it contains a control character",
        ),
        (
            "impostor-nul",
            "invalid plugin name \"nul\\u{0}name\": it contains a control character",
        ),
        (
            "impostor-long",
            "… (9800 more characters)\": it is 10000 characters long, over 249",
        ),
        (
            "impostor-bidi",
            "invalid plugin alias \"abc\\u{202e}cod.exe\": it contains the invisible format character U+202E",
        ),
    ];
    for (fixture, _) in cases {
        std::fs::copy(
            hostile(fixture),
            ws.plugin_dir().join(format!("{fixture}.wasm")),
        )
        .unwrap();
    }
    assert_eq!(host.get_ok("/plugin/reload"), "success");
    let log = host.log();
    for (fixture, reason) in cases {
        let file = ws.plugin_dir().join(format!("{fixture}.wasm"));
        let line = log_line(&host, &format!("broken plugin {}: ", file.display()));
        assert!(line.contains(reason), "{fixture}: {line}");
        assert!(
            line.chars().count() < 1000,
            "{fixture}: {} characters",
            line.len()
        );
        let rows = plugin_rows(&host, &file);
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0]["status"], json!("broken"));
    }
    // No forged line: the newline stayed inside its escaped name.
    assert!(
        !log.lines().any(|l| l.starts_with("INFO forged log line")),
        "{log}"
    );
    assert!(
        !log.contains('\u{202E}'),
        "a raw bidi override reached the log"
    );
}

// ---------------------------------------------------------------------------------------------
// Parallel loading after the API listens

#[test]
fn the_api_answers_at_once_beside_plugins_that_never_describe_themselves_and_a_dropped_plugin_is_usable_within_a_second(
) {
    let ws = Workspace::new();
    let sleepers: Vec<PathBuf> = (1..=3)
        .map(|i| ws.plugin_dir().join(format!("sleeper-{i}.wasm")))
        .collect();
    for sleeper in &sleepers {
        std::fs::copy(hostile("impostor-sleeper"), sleeper).unwrap();
    }
    // A first start fills the compiled-code cache; every describe of a sleeper times out.
    let host = ws.start();
    for sleeper in &sleepers {
        let line = log_line(&host, &format!("broken plugin {}: ", sleeper.display()));
        assert!(
            line.contains("describe did not return within 2000 ms"),
            "{line}"
        );
    }
    assert!(host.terminate().success());

    let started = Instant::now();
    // Sleepers that stay loading for 10 s: whatever the machine's load, the dropped plugin
    // below must serve while they still load.
    let host = Host::start_listening(
        &ws.data_dir(),
        &ws.plugin_dir(),
        &["--describe-timeout-ms", "10000"],
    );
    wait_log(&host, "Kafka Connect JSON API on http://");
    let listed = json_get(&host, "/connector-plugins").json();
    let answered = started.elapsed();
    eprintln!(
        "API answered {} ms after the start beside 3 never-returning describes",
        answered.as_millis()
    );
    assert!(answered < API_LIMIT, "the API answered after {answered:?}");
    // The scan lists files as it reaches them: all three sleepers show as loading soon after.
    let sleepers_loading = |listed: &serde_json::Value| {
        listed
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter(|row| row["status"] == json!("loading"))
                    .filter(|row| row["file"].as_str().is_some_and(|f| f.contains("sleeper-")))
                    .count()
            })
            .unwrap_or_default()
    };
    let mut listed = listed;
    // Well within the 10 s the sleepers stay loading.
    let deadline = Instant::now() + Duration::from_secs(5);
    while sleepers_loading(&listed) < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        listed = json_get(&host, "/connector-plugins").json();
    }
    assert_eq!(
        sleepers_loading(&listed),
        3,
        "the sleepers show as loading: {listed}"
    );

    // A good plugin dropped beside them serves creates within a second.
    let dropped = Instant::now();
    std::fs::copy(versioned_source(), ws.plugin_dir().join("good.wasm")).unwrap();
    let probe = json!({"connector-class": "versioned-source", "topic": "probe",
                       "filename": ws.path("probe.in").to_str().unwrap()});
    wait_for(LIMIT, "the dropped plugin to serve creates", || {
        host.create("probe", &probe.to_string()).1 == "success"
    });
    let usable = dropped.elapsed();
    eprintln!(
        "drop-to-usable beside 3 loading sleepers: {} ms",
        usable.as_millis()
    );
    assert!(usable < DROP_LIMIT, "drop-to-usable took {usable:?}");
    for sleeper in &sleepers {
        assert_eq!(
            plugin_rows(&host, sleeper)[0]["status"],
            json!("loading"),
            "the dropped plugin waited for {}",
            sleeper.display()
        );
    }

    // The sleepers end up broken, then the host is ready; a reload of the unchanged directory
    // answers without waiting for them again.
    let timed_out = format!(
        "broken plugin {}: describe did not return within 10000 ms",
        sleepers[2].display()
    );
    wait_log(&host, &timed_out);
    wait_log(&host, " ready");
    let reloaded = Instant::now();
    assert_eq!(host.get_ok("/plugin/reload"), "success");
    assert!(reloaded.elapsed() < Duration::from_secs(2));
    for sleeper in &sleepers {
        assert_eq!(plugin_rows(&host, sleeper)[0]["status"], json!("broken"));
    }
}

// ---------------------------------------------------------------------------------------------
// Reloads log only changes

#[test]
fn reloads_of_an_unchanged_directory_log_nothing() {
    let ws = Workspace::new();
    let host = ws.start();
    wait_log(&host, " ready");
    let before = host.log().lines().count();
    for _ in 0..20 {
        assert_eq!(host.get_ok("/plugin/reload"), "success");
    }
    let after = host.log();
    let new: Vec<&str> = after.lines().skip(before).collect();
    assert!(new.is_empty(), "20 reloads logged: {new:#?}");

    // A change is still reported, once.
    std::fs::copy(versioned_source(), ws.plugin_dir().join("v.wasm")).unwrap();
    assert_eq!(host.get_ok("/plugin/reload"), "success");
    assert_eq!(host.get_ok("/plugin/reload"), "success");
    assert_eq!(
        host.log()
            .matches("loaded plugin versioned-source 1.0.0")
            .count(),
        1,
        "{}",
        host.log()
    );
}

// ---------------------------------------------------------------------------------------------
// Compiled-code cache integrity

#[test]
fn a_forged_or_swapped_cache_entry_is_recompiled_never_loaded() {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::PermissionsExt;

    let ws = Workspace::new();
    let host = ws.start();
    assert!(host.terminate().success());
    let key = ws.data_dir().join("plugin-cache.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the MAC key's mode is {mode:o}");
    let entries = cache_entries(&ws.data_dir());
    assert_eq!(entries.len(), 2, "{entries:?}");

    // A writer of the cache dir changes code and writes a plain checksum where the MAC goes;
    // another entry (code and MAC) is replaced by a copy of the first (sound, but for another
    // component).
    let (original, original_mac) = (
        std::fs::read(&entries[0]).unwrap(),
        std::fs::read(mac_of(&entries[0])).unwrap(),
    );
    let mut forged = original.clone();
    let last = forged.len() - 1;
    forged[last] ^= 0x01;
    let mut forged_mac = original_mac.clone();
    forged_mac[8..40].copy_from_slice(&Sha256::digest(&forged));
    std::fs::write(&entries[0], &forged).unwrap();
    std::fs::write(mac_of(&entries[0]), &forged_mac).unwrap();
    std::fs::write(&entries[1], &original).unwrap();
    std::fs::write(mac_of(&entries[1]), &original_mac).unwrap();

    let host = ws.start();
    let log = host.log();
    for entry in &entries {
        assert!(
            log.contains(&format!(
                "compiled-code cache entry {} is unusable (MAC mismatch: corrupt, or not written by this host); recompiling",
                entry.display()
            )),
            "{log}"
        );
    }
    let compiled = log
        .lines()
        .filter(|l| l.contains("loaded plugin ") && l.contains("; compiled in "))
        .count();
    assert_eq!(compiled, 2, "{log}");

    // The recompiled code runs: a file pipeline moves a line.
    let input = ws.path("in.txt");
    let output = ws.path("out.txt");
    std::fs::write(&input, "after the forged cache\n").unwrap();
    let source =
        json!({"connector-class": SEED_SOURCE, "topic": "t", "filename": input.to_str().unwrap()});
    let sink = json!({"connector-class": "file-sink", "topicNames": "t", "filename": output.to_str().unwrap()});
    assert_eq!(host.create("src", &source.to_string()).1, "success");
    assert_eq!(host.create("dst", &sink.to_string()).1, "success");
    wait_for(LIMIT, "the line through recompiled code", || {
        read_lines(&output) == ["after the forged cache"]
    });
}

/// The MAC file of a compiled-code cache entry.
fn mac_of(entry: &Path) -> PathBuf {
    entry.with_extension("mac")
}

#[test]
fn a_forged_content_record_never_passes_one_plugin_file_off_as_another() {
    use sha2::{Digest, Sha256};

    let ws = Workspace::new();
    let host = ws.start();
    assert!(host.terminate().success());
    // What a start recorded for each plugin file: magic, MAC, the file's look, its SHA-256.
    let record = |file: &str| {
        let path = ws.plugin_dir().join(file);
        let name = Sha256::digest(path.as_os_str().as_encoded_bytes());
        let hex: String = name.iter().map(|b| format!("{b:02x}")).collect();
        ws.data_dir()
            .join("plugin-cache")
            .join(format!("{hex}.file"))
    };
    let (source, sink) = (record("file-source.wasm"), record("file-sink.wasm"));
    let (source_bytes, sink_bytes) = (
        std::fs::read(&source).unwrap(),
        std::fs::read(&sink).unwrap(),
    );
    assert_eq!(source_bytes.len(), 8 + 32 + 40 + 64, "{}", source.display());

    // A writer of the cache dir points file-source.wasm (its look, a plain checksum where the
    // MAC goes) at file-sink's content, whose compiled code is in the cache; and gives
    // file-sink.wasm the sound record of file-source.wasm.
    let mut forged = source_bytes.clone();
    forged[80..].copy_from_slice(&sink_bytes[80..]);
    let checksum = Sha256::digest(&forged[40..]);
    forged[8..40].copy_from_slice(&checksum);
    std::fs::write(&source, &forged).unwrap();
    std::fs::write(&sink, &source_bytes).unwrap();

    let host = ws.start();
    let log = host.log();
    for record in [&source, &sink] {
        assert!(
            log.contains(&format!(
                "content record {} of plugin file",
                record.display()
            )) && log
                .contains("(MAC mismatch: corrupt, or not written by this host); hashing the file"),
            "{log}"
        );
    }
    // Each file serves its own plugin, hashed anew, its code still from the cache.
    for (file, kind) in [("file-source.wasm", "source"), ("file-sink.wasm", "sink")] {
        let from = format!("({kind}) from {}", ws.plugin_dir().join(file).display());
        assert!(
            log.lines()
                .any(|l| l.contains(&from) && l.ends_with("code from the compiled-code cache")),
            "{file} does not serve its own plugin from the cache:\n{log}"
        );
    }
    // The records are sound again: the next start reads no record as unusable.
    assert!(host.terminate().success());
    let host = ws.start();
    assert!(!host.log().contains("content record"), "{}", host.log());
}

// ---------------------------------------------------------------------------------------------
// Connector names: characters, not bytes; no invisible characters

#[test]
fn connector_names_count_characters_and_refuse_invisible_ones() {
    let ws = Workspace::new();
    let host = ws.start();
    let config = |topic: &str| seed_config(&ws, "file-source", topic);

    for (name, topic) in [("é".repeat(200), "e200"), ("é".repeat(249), "e249")] {
        let answer = json_create(&host, &name, config(topic));
        assert_eq!(
            answer.status,
            201,
            "{} × é: {}",
            name.chars().count(),
            answer.body
        );
    }
    let legacy = host.create(
        &common::encode(&"ü".repeat(249)),
        &config("u249").to_string(),
    );
    assert_eq!(legacy, (200, "success".to_string()));

    for (name, problem) in [
        (
            "é".repeat(250),
            "is 250 characters long, over 249".to_string(),
        ),
        ("evil\u{202E}txt".to_string(), "U+202E".to_string()),
        ("zero\u{200B}width".to_string(), "U+200B".to_string()),
        ("\u{FEFF}bom".to_string(), "U+FEFF".to_string()),
    ] {
        let answer = json_create(&host, &name, config("bad"));
        assert_eq!(answer.status, 400, "{name:?}: {}", answer.body);
        let message = answer.json()["message"].as_str().unwrap().to_string();
        assert!(
            message.starts_with("invalid connector name ") && message.contains(&problem),
            "{name:?}: {message}"
        );
    }
    let (status, body) = host.create(
        &common::encode("evil\u{202E}txt"),
        &config("bad").to_string(),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("U+202E"), "{body}");
}
