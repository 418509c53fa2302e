//! A guest's stdout and stderr: forwarded to the host log line by line, tagged with the
//! connector and task, rate-limited; the end of stderr is kept to explain a panic. Also the
//! rate limit and escaping that the `log` host call shares ([`LineRate`], [`escape_line`]).

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
    rate: LineRate,
    /// Shows resolved secrets as their references.
    redactor: Redactor,
}

/// At most [`LINES_PER_WINDOW`] lines per [`RATE_WINDOW`] for one stream of one task; the
/// lines beyond are counted and reported in one WARN line when the next window starts.
pub(super) struct LineRate {
    window_start: Instant,
    logged: u32,
    dropped: u64,
}

impl LineRate {
    pub(super) fn new() -> Self {
        LineRate {
            window_start: Instant::now(),
            logged: 0,
            dropped: 0,
        }
    }

    /// True when one more line of `stream` may be logged now.
    pub(super) fn admit(&mut self, task: &dyn std::fmt::Display, stream: &str) -> bool {
        if self.window_start.elapsed() >= RATE_WINDOW {
            if self.dropped > 0 {
                tracing::warn!(task = %task, stream, "dropped {} guest lines (rate limit: {LINES_PER_WINDOW} per second)", self.dropped);
            }
            self.window_start = Instant::now();
            self.logged = 0;
            self.dropped = 0;
        }
        if self.logged >= LINES_PER_WINDOW {
            self.dropped += 1;
            return false;
        }
        self.logged += 1;
        true
    }
}

/// A guest's line made safe for the log: cut after [`MAX_LINE`] bytes, control characters
/// escaped (`\n`, `\u{1b}`, …) so it cannot forge log lines or terminal sequences.
pub(super) fn escape_line(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(MAX_LINE)];
    let text = String::from_utf8_lossy(cut);
    let mut line = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    if cut.len() < bytes.len() {
        line.push_str(" [cut]");
    }
    line
}

impl GuestOutput {
    pub fn new(task: String, stream: &'static str, redactor: Redactor) -> Self {
        let state = OutputState {
            task,
            stream,
            line: Vec::new(),
            tail: Vec::new(),
            rate: LineRate::new(),
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
            } else if state.line.len() < MAX_LINE + state.redactor.longest() {
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
        let admitted = self.rate.admit(&self.task, self.stream);
        if admitted {
            // Redacted before it is cut, so no cut can leave part of a secret behind.
            let line = String::from_utf8_lossy(&self.line);
            let line = escape_line(self.redactor.redact(&line).as_bytes());
            tracing::info!(task = %self.task, stream = self.stream, "guest: {line}");
        }
        self.line.clear();
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
    fn control_characters_are_escaped_and_long_lines_cut() {
        assert_eq!(escape_line(b"a\nb\x1b[31m"), "a\\nb\\u{1b}[31m");
        let long = escape_line(&[b'x'; MAX_LINE + 10]);
        assert!(long.ends_with(" [cut]") && long.len() == MAX_LINE + 6);
    }

    #[test]
    fn lines_beyond_the_rate_are_dropped() {
        let mut rate = LineRate::new();
        let admitted = (0..LINES_PER_WINDOW + 50)
            .filter(|_| rate.admit(&"c/0", "log"))
            .count();
        assert_eq!(admitted, LINES_PER_WINDOW as usize);
        assert_eq!(rate.dropped, 50);
    }

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
