//! The `wasm-connect` binary: parses the command line and serves (the default) or runs a
//! plugin tool.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

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
    Serve(ServeArgs),
    /// Work with plugin files offline.
    #[command(subcommand)]
    Plugin(PluginCommand),
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
    /// Linear-memory cap of each connector instance, in MiB.
    #[arg(long, default_value_t = 256)]
    max_memory_mib: usize,
    /// Wall-clock limit of one call into a connector, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    call_timeout_ms: u64,
}

impl ServeArgs {
    fn options(self) -> ServeOptions {
        let mut options = ServeOptions::new(self.bind, self.http_port, self.data_dir, self.plugin_dir);
        options.kafka_api_port = (self.kafka_api_port != 0).then_some(self.kafka_api_port);
        options.auth_token = self.auth_token.filter(|token| !token.is_empty());
        options.limits.memory_bytes = self.max_memory_mib << 20;
        options.limits.call_timeout = Duration::from_millis(self.call_timeout_ms);
        options
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into()),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        None => serve(cli.serve.options()).await,
        Some(Command::Serve(args)) => serve(args.options()).await,
        Some(Command::Plugin(PluginCommand::Check { file })) => wasm_connect::plugins::check::run(&file).await,
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
