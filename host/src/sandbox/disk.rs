//! File writes: the disk budget (`limits.disk.bytes`), and file output streams written on
//! the calling thread. Every way a guest writes file data goes through one of three
//! functions of `wasi:filesystem/types`: `descriptor.write`, and the output streams that
//! `descriptor.write-via-stream` and `descriptor.append-via-stream` return. The linker's
//! versions of these three are shadowed by wrappers that count the bytes against the
//! task's [`DiskBudget`] (the streams are wrapped in a [`FileStream`]); a write beyond
//! the budget is refused (`insufficient-space`, or a failed stream write), and the host
//! fails the task after the call with the reason. Not counted: `set-size` (it grows a file
//! without writing data: a sparse file) and directory entries.
//!
//! A [`FileStream`] also writes on the guest's own thread, as every other file call does
//! (the WASI context allows blocking it), and accepts up to [`FILE_WRITE_PERMIT`] bytes per
//! write: wasmtime's file stream hands each write of at most 64 KiB to a blocking thread,
//! a thread hop per 64 KiB that cost a file sink more than the writes themselves.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use wasmtime::component::{Linker, Resource};
use wasmtime::StoreContextMut;
use wasmtime_wasi::filesystem::WasiFilesystemView;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    Descriptor, ErrorCode, Host as _, HostDescriptor,
};
use wasmtime_wasi::p2::{DynOutputStream, FsResult, OutputStream, Pollable, StreamError};
use wasmtime_wasi::WasiView;

use super::TaskState;

/// The interface whose write functions are shadowed (the version this wasmtime-wasi links).
const FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

/// What one task may still write.
#[derive(Debug)]
pub struct DiskBudget {
    limit: u64,
    written: AtomicU64,
    /// Set once a write was refused.
    exceeded: AtomicBool,
}

impl DiskBudget {
    /// A budget of `limit` bytes; None when `limit` is 0 (unlimited).
    pub fn new(limit: u64) -> Option<Arc<DiskBudget>> {
        (limit > 0).then(|| {
            Arc::new(DiskBudget {
                limit,
                written: AtomicU64::new(0),
                exceeded: AtomicBool::new(false),
            })
        })
    }

    /// Takes `bytes` from the budget; false (and nothing taken) when they do not fit.
    fn spend(&self, bytes: usize) -> bool {
        let bytes = bytes as u64;
        let fits = self
            .written
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |written| {
                written
                    .checked_add(bytes)
                    .filter(|total| *total <= self.limit)
            })
            .is_ok();
        if !fits {
            self.exceeded.store(true, Ordering::Relaxed);
        }
        fits
    }

    /// The limit and the bytes written, when a write was refused.
    pub fn exceeded(&self) -> Option<(u64, u64)> {
        self.exceeded
            .load(Ordering::Relaxed)
            .then(|| (self.limit, self.written.load(Ordering::Relaxed)))
    }
}

/// Replaces the linker's file-write functions with ones that count against the task's
/// [`DiskBudget`].
pub fn shadow_file_writes(linker: &mut Linker<TaskState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut types = linker.instance(FILESYSTEM_TYPES)?;
    types.func_wrap(
        "[method]descriptor.write-via-stream",
        |mut store: StoreContextMut<'_, TaskState>, (fd, offset): (Resource<Descriptor>, u64)| {
            let state = store.data_mut();
            let opened = HostDescriptor::write_via_stream(&mut state.filesystem(), fd, offset);
            Ok((counted(state, opened)?,))
        },
    )?;
    types.func_wrap(
        "[method]descriptor.append-via-stream",
        |mut store: StoreContextMut<'_, TaskState>, (fd,): (Resource<Descriptor>,)| {
            let state = store.data_mut();
            let opened = HostDescriptor::append_via_stream(&mut state.filesystem(), fd);
            Ok((counted(state, opened)?,))
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.write",
        |mut store: StoreContextMut<'_, TaskState>,
         (fd, buffer, offset): (Resource<Descriptor>, Vec<u8>, u64)| {
            Box::new(async move {
                let state = store.data_mut();
                if state.disk.as_ref().is_some_and(|d| !d.spend(buffer.len())) {
                    return Ok((Err(ErrorCode::InsufficientSpace),));
                }
                let mut fs = state.filesystem();
                let written = match HostDescriptor::write(&mut fs, fd, buffer, offset).await {
                    Ok(written) => Ok(written),
                    Err(e) => Err(fs.convert_error_code(e)?),
                };
                Ok((written,))
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Bytes a file stream accepts in one write: a sink's whole buffer of records in one call.
const FILE_WRITE_PERMIT: usize = 1 << 20;

/// The stream `opened` gave as a [`FileStream`], or the error as the guest sees it.
fn counted(
    state: &mut TaskState,
    opened: FsResult<Resource<DynOutputStream>>,
) -> wasmtime::Result<Result<Resource<DynOutputStream>, ErrorCode>> {
    let stream = match opened {
        Ok(stream) => stream,
        Err(e) => return Ok(Err(state.filesystem().convert_error_code(e)?)),
    };
    let budget = state.disk.clone();
    let table = state.ctx().table;
    let inner = table.delete(stream)?;
    let wrapped: DynOutputStream = Box::new(FileStream {
        inner,
        budget,
        pending: None,
        failed: None,
    });
    Ok(Ok(table.push(wrapped)?))
}

/// A file's output stream whose writes are taken from the budget (when there is one) and
/// written when the guest next waits on the stream (flush, ready, or drop), on its thread.
struct FileStream {
    inner: DynOutputStream,
    budget: Option<Arc<DiskBudget>>,
    /// Bytes accepted by `write` and not yet written.
    pending: Option<Bytes>,
    /// The write of `pending` failed: the next call reports it.
    failed: Option<StreamError>,
}

impl FileStream {
    fn spend(&self, bytes: usize) -> Result<(), StreamError> {
        match &self.budget {
            Some(budget) if !budget.spend(bytes) => Err(StreamError::LastOperationFailed(
                wasmtime::Error::msg(format!(
                    "disk budget of {} bytes (limits.disk.bytes) used up",
                    budget.limit
                )),
            )),
            _ => Ok(()),
        }
    }

    /// The failure of the last write, once.
    fn check_failed(&mut self) -> Result<(), StreamError> {
        self.failed.take().map_or(Ok(()), Err)
    }

    /// Accepts `bytes` to write at the next wait; refused while others are pending.
    fn accept(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.check_failed()?;
        if self.pending.is_some() {
            return Err(StreamError::trap(
                "write not permitted: check_write not called first",
            ));
        }
        self.spend(bytes.len())?;
        self.pending = Some(bytes);
        Ok(())
    }

    /// Writes the pending bytes (on this thread: the WASI context allows blocking it).
    async fn write_pending(&mut self) {
        if let Some(bytes) = self.pending.take() {
            if let Err(e) = self.inner.blocking_write_and_flush(bytes).await {
                self.failed = Some(e);
            }
        }
    }
}

#[async_trait::async_trait]
impl Pollable for FileStream {
    async fn ready(&mut self) {
        self.write_pending().await;
        self.inner.ready().await;
    }
}

#[async_trait::async_trait]
impl OutputStream for FileStream {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.accept(bytes)
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        // The pending bytes are written when the guest waits for the flush (`ready`).
        self.check_failed()?;
        self.inner.flush()
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        self.check_failed()?;
        if self.pending.is_some() {
            return Ok(0);
        }
        let permit = self.inner.check_write()?;
        Ok(if permit == 0 { 0 } else { FILE_WRITE_PERMIT })
    }

    async fn blocking_write_and_flush(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.write_pending().await;
        self.check_failed()?;
        self.spend(bytes.len())?;
        self.inner.blocking_write_and_flush(bytes).await
    }

    fn write_zeroes(&mut self, nelem: usize) -> Result<(), StreamError> {
        self.accept(Bytes::from(vec![0; nelem]))
    }

    async fn write_ready(&mut self) -> Result<usize, StreamError> {
        self.ready().await;
        self.check_write()
    }

    async fn cancel(&mut self) {
        // A write the guest was told succeeded still reaches the file.
        self.write_pending().await;
        self.inner.cancel().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_beyond_the_budget_are_refused_and_remembered() {
        assert!(DiskBudget::new(0).is_none(), "0 is unlimited");
        let budget = DiskBudget::new(100).unwrap();
        assert!(budget.spend(60));
        assert_eq!(budget.exceeded(), None);
        assert!(!budget.spend(41), "41 more do not fit");
        assert!(budget.spend(40), "40 more do");
        assert_eq!(budget.exceeded(), Some((100, 100)));
    }
}
