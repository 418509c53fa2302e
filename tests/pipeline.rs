//! File → topic → file through a real `wasm-connect` process and the bundled wasm
//! connectors: every line arrives identical, also across a `kill -9` and a restart.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{append, read_lines, wait_for, Workspace};

/// The lines the sink must produce for a source file: split at `\n`, a `\r` before it
/// stripped, a last line without terminator included.
fn expected_lines(source: &str) -> Vec<String> {
    let mut lines: Vec<String> = source
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
        .collect();
    if source.ends_with('\n') || source.is_empty() {
        lines.pop();
    }
    lines
}

/// Line `i` of the test corpus: plain, empty, CRLF-terminated and multibyte lines.
fn corpus_line(i: usize) -> String {
    match i % 7 {
        0 => String::new(),
        1 => format!("line {i} with CRLF\r"),
        2 => format!("multibyte {i}: héllo wörld 日本語 🎉"),
        3 => format!("{i}{}", "x".repeat(i % 200)),
        _ => format!("plain line {i}"),
    }
}

fn corpus(range: std::ops::Range<usize>) -> String {
    range.map(|i| corpus_line(i) + "\n").collect()
}

fn create_pipeline(host: &common::Host, source: &Path, sink: &Path) {
    let source_config = format!(
        r#"{{"connector-class":"org.apache.rocketmq.connect.file.FileSourceConnector","topic":"fileTopic","filename":"{}"}}"#,
        source.display()
    );
    let sink_config = format!(
        r#"{{"connector-class":"org.apache.rocketmq.connect.file.FileSinkConnector","topicNames":"fileTopic","filename":"{}"}}"#,
        sink.display()
    );
    assert_eq!(
        host.create("file-source", &source_config),
        (200, "success".to_string())
    );
    assert_eq!(
        host.create("file-sink", &sink_config),
        (200, "success".to_string())
    );
}

/// Compares the sink's lines with the expected ones; the message counts what differs.
fn assert_same_lines(actual: &[String], expected: &[String]) {
    if actual == expected {
        return;
    }
    let duplicates = actual.len().saturating_sub(expected.len());
    let first_difference = actual.iter().zip(expected).position(|(a, e)| a != e);
    panic!(
        "sink has {} lines, expected {} (surplus {duplicates}); first difference at line {first_difference:?}",
        actual.len(),
        expected.len()
    );
}

#[test]
fn every_line_arrives_identical_including_lines_appended_while_running() {
    let ws = Workspace::new();
    let (source, sink) = (ws.path("source.txt"), ws.path("sink.txt"));
    append(&source, &corpus(0..60_000));
    let host = ws.start();
    create_pipeline(&host, &source, &sink);
    host.wait_running("file-source");
    host.wait_running("file-sink");
    for chunk in 0..8 {
        append(
            &source,
            &corpus(60_000 + chunk * 5_000..65_000 + chunk * 5_000),
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    append(&source, "last line without newline é");
    let text = std::fs::read_to_string(&source).expect("source");
    let expected = expected_lines(&text);
    assert_eq!(expected.len(), 100_001);
    wait_for(Duration::from_secs(60), "all lines in the sink", || {
        read_lines(&sink).len() >= expected.len()
    });
    assert_same_lines(&read_lines(&sink), &expected);
    // A terminator arriving later for the delivered last line is not a new line.
    append(&source, "\nafter\n");
    wait_for(Duration::from_secs(30), "the appended line", || {
        read_lines(&sink).last().map(String::as_str) == Some("after")
    });
    assert_eq!(read_lines(&sink).len(), expected.len() + 1);
}

#[test]
fn kill_9_mid_stream_then_restart_loses_nothing_and_duplicates_nothing() {
    let ws = Workspace::new();
    let (source, sink) = (ws.path("source.txt"), ws.path("sink.txt"));
    const TOTAL: usize = 300_000;
    const CHUNK: usize = 2_000;
    append(&source, &corpus(0..CHUNK));
    let host = ws.start();
    create_pipeline(&host, &source, &sink);
    // A writer keeps appending, so the pipeline is mid-stream when the host is killed.
    let writer_path = source.clone();
    let writer = std::thread::spawn(move || {
        for start in (CHUNK..TOTAL).step_by(CHUNK) {
            append(&writer_path, &corpus(start..start + CHUNK));
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    wait_for(Duration::from_secs(60), "the sink to be mid-stream", || {
        read_lines(&sink).len() > 30_000
    });
    host.kill9();
    let delivered_before_crash = read_lines(&sink).len();
    let host = ws.start();
    writer.join().expect("writer");
    host.wait_running("file-source");
    host.wait_running("file-sink");
    let expected = expected_lines(&std::fs::read_to_string(&source).expect("source"));
    assert_eq!(expected.len(), TOTAL);
    assert!(
        delivered_before_crash < TOTAL,
        "the crash did not happen mid-stream"
    );
    wait_for(
        Duration::from_secs(120),
        "all lines after the restart",
        || read_lines(&sink).len() >= TOTAL,
    );
    std::thread::sleep(Duration::from_millis(500)); // a duplicate would arrive after the last line
    assert_same_lines(&read_lines(&sink), &expected);
}

#[test]
fn sigterm_shuts_down_cleanly_and_a_restart_resumes_without_duplicates() {
    let ws = Workspace::new();
    let (source, sink) = (ws.path("source.txt"), ws.path("sink.txt"));
    append(&source, &corpus(0..10_000));
    let host = ws.start();
    create_pipeline(&host, &source, &sink);
    wait_for(Duration::from_secs(60), "first lines", || {
        read_lines(&sink).len() == 10_000
    });
    assert!(
        host.terminate().success(),
        "wasm-connect did not exit cleanly on SIGTERM"
    );
    append(&source, &corpus(10_000..20_000));
    let host = ws.start();
    wait_for(
        Duration::from_secs(60),
        "lines written while stopped",
        || read_lines(&sink).len() >= 20_000,
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_same_lines(&read_lines(&sink), &expected_lines(&corpus(0..20_000)));
    drop(host);
}
