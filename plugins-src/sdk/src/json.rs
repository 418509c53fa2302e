//! JSON helpers for record values (feature `json`): read a value as JSON when it is JSON,
//! find the part of a document a JSON pointer names, and write a value back as text.

pub use serde_json::Value;

/// `bytes` as a JSON value: parsed when it is a JSON document, else a JSON string of its
/// text (invalid UTF-8 replaced).
pub fn value_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// `bytes` as a JSON document, or why it is not one.
pub fn parse(bytes: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

/// The part of `document` that `pointer` names (RFC 6901: `/data/items`, `` for the whole
/// document; a pointer written without its leading `/` is read as if it had one).
pub fn at<'a>(document: &'a Value, pointer: &str) -> Option<&'a Value> {
    if pointer.is_empty() || pointer.starts_with('/') {
        document.pointer(pointer)
    } else {
        document.pointer(&format!("/{pointer}"))
    }
}

/// `value` as record text: a string as it is (no quotes), anything else as compact JSON.
pub fn text_of(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// A JSON array of `values`, each read with [`value_of`].
pub fn array_of<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let array: Vec<Value> = values.into_iter().map(value_of).collect();
    serde_json::to_vec(&array).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_json_when_they_parse_else_strings() {
        assert_eq!(value_of(br#"{"a":1}"#), serde_json::json!({"a": 1}));
        assert_eq!(value_of(b"hello"), Value::String("hello".into()));
        assert_eq!(array_of([&b"1"[..], b"x"]), br#"[1,"x"]"#);
        let doc = serde_json::json!({"data": {"items": [1]}, "next": "c2"});
        assert_eq!(at(&doc, "/data/items"), Some(&serde_json::json!([1])));
        assert_eq!(at(&doc, "next").map(text_of), Some("c2".to_string()));
        assert_eq!(at(&doc, "").map(text_of), Some(doc.to_string()));
    }
}
