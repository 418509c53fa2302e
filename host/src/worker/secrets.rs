//! Secrets in connector configs: which keys are masked in every API answer, and how
//! `${env:NAME}` / `${file:/path:key}` references are resolved when a task starts (they are
//! stored and shown as written, never resolved). Only references the user wrote are resolved
//! (see `keys`); an error while resolving names the reference, never a value.

use crate::config::is_reference;
use crate::plugins::Plugin;
use crate::storage::Properties;

/// What a secret value is shown as.
pub const MASK: &str = "********";

/// Substrings that make a key secret whatever the plugin declares.
const SECRET_WORDS: [&str; 4] = ["password", "secret", "token", "key"];

/// True when `key`'s value must never be shown: the plugin declares it secret, or its name
/// says so. Converter class keys (`key.converter`, …) name classes, not keys, and are shown.
pub fn is_secret(key: &str, plugin: Option<&Plugin>) -> bool {
    let declared = plugin.is_some_and(|p| {
        p.descriptor
            .config_defs
            .iter()
            .any(|d| d.secret && d.name == key)
    });
    let lower = key.to_ascii_lowercase();
    let named =
        SECRET_WORDS.iter().any(|word| lower.contains(word)) && !lower.ends_with("converter");
    declared || named
}

/// `config` with every secret value replaced by [`MASK`].
pub fn mask(config: &Properties, plugin: Option<&Plugin>) -> Properties {
    config
        .iter()
        .map(|(key, value)| {
            let shown = if is_secret(key, plugin) {
                MASK.to_string()
            } else {
                value.clone()
            };
            (key.clone(), shown)
        })
        .collect()
}

/// Resolves a whole-value reference: `${env:NAME}` (an environment variable of the host) or
/// `${file:/path:key}` (the `key=value` line `key` of a properties file). Other values are
/// returned unchanged.
pub fn resolve(value: &str) -> Result<String, String> {
    if !is_reference(value) {
        return Ok(value.to_string());
    }
    let reference = &value[2..value.len() - 1];
    if let Some(name) = reference.strip_prefix("env:") {
        return std::env::var(name).map_err(|_| {
            format!("config reference ${{env:{name}}}: the host has no such environment variable")
        });
    }
    if let Some(file_and_key) = reference.strip_prefix("file:") {
        let (path, key) = file_and_key.rsplit_once(':').ok_or_else(|| {
            format!("config reference ${{file:{file_and_key}}}: write it as ${{file:/path:key}}")
        })?;
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!("config reference ${{file:{path}:{key}}}: cannot read {path}: {e}")
        })?;
        return text
            .lines()
            .filter_map(|line| line.split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_string())
            .ok_or_else(|| {
                format!("config reference ${{file:{path}:{key}}}: {path} has no key {key}")
            });
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_named_like_secrets_are_masked_and_converters_are_not() {
        let config: Properties = [
            ("db.password", "p"),
            ("api_token", "t"),
            ("key.converter", "c"),
            ("topic", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let masked = mask(&config, None);
        assert_eq!(masked["db.password"], MASK);
        assert_eq!(masked["api_token"], MASK);
        assert_eq!(masked["key.converter"], "c");
        assert_eq!(masked["topic"], "x");
    }

    #[test]
    fn references_resolve_from_env_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("creds.properties");
        std::fs::write(&file, "user=alice\npassword = s3cret\n").unwrap();
        assert_eq!(
            resolve(&format!("${{file:{}:password}}", file.display())).unwrap(),
            "s3cret"
        );
        assert!(resolve(&format!("${{file:{}:missing}}", file.display()))
            .unwrap_err()
            .contains("has no key missing"));
        assert_eq!(
            resolve("${env:PATH}").unwrap(),
            std::env::var("PATH").unwrap()
        );
        assert!(resolve("${env:WASM_CONNECT_SURELY_UNSET_VARIABLE}")
            .unwrap_err()
            .contains("no such environment variable"));
        assert_eq!(resolve("plain").unwrap(), "plain");
    }
}
