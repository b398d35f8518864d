//! Triton's `config.pbtxt`: a model's configuration in protobuf text format
//! (`inference.ModelConfig`), read with the same message definitions the
//! gRPC front end serves, so a Triton model repository works unchanged.
//!
//! What it says becomes a `config.toml`-shaped table that `config.toml`
//! overrides key by key: `max_batch_size` and `dynamic_batching` (queue
//! delay, preferred batch sizes, queue policy) → `[execution]`;
//! `instance_group` counts → `execution.instances`; `version_policy` →
//! `[versions]`. Declared `input`/`output` are checked against the ONNX
//! model when a version loads. Fields switchyard does not act on are named
//! in a warning; settings it cannot honour (a GPU instance group, a
//! platform other than ONNX Runtime, an unknown field) refuse the model with
//! a message saying why.

use std::path::Path;

use prost_reflect::{DescriptorPool, DynamicMessage, ReflectMessage, Value};

use super::error::FileError;
use crate::runtime::Signature;
use crate::tensor::DataType;

/// The descriptors of proto/model_config.proto (compiled by build.rs).
const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/inference_descriptor.bin"));

/// One declared input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    pub name: String,
    pub datatype: DataType,
    /// Without the batch dimension when the model is batched; -1 = any.
    pub dims: Vec<i64>,
    /// Triton's `reshape`: the shape the model itself has (after the batch
    /// dimension). Answers keep the model's shape.
    pub reshape: Option<Vec<i64>>,
}

/// The inputs and outputs a `config.pbtxt` declares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeclaredIo {
    /// `max_batch_size > 0`: dims leave out the first (batch) dimension.
    pub batched: bool,
    pub inputs: Vec<Declared>,
    pub outputs: Vec<Declared>,
}

/// What a `config.pbtxt` says, ready to merge under `config.toml`.
#[derive(Debug, Clone, Default)]
pub struct TritonConfig {
    /// The settings in `config.toml`'s shape.
    pub table: toml::Table,
    pub io: DeclaredIo,
    /// Fields that are set but not acted on, by name.
    pub ignored: Vec<String>,
}

/// Reads `path` if it exists (`Ok(None)` otherwise) for the model in the
/// directory `model`.
pub fn read(path: &Path, model: &str) -> Result<Option<TritonConfig>, FileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FileError::new(path, e)),
    };
    parse(&text, model).map(Some).map_err(|e| FileError::new(path, e))
}

/// Parses the text of a `config.pbtxt`.
pub fn parse(text: &str, model: &str) -> Result<TritonConfig, String> {
    let pool = DescriptorPool::decode(DESCRIPTORS).map_err(|e| format!("descriptors: {e}"))?;
    let desc = pool
        .get_message_by_name("inference.ModelConfig")
        .ok_or("descriptors lack inference.ModelConfig")?;
    let msg = DynamicMessage::parse_text_format(desc, &list_colons(text)).map_err(|e| e.to_string())?;
    let mut out = TritonConfig::default();
    for (field, value) in msg.fields() {
        match field.name() {
            "name" => check_name(value, model)?,
            "platform" => check_runtime("platform", value, &["onnxruntime_onnx"])?,
            "backend" => check_runtime("backend", value, &["onnxruntime", "onnx"])?,
            "max_batch_size" => out.io.batched = int(value) > 0,
            "input" => out.io.inputs = tensors(value, "input", &mut out.ignored)?,
            "output" => out.io.outputs = tensors(value, "output", &mut out.ignored)?,
            "instance_group" => instance_groups(value, &mut out)?,
            "dynamic_batching" => dynamic_batching(value, &msg, &mut out),
            "version_policy" => version_policy(value, &mut out),
            "default_model_filename" if str_of(value) == "model.onnx" => {}
            other => out.ignored.push(other.to_string()),
        }
    }
    if out.io.batched && !out.table.contains_key("execution") {
        // without dynamic_batching, requests run as sent: no merging
        set(&mut out.table, "execution", "max_batch_size", 0);
    }
    Ok(out)
}

/// The text format lets a list of messages go without a colon (`input [
/// {...} ]`, as Triton's examples write it); the parser wants `input: [`.
/// Adds the colon between a field name and `[`, outside strings and
/// comments.
fn list_colons(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_string: Option<char> = None;
    let mut in_comment = false;
    let mut last_word_end = false;
    for c in text.chars() {
        match (in_string, in_comment, c) {
            (Some(q), _, _) if c == q && !out.ends_with('\\') => in_string = None,
            (Some(_), _, _) => {}
            (None, true, '\n') => in_comment = false,
            (None, true, _) => {}
            (None, false, '"' | '\'') => in_string = Some(c),
            (None, false, '#') => in_comment = true,
            (None, false, '[') if last_word_end => {
                let trimmed = out.trim_end().len();
                out.truncate(trimmed);
                out.push_str(": ");
            }
            _ => {}
        }
        if in_string.is_none() && !in_comment && !c.is_whitespace() {
            last_word_end = c.is_alphanumeric() || c == '_';
        }
        out.push(c);
    }
    out
}

fn int(v: &Value) -> i64 {
    match v {
        Value::I32(n) => i64::from(*n),
        Value::I64(n) => *n,
        Value::U32(n) => i64::from(*n),
        Value::U64(n) => i64::try_from(*n).unwrap_or(i64::MAX),
        Value::EnumNumber(n) => i64::from(*n),
        _ => 0,
    }
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn list(v: &Value) -> &[Value] {
    v.as_list().unwrap_or(&[])
}

fn set(table: &mut toml::Table, section: &str, key: &str, value: impl Into<toml::Value>) {
    let section = table
        .entry(section)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(t) = section {
        t.insert(key.to_string(), value.into());
    }
}

fn check_name(value: &Value, model: &str) -> Result<(), String> {
    let name = str_of(value);
    if name.is_empty() || name == model {
        Ok(())
    } else {
        Err(format!(
            "name '{name}' does not match the model's directory '{model}'"
        ))
    }
}

fn check_runtime(field: &str, value: &Value, ok: &[&str]) -> Result<(), String> {
    let v = str_of(value);
    if v.is_empty() || ok.contains(&v) {
        Ok(())
    } else {
        Err(format!(
            "{field} '{v}' is not served here: switchyard runs ONNX models with ONNX Runtime ({field}: \"{}\")",
            ok[0]
        ))
    }
}

/// Triton's `TYPE_*` data types as ours.
fn datatype(name: &str) -> Option<DataType> {
    Some(match name {
        "TYPE_BOOL" => DataType::Bool,
        "TYPE_UINT8" => DataType::Uint8,
        "TYPE_UINT16" => DataType::Uint16,
        "TYPE_UINT32" => DataType::Uint32,
        "TYPE_UINT64" => DataType::Uint64,
        "TYPE_INT8" => DataType::Int8,
        "TYPE_INT16" => DataType::Int16,
        "TYPE_INT32" => DataType::Int32,
        "TYPE_INT64" => DataType::Int64,
        "TYPE_FP16" => DataType::Fp16,
        "TYPE_FP32" => DataType::Fp32,
        "TYPE_FP64" => DataType::Fp64,
        "TYPE_STRING" => DataType::Bytes,
        _ => return None,
    })
}

/// `input` or `output` entries; fields other than name, data_type, dims and
/// reshape are named as ignored.
fn tensors(value: &Value, what: &str, ignored: &mut Vec<String>) -> Result<Vec<Declared>, String> {
    let mut out = Vec::new();
    for (i, t) in list(value).iter().enumerate() {
        let Some(t) = t.as_message() else { continue };
        let name = t
            .get_field_by_name("name")
            .map(|v| str_of(&v).to_string())
            .unwrap_or_default();
        let mut declared = Declared {
            name: name.clone(),
            datatype: DataType::Fp32,
            dims: Vec::new(),
            reshape: None,
        };
        for (field, v) in t.fields() {
            match field.name() {
                "name" => {}
                "data_type" => {
                    let n = int(v) as i32;
                    let type_name = field
                        .kind()
                        .as_enum()
                        .and_then(|e| e.get_value(n))
                        .map(|e| e.name().to_string())
                        .unwrap_or_else(|| n.to_string());
                    declared.datatype = datatype(&type_name)
                        .ok_or_else(|| format!("{what} '{name}': data type {type_name} is not supported"))?;
                }
                "dims" => declared.dims = list(v).iter().map(int).collect(),
                "reshape" => {
                    let shape = v
                        .as_message()
                        .and_then(|m| m.get_field_by_name("shape"))
                        .map(|s| list(&s).iter().map(int).collect())
                        .unwrap_or_default();
                    declared.reshape = Some(shape);
                    ignored.push(format!("{what}[{i}].reshape (answers keep the model's shape)"));
                }
                other => ignored.push(format!("{what}[{i}].{other}")),
            }
        }
        out.push(declared);
    }
    Ok(out)
}

/// The instance count (the sum over groups); GPU groups are refused.
fn instance_groups(value: &Value, out: &mut TritonConfig) -> Result<(), String> {
    let mut count = 0i64;
    for (i, g) in list(value).iter().enumerate() {
        let Some(g) = g.as_message() else { continue };
        let kind = g
            .get_field_by_name("kind")
            .and_then(|v| {
                let n = int(&v) as i32;
                g.descriptor()
                    .get_field_by_name("kind")?
                    .kind()
                    .as_enum()?
                    .get_value(n)
                    .map(|e| e.name().to_string())
            })
            .unwrap_or_else(|| "KIND_AUTO".into());
        if kind == "KIND_GPU" || g.has_field_by_name("gpus") {
            return Err(format!(
                "instance_group[{i}] asks for GPUs ({kind}); this server runs on CPU: use kind: KIND_CPU"
            ));
        }
        let n = g.get_field_by_name("count").map(|v| int(&v)).unwrap_or(0);
        count += n.max(1);
        for (field, _) in g.fields() {
            if !["count", "kind", "name"].contains(&field.name()) {
                out.ignored.push(format!("instance_group[{i}].{}", field.name()));
            }
        }
    }
    if count > 0 {
        set(&mut out.table, "execution", "instances", count);
    }
    Ok(())
}

/// `dynamic_batching { ... }`: merging on, up to the largest preferred
/// batch size (else `max_batch_size`), with its queue delay and policy.
fn dynamic_batching(value: &Value, msg: &DynamicMessage, out: &mut TritonConfig) {
    let Some(d) = value.as_message() else { return };
    let max = msg
        .get_field_by_name("max_batch_size")
        .map(|v| int(&v))
        .unwrap_or(0);
    let preferred = d
        .get_field_by_name("preferred_batch_size")
        .and_then(|v| list(&v).iter().map(int).max())
        .filter(|&p| p > 0);
    set(
        &mut out.table,
        "execution",
        "max_batch_size",
        preferred.unwrap_or(max).min(max.max(1)),
    );
    let delay = d
        .get_field_by_name("max_queue_delay_microseconds")
        .map(|v| int(&v))
        .unwrap_or(0);
    set(&mut out.table, "execution", "max_queue_delay_us", delay);
    for (field, v) in d.fields() {
        match field.name() {
            "preferred_batch_size" | "max_queue_delay_microseconds" => {}
            "default_queue_policy" => {
                let Some(p) = v.as_message() else { continue };
                let size = p
                    .get_field_by_name("max_queue_size")
                    .map(|v| int(&v))
                    .unwrap_or(0);
                if size > 0 {
                    set(&mut out.table, "execution", "max_queue", size);
                }
                let us = p
                    .get_field_by_name("default_timeout_microseconds")
                    .map(|v| int(&v))
                    .unwrap_or(0);
                if us > 0 {
                    set(&mut out.table, "execution", "timeout_ms", (us + 999) / 1000);
                }
            }
            other => out.ignored.push(format!("dynamic_batching.{other}")),
        }
    }
}

/// `version_policy { latest { num_versions } | all {} | specific { versions } }`.
fn version_policy(value: &Value, out: &mut TritonConfig) {
    let Some(p) = value.as_message() else { return };
    if let Some(latest) = p
        .get_field_by_name("latest")
        .filter(|_| p.has_field_by_name("latest"))
    {
        let n = latest
            .as_message()
            .and_then(|m| m.get_field_by_name("num_versions"))
            .map(|v| int(&v))
            .unwrap_or(1);
        set(&mut out.table, "versions", "policy", "latest");
        set(&mut out.table, "versions", "latest", n.max(1));
    } else if p.has_field_by_name("all") {
        set(&mut out.table, "versions", "policy", "all");
    } else if let Some(specific) = p
        .get_field_by_name("specific")
        .filter(|_| p.has_field_by_name("specific"))
    {
        let versions: Vec<toml::Value> = specific
            .as_message()
            .and_then(|m| m.get_field_by_name("versions"))
            .map(|v| list(&v).iter().map(|x| toml::Value::Integer(int(x))).collect())
            .unwrap_or_default();
        set(&mut out.table, "versions", "policy", "specific");
        set(
            &mut out.table,
            "versions",
            "specific",
            toml::Value::Array(versions),
        );
    }
}

impl DeclaredIo {
    /// Checks the declarations against the model's own signature: every
    /// declared input and output exists with the declared type and dims.
    pub fn check(&self, signature: &Signature) -> Result<(), String> {
        let sides = [
            ("input", &self.inputs, &signature.inputs),
            ("output", &self.outputs, &signature.outputs),
        ];
        for (what, declared, actual) in sides {
            for d in declared {
                let a = actual.iter().find(|a| a.name == d.name).ok_or_else(|| {
                    format!(
                        "config.pbtxt declares {what} '{}' but the model has no such {what}",
                        d.name
                    )
                })?;
                if a.datatype != d.datatype {
                    return Err(format!(
                        "config.pbtxt declares {what} '{}' as {} but the model's is {}",
                        d.name, d.datatype, a.datatype
                    ));
                }
                let dims: &[i64] = if self.batched {
                    a.shape.get(1..).unwrap_or(&[])
                } else {
                    &a.shape
                };
                let want = d.reshape.as_ref().unwrap_or(&d.dims);
                let fits = dims.len() == want.len()
                    && dims.iter().zip(want).all(|(&m, &c)| m < 0 || c < 0 || m == c);
                if !fits {
                    return Err(format!(
                        "config.pbtxt declares {what} '{}' with dims {:?}{} but the model's shape is {:?}",
                        d.name,
                        d.dims,
                        if self.batched {
                            " (after the batch dimension)"
                        } else {
                            ""
                        },
                        a.shape
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration as Triton's documentation writes one.
    const TRITON: &str = r#"
name: "digits"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [
  {
    name: "input"
    data_type: TYPE_FP32
    dims: [ 64 ]
  }
]
output [
  { name: "label", data_type: TYPE_INT64, dims: [ 1 ] },
  { name: "probabilities", data_type: TYPE_FP32, dims: [ 10 ], label_filename: "labels.txt" }
]
instance_group [ { count: 2, kind: KIND_CPU } ]
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 100
}
version_policy: { latest: { num_versions: 2 } }
model_warmup [ { name: "w", batch_size: 1 } ]
"#;

    #[test]
    fn triton_settings_map_to_config_toml_keys() {
        let c = parse(TRITON, "digits").unwrap();
        let exec = c.table["execution"].as_table().unwrap();
        assert_eq!(exec["instances"].as_integer(), Some(2));
        assert_eq!(exec["max_batch_size"].as_integer(), Some(8));
        assert_eq!(exec["max_queue_delay_us"].as_integer(), Some(100));
        let versions = c.table["versions"].as_table().unwrap();
        assert_eq!(versions["policy"].as_str(), Some("latest"));
        assert_eq!(versions["latest"].as_integer(), Some(2));
        assert!(c.io.batched);
        assert_eq!(c.io.inputs[0].dims, vec![64]);
        assert_eq!(c.io.outputs[1].datatype, DataType::Fp32);
        assert_eq!(c.ignored, vec!["output[1].label_filename", "model_warmup"]);
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_by_name() {
        let gpu = TRITON.replace("KIND_CPU", "KIND_GPU");
        assert!(parse(&gpu, "digits").unwrap_err().contains("KIND_GPU"));
        let tf = TRITON.replace("onnxruntime_onnx", "tensorflow_savedmodel");
        assert!(parse(&tf, "digits")
            .unwrap_err()
            .contains("tensorflow_savedmodel"));
        assert!(parse(TRITON, "other").unwrap_err().contains("does not match"));
        let bad = TRITON.replace("max_batch_size: 8", "max_batch_sise: 8");
        assert!(parse(&bad, "digits").unwrap_err().contains("max_batch_sise"));
    }

    #[test]
    fn declarations_are_checked_against_the_model() {
        use crate::runtime::TensorSpec;
        let c = parse(TRITON, "digits").unwrap();
        let spec = |name: &str, datatype, shape: Vec<i64>| TensorSpec {
            name: name.into(),
            datatype,
            shape,
        };
        let mut sig = Signature {
            inputs: vec![spec("input", DataType::Fp32, vec![-1, 64])],
            outputs: vec![
                spec("label", DataType::Int64, vec![-1]),
                spec("probabilities", DataType::Fp32, vec![-1, 10]),
            ],
        };
        // a rank-1 label output: Triton's dims [1] vs the model's [-1] need
        // `reshape: { shape: [ ] }`, as Triton's own docs write it
        assert!(c.io.check(&sig).is_err());
        let reshaped = TRITON.replace(
            "{ name: \"label\", data_type: TYPE_INT64, dims: [ 1 ] }",
            "{ name: \"label\", data_type: TYPE_INT64, dims: [ 1 ], reshape: { shape: [ ] } }",
        );
        let r = parse(&reshaped, "digits").unwrap();
        r.io.check(&sig).unwrap();
        assert!(r.ignored.iter().any(|i| i.contains("reshape")), "{:?}", r.ignored);
        sig.inputs[0].shape = vec![-1, 65];
        assert!(c.io.check(&sig).unwrap_err().contains("dims [64]"));
    }
}
