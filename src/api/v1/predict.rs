//! The `:predict` body: a TF Serving request in row (`instances`) or
//! columnar (`inputs`) format becomes the model's input tensors, and the
//! output tensors become `{"predictions": ...}` or `{"outputs": ...}`.
//!
//! Row format stacks the N instances of each input into one tensor whose
//! first dimension is N, so the instances of an input must share a shape.
//! Outputs are written nested in their shape; NaN and ±infinity are written
//! as the bare tokens `NaN`, `Infinity`, `-Infinity`, as TF Serving does.
//!
//! Unlike V2, the body is parsed into a `serde_json::Value` first: instances
//! must be regrouped per input before any tensor can be decoded.

use std::collections::BTreeMap;

use serde_json::Value;

use super::nonfinite::quote_nonfinite;
use crate::api::error::ApiError;
use crate::runtime::Signature;
use crate::tensor::json::{tensor_from_value_with, value_shape, write_nested, DecodeOptions, NonFinite};
use crate::tensor::{shape_string, Tensor};

/// The only signature an ONNX model has.
pub(super) const SERVING_DEFAULT: &str = "serving_default";

const DECODE: DecodeOptions = DecodeOptions {
    nonfinite_strings: true,
};

/// Which request format was used; the response answers in the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    /// `instances`: N rows, answered as `predictions`.
    Row { instances: usize },
    /// `inputs`: whole tensors, answered as `outputs`.
    Columnar,
}

/// A decoded predict request: input tensors in the signature's order.
pub(super) struct Decoded {
    pub(super) format: Format,
    pub(super) inputs: Vec<Tensor>,
}

/// Parses a predict body and builds the model's inputs. Errors are 400s
/// naming the field, instance or input at fault.
pub(super) fn decode_request(body: &[u8], signature: &Signature, model: &str) -> Result<Decoded, ApiError> {
    let bad = |m: String| ApiError::BadRequest(m);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(bad(
            "request body is empty; expected a JSON object with \"instances\" or \"inputs\"".into(),
        ));
    }
    let text = std::str::from_utf8(body).map_err(|e| bad(format!("request body is not UTF-8: {e}")))?;
    let value: Value = serde_json::from_str(&quote_nonfinite(text))
        .map_err(|e| bad(format!("malformed JSON in request body: {e}")))?;
    let Value::Object(mut request) = value else {
        return Err(bad(
            "request body must be a JSON object with \"instances\" or \"inputs\"".into(),
        ));
    };
    match request.remove("signature_name") {
        None => {}
        // TF Serving reads an empty name as the default signature
        Some(Value::String(s)) if s.is_empty() || s == SERVING_DEFAULT => {}
        Some(Value::String(s)) => {
            return Err(bad(format!(
                "\"signature_name\": model '{model}' has no signature '{s}'; ONNX models have one, \"{SERVING_DEFAULT}\""
            )))
        }
        Some(_) => return Err(bad("\"signature_name\" must be a string".into())),
    }
    let (tensors, format) = match (request.remove("instances"), request.remove("inputs")) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "request has both \"instances\" and \"inputs\"; send one of them".into(),
            ))
        }
        (None, None) => {
            let keys: Vec<&str> = request.keys().map(String::as_str).collect();
            let found = if keys.is_empty() {
                String::new()
            } else {
                format!(" (it has {})", keys.join(", "))
            };
            return Err(bad(format!(
                "request has neither \"instances\" (row format) nor \"inputs\" (columnar format){found}"
            )));
        }
        (Some(instances), None) => {
            let (tensors, n) = row_tensors(instances, signature, model)?;
            (tensors, Format::Row { instances: n })
        }
        (None, Some(inputs)) => (columnar_tensors(inputs, signature, model)?, Format::Columnar),
    };
    let inputs = signature
        .order_inputs(tensors)
        .map_err(|e| bad(format!("model '{model}': {e}")))?;
    Ok(Decoded { format, inputs })
}

fn input_names(signature: &Signature) -> String {
    let names: Vec<&str> = signature.inputs.iter().map(|t| t.name.as_str()).collect();
    names.join(", ")
}

fn unknown_input(signature: &Signature, model: &str, name: &str, field: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "{field}: model '{model}' has no input '{name}' (it takes {})",
        input_names(signature)
    ))
}

/// The single input of a one-input model, for requests that do not name it.
fn single_input<'s>(signature: &'s Signature, model: &str, field: &str) -> Result<&'s str, ApiError> {
    match signature.inputs.as_slice() {
        [only] => Ok(&only.name),
        inputs => Err(ApiError::BadRequest(format!(
            "{field}: model '{model}' has {} inputs ({}); name them in a JSON object",
            inputs.len(),
            input_names(signature)
        ))),
    }
}

fn tensor(
    signature: &Signature,
    model: &str,
    name: &str,
    value: &Value,
    field: &str,
) -> Result<Tensor, ApiError> {
    let i = signature
        .input_index(name)
        .ok_or_else(|| unknown_input(signature, model, name, field))?;
    tensor_from_value_with(name, value, signature.inputs[i].datatype, DECODE)
        .map_err(|e| ApiError::BadRequest(format!("{field}: input '{name}': {e}")))
}

/// Row format: N instances, each the value of the single input or an object
/// of input name → value. Returns the stacked tensors and N.
fn row_tensors(
    instances: Value,
    signature: &Signature,
    model: &str,
) -> Result<(Vec<Tensor>, usize), ApiError> {
    let bad = |m: String| ApiError::BadRequest(m);
    let Value::Array(instances) = instances else {
        return Err(bad(
            "\"instances\" must be a list with one item per instance".into()
        ));
    };
    let n = instances.len();
    if n == 0 {
        return Err(bad("\"instances\" is empty".into()));
    }
    let named = instances[0].is_object();
    if let Some(i) = instances.iter().position(|v| v.is_object() != named) {
        return Err(bad(format!(
            "\"instances\"[{i}] {} an object but \"instances\"[0] {}; all instances must have one form",
            if named { "is not" } else { "is" },
            if named { "is" } else { "is not" },
        )));
    }
    // input name → its value in every instance, in instance order
    let mut columns: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    if named {
        for (i, instance) in instances.into_iter().enumerate() {
            let Value::Object(fields) = instance else {
                unreachable!("every instance is an object, checked above")
            };
            if i > 0 {
                if let Some(name) = columns.keys().find(|name| !fields.contains_key(*name)) {
                    return Err(bad(format!(
                        "\"instances\"[{i}] lacks input '{name}', which \"instances\"[0] has; \
                         every instance must name the same inputs"
                    )));
                }
            }
            for (name, value) in fields {
                if signature.input_index(&name).is_none() {
                    return Err(unknown_input(
                        signature,
                        model,
                        &name,
                        &format!("\"instances\"[{i}]"),
                    ));
                }
                if i > 0 && !columns.contains_key(&name) {
                    return Err(bad(format!(
                        "\"instances\"[{i}] has input '{name}', which \"instances\"[0] lacks; \
                         every instance must name the same inputs"
                    )));
                }
                columns.entry(name).or_default().push(value);
            }
        }
    } else {
        let name = single_input(signature, model, "\"instances\"")?;
        columns.insert(name.to_string(), instances);
    }
    let mut tensors = Vec::with_capacity(columns.len());
    for (name, values) in columns {
        let first = value_shape(&values[0]);
        if let Some((i, shape)) = values
            .iter()
            .map(value_shape)
            .enumerate()
            .find(|(_, shape)| *shape != first)
        {
            return Err(bad(format!(
                "\"instances\": input '{name}' has shape {} in instance {i} but {} in instance 0; \
                 all instances of an input must have the same shape",
                shape_string(&shape),
                shape_string(&first)
            )));
        }
        tensors.push(tensor(
            signature,
            model,
            &name,
            &Value::Array(values),
            "\"instances\"",
        )?);
    }
    Ok((tensors, n))
}

/// Columnar format: one tensor for the single input, or an object of input
/// name → tensor.
fn columnar_tensors(inputs: Value, signature: &Signature, model: &str) -> Result<Vec<Tensor>, ApiError> {
    match inputs {
        Value::Object(map) => map
            .iter()
            .map(|(name, value)| tensor(signature, model, name, value, "\"inputs\""))
            .collect(),
        value => {
            let name = single_input(signature, model, "\"inputs\"")?;
            Ok(vec![tensor(signature, model, name, &value, "\"inputs\"")?])
        }
    }
}

/// Writes the response body for `outputs` (in signature order).
pub(super) fn encode_response(format: Format, outputs: &[Tensor], model: &str) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::with_capacity(256);
    let internal = |e: crate::tensor::json::DecodeError| {
        ApiError::Internal(format!(
            "model '{model}' produced an output that cannot be encoded: {e}"
        ))
    };
    match (format, outputs) {
        (Format::Row { .. }, [only]) => {
            out.extend_from_slice(b"{\"predictions\":");
            write_nested(&mut out, &only.data, &only.shape, 0, NonFinite::Tokens).map_err(internal)?;
        }
        (Format::Columnar, [only]) => {
            out.extend_from_slice(b"{\"outputs\":");
            write_nested(&mut out, &only.data, &only.shape, 0, NonFinite::Tokens).map_err(internal)?;
        }
        (Format::Row { instances }, outputs) => {
            for t in outputs {
                if t.shape.first() != Some(&(instances as i64)) {
                    return Err(ApiError::BadRequest(format!(
                        "model '{model}': output '{}' has shape {}, which does not split into the {instances} \
                         instances; use the columnar format (\"inputs\")",
                        t.name,
                        shape_string(&t.shape)
                    )));
                }
            }
            out.extend_from_slice(b"{\"predictions\":[");
            for i in 0..instances {
                if i > 0 {
                    out.push(b',');
                }
                out.push(b'{');
                for (k, t) in outputs.iter().enumerate() {
                    if k > 0 {
                        out.push(b',');
                    }
                    write_key(&mut out, &t.name);
                    let row = &t.shape[1..];
                    let stride = crate::tensor::element_count(row).unwrap_or(0);
                    write_nested(&mut out, &t.data, row, i * stride, NonFinite::Tokens).map_err(internal)?;
                }
                out.push(b'}');
            }
            out.push(b']');
        }
        (Format::Columnar, outputs) => {
            out.extend_from_slice(b"{\"outputs\":{");
            for (k, t) in outputs.iter().enumerate() {
                if k > 0 {
                    out.push(b',');
                }
                write_key(&mut out, &t.name);
                write_nested(&mut out, &t.data, &t.shape, 0, NonFinite::Tokens).map_err(internal)?;
            }
            out.push(b'}');
        }
    }
    out.push(b'}');
    Ok(out)
}

fn write_key(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(Value::String(name.to_string()).to_string().as_bytes());
    out.push(b':');
}
