//! A guest's stdout and stderr: forwarded to the host log line by line, tagged with the
//! connector and task, rate-limited; the end of stderr is kept to explain a panic.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use super::redact::Redactor;

/// Lines logged per stream per [`RATE_WINDOW`]; the rest are counted and reported.
const LINES_PER_WINDOW: u32 = 100;
const RATE_WINDOW: Duration = Duration::from_secs(1);
/// Longest line logged; longer ones are cut.
const MAX_LINE: usize = 1024;
/// Bytes of stderr kept to explain a failure.
const TAIL_BYTES: usize = 4096;

/// One output stream of one instance.
#[derive(Clone)]
pub struct GuestOutput {
    inner: Arc<Mutex<OutputState>>,
}

struct OutputState {
    task: String,
    stream: &'static str,
    line: Vec<u8>,
    tail: Vec<u8>,
    window_start: Instant,
    logged: u32,
    dropped: u64,
    /// Shows resolved secrets as their references.
    redactor: Redactor,
}

impl GuestOutput {
    pub fn new(task: String, stream: &'static str, redactor: Redactor) -> Self {
        let state = OutputState {
            task,
            stream,
            line: Vec::new(),
            tail: Vec::new(),
            window_start: Instant::now(),
            logged: 0,
            dropped: 0,
            redactor,
        };
        GuestOutput {
            inner: Arc::new(Mutex::new(state)),
        }
    }

    /// The message of a Rust panic the guest printed, if any.
    pub fn panic_message(&self) -> Option<String> {
        let state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let text = String::from_utf8_lossy(&state.tail);
        let after = text.rsplit_once("panicked at ")?.1;
        let (location, rest) = after.split_once(":\n").unwrap_or((after, ""));
        let message = rest.lines().next().unwrap_or_default().trim();
        Some(format!("{message} (at {})", location.trim()))
    }

    fn write(&self, bytes: &[u8]) {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        state.keep_tail(bytes);
        for byte in bytes {
            if *byte == b'\n' {
                state.emit_line();
            } else if state.line.len() < MAX_LINE {
                state.line.push(*byte);
            }
        }
    }
}

impl OutputState {
    fn keep_tail(&mut self, bytes: &[u8]) {
        self.tail.extend_from_slice(bytes);
        let excess = self.tail.len().saturating_sub(TAIL_BYTES);
        self.tail.drain(..excess);
    }

    fn emit_line(&mut self) {
        let line = String::from_utf8_lossy(&self.line).replace(|c: char| c.is_control(), " ");
        self.line.clear();
        if self.window_start.elapsed() >= RATE_WINDOW {
            if self.dropped > 0 {
                tracing::warn!(task = %self.task, stream = self.stream, "dropped {} guest output lines (rate limit)", self.dropped);
            }
            self.window_start = Instant::now();
            self.logged = 0;
            self.dropped = 0;
        }
        if self.logged >= LINES_PER_WINDOW {
            self.dropped += 1;
            return;
        }
        self.logged += 1;
        let line = self.redactor.redact(&line);
        tracing::info!(task = %self.task, stream = self.stream, "guest: {line}");
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rust_panic_message_is_found_in_stderr() {
        let stderr = GuestOutput::new("c/0".into(), "stderr", Redactor::default());
        stderr.write(b"\nthread '<unnamed>' panicked at src/lib.rs:12:5:\nhostile panic for testing\nnote: run with RUST_BACKTRACE=1\n");
        assert_eq!(
            stderr.panic_message().as_deref(),
            Some("hostile panic for testing (at src/lib.rs:12:5)")
        );
        assert_eq!(
            GuestOutput::new("c/0".into(), "stderr", Redactor::default()).panic_message(),
            None
        );
    }
}
