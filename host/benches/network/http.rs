//! `http-sink` records per second against a local HTTP server (axum, in this process, which
//! counts the records it receives and answers 200), beside a native baseline that sends the
//! same requests (the same JSON array bodies, one new connection per request, as the host's
//! wasi:http path does) with hyper from the host process.
//!
//! `NETWORK_HTTP_RECORDS` (default 20,000) records of 100 B, `batch.max.size` 100, put in
//! batches of 1,000; 3 runs alternating wasm and native, medians reported.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use wasm_connect::sandbox::types::{Config, RecordBatch};
use wasm_connect::sandbox::{
    capabilities, Capabilities, ConnectorComponent, Identity, Limits, Redactor, Sandbox,
    SinkInstance, TaskSetup, WorkerLimits,
};
use wasm_connect_sdk::{BatchWriter, Record};

use super::common::median;

const RUNS: usize = 3;
const VALUE_BYTES: usize = 100;
const PER_REQUEST: usize = 100;
const PER_PUT: usize = 1000;

pub fn run() -> anyhow::Result<()> {
    let records: usize = std::env::var("NETWORK_HTTP_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(measure(records.div_ceil(PER_PUT) * PER_PUT))
}

async fn measure(records: usize) -> anyhow::Result<()> {
    let received = Arc::new(AtomicU64::new(0));
    let address = serve(received.clone()).await?;
    println!(
        "http benchmark: {records} records of {VALUE_BYTES} B, {PER_REQUEST} per request, to http://{address}/"
    );
    let sandbox = Sandbox::new(WorkerLimits::default(), Capabilities::default())?;
    let wasm = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../plugins/http-sink.wasm"
    ))?;
    let (ConnectorComponent::Sink(pre), _) = sandbox.compile(wasm).await? else {
        anyhow::bail!("http-sink.wasm is not a sink")
    };
    let value = [b'x'; VALUE_BYTES];
    let mut writer = BatchWriter::new();
    for _ in 0..PER_PUT {
        writer.push(&Record {
            value: &value,
            ..Record::default()
        })?;
    }
    let (count, frames) = writer.into_parts();
    let batch = RecordBatch { count, frames };
    let config: Config = [
        ("http.api.url", format!("http://{address}/ingest")),
        ("batch.max.size", PER_REQUEST.to_string()),
        ("topics", "bench".into()),
        ("network.allow", address.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let grants = capabilities::grant(sandbox.capabilities(), &[], &config)
        .await
        .map_err(anyhow::Error::msg)?;

    let (mut wasm_rates, mut native_rates) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let before = received.load(Ordering::Relaxed);
        let setup = TaskSetup {
            identity: Identity {
                connector: "bench".into(),
                task: Some(0),
            },
            grants: &grants,
            committed: Default::default(),
            config: &config,
            limits: Limits::default(),
            redactor: Redactor::default(),
            stop: None,
        };
        let mut sink = match SinkInstance::start(&sandbox, &pre, setup).await? {
            Ok(sink) => sink,
            Err(e) => anyhow::bail!("start: {e:?}"),
        };
        let started = Instant::now();
        for put in 0..records / PER_PUT {
            sink.put("bench", (put * PER_PUT) as u64, &batch)
                .await?
                .map_err(|e| anyhow::anyhow!("put: {e:?}"))?;
        }
        wasm_rates.push(records as f64 / started.elapsed().as_secs_f64());
        check_received(&received, before, records)?;

        let before = received.load(Ordering::Relaxed);
        let body = Bytes::from(native_body(&value));
        let started = Instant::now();
        for _ in 0..records / PER_REQUEST {
            post(address, body.clone()).await?;
        }
        native_rates.push(records as f64 / started.elapsed().as_secs_f64());
        check_received(&received, before, records)?;
    }
    let (wasm, native) = (median(&mut wasm_rates), median(&mut native_rates));
    println!("http-sink (wasm, wasi:http):        {wasm:>10.0} rec/s");
    println!("native baseline (hyper, same requests): {native:>6.0} rec/s");
    println!("ratio wasm / native: {:.2}", wasm / native);
    Ok(())
}

/// The body http-sink sends for one request of these values: a JSON array of strings.
fn native_body(value: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(value).into_owned();
    let values = vec![serde_json::Value::String(text); PER_REQUEST];
    serde_json::to_vec(&values).unwrap_or_default()
}

fn check_received(received: &AtomicU64, before: u64, records: usize) -> anyhow::Result<()> {
    let got = received.load(Ordering::Relaxed) - before;
    anyhow::ensure!(
        got == records as u64,
        "the server received {got} records, not {records}"
    );
    Ok(())
}

/// One POST on a new connection, as the host sends a guest's request.
async fn post(address: SocketAddr, body: Bytes) -> anyhow::Result<()> {
    let stream = tokio::net::TcpStream::connect(address).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let connection = tokio::spawn(connection);
    let request = hyper::Request::post("/ingest")
        .header("host", address.to_string())
        .header("content-type", "application/json")
        .body(Full::new(body))?;
    let response = sender.send_request(request).await?;
    anyhow::ensure!(
        response.status().is_success(),
        "answered {}",
        response.status()
    );
    response.into_body().collect().await?;
    drop(sender);
    connection.await??;
    Ok(())
}

/// A server on a free loopback port that adds the length of each JSON array it receives
/// to `received` and answers 200.
async fn serve(received: Arc<AtomicU64>) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let app = axum::Router::new().fallback(move |body: Bytes| {
        let received = received.clone();
        async move {
            let values: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap_or_default();
            received.fetch_add(values.len() as u64, Ordering::Relaxed);
            "ok"
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(address)
}
