//! `wasm-connect:connector@0.2.0`: the `transform-component` world (which owns the shared
//! `types` and `host` interfaces of this version; its types are the host's own) and the
//! 0.2.0 `sink-connector` world, which adds the `errant` import.

/// The `transform-component` world; also owns the 0.2.0 `types` and `host` interfaces.
pub mod transform_world {
    wasmtime::component::bindgen!({
        world: "transform-component",
        path: "../wit/v0.2.0",
        exports: { default: async },
    });
}

/// The 0.2.0 `sink-connector` world, sharing `types` and `host` with [`transform_world`].
pub mod sink_world {
    wasmtime::component::bindgen!({
        world: "sink-connector",
        path: "../wit/v0.2.0",
        exports: { default: async },
        with: {
            "wasm-connect:connector/types": super::transform_world::wasm_connect::connector::types,
            "wasm-connect:connector/host": super::transform_world::wasm_connect::connector::host,
        },
    });
}
