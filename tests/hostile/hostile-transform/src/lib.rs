//! `hostile-transform`: a test-only transform (tests/transforms.rs) whose `behaviour` key
//! picks what it does to each batch:
//! - `fail-every-tenth`: passes records through, but fails every record whose value ends in
//!   a number divisible by 10 (`line 10`, `line 20`, …);
//! - `loop`: spins forever in `apply`;
//! - `memory`: allocates until the memory limit stops it;
//! - `malformed`: returns bytes that are not a record batch.

use wasm_connect_sdk::{
    export_transform, BatchWriter, Config, ConfigDef, Connector, Descriptor, Host, Kind,
    RecordRef, TaskError, Transform, TransformTask,
};

pub struct HostileTransform;

const CONFIG_DEFS: &[ConfigDef] = &[ConfigDef::required(
    "behaviour",
    "fail-every-tenth, loop, memory or malformed.",
)];

impl Connector for HostileTransform {
    fn descriptor() -> Descriptor {
        Descriptor {
            name: "hostile-transform",
            version: env!("CARGO_PKG_VERSION"),
            kind: Kind::Transform,
            description: "Test-only: fails records, loops, bombs memory or returns garbage.",
            aliases: &["com.example.HostileTransform"],
            config_defs: CONFIG_DEFS,
        }
    }
}

impl Transform for HostileTransform {
    type Task = HostileTask;
}

/// What the transform does (its `behaviour`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    FailEveryTenth,
    Loop,
    Memory,
    Malformed,
}

pub struct HostileTask {
    behaviour: Behaviour,
    hoard: Vec<Vec<u8>>,
}

impl TransformTask for HostileTask {
    fn start(config: &Config, _host: &dyn Host) -> Result<Self, TaskError> {
        let behaviour = match config.get("behaviour") {
            Some("fail-every-tenth") => Behaviour::FailEveryTenth,
            Some("loop") => Behaviour::Loop,
            Some("memory") => Behaviour::Memory,
            Some("malformed") => Behaviour::Malformed,
            other => return Err(TaskError::Fatal(format!("behaviour: unknown {other:?}"))),
        };
        Ok(HostileTask {
            behaviour,
            hoard: Vec::new(),
        })
    }

    fn apply(&mut self, record: &RecordRef<'_>, out: &mut BatchWriter) -> Result<(), String> {
        match self.behaviour {
            Behaviour::FailEveryTenth => {
                let text = String::from_utf8_lossy(record.value);
                let number: Option<u64> = text.rsplit(' ').next().and_then(|n| n.parse().ok());
                if number.is_some_and(|n| n % 10 == 0) {
                    return Err(format!("refusing {text}: divisible by ten"));
                }
                out.push_frame(record.frame);
            }
            Behaviour::Loop => {
                let mut spins = 0u64;
                while std::hint::black_box(spins) != u64::MAX {
                    spins = spins.wrapping_add(1) % 1_000;
                }
            }
            Behaviour::Memory => loop {
                self.hoard.push(vec![1u8; 1 << 20]);
            },
            Behaviour::Malformed => out.push_frame(b"\x05\x00\x00\x00garbage"),
        }
        Ok(())
    }
}

export_transform!(HostileTransform);
