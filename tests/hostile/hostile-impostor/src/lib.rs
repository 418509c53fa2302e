//! `hostile-impostor`: a test-only source connector whose `describe` says whatever it was
//! built to say, so that `tests/plugin_trust.rs` can drop impostors and bad names into a
//! plugin directory. `tests/hostile/build.sh` builds it several times with different
//! build-time environments into `tests/fixtures/hostile/impostor-*.wasm`.
//!
//! | variable            | what it sets (read at build time) |
//! | ------------------- | --------------------------------- |
//! | `IMPOSTOR_NAME`     | the plugin name (default `impostor`); `\n`, `\0`, `\\` and `\u{XXXX}` escapes are decoded |
//! | `IMPOSTOR_REPEAT`   | the name is repeated this many times (default 1) |
//! | `IMPOSTOR_VERSION`  | the version (default `0.1.0`) |
//! | `IMPOSTOR_ALIASES`  | comma-separated aliases (escapes decoded; default none) |
//! | `IMPOSTOR_DESCRIBE` | `sleep`: `describe` sleeps for an hour instead of answering |
//!
//! Its tasks do nothing: they start and poll nothing.

use std::time::Duration;

use wasm_connect_sdk::{
    BatchWriter, Config, ConfigDef, Connector, Descriptor, Host, Kind, SourceConnector,
    SourceTask, TaskError,
};

const NAME: &str = match option_env!("IMPOSTOR_NAME") {
    Some(name) => name,
    None => "impostor",
};
const REPEAT: Option<&str> = option_env!("IMPOSTOR_REPEAT");
const VERSION: &str = match option_env!("IMPOSTOR_VERSION") {
    Some(version) => version,
    None => "0.1.0",
};
const ALIASES: &str = match option_env!("IMPOSTOR_ALIASES") {
    Some(aliases) => aliases,
    None => "",
};
const SLEEP: bool = matches!(option_env!("IMPOSTOR_DESCRIBE"), Some(_));

const CONFIG_DEFS: &[ConfigDef] = &[ConfigDef::required("topic", "Unused.")];

/// Decodes `\n`, `\0`, `\\` and `\u{XXXX}` (anything else stays as written).
fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('0') => out.push('\0'),
            Some('\\') => out.push('\\'),
            Some('u') if chars.peek() == Some(&'{') => {
                let hex: String = chars.by_ref().skip(1).take_while(|c| *c != '}').collect();
                out.extend(u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32));
            }
            Some(other) => out.extend(['\\', other]),
            None => out.push('\\'),
        }
    }
    out
}

/// Text that lives as long as the component (a test-only component may leak it).
fn forever(text: String) -> &'static str {
    Box::leak(text.into_boxed_str())
}

pub struct Impostor;

impl Connector for Impostor {
    fn descriptor() -> Descriptor {
        if SLEEP {
            std::thread::sleep(Duration::from_secs(3600));
        }
        let repeat = REPEAT.and_then(|n| n.parse().ok()).unwrap_or(1);
        let aliases: Vec<&'static str> = ALIASES
            .split(',')
            .filter(|a| !a.is_empty())
            .map(|a| forever(unescape(a)))
            .collect();
        Descriptor {
            name: forever(unescape(NAME).repeat(repeat)),
            version: VERSION,
            kind: Kind::Source,
            description: "Test-only: says what it was built to say.",
            aliases: Box::leak(aliases.into_boxed_slice()),
            config_defs: CONFIG_DEFS,
        }
    }
}

impl SourceConnector for Impostor {
    type Task = Idle;
}

pub struct Idle;

impl SourceTask for Idle {
    fn start(_config: &Config, _host: &dyn Host) -> Result<Self, TaskError> {
        Ok(Idle)
    }

    fn poll(&mut self, _out: &mut BatchWriter, _max: u32, _bytes: u32) -> Result<(), TaskError> {
        std::thread::sleep(Duration::from_millis(100));
        Ok(())
    }
}

wasm_connect_sdk::export_source!(Impostor);
