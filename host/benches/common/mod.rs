//! What the pipeline benchmarks share: the input file, the pipeline's connector configs,
//! waiting for the output, and medians.

#![allow(dead_code)] // each bench binary uses part of it

use std::path::Path;
use std::time::{Duration, Instant};

use std::sync::Arc;

use wasm_connect::plugins::PluginRegistry;
use wasm_connect::sandbox::Sandbox;
use wasm_connect::storage::{EmbeddedControl, EmbeddedPlane, Properties, Storage};
use wasm_connect::worker::Worker;

/// Bytes of each input line, without its `\n`.
pub const LINE_BYTES: usize = 100;

/// Writes `lines` lines of exactly [`LINE_BYTES`] bytes plus `\n`.
pub fn write_input(path: &Path, lines: usize) -> std::io::Result<()> {
    let mut text = String::with_capacity(lines * (LINE_BYTES + 1));
    for i in 0..lines {
        let prefix = format!("{i:010} ");
        text.push_str(&prefix);
        text.extend(std::iter::repeat_n('x', LINE_BYTES - prefix.len()));
        text.push('\n');
    }
    std::fs::write(path, text)
}

/// The file source of the pipeline, reading `input` into topic `bench`.
pub fn source_config(input: &Path) -> Properties {
    Properties::from([
        ("connector-class".into(), "file-source".into()),
        ("topic".into(), "bench".into()),
        ("filename".into(), input.display().to_string()),
    ])
}

/// The file sink of the pipeline, writing topic `bench` to `output`.
pub fn sink_config(output: &Path) -> Properties {
    Properties::from([
        ("connector-class".into(), "file-sink".into()),
        ("topicNames".into(), "bench".into()),
        ("filename".into(), output.display().to_string()),
    ])
}

/// Waits until `path` holds `expected` bytes (the whole pipeline output).
pub async fn wait_for_bytes(path: &Path, expected: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) < expected {
        anyhow::ensure!(
            Instant::now() < deadline,
            "pipeline did not finish within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// The median of the measured values (NaN when there are none).
pub fn median(values: &mut [f64]) -> f64 {
    let mut measured: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    measured.sort_by(f64::total_cmp);
    measured
        .get(measured.len() / 2)
        .copied()
        .unwrap_or(f64::NAN)
}

/// Creates the file source and sink on `worker` and waits until `output` holds
/// `expected_bytes`; returns how long that took.
pub async fn run_file_pipeline(
    worker: &Worker,
    input: &Path,
    output: &Path,
    expected_bytes: u64,
) -> anyhow::Result<Duration> {
    run_pipeline(
        worker,
        source_config(input),
        sink_config(output),
        output,
        expected_bytes,
    )
    .await
}

/// Creates connectors `source` and `sink` with these configs on `worker` and waits until
/// `output` holds `expected_bytes`; returns how long that took.
pub async fn run_pipeline(
    worker: &Worker,
    source: Properties,
    sink: Properties,
    output: &Path,
    expected_bytes: u64,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    worker
        .put("source", source)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    worker
        .put("sink", sink)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    wait_for_bytes(output, expected_bytes).await?;
    Ok(started.elapsed())
}

/// A worker on the embedded planes over a fresh data dir `data`.
pub fn embedded_worker(
    data: &Path,
    sandbox: &Arc<Sandbox>,
    plugins: &Arc<PluginRegistry>,
) -> anyhow::Result<Worker> {
    let storage = Arc::new(Storage::open(data)?);
    Ok(Worker::new(
        "bench@0".into(),
        sandbox.clone(),
        (
            Arc::new(EmbeddedPlane(storage.clone())),
            Arc::new(EmbeddedControl(storage)),
        ),
        plugins.clone(),
        tokio::runtime::Handle::current(),
    ))
}

/// A positive count from the environment variable `name`, else `default`.
pub fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}
