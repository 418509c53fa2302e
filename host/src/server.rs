//! Wires the parts together: storage, sandbox, plugins, worker and the REST listeners, and
//! shuts them down cleanly on SIGINT or SIGTERM, within a bound.
//!
//! Start order: the listeners answer before the plugin directory is loaded. The plugins load
//! in the background; the stored connectors are listed at once and their tasks start once
//! the first scan is done (a create of a class not loaded yet waits for it too), and `ready`
//! is logged after that.

mod listener;
mod open_files;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::api::observe::counted;
use crate::cluster::{coordinator, Cluster, ClusterOptions};
use crate::metrics::{Api, Metrics};
use crate::plugins::PluginRegistry;
use crate::sandbox::{Capabilities, Compiler, Sandbox, WorkerLimits};
use crate::storage::{EmbeddedControl, EmbeddedPlane, Storage};
use crate::worker::control::{ControlPlane, Reconcile};
use crate::worker::plane::DataPlane;
use crate::worker::Worker;

use listener::Listener;
pub use listener::ListenerLimits;

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub bind: IpAddr,
    pub http_port: u16,
    /// Port of the Kafka-Connect-shaped JSON API; None disables it.
    pub kafka_api_port: Option<u16>,
    /// Bearer token both APIs require, when set.
    pub auth_token: Option<String>,
    /// Connection cap and timeouts of both listeners.
    pub listener: ListenerLimits,
    pub data_dir: PathBuf,
    pub plugin_dir: PathBuf,
    pub limits: WorkerLimits,
    pub capabilities: Capabilities,
    /// This worker's id; `<ip>@<pid>` when None.
    pub worker_id: Option<String>,
    /// Set to join a cluster on NATS JetStream.
    pub cluster: Option<ClusterOptions>,
    /// Where plugin components are compiled: the `wasm-connect` binary compiles in a child
    /// process of itself; anything else (benches, tests in process) on a thread.
    pub compiler: Compiler,
}

impl ServeOptions {
    pub fn new(bind: IpAddr, http_port: u16, data_dir: PathBuf, plugin_dir: PathBuf) -> Self {
        ServeOptions {
            bind,
            http_port,
            kafka_api_port: None,
            auth_token: None,
            listener: ListenerLimits::default(),
            data_dir,
            plugin_dir,
            limits: WorkerLimits::default(),
            capabilities: Capabilities::default(),
            worker_id: None,
            cluster: None,
            compiler: Compiler::InProcess,
        }
    }
}

/// Serves until SIGINT or SIGTERM, then stops every task (each commits what it has).
pub async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    let open_files = open_files::raise();
    let storage = Arc::new(Storage::open_limited(
        &options.data_dir,
        &options.limits.worker,
    )?);
    let capabilities = options
        .capabilities
        .clone()
        .with_host_dirs(&options.data_dir, &options.plugin_dir);
    let sandbox = Arc::new(
        Sandbox::new(options.limits.clone(), capabilities)?.with_compiler(options.compiler.clone()),
    );
    let plugins = Arc::new(PluginRegistry::spawn(
        options.plugin_dir.clone(),
        &options.data_dir,
        sandbox.clone(),
    ));
    let worker_id = options
        .worker_id
        .clone()
        .unwrap_or_else(|| format!("{}@{}", worker_ip(options.bind), std::process::id()));
    let tasks = TaskRuntime::start()?;
    let cluster = match &options.cluster {
        Some(options) => Some(Arc::new(
            Cluster::connect(options.clone(), worker_id.clone()).await?,
        )),
        None => None,
    };
    // The planes are chosen once, here: the worker sees only their traits.
    let planes: (Arc<dyn DataPlane>, Arc<dyn ControlPlane>) = match &cluster {
        Some(cluster) => (cluster.clone(), cluster.clone()),
        None => (
            Arc::new(EmbeddedPlane(storage.clone())),
            Arc::new(EmbeddedControl(storage.clone())),
        ),
    };
    let metrics = Arc::new(Metrics::new());
    tokio::spawn(metrics.rates.clone().run_sampler());
    let worker = Arc::new(
        Worker::new(worker_id.clone(), sandbox, planes, plugins, tasks.handle())
            .with_metrics(metrics.clone()),
    );
    let restoring = worker.restore().await?;
    let (shutdown, _) = tokio::sync::watch::channel(false);

    if !options.bind.is_loopback() && options.auth_token.is_none() {
        tracing::warn!(
            "the REST APIs listen on {}, reachable from the network, without authentication: set --auth-token",
            options.bind
        );
    }
    let token: Option<Arc<str>> = options.auth_token.as_deref().map(Arc::from);
    let legacy = Listener::bind(
        SocketAddr::new(options.bind, options.http_port),
        "RocketMQ-Connect REST API",
    )
    .await?;
    let legacy_routes = counted(
        crate::api::legacy::router(worker.clone()),
        Api::Legacy,
        metrics.clone(),
    );
    let legacy_app = crate::api::auth::require_token(legacy_routes, token.clone(), false);
    let mut listeners = vec![(legacy, legacy_app)];
    if let Some(port) = options.kafka_api_port {
        let kafka = Listener::bind(
            SocketAddr::new(options.bind, port),
            "Kafka Connect JSON API",
        )
        .await?;
        let kafka_routes = counted(
            crate::api::kafka::router(worker.clone(), token.is_some()),
            Api::Json,
            metrics.clone(),
        );
        let kafka_app = crate::api::auth::require_token(kafka_routes, token, true);
        listeners.push((kafka, kafka_app));
    }
    let max_connections = fit_connections(&options.listener, open_files, listeners.len());
    let servers: Vec<_> = listeners
        .into_iter()
        .map(|(listener, app)| {
            tokio::spawn(listener.serve(
                app,
                options.listener.clone(),
                max_connections,
                shutdown.subscribe(),
            ))
        })
        .collect();
    let stop_requested = shutdown_signal()?;
    restoring
        .await
        .context("restoring the stored connectors crashed")?;
    worker.mark_ready();
    let coordinator = match &cluster {
        Some(cluster) => {
            let reconcile: Arc<dyn Reconcile> = worker.clone();
            Some(coordinator::start(cluster.clone(), reconcile, shutdown.subscribe()).await?)
        }
        None => None,
    };
    tracing::info!(worker = worker.id(), "ready");
    stop_requested.await;
    shutdown.send_replace(true);
    for server in servers {
        if let Err(e) = server.await {
            tracing::error!("REST listener crashed: {e}");
        }
    }
    if let Some(coordinator) = coordinator {
        let _ = coordinator.await;
    }
    tracing::info!("shutting down: stopping tasks");
    worker.shutdown().await;
    if let Some(cluster) = &cluster {
        cluster.leave().await;
    }
    drop(tasks);
    Ok(())
}

/// The runtime task actors run on, apart from the one serving the APIs, so that guests at
/// their CPU budget never delay an API answer. Shut down without blocking when dropped.
struct TaskRuntime(Option<tokio::runtime::Runtime>);

impl TaskRuntime {
    fn start() -> anyhow::Result<TaskRuntime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("tasks")
            .enable_all()
            .build()
            .context("cannot start the task runtime")?;
        Ok(TaskRuntime(Some(runtime)))
    }

    fn handle(&self) -> tokio::runtime::Handle {
        match &self.0 {
            Some(runtime) => runtime.handle().clone(),
            None => tokio::runtime::Handle::current(),
        }
    }
}

impl Drop for TaskRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// The connection cap of each listener: `--max-connections`, lowered when the listeners
/// together would otherwise use the descriptors storage and tasks need.
fn fit_connections(
    limits: &ListenerLimits,
    open_files: open_files::OpenFileLimit,
    listeners: usize,
) -> usize {
    let fitting = open_files.connections_per_listener(listeners);
    if fitting < limits.max_connections {
        tracing::warn!(
            "at most {fitting} connections per listener, not {} (--max-connections): the open-file limit {} leaves no more once storage and tasks have their reserve; raise `ulimit -n` for more",
            limits.max_connections,
            open_files.get()
        );
        fitting
    } else {
        tracing::info!(
            "at most {} connections per listener (--max-connections)",
            limits.max_connections
        );
        limits.max_connections
    }
}

/// The IP in the worker id: the bind address, or loopback when bound to every interface.
fn worker_ip(bind: IpAddr) -> IpAddr {
    if bind.is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        bind
    }
}

/// Resolves on SIGINT or SIGTERM. Create it before the host says it is ready, so a signal
/// sent right after that is never missed.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}
