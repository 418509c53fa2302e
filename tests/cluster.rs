//! Cluster mode (issue 6) against real processes: a 3-node NATS JetStream cluster on
//! loopback (`nats-server` 2.11+, installed by `.ci/run`) and several `wasm-connect`
//! workers joined with `--nats`, running the bundled file pipeline.
//!
//! Each test asserts on the files the sinks write: every line written to the inputs
//! arrives, once, while workers or NATS servers are killed.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::nats::{nats_available, NatsCluster};
use common::{append, call, json_get, json_send, read_lines, serial, wait_for, Host, Workspace};
use serde_json::json;

/// Holds the cluster tests' turn (each runs 3 servers and up to 3 workers: one at a time on
/// 2 cores); None (the test passes as skipped) when no nats-server is installed outside CI.
fn one_at_a_time() -> Option<std::sync::MutexGuard<'static, ()>> {
    let turn = serial();
    nats_available().then_some(turn)
}

/// How long a killed worker's tasks may take to run elsewhere (the issue's bound).
const TAKEOVER_LIMIT: Duration = Duration::from_secs(10);

/// Workers joined to one NATS cluster, each with its own data dir.
struct Workers {
    ws: Workspace,
    nats: NatsCluster,
    hosts: Vec<Option<Host>>,
}

impl Workers {
    fn start(count: usize) -> Workers {
        let nats = NatsCluster::start(3);
        let mut workers = Workers {
            ws: Workspace::new(),
            nats,
            hosts: Vec::new(),
        };
        for _ in 0..count {
            workers.add();
        }
        workers
    }

    /// Starts one more worker, `w<n>`.
    fn add(&mut self) -> usize {
        let n = self.hosts.len();
        let data = self.ws.host_path(&format!("data-w{n}"));
        let id = format!("w{n}");
        let urls = self.nats.urls();
        let host = Host::start_with(
            &data,
            &self.ws.plugin_dir(),
            &["--nats", &urls, "--worker-id", &id],
        );
        self.hosts.push(Some(host));
        n
    }

    fn host(&self, n: usize) -> &Host {
        self.hosts[n].as_ref().expect("worker is running")
    }

    /// Creates connectors (name, config) through worker `via`.
    fn create(&self, via: usize, connectors: &[(&str, serde_json::Value)]) {
        for (name, config) in connectors {
            let path = format!("/connectors/{name}/config");
            let answer = json_send(self.host(via), "PUT", &path, config);
            assert_eq!(answer.status, 201, "create {name}: {}", answer.body);
        }
    }

    fn kill9(&mut self, n: usize) {
        if let Some(host) = self.hosts[n].take() {
            host.kill9();
        }
    }

    fn live(&self) -> Vec<usize> {
        (0..self.hosts.len())
            .filter(|n| self.hosts[*n].is_some())
            .collect()
    }

    /// Creates a file-source → topic → file-sink pipeline named `p<i>` through worker
    /// `via`; returns its input and output files.
    fn pipeline(&self, via: usize, i: usize) -> (PathBuf, PathBuf) {
        let (input, output) = (
            self.ws.path(&format!("in{i}.txt")),
            self.ws.path(&format!("out{i}.txt")),
        );
        // Lines written before the pipeline exists are kept: the source reads from the start.
        append(&input, "");
        self.create(
            via,
            &[
                (
                    &format!("src{i}"),
                    json!({"connector.class": "file-source", "file": input, "topic": format!("topic{i}")}),
                ),
                (
                    &format!("sink{i}"),
                    json!({"connector.class": "file-sink", "file": output, "topics": format!("topic{i}")}),
                ),
            ],
        );
        (input, output)
    }

    /// Starts `workers` workers with `pipelines` pipelines created through worker `via`,
    /// and waits until all their tasks run.
    fn with_pipelines(
        workers: usize,
        pipelines: usize,
        via: usize,
    ) -> (Workers, Vec<(PathBuf, PathBuf)>) {
        let cluster = Workers::start(workers);
        let files = (0..pipelines).map(|i| cluster.pipeline(via, i)).collect();
        wait_for(Duration::from_secs(20), "every task running", || {
            cluster.all_running_on_live(0, 2 * pipelines)
        });
        (cluster, files)
    }

    /// Task placement as worker `n` reports it: (connector, task) → (state, worker id).
    fn placement(&self, n: usize) -> Vec<(String, u64, String, String)> {
        let all = json_get(self.host(n), "/connectors?expand=status");
        assert_eq!(all.status, 200, "{}", all.body);
        let mut out = Vec::new();
        for (name, entry) in all.json().as_object().expect("object") {
            for task in entry["status"]["tasks"].as_array().expect("tasks") {
                out.push((
                    name.clone(),
                    task["id"].as_u64().unwrap_or_default(),
                    task["state"].as_str().unwrap_or_default().to_string(),
                    task["worker_id"].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
        out
    }

    /// True when every task of `expected` connectors runs on a live worker, as `n` sees it.
    fn all_running_on_live(&self, n: usize, expected: usize) -> bool {
        let live: Vec<String> = self.live().iter().map(|w| format!("w{w}")).collect();
        let placement = self.placement(n);
        placement.len() == expected
            && placement
                .iter()
                .all(|(_, _, state, worker)| state == "RUNNING" && live.contains(worker))
    }
}

/// Appends numbered lines to input files from a thread, until stopped.
struct Feeder {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl Feeder {
    /// Appends `per_tick` lines to every input each 10 ms.
    fn start(inputs: Vec<PathBuf>, per_tick: usize) -> Feeder {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut next = 0usize;
            while !flag.load(Ordering::Relaxed) {
                for input in &inputs {
                    append_lines(input, next, per_tick);
                }
                next += per_tick;
                std::thread::sleep(Duration::from_millis(10));
            }
            next
        });
        Feeder {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops; returns how many lines each input got.
    fn stop(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().expect("thread").join().expect("feeder")
    }
}

/// Watches the outputs for `window`: the longest time their total length did not grow.
fn longest_stall(outputs: &[PathBuf], window: Duration) -> Duration {
    let total = || -> u64 {
        outputs
            .iter()
            .map(|o| std::fs::metadata(o).map_or(0, |m| m.len()))
            .sum()
    };
    let (start, mut last, mut grown, mut longest) =
        (Instant::now(), total(), Instant::now(), Duration::ZERO);
    while start.elapsed() < window {
        std::thread::sleep(Duration::from_millis(50));
        let now = total();
        if now != last {
            (last, grown) = (now, Instant::now());
        }
        longest = longest.max(grown.elapsed());
    }
    longest
}

fn append_lines(path: &Path, from: usize, count: usize) {
    let text: String = (from..from + count)
        .map(|n| format!("line-{n}\n"))
        .collect();
    append(path, &text);
}

fn expected_lines(count: usize) -> Vec<String> {
    (0..count).map(|n| format!("line-{n}")).collect()
}

/// Waits until `output` holds `count` lines, then asserts they are exactly the lines
/// written, in order when `ordered`, else each exactly once.
fn assert_delivered(output: &Path, count: usize, ordered: bool) {
    wait_for(
        Duration::from_secs(60),
        &format!("{count} lines in {}", output.display()),
        || read_lines(output).len() >= count,
    );
    std::thread::sleep(Duration::from_millis(500));
    let got = read_lines(output);
    let expected = expected_lines(count);
    if ordered {
        assert!(
            got == expected,
            "{}: {} lines, first difference at {:?}",
            output.display(),
            got.len(),
            got.iter().zip(&expected).position(|(a, b)| a != b)
        );
    } else {
        let unique: BTreeSet<&String> = got.iter().collect();
        assert_eq!(
            unique.len(),
            got.len(),
            "{}: duplicated lines",
            output.display()
        );
        assert_eq!(
            unique,
            expected.iter().collect(),
            "{}: lines lost or foreign",
            output.display()
        );
    }
}

#[test]
fn connectors_spread_over_workers_and_move_when_one_is_killed() {
    let Some(_one) = one_at_a_time() else {
        return;
    };
    // Three pipelines created through worker 0: six tasks spread over all three workers.
    let (mut cluster, files) = Workers::with_pipelines(3, 3, 0);
    for n in 0..3 {
        let info = cluster.host(n).get_ok("/getClusterInfo");
        assert_eq!(info, r#"["w0","w1","w2"]"#, "worker {n}");
    }
    let workers: BTreeSet<String> = cluster
        .placement(2)
        .into_iter()
        .map(|(_, _, _, w)| w)
        .collect();
    assert_eq!(workers.len(), 3, "tasks on {workers:?}");
    // Each worker's /getAllocatedInfo shows its share: the shares add up to the six tasks.
    let shares: usize = (0..3)
        .map(|n| cluster.host(n).get_ok("/getAllocatedInfo"))
        .map(|info| {
            info.split("working tasks:")
                .nth(1)
                .unwrap_or_default()
                .matches("connectorName:")
                .count()
        })
        .sum();
    assert_eq!(shares, 6);
    // A config change made through worker 2 is what worker 0 shows.
    let changed = json!({"connector.class": "file-sink", "file": files[0].1, "topics": "topic0", "note": "via w2"});
    let answer = json_send(cluster.host(2), "PUT", "/connectors/sink0/config", &changed);
    assert_eq!(answer.status, 200, "{}", answer.body);
    wait_for(Duration::from_secs(10), "config seen by w0", || {
        json_get(cluster.host(0), "/connectors/sink0/config").json()["note"] == "via w2"
    });

    // A restart asked of worker 0 restarts a task where it runs.
    let (connector, task) = cluster
        .placement(0)
        .into_iter()
        .find(|(_, _, _, w)| w == "w2")
        .map(|(c, t, _, _)| (c, t))
        .expect("a task on w2");
    let path = format!(
        "{}/connectors/{connector}/tasks/{task}/restart",
        cluster.host(0).kafka
    );
    assert_eq!(call("POST", &path, None, &[]).status, 204);
    wait_for(Duration::from_secs(10), "w2 restarting the task", || {
        cluster.host(2).log().contains("restarted on request")
    });
    wait_for(Duration::from_secs(10), "six tasks running", || {
        cluster.all_running_on_live(1, 6)
    });

    let inputs: Vec<PathBuf> = files.iter().map(|(i, _)| i.clone()).collect();
    let feeder = Feeder::start(inputs, 50);
    std::thread::sleep(Duration::from_secs(2));
    let victim = 1;
    let moved: Vec<(String, u64)> = cluster
        .placement(0)
        .into_iter()
        .filter(|(_, _, _, w)| *w == format!("w{victim}"))
        .map(|(c, t, _, _)| (c, t))
        .collect();
    assert!(!moved.is_empty(), "w{victim} runs no task");
    let killed = Instant::now();
    cluster.kill9(victim);
    wait_for(
        TAKEOVER_LIMIT,
        "the killed worker's tasks running elsewhere",
        || cluster.all_running_on_live(0, 6),
    );
    eprintln!(
        "tasks {moved:?} of the killed worker ran elsewhere after {:?}",
        killed.elapsed()
    );
    assert_eq!(cluster.host(0).get_ok("/getClusterInfo"), r#"["w0","w2"]"#);
    std::thread::sleep(Duration::from_secs(2));
    let written = feeder.stop();
    for (_, output) in &files {
        assert_delivered(output, written, true);
    }
}

#[test]
fn killing_a_nats_server_loses_nothing() {
    let Some(_one) = one_at_a_time() else {
        return;
    };
    let (mut cluster, files) = Workers::with_pipelines(2, 2, 1);
    let feeder = Feeder::start(files.iter().map(|(i, _)| i.clone()).collect(), 50);
    std::thread::sleep(Duration::from_secs(2));
    let outputs: Vec<PathBuf> = files.iter().map(|(_, o)| o.clone()).collect();
    cluster.nats.kill(0);
    let stall = longest_stall(&outputs, Duration::from_secs(6));
    cluster.nats.restart(0);
    std::thread::sleep(Duration::from_secs(2));
    let written = feeder.stop();
    eprintln!(
        "with one of three NATS servers killed, the outputs stood still for at most {stall:?}"
    );
    for (_, output) in &files {
        // A message retried after the failover expects the stream's last sequence, so it
        // cannot land after later ones: order holds too.
        assert_delivered(output, written, true);
    }
}

#[test]
fn a_sink_reads_past_its_byte_budget_and_records_larger_than_it() {
    let Some(_one) = one_at_a_time() else {
        return;
    };
    let cluster = Workers::start(1);
    let (input, output) = (cluster.ws.path("in.txt"), cluster.ws.path("out.txt"));
    // 2,000 lines of 100 B, with one line of 5 KiB: every fetch hits the sink's 1 KiB
    // budget, and one record is larger than the whole budget.
    let mut lines: Vec<String> = (0..2000).map(|n| format!("{n:099}")).collect();
    lines[1000] = "x".repeat(5 << 10);
    std::fs::write(&input, lines.join("\n") + "\n").expect("input");
    cluster.create(
        0,
        &[
            (
                "src",
                json!({"connector.class": "file-source", "file": input, "topic": "wide"}),
            ),
            (
                "dst",
                json!({"connector.class": "file-sink", "file": output, "topics": "wide", "limits.poll.bytes": "1KiB"}),
            ),
        ],
    );
    wait_for(Duration::from_secs(30), "2000 lines delivered", || {
        read_lines(&output).len() >= 2000
    });
    assert!(
        read_lines(&output) == lines,
        "the sink's lines differ from the source's"
    );
}

#[test]
fn killing_workers_mid_batch_loses_and_repeats_nothing() {
    let Some(_one) = one_at_a_time() else {
        return;
    };
    // A backlog of 150,000 lines of 100 B: every poll is a full batch of 16,384 records,
    // about 2 MiB, published as several messages of up to 1 MiB. The sink puts 700 records
    // at a time, so it commits in the middle of messages.
    let cluster = Workers::start(3);
    let (input, output) = (cluster.ws.path("in.txt"), cluster.ws.path("out.txt"));
    let backlog = 150_000;
    let text: String = (0..backlog)
        .map(|n| format!("line-{n}{}\n", " ".repeat(90)))
        .collect();
    std::fs::write(&input, text).expect("input");
    cluster.create(
        0,
        &[
            (
                "src",
                json!({"connector.class": "file-source", "file": input, "topic": "mid"}),
            ),
            (
                "dst",
                json!({"connector.class": "file-sink", "file": output, "topics": "mid", "limits.poll.records": "700"}),
            ),
        ],
    );
    let mut cluster = cluster;
    let worker_of = |cluster: &Workers, connector: &str| {
        let live = cluster.live()[0];
        cluster
            .placement(live)
            .into_iter()
            .find(|(c, _, state, _)| c == connector && state == "RUNNING")
            .map(|(_, _, _, w)| w)
    };
    // Worker `w<n>` → n.
    let number = |w: String| {
        w.trim_start_matches('w')
            .parse::<usize>()
            .expect("worker id")
    };
    // Lines keep arriving while the workers die: the source's batches after a restart
    // are cut where the first ones were not.
    let feeder = Feeder::start(vec![input.clone()], 20);
    let mut killed = Vec::new();
    for (connector, progress) in [("src", 20_000), ("dst", 60_000)] {
        wait_for(
            Duration::from_secs(60),
            &format!("{progress} lines delivered"),
            || read_lines(&output).len() >= progress,
        );
        let victim = number(worker_of(&cluster, connector).expect("task running"));
        cluster.kill9(victim);
        killed.push(victim);
        wait_for(
            TAKEOVER_LIMIT * 2,
            "both tasks running on live workers",
            || cluster.all_running_on_live(cluster.live()[0], 2),
        );
        if cluster.live().len() == 1 {
            break;
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let fed = feeder.stop();
    let survivor = cluster.live()[0];
    eprintln!(
        "killed {killed:?}; resumed from a checkpoint past the last commit: {}",
        cluster
            .host(survivor)
            .log()
            .contains("stored but not committed")
    );
    let mut expected: Vec<String> = (0..backlog)
        .map(|n| format!("line-{n}{}", " ".repeat(90)))
        .collect();
    expected.extend(expected_lines(fed));
    wait_for(
        Duration::from_secs(90),
        &format!("{} lines in {}", expected.len(), output.display()),
        || read_lines(&output).len() >= expected.len(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let got = read_lines(&output);
    assert!(
        got == expected,
        "{} lines of {}, first difference at line {:?}",
        got.len(),
        expected.len(),
        got.iter().zip(&expected).position(|(a, b)| a != b)
    );
}

#[test]
fn a_topic_stream_of_the_old_layout_is_refused_with_the_fix() {
    let Some(_one) = one_at_a_time() else {
        return;
    };
    let cluster = Workers::start(1);
    // The stream a worker before multi-record messages created: one subject per topic.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let urls = cluster.nats.urls();
        let servers: Vec<&str> = urls.split(',').collect();
        let client = async_nats::connect(servers).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        let config = async_nats::jetstream::stream::Config {
            name: "wc-DefaultConnectCluster-old".into(),
            subjects: vec!["wc.DefaultConnectCluster.topic.old".into()],
            num_replicas: 3,
            ..Default::default()
        };
        js.create_stream(config).await.expect("old stream");
    });
    let input = cluster.ws.path("in.txt");
    append_lines(&input, 0, 10);
    let config = json!({"connector.class": "file-source", "file": input, "topic": "old"});
    cluster.create(0, &[("src", config)]);
    wait_for(
        Duration::from_secs(30),
        "the task failing with the fix",
        || {
            let status = json_get(cluster.host(0), "/connectors/src/status").json();
            let trace = status["tasks"][0]["trace"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            trace.contains("created by an older wasm-connect") && trace.contains("--cluster-id")
        },
    );
}

#[test]
fn busy_sources_on_one_worker_all_finish() {
    let Some(_one) = one_at_a_time() else {
        return;
    };
    let cluster = Workers::start(1);
    // Three sources with a backlog each publish full batches (16,384 records) at once:
    // their acks in flight together exceed what one source has in flight.
    for i in 0..3 {
        std::fs::write(cluster.ws.path(&format!("in{i}.txt")), "").expect("input");
        append_lines(&cluster.ws.path(&format!("in{i}.txt")), 0, 100_000);
    }
    let files: Vec<(PathBuf, PathBuf)> = (0..3).map(|i| cluster.pipeline(0, i)).collect();
    for (_, output) in &files {
        assert_delivered(output, 100_000, true);
    }
}

#[test]
fn pause_stop_resume_and_offsets_apply_across_workers() {
    let Some(_one) = one_at_a_time() else {
        return;
    };
    let (cluster, files) = Workers::with_pipelines(2, 1, 0);
    let (input, output) = &files[0];
    append_lines(input, 0, 100);
    assert_delivered(output, 100, true);
    let states = |n: usize| -> Vec<String> {
        let answer = json_get(cluster.host(n), "/connectors/src0/status");
        let tasks = answer.json()["tasks"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        tasks
            .iter()
            .map(|t| t["state"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    // Paused through worker 1, seen paused by worker 0; lines wait meanwhile.
    let put = |n: usize, path: &str| {
        call(
            "PUT",
            &format!("{}{path}", cluster.host(n).kafka),
            None,
            &[],
        )
        .status
    };
    assert_eq!(put(1, "/connectors/src0/pause"), 202);
    wait_for(Duration::from_secs(10), "src0 paused on w0's view", || {
        states(0) == ["PAUSED"]
    });
    append_lines(input, 100, 100);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(read_lines(output).len(), 100, "a paused source went on");
    // Stopped: its offsets, committed by whichever worker ran it, read and reset anywhere.
    assert_eq!(put(0, "/connectors/src0/stop"), 204);
    wait_for(Duration::from_secs(10), "src0 stopped", || {
        states(1).is_empty()
    });
    let offsets = json_get(cluster.host(1), "/connectors/src0/offsets").json();
    let first_100: usize = expected_lines(100).iter().map(|l| l.len() + 1).sum();
    assert_eq!(
        offsets["offsets"][0]["offset"]["position"],
        json!(first_100.to_string()),
        "{offsets}"
    );
    let reset = call(
        "DELETE",
        &format!("{}/connectors/src0/offsets", cluster.host(1).kafka),
        None,
        &[],
    );
    assert_eq!(reset.status, 200, "{}", reset.body);
    // Resumed through worker 1: it reads the file again from the start (the reset), so the
    // first 200 lines arrive once more after the 100 delivered before.
    assert_eq!(put(1, "/connectors/src0/resume"), 202);
    let mut expected = expected_lines(100);
    expected.extend(expected_lines(200));
    wait_for(Duration::from_secs(20), "300 lines", || {
        read_lines(output).len() >= 300
    });
    assert!(
        read_lines(output) == expected,
        "lines after the reset differ"
    );
}

#[test]
fn a_new_worker_gets_a_share() {
    let Some(_one) = one_at_a_time() else {
        return;
    };
    let (mut cluster, files) = Workers::with_pipelines(2, 2, 0);
    let feeder = Feeder::start(files.iter().map(|(i, _)| i.clone()).collect(), 20);
    let joined = Instant::now();
    let third = cluster.add();
    wait_for(TAKEOVER_LIMIT, "the new worker running a task", || {
        cluster.all_running_on_live(0, 4)
            && cluster
                .placement(0)
                .iter()
                .any(|(_, _, _, w)| *w == format!("w{third}"))
    });
    eprintln!(
        "the new worker ran a task {:?} after it started",
        joined.elapsed()
    );
    let workers: BTreeSet<String> = cluster
        .placement(third)
        .into_iter()
        .map(|(_, _, _, w)| w)
        .collect();
    assert_eq!(workers.len(), 3, "tasks on {workers:?}");
    std::thread::sleep(Duration::from_secs(1));
    let written = feeder.stop();
    for (_, output) in &files {
        assert_delivered(output, written, true);
    }
}
