//! Wires the parts together: storage, sandbox, plugins, worker and the REST listener, and
//! shuts them down cleanly on SIGINT or SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::plugins::PluginRegistry;
use crate::sandbox::{Limits, Sandbox};
use crate::storage::Storage;
use crate::worker::Worker;

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub bind: IpAddr,
    pub http_port: u16,
    pub data_dir: PathBuf,
    pub plugin_dir: PathBuf,
    pub limits: Limits,
}

impl ServeOptions {
    pub fn new(bind: IpAddr, http_port: u16, data_dir: PathBuf, plugin_dir: PathBuf) -> Self {
        ServeOptions { bind, http_port, data_dir, plugin_dir, limits: Limits::default() }
    }
}

/// Serves until SIGINT or SIGTERM, then stops every task (each commits what it has).
pub async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    let storage = Arc::new(Storage::open(&options.data_dir)?);
    let sandbox = Arc::new(Sandbox::new(options.limits.clone())?);
    let plugins = Arc::new(PluginRegistry::new(options.plugin_dir.clone()));
    plugins.scan(&sandbox).await;
    let worker_id = format!("{}@{}", worker_ip(options.bind), std::process::id());
    let worker = Arc::new(Worker::new(worker_id, sandbox, storage, plugins));
    worker.restore().await?;

    let address = SocketAddr::new(options.bind, options.http_port);
    let listener = tokio::net::TcpListener::bind(address).await.with_context(|| format!("cannot listen on {address}"))?;
    if !options.bind.is_loopback() {
        tracing::warn!("the REST API listens on {address}, reachable from the network, without authentication");
    }
    tracing::info!(worker = worker.id(), "RocketMQ-Connect REST API on http://{}", listener.local_addr()?);
    let app = crate::api::legacy::router(worker.clone());
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
    tracing::info!("shutting down: stopping tasks");
    worker.shutdown().await;
    Ok(())
}

/// The IP in the worker id: the bind address, or loopback when bound to every interface.
fn worker_ip(bind: IpAddr) -> IpAddr {
    if bind.is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        bind
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
}
