//! The `:predict` body: a TF Serving request in row (`instances`) or
//! columnar (`inputs`) format becomes the model's input tensors, and the
//! output tensors become `{"predictions": ...}` or `{"outputs": ...}`.
//!
//! Row format stacks the N instances of each input into one tensor whose
//! first dimension is N, so the instances of an input must share a shape.
//! Outputs are written nested in their shape; NaN and ±infinity are written
//! as the bare tokens `NaN`, `Infinity`, `-Infinity`, as TF Serving does.
//!
//! Decoding is in [`decode`](super::decode); this module holds the decoded
//! request and the answer's encoding.

use serde_json::Value;

use crate::api::error::ApiError;
use crate::tensor::json::{write_nested, NonFinite};
use crate::tensor::{shape_string, Tensor};

/// The only signature an ONNX model has.
pub(super) const SERVING_DEFAULT: &str = "serving_default";

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

/// Writes the response body for `outputs` (in signature order).
pub(super) fn encode_response(format: Format, outputs: &[Tensor], model: &str) -> Result<Vec<u8>, ApiError> {
    // Room for the whole answer at once: growing by doubling would copy it
    // and hold both copies. An element takes at most ~24 bytes of JSON
    // (plus key names per instance); pages never written stay free.
    let elements: usize = outputs.iter().map(|t| t.data.len()).sum();
    let keys: usize = outputs.iter().map(|t| t.name.len() + 4).sum();
    let instances = match format {
        Format::Row { instances } => instances,
        Format::Columnar => 1,
    };
    let mut out = Vec::with_capacity(256 + elements.saturating_mul(24) + instances.saturating_mul(keys + 4));
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
