//! `GET /metrics` of a real host, parsed by Python's `prometheus_client` (the reference
//! parsers of both text formats, installed by the "metrics, health and dashboard" block of
//! `.ci/run`).

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::{call, Host};

/// One sample as the parser read it.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: serde_json::Map<String, Value>,
    pub value: f64,
}

/// Parses a scrape with `prometheus_client` (0.0.4 text or, strictly, OpenMetrics); panics
/// with the parser's error when the text does not parse.
pub fn parse(text: &str, openmetrics: bool) -> Vec<Sample> {
    let parser = if openmetrics {
        "from prometheus_client.openmetrics.parser import text_string_to_metric_families"
    } else {
        "from prometheus_client.parser import text_string_to_metric_families"
    };
    let script = format!(
        "import sys, json\n{parser}\nfor family in text_string_to_metric_families(sys.stdin.read()):\n    for s in family.samples:\n        print(json.dumps([s.name, s.labels, s.value]))\n"
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (installed by .ci/run)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write the scrape to the parser");
    let out = child.wait_with_output().expect("parser output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'prometheus_client'"),
        "Python's prometheus_client is missing: the 'metrics, health and dashboard' block of .ci/run installs it"
    );
    assert!(
        out.status.success(),
        "the scrape does not parse: {stderr}\n{text}"
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).expect("parser line");
            Sample {
                name: v[0].as_str().unwrap_or_default().to_string(),
                labels: v[1].as_object().cloned().unwrap_or_default(),
                value: v[2].as_f64().unwrap_or(f64::NAN),
            }
        })
        .collect()
}

/// The value of `name` whose labels include every pair of `labels`, if any.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).and_then(Value::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// `GET /metrics` with `accept`, checked to carry the content type of what it sent.
pub fn scrape(host: &Host, accept: Option<&str>) -> Vec<Sample> {
    let headers: Vec<(&str, &str)> = accept.iter().map(|a| ("Accept", *a)).collect();
    let answer = call("GET", &format!("{}/metrics", host.kafka), None, &headers);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let openmetrics = accept.is_some_and(|a| a.contains("openmetrics"));
    if openmetrics {
        assert!(
            answer
                .content_type
                .starts_with("application/openmetrics-text; version=1.0.0"),
            "{}",
            answer.content_type
        );
        assert!(answer.body.ends_with("# EOF\n"));
    } else {
        assert!(
            answer.content_type.starts_with("text/plain; version=0.0.4"),
            "{}",
            answer.content_type
        );
        assert!(!answer.body.contains("# EOF"));
    }
    parse(&answer.body, openmetrics)
}
