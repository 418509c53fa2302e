//! Per-connector rates for the dashboard's charts: tasks add to a connector's running totals
//! (once per batch), and a sampler turns them every [`STEP`] into records per second in,
//! out and failed, kept for [`WINDOW`] in a ring buffer. No Prometheus server is needed.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time between two samples.
pub const STEP: Duration = Duration::from_secs(2);
/// How far back the charts reach.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Samples kept per connector.
const SAMPLES: usize = (WINDOW.as_secs() / STEP.as_secs()) as usize;

/// One point of a chart: when, and records per second over the step before it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Sample {
    /// Unix time, seconds.
    pub at: u64,
    pub records_in: f64,
    pub records_out: f64,
    pub errors: f64,
}

/// The running totals of one connector and its recent samples.
#[derive(Default)]
pub struct Totals {
    records_in: AtomicU64,
    records_out: AtomicU64,
    errors: AtomicU64,
    /// The totals at the last sample, and the samples.
    history: Mutex<(Option<[u64; 3]>, VecDeque<Sample>)>,
}

impl Totals {
    pub fn received(&self, records: u32) {
        self.records_in
            .fetch_add(u64::from(records), Ordering::Relaxed);
    }

    pub fn delivered(&self, records: u32) {
        self.records_out
            .fetch_add(u64::from(records), Ordering::Relaxed);
    }

    pub fn failed(&self, records: u32) {
        self.errors.fetch_add(u64::from(records), Ordering::Relaxed);
    }

    fn now(&self) -> [u64; 3] {
        [&self.records_in, &self.records_out, &self.errors].map(|c| c.load(Ordering::Relaxed))
    }

    /// Adds a sample: the rates since the last one (the first sample only remembers).
    fn sample(&self, at: u64) {
        let now = self.now();
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let (last, samples) = &mut *history;
        if let Some(before) = last.replace(now) {
            let per_second =
                |i: usize| now[i].saturating_sub(before[i]) as f64 / STEP.as_secs_f64();
            samples.push_back(Sample {
                at,
                records_in: per_second(0),
                records_out: per_second(1),
                errors: per_second(2),
            });
            while samples.len() > SAMPLES {
                samples.pop_front();
            }
        }
    }

    /// The samples kept, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        history.1.iter().copied().collect()
    }
}

/// Every connector's totals.
#[derive(Default)]
pub struct Rates(Mutex<BTreeMap<String, Arc<Totals>>>);

impl Rates {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Totals>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The totals of `connector`, created on first use.
    pub fn connector(&self, connector: &str) -> Arc<Totals> {
        self.map().entry(connector.to_string()).or_default().clone()
    }

    /// The samples of `connector`, oldest first (empty when it has none).
    pub fn samples(&self, connector: &str) -> Vec<Sample> {
        let totals = self.map().get(connector).cloned();
        totals.map(|t| t.samples()).unwrap_or_default()
    }

    pub fn forget(&self, connector: &str) {
        self.map().remove(connector);
    }

    /// Takes a sample of every connector now.
    pub fn sample(&self) {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let all: Vec<Arc<Totals>> = self.map().values().cloned().collect();
        for totals in all {
            totals.sample(at);
        }
    }

    /// Samples every [`STEP`] until the process ends.
    pub async fn run_sampler(self: Arc<Self>) {
        let mut tick = tokio::time::interval(STEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            self.sample();
        }
    }
}
