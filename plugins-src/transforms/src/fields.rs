//! Transforms of the fields of a key or value: InsertField, ReplaceField, MaskField,
//! ValueToKey, ExtractField, HoistField, Cast, Flatten.

use serde_json::{Map, Number, Value};
use wasm_connect_sdk::{BatchWriter, Config, RecordRef, TaskError, TransformTask};

use crate::{list, opt, plugin, req, required, Data, MapPart, Part, PartTask};

/// InsertField: adds fields with a static value, the topic, the timestamp or the offset.
pub struct InsertFields {
    static_field: Option<(String, Value)>,
    topic_field: Option<String>,
    timestamp_field: Option<String>,
    offset_field: Option<String>,
}

impl MapPart for InsertFields {
    fn configure(config: &Config) -> Result<Self, String> {
        let get = |k: &str| config.get(k).filter(|v| !v.is_empty()).map(str::to_string);
        let static_field = get("static.field").map(|f| {
            let value = config.get("static.value").unwrap_or_default();
            (f, Value::String(value.to_string()))
        });
        Ok(InsertFields {
            static_field,
            topic_field: get("topic.field"),
            timestamp_field: get("timestamp.field"),
            offset_field: get("offset.field"),
        })
    }

    fn map(&self, mut data: Data, record: &RecordRef<'_>) -> Result<Data, String> {
        let map = data.object()?;
        if let Some((field, value)) = &self.static_field {
            map.insert(field.clone(), value.clone());
        }
        if let Some(field) = &self.topic_field {
            map.insert(field.clone(), Value::String(record.topic.to_string()));
        }
        if let Some(field) = &self.timestamp_field {
            map.insert(field.clone(), Value::from(record.timestamp));
        }
        if let Some(field) = &self.offset_field {
            let offset = match record.position.parse::<u64>() {
                Ok(n) => Value::from(n),
                Err(_) => Value::String(record.position.to_string()),
            };
            map.insert(field.clone(), offset);
        }
        Ok(data)
    }
}

plugin!(
    InsertField,
    "insert-field",
    PartTask<InsertFields>,
    "Inserts fields: a static value, the topic, the timestamp or the offset (position).",
    [
        "org.apache.kafka.connect.transforms.InsertField$Value",
        "org.apache.kafka.connect.transforms.InsertField$Key"
    ],
    &[
        opt("static.field", "Field for a static value."),
        opt("static.value", "The static value."),
        opt("topic.field", "Field for the topic."),
        opt("timestamp.field", "Field for the timestamp (ms)."),
        opt(
            "offset.field",
            "Field for the offset (a sink's) or position (a source's)."
        ),
    ]
);

/// ReplaceField: keeps (`include`), drops (`exclude`) and renames (`renames=a:b,…`) fields.
pub struct ReplaceFields {
    include: Vec<String>,
    exclude: Vec<String>,
    renames: Vec<(String, String)>,
}

impl MapPart for ReplaceFields {
    fn configure(config: &Config) -> Result<Self, String> {
        let either = |a: &str, b: &str| {
            let mut v = list(config, a);
            v.extend(list(config, b));
            v
        };
        let renames = list(config, "renames")
            .into_iter()
            .map(|pair| match pair.split_once(':') {
                Some((from, to)) => Ok((from.trim().to_string(), to.trim().to_string())),
                None => Err(format!("renames: {pair:?} is not old:new")),
            })
            .collect::<Result<_, _>>()?;
        Ok(ReplaceFields {
            include: either("include", "whitelist"),
            exclude: either("exclude", "blacklist"),
            renames,
        })
    }

    fn map(&self, mut data: Data, _record: &RecordRef<'_>) -> Result<Data, String> {
        let map = data.object()?;
        let old = std::mem::take(map);
        for (key, value) in old {
            if self.exclude.contains(&key)
                || (!self.include.is_empty() && !self.include.contains(&key))
            {
                continue;
            }
            let name = self
                .renames
                .iter()
                .find(|(from, _)| *from == key)
                .map_or(key, |(_, to)| to.clone());
            map.insert(name, value);
        }
        Ok(data)
    }
}

plugin!(
    ReplaceField,
    "replace-field",
    PartTask<ReplaceFields>,
    "Keeps, drops and renames fields.",
    [
        "org.apache.kafka.connect.transforms.ReplaceField$Value",
        "org.apache.kafka.connect.transforms.ReplaceField$Key"
    ],
    &[
        opt("include", "Fields to keep (all when empty)."),
        opt("exclude", "Fields to drop."),
        opt("renames", "Renames, old:new,…"),
    ]
);

/// MaskField: strings become `""`, numbers 0, booleans false (or all `replacement`).
pub struct MaskFields {
    fields: Vec<String>,
    replacement: Option<String>,
}

impl MapPart for MaskFields {
    fn configure(config: &Config) -> Result<Self, String> {
        required(config, "fields")?;
        Ok(MaskFields {
            fields: list(config, "fields"),
            replacement: config.get("replacement").map(str::to_string),
        })
    }

    fn map(&self, mut data: Data, _record: &RecordRef<'_>) -> Result<Data, String> {
        let map = data.object()?;
        for field in &self.fields {
            let Some(value) = map.get_mut(field) else {
                continue;
            };
            *value = match (&*value, &self.replacement) {
                (Value::Number(_), Some(r)) => serde_json::from_str::<Number>(r)
                    .map(Value::Number)
                    .map_err(|_| format!("replacement {r:?} is not a number for {field}"))?,
                (Value::Object(_) | Value::Array(_), Some(_)) => {
                    return Err(format!("cannot mask {field}: not a primitive"))
                }
                (_, Some(r)) => Value::String(r.clone()),
                (Value::String(_), None) => Value::String(String::new()),
                (Value::Number(_), None) => Value::from(0),
                (Value::Bool(_), None) => Value::Bool(false),
                (Value::Null, None) => Value::Null,
                (Value::Array(_), None) => Value::Array(Vec::new()),
                (Value::Object(_), None) => Value::Object(Map::new()),
            };
        }
        Ok(data)
    }
}

plugin!(
    MaskField,
    "mask-field",
    PartTask<MaskFields>,
    "Masks fields: strings become \"\", numbers 0, booleans false, or the replacement.",
    [
        "org.apache.kafka.connect.transforms.MaskField$Value",
        "org.apache.kafka.connect.transforms.MaskField$Key"
    ],
    &[
        req("fields", "Fields to mask."),
        opt("replacement", "The value masked fields get instead."),
    ]
);

/// ValueToKey: the key becomes an object of these fields of the value.
pub struct ValueToKeyTask {
    fields: Vec<String>,
}

impl TransformTask for ValueToKeyTask {
    fn start(config: &Config, _host: &dyn wasm_connect_sdk::Host) -> Result<Self, TaskError> {
        required(config, "fields").map_err(TaskError::Fatal)?;
        Ok(ValueToKeyTask {
            fields: list(config, "fields"),
        })
    }

    fn apply(&mut self, record: &RecordRef<'_>, out: &mut BatchWriter) -> Result<(), String> {
        let mut value = Part::Value.read(record);
        let map = value.object()?;
        let key: Map<String, Value> = self
            .fields
            .iter()
            .map(|f| (f.clone(), map.get(f).cloned().unwrap_or(Value::Null)))
            .collect();
        Part::Key.write(record, &Data::Json(Value::Object(key)), out)
    }
}

plugin!(
    ValueToKey,
    "value-to-key",
    ValueToKeyTask,
    "Replaces the key with an object of fields of the value.",
    ["org.apache.kafka.connect.transforms.ValueToKey"],
    &[req("fields", "Fields of the value that make the key.")]
);

/// ExtractField: the key or value becomes the value of one of its fields.
pub struct ExtractFieldOf {
    field: String,
}

impl MapPart for ExtractFieldOf {
    fn configure(config: &Config) -> Result<Self, String> {
        Ok(ExtractFieldOf {
            field: required(config, "field")?.to_string(),
        })
    }

    fn map(&self, mut data: Data, _record: &RecordRef<'_>) -> Result<Data, String> {
        let map = data.object()?;
        Ok(Data::Json(map.remove(&self.field).unwrap_or(Value::Null)))
    }
}

plugin!(
    ExtractField,
    "extract-field",
    PartTask<ExtractFieldOf>,
    "Replaces the key or value with one of its fields.",
    [
        "org.apache.kafka.connect.transforms.ExtractField$Value",
        "org.apache.kafka.connect.transforms.ExtractField$Key"
    ],
    &[req("field", "The field to extract.")]
);

/// HoistField: the key or value becomes `{field: <it>}`.
pub struct HoistInto {
    field: String,
}

impl MapPart for HoistInto {
    fn configure(config: &Config) -> Result<Self, String> {
        Ok(HoistInto {
            field: required(config, "field")?.to_string(),
        })
    }

    fn map(&self, data: Data, _record: &RecordRef<'_>) -> Result<Data, String> {
        let mut map = Map::new();
        map.insert(self.field.clone(), data.into_json());
        Ok(Data::Json(Value::Object(map)))
    }
}

plugin!(
    HoistField,
    "hoist-field",
    PartTask<HoistInto>,
    "Wraps the key or value in an object under one field.",
    [
        "org.apache.kafka.connect.transforms.HoistField$Value",
        "org.apache.kafka.connect.transforms.HoistField$Key"
    ],
    &[req("field", "The field to wrap into.")]
);

/// The types Cast casts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CastType {
    Integer,
    Float,
    Boolean,
    String,
}

impl CastType {
    fn parse(name: &str) -> Result<CastType, String> {
        Ok(match name.trim() {
            "int8" | "int16" | "int32" | "int64" => CastType::Integer,
            "float32" | "float64" => CastType::Float,
            "boolean" => CastType::Boolean,
            "string" => CastType::String,
            other => {
                return Err(format!(
                    "spec: unknown type {other:?}; use int8, int16, int32, int64, float32, \
                     float64, boolean or string"
                ))
            }
        })
    }

    fn cast(self, value: &Value) -> Result<Value, String> {
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let bad = || format!("cannot cast {text:?} to {self:?}");
        Ok(match self {
            CastType::String => Value::String(text.clone()),
            CastType::Boolean => match value {
                Value::Bool(b) => Value::Bool(*b),
                Value::Number(n) => Value::Bool(n.as_f64() != Some(0.0)),
                _ => Value::Bool(text.parse::<bool>().map_err(|_| bad())?),
            },
            CastType::Integer => match value {
                Value::Bool(b) => Value::from(i64::from(*b)),
                Value::Number(n) if n.is_f64() => Value::from(n.as_f64().unwrap_or(0.0) as i64),
                _ => Value::from(text.trim().parse::<i64>().map_err(|_| bad())?),
            },
            CastType::Float => match value {
                Value::Bool(b) => Value::from(f64::from(u8::from(*b))),
                _ => Value::from(text.trim().parse::<f64>().map_err(|_| bad())?),
            },
        })
    }
}

/// Cast: casts the whole key or value (`spec=int32`) or fields (`spec=a:int32,b:string`).
pub struct CastSpec {
    whole: Option<CastType>,
    fields: Vec<(String, CastType)>,
}

impl MapPart for CastSpec {
    fn configure(config: &Config) -> Result<Self, String> {
        let spec = required(config, "spec")?;
        if !spec.contains(':') {
            return Ok(CastSpec {
                whole: Some(CastType::parse(spec)?),
                fields: Vec::new(),
            });
        }
        let fields = list(config, "spec")
            .iter()
            .map(|pair| match pair.split_once(':') {
                Some((field, ty)) => Ok((field.trim().to_string(), CastType::parse(ty)?)),
                None => Err(format!("spec: {pair:?} is not field:type")),
            })
            .collect::<Result<_, _>>()?;
        Ok(CastSpec {
            whole: None,
            fields,
        })
    }

    fn map(&self, mut data: Data, _record: &RecordRef<'_>) -> Result<Data, String> {
        if let Some(ty) = self.whole {
            return Ok(Data::Json(ty.cast(&data.into_json())?));
        }
        let map = data.object()?;
        for (field, ty) in &self.fields {
            if let Some(value) = map.get_mut(field) {
                *value = ty.cast(value)?;
            }
        }
        Ok(data)
    }
}

plugin!(
    Cast,
    "cast",
    PartTask<CastSpec>,
    "Casts the key or value, or some of its fields, to another type.",
    [
        "org.apache.kafka.connect.transforms.Cast$Value",
        "org.apache.kafka.connect.transforms.Cast$Key"
    ],
    &[req(
        "spec",
        "A type (casts the whole), or field:type,… pairs."
    )]
);

/// Flatten: nested objects become fields joined by `delimiter` (`.`).
pub struct FlattenWith {
    delimiter: String,
}

impl FlattenWith {
    fn flatten(&self, prefix: &str, map: Map<String, Value>, into: &mut Map<String, Value>) {
        for (key, value) in map {
            let name = if prefix.is_empty() {
                key
            } else {
                format!("{prefix}{}{key}", self.delimiter)
            };
            match value {
                Value::Object(inner) => self.flatten(&name, inner, into),
                other => {
                    into.insert(name, other);
                }
            }
        }
    }
}

impl MapPart for FlattenWith {
    fn configure(config: &Config) -> Result<Self, String> {
        Ok(FlattenWith {
            delimiter: config.get("delimiter").unwrap_or(".").to_string(),
        })
    }

    fn map(&self, mut data: Data, _record: &RecordRef<'_>) -> Result<Data, String> {
        let map = std::mem::take(data.object()?);
        let mut flat = Map::new();
        self.flatten("", map, &mut flat);
        Ok(Data::Json(Value::Object(flat)))
    }
}

plugin!(
    Flatten,
    "flatten",
    PartTask<FlattenWith>,
    "Flattens nested objects into fields joined by the delimiter.",
    [
        "org.apache.kafka.connect.transforms.Flatten$Value",
        "org.apache.kafka.connect.transforms.Flatten$Key"
    ],
    &[opt("delimiter", "Joins nested field names (default `.`).")]
);
