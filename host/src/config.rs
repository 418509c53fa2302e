//! How a connector config value is written, where both the worker and the sandbox's
//! capabilities read it: list values (`a, b`) and whole-value references (`${env:NAME}`).

/// The entries of a list value: split on `,`, trimmed, empty ones dropped.
pub fn entries(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|e| !e.is_empty())
}

/// True when `value` is written as a whole-value reference, `${…}`.
pub fn is_reference(value: &str) -> bool {
    value.starts_with("${") && value.ends_with('}')
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::sandbox::types::{ConfigDef, PathAccess};
    use crate::storage::Properties;

    /// A config from key/value pairs.
    pub(crate) fn props(pairs: &[(&str, &str)]) -> Properties {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A text key's definition, path-typed when `path` is set.
    pub(crate) fn def(name: &str, path: Option<PathAccess>) -> ConfigDef {
        ConfigDef {
            name: name.into(),
            description: String::new(),
            value_type: crate::sandbox::types::ValueType::Text,
            required: false,
            default_value: None,
            secret: false,
            path,
        }
    }

    #[test]
    fn lists_drop_empty_entries_and_references_are_whole_values() {
        let listed: Vec<&str> = super::entries(" a, ,b ,").collect();
        assert_eq!(listed, ["a", "b"]);
        assert!(super::is_reference("${env:A}"));
        assert!(!super::is_reference("x${env:A}"));
    }
}
