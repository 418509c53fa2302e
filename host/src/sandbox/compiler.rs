//! Compiling untrusted component bytes to native code. The host runs the compiler in a child
//! process of its own binary (`wasm-connect __compile`, [`COMPILE_SUBCOMMAND`]) under a CPU
//! rlimit of the compile time limit and an address-space rlimit, and kills it at the time
//! limit: a component built to make the compiler spin or balloon costs one child, never the
//! host. Programs that are not the `wasm-connect` binary (benches, in-process tests) compile on
//! a thread instead, which is abandoned (and runs on) past the time limit: the
//! [`Compiler`] setting is chosen once, by whoever builds the [`super::Sandbox`].

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use wasmtime::{Config, Engine};

/// The hidden subcommand of `wasm-connect` that compiles stdin to stdout.
pub const COMPILE_SUBCOMMAND: &str = "__compile";
/// Exit code of the child when the bytes are not a component it can compile.
const INVALID_EXIT: i32 = 2;

/// Where plugin components are compiled.
#[derive(Debug, Clone, Default)]
pub enum Compiler {
    /// On a thread of this process: for programs that cannot re-execute themselves as the
    /// compiler (benches, in-process tests). A compilation past the limit is abandoned.
    #[default]
    InProcess,
    /// In a child process: `program __compile`, where `program` is the `wasm-connect` binary.
    ChildProcess { program: PathBuf },
}

/// Why bytes (or a cached artifact) are not a connector component this host can run.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("a core wasm module, not a component: build it for wasm32-wasip2 (or run `wasm-tools component new`)")]
    CoreModule,
    #[error("not a valid wasm component: {0}")]
    Invalid(String),
    #[error("compiling took longer than {} s and was stopped; a connector this large or complex is not accepted", .0.as_secs())]
    TooSlow(Duration),
    #[error("compiling needed more than the {} MiB of memory it may use and was stopped; a connector this large or complex is not accepted", .0 >> 20)]
    TooBig(u64),
    #[error("the compiler process failed ({status}): {stderr}")]
    Crashed { status: String, stderr: String },
    #[error("cannot run the compiler process {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("the compiler is shut down")]
    ShutDown,
    #[error("not loadable compiled code: {0:#}")]
    NotLoadable(#[source] wasmtime::Error),
    #[error("imports something this host does not provide: {0:#}")]
    Imports(#[source] wasmtime::Error),
    #[error(
        "targets neither the source-connector nor the sink-connector world of \
             wasm-connect:connector@0.1.0 or @0.2.0, nor the transform-component world of \
             @0.2.0 (as a source: {as_source:#}; as a sink: {as_sink:#}; as a transform: \
             {as_transform:#})"
    )]
    NoWorld {
        as_source: wasmtime::Error,
        as_sink: wasmtime::Error,
        as_transform: wasmtime::Error,
    },
}

/// The engine settings that decide the compiled code (and so the cache's compatibility hash):
/// the serving engine adds only its instance allocator to these.
pub(super) fn compiler_config() -> Config {
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        // No component-model-async: host→guest calls are ~4x cheaper without it.
        .concurrency_support(false);
    config
}

/// Compiles `wasm` as `compiler` says, within `limit` and (in a child) `memory` bytes of
/// address space: the compiled artifact, as `Component::serialize` writes it.
pub(super) async fn compile(
    compiler: &Compiler,
    engine: &Engine,
    wasm: Vec<u8>,
    limit: Duration,
    memory: u64,
) -> Result<Vec<u8>, CompileError> {
    match compiler {
        Compiler::InProcess => on_thread(engine.clone(), wasm, limit).await,
        Compiler::ChildProcess { program } => in_child(program, wasm, limit, memory).await,
    }
}

fn compile_now(engine: &Engine, wasm: &[u8]) -> Result<Vec<u8>, CompileError> {
    engine.precompile_component(wasm).map_err(|e| {
        if is_core_module(wasm) {
            CompileError::CoreModule
        } else {
            CompileError::Invalid(format!("{e:#}"))
        }
    })
}

async fn on_thread(
    engine: Engine,
    wasm: Vec<u8>,
    limit: Duration,
) -> Result<Vec<u8>, CompileError> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("plugin-compiler".into())
        .spawn(move || {
            let _ = done.send(compile_now(&engine, &wasm));
        })
        .map_err(|source| CompileError::Spawn {
            program: "a compiler thread".into(),
            source,
        })?;
    match tokio::time::timeout(limit, result).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(CompileError::Crashed {
            status: "thread ended".into(),
            stderr: "the compiler thread panicked".into(),
        }),
        Err(_) => Err(CompileError::TooSlow(limit)),
    }
}

async fn in_child(
    program: &Path,
    wasm: Vec<u8>,
    limit: Duration,
    memory: u64,
) -> Result<Vec<u8>, CompileError> {
    let cpu_seconds = limit.as_secs().max(1);
    let mut command = tokio::process::Command::new(program);
    command
        .arg(COMPILE_SUBCOMMAND)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: the closure runs between fork and exec and only calls setrlimit, which is
    // async-signal-safe; it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            set_limit(libc::RLIMIT_CPU, cpu_seconds, cpu_seconds + 1)?;
            set_limit(libc::RLIMIT_AS, memory, memory)?;
            set_limit(libc::RLIMIT_CORE, 0, 0)
        });
    }
    let spawn_error = |source| CompileError::Spawn {
        program: program.display().to_string(),
        source,
    };
    let mut child = command.spawn().map_err(spawn_error)?;
    let mut stdin = child.stdin.take();
    let feed = async move {
        if let Some(stdin) = stdin.as_mut() {
            // A child that dies early closes its end: its exit status tells why.
            let _ = stdin.write_all(&wasm).await;
        }
        drop(stdin);
    };
    let run = async { tokio::join!(feed, child.wait_with_output()).1 };
    // On timeout the child is dropped, which kills it (kill_on_drop).
    let output = match tokio::time::timeout(limit, run).await {
        Ok(output) => output.map_err(spawn_error)?,
        Err(_) => return Err(CompileError::TooSlow(limit)),
    };
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if output.status.success() {
        return Ok(output.stdout);
    }
    use std::os::unix::process::ExitStatusExt;
    match (output.status.code(), output.status.signal()) {
        (Some(INVALID_EXIT), _) if stderr == CompileError::CoreModule.to_string() => {
            Err(CompileError::CoreModule)
        }
        (Some(INVALID_EXIT), _) => Err(CompileError::Invalid(
            stderr
                .trim_start_matches("not a valid wasm component: ")
                .to_string(),
        )),
        (_, Some(libc::SIGXCPU | libc::SIGKILL)) => Err(CompileError::TooSlow(limit)),
        _ if stderr.contains("memory allocation") || stderr.contains("out of memory") => {
            Err(CompileError::TooBig(memory))
        }
        _ => Err(CompileError::Crashed {
            status: output.status.to_string(),
            stderr: stderr.lines().last().unwrap_or_default().to_string(),
        }),
    }
}

/// The type `setrlimit` takes its resource as.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
type Resource = libc::c_int;

fn set_limit(resource: Resource, soft: u64, hard: u64) -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: a plain system call on a valid struct.
    if unsafe { libc::setrlimit(resource, &limit) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `wasm-connect __compile`: reads a component from stdin, writes its compiled code to stdout.
/// Exits 2 with the reason on stderr when the bytes are not a component.
pub fn run_child() -> std::process::ExitCode {
    let mut wasm = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut wasm) {
        eprintln!("cannot read the component from stdin: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let engine = match Engine::new(&compiler_config()) {
        Ok(engine) => engine,
        Err(e) => {
            eprintln!("cannot set up the wasm engine: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match compile_now(&engine, &wasm) {
        Ok(artifact) => match std::io::stdout().lock().write_all(&artifact) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cannot write the compiled code: {e}");
                std::process::ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::from(INVALID_EXIT as u8)
        }
    }
}

/// True when the bytes are a core module (version 1) rather than a component.
fn is_core_module(wasm: &[u8]) -> bool {
    wasm.len() >= 8 && wasm[0..4] == *b"\0asm" && wasm[4..8] == [1, 0, 0, 0]
}

#[cfg(test)]
mod tests {
    use std::hash::{DefaultHasher, Hash, Hasher};

    use super::*;
    use crate::sandbox::{Capabilities, Sandbox, WorkerLimits};

    #[test]
    fn the_compiler_engine_makes_code_the_serving_engine_accepts() {
        let sandbox = Sandbox::new(WorkerLimits::default(), Capabilities::default()).unwrap();
        let mut serving = DefaultHasher::new();
        sandbox.hash_compatibility(&mut serving);
        let compiler = Engine::new(&compiler_config()).unwrap();
        let mut compiling = DefaultHasher::new();
        compiler
            .precompile_compatibility_hash()
            .hash(&mut compiling);
        assert_eq!(serving.finish(), compiling.finish());
    }
}
