//! wasm-connect: runs data connectors (sources and sinks) as sandboxed WebAssembly
//! components, managed over the RocketMQ-Connect REST API.
//!
//! Modules are the architecture:
//! - `sandbox`: wasmtime engine, WIT bindings, per-store state, every limit;
//! - `plugins`: the plugin directory and which plugin serves a `connector-class`;
//! - `worker`: connectors and their task actors (source and sink loops);
//! - `config`: how config values are written (lists, `${…}` references);
//! - `names`: the one rule for connector and plugin names, and escaping of untrusted text;
//! - `storage`: durable state (redb) and topic logs;
//! - `metrics`: Prometheus metrics and the dashboard's rates; `ui`: the dashboard;
//! - `api`: the REST APIs (with the health routes and the dashboard); `server`: wiring and
//!   shutdown;
//! - `scaffold`: `wasm-connect new`, connector projects in Rust, Python and JavaScript.

pub mod api;
pub mod cluster;
pub mod config;
pub mod metrics;
pub mod names;
pub mod plugins;
pub mod sandbox;
pub mod scaffold;
pub mod server;
pub mod storage;
pub mod ui;
pub mod worker;
