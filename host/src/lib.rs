//! wasm-connect: runs data connectors (sources and sinks) as sandboxed WebAssembly
//! components, managed over the RocketMQ-Connect REST API.
//!
//! Modules are the architecture: `sandbox` (wasmtime, limits, WIT bindings), `plugins`
//! (the plugin directory), `worker` (connectors and their task actors), `storage`
//! (durable state and topic logs), `api` (the REST APIs).

pub mod sandbox;
pub mod storage;
