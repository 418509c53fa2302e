//! `wasm-connect plugin check FILE.wasm`: validates a component offline with the checks the
//! plugin directory applies (size cap, compile, link against this host, world, `describe`),
//! and prints its world, version, metadata, config definitions and the imports it needs.
//! Exits non-zero, with the reason, when this host cannot run it.

use std::path::Path;
use std::sync::Arc;

use anyhow::anyhow;
use wasmparser::{Encoding, Parser, Payload};

use super::cache::{sha256_hex, CodeCache};
use super::{kind_name, one_line, read_plugin, validate, world_name, Plugin, PluginError};
use crate::sandbox::types::{ConfigDef, PathAccess, ValueType};
use crate::sandbox::{Capabilities, Compiler, Sandbox, WorkerLimits};

/// Checks `file` and prints what it declares; an error says why this host cannot run it.
pub async fn run(file: &Path, compiler: Compiler) -> anyhow::Result<()> {
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
    print_interface(&wasm);
    let sandbox = Arc::new(
        Sandbox::new(WorkerLimits::default(), Capabilities::default())?.with_compiler(compiler),
    );
    let cache = Arc::new(CodeCache::off(&sandbox));
    match validate(&sandbox, &cache, wasm, &hash, file).await {
        Ok((plugin, _)) => {
            print_plugin(&plugin);
            field(
                "runnable",
                "yes: this host links every import and the component describes itself consistently",
            );
            Ok(())
        }
        Err(reason) => {
            field("runnable", &format!("no: {}", one_line(&reason)));
            Err(cannot(&reason))
        }
    }
}

fn field(name: &str, value: &str) {
    println!("{name:<12} {value}");
}

/// The component's own imports and exports (not those of the modules inside it).
fn print_interface(wasm: &[u8]) {
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
        }
        Err(reason) => field("interface", &format!("cannot be read: {reason}")),
    }
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
