//! Transforms of headers: InsertHeader, DropHeaders, HeaderFrom.

use wasm_connect_sdk::{BatchWriter, Config, RecordRef, TaskError, TransformTask};

use crate::{list, plugin, req, required, Part};

/// InsertHeader: adds header `header` with the text `value.literal`.
pub struct InsertHeaderTask {
    header: String,
    value: String,
}

impl TransformTask for InsertHeaderTask {
    fn start(config: &Config, _host: &dyn wasm_connect_sdk::Host) -> Result<Self, TaskError> {
        let get = |k| {
            required(config, k)
                .map(str::to_string)
                .map_err(TaskError::Fatal)
        };
        Ok(InsertHeaderTask {
            header: get("header")?,
            value: get("value.literal")?,
        })
    }

    fn apply(&mut self, record: &RecordRef<'_>, out: &mut BatchWriter) -> Result<(), String> {
        out.push_with_headers(record, &[(&self.header, self.value.as_bytes())])
            .map_err(|e| e.to_string())
    }
}

plugin!(
    InsertHeader,
    "insert-header",
    InsertHeaderTask,
    "Adds a header with a literal value.",
    ["org.apache.kafka.connect.transforms.InsertHeader"],
    &[
        req("header", "The header's name."),
        req("value.literal", "The header's value."),
    ]
);

/// DropHeaders: removes the headers named in `headers`.
pub struct DropHeadersTask {
    names: Vec<String>,
}

impl TransformTask for DropHeadersTask {
    fn start(config: &Config, _host: &dyn wasm_connect_sdk::Host) -> Result<Self, TaskError> {
        required(config, "headers").map_err(TaskError::Fatal)?;
        Ok(DropHeadersTask {
            names: list(config, "headers"),
        })
    }

    fn apply(&mut self, record: &RecordRef<'_>, out: &mut BatchWriter) -> Result<(), String> {
        let headers: Vec<(&str, &[u8])> = record
            .headers()
            .filter(|(name, _)| !self.names.iter().any(|n| n == name))
            .collect();
        out.push(&record.to_record(&headers))
            .map_err(|e| e.to_string())
    }
}

plugin!(
    DropHeaders,
    "drop-headers",
    DropHeadersTask,
    "Removes headers by name.",
    ["org.apache.kafka.connect.transforms.DropHeaders"],
    &[req("headers", "The headers to remove.")]
);

/// HeaderFrom: copies (or moves) fields of the key or value into headers.
pub struct HeaderFromTask {
    part: Part,
    pairs: Vec<(String, String)>,
    moves: bool,
}

impl TransformTask for HeaderFromTask {
    fn start(config: &Config, _host: &dyn wasm_connect_sdk::Host) -> Result<Self, TaskError> {
        let start = || -> Result<Self, String> {
            let (fields, headers) = (list(config, "fields"), list(config, "headers"));
            required(config, "fields")?;
            if fields.len() != headers.len() {
                return Err("headers: give one header per field".into());
            }
            let moves = match required(config, "operation")? {
                "copy" => false,
                "move" => true,
                other => return Err(format!("operation: {other:?} is not copy or move")),
            };
            Ok(HeaderFromTask {
                part: Part::of(config),
                pairs: fields.into_iter().zip(headers).collect(),
                moves,
            })
        };
        start().map_err(TaskError::Fatal)
    }

    fn apply(&mut self, record: &RecordRef<'_>, out: &mut BatchWriter) -> Result<(), String> {
        let mut data = self.part.read(record);
        let map = data.object()?;
        let mut values = Vec::new();
        for (field, header) in &self.pairs {
            let value = if self.moves {
                map.remove(field)
            } else {
                map.get(field).cloned()
            };
            let text = match value {
                Some(serde_json::Value::String(s)) => s,
                Some(other) => other.to_string(),
                None => continue,
            };
            values.push((header.as_str(), text));
        }
        let data = if self.moves {
            data
        } else {
            self.part.read(record)
        };
        let mut with = BatchWriter::new();
        self.part.write(record, &data, &mut with)?;
        let written = wasm_connect_sdk::BatchReader::new(with.frames())
            .next()
            .ok_or("no record")?
            .map_err(|e| e.to_string())?;
        let added: Vec<(&str, &[u8])> = values.iter().map(|(h, v)| (*h, v.as_bytes())).collect();
        out.push_with_headers(&written, &added)
            .map_err(|e| e.to_string())
    }
}

plugin!(
    HeaderFrom,
    "header-from",
    HeaderFromTask,
    "Copies or moves fields of the key or value into headers.",
    [
        "org.apache.kafka.connect.transforms.HeaderFrom$Value",
        "org.apache.kafka.connect.transforms.HeaderFrom$Key"
    ],
    &[
        req("fields", "The fields to copy or move."),
        req("headers", "The header for each field, in order."),
        req("operation", "copy or move."),
    ]
);
