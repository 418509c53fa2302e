//! One worker, many connectors (issue 17): a real `wasm-connect` process on loopback.
//!
//! 1. The file pipeline (file-source → topic → file-sink, `SCALE_LINES` lines of 100 B)
//!    alone: records per second.
//! 2. `SCALE_CONNECTORS` (1,000) file sources on empty files created through the JSON API:
//!    the time to create them, then the process's RSS and its CPU use (% of one core) over
//!    `SCALE_IDLE_S` (10) seconds while they idle. They wait for a change in their
//!    directory (`limits.poll.watched.ms`, 10 s at most); `SCALE_WATCHED_MS=1000` sets it to
//!    the 1 s poll ceiling, which is polling as before the watch.
//! 3. REST under load: a fixed-rate load generator (`SCALE_RATE`, 5,000 requests/s, for
//!    `SCALE_LOAD_S` seconds; loopback, bounded in count and time) on
//!    `GET /connectors/{c}/status` of both APIs, and on `/connectors?expand=status` at
//!    `SCALE_EXPAND_RATE` (100/s): p50 and p99 from each request's scheduled time (so a
//!    generator that falls behind counts the wait).
//! 4. The file pipeline again beside the idle connectors: records per second, and the
//!    ratio to alone.
//!
//! Goals: create ≤ 10 s, RSS ≤ 512 MiB, idle CPU ≤ 2 % of a core, pipeline beside ≥ 0.9×
//! alone, p99 ≤ 5 ms. Run: `cargo bench --bench scale`.

mod common;
#[path = "../../tests/common/mod.rs"]
mod harness;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{env_count, write_input, LINE_BYTES};
use harness::{call, cpu_time, json_get, json_send, rss_kib, Host, Workspace};
use serde_json::json;

fn main() {
    let lines = env_count("SCALE_LINES", 1_000_000);
    let connectors = env_count("SCALE_CONNECTORS", 1_000);
    let idle_window = Duration::from_secs(env_count("SCALE_IDLE_S", 10) as u64);
    let rate = env_count("SCALE_RATE", 5_000) as f64;
    let expand_rate = env_count("SCALE_EXPAND_RATE", 100) as f64;
    let load_window = Duration::from_secs(env_count("SCALE_LOAD_S", 3) as u64);
    let watched_ms = env_count("SCALE_WATCHED_MS", 10_000);
    println!("scale benchmark: {connectors} idle file sources on one worker; pipeline of {lines} lines of {LINE_BYTES} B");

    let ws = Workspace::new();
    let host = ws.start();
    let input = ws.path("in.txt");
    write_input(&input, lines).expect("write input");

    let alone = pipeline(&host, &ws, &input, "alone", lines);
    println!(
        "pipeline alone: {:.0} rec/s",
        lines as f64 / alone.as_secs_f64()
    );

    let started = Instant::now();
    for i in 0..connectors {
        let file = ws.path(&format!("idle{i}.txt"));
        std::fs::write(&file, "").expect("idle input");
        let config = json!({
            "connector.class": "file-source",
            "file": file,
            "topic": "idle",
            "limits.poll.watched.ms": watched_ms.to_string(),
        });
        let answer = json_send(
            &host,
            "PUT",
            &format!("/connectors/idle{i}/config"),
            &config,
        );
        assert_eq!(answer.status, 201, "create idle{i}: {}", answer.body);
    }
    let created = started.elapsed();
    wait_all_running(&host, connectors);
    println!(
        "created {connectors} connectors through the REST API in {:.2} s ({:.2} s until all RUNNING)",
        created.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    // The idle pauses reach their 1 s ceiling within about a second; the sources wait for a
    // change 3 s after the last one (the last idle file created).
    std::thread::sleep(Duration::from_secs(5));
    let cpu_before = cpu_time(host.pid());
    std::thread::sleep(idle_window);
    let cpu = cpu_time(host.pid()) - cpu_before;
    println!(
        "idle (limits.poll.watched.ms {watched_ms}): RSS {} MiB, CPU {:.2}% of one core over {} s ({:.3} s of CPU)",
        rss_kib(host.pid()) / 1024,
        100.0 * cpu.as_secs_f64() / idle_window.as_secs_f64(),
        idle_window.as_secs(),
        cpu.as_secs_f64()
    );

    let names: Vec<String> = (0..connectors).map(|i| format!("idle{i}")).collect();
    let kafka: Vec<String> = names
        .iter()
        .map(|n| format!("{}/connectors/{n}/status", host.kafka))
        .collect();
    let legacy: Vec<String> = names
        .iter()
        .map(|n| format!("{}/connectors/{n}/status", host.base))
        .collect();
    let expand = vec![format!("{}/connectors?expand=status", host.kafka)];
    for (what, urls, rate) in [
        ("GET /connectors/{c}/status (JSON API)", &kafka, rate),
        ("GET /connectors/{c}/status (RocketMQ API)", &legacy, rate),
        ("GET /connectors?expand=status", &expand, expand_rate),
    ] {
        let load = fixed_rate(urls, rate, load_window);
        println!(
            "{what} at {rate:.0} req/s for {} s: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} requests, {} failed, {:.0} req/s achieved)",
            load_window.as_secs(),
            load.percentile(0.50),
            load.percentile(0.99),
            load.percentile(1.0),
            load.latencies.len(),
            load.failed,
            load.achieved
        );
    }

    let beside = pipeline(&host, &ws, &input, "beside", lines);
    println!(
        "pipeline beside {connectors} idle connectors: {:.0} rec/s = {:.2}x alone",
        lines as f64 / beside.as_secs_f64(),
        alone.as_secs_f64() / beside.as_secs_f64()
    );
}

/// Runs the file pipeline through topic `name` until its output holds every line, then
/// deletes its two connectors; returns the time from the first create.
fn pipeline(host: &Host, ws: &Workspace, input: &Path, name: &str, lines: usize) -> Duration {
    let output = ws.path(&format!("{name}.out"));
    let started = Instant::now();
    for (connector, config) in [
        (
            format!("{name}-src"),
            json!({"connector.class": "file-source", "file": input, "topic": name}),
        ),
        (
            format!("{name}-sink"),
            json!({"connector.class": "file-sink", "file": output, "topics": name}),
        ),
    ] {
        let answer = json_send(
            host,
            "PUT",
            &format!("/connectors/{connector}/config"),
            &config,
        );
        assert_eq!(answer.status, 201, "create {connector}: {}", answer.body);
    }
    let expected = (lines * (LINE_BYTES + 1)) as u64;
    let deadline = Instant::now() + Duration::from_secs(600);
    while std::fs::metadata(&output).map_or(0, |m| m.len()) < expected {
        assert!(
            Instant::now() < deadline,
            "the {name} pipeline did not finish"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = started.elapsed();
    for connector in [format!("{name}-src"), format!("{name}-sink")] {
        let url = format!("{}/connectors/{connector}", host.kafka);
        assert_eq!(
            call("DELETE", &url, None, &[]).status,
            204,
            "delete {connector}"
        );
    }
    elapsed
}

/// Waits until `/connectors?expand=status` shows `count` connectors whose tasks all run.
fn wait_all_running(host: &Host, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let listing = json_get(host, "/connectors?expand=status").json();
        let running = listing.as_object().map_or(0, |all| {
            all.values()
                .filter(|c| {
                    c["status"]["tasks"]
                        .as_array()
                        .is_some_and(|t| !t.is_empty() && t.iter().all(|t| t["state"] == "RUNNING"))
                })
                .count()
        });
        if running >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {running} of {count} connectors run"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What a fixed-rate run measured.
struct Load {
    /// Milliseconds from each request's scheduled time to its answer, sorted.
    latencies: Vec<f64>,
    failed: usize,
    /// Requests answered per second of the run.
    achieved: f64,
}

impl Load {
    fn percentile(&self, p: f64) -> f64 {
        let last = self.latencies.len().saturating_sub(1);
        let index = ((last as f64) * p).round() as usize;
        self.latencies.get(index).copied().unwrap_or(f64::NAN)
    }
}

/// Sends `rate` GET requests per second for `window`, cycling over `urls`, from a pool of
/// threads with keep-alive connections: request `i` is due at `i / rate` seconds. Bounded:
/// `rate × window` requests, and no request is sent after twice the window.
fn fixed_rate(urls: &[String], rate: f64, window: Duration) -> Load {
    let total = (rate * window.as_secs_f64()) as usize;
    let threads = (rate / 250.0).ceil().clamp(1.0, 32.0) as usize;
    let next = Arc::new(AtomicUsize::new(0));
    let urls = Arc::new(urls.to_vec());
    let started = Instant::now();
    let cutoff = started + window * 2;
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (next, urls) = (next.clone(), urls.clone());
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(5))
                    .build();
                let (mut latencies, mut failed) = (Vec::new(), 0);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let due = started + Duration::from_secs_f64(i as f64 / rate);
                    if due > cutoff || Instant::now() > cutoff {
                        break;
                    }
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let ok = agent
                        .get(&urls[i % urls.len()])
                        .call()
                        .is_ok_and(|r| r.into_string().is_ok());
                    if ok {
                        latencies.push(due.elapsed().as_secs_f64() * 1000.0);
                    } else {
                        failed += 1;
                    }
                }
                (latencies, failed)
            })
        })
        .collect();
    let mut load = Load {
        latencies: Vec::new(),
        failed: 0,
        achieved: 0.0,
    };
    for worker in workers {
        let (latencies, failed) = worker.join().expect("load thread");
        load.latencies.extend(latencies);
        load.failed += failed;
    }
    load.achieved = load.latencies.len() as f64 / started.elapsed().as_secs_f64();
    load.latencies.sort_by(f64::total_cmp);
    load
}
