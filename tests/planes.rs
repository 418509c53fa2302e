//! The worker and its planes in process, without starting `wasm-connect` (issue 11):
//! - worker rules (pause, resume, stop, restart, offsets) on the embedded planes, with the
//!   bundled file connectors compiled natively (`tests/common/native.rs`) running the real
//!   task loops; configs are still checked by the bundled components;
//! - one conformance run of the data plane contract (store a batch, read it, commit, read,
//!   alter and reset offsets, resume) against both implementations: the embedded plane
//!   always, the NATS plane when `nats-server` is installed (CI's cluster block installs it).

mod common;
#[path = "common/native.rs"]
mod native;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::nats::{nats_available, NatsCluster};
use common::{append, bundled_plugins, read_lines, wait_for};
use wasm_connect::cluster::{Cluster, ClusterOptions};
use wasm_connect::plugins::PluginRegistry;
use wasm_connect::sandbox::types::RecordBatch;
use wasm_connect::sandbox::{Capabilities, Limits, Sandbox, WorkerLimits};
use wasm_connect::storage::{EmbeddedControl, EmbeddedPlane, Properties, Storage, TargetState};
use wasm_connect::worker::batch::{BatchChecks, Partitions, TopicPolicy};
use wasm_connect::worker::plane::{DataPlane, StoreBatch};
use wasm_connect::worker::{
    ConnectorOffsets, LifecycleError, OffsetChanges, OffsetsError, RunState, Worker,
};
use wasm_connect_sdk::{BatchReader, BatchWriter, Record};

const WAIT: Duration = Duration::from_secs(30);

/// A worker on the embedded planes in its own runtime, running the native file connectors.
struct Rig {
    dir: tempfile::TempDir,
    storage: Arc<Storage>,
    worker: Arc<Worker>,
    runtime: tokio::runtime::Runtime,
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().expect("temp dir");
        let plugin_dir = dir.path().join("plugins");
        std::fs::create_dir_all(&plugin_dir).expect("plugin dir");
        for plugin in ["file-source.wasm", "file-sink.wasm"] {
            std::fs::copy(bundled_plugins().join(plugin), plugin_dir.join(plugin))
                .expect("copy a bundled plugin (built by scripts/build-plugins.sh)");
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let data_dir = dir.path().join("data");
        let storage = Arc::new(Storage::open(&data_dir).expect("open storage"));
        let worker = runtime.block_on(async {
            let sandbox = Arc::new(
                Sandbox::new(WorkerLimits::default(), Capabilities::default()).expect("sandbox"),
            );
            let plugins =
                Arc::new(PluginRegistry::start(plugin_dir, &data_dir, sandbox.clone()).await);
            Worker::new(
                "planes@0".into(),
                sandbox,
                (
                    Arc::new(EmbeddedPlane(storage.clone())),
                    Arc::new(EmbeddedControl(storage.clone())),
                ),
                plugins,
                tokio::runtime::Handle::current(),
            )
            .with_task_runs(native::file_runs())
        });
        Rig {
            dir,
            storage,
            worker: Arc::new(worker),
            runtime,
        }
    }

    fn run<T>(&self, work: impl Future<Output = T>) -> T {
        self.runtime.block_on(work)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Creates a file source reading `input` into topic `t`.
    fn source(&self, name: &str, input: &Path) {
        let config = props(&[
            ("connector-class", "file-source"),
            ("topic", "t"),
            ("filename", &input.display().to_string()),
        ]);
        let put = self.run(self.worker.put(name, config));
        put.unwrap_or_else(|e| panic!("create {name}: {e}"));
    }

    /// Creates a file sink writing topic `t` to `output`.
    fn sink(&self, name: &str, output: &Path) {
        let config = props(&[
            ("connector-class", "file-sink"),
            ("topicNames", "t"),
            ("filename", &output.display().to_string()),
        ]);
        let put = self.run(self.worker.put(name, config));
        put.unwrap_or_else(|e| panic!("create {name}: {e}"));
    }

    /// Records in topic `t`.
    fn records(&self) -> u64 {
        let log = self.storage.topics.get("t").expect("topic t");
        log.end_offset()
    }

    fn wait_records(&self, expected: u64) {
        wait_for(WAIT, &format!("{expected} records in topic t"), || {
            self.records() == expected
        });
        assert_eq!(self.records(), expected, "no record beyond the {expected}");
    }

    fn set_target(&self, name: &str, target: TargetState) {
        let set = self.run(self.worker.set_target(name, target));
        set.unwrap_or_else(|e| panic!("{name} to {target:?}: {e}"));
    }

    /// Waits until every task of `name` shows `state` (and there is at least one).
    fn wait_tasks(&self, name: &str, state: RunState) {
        wait_for(WAIT, &format!("tasks of {name} {state:?}"), || {
            let status = self.run(self.worker.status(name)).expect("status");
            !status.tasks.is_empty() && status.tasks.iter().all(|t| t.state == state)
        });
    }

    fn offsets(&self, name: &str) -> ConnectorOffsets {
        self.run(self.worker.offsets(name)).expect("offsets")
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.runtime.block_on(self.worker.shutdown());
    }
}

fn props(pairs: &[(&str, &str)]) -> Properties {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `n` lines `<prefix>-<i>`, each with its `\n`.
fn lines(prefix: &str, n: usize) -> String {
    (0..n).map(|i| format!("{prefix}-{i}\n")).collect()
}

#[test]
fn a_paused_source_stores_nothing_until_resumed_and_a_stopped_one_runs_no_task() {
    let rig = Rig::new();
    let input = rig.path("in.txt");
    append(&input, &lines("a", 3));
    rig.source("src", &input);
    rig.wait_records(3);

    rig.set_target("src", TargetState::Paused);
    rig.wait_tasks("src", RunState::Paused);
    append(&input, &lines("b", 2));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rig.records(), 3, "a paused source stored records");

    rig.set_target("src", TargetState::Running);
    rig.wait_records(5);

    rig.set_target("src", TargetState::Stopped);
    let status = rig.run(rig.worker.status("src")).expect("status");
    assert_eq!(status.state.0, RunState::Stopped);
    assert!(status.tasks.is_empty(), "a stopped connector runs no task");
    append(&input, &lines("c", 1));
    rig.set_target("src", TargetState::Running);
    // From the committed positions: the new line only, nothing read twice.
    rig.wait_records(6);
}

#[test]
fn offsets_change_only_while_stopped_and_the_source_resumes_from_them() {
    let rig = Rig::new();
    let input = rig.path("in.txt");
    let text = lines("a", 3);
    append(&input, &text);
    rig.source("src", &input);
    rig.wait_records(3);
    let partition = input.display().to_string();
    let committed = |position: usize| {
        ConnectorOffsets::Source([(partition.clone(), position.to_string())].into())
    };
    wait_for(WAIT, "the positions of all 3 lines", || {
        rig.offsets("src") == committed(text.len())
    });

    let after_first_line = text.find('\n').expect("a line") + 1;
    let rewind = OffsetChanges::Source(vec![(
        partition.clone(),
        Some(after_first_line.to_string()),
    )]);
    let refused = rig.run(rig.worker.alter_offsets("src", rewind.clone()));
    assert!(
        matches!(refused, Err(OffsetsError::NotStopped(_))),
        "{refused:?}"
    );

    rig.set_target("src", TargetState::Stopped);
    rig.run(rig.worker.alter_offsets("src", rewind))
        .expect("alter while stopped");
    assert_eq!(rig.offsets("src"), committed(after_first_line));
    rig.set_target("src", TargetState::Running);
    // Lines 2 and 3 again, from the altered position.
    rig.wait_records(5);

    rig.set_target("src", TargetState::Stopped);
    rig.run(rig.worker.reset_offsets("src")).expect("reset");
    assert_eq!(
        rig.offsets("src"),
        ConnectorOffsets::Source(Default::default())
    );
    rig.set_target("src", TargetState::Running);
    // The whole file again, from its start.
    rig.wait_records(8);
}

#[test]
fn restarted_tasks_resume_where_they_committed_and_every_line_arrives_once() {
    let rig = Rig::new();
    let (input, output) = (rig.path("in.txt"), rig.path("out.txt"));
    append(&input, &lines("a", 3));
    rig.source("src", &input);
    rig.sink("dst", &output);
    wait_for(WAIT, "3 lines written", || read_lines(&output).len() == 3);

    let restarted = rig.run(rig.worker.restart("src", false)).expect("restart");
    assert_eq!(restarted, [0]);
    rig.run(rig.worker.restart_task("dst", 0))
        .expect("restart task 0");
    let missing = rig.run(rig.worker.restart_task("dst", 5));
    assert!(
        matches!(missing, Err(LifecycleError::TaskNotFound { task: 5, .. })),
        "{missing:?}"
    );
    rig.wait_tasks("src", RunState::Running);
    rig.wait_tasks("dst", RunState::Running);

    append(&input, &lines("b", 2));
    let expected = read_lines(&input);
    wait_for(WAIT, "5 lines written", || read_lines(&output).len() >= 5);
    assert_eq!(read_lines(&output), expected, "each line once, in order");
    wait_for(WAIT, "the sink's offset past all 5 records", || {
        rig.offsets("dst") == ConnectorOffsets::Sink([("t".to_string(), 5)].into())
    });
}

/// The data plane contract, the same assertions for every implementation.
async fn conformance(plane: &dyn DataPlane) {
    let (source, producer, sink, topic) = ("conf-source", "conf-source/0", "conf-sink", "conf");
    let producers = [producer.to_string()];
    let positions = |pairs: &[(&str, &str)]| -> Properties { props(pairs) };

    // Store a batch.
    let (resumed, sequence) = plane.source_resume(source, producer).await.expect("resume");
    assert!(resumed.is_empty(), "{resumed:?}");
    let records = [("a", "1"), ("b", "2"), ("c", "3")];
    let stored = plane
        .store_batch(batch(source, producer, sequence, &records))
        .await
        .expect("store a batch");
    let stored: Vec<(String, String)> = stored
        .into_iter()
        .map(|p| (p.partition, p.position))
        .collect();
    assert_eq!(stored, [("p".to_string(), "3".to_string())]);
    let offsets = plane
        .source_offsets(source, &producers)
        .await
        .expect("offsets");
    assert_eq!(offsets, positions(&[("p", "3")]));
    let topics = plane
        .source_topics(source, &producers)
        .await
        .expect("topics");
    assert_eq!(topics, [topic]);

    // Read it.
    assert_eq!(read(plane, sink, topic, 0, 3).await, ["a", "b", "c"]);

    // Commit a sink's offsets with its flushed positions, and resume from them.
    let committed = plane
        .commit_sink(
            sink,
            vec![(topic.into(), 3)],
            vec![("out".into(), "30".into())],
        )
        .await;
    committed.expect("commit");
    let state = plane.sink_resume(sink).await.expect("sink resume");
    assert_eq!(state.offsets, [(topic.to_string(), 3)].into());
    assert_eq!(state.positions, positions(&[("out", "30")]));

    // Alter and reset the sink's offsets.
    let to_one = [(topic.to_string(), Some(1))];
    let altered = plane.alter_sink_offsets(sink, &to_one).await;
    altered.expect("alter sink offsets");
    let state = plane.sink_resume(sink).await.expect("sink resume");
    assert_eq!(state.offsets, [(topic.to_string(), 1)].into());
    let forget = [(topic.to_string(), None)];
    let reset = plane.alter_sink_offsets(sink, &forget).await;
    reset.expect("reset sink offsets");
    let state = plane.sink_resume(sink).await.expect("sink resume");
    assert!(state.offsets.is_empty(), "{:?}", state.offsets);

    // Alter and reset the source's positions: what a resuming task starts from.
    let to_one = [("p".to_string(), Some("1".to_string()))];
    let altered = plane
        .alter_source_offsets(source, &producers, &to_one)
        .await;
    altered.expect("alter source offsets");
    let (resumed, _) = plane.source_resume(source, producer).await.expect("resume");
    assert_eq!(resumed, positions(&[("p", "1")]));
    let forget = [("p".to_string(), None)];
    let reset = plane
        .alter_source_offsets(source, &producers, &forget)
        .await;
    reset.expect("reset source offsets");
    let offsets = plane
        .source_offsets(source, &producers)
        .await
        .expect("offsets");
    assert!(offsets.is_empty(), "{offsets:?}");

    // Resume: the next batch goes after what the topic holds.
    let (resumed, sequence) = plane.source_resume(source, producer).await.expect("resume");
    assert!(resumed.is_empty(), "{resumed:?}");
    let stored = plane.store_batch(batch(source, producer, sequence, &[("d", "4")]));
    stored.await.expect("store after the reset");
    let offsets = plane
        .source_offsets(source, &producers)
        .await
        .expect("offsets");
    assert_eq!(offsets, positions(&[("p", "4")]));
    assert_eq!(read(plane, sink, topic, 3, 1).await, ["d"]);
}

/// A polled batch of `(value, position)` records of partition `p`, for topic `conf`.
fn batch(source: &str, producer: &str, sequence: u64, records: &[(&str, &str)]) -> StoreBatch {
    let mut writer = BatchWriter::new();
    for (value, position) in records {
        let record = Record {
            value: value.as_bytes(),
            partition: "p",
            position,
            ..Record::default()
        };
        writer.push(&record).expect("frame a record");
    }
    let (count, frames) = writer.into_parts();
    let config = props(&[("topic", "conf")]);
    StoreBatch {
        connector: source.into(),
        producer: producer.into(),
        sequence,
        default_topic: "conf".into(),
        durable: true,
        checks: BatchChecks {
            max_records: 100,
            limits: Limits::default(),
            topics: Arc::new(TopicPolicy::from_config(&config).expect("topic policy")),
            partitions: Arc::new(Mutex::new(Partitions::default())),
        },
        batch: RecordBatch { count, frames },
    }
}

/// The values of `count` records of `topic` from offset `from`, as one sink task reads them.
async fn read(
    plane: &dyn DataPlane,
    sink: &str,
    topic: &str,
    from: u64,
    count: usize,
) -> Vec<String> {
    let mut reader = plane
        .topic_reader(sink, 0, topic, from)
        .await
        .expect("topic reader");
    let mut values = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    while values.len() < count {
        assert!(
            std::time::Instant::now() < deadline,
            "read {values:?} of {count} records"
        );
        let next = from + values.len() as u64;
        let read = reader.read(next, 100, 1 << 20).await.expect("read");
        if read.count > 0 {
            assert_eq!(read.first_offset, next, "records in order, none skipped");
        }
        for record in BatchReader::new(&read.frames) {
            let record = record.expect("a framed record");
            values.push(String::from_utf8_lossy(record.value).into_owned());
        }
        if read.count == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_plane_keeps_the_data_plane_contract() {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = Arc::new(Storage::open(dir.path()).expect("open storage"));
    conformance(&EmbeddedPlane(storage)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nats_plane_keeps_the_data_plane_contract() {
    let turn = common::serial();
    if !nats_available() {
        return;
    }
    let nats = NatsCluster::start(3);
    let options = ClusterOptions {
        servers: nats.urls(),
        cluster_id: "conformance".into(),
        replicas: 1,
        strategy: Default::default(),
        max_topics: 10,
    };
    let cluster = Cluster::connect(options, "conformance@0".into())
        .await
        .expect("join the NATS cluster");
    conformance(&cluster).await;
    drop(turn);
}
