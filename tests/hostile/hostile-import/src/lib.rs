//! `hostile-import`: a test-only source connector that imports, besides the connector
//! world, an interface no wasm-connect host provides (`hostile:probe/unknown`, see
//! `wit/probe.wit`). The host must refuse to load it, listing the file as a broken plugin
//! with "imports something this host does not provide", and keep serving.
//!
//! A made-up interface rather than, say, `wasi:http/outgoing-handler`: a host may grow
//! support for a real WASI interface, and this plugin must stay unloadable.

use wasm_connect_sdk::{
    BatchWriter, Config, ConfigDef, Connector, Descriptor, Host, Kind, Record, SourceConnector,
    SourceTask, TaskError,
};

#[cfg(target_arch = "wasm32")]
mod probe {
    wit_bindgen::generate!({ world: "probe", path: "wit" });
}

/// Calls the imported function (natively, where nothing is imported, a stand-in).
fn ping(value: u32) -> u32 {
    #[cfg(target_arch = "wasm32")]
    return probe::hostile::probe::unknown::ping(value);
    #[cfg(not(target_arch = "wasm32"))]
    value
}

pub struct HostileImport;

const CONFIG_DEFS: &[ConfigDef] = &[ConfigDef::required("topic", "The topic the records go to.")];

impl Connector for HostileImport {
    fn descriptor() -> Descriptor {
        Descriptor {
            name: "hostile-import",
            version: env!("CARGO_PKG_VERSION"),
            kind: Kind::Source,
            description: "Test-only: imports an interface the host does not provide.",
            aliases: &[],
            config_defs: CONFIG_DEFS,
        }
    }
}

impl SourceConnector for HostileImport {
    type Task = HostileImportTask;
}

pub struct HostileImportTask;

impl SourceTask for HostileImportTask {
    fn start(_config: &Config, _host: &dyn Host) -> Result<Self, TaskError> {
        Ok(HostileImportTask)
    }

    fn poll(
        &mut self,
        out: &mut BatchWriter,
        _max_records: u32,
        _max_bytes: u32,
    ) -> Result<(), TaskError> {
        let value = format!("ping answered {}", ping(1));
        out.push(&Record {
            value: value.as_bytes(),
            partition: "p",
            position: "1",
            ..Record::default()
        })
        .map_err(|e| TaskError::Fatal(e.to_string()))
    }
}

wasm_connect_sdk::export_source!(HostileImport);
