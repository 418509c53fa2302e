//! The bundled file connectors compiled natively (the `file-source` / `file-sink` crates)
//! behind the task loops' `SourceCalls` / `SinkCalls` seams: the same loops and planes as
//! the sandbox runs, without wasm. Used by the pipeline benchmark and the in-process tests.

#![allow(dead_code)] // each binary uses part of it

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use wasm_connect::sandbox::types::{Position, RecordBatch, TaskError};
use wasm_connect::sandbox::GuestFailure;
use wasm_connect::worker::batch::Partitions;
use wasm_connect::worker::sink::{self, SinkCalls};
use wasm_connect::worker::source::{self, SourceCalls};
use wasm_connect::worker::{CallResult, TaskContext, TaskRuns, TaskStatus};
use wasm_connect_sdk::{BatchReader, BatchWriter, Host, LogLevel, SinkTask, SourceTask};

/// Task runs for [`wasm_connect::worker::Worker::with_task_runs`]: every source task is the
/// native file source, every sink task the native file sink.
pub fn file_runs() -> TaskRuns {
    TaskRuns {
        source: run_file_source,
        sink: run_file_sink,
    }
}

fn run_file_source(ctx: &mut TaskContext) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
    Box::pin(file_source_task(ctx))
}

fn run_file_sink(ctx: &mut TaskContext) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
    Box::pin(file_sink_task(ctx))
}

/// One file source task from its committed positions, as `source::run` runs a component.
pub async fn file_source_task(ctx: &mut TaskContext) {
    let (committed, sequence) = match source::resume_point(ctx).await {
        Ok(resume) => resume,
        Err(reason) => return ctx.set(TaskStatus::Failed(reason)),
    };
    let partitions = Partitions::new(committed.keys().cloned());
    match file_source::FileSourceTask::start(&sdk_config(ctx), &NativeHost(committed)) {
        Ok(task) => source::drive(ctx, NativeSource(task), sequence, partitions).await,
        Err(e) => ctx.set(TaskStatus::Failed(format!("start: {e:?}"))),
    }
}

/// One file sink task from its committed offsets, as `sink::run` runs a component.
pub async fn file_sink_task(ctx: &mut TaskContext) {
    let (committed, subscriptions) = match sink::resume_point(ctx).await {
        Ok(resume) => resume,
        Err(reason) => return ctx.set(TaskStatus::Failed(reason)),
    };
    match file_sink::FileSinkTask::start(&sdk_config(ctx), &NativeHost(committed)) {
        Ok(task) => sink::drive(ctx, NativeSink(task), subscriptions).await,
        Err(e) => ctx.set(TaskStatus::Failed(format!("start: {e:?}"))),
    }
}

/// A task's config as the SDK takes it.
pub fn sdk_config(ctx: &TaskContext) -> wasm_connect_sdk::Config {
    ctx.config
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The host interface for natively compiled connector code: its committed positions.
pub struct NativeHost(pub BTreeMap<String, String>);

impl Host for NativeHost {
    fn log(&self, _level: LogLevel, message: &str) {
        println!("{message}");
    }
    fn committed_position(&self, partition: &str) -> Option<String> {
        self.0.get(partition).cloned()
    }
    fn connector_name(&self) -> String {
        "native".into()
    }
    fn task_id(&self) -> Option<u32> {
        Some(0)
    }
}

fn task_error(error: wasm_connect_sdk::TaskError) -> TaskError {
    match error {
        wasm_connect_sdk::TaskError::Retriable(m) => TaskError::Retriable(m),
        wasm_connect_sdk::TaskError::Fatal(m) => TaskError::Fatal(m),
    }
}

pub struct NativeSource(pub file_source::FileSourceTask);

impl SourceCalls for NativeSource {
    async fn poll(&mut self, max_records: u32, max_bytes: u32) -> CallResult<RecordBatch> {
        let mut out = BatchWriter::new();
        let polled = self
            .0
            .poll(&mut out, max_records, max_bytes)
            .map_err(task_error);
        let (count, frames) = out.into_parts();
        Ok(polled.map(|()| RecordBatch { count, frames }))
    }

    async fn commit(&mut self, positions: &[Position]) -> Result<(), GuestFailure> {
        let positions: Vec<_> = positions
            .iter()
            .map(|p| wasm_connect_sdk::Position {
                partition: p.partition.clone(),
                position: p.position.clone(),
            })
            .collect();
        self.0.commit(&positions);
        Ok(())
    }

    async fn stop(mut self) -> Result<(), GuestFailure> {
        self.0.stop();
        Ok(())
    }
}

pub struct NativeSink(pub file_sink::FileSinkTask);

impl SinkCalls for NativeSink {
    async fn put(&mut self, topic: &str, first_offset: u64, batch: &RecordBatch) -> CallResult<()> {
        Ok(self
            .0
            .put(topic, first_offset, BatchReader::new(&batch.frames))
            .map_err(task_error))
    }

    async fn flush(&mut self) -> CallResult<Vec<Position>> {
        let flushed = self.0.flush().map_err(task_error);
        Ok(flushed.map(|ps| {
            ps.into_iter()
                .map(|p| Position {
                    partition: p.partition,
                    position: p.position,
                })
                .collect()
        }))
    }

    async fn stop(mut self) -> Result<(), GuestFailure> {
        self.0.stop();
        Ok(())
    }
}
