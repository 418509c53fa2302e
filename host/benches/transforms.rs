//! Transforms benchmark: N lines of 100 B through file-source → topic → file-sink, once
//! plain and once with two bundled transforms on the source (RegexRouter renaming the
//! topic, InsertHeader adding a header: the lines arrive unchanged), alternating runs on
//! the same machine; prints both rates and their ratio (the issue asks ≥ 0.7).
//!
//! Run: `cargo bench --bench transforms` (N = 500,000; set `PIPELINE_LINES` to change).
//! Needs `plugins/regex-router.wasm` and `plugins/insert-header.wasm`.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{
    embedded_worker, env_count, median, run_pipeline, sink_config, source_config, write_input,
    LINE_BYTES,
};
use wasm_connect::plugins::PluginRegistry;
use wasm_connect::sandbox::{Capabilities, Sandbox, WorkerLimits};
use wasm_connect::storage::Properties;

/// Runs of each side; the median is reported.
const RUNS: usize = 3;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let lines = env_count("PIPELINE_LINES", 500_000);
    let work = tempfile::tempdir()?;
    let input = work.path().join("input.txt");
    write_input(&input, lines)?;
    let expected = std::fs::metadata(&input)?.len();
    println!("transforms benchmark: {lines} lines of {LINE_BYTES} B");
    let sandbox = Arc::new(Sandbox::new(
        WorkerLimits::default(),
        Capabilities::default(),
    )?);
    let plugin_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let plugins = Arc::new(PluginRegistry::start(plugin_dir, work.path(), sandbox.clone()).await);
    let (mut plain, mut transformed) = (Vec::new(), Vec::new());
    for run in 0..RUNS {
        for with_transforms in [false, true] {
            let data = work.path().join(format!("run{run}-{with_transforms}"));
            let output = data.join("out.txt");
            let (mut source, mut sink) = (source_config(&input), sink_config(&output));
            if with_transforms {
                add_transforms(&mut source, &mut sink);
            }
            let worker = embedded_worker(&data, &sandbox, &plugins)?;
            let took = run_pipeline(&worker, source, sink, &output, expected).await?;
            worker.shutdown().await;
            let rate = lines as f64 / took.as_secs_f64();
            match with_transforms {
                false => plain.push(rate),
                true => transformed.push(rate),
            }
        }
    }
    let (plain, transformed) = (median(&mut plain), median(&mut transformed));
    println!("file pipeline, no transforms (median of {RUNS}):       {plain:>12.0} rec/s");
    println!("file pipeline, RegexRouter + InsertHeader:           {transformed:>12.0} rec/s");
    println!("ratio with/without transforms: {:.2}", transformed / plain);
    Ok(())
}

/// The source renames topic `bench` to `routed-bench` and adds a header; the sink reads
/// `routed-bench`.
fn add_transforms(source: &mut Properties, sink: &mut Properties) {
    for (key, value) in [
        ("topics.allow", "routed-.*"),
        ("transforms", "route,header"),
        (
            "transforms.route.type",
            "org.apache.kafka.connect.transforms.RegexRouter",
        ),
        ("transforms.route.regex", "(.*)"),
        ("transforms.route.replacement", "routed-$1"),
        (
            "transforms.header.type",
            "org.apache.kafka.connect.transforms.InsertHeader",
        ),
        ("transforms.header.header", "origin"),
        ("transforms.header.value.literal", "bench"),
    ] {
        source.insert(key.into(), value.into());
    }
    sink.insert("topicNames".into(), "routed-bench".into());
}
