//! `wasm-connect plugin check FILE.wasm`: validates a component offline with the checks the
//! plugin directory applies (size cap, compile, link against this host, world, `describe`),
//! and prints its world, version, metadata, config definitions, the imports it needs and the
//! language it was written in (from its `producers` sections). Exits non-zero, with the
//! reason, when this host cannot run it; a component that does not match a connector world
//! is explained in the author's terms: which function is missing or has the wrong type, and
//! what the SDK of each language does about it.

use std::path::Path;
use std::sync::Arc;

use anyhow::anyhow;
use wasmparser::{Encoding, KnownCustom, Parser, Payload};

use super::cache::{sha256_hex, CodeCache};
use super::{kind_name, one_line, read_plugin, validate, world_name, Content, Plugin, PluginError};
use crate::sandbox::types::{ConfigDef, PathAccess, ValueType};
use crate::sandbox::{Capabilities, CompileError, Compiler, Sandbox, WorkerLimits};

/// Checks `file` and prints what it declares; an error says why this host cannot run it.
/// `limits` are the worker limits it is checked under (the compile limit matters).
pub async fn run(file: &Path, compiler: Compiler, limits: WorkerLimits) -> anyhow::Result<()> {
    let cannot = |reason: &PluginError| {
        anyhow!(
            "{} cannot run on this host: {}",
            file.display(),
            one_line(reason)
        )
    };
    let wasm = read_plugin(file).map_err(|reason| cannot(&reason))?;
    let hash = sha256_hex(&wasm);
    field("file", &file.display().to_string());
    field("size", &format!("{} bytes", wasm.len()));
    field("sha256", &hash);
    field("language", &guest_language(&wasm));
    let exports = print_interface(&wasm);
    let sandbox = Arc::new(Sandbox::new(limits, Capabilities::default())?.with_compiler(compiler));
    let cache = Arc::new(CodeCache::off(&sandbox));
    let content = Content {
        hash,
        wasm: Some(wasm),
    };
    match validate(&sandbox, &cache, content, file).await {
        Ok(plugin) => {
            print_plugin(&plugin);
            field(
                "runnable",
                "yes: this host links every import and the component describes itself consistently",
            );
            Ok(())
        }
        Err(reason) => {
            field("runnable", &format!("no: {}", one_line(&reason)));
            if let PluginError::Compile(CompileError::NoWorld {
                as_source,
                as_sink,
                as_transform,
            }) = &reason
            {
                let errors = format!("{as_source:#} {as_sink:#} {as_transform:#}");
                for line in explain_world_mismatch(&exports, &errors) {
                    println!("  {line}");
                }
            }
            Err(cannot(&reason))
        }
    }
}

fn field(name: &str, value: &str) {
    println!("{name:<12} {value}");
}

/// The component's own imports and exports (not those of the modules inside it); returns
/// the export names.
fn print_interface(wasm: &[u8]) -> Vec<String> {
    match interface(wasm) {
        Ok((imports, exports)) => {
            field("exports", &exports.join(", "));
            field(
                "imports",
                &format!("{} interfaces the host must provide:", imports.len()),
            );
            for import in imports {
                println!("  {import}");
            }
            exports
        }
        Err(reason) => {
            field("interface", &format!("cannot be read: {reason}"));
            Vec::new()
        }
    }
}

/// The language a component was written in, named by the toolchain that built it: the
/// `producers` custom sections of the component and of the modules inside it.
fn guest_language(wasm: &[u8]) -> String {
    let mut tools: Vec<(String, String)> = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        let Ok(Payload::CustomSection(section)) = payload else {
            continue;
        };
        let KnownCustom::Producers(reader) = section.as_known() else {
            continue;
        };
        for field in reader.into_iter().flatten() {
            for value in field.values.into_iter().flatten() {
                tools.push((value.name.to_string(), value.version.to_string()));
            }
        }
    }
    let version_of = |tool: &str| {
        tools
            .iter()
            .find(|(name, _)| name == tool)
            .map(|(_, version)| version.clone())
    };
    // The Python and JavaScript runtimes are Rust programs, and componentize-qjs does not
    // name itself in a producers section: their runtimes' own names in the code tell them.
    let holds = |marker: &[u8]| wasm.windows(marker.len()).any(|w| w == marker);
    if let Some(version) = version_of("componentize-py") {
        format!("Python (componentize-py {version})")
    } else if holds(b"componentize_py_runtime") || holds(b"componentize-py") {
        "Python (componentize-py)".to_string()
    } else if holds(b"componentize_qjs_runtime") {
        "JavaScript (QuickJS, componentize-qjs)".to_string()
    } else if holds(b"StarlingMonkey") {
        "JavaScript (StarlingMonkey, componentize-js)".to_string()
    } else if let Some(version) = version_of("rustc") {
        format!("Rust (rustc {version})")
    } else if version_of("wit-bindgen-rust").is_some() {
        // A stripped Rust component keeps only the tools that processed it: Rust's wasip2
        // std is built with wit-bindgen-rust (Python's and QuickJS's runtimes too, whose
        // own tools are matched above).
        "Rust".to_string()
    } else if let Some((name, version)) = tools.first() {
        format!("unknown; built with {name} {version}")
    } else {
        "unknown (no producers section names it)".to_string()
    }
}

/// A function of a connector world, as the host names it and as WIT declares it.
struct WorldFunc {
    /// The interface that exports it.
    interface: &'static str,
    /// Its name in the component (`[method]source-task.poll`).
    export: &'static str,
    /// What an author calls it.
    author: &'static str,
    /// Its WIT signature.
    wit: &'static str,
}

const WORLD_FUNCS: &[WorldFunc] = &[
    WorldFunc { interface: "connector", export: "describe", author: "connector function `describe`", wit: "describe: func() -> descriptor" },
    WorldFunc { interface: "connector", export: "validate", author: "connector function `validate`", wit: "validate: func(config: config) -> result<_, list<config-error>>" },
    WorldFunc { interface: "connector", export: "task-configs", author: "connector function `task-configs` (Python `task_configs`, JS `taskConfigs`)", wit: "task-configs: func(config: config, max-tasks: u32) -> result<list<config>, string>" },
    WorldFunc { interface: "source", export: "[static]source-task.start", author: "source task's static `start`", wit: "start: static func(config: config) -> result<source-task, task-error>" },
    WorldFunc { interface: "source", export: "[method]source-task.poll", author: "source task's method `poll`", wit: "poll: func(max-records: u32, max-bytes: u32) -> result<record-batch, task-error>" },
    WorldFunc { interface: "source", export: "[method]source-task.commit", author: "source task's method `commit`", wit: "commit: func(positions: list<position>)" },
    WorldFunc { interface: "source", export: "[method]source-task.stop", author: "source task's method `stop`", wit: "stop: func()" },
    WorldFunc { interface: "sink", export: "[static]sink-task.start", author: "sink task's static `start`", wit: "start: static func(config: config) -> result<sink-task, task-error>" },
    WorldFunc { interface: "sink", export: "[method]sink-task.put", author: "sink task's method `put`", wit: "put: func(topic: string, first-offset: u64, records: record-batch) -> result<_, task-error>" },
    WorldFunc { interface: "sink", export: "[method]sink-task.flush", author: "sink task's method `flush`", wit: "flush: func() -> result<list<position>, task-error>" },
    WorldFunc { interface: "sink", export: "[method]sink-task.stop", author: "sink task's method `stop`", wit: "stop: func()" },
];

/// The package every connector world belongs to.
const PACKAGE: &str = "wasm-connect:connector";
/// The contract versions this host runs (one binding module each in `sandbox/bindings/`).
const PACKAGE_VERSIONS: [&str; 2] = ["0.1.0", "0.2.0"];

/// Why a component matches no connector world, in the author's terms: from its export names
/// and the linker's errors (`errors`, which name the function that did not match).
fn explain_world_mismatch(exports: &[String], errors: &str) -> Vec<String> {
    let ours = |interface: &str| format!("{PACKAGE}/{interface}@{}", PACKAGE_VERSIONS[0]);
    let exported = |interface: &str| {
        PACKAGE_VERSIONS
            .iter()
            .any(|v| exports.contains(&format!("{PACKAGE}/{interface}@{v}")))
    };
    let mut lines = Vec::new();
    let other_versions: Vec<&String> = exports
        .iter()
        .filter(|e| {
            e.starts_with(&format!("{PACKAGE}/"))
                && !PACKAGE_VERSIONS
                    .iter()
                    .any(|v| e.ends_with(&format!("@{v}")))
        })
        .collect();
    if !other_versions.is_empty() {
        lines.push(format!(
            "it targets another version of the connector API ({}); this host runs {PACKAGE}@{}: rebuild against this host's wit/connector.wit",
            other_versions.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(", "),
            PACKAGE_VERSIONS.join(" and ")
        ));
    }
    if !exported("connector") {
        lines.push(format!(
            "it does not export the `connector` interface ({}): Rust: call export_source!/export_sink!; Python: end app.py with `Connector = export_source(...)` or `export_sink(...)`; JS: build with sdk/build.sh, which exports it",
            ours("connector")
        ));
    }
    if !exported("source") && !exported("sink") {
        lines.push(
            "it exports neither the `source` nor the `sink` interface: build for the source-connector or sink-connector world (Rust: SDK feature `source` or `sink`; Python: `componentize-py -w source-connector|sink-connector`; JS: `sdk/build.sh app.js source|sink`)".to_string(),
        );
    }
    let kinds: Vec<&str> = ["source", "sink"]
        .into_iter()
        .filter(|k| exported(k))
        .collect();
    for func in WORLD_FUNCS
        .iter()
        .filter(|f| f.interface == "connector" || kinds.contains(&f.interface))
    {
        if errors.contains(&format!("`{}`", func.export)) {
            lines.push(format!(
                "the {} is missing or has the wrong type; the host expects `{}`",
                func.author, func.wit
            ));
        }
    }
    if lines.is_empty() {
        lines.push(
            "its exports do not have the types of this host's wit/connector.wit: rebuild with the SDK of this host's version".to_string(),
        );
    }
    lines
}

/// Top-level import and export names of a component.
fn interface(wasm: &[u8]) -> Result<(Vec<String>, Vec<String>), String> {
    let (mut imports, mut exports, mut depth) = (Vec::new(), Vec::new(), 0usize);
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(|e| e.to_string())? {
            Payload::Version {
                encoding: Encoding::Module,
                ..
            } if depth == 0 => {
                return Err("a core wasm module, not a component".into());
            }
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(section) if depth == 1 => {
                for import in section {
                    imports.push(import.map_err(|e| e.to_string())?.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(section) if depth == 1 => {
                for export in section {
                    exports.push(export.map_err(|e| e.to_string())?.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok((imports, exports))
}

fn print_plugin(plugin: &Plugin) {
    let d = &plugin.descriptor;
    field("world", world_name(plugin.kind()));
    field(
        "plugin",
        &format!("{} {} ({})", d.name, d.version, kind_name(d.kind)),
    );
    field("description", &d.description);
    field(
        "aliases",
        &if d.aliases.is_empty() {
            "none".to_string()
        } else {
            d.aliases.join(", ")
        },
    );
    field("config", &format!("{} keys:", d.config_defs.len()));
    let width = d
        .config_defs
        .iter()
        .map(|def| def.name.len())
        .max()
        .unwrap_or(0);
    for def in &d.config_defs {
        println!(
            "  {:<width$}  {}  {}",
            def.name,
            traits(def),
            def.description
        );
    }
}

/// `required|optional`, the value type and, when set, default, secret and path access.
fn traits(def: &ConfigDef) -> String {
    let mut traits = vec![if def.required { "required" } else { "optional" }.to_string()];
    traits.push(
        match def.value_type {
            ValueType::Text => "text",
            ValueType::Integer => "integer",
            ValueType::Boolean => "boolean",
            ValueType::List => "list",
        }
        .into(),
    );
    traits.extend(def.default_value.as_ref().map(|v| format!("default {v:?}")));
    traits.extend(def.secret.then(|| "secret".to_string()));
    traits.extend(def.path.map(|access| {
        match access {
            PathAccess::ReadFile => "reads the file it names",
            PathAccess::WriteFile => "writes the file it names",
        }
        .to_string()
    }));
    format!("[{}]", traits.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(exports: &[&str]) -> Vec<String> {
        exports.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn a_missing_method_is_named_with_its_wit_signature() {
        let exports = names(&[
            "wasm-connect:connector/connector@0.1.0",
            "wasm-connect:connector/source@0.1.0",
        ]);
        let errors = "instance export `wasm-connect:connector/source@0.1.0` does not have export \
                      `[method]source-task.poll` no exported instance named \
                      `wasm-connect:connector/sink@0.1.0`";
        let lines = explain_world_mismatch(&exports, errors);
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(
            lines[0].contains("source task's method `poll` is missing"),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("max-records: u32"), "{}", lines[0]);
    }

    #[test]
    fn missing_interfaces_and_other_versions_are_explained() {
        let lines = explain_world_mismatch(
            &names(&["wasm-connect:connector/source@0.9.0"]),
            "no exported instance named `wasm-connect:connector/connector@0.1.0`",
        );
        let text = lines.join("\n");
        assert!(
            text.contains("another version of the connector API"),
            "{text}"
        );
        assert!(
            text.contains("does not export the `connector` interface"),
            "{text}"
        );
        assert!(
            text.contains("neither the `source` nor the `sink`"),
            "{text}"
        );
    }
}
