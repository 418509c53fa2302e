//! Plugin benchmark: how soon a plugin file dropped into the plugin directory of a running
//! host serves a create (median and max over N drops), and how long a host with 10 plugins
//! takes to start with an empty compiled-code cache (cold) and with a filled one (cached).
//! Real processes, real files, real components; every dropped or started plugin is a distinct
//! component (the bundled ones with a custom section appended), so each cold load compiles.
//!
//! Run: `cargo bench --bench plugins` (`PLUGIN_DROPS`, default 20; `PLUGIN_STARTS`, default 5).
//! Goals: drop-to-usable ≤ 1 s; cached start ≥ 20× faster than cold.

mod common;
#[path = "../../tests/common/mod.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::env_count;
use harness::{Host, Workspace};

fn main() {
    let drops = env_count("PLUGIN_DROPS", 20);
    let starts = env_count("PLUGIN_STARTS", 5);
    println!("plugin benchmark: {drops} drops, {starts} cold and {starts} cached starts");

    let mut latencies = drop_latencies(drops);
    println!(
        "drop-to-usable (file written in place, then creates polled every 2 ms): median {} ms, max {} ms (goal <= 1000 ms)",
        median(&mut latencies).as_millis(),
        latencies.iter().max().copied().unwrap_or_default().as_millis()
    );

    let (mut cold, mut cached) = start_times(starts);
    let (cold, cached) = (median(&mut cold), median(&mut cached));
    println!(
        "host start with 10 plugins (spawn to ready): cold median {} ms, cached median {} ms: cached is {:.1}x faster (goal >= 20x)",
        cold.as_millis(),
        cached.as_millis(),
        cold.as_secs_f64() / cached.as_secs_f64()
    );
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests")
        .join(name)
}

/// `wasm` with a custom section holding `tag` appended: the same plugin, another content hash.
fn variant(wasm: &[u8], tag: &str) -> Vec<u8> {
    let name = b"wasm-connect-bench";
    let mut payload = leb128(name.len());
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0); // custom section id
    out.extend(leb128(payload.len()));
    out.extend(payload);
    out
}

fn leb128(mut value: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// A tag no earlier run used, so no compiled-code cache entry can match.
fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{what} {} {nanos}", std::process::id())
}

/// Drops `drops` new versioned-source components one at a time and times each until a
/// connector using it is created; removes each before the next.
fn drop_latencies(drops: usize) -> Vec<Duration> {
    let ws = Workspace::new();
    let host = ws.start();
    let base = std::fs::read(fixture("fixtures/versioned-source-1.0.0.wasm"))
        .expect("run scripts/build-plugins.sh");
    let input = ws.path("in.txt");
    std::fs::write(&input, "").expect("input file");
    let config = format!(
        r#"{{"connector-class":"versioned-source","topic":"t","filename":"{}"}}"#,
        input.display()
    );
    // Without `filename` a create reaches the plugin's required keys, or stops at the lookup.
    let lookup = r#"{"connector-class":"versioned-source","topic":"t"}"#;
    let mut latencies = Vec::new();
    for i in 0..drops {
        let file = ws.plugin_dir().join(format!("drop-{i}.wasm"));
        let bytes = variant(&base, &unique(&format!("drop {i}")));
        let started = Instant::now();
        std::fs::write(&file, &bytes).expect("drop the plugin");
        poll(&format!("drop {i} to serve a create"), || {
            host.create("probe", &config).1 == "success"
        });
        latencies.push(started.elapsed());
        host.get_ok("/connectors/probe/stop");
        std::fs::remove_file(&file).expect("remove the plugin");
        poll(&format!("drop {i} to be gone"), || {
            host.create("lookup", lookup)
                .1
                .starts_with("failed: no connector plugin")
        });
    }
    latencies
}

fn poll(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Start times of a host with 10 distinct plugins: cold (fresh data dir) and cached (the
/// same data dir again), alternating so both see the same machine.
fn start_times(starts: usize) -> (Vec<Duration>, Vec<Duration>) {
    let ws = Workspace::new();
    let bases = [
        std::fs::read(harness::bundled_plugins().join("file-source.wasm"))
            .expect("bundled file-source"),
        std::fs::read(harness::bundled_plugins().join("file-sink.wasm"))
            .expect("bundled file-sink"),
        std::fs::read(fixture("fixtures/versioned-source-1.0.0.wasm"))
            .expect("run scripts/build-plugins.sh"),
    ];
    for i in 0..8 {
        let bytes = variant(&bases[i % bases.len()], &unique(&format!("start {i}")));
        std::fs::write(ws.plugin_dir().join(format!("variant-{i}.wasm")), bytes)
            .expect("write a plugin");
    }
    // Written files must have settled before a start counts only the start.
    std::thread::sleep(Duration::from_millis(300));
    let (mut cold, mut cached) = (Vec::new(), Vec::new());
    for run in 0..starts {
        let data = ws.host_path(&format!("data-{run}"));
        cold.push(timed_start(&data, &ws.plugin_dir(), (0, 10)));
        cached.push(timed_start(&data, &ws.plugin_dir(), (10, 0)));
    }
    (cold, cached)
}

/// Spawn-to-ready time of one host; checks how many plugins came (from cache, compiled).
fn timed_start(data: &Path, plugins: &Path, origins: (usize, usize)) -> Duration {
    let started = Instant::now();
    let host = Host::start(data, plugins);
    let took = started.elapsed();
    let log = host.log();
    let cached = log.matches("; code from the compiled-code cache").count();
    let compiled = log.matches("; compiled in ").count();
    assert_eq!(
        (cached, compiled),
        origins,
        "plugins (from cache, compiled) at this start:\n{log}"
    );
    // The host installs its SIGTERM handler only after it logs `ready` (server.rs), which no
    // request can observe; give it a moment so the stop is clean (outside the timed part).
    std::thread::sleep(Duration::from_millis(100));
    let exit = host.terminate();
    assert!(exit.success(), "SIGTERM exit: {exit:?}");
    took
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}
