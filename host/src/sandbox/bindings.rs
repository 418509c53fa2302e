//! Host bindings of the connector contract, one module per contract version (Zed's
//! `since_v*` layout): [`since_v0_1_0`] for `wit/connector.wit`, [`since_v0_2_0`] for
//! `wit/v0.2.0/connector.wit`. The newest version's types are the host's own
//! ([`types`]); an older version's values are converted to them where they cross.

pub mod since_v0_1_0;
pub mod since_v0_2_0;

pub use since_v0_2_0::transform_world::wasm_connect::connector::host::LogLevel;
pub use since_v0_2_0::transform_world::wasm_connect::connector::types;
