//! The trust boundary between the host and a plugin's output (issues 10 and 18): a real
//! `wasm-connect` process runs connectors that really attack through their task configs
//! (`tests/hostile/hostile-source` behaviour `task-config-attack`, `tests/hostile/hostile-sink`),
//! and the tests assert that the attack gets nothing:
//!   - `${env:…}` / `${file:…}` references a plugin adds to its task config stay literal text,
//!     and the host's auth token shows nowhere (API answers, host log, topics, files);
//!   - `network.allow` in a task config grants nothing;
//!   - a path-typed key the plugin sets for itself fails the create, naming the key, and a
//!     grant of the host's own data or plugin dir is refused, naming the key;
//!   - a sink that rewrites its topics in its task config gets only the user's topics;
//!   - values resolved from the user's references show as the references in task traces
//!     (JSON API) and in the host log, never as the values.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{call, read_lines, wait_for, Answer, Host, Workspace};
use serde_json::{json, Value};

/// The host's API token in the attack test: what the hostile plugin wants.
const TOKEN: &str = "tok-7f3a9c1e5b-never-shown";
/// The `password` of the properties file the hostile plugin asks the host to read.
const FILE_SECRET: &str = "pw-44d0be19-never-shown";

/// `tests/fixtures/hostile/<name>`, copied into the workspace's plugin dir.
fn install_fixture(ws: &Workspace, name: &str) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/hostile")
        .join(name);
    std::fs::copy(&from, ws.plugin_dir().join(name))
        .unwrap_or_else(|e| panic!("copy fixture {name} (run tests/hostile/build.sh): {e}"));
}

/// `method path` on the JSON API, with the host's token.
fn json_call(host: &Host, method: &str, path: &str, body: Option<&Value>) -> Answer {
    let auth = host.auth();
    let headers: Vec<(&str, &str)> = auth.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let body = body.map(Value::to_string);
    call(
        method,
        &format!("{}{path}", host.kafka),
        body.as_deref(),
        &headers,
    )
}

/// Creates `name` over the JSON API; returns the answer.
fn create(host: &Host, name: &str, config: Value) -> Answer {
    let body = json!({"name": name, "config": config});
    json_call(host, "POST", "/connectors", Some(&body))
}

/// Creates `name` and asserts it was created.
fn create_ok(host: &Host, name: &str, config: Value) {
    let answer = create(host, name, config);
    assert_eq!(answer.status, 201, "create {name}: {}", answer.body);
}

/// Task 0 of `name` as the JSON API shows it.
fn task_status(host: &Host, name: &str) -> Value {
    let answer = json_call(host, "GET", &format!("/connectors/{name}/status"), None);
    answer.json()["tasks"][0].clone()
}

/// Waits until task 0 of `name` is FAILED with a trace containing `word`; returns the trace.
fn failed_trace(host: &Host, name: &str, word: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let task = task_status(host, name);
        let trace = task["trace"].as_str().unwrap_or_default().to_string();
        if task["state"] == "FAILED" && trace.contains(word) {
            return trace;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never FAILED with {word:?} in its trace; last: {task}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// Panics when `secret` shows in any answer about `names` (both APIs, status and configs),
/// in the host log, or in any file under `root` except `except`.
fn assert_nowhere(host: &Host, names: &[&str], secret: &str, root: &Path, except: &[&Path]) {
    for name in names {
        for path in [
            format!("/connectors/{name}/status"),
            format!("/connectors/{name}/config"),
            format!("/connectors/{name}/tasks"),
            format!("/connectors/{name}"),
        ] {
            let answer = json_call(host, "GET", &path, None);
            assert!(
                !answer.body.contains(secret),
                "JSON API {path}: {}",
                answer.body
            );
        }
        for path in [
            format!("/connectors/{name}/status"),
            format!("/connectors/{name}/config"),
        ] {
            let body = host.get_ok(&path);
            assert!(!body.contains(secret), "legacy API {path}: {body}");
        }
    }
    assert!(
        !host.log().contains(secret),
        "the host log shows {secret:?}"
    );
    for file in files_under(root) {
        if except.contains(&file.as_path()) {
            continue;
        }
        let bytes = std::fs::read(&file).unwrap_or_default();
        let leaked = bytes
            .windows(secret.len())
            .any(|window| window == secret.as_bytes());
        assert!(!leaked, "{secret:?} ended up in {}", file.display());
    }
}

#[test]
fn task_configs_get_no_secrets_no_network_and_no_paths_of_their_own() {
    let ws = Workspace::new();
    install_fixture(&ws, "hostile-source.wasm");
    let host = Host::start_env(
        &ws.data_dir(),
        &ws.plugin_dir(),
        &[],
        &[("WASM_CONNECT_AUTH_TOKEN", TOKEN)],
    );
    let creds = ws.path("creds.properties");
    std::fs::write(&creds, format!("user=alice\npassword={FILE_SECRET}\n")).expect("creds");
    let rest = host.base.trim_start_matches("http://").to_string();
    let plugin_dir = ws.plugin_dir().display().to_string();
    let attack = |extra: Value| {
        let mut config = json!({
            "connector.class": "hostile-source",
            "behaviour": "task-config-attack",
            "topic": "loot",
            "secret_file": creds.display().to_string(),
            "addr": rest,
        });
        for (key, value) in extra.as_object().expect("an object") {
            config[key] = value.clone();
        }
        config
    };

    // Its own path-typed key, pointing at the plugin dir: the create fails naming the key.
    let answer = create(&host, "escalate", attack(json!({"plugin_dir": plugin_dir})));
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(
        answer
            .body
            .contains("escalate.path: the connector's task config names a path"),
        "{}",
        answer.body
    );
    let (_, legacy) = host.create(
        "escalate",
        &attack(json!({"plugin_dir": plugin_dir})).to_string(),
    );
    assert!(legacy.contains("escalate.path"), "{legacy}");
    assert_eq!(
        json_call(&host, "GET", "/connectors/escalate", None).status,
        404
    );

    // The user naming the host's own dirs is refused too, naming the key.
    let cache = ws.data_dir().join("plugin-cache").join("x.cwasm");
    for (file, dir) in [
        (ws.plugin_dir().join("owned.wasm"), "plugin dir"),
        (cache, "data dir"),
    ] {
        let config = attack(json!({"escalate.path": file.display().to_string()}));
        let answer = create(&host, "host-dirs", config);
        assert_eq!(answer.status, 400, "{}", answer.body);
        let expected = format!("escalate.path: {} is in the host's {dir}", file.display());
        assert!(answer.body.contains(&expected), "{}", answer.body);
    }
    assert!(!ws.plugin_dir().join("owned.wasm").exists());

    // Without a path of its own the create succeeds; the task sees its references as text
    // and cannot reach the host's REST port.
    create_ok(&host, "attack", attack(json!({})));
    let loot = ws.path("loot.txt");
    create_ok(
        &host,
        "loot-sink",
        json!({"connector.class": "file-sink", "topics": "loot", "file": loot.display().to_string()}),
    );
    wait_for(Duration::from_secs(30), "the attack's verdict", || {
        !read_lines(&loot).is_empty()
    });
    let verdict = read_lines(&loot).join("\n");
    eprintln!("verdict: {verdict}");
    assert!(
        verdict.starts_with("env=${env:WASM_CONNECT_AUTH_TOKEN} file=${file:"),
        "{verdict}"
    );
    assert!(
        verdict.contains(&format!("connect {rest}: denied")),
        "{verdict}"
    );
    let tasks = json_call(&host, "GET", "/connectors/attack/tasks", None).body;
    assert!(!tasks.contains("network.allow"), "{tasks}");
    assert_eq!(task_status(&host, "attack")["state"], "RUNNING");
    for secret in [TOKEN, FILE_SECRET] {
        assert_nowhere(
            &host,
            &["attack", "loot-sink", "escalate"],
            secret,
            ws.dir.path(),
            &[creds.as_path()],
        );
    }
}

#[test]
fn a_sink_that_rewrites_its_topics_gets_only_the_users_topics() {
    let ws = Workspace::new();
    install_fixture(&ws, "hostile-sink.wasm");
    let host = ws.start();
    let (private, mine) = (ws.path("private.txt"), ws.path("mine.txt"));
    std::fs::write(&private, "neighbour-secret-1\nneighbour-secret-2\n").expect("input");
    std::fs::write(&mine, "mine-1\nmine-2\n").expect("input");
    for (name, file, topic) in [("neighbour", &private, "private"), ("mine", &mine, "mine")] {
        create_ok(
            &host,
            name,
            json!({"connector.class": "file-source", "file": file.display().to_string(), "topic": topic}),
        );
    }
    let stolen = ws.path("stolen.txt");
    create_ok(
        &host,
        "thief",
        json!({"connector.class": "hostile-sink", "topicNames": "mine", "steal_topic": "private",
               "filename": stolen.display().to_string()}),
    );
    let neighbour_sink = ws.path("neighbour-out.txt");
    create_ok(
        &host,
        "neighbour-sink",
        json!({"connector.class": "file-sink", "topics": "private", "file": neighbour_sink.display().to_string()}),
    );
    wait_for(Duration::from_secs(30), "both topics delivered", || {
        read_lines(&stolen).len() >= 2 && read_lines(&neighbour_sink).len() >= 2
    });
    // One more line for each: the thief had every chance to receive the neighbour's.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(read_lines(&stolen), ["mine: mine-1", "mine: mine-2"]);
    let config = host.get_ok("/connectors/thief/config");
    let tasks = config.split("TaskConfigs:").nth(1).unwrap_or_default();
    assert!(tasks.contains("\"topicNames\":\"mine\""), "{config}");
    for key in ["topicNames", "topics"] {
        let stolen = format!("\"{key}\":\"private\"");
        assert!(!tasks.contains(&stolen), "{config}");
    }
}

#[test]
fn resolved_references_show_as_references_in_traces_and_the_log() {
    let ws = Workspace::new();
    let input = ws.path("in.txt");
    std::fs::write(&input, "a\n").expect("input");
    let hosts = "secret-host-mark1.invalid:9";
    let env_out = ws.path("missing-mark2/out.txt").display().to_string();
    let file_out = ws.path("missing-mark3/out.txt").display().to_string();
    let creds = ws.path("creds.properties");
    std::fs::write(&creds, format!("out={file_out}\n")).expect("creds");
    let host = Host::start_env(
        &ws.data_dir(),
        &ws.plugin_dir(),
        &[],
        &[("TRUST_HOSTS", hosts), ("TRUST_OUT", env_out.as_str())],
    );
    let file_ref = format!("${{file:{}:out}}", creds.display());
    create_ok(
        &host,
        "net",
        json!({"connector.class": "file-source", "file": input.display().to_string(), "topic": "x",
               "network.allow": "${env:TRUST_HOSTS}"}),
    );
    for (name, reference) in [
        ("sink-env", "${env:TRUST_OUT}"),
        ("sink-file", file_ref.as_str()),
    ] {
        create_ok(
            &host,
            name,
            json!({"connector.class": "file-sink", "topics": "x", "file": reference}),
        );
    }
    let net = failed_trace(&host, "net", "network.allow: cannot resolve");
    assert!(net.contains("${env:TRUST_HOSTS}"), "{net}");
    let sink_env = failed_trace(&host, "sink-env", "cannot open");
    assert!(
        sink_env.contains("cannot open ${env:TRUST_OUT}"),
        "{sink_env}"
    );
    let sink_file = failed_trace(&host, "sink-file", "cannot open");
    assert!(
        sink_file.contains(&format!("cannot open {file_ref}")),
        "{sink_file}"
    );
    let log = host.log();
    for reference in ["${env:TRUST_HOSTS}", "${env:TRUST_OUT}", file_ref.as_str()] {
        assert!(
            log.contains(reference),
            "the host log never names {reference}"
        );
    }
    for secret in ["mark1", "mark2", "mark3"] {
        assert_nowhere(
            &host,
            &["net", "sink-env", "sink-file"],
            secret,
            &ws.data_dir(),
            &[],
        );
    }
}
