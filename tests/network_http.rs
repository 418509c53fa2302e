//! The network capability and the HTTP connectors (issue 12), through a real
//! `wasm-connect` process and a real HTTP server on a loopback port (axum, started by the
//! test) that records every request and answers as the test scripts it: 503s, 429s, slow
//! answers, 400s, a cursor-paginated API.
//!
//! - file → `http-sink` delivers every line exactly once among the 2xx-answered requests,
//!   retrying 503, 429 and a request that timed out, and `/metrics` counts the bytes of
//!   the request bodies it sent; a 400 fails the task with the answer.
//! - A sink whose `network.allow` does not list the server, or lists nothing, fails with
//!   `not in network.allow` / `network.allow is not set`, and the server receives nothing;
//!   `localhost` (a name resolving to loopback) is refused unless `127.0.0.1` is listed too.
//! - `http-source` pages through a cursor API into a topic → file, picks up items appended
//!   to the last page, and resumes where it stopped after a host restart.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use serde_json::{json, Value};

use common::metrics::{scrape, value};
use common::{json_create, json_get, json_send, read_lines, wait_for, Host, Workspace};

/// One request the test server received.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    /// Path and query.
    uri: String,
    headers: BTreeMap<String, String>,
    body: String,
    /// Bytes of the body as it arrived.
    body_bytes: usize,
    /// The status it was answered with.
    status: u16,
}

/// How the server answers request number `n` (from 0): status, body, delay.
type Script = dyn Fn(usize, &Received) -> (u16, String, Duration) + Send + Sync;

struct ServerState {
    received: Mutex<Vec<Received>>,
    script: Box<Script>,
}

/// An HTTP server on a free loopback port, stopped when dropped.
struct TestServer {
    address: SocketAddr,
    state: Arc<ServerState>,
    _runtime: tokio::runtime::Runtime,
}

impl TestServer {
    fn start(
        script: impl Fn(usize, &Received) -> (u16, String, Duration) + Send + Sync + 'static,
    ) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("test server runtime");
        let state = Arc::new(ServerState {
            received: Mutex::new(Vec::new()),
            script: Box::new(script),
        });
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the test server");
        let address = listener.local_addr().expect("test server address");
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(state.clone());
        runtime.spawn(async move { axum::serve(listener, app).await });
        TestServer {
            address,
            state,
            _runtime: runtime,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }
}

async fn answer(
    State(state): State<Arc<ServerState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let mut received = Received {
        method: method.to_string(),
        uri: uri.to_string(),
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
        body_bytes: body.len(),
        status: 0,
    };
    let n = state.received.lock().unwrap().len();
    let (status, text, delay) = (state.script)(n, &received);
    received.status = status;
    state.received.lock().unwrap().push(received);
    tokio::time::sleep(delay).await;
    (StatusCode::from_u16(status).unwrap(), text)
}

/// A workspace with the bundled file and HTTP connectors.
fn workspace() -> Workspace {
    let ws = Workspace::new();
    for plugin in ["http-sink.wasm", "http-source.wasm"] {
        ws.add_bundled_plugin(plugin);
    }
    ws
}

/// Starts a host on `ws` and waits until its four plugins are loaded (compiling them takes
/// seconds on a busy machine; the host answers before).
fn start(ws: &Workspace) -> Host {
    let host = ws.start();
    wait_for(Duration::from_secs(120), "the four plugins loaded", || {
        let plugins = json_get(&host, "/connector-plugins").body;
        ["file-source", "file-sink", "http-sink", "http-source"]
            .iter()
            .all(|name| plugins.contains(&format!("\"{name}\"")))
    });
    host
}

fn create(host: &Host, name: &str, config: Value) {
    let answer = json_create(host, name, config);
    assert_eq!(answer.status, 201, "create {name}: {}", answer.body);
}

/// State and trace of task 0 of `name`.
fn task(host: &Host, name: &str) -> (String, String) {
    let status = json_get(host, &format!("/connectors/{name}/status")).json();
    let task = &status["tasks"][0];
    (
        task["state"].as_str().unwrap_or_default().to_string(),
        task["trace"].as_str().unwrap_or_default().to_string(),
    )
}

/// Waits until task 0 of `name` is FAILED with `word` in its trace; returns the trace.
fn failed_with(host: &Host, name: &str, word: &str) -> String {
    let mut last = (String::new(), String::new());
    wait_for(
        Duration::from_secs(30),
        &format!("{name} FAILED with {word:?}"),
        || {
            last = task(host, name);
            last.0 == "FAILED" && last.1.contains(word)
        },
    );
    last.1
}

/// A file-source writing `lines` into topic `topic`.
fn source_of_lines(host: &Host, ws: &Workspace, topic: &str, lines: &[String]) {
    let input = ws.path(&format!("{topic}.txt"));
    std::fs::write(
        &input,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    create(
        host,
        &format!("{topic}-in"),
        json!({"connector.class": "file-source", "file": input.display().to_string(), "topic": topic}),
    );
}

/// The values of the records the 2xx-answered requests carried (each body a JSON array).
fn delivered(server: &TestServer) -> Vec<String> {
    server
        .received()
        .iter()
        .filter(|r| (200..300).contains(&r.status))
        .flat_map(|r| {
            let values: Vec<Value> = serde_json::from_str(&r.body)
                .unwrap_or_else(|e| panic!("body is not a JSON array ({e}): {}", r.body));
            values
        })
        .map(|v| match v {
            Value::String(s) => s,
            other => other.to_string(),
        })
        .collect()
}

#[test]
fn http_sink_delivers_every_line_once_per_2xx_and_retries_503_429_and_slow_answers() {
    let ws = workspace();
    let host = start(&ws);
    // Request 1 is answered 503, request 3 429, request 5 too late (after the request
    // timeout), every other one 200.
    let server = TestServer::start(|n, _| match n {
        1 => (503, "busy".into(), Duration::ZERO),
        3 => (429, "slow down".into(), Duration::ZERO),
        5 => (200, "late".into(), Duration::from_millis(1500)),
        _ => (200, "ok".into(), Duration::ZERO),
    });
    let lines: Vec<String> = (0..95)
        .map(|i| match i % 3 {
            0 => format!("{{\"n\":{i}}}"),
            1 => format!("plain line {i}"),
            _ => format!("héllo {i} \"quoted\""),
        })
        .collect();
    source_of_lines(&host, &ws, "orders", &lines);
    create(
        &host,
        "to-api",
        json!({"connector.class": "io.confluent.connect.http.HttpSinkConnector",
               "topics": "orders", "http.api.url": server.url("/ingest?x=1"),
               "request.method": "PUT", "batch.max.size": "10",
               "headers": "X-Api-Key:k1|X-Trace: t", "retry.backoff.ms": "20",
               "http.request.timeout.ms": "500",
               "network.allow": server.address.to_string()}),
    );
    let expected: Vec<String> = lines
        .iter()
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(v) => v.to_string(),
            Err(_) => l.clone(),
        })
        .collect();
    // The late answer's request was delivered too, from the server's view: its records
    // are sent again (at least once); every other record exactly once.
    let late = || -> Vec<String> {
        let received = server.received();
        let Some(late) = received.get(5) else {
            return Vec::new();
        };
        serde_json::from_str::<Vec<Value>>(&late.body)
            .unwrap()
            .iter()
            .map(|v| v.as_str().map_or(v.to_string(), String::from))
            .collect()
    };
    wait_for(Duration::from_secs(60), "every line delivered", || {
        let late = late();
        !late.is_empty() && delivered(&server).len() >= expected.len() + late.len()
    });
    let late = late();
    let received = server.received();
    let mut once = delivered(&server);
    for value in &late {
        let at = once.iter().position(|v| v == value).unwrap();
        once.remove(at);
    }
    assert_eq!(once, expected, "records delivered by 2xx answers, in order");
    let statuses: Vec<u16> = received.iter().map(|r| r.status).collect();
    assert_eq!(
        &statuses[..6],
        [200, 503, 200, 429, 200, 200],
        "{statuses:?}"
    );
    assert_eq!(received[1].body, received[2].body, "the 503 was retried");
    assert_eq!(received[3].body, received[4].body, "the 429 was retried");
    assert_eq!(
        received[5].body, received[6].body,
        "the timed-out request was retried"
    );
    let first = &received[0];
    assert_eq!(first.method, "PUT");
    assert_eq!(first.uri, "/ingest?x=1");
    assert_eq!(first.headers["x-api-key"], "k1");
    assert_eq!(first.headers["x-trace"], "t");
    assert_eq!(first.headers["content-type"], "application/json");
    for request in &received {
        let records = serde_json::from_str::<Vec<Value>>(&request.body)
            .unwrap()
            .len();
        assert!(
            (1..=10).contains(&records),
            "{records} records in one request"
        );
    }
    assert_eq!(task(&host, "to-api").0, "RUNNING");

    // /metrics counts the task's network bytes: every request body the server received
    // was sent (counted once the put or flush that sent it returned), and the answers'
    // bodies were received.
    let body_bytes: usize = received.iter().map(|r| r.body_bytes).sum();
    let labels = [("connector", "to-api"), ("task", "0")];
    let mut counted = (None, None);
    wait_for(
        Duration::from_secs(30),
        "the request bodies counted in /metrics",
        || {
            let samples = scrape(&host, None);
            counted = (
                value(&samples, "wasm_connect_network_bytes_sent_total", &labels),
                value(
                    &samples,
                    "wasm_connect_network_bytes_received_total",
                    &labels,
                ),
            );
            counted.0.is_some_and(|sent| sent >= body_bytes as f64)
        },
    );
    assert_eq!(
        counted.0,
        Some(body_bytes as f64),
        "bytes sent are the request bodies, each counted once"
    );
    assert!(
        counted.1.is_some_and(|received| received > 0.0),
        "bytes received: {counted:?}"
    );
}

#[test]
fn http_sink_fails_with_the_answer_on_400() {
    let ws = workspace();
    let host = start(&ws);
    let server = TestServer::start(|_, _| (400, "field 'n' is required".into(), Duration::ZERO));
    source_of_lines(&host, &ws, "bad", &["{}".to_string()]);
    create(
        &host,
        "rejected",
        json!({"connector.class": "http-sink", "topicNames": "bad",
               "http.api.url": server.url("/in"), "auth.type": "bearer", "bearer.token": "tok",
               "network.allow": server.address.to_string()}),
    );
    let trace = failed_with(&host, "rejected", "answered 400");
    assert!(trace.contains("field 'n' is required"), "{trace}");
    assert!(
        trace.contains(&format!("POST {}", server.url("/in"))),
        "{trace}"
    );
    let received = server.received();
    assert_eq!(received[0].headers["authorization"], "Bearer tok");
    assert!(!trace.contains("tok\""), "{trace}");
}

#[test]
fn a_sink_reaches_only_what_network_allow_lists() {
    let ws = workspace();
    let host = start(&ws);
    let server = TestServer::start(|_, _| (200, "ok".into(), Duration::ZERO));
    let other = common::free_port();
    source_of_lines(&host, &ws, "t", &["1".to_string()]);
    let sink = |name: &str, url: String, allow: Option<String>| {
        let mut config = json!({"connector.class": "http-sink", "topics": "t", "http.api.url": url,
                                "max.retries": "0"});
        if let Some(allow) = allow {
            config["network.allow"] = json!(allow);
        }
        create(&host, name, config);
    };
    sink(
        "other-port",
        server.url("/"),
        Some(format!("127.0.0.1:{other}")),
    );
    sink("nothing", server.url("/"), None);
    let port = server.address.port();
    let localhost = format!("http://localhost:{port}/");
    sink(
        "by-name",
        localhost.clone(),
        Some(format!("localhost:{port}")),
    );
    let trace = failed_with(&host, "other-port", "not in network.allow");
    assert!(
        trace.contains(&format!(
            "connect to {} refused: not in network.allow",
            server.address
        )),
        "{trace}"
    );
    failed_with(&host, "nothing", "network.allow is not set");
    let trace = failed_with(&host, "by-name", "not a public address");
    assert!(trace.contains("localhost"), "{trace}");
    assert!(server.received().is_empty(), "{:?}", server.received());
    // Listing the loopback address as well lets the name through.
    let allowed = json!({"connector.class": "http-sink", "topics": "t", "http.api.url": localhost,
                         "network.allow": format!("localhost:{port}, 127.0.0.1, ::1")});
    let answer = json_send(&host, "PUT", "/connectors/by-name/config", &allowed);
    assert!(answer.status < 300, "{}", answer.body);
    wait_for(Duration::from_secs(30), "the record sent by name", || {
        !server.received().is_empty()
    });
    assert_eq!(delivered(&server), ["1"]);
    assert_eq!(
        server.received()[0].headers["host"],
        format!("localhost:{port}")
    );
}

/// A cursor API over `items`: page `c<k>` holds items `2k` and `2k+1` and names `c<k+1>`
/// as its next page while there is one; the last page names none.
fn cursor_page(items: &[String], uri: &str) -> (u16, String, Duration) {
    let page: usize = uri
        .split("cursor=c")
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let start = (page * 2).min(items.len());
    let end = (start + 2).min(items.len());
    let data: Vec<Value> = items[start..end].iter().map(|i| json!({"id": i})).collect();
    let next = if end < items.len() {
        json!(format!("c{}", page + 1))
    } else {
        Value::Null
    };
    let body = json!({"result": {"items": data}, "paging": {"next": next}});
    (200, body.to_string(), Duration::ZERO)
}

#[test]
fn http_source_pages_a_cursor_api_into_a_topic_and_resumes_after_a_restart() {
    let ws = workspace();
    let items: Arc<Mutex<Vec<String>>> =
        Arc::new(Mutex::new((0..7).map(|i| format!("item{i}")).collect()));
    let served = items.clone();
    let server =
        TestServer::start(move |_, request| cursor_page(&served.lock().unwrap(), &request.uri));
    let out = ws.path("items.out");
    let host = start(&ws);
    create(
        &host,
        "api-in",
        json!({"connector.class": "io.confluent.connect.http.HttpSourceConnector",
               "url": server.url("/items?cursor=${offset}"), "http.offset.mode": "CURSOR_PAGINATION",
               "http.initial.offset": "c0", "http.response.data.json.pointer": "/result/items",
               "http.next.page.json.pointer": "/paging/next", "request.interval.ms": "100",
               "topic": "items", "network.allow": server.address.to_string()}),
    );
    create(
        &host,
        "items-out",
        json!({"connector.class": "file-sink", "topics": "items", "file": out.display().to_string()}),
    );
    let expected = |n: usize| -> Vec<String> {
        (0..n)
            .map(|i| json!({"id": format!("item{i}")}).to_string())
            .collect()
    };
    wait_for(Duration::from_secs(30), "7 items in the file", || {
        read_lines(&out).len() >= 7
    });
    assert_eq!(read_lines(&out), expected(7));
    // An item appended to the last page is picked up without repeating the others.
    items.lock().unwrap().push("item7".into());
    wait_for(Duration::from_secs(30), "item7 in the file", || {
        read_lines(&out).len() >= 8
    });
    assert_eq!(read_lines(&out), expected(8));
    host.terminate();
    // While the host is down, the API grows: a next page appears.
    items
        .lock()
        .unwrap()
        .extend(["item8".to_string(), "item9".to_string()]);
    let before = server.received().len();
    let host = start(&ws);
    wait_for(Duration::from_secs(30), "10 items in the file", || {
        read_lines(&out).len() >= 10
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(read_lines(&out), expected(10));
    let resumed = &server.received()[before];
    assert!(
        !resumed.uri.ends_with("cursor=c0"),
        "the restarted source asked for the first page again: {}",
        resumed.uri
    );
    drop(host);
}
