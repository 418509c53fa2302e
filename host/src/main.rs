//! The `wasm-connect` binary: parses the command line and serves (the default) or runs a
//! plugin tool.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use wasm_connect::api::auth::{parse_token, TokenError};
use wasm_connect::cluster::{ClusterOptions, Strategy};
use wasm_connect::sandbox::{
    run_compiler_child, Capabilities, Compiler, RestartPolicy, WorkerLimits, COMPILE_SUBCOMMAND,
    LIMITS,
};
use wasm_connect::scaffold::{Lang, ProjectKind};
use wasm_connect::server::{serve, ListenerLimits, ServeOptions};

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
    /// Create a connector project in ./NAME/: the SDK of the language, a connector that runs
    /// as is, a passing test, a README and build.sh (which writes NAME.wasm).
    New {
        /// The project name, which is also the plugin name: lowercase letters, digits, '-'.
        name: String,
        /// The language of the connector.
        #[arg(long, value_enum)]
        lang: Lang,
        /// Source (produces records into topics) or sink (consumes them).
        #[arg(long, value_enum)]
        kind: ProjectKind,
    },
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
        /// Seconds compiling it may take (default: the serving default, 60); a Python
        /// component needs ~5 s of CPU, more on a busy machine.
        #[arg(long, value_name = "S", value_parser = clap::value_parser!(u64).range(1..=3600))]
        compile_timeout_s: Option<u64>,
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
    /// Bearer token both APIs require (`Authorization: Bearer <token>`): visible ASCII, not
    /// empty (an empty value is refused, never taken as "no authentication"); none by default.
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
    listener: ListenerArgs,
    #[command(flatten)]
    restart: RestartArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Directory under which path-typed connector config values must lie (repeatable; unset:
    /// any path a connector config names). A path whose directory is, holds or lies inside
    /// the data dir or the plugin dir is always refused.
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

/// What the REST listeners allow their clients.
#[derive(Debug, Args)]
#[command(next_help_heading = "Listeners (both REST APIs)")]
struct ListenerArgs {
    /// Most connections each API holds open; lowered at start to fit the open-file limit
    /// (raised to its hard limit). At the cap the oldest idle connection is closed; when none
    /// is idle, new ones wait.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..), env = "WASM_CONNECT_MAX_CONNECTIONS")]
    max_connections: u32,
    /// Seconds a client has to send a request's headers, and again its body; also closes
    /// keep-alive connections idle that long.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..), env = "WASM_CONNECT_HEADER_READ_TIMEOUT_S")]
    header_read_timeout_s: u64,
    /// Seconds shutdown waits for answers in flight before closing their connections and
    /// stopping the tasks.
    #[arg(long, default_value_t = 10, env = "WASM_CONNECT_SHUTDOWN_TIMEOUT_S")]
    shutdown_timeout_s: u64,
}

impl ListenerArgs {
    fn limits(&self) -> ListenerLimits {
        ListenerLimits {
            max_connections: self.max_connections as usize,
            header_read_timeout: Duration::from_secs(self.header_read_timeout_s),
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_s),
        }
    }
}

/// Worker-wide limits, one flag per row of the limits table ([`LIMITS`]): the default of
/// every connector and the ceiling its `limits.*` key cannot exceed (worker-only rows have
/// no key).
#[derive(Debug)]
struct LimitArgs {
    /// The value of each row, by flag, in the row's stored unit.
    values: Vec<(&'static str, usize)>,
}

const LIMITS_HEADING: &str = "Limits (defaults and ceilings per connector)";

impl clap::FromArgMatches for LimitArgs {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let values = LIMITS
            .iter()
            .map(|limit| {
                let value = matches.get_one::<usize>(limit.flag).copied();
                (limit.flag, value.unwrap_or(limit.default))
            })
            .collect();
        Ok(LimitArgs { values })
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for LimitArgs {
    fn augment_args(command: clap::Command) -> clap::Command {
        LIMITS.iter().fold(
            command.next_help_heading(LIMITS_HEADING),
            |command, limit| {
                let scope = match limit.key {
                    Some(key) => format!("`{key}`"),
                    None => "worker only".to_string(),
                };
                let help = format!(
                    "{} ({scope}) [default: {}]",
                    limit.help,
                    limit.flag_default()
                );
                command.arg(
                    clap::Arg::new(limit.flag)
                        .long(limit.flag)
                        .value_name(limit.flag_unit.value_name())
                        .help(help)
                        .value_parser(move |text: &str| limit.parse_flag(text)),
                )
            },
        )
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        Self::augment_args(command)
    }
}

/// How failed tasks are restarted.
#[derive(Debug, Args)]
#[command(next_help_heading = LIMITS_HEADING)]
struct RestartArgs {
    /// Pause before restarting a failed task, in ms; doubles per failure, up to 60 s.
    #[arg(long, default_value_t = 1_000)]
    restart_backoff_ms: u64,
    /// Failures within the window after which a task stays FAILED until restarted by hand.
    #[arg(long, default_value_t = 5)]
    quarantine_after: u32,
    /// The window for --quarantine-after, in seconds.
    #[arg(long, default_value_t = 300)]
    quarantine_window_s: u64,
}

impl LimitArgs {
    fn worker_limits(&self, restart: &RestartArgs) -> WorkerLimits {
        let mut limits = WorkerLimits::from_values(|limit| {
            self.values
                .iter()
                .find(|(flag, _)| *flag == limit.flag)
                .map_or(limit.default, |(_, value)| *value)
        });
        limits.restart = RestartPolicy {
            backoff: Duration::from_millis(restart.restart_backoff_ms),
            quarantine_after: restart.quarantine_after.max(1),
            window: Duration::from_secs(restart.quarantine_window_s),
        };
        limits
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

impl ServeArgs {
    /// The options `serve` takes; refuses a token that is empty or cannot be sent (checked
    /// here rather than by clap, whose error would repeat the secret).
    fn options(self) -> Result<ServeOptions, TokenError> {
        let mut options =
            ServeOptions::new(self.bind, self.http_port, self.data_dir, self.plugin_dir);
        options.kafka_api_port = (self.kafka_api_port != 0).then_some(self.kafka_api_port);
        options.auth_token = self.auth_token.as_deref().map(parse_token).transpose()?;
        options.limits = self.limits.worker_limits(&self.restart);
        options.listener = self.listener.limits();
        let max_topics = options.limits.worker.topics;
        options.worker_id = self.cluster.worker_id.filter(|id| !id.is_empty());
        options.cluster = self.cluster.nats.map(|servers| ClusterOptions {
            servers,
            cluster_id: self.cluster.cluster_id,
            replicas: usize::from(self.cluster.nats_replicas),
            strategy: self.cluster.alloc_strategy,
            max_topics,
        });
        options.compiler = own_compiler();
        options.capabilities = Capabilities {
            allow_paths: self
                .allow_paths
                .iter()
                .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
                .collect(),
            ..Capabilities::default()
        };
        Ok(options)
    }
}

/// Checks the serve arguments, then serves.
async fn serve_checked(args: ServeArgs) -> anyhow::Result<()> {
    serve(args.options()?).await
}

/// `wasm-connect new`: writes the project and says what to do next.
fn new_project(name: &str, lang: Lang, kind: ProjectKind) -> anyhow::Result<()> {
    let dir = wasm_connect::scaffold::create(std::path::Path::new("."), name, lang, kind)?;
    println!(
        "created {}: cd {name} && ./build.sh && wasm-connect plugin check {name}.wasm (see its README.md)",
        dir.display()
    );
    Ok(())
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
        None => serve_checked(cli.serve).await,
        Some(Command::Serve(args)) => serve_checked(*args).await,
        Some(Command::Plugin(PluginCommand::Check {
            file,
            compile_timeout_s,
        })) => {
            let mut limits = WorkerLimits::default();
            if let Some(seconds) = compile_timeout_s {
                limits.worker.compile_time = Duration::from_secs(seconds);
            }
            wasm_connect::plugins::check::run(&file, own_compiler(), limits).await
        }
        Some(Command::New { name, lang, kind }) => new_project(&name, lang, kind),
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
