//! The dashboard (`/ui`, issue 13) in a real browser: Debian's `chromium`, headless, driven
//! over the DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON messages ended by
//! NUL on file descriptors 3 and 4, no extra crate). Installed by the "metrics, health and
//! dashboard" block of `.ci/run`. A screenshot of each page is kept in
//! `target/dashboard-screenshots/`.

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::neighbourhood::{hostile_config, wait_failed_with};
use common::{json_create as create, json_get as get, wait_for, Workspace};
use serde_json::{json, Value};

/// A headless chromium and the one page it shows; killed when dropped.
struct Browser {
    child: Child,
    to: File,
    from: BufReader<File>,
    next_id: u64,
    session: String,
    _profile: tempfile::TempDir,
}

/// A pipe's (read, write) ends, closed on exec unless moved to 3 or 4.
fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    let done = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(done, 0, "pipe2: {}", std::io::Error::last_os_error());
    (fds[0], fds[1])
}

impl Browser {
    fn launch() -> Browser {
        let program = ["chromium", "/usr/bin/chromium"]
            .into_iter()
            .find(|p| Command::new(p).arg("--version").output().is_ok())
            .unwrap_or_else(|| {
                panic!("chromium is not installed: the 'metrics, health and dashboard' block of .ci/run installs Debian's chromium")
            });
        let profile = tempfile::tempdir().expect("profile dir");
        let (browser_reads, we_write) = pipe();
        let (we_read, browser_writes) = pipe();
        let mut command = Command::new(program);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-pipe",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only fcntl and dup2 (async-signal-safe) run between fork and exec. The ends
        // are first copied above 10, so neither can be 3 or 4 itself (dup2 onto itself would
        // keep close-on-exec) nor be overwritten by the other's dup2.
        unsafe {
            command.pre_exec(move || {
                let reads = libc::fcntl(browser_reads, libc::F_DUPFD, 10);
                let writes = libc::fcntl(browser_writes, libc::F_DUPFD, 10);
                if reads < 0 || writes < 0 || libc::dup2(reads, 3) < 0 || libc::dup2(writes, 4) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("start chromium");
        // SAFETY: the descriptors are ours and each is wrapped once.
        let (to, from) = unsafe {
            libc::close(browser_reads);
            libc::close(browser_writes);
            (File::from_raw_fd(we_write), File::from_raw_fd(we_read))
        };
        let mut browser = Browser {
            child,
            to,
            from: BufReader::new(from),
            next_id: 0,
            session: String::new(),
            _profile: profile,
        };
        let target = browser.call("Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().expect("target id").to_string();
        let attached = browser.call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("session id")
            .to_string();
        browser.call("Page.enable", json!({}));
        browser.call("Runtime.enable", json!({}));
        browser
    }

    /// Sends one DevTools command (to the page once attached) and returns its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .unwrap_or_else(|error| panic!("{method} failed: {error}"))
    }

    /// Sends one DevTools command; the protocol's error when it fails.
    fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        let mut bytes = message.to_string().into_bytes();
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        loop {
            let mut buffer = Vec::new();
            let read = self.from.read_until(0, &mut buffer).expect("read chromium");
            assert!(
                read > 0,
                "chromium closed its DevTools pipe during {method}"
            );
            buffer.pop();
            let answer: Value = serde_json::from_slice(&buffer).expect("DevTools JSON");
            if answer["id"] == json!(id) {
                return match answer.get("error") {
                    Some(error) => Err(error.clone()),
                    None => Ok(answer["result"].clone()),
                };
            }
        }
    }

    /// Evaluates `expression` in the page; returns its value.
    fn eval(&mut self, expression: &str) -> Value {
        self.try_eval(expression)
            .unwrap_or_else(|error| panic!("{expression} failed: {error}"))
    }

    /// Evaluates `expression`; the exception or protocol error when it fails (as it may while
    /// the page reloads).
    fn try_eval(&mut self, expression: &str) -> Result<Value, Value> {
        let params = json!({"expression": expression, "returnByValue": true, "awaitPromise": true});
        let result = self.try_call("Runtime.evaluate", params)?;
        match result.get("exceptionDetails") {
            Some(exception) => Err(exception.clone()),
            None => Ok(result["result"]["value"].clone()),
        }
    }

    /// Waits until `expression` is true in the page.
    fn wait(&mut self, what: &str, expression: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.try_eval(&format!("!!({expression})")) != Ok(json!(true)) {
            assert!(
                Instant::now() < deadline,
                "{what}: `{expression}` stayed false"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Opens `url` and waits for the page to have loaded.
    fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
        self.wait(
            url,
            &format!(
                "document.readyState === 'complete' && location.href === {}",
                json!(url)
            ),
        );
    }

    /// Saves a PNG of the page to `target/dashboard-screenshots/<name>.png`; returns its path.
    fn screenshot(&mut self, name: &str) -> PathBuf {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            shot["data"].as_str().unwrap_or_default(),
        )
        .expect("screenshot base64");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard-screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_dashboard_shows_failures_first_charts_pauses_and_creates_in_a_real_browser() {
    let ws = Workspace::new();
    ws.add_hostile_plugin("hostile-source.wasm");
    // A long backoff keeps the failed task FAILED while the browser looks.
    let host = common::Host::start_with(
        &ws.data_dir(),
        &ws.plugin_dir(),
        &["--restart-backoff-ms", "60000"],
    );
    let input = ws.path("in.txt");
    let text: String = (0..5000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(&input, text).expect("input");
    // Named to sort before the failed one: failures must still come first.
    let healthy = create(
        &host,
        "aaa-lines",
        json!({"connector.class": "file-source", "file": input, "topic": "lines"}),
    );
    assert_eq!(healthy.status, 201, "{}", healthy.body);
    let bomb = create(
        &host,
        "bomb",
        hostile_config("memory-bomb", json!({"limits.memory": "64MiB"})),
    );
    assert_eq!(bomb.status, 201, "{}", bomb.body);
    wait_failed_with(&host, "bomb", &["memory limit"], Duration::from_secs(30));

    let mut browser = Browser::launch();
    let ui = format!("{}/ui", host.kafka);
    browser.open(&ui);
    assert_eq!(
        browser.eval("document.querySelector('[data-testid=connector-row]').dataset.name"),
        "bomb"
    );
    let failure = browser.eval("document.querySelector('[data-testid=failed-row]').textContent");
    assert!(
        failure
            .as_str()
            .is_some_and(|f| f.contains("bomb") && f.contains("memory limit")),
        "{failure}"
    );
    browser.screenshot("overview");
    // The failed connector's event log shows its task failing, with the first line of the
    // guest's trace as the reason.
    browser.open(&format!("{ui}/connectors/bomb"));
    let events = browser.eval("document.querySelector('[data-testid=events]').textContent");
    assert!(
        events.as_str().is_some_and(|e| e.contains("task 0")
            && e.contains("FAILED")
            && e.contains("memory limit")),
        "{events}"
    );

    browser.open(&format!("{ui}/connectors"));
    browser.screenshot("connectors");
    browser.eval("document.querySelector('a[href=\"/ui/connectors/aaa-lines\"]').click()");
    browser.wait(
        "the connector page opens",
        "location.pathname === '/ui/connectors/aaa-lines' && document.readyState === 'complete'",
    );
    browser.wait(
        "the chart draws points",
        "document.querySelector('#rates-chart canvas') && Number(document.querySelector('#rates-chart').dataset.points) >= 2",
    );
    let shot = browser.screenshot("connector");
    // The README's screenshot is refreshed on request only, so a test run leaves the
    // checkout as it was: `UPDATE_README_SCREENSHOT=1 cargo test --test dashboard`.
    if std::env::var_os("UPDATE_README_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/dashboard.png");
        std::fs::copy(&shot, &docs).expect("keep the README's screenshot");
    }

    browser.eval("document.querySelector('[data-testid=pause]').click()");
    browser.wait(
        "the state shows PAUSED after the reload",
        "document.readyState === 'complete' && document.querySelector('[data-testid=connector-state]').textContent === 'PAUSED'",
    );
    wait_for(Duration::from_secs(10), "the API says PAUSED", || {
        get(&host, "/connectors/aaa-lines/status").json()["connector"]["state"] == "PAUSED"
    });
    // The event log records the operator's pause (newest first: above the connector's
    // creation, the first event).
    let rows = browser.eval(
        "Array.from(document.querySelectorAll('[data-testid=event-row]')).map(r => Array.from(r.cells).slice(1).map(c => c.textContent).join(' | '))",
    );
    let rows: Vec<&str> = (rows.as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    let paused = rows
        .iter()
        .position(|r| *r == "connector | RUNNING | PAUSED | operator: pause");
    let created = rows
        .iter()
        .position(|r| *r == "connector | — | RUNNING | created");
    assert!(
        paused.is_some() && created.is_some() && paused < created,
        "{rows:?}"
    );
    browser.screenshot("paused");

    browser.open(&format!("{ui}/create?plugin=file-source"));
    let made = ws.path("made.txt");
    std::fs::write(&made, "one\n").expect("made input");
    browser.eval(&format!(
        "document.getElementById('f-name').value = 'made'; document.getElementById('f-filename').value = {}; document.querySelector('[data-testid=create]').click()",
        json!(made)
    ));
    browser.wait(
        "the missing topic is shown beside its field",
        "document.querySelector('[data-testid=error-topic]')",
    );
    let error = browser.eval("document.querySelector('[data-testid=error-topic]').textContent");
    assert!(
        error.as_str().is_some_and(|e| e.contains("topic")),
        "{error}"
    );
    browser.screenshot("create-error");
    browser.eval(
        "document.getElementById('f-topic').value = 'made'; document.querySelector('[data-testid=create]').click()",
    );
    browser.wait(
        "the new connector's page opens",
        "location.pathname === '/ui/connectors/made' && document.readyState === 'complete'",
    );
    assert_eq!(get(&host, "/connectors/made/status").status, 200);

    browser.open(&format!("{ui}/plugins"));
    let plugins = browser.eval("document.querySelector('[data-testid=plugins]').textContent");
    assert!(plugins.as_str().is_some_and(|p| p.contains("file-source")));
    // Each version says how its code was loaded: compiled now (with the time) or cached.
    let loads = browser.eval(
        "[...document.querySelectorAll('[data-testid=load]')].map(e => e.textContent).join('|')",
    );
    let loads = loads.as_str().unwrap_or_default();
    assert!(
        !loads.is_empty()
            && loads
                .split('|')
                .all(|l| l.starts_with("compiled in ") || l.contains("compiled-code cache")),
        "load column: {loads:?}"
    );
    browser.screenshot("plugins");
    browser.open(&format!("{ui}/topics"));
    browser.screenshot("topics");
    browser.open(&format!("{ui}/topics/lines"));
    browser.wait(
        "the inspector lists records",
        "document.querySelectorAll('[data-testid=records] tbody tr').length > 0",
    );
    browser.screenshot("topic");
}

#[test]
fn dashboard_actions_need_the_dashboard_header_and_topic_records_answer_as_json() {
    let ws = Workspace::new();
    let host = ws.start();
    let input = ws.path("in.txt");
    std::fs::write(&input, "a\nb\nc\n").expect("input");
    let source = create(
        &host,
        "src",
        json!({"connector.class": "file-source", "file": input, "topic": "abc"}),
    );
    assert_eq!(source.status, 201, "{}", source.body);
    wait_for(Duration::from_secs(20), "three records", || {
        get(&host, "/topics/abc/records").json()["end_offset"] == 3
    });
    let records = get(&host, "/topics/abc/records?offset=1&limit=5").json();
    assert_eq!(records["records"][0]["offset"], 1);
    assert_eq!(records["records"][0]["value"], "b");
    assert_eq!(records["records"].as_array().map(Vec::len), Some(2));
    assert_eq!(get(&host, "/topics/nope/records").status, 404);
    assert_eq!(get(&host, "/topics/abc/records?limit=x").status, 400);
    // A cross-site form cannot set HX-Request: refused, nothing changes.
    let forged = common::call(
        "POST",
        &format!("{}/ui/connectors/src/pause", host.kafka),
        Some(""),
        &[("Content-Type", "application/x-www-form-urlencoded")],
    );
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert_eq!(
        get(&host, "/connectors/src/status").json()["connector"]["state"],
        "RUNNING"
    );
}

#[test]
fn with_a_token_the_dashboard_asks_for_it_once_and_its_cookie_opens_only_the_dashboard() {
    const TOKEN: &str = "dashboard-s3cret";
    let ws = Workspace::new();
    let host = common::Host::start_env(
        &ws.data_dir(),
        &ws.plugin_dir(),
        &[],
        &[("WASM_CONNECT_AUTH_TOKEN", TOKEN)],
    );
    let bearer = format!("Bearer {TOKEN}");
    let input = ws.path("in.txt");
    std::fs::write(&input, "a\nb\n").expect("input");
    let config = json!({"name": "lines", "config": {"connector.class": "file-source", "file": input, "topic": "lines"}});
    let made = common::call(
        "POST",
        &format!("{}/connectors", host.kafka),
        Some(&config.to_string()),
        &[("Authorization", &bearer)],
    );
    assert_eq!(made.status, 201, "{}", made.body);

    let mut browser = Browser::launch();
    let ui = format!("{}/ui", host.kafka);
    browser.open(&format!("{ui}/connectors/lines"));
    browser.wait(
        "the login page asks for the token",
        "document.querySelector('[data-testid=login] input[type=password]')",
    );
    browser.screenshot("login");
    // A wrong token: the form again, with the error.
    browser.eval(
        "document.getElementById('f-token').value = 'wrong'; document.querySelector('[data-testid=sign-in]').click()",
    );
    browser.wait(
        "the wrong token is refused",
        "document.readyState === 'complete' && document.querySelector('[data-testid=login-error]')",
    );
    browser.eval(&format!(
        "document.getElementById('f-token').value = {}; document.querySelector('[data-testid=sign-in]').click()",
        json!(TOKEN)
    ));
    browser.wait(
        "signed in, the page asked for first opens",
        "location.pathname === '/ui/connectors/lines' && document.readyState === 'complete' && document.querySelector('[data-testid=connector-state]')",
    );
    browser.open(&ui);
    assert!(browser
        .eval("document.querySelector('[data-testid=connector-row]').dataset.name")
        .as_str()
        .is_some_and(|name| name == "lines"));
    browser.screenshot("signed-in");
    browser.eval("document.querySelector('a[href=\"/ui/connectors/lines\"]').click()");
    browser.wait(
        "the cookie opens the next page too",
        "location.pathname === '/ui/connectors/lines' && document.readyState === 'complete' && document.querySelector('[data-testid=connector-state]')",
    );

    let cookies = browser.call("Network.getCookies", json!({"urls": [ui]}));
    let cookie = cookies["cookies"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["name"] == "wasm_connect_session"))
        .cloned()
        .unwrap_or_else(|| panic!("no session cookie: {cookies}"));
    assert_eq!(cookie["httpOnly"], true, "{cookie}");
    assert_eq!(cookie["sameSite"], "Strict", "{cookie}");
    assert_eq!(cookie["path"], "/ui", "{cookie}");
    let value = cookie["value"].as_str().unwrap_or_default();
    assert!(value.len() >= 64 && !value.contains(TOKEN), "{cookie}");
    let with_cookie = format!("wasm_connect_session={value}");
    let page = common::call(
        "GET",
        &format!("{ui}/connectors/lines"),
        None,
        &[("Cookie", &with_cookie)],
    );
    assert_eq!(page.status, 200, "the cookie opens the dashboard");
    for api in ["/connectors", "/connectors/lines/status", "/metrics"] {
        let answer = common::call(
            "GET",
            &format!("{}{api}", host.kafka),
            None,
            &[("Cookie", &with_cookie)],
        );
        assert_eq!(
            answer.status, 401,
            "{api} with only the cookie: {}",
            answer.body
        );
    }
    // Mutations still need the dashboard's header, cookie or not.
    let forged = common::call(
        "POST",
        &format!("{ui}/connectors/lines/pause"),
        Some(""),
        &[
            ("Cookie", &with_cookie),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
    );
    assert_eq!(forged.status, 403, "{}", forged.body);

    // A wrong token waits before its answer, against guessing.
    let started = Instant::now();
    let guess = common::call(
        "POST",
        &format!("{ui}/login"),
        Some("token=guess&next=%2Fui"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
    );
    assert_eq!(guess.status, 401, "{}", guess.body);
    assert!(guess.body.contains("wrong token"), "{}", guess.body);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // Logging out ends the session: the same cookie no longer opens anything.
    browser.eval("document.querySelector('[data-testid=logout]').click()");
    browser.wait(
        "logged out, the login page shows",
        "location.pathname === '/ui/login' && document.readyState === 'complete'",
    );
    let after = common::call(
        "GET",
        &format!("{ui}/connectors/lines"),
        None,
        &[("Cookie", &with_cookie)],
    );
    assert_eq!(after.status, 401, "{}", after.body);
    assert!(after.body.contains("f-token"), "{}", after.body);
}
