//! Pipeline benchmark: pushes N lines of 100 B through file-source → topic → file-sink and
//! prints records per second for
//!   (1) the raw topic-log append rate (batches of 1000, one fdatasync each),
//!   (2) the pipeline with the bundled wasm components (`plugins/`),
//!   (3) the same pipeline loops with the connector code compiled natively,
//! plus a poll-only comparison that bounds the per-record cost of the wasm boundary, and
//! the wasm pipeline with metrics on and off side by side (the cost of counting).
//!
//! Run: `cargo bench --bench pipeline` (N = 1,000,000; set `PIPELINE_LINES` to change).

mod common;
#[path = "../../tests/common/native.rs"]
mod native;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    embedded_worker, median, run_file_pipeline, sink_config, source_config, wait_for_bytes,
    write_input, LINE_BYTES,
};
use native::{NativeHost, NativeSink, NativeSource};
use wasm_connect::plugins::PluginRegistry;
use wasm_connect::sandbox::types::{Config, RecordBatch};
use wasm_connect::sandbox::{
    capabilities::DirGrant, Capabilities, ConnectorComponent, Grants, Identity, Limits, Redactor,
    Sandbox, SinkInstance, SourceInstance, TaskSetup, WorkerLimits,
};
use wasm_connect::storage::{
    EmbeddedControl, EmbeddedPlane, OpenFiles, Producer, Properties, Storage, TopicLog,
};
use wasm_connect::worker::control::ControlPlane;
use wasm_connect::worker::plane::DataPlane;
use wasm_connect::worker::sink::SinkCalls;
use wasm_connect::worker::source::SourceCalls;
use wasm_connect::worker::{Stopping, TaskContext, TaskHandle};
use wasm_connect_sdk::{BatchWriter, Record, SinkTask, SourceTask};

/// Runs of each measurement; the median is reported.
const RUNS: usize = 3;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let lines: usize = std::env::var("PIPELINE_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let work = tempfile::tempdir()?;
    let input = work.path().join("input.txt");
    write_input(&input, lines)?;
    let expected_bytes = std::fs::metadata(&input)?.len();
    println!(
        "pipeline benchmark: {lines} lines of {LINE_BYTES} B ({:.1} MB)",
        expected_bytes as f64 / 1e6
    );

    let append_rate = raw_append(&work.path().join("raw.log"), lines)?;
    println!("raw topic-log append (batches of 1000, fdatasync each): {append_rate:>12.0} rec/s");

    let sandbox = Arc::new(Sandbox::new(
        WorkerLimits::default(),
        Capabilities::default(),
    )?);
    let plugin_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let plugins = Arc::new(PluginRegistry::start(plugin_dir, work.path(), sandbox.clone()).await);

    // Runs alternate between wasm and native so both see the same machine; medians reported.
    let (mut wasm_rates, mut native_rates) = (Vec::new(), Vec::new());
    let mut metered_rates = Vec::new();
    // PIPELINE_ONLY=wasm|native runs one side (for profiling); the ratios then mean nothing.
    let only = std::env::var("PIPELINE_ONLY").unwrap_or_default();
    for run in 0..RUNS {
        let dir = work.path().join(format!("run{run}"));
        if only != "native" {
            wasm_rates.push(
                wasm_pipeline(
                    &dir.join("wasm"),
                    &input,
                    expected_bytes,
                    lines,
                    &sandbox,
                    &plugins,
                    Metered::Off,
                )
                .await?,
            );
        }
        if only.is_empty() {
            metered_rates.push(
                wasm_pipeline(
                    &dir.join("metered"),
                    &input,
                    expected_bytes,
                    lines,
                    &sandbox,
                    &plugins,
                    Metered::On,
                )
                .await?,
            );
        }
        if only != "wasm" {
            native_rates.push(
                native_pipeline(
                    &dir.join("native"),
                    &input,
                    expected_bytes,
                    lines,
                    &sandbox,
                    &plugins,
                )
                .await?,
            );
        }
    }
    let (wasm_rate, native_rate) = (median(&mut wasm_rates), median(&mut native_rates));
    if !metered_rates.is_empty() {
        let metered = median(&mut metered_rates);
        println!("file pipeline, wasm, metrics off (median of {RUNS}):    {wasm_rate:>12.0} rec/s");
        println!("file pipeline, wasm, metrics on (median of {RUNS}):     {metered:>12.0} rec/s");
        println!(
            "metrics on/off {:.3} (cost {:+.1}%; the budget is 3%)",
            metered / wasm_rate,
            (1.0 - metered / wasm_rate) * 100.0
        );
    }
    println!("file pipeline, wasm connectors (median of {RUNS}):          {wasm_rate:>12.0} rec/s");
    println!("file pipeline, same connectors compiled natively:        {native_rate:>12.0} rec/s");
    println!(
        "ratios: wasm/native {:.2}   wasm/raw-append {:.2}   native/raw-append {:.2}",
        wasm_rate / native_rate,
        wasm_rate / append_rate,
        native_rate / append_rate
    );

    let (mut wasm_ns, mut native_ns) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let (wasm, native) = poll_only(&input, lines, &sandbox, &plugins).await?;
        wasm_ns.push(wasm);
        native_ns.push(native);
    }
    let (wasm_ns, native_ns) = (median(&mut wasm_ns), median(&mut native_ns));
    println!(
        "file-source poll only: wasm {wasm_ns:.0} ns/rec, native {native_ns:.0} ns/rec; boundary + wasm code cost {:.0} ns/rec (batches of {})",
        wasm_ns - native_ns,
        Limits::default().batch_records
    );
    let (mut wasm_ns, mut native_ns) = (Vec::new(), Vec::new());
    for run in 0..RUNS {
        let (wasm, native) = put_only(
            &work.path().join(format!("put{run}")),
            lines,
            &sandbox,
            &plugins,
        )
        .await?;
        wasm_ns.push(wasm);
        native_ns.push(native);
    }
    let (wasm_ns, native_ns) = (median(&mut wasm_ns), median(&mut native_ns));
    println!(
        "file-sink put only (flush not timed): wasm {wasm_ns:.0} ns/rec, native {native_ns:.0} ns/rec; boundary + wasm code cost {:.0} ns/rec",
        wasm_ns - native_ns
    );
    Ok(())
}

fn raw_append(path: &Path, records: usize) -> anyhow::Result<f64> {
    let log = TopicLog::open(path, &OpenFiles::new(1))?;
    let value = [b'x'; LINE_BYTES];
    let mut batch = BatchWriter::new();
    for _ in 0..1000 {
        batch.push(&Record {
            value: &value,
            ..Record::default()
        })?;
    }
    let producer = Producer {
        id: "",
        sequence: 0,
        positions: &[],
    };
    let started = Instant::now();
    for _ in 0..records / 1000 {
        log.append(batch.count(), batch.frames(), &producer)?;
    }
    Ok(rate(records / 1000 * 1000, started.elapsed()))
}

/// Whether the tasks count into a metrics registry, as the binary runs them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Metered {
    On,
    Off,
}

async fn wasm_pipeline(
    data: &Path,
    input: &Path,
    expected_bytes: u64,
    lines: usize,
    sandbox: &Arc<Sandbox>,
    plugins: &Arc<PluginRegistry>,
    metered: Metered,
) -> anyhow::Result<f64> {
    let worker = embedded_worker(data, sandbox, plugins)?;
    let worker = match metered {
        Metered::On => worker.with_metrics(Arc::new(wasm_connect::metrics::Metrics::new())),
        Metered::Off => worker,
    };
    let output = data.join("out.txt");
    let elapsed = run_file_pipeline(&worker, input, &output, expected_bytes).await?;
    worker.shutdown().await;
    Ok(rate(lines, elapsed))
}

async fn native_pipeline(
    data: &Path,
    input: &Path,
    expected_bytes: u64,
    lines: usize,
    sandbox: &Arc<Sandbox>,
    plugins: &Arc<PluginRegistry>,
) -> anyhow::Result<f64> {
    let storage = Arc::new(Storage::open(data)?);
    let plane: Arc<dyn DataPlane> = Arc::new(EmbeddedPlane(storage.clone()));
    let control: Arc<dyn ControlPlane> = Arc::new(EmbeddedControl(storage));
    let output = data.join("out.txt");
    let context = |name: &str, plugin: &str, config: Properties| {
        let plugin = plugins.find(plugin).expect("bundled plugin loaded");
        let data = plane.clone();
        let control = control.clone();
        let sandbox = sandbox.clone();
        let name = name.to_string();
        move |status, stop| TaskContext {
            identity: Identity {
                connector: name,
                task: Some(0),
            },
            plugin,
            user_config: config.clone(),
            config,
            limits: Limits::default(),
            sandbox,
            data,
            stages: Default::default(),
            errors: Default::default(),
            meter: Default::default(),
            control,
            status,
            events: Default::default(),
            stop,
            paused: tokio::sync::watch::channel(false).1,
            redactor: Redactor::default(),
        }
    };
    let started = Instant::now();
    let runtime = tokio::runtime::Handle::current();
    let source = TaskHandle::spawn(
        &runtime,
        Stopping::default(),
        context("source", "file-source", source_config(input)),
        |mut ctx| async move { native::file_source_task(&mut ctx).await },
    );
    let sink = TaskHandle::spawn(
        &runtime,
        Stopping::default(),
        context("sink", "file-sink", sink_config(&output)),
        |mut ctx| async move { native::file_sink_task(&mut ctx).await },
    );
    wait_for_bytes(&output, expected_bytes).await?;
    let elapsed = started.elapsed();
    source.stop().wait().await;
    sink.stop().wait().await;
    Ok(rate(lines, elapsed))
}

/// Polls the whole file through the source once as wasm and once natively.
async fn poll_only(
    input: &Path,
    lines: usize,
    sandbox: &Arc<Sandbox>,
    plugins: &Arc<PluginRegistry>,
) -> anyhow::Result<(f64, f64)> {
    let limits = Limits::default();
    let config: Config = source_config(input).into_iter().collect();
    let plugin = plugins.find("file-source").expect("bundled plugin loaded");
    let ConnectorComponent::Source(pre) = plugin.component.clone() else {
        anyhow::bail!("not a source")
    };
    let grants = Grants {
        dirs: vec![DirGrant {
            dir: input.parent().expect("parent").to_path_buf(),
            writable: false,
        }],
        ..Grants::default()
    };
    let setup = TaskSetup {
        identity: Identity {
            connector: "poll".into(),
            task: Some(0),
        },
        grants: &grants,
        committed: Default::default(),
        config: &config,
        limits: limits.clone(),
        redactor: Redactor::default(),
        stop: None,
    };
    let mut wasm = match SourceInstance::start(sandbox, &pre, setup).await? {
        Ok(instance) => instance,
        Err(e) => anyhow::bail!("start: {e:?}"),
    };
    let started = Instant::now();
    let mut seen = 0usize;
    while seen < lines {
        let batch = wasm
            .poll(limits.batch_records, limits.batch_bytes)
            .await?
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        seen += batch.count as usize;
    }
    let wasm_ns = started.elapsed().as_nanos() as f64 / lines as f64;
    let sdk: wasm_connect_sdk::Config = source_config(input).into_iter().collect();
    let mut native = NativeSource(
        file_source::FileSourceTask::start(&sdk, &NativeHost(Default::default())).expect("start"),
    );
    let started = Instant::now();
    let mut seen = 0usize;
    while seen < lines {
        let batch = native
            .poll(limits.batch_records, limits.batch_bytes)
            .await?
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        seen += batch.count as usize;
    }
    let native_ns = started.elapsed().as_nanos() as f64 / lines as f64;
    Ok((wasm_ns, native_ns))
}

/// Puts the same batches into the file sink once as wasm and once natively (the final flush
/// is not timed); ns per record.
async fn put_only(
    dir: &Path,
    lines: usize,
    sandbox: &Arc<Sandbox>,
    plugins: &Arc<PluginRegistry>,
) -> anyhow::Result<(f64, f64)> {
    std::fs::create_dir_all(dir)?;
    let limits = Limits::default();
    let value = [b'x'; LINE_BYTES];
    let mut writer = BatchWriter::new();
    for _ in 0..limits.batch_records {
        writer.push(&Record {
            value: &value,
            ..Record::default()
        })?;
    }
    let (count, frames) = writer.into_parts();
    let batch = RecordBatch { count, frames };
    let batches = lines / count as usize;

    let plugin = plugins.find("file-sink").expect("bundled plugin loaded");
    let ConnectorComponent::Sink(pre) = plugin.component.clone() else {
        anyhow::bail!("not a sink")
    };
    let output = dir.join("wasm.txt");
    let config: Config = sink_config(&output).into_iter().collect();
    let grants = Grants {
        dirs: vec![DirGrant {
            dir: dir.to_path_buf(),
            writable: true,
        }],
        ..Grants::default()
    };
    let setup = TaskSetup {
        identity: Identity {
            connector: "put".into(),
            task: Some(0),
        },
        grants: &grants,
        committed: Default::default(),
        config: &config,
        limits: limits.clone(),
        redactor: Redactor::default(),
        stop: None,
    };
    let mut wasm = match SinkInstance::start(sandbox, &pre, setup).await? {
        Ok(instance) => instance,
        Err(e) => anyhow::bail!("start: {e:?}"),
    };
    let started = Instant::now();
    for i in 0..batches {
        wasm.put("bench", (i * count as usize) as u64, &batch)
            .await?
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    let wasm_ns = started.elapsed().as_nanos() as f64 / (batches * count as usize) as f64;
    wasm.flush().await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;

    let sdk: wasm_connect_sdk::Config = sink_config(&dir.join("native.txt")).into_iter().collect();
    let mut native = NativeSink(
        file_sink::FileSinkTask::start(&sdk, &NativeHost(Default::default())).expect("start"),
    );
    let started = Instant::now();
    for i in 0..batches {
        native
            .put("bench", (i * count as usize) as u64, &batch)
            .await?
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    let native_ns = started.elapsed().as_nanos() as f64 / (batches * count as usize) as f64;
    native
        .flush()
        .await?
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok((wasm_ns, native_ns))
}

fn rate(records: usize, elapsed: Duration) -> f64 {
    records as f64 / elapsed.as_secs_f64()
}
