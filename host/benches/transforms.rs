//! Transforms benchmark: N lines of 100 B through file-source → topic → file-sink, plain and
//! with bundled transforms on the source (RegexRouter renaming the topic, InsertHeader
//! adding a header: the lines arrive unchanged), the variants alternating run by run on the
//! same machine; prints each rate and its ratio to the plain pipeline (the issue asks ≥ 0.7
//! for the two transforms together).
//!
//! Run: `cargo bench --bench transforms` (N = 500,000; set `PIPELINE_LINES` to change).
//! Variants: `plain` (no transforms), `route` (RegexRouter alone), `header` (InsertHeader
//! alone), `both` (RegexRouter + InsertHeader); all four by default, or the ones listed in
//! `TRANSFORMS_VARIANTS` (e.g. `TRANSFORMS_VARIANTS=both` to profile one side; a ratio is
//! printed when `plain` is among them). `TRANSFORMS_RUNS` sets the runs per variant (3).
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

/// A pipeline variant: its name in `TRANSFORMS_VARIANTS`, its label, and whether it runs
/// RegexRouter and InsertHeader.
struct Variant {
    name: &'static str,
    label: &'static str,
    route: bool,
    header: bool,
}

const VARIANTS: [Variant; 4] = [
    Variant {
        name: "plain",
        label: "no transforms",
        route: false,
        header: false,
    },
    Variant {
        name: "route",
        label: "RegexRouter",
        route: true,
        header: false,
    },
    Variant {
        name: "header",
        label: "InsertHeader",
        route: false,
        header: true,
    },
    Variant {
        name: "both",
        label: "RegexRouter + InsertHeader",
        route: true,
        header: true,
    },
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let lines = env_count("PIPELINE_LINES", 500_000);
    let runs = env_count("TRANSFORMS_RUNS", 3);
    let chosen = std::env::var("TRANSFORMS_VARIANTS").unwrap_or_default();
    let chosen: Vec<&str> = chosen
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    if let Some(unknown) = chosen
        .iter()
        .find(|c| !VARIANTS.iter().any(|v| v.name == **c))
    {
        anyhow::bail!(
            "TRANSFORMS_VARIANTS: unknown variant {unknown:?}; use plain, route, header or both"
        );
    }
    let variants: Vec<&Variant> = VARIANTS
        .iter()
        .filter(|v| chosen.is_empty() || chosen.contains(&v.name))
        .collect();
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
    // On a busy machine compiling every plugin can outlast the registry's start.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    while ["regex-router", "insert-header"]
        .iter()
        .any(|name| plugins.find(name).is_none())
    {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "plugins/regex-router.wasm or plugins/insert-header.wasm did not load"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for run in 0..runs {
        for (variant, rates) in variants.iter().zip(&mut rates) {
            let data = work.path().join(format!("run{run}-{}", variant.name));
            let output = data.join("out.txt");
            let (mut source, mut sink) = (source_config(&input), sink_config(&output));
            add_transforms(variant, &mut source, &mut sink);
            let worker = embedded_worker(&data, &sandbox, &plugins)?;
            let took = run_pipeline(&worker, source, sink, &output, expected).await?;
            worker.shutdown().await;
            rates.push(lines as f64 / took.as_secs_f64());
        }
    }
    let medians: Vec<f64> = rates.iter_mut().map(|r| median(r)).collect();
    let plain = variants
        .iter()
        .zip(&medians)
        .find(|(v, _)| v.name == "plain")
        .map(|(_, rate)| *rate);
    println!("file pipeline, median of {runs} runs each:");
    for (variant, rate) in variants.iter().zip(&medians) {
        let label = format!("{} ({})", variant.label, variant.name);
        match plain {
            Some(plain) if variant.name != "plain" => println!(
                "  {label:<36} {rate:>10.0} rec/s   ratio {:.2}",
                rate / plain
            ),
            _ => println!("  {label:<36} {rate:>10.0} rec/s"),
        }
    }
    Ok(())
}

/// The transforms of `variant` on the source: RegexRouter renames topic `bench` to
/// `routed-bench` (the sink reads that), InsertHeader adds a header.
fn add_transforms(variant: &Variant, source: &mut Properties, sink: &mut Properties) {
    let mut aliases = Vec::new();
    if variant.route {
        aliases.push("route");
        for (key, value) in [
            ("topics.allow", "routed-.*"),
            (
                "transforms.route.type",
                "org.apache.kafka.connect.transforms.RegexRouter",
            ),
            ("transforms.route.regex", "(.*)"),
            ("transforms.route.replacement", "routed-$1"),
        ] {
            source.insert(key.into(), value.into());
        }
        sink.insert("topicNames".into(), "routed-bench".into());
    }
    if variant.header {
        aliases.push("header");
        for (key, value) in [
            (
                "transforms.header.type",
                "org.apache.kafka.connect.transforms.InsertHeader",
            ),
            ("transforms.header.header", "origin"),
            ("transforms.header.value.literal", "bench"),
        ] {
            source.insert(key.into(), value.into());
        }
    }
    if !aliases.is_empty() {
        source.insert("transforms".into(), aliases.join(","));
    }
}
