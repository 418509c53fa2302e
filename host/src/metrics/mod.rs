//! Prometheus metrics of this worker (`GET /metrics` on the JSON API): one registry, every
//! family declared at start-up (namespace `wasm_connect_`), encoded as Prometheus text 0.0.4
//! or OpenMetrics ([`Format`]).
//!
//! Tasks count through their [`TaskMeter`] once per batch or guest call, never per record;
//! the state-set gauges, plugin and topic families are refilled at each scrape from the
//! worker's [`crate::worker::WorkerView`]. A deleted connector's series are removed
//! ([`Metrics::forget`]). The per-connector rates the dashboard charts are [`rates`].

mod labels;
pub mod process;
pub mod rates;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{prometheus_text, text, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::sandbox::{GuestFailure, NetworkCounters};
use crate::worker::{RunState, WorkerView};
pub use labels::{Api, Limit, Op, RestartReason, Stage};
use labels::{
    BuildLabels, ConnectorLabels, ConnectorStateLabels, LagLabels, LimitLabels, OpLabels,
    PluginLabels, RequestLabels, RestartLabels, StageLabels, TaskLabels, TaskStateLabels,
    TopicLabels,
};
use rates::Rates;

/// A histogram family built with the batch-duration buckets.
type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;
type FloatCounter = Counter<f64, AtomicU64>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// Batch-duration buckets: 100 µs to about 26 s, ×4 apart.
fn batch_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 4.0, 10))
}

/// A family declared (HELP and TYPE) even before it has a series: the registry leaves out
/// empty metrics otherwise.
#[derive(Debug)]
struct Declared<M>(M);

impl<M: EncodeMetric> EncodeMetric for Declared<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

/// Every family of the registry; cloning shares the series.
#[derive(Clone)]
struct Families {
    connector_status: Family<ConnectorStateLabels, Gauge>,
    task_status: Family<TaskStateLabels, Gauge>,
    records_in: Family<TaskLabels, Counter>,
    records_out: Family<TaskLabels, Counter>,
    bytes_in: Family<TaskLabels, Counter>,
    bytes_out: Family<TaskLabels, Counter>,
    network_received: Family<TaskLabels, Counter>,
    network_sent: Family<TaskLabels, Counter>,
    record_errors: Family<StageLabels, Counter>,
    batch_duration: Histograms<OpLabels>,
    sink_lag: Family<LagLabels, Gauge>,
    last_record: Family<ConnectorLabels, FloatGauge>,
    restarts: Family<RestartLabels, Counter>,
    memory: Family<TaskLabels, Gauge>,
    memory_limit: Family<TaskLabels, Gauge>,
    cpu: Family<TaskLabels, FloatCounter>,
    limit_hits: Family<LimitLabels, Counter>,
    plugin_info: Family<PluginLabels, Gauge>,
    plugins_broken: Gauge,
    topic_bytes: Family<TopicLabels, Gauge>,
    requests: Family<RequestLabels, Counter>,
}

impl Families {
    fn new() -> Self {
        Families {
            connector_status: Family::default(),
            task_status: Family::default(),
            records_in: Family::default(),
            records_out: Family::default(),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
            network_received: Family::default(),
            network_sent: Family::default(),
            record_errors: Family::default(),
            batch_duration: Family::new_with_constructor(batch_histogram),
            sink_lag: Family::default(),
            last_record: Family::default(),
            restarts: Family::default(),
            memory: Family::default(),
            memory_limit: Family::default(),
            cpu: Family::default(),
            limit_hits: Family::default(),
            plugin_info: Family::default(),
            plugins_broken: Gauge::default(),
            topic_bytes: Family::default(),
            requests: Family::default(),
        }
    }

    /// Declares every family in `r` (names get the registry's `wasm_connect` prefix; the
    /// encoder adds `_total` to counters).
    fn register(&self, r: &mut Registry) {
        let f = self.clone();
        r.register("connector_status", "State set of each connector: 1 for its current state (UNASSIGNED, RUNNING, PAUSED, STOPPED, FAILED), 0 for the others", Declared(f.connector_status));
        r.register(
            "task_status",
            "State set of each task on this worker: 1 for its current state, 0 for the others",
            Declared(f.task_status),
        );
        r.register("records_in", "Records a task received: polled by a source (before transforms), read from its topics by a sink", Declared(f.records_in));
        r.register("records_out", "Records a task delivered: stored to topics by a source (after transforms), put to the external system by a sink", Declared(f.records_out));
        r.register(
            "bytes_in",
            "Bytes of record frames a task received (as records_in)",
            Declared(f.bytes_in),
        );
        r.register(
            "bytes_out",
            "Bytes of record frames a task delivered (as records_out)",
            Declared(f.bytes_out),
        );
        r.register(
            "network_bytes_received",
            "Bytes a task received over the network: wasi:http response bodies and TCP stream bytes",
            Declared(f.network_received),
        );
        r.register(
            "network_bytes_sent",
            "Bytes a task sent over the network: wasi:http request bodies and TCP stream bytes",
            Declared(f.network_sent),
        );
        r.register("record_errors", "Records of batches that failed at a stage (poll, transform, store, put, flush, commit); a failed call that carried no records counts 1", Declared(f.record_errors));
        r.register(
            "batch_duration_seconds",
            "Time of one batch call: poll, put, flush or commit",
            Declared(f.batch_duration),
        );
        r.register(
            "sink_lag_records",
            "Records of a topic a sink connector has not committed yet: end of topic minus committed offset",
            Declared(f.sink_lag),
        );
        r.register("last_record_timestamp_seconds", "Unix time when a connector last delivered records (tells an idle connector from a stalled one)", Declared(f.last_record));
        r.register(
            "task_restarts",
            "Restarts of a task: reason=failure (after its backoff) or operator (restart request)",
            Declared(f.restarts),
        );
        r.register(
            "task_memory_bytes",
            "Linear memory of a task's wasm instance, in bytes",
            Declared(f.memory),
        );
        r.register(
            "task_memory_limit_bytes",
            "Memory limit of a task's wasm instance (limits.memory), in bytes",
            Declared(f.memory_limit),
        );
        r.register(
            "task_cpu_seconds",
            "Time a task spent in guest calls (poll, put, flush, commit)",
            Declared(f.cpu),
        );
        r.register("limit_hits", "Guest calls that hit a limit (memory, cpu, timeout, disk); the task failed with the reason", Declared(f.limit_hits));
        r.register(
            "plugin_info",
            "One series per loaded plugin version, with its SHA-256 digest",
            Declared(f.plugin_info),
        );
        r.register(
            "plugins_broken",
            "Plugin files that failed to load (reasons in GET /connector-plugins)",
            Declared(f.plugins_broken),
        );
        r.register(
            "topic_log_bytes",
            "Size of a topic's log on disk, in bytes",
            Declared(f.topic_bytes),
        );
        r.register(
            "rest_requests",
            "REST requests answered, by API, route and status",
            Declared(f.requests),
        );
    }

    /// Removes every series of `connector`, whose tasks were numbered below `tasks`.
    fn forget(&self, connector: &str, tasks: u32, topics: &[String]) {
        let name = connector.to_string();
        for state in RunState::ALL {
            self.connector_status.remove(&ConnectorStateLabels {
                connector: name.clone(),
                state: state.into(),
            });
        }
        self.last_record.remove(&ConnectorLabels {
            connector: name.clone(),
        });
        for op in Op::ALL {
            self.batch_duration.remove(&OpLabels {
                connector: name.clone(),
                op,
            });
        }
        for topic in topics {
            self.sink_lag.remove(&LagLabels {
                connector: name.clone(),
                topic: topic.clone(),
            });
        }
        for limit in Limit::ALL {
            self.limit_hits.remove(&LimitLabels {
                connector: name.clone(),
                limit,
            });
        }
        for task in 0..tasks {
            let labels = TaskLabels {
                connector: name.clone(),
                task,
            };
            for family in [
                &self.records_in,
                &self.records_out,
                &self.bytes_in,
                &self.bytes_out,
                &self.network_received,
                &self.network_sent,
            ] {
                family.remove(&labels);
            }
            self.memory.remove(&labels);
            self.memory_limit.remove(&labels);
            self.cpu.remove(&labels);
            for state in RunState::ALL {
                self.task_status.remove(&TaskStateLabels {
                    connector: name.clone(),
                    task,
                    state: state.into(),
                });
            }
            for stage in Stage::ALL {
                self.record_errors.remove(&StageLabels {
                    connector: name.clone(),
                    task,
                    stage,
                });
            }
            for reason in RestartReason::ALL {
                self.restarts.remove(&RestartLabels {
                    connector: name.clone(),
                    task,
                    reason,
                });
            }
        }
    }
}

/// The encoding a scrape asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4: the default.
    Prometheus,
    /// OpenMetrics 1.0.0, when `Accept` names `application/openmetrics-text`.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The worker's metrics: the registry, its families and the dashboard's rates.
pub struct Metrics {
    registry: Registry,
    families: Families,
    /// The dashboard's per-connector rates.
    pub rates: Arc<Rates>,
    /// Held while a scrape refills the state families and encodes them.
    scraping: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every family declared, the build info and the process collector.
    pub fn new() -> Metrics {
        let families = Families::new();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(process::ProcessCollector));
        let ours = registry.sub_registry_with_prefix("wasm_connect");
        families.register(ours);
        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        ours.register(
            "build_info",
            "Version of this wasm-connect binary (value 1)",
            build,
        );
        Metrics {
            registry,
            families,
            rates: Arc::default(),
            scraping: tokio::sync::Mutex::new(()),
        }
    }

    /// The meter one task counts through.
    pub fn task(&self, connector: &str, task: u32, memory_limit: usize) -> TaskMeter {
        let f = &self.families;
        let labels = TaskLabels {
            connector: connector.to_string(),
            task,
        };
        let op = |op| {
            f.batch_duration.get_or_create_owned(&OpLabels {
                connector: connector.to_string(),
                op,
            })
        };
        let memory_limit = i64::try_from(memory_limit).unwrap_or(i64::MAX);
        f.memory_limit.get_or_create(&labels).set(memory_limit);
        TaskMeter(Some(Arc::new(TaskSeries {
            records_in: f.records_in.get_or_create_owned(&labels),
            records_out: f.records_out.get_or_create_owned(&labels),
            bytes_in: f.bytes_in.get_or_create_owned(&labels),
            bytes_out: f.bytes_out.get_or_create_owned(&labels),
            network_received: f.network_received.get_or_create_owned(&labels),
            network_sent: f.network_sent.get_or_create_owned(&labels),
            network_read: Mutex::default(),
            cpu: f.cpu.get_or_create_owned(&labels),
            memory: f.memory.get_or_create_owned(&labels),
            durations: Op::ALL.map(op),
            last_record: f.last_record.get_or_create_owned(&ConnectorLabels {
                connector: connector.to_string(),
            }),
            rates: self.rates.connector(connector),
            families: f.clone(),
            connector: connector.to_string(),
            task,
        })))
    }

    /// Counts a restart of a task an operator asked for.
    pub fn operator_restart(&self, connector: &str, task: u32) {
        self.families
            .restarts
            .get_or_create(&RestartLabels {
                connector: connector.to_string(),
                task,
                reason: RestartReason::Operator,
            })
            .inc();
    }

    /// What a task used, as the dashboard shows it.
    pub fn task_usage(&self, connector: &str, task: u32) -> TaskUsage {
        let f = &self.families;
        let labels = TaskLabels {
            connector: connector.to_string(),
            task,
        };
        let restarts = RestartReason::ALL.map(|reason| {
            let labels = RestartLabels {
                connector: connector.to_string(),
                task,
                reason,
            };
            f.restarts.get(&labels).map_or(0, |c| c.get())
        });
        TaskUsage {
            memory_bytes: f.memory.get(&labels).map_or(0, |g| g.get()),
            memory_limit_bytes: f.memory_limit.get(&labels).map_or(0, |g| g.get()),
            cpu_seconds: f.cpu.get(&labels).map_or(0.0, |c| c.get()),
            restarts: restarts.iter().sum(),
        }
    }

    /// Counts one answered REST request.
    pub fn request(&self, api: Api, route: &str, status: u16) {
        self.families
            .requests
            .get_or_create(&RequestLabels {
                api,
                route: route.to_string(),
                status,
            })
            .inc();
    }

    /// Removes every series of a deleted connector that had `tasks` tasks and read `topics`.
    pub fn forget(&self, connector: &str, tasks: usize, topics: &[String]) {
        let tasks = u32::try_from(tasks).unwrap_or(u32::MAX);
        self.families.forget(connector, tasks, topics);
        self.rates.forget(connector);
    }

    /// Refills the state, plugin and topic families from `view` and encodes every family.
    pub async fn scrape(&self, view: &WorkerView, format: Format) -> String {
        let _scraping = self.scraping.lock().await;
        self.refill(view);
        let mut out = String::new();
        // Writing into a String cannot fail; an encoder error would be a bug in a label.
        let encoded = match format {
            Format::Prometheus => prometheus_text::encode(&mut out, &self.registry),
            Format::OpenMetrics => text::encode(&mut out, &self.registry),
        };
        if let Err(e) = encoded {
            tracing::error!("encoding the metrics failed: {e}");
        }
        out
    }

    fn refill(&self, view: &WorkerView) {
        let f = &self.families;
        f.connector_status.clear();
        f.task_status.clear();
        for connector in &view.connectors {
            let name = &connector.name;
            for state in RunState::ALL {
                let labels = ConnectorStateLabels {
                    connector: name.clone(),
                    state: state.into(),
                };
                let current = connector.state() == state;
                f.connector_status
                    .get_or_create(&labels)
                    .set(i64::from(current));
            }
            for (task, view) in connector.local_tasks() {
                for state in RunState::ALL {
                    let labels = TaskStateLabels {
                        connector: name.clone(),
                        task,
                        state: state.into(),
                    };
                    let current = view.state == state;
                    f.task_status.get_or_create(&labels).set(i64::from(current));
                }
            }
            for (topic, lag) in &connector.lag {
                let labels = LagLabels {
                    connector: name.clone(),
                    topic: topic.clone(),
                };
                f.sink_lag
                    .get_or_create(&labels)
                    .set(i64::try_from(*lag).unwrap_or(i64::MAX));
            }
        }
        f.plugin_info.clear();
        let mut broken = 0;
        for plugin in &view.plugins {
            match &plugin.loaded {
                Some((name, version)) => {
                    let labels = PluginLabels {
                        plugin: name.clone(),
                        version: version.clone(),
                        digest: plugin.digest.clone(),
                    };
                    f.plugin_info.get_or_create(&labels).set(1);
                }
                None if plugin.broken.is_some() => broken += 1,
                None => {}
            }
        }
        f.plugins_broken.set(broken);
        f.topic_bytes.clear();
        for topic in &view.topics {
            let labels = TopicLabels {
                topic: topic.name.clone(),
            };
            f.topic_bytes
                .get_or_create(&labels)
                .set(i64::try_from(topic.bytes).unwrap_or(i64::MAX));
        }
    }
}

/// What a task used: memory against its limit, time in guest calls, restarts.
#[derive(Debug, Clone, Copy, Default)]
pub struct TaskUsage {
    pub memory_bytes: i64,
    pub memory_limit_bytes: i64,
    pub cpu_seconds: f64,
    pub restarts: u64,
}

/// The series one task counts into. The default meter counts nothing (metrics off).
#[derive(Clone, Default)]
pub struct TaskMeter(Option<Arc<TaskSeries>>);

struct TaskSeries {
    records_in: Counter,
    records_out: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
    network_received: Counter,
    network_sent: Counter,
    /// The last reading of the network counters, to count what came since.
    network_read: Mutex<NetworkReading>,
    cpu: FloatCounter,
    memory: Gauge,
    /// By [`Op`], in the order of [`Op::ALL`].
    durations: [Histogram; 4],
    last_record: FloatGauge,
    rates: Arc<rates::Totals>,
    families: Families,
    connector: String,
    task: u32,
}

impl TaskMeter {
    /// A guest call of `op` that took `elapsed`: its duration and the task's CPU time.
    pub fn call(&self, op: Op, elapsed: Duration) {
        if let Some(s) = &self.0 {
            let seconds = elapsed.as_secs_f64();
            s.durations[op as usize].observe(seconds);
            s.cpu.inc_by(seconds);
        }
    }

    /// A batch the task received.
    pub fn received(&self, records: u32, bytes: usize) {
        if let Some(s) = &self.0 {
            s.records_in.inc_by(u64::from(records));
            s.bytes_in.inc_by(bytes as u64);
            s.rates.received(records);
        }
    }

    /// A batch the task delivered.
    pub fn delivered(&self, records: u32, bytes: usize) {
        if let Some(s) = &self.0 {
            s.records_out.inc_by(u64::from(records));
            s.bytes_out.inc_by(bytes as u64);
            s.last_record.set(unix_seconds());
            s.rates.delivered(records);
        }
    }

    /// The instance's linear memory now.
    pub fn memory(&self, bytes: usize) {
        if let Some(s) = &self.0 {
            s.memory.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }

    /// The network counters of the task's instance now (`None` when it has none): counts
    /// what they grew by since the last reading. The counters of a new instance (after a
    /// restart) start from 0, so all of their first reading counts.
    pub fn network(&self, counters: Option<&Arc<NetworkCounters>>) {
        let (Some(s), Some(counters)) = (&self.0, counters) else {
            return;
        };
        let received = counters.bytes_in.load(Ordering::Relaxed);
        let sent = counters.bytes_out.load(Ordering::Relaxed);
        let mut last = s
            .network_read
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (last_received, last_sent) = if Weak::as_ptr(&last.counters) == Arc::as_ptr(counters) {
            (last.received, last.sent)
        } else {
            (0, 0)
        };
        s.network_received
            .inc_by(received.saturating_sub(last_received));
        s.network_sent.inc_by(sent.saturating_sub(last_sent));
        *last = NetworkReading {
            counters: Arc::downgrade(counters),
            received,
            sent,
        };
    }

    /// A batch (of `records`, 0 when unknown) that failed at `stage`.
    pub fn failed(&self, stage: Stage, records: u32) {
        if let Some(s) = &self.0 {
            let labels = StageLabels {
                connector: s.connector.clone(),
                task: s.task,
                stage,
            };
            let records = records.max(1);
            s.families
                .record_errors
                .get_or_create(&labels)
                .inc_by(u64::from(records));
            s.rates.failed(records);
        }
    }

    /// A guest call that failed: counts the limit it hit, if any.
    pub fn guest_failed(&self, failure: &GuestFailure) {
        let (Some(s), Some(limit)) = (&self.0, Limit::of(failure)) else {
            return;
        };
        let labels = LimitLabels {
            connector: s.connector.clone(),
            limit,
        };
        s.families.limit_hits.get_or_create(&labels).inc();
    }

    /// The task was restarted after a failure.
    pub fn restarted(&self) {
        if let Some(s) = &self.0 {
            let labels = RestartLabels {
                connector: s.connector.clone(),
                task: s.task,
                reason: RestartReason::Failure,
            };
            s.families.restarts.get_or_create(&labels).inc();
        }
    }
}

/// A reading of one instance's [`NetworkCounters`]. The weak reference tells the instance
/// (it keeps the counters' allocation, so a new instance's counters never share its address).
#[derive(Default)]
struct NetworkReading {
    counters: Weak<NetworkCounters>,
    received: u64,
    sent: u64,
}

fn unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> WorkerView {
        WorkerView {
            worker: "w".into(),
            connectors: Vec::new(),
            plugins: Vec::new(),
            topics: Vec::new(),
        }
    }

    fn counters(received: u64, sent: u64) -> Arc<NetworkCounters> {
        let counters = Arc::new(NetworkCounters::default());
        counters.bytes_in.store(received, Ordering::Relaxed);
        counters.bytes_out.store(sent, Ordering::Relaxed);
        counters
    }

    fn set(counters: &NetworkCounters, received: u64, sent: u64) {
        counters.bytes_in.store(received, Ordering::Relaxed);
        counters.bytes_out.store(sent, Ordering::Relaxed);
    }

    /// The (received, sent) network bytes of task 0 of `c` in a scrape.
    async fn network_bytes(metrics: &Metrics) -> (Option<String>, Option<String>) {
        let text = metrics.scrape(&view(), Format::Prometheus).await;
        let sample = |name: &str| {
            let prefix = format!("wasm_connect_{name}_total{{connector=\"c\",task=\"0\"}} ");
            text.lines()
                .find_map(|line| line.strip_prefix(&prefix))
                .map(String::from)
        };
        (
            sample("network_bytes_received"),
            sample("network_bytes_sent"),
        )
    }

    fn pair(received: u64, sent: u64) -> (Option<String>, Option<String>) {
        (Some(received.to_string()), Some(sent.to_string()))
    }

    #[tokio::test]
    async fn network_bytes_count_what_each_instance_added_across_restarts() {
        let metrics = Metrics::new();
        let text = metrics.scrape(&view(), Format::Prometheus).await;
        for name in ["network_bytes_received", "network_bytes_sent"] {
            assert!(
                text.contains(&format!("# TYPE wasm_connect_{name}_total counter")),
                "{name} is declared from start-up:\n{text}"
            );
        }

        let meter = metrics.task("c", 0, 1 << 20);
        assert_eq!(network_bytes(&metrics).await, pair(0, 0));
        meter.network(None);
        assert_eq!(network_bytes(&metrics).await, pair(0, 0));

        let first = counters(100, 40);
        meter.network(Some(&first));
        set(&first, 130, 45);
        meter.network(Some(&first));
        meter.network(Some(&first));
        assert_eq!(network_bytes(&metrics).await, pair(130, 45));

        // A restarted task's new instance counts from 0 again: every byte of it is new,
        // whether its first reading is below the old instance's last one or above it.
        let second = counters(10, 5);
        meter.network(Some(&second));
        assert_eq!(network_bytes(&metrics).await, pair(140, 50));
        let third = counters(500, 200);
        meter.network(Some(&third));
        assert_eq!(network_bytes(&metrics).await, pair(640, 250));

        metrics.forget("c", 1, &[]);
        assert_eq!(network_bytes(&metrics).await, (None, None));
    }
}
