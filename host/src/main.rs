//! The `wasm-connect` binary: parses the command line and serves (the default) or runs a
//! plugin tool.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use wasm_connect::cluster::{ClusterOptions, Strategy};
use wasm_connect::sandbox::{
    parse_size, run_compiler_child, Capabilities, Compiler, Limits, RestartPolicy, WorkerLimits,
    COMPILE_SUBCOMMAND,
};
use wasm_connect::server::{serve, ServeOptions};

/// Runs data connectors (sources and sinks) as sandboxed WebAssembly components and serves
/// the RocketMQ-Connect REST API to manage them.
#[derive(Debug, Parser)]
#[command(name = "wasm-connect", version, about, long_about = None, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the REST APIs and run the stored connectors (the default).
    Serve(Box<ServeArgs>),
    /// Work with plugin files offline.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Internal: compiles the component on stdin to native code on stdout; the host runs it
    /// as a child process under rlimits.
    #[command(name = COMPILE_SUBCOMMAND, hide = true)]
    Compile,
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Check that a component is a connector this host can run, and print what it declares.
    Check {
        /// The component file (`*.wasm`).
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address the REST API listens on. A non-loopback address exposes the API to the network.
    #[arg(long, default_value = "127.0.0.1", env = "WASM_CONNECT_BIND")]
    bind: IpAddr,
    /// Port of the RocketMQ-Connect-compatible REST API (0 picks a free port and logs it).
    #[arg(long, default_value_t = 8081, env = "WASM_CONNECT_HTTP_PORT")]
    http_port: u16,
    /// Port of the Kafka-Connect-shaped JSON API; 0 disables it.
    #[arg(long, default_value_t = 8083, env = "WASM_CONNECT_KAFKA_API_PORT")]
    kafka_api_port: u16,
    /// Bearer token both APIs require (`Authorization: Bearer <token>`); none by default.
    #[arg(long, env = "WASM_CONNECT_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
    /// Directory for durable state: connector configs, positions, offsets and topic logs.
    #[arg(long, default_value = "data", env = "WASM_CONNECT_DATA_DIR")]
    data_dir: PathBuf,
    /// Directory scanned for connector components (`*.wasm`) at start and on `/plugin/reload`.
    #[arg(long, default_value = "plugins", env = "WASM_CONNECT_PLUGIN_DIR")]
    plugin_dir: PathBuf,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Directory under which path-typed connector config values must lie (repeatable; unset:
    /// any path a connector config names).
    #[arg(
        long = "allow-path",
        value_name = "DIR",
        env = "WASM_CONNECT_ALLOW_PATH",
        value_delimiter = ','
    )]
    allow_paths: Vec<PathBuf>,
}

/// Cluster mode: join other workers on NATS JetStream instead of keeping everything local.
#[derive(Debug, Args)]
#[command(next_help_heading = "Cluster (NATS JetStream)")]
struct ClusterArgs {
    /// NATS server URLs, comma-separated (e.g. nats://127.0.0.1:4222,nats://127.0.0.1:4223):
    /// join the cluster there; configs, offsets and topics then live in JetStream. Needs
    /// nats-server 2.11 or newer with JetStream enabled.
    #[arg(long, value_name = "URLS", env = "WASM_CONNECT_NATS")]
    nats: Option<String>,
    /// The cluster to join: workers with the same id share connectors.
    #[arg(
        long,
        default_value = "DefaultConnectCluster",
        env = "WASM_CONNECT_CLUSTER_ID"
    )]
    cluster_id: String,
    /// This worker's id in the cluster (default `<ip>@<pid>`); unique per worker.
    #[arg(long, env = "WASM_CONNECT_WORKER_ID")]
    worker_id: Option<String>,
    /// Copies JetStream keeps of every topic and bucket (1 for a single NATS server).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=5), env = "WASM_CONNECT_NATS_REPLICAS")]
    nats_replicas: u16,
    /// How the leader spreads connectors and tasks over the workers.
    #[arg(long, value_enum, default_value_t = Strategy::RoundRobin, env = "WASM_CONNECT_ALLOC_STRATEGY")]
    alloc_strategy: Strategy,
}

/// Worker-wide limits: the default of every connector and the ceiling its `limits.*` keys
/// cannot exceed.
#[derive(Debug, Args)]
#[command(next_help_heading = "Limits (defaults and ceilings per connector)")]
struct LimitArgs {
    /// Linear memory of one instance, in MiB (`limits.memory`).
    #[arg(long, default_value_t = 256)]
    max_memory_mib: usize,
    /// CPU time one guest call may use, in ms, counted in 10 ms ticks (`limits.cpu.ms`).
    #[arg(long, default_value_t = 10_000)]
    max_cpu_ms: u64,
    /// Share of one core a connector's calls may use over time, in percent (`limits.cpu.percent`).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100))]
    max_cpu_percent: u32,
    /// Wall-clock limit of one guest call, in ms (`limits.call.timeout.ms`).
    #[arg(long, default_value_t = 30_000)]
    call_timeout_ms: u64,
    /// Records per poll or put (`limits.poll.records`).
    #[arg(long, default_value_t = 16_384)]
    max_poll_records: u32,
    /// Bytes of records per poll or put, e.g. 4MiB (`limits.poll.bytes`).
    #[arg(long, default_value = "4MiB", value_parser = size)]
    max_poll_bytes: usize,
    /// Records a source may produce per second; 0 is unlimited (`limits.records.per.second`).
    #[arg(long, default_value_t = 0)]
    max_records_per_second: u32,
    /// Tasks of one connector (`limits.tasks`).
    #[arg(long, default_value_t = 16)]
    max_tasks: u32,
    /// Bytes the host copies out of a guest in one call, e.g. 16MiB (`limits.hostcall.fuel`).
    #[arg(long, default_value = "16MiB", value_parser = size)]
    max_hostcall_fuel: usize,
    /// Resource handles one instance may hold (`limits.resources`).
    #[arg(long, default_value_t = 10_000)]
    max_resources: usize,
    /// Pause before restarting a failed task, in ms; doubles per failure, up to 60 s.
    #[arg(long, default_value_t = 1_000)]
    restart_backoff_ms: u64,
    /// Failures within the window after which a task stays FAILED until restarted by hand.
    #[arg(long, default_value_t = 5)]
    quarantine_after: u32,
    /// The window for --quarantine-after, in seconds.
    #[arg(long, default_value_t = 300)]
    quarantine_window_s: u64,
    /// Time a plugin's `describe` may take while it loads, in ms; a slower plugin is reported
    /// broken and does not hold up the others.
    #[arg(long, default_value_t = 2_000)]
    describe_timeout_ms: u64,
}

impl LimitArgs {
    fn worker_limits(&self) -> WorkerLimits {
        let connector = Limits {
            memory_bytes: self.max_memory_mib << 20,
            cpu_per_call: Duration::from_millis(self.max_cpu_ms),
            cpu_percent: self.max_cpu_percent,
            call_timeout: Duration::from_millis(self.call_timeout_ms),
            batch_records: self.max_poll_records,
            batch_bytes: u32::try_from(self.max_poll_bytes).unwrap_or(u32::MAX),
            records_per_second: self.max_records_per_second,
            max_tasks: self.max_tasks,
            hostcall_fuel: self.max_hostcall_fuel,
            max_resources: self.max_resources,
        };
        let restart = RestartPolicy {
            backoff: Duration::from_millis(self.restart_backoff_ms),
            quarantine_after: self.quarantine_after.max(1),
            window: Duration::from_secs(self.quarantine_window_s),
        };
        WorkerLimits {
            connector,
            restart,
            describe_timeout: Duration::from_millis(self.describe_timeout_ms),
            ..WorkerLimits::default()
        }
    }
}

/// Compiling plugins in a child process of this binary, when its path is known.
fn own_compiler() -> Compiler {
    match std::env::current_exe() {
        Ok(program) => Compiler::ChildProcess { program },
        Err(e) => {
            tracing::warn!(
                "cannot find this program's path ({e}); plugins are compiled in process, without rlimits"
            );
            Compiler::InProcess
        }
    }
}

/// Parses a size such as `64MiB` for clap.
fn size(text: &str) -> Result<usize, String> {
    parse_size(text)
        .ok_or_else(|| format!("{text:?} is not a size such as 64MiB, 512KiB or 1048576"))
}

impl ServeArgs {
    fn options(self) -> ServeOptions {
        let mut options =
            ServeOptions::new(self.bind, self.http_port, self.data_dir, self.plugin_dir);
        options.kafka_api_port = (self.kafka_api_port != 0).then_some(self.kafka_api_port);
        options.auth_token = self.auth_token.filter(|token| !token.is_empty());
        options.limits = self.limits.worker_limits();
        options.worker_id = self.cluster.worker_id.filter(|id| !id.is_empty());
        options.cluster = self.cluster.nats.map(|servers| ClusterOptions {
            servers,
            cluster_id: self.cluster.cluster_id,
            replicas: usize::from(self.cluster.nats_replicas),
            strategy: self.cluster.alloc_strategy,
        });
        options.compiler = own_compiler();
        options.capabilities = Capabilities {
            allow_paths: self
                .allow_paths
                .iter()
                .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
                .collect(),
        };
        options
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Compile) = cli.command {
        // The compiler child: stdout carries the compiled code, so no log goes there.
        return run_compiler_child();
    }
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(e) => {
            eprintln!("wasm-connect: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into()),
        )
        .init();
    let result = match cli.command {
        None => serve(cli.serve.options()).await,
        Some(Command::Serve(args)) => serve(args.options()).await,
        Some(Command::Plugin(PluginCommand::Check { file })) => {
            wasm_connect::plugins::check::run(&file, own_compiler()).await
        }
        Some(Command::Compile) => Ok(()),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("wasm-connect: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
