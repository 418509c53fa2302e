//! Host bindings of `wasm-connect:connector@0.1.0`, one module per world. A future 0.2
//! contract gets its own module beside these (Zed's `since_v*` pattern).

/// The `source-connector` world; also owns the shared `types` and `host` interfaces.
pub mod source_world {
    wasmtime::component::bindgen!({
        world: "source-connector",
        path: "../wit",
        exports: { default: async },
    });
}

/// The `sink-connector` world, sharing `types` and `host` with [`source_world`].
pub mod sink_world {
    wasmtime::component::bindgen!({
        world: "sink-connector",
        path: "../wit",
        exports: { default: async },
        with: {
            "wasm-connect:connector/types": super::source_world::wasm_connect::connector::types,
            "wasm-connect:connector/host": super::source_world::wasm_connect::connector::host,
        },
    });
}

pub use source_world::wasm_connect::connector::host::LogLevel;
pub use source_world::wasm_connect::connector::types;
