//! Decoding a `:predict` body in one pass. The JSON is walked once with
//! serde seeds and every tensor value goes straight into its input's typed
//! buffer (`tensor::json::Shaped`), so a request costs about its body plus
//! its tensors in memory instead of a `serde_json::Value` tree (which takes
//! ten and more times the body). Row-format instances are regrouped per
//! input on the fly: instance i of input `x` is appended to `x`'s buffer,
//! and its shape must equal instance 0's.
//!
//! Errors found while walking are kept in the decoder's context (with the
//! field, instance and input they concern) and reported instead of the
//! JSON parser's own message, which is only used for syntax errors.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::nonfinite::quote_nonfinite;
use super::predict::{Decoded, Format, SERVING_DEFAULT};
use crate::api::error::ApiError;
use crate::runtime::Signature;

mod columns;
mod ctx;
mod rows;

use columns::InputsSeed;
use ctx::{Column, Ctx};
use rows::InstancesSeed;

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
    // a copy only when the body holds bare NaN / Infinity tokens
    let text = quote_nonfinite(text);
    let mut ctx = Ctx {
        signature,
        model,
        columns: signature.inputs.iter().map(|_| Column::default()).collect(),
        error: None,
        // a JSON element takes at least two bytes ("0,")
        max_elements: text.len() / 2,
    };
    let mut de = serde_json::Deserializer::from_str(&text);
    let parsed = RequestSeed { ctx: &mut ctx }
        .deserialize(&mut de)
        .and_then(|r| de.end().map(|()| r));
    let (format, signature_name) = match parsed {
        Ok(r) => r,
        Err(e) => {
            return Err(bad(ctx
                .error
                .unwrap_or_else(|| format!("malformed JSON in request body: {e}"))))
        }
    };
    match signature_name {
        None => {}
        // TF Serving reads an empty name as the default signature
        Some(Ok(s)) if s.is_empty() || s == SERVING_DEFAULT => {}
        Some(Ok(s)) => {
            return Err(bad(format!(
                "\"signature_name\": model '{model}' has no signature '{s}'; ONNX models have one, \"{SERVING_DEFAULT}\""
            )))
        }
        Some(Err(())) => return Err(bad("\"signature_name\" must be a string".into())),
    }
    let tensors = ctx.tensors(format);
    let inputs = signature
        .order_inputs(tensors)
        .map_err(|e| bad(format!("model '{model}': {e}")))?;
    Ok(Decoded { format, inputs })
}

/// The whole body: `{"instances" | "inputs": ..., "signature_name"?: ...}`.
struct RequestSeed<'c, 's> {
    ctx: &'c mut Ctx<'s>,
}

/// What the top level holds: the format, and the signature name (`Err` when
/// it was no string).
type Top = (Format, Option<Result<String, ()>>);

impl<'de> DeserializeSeed<'de> for RequestSeed<'_, '_> {
    type Value = Top;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Top, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RequestSeed<'_, '_> {
    type Value = Top;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a JSON object with \"instances\" or \"inputs\"")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top, A::Error> {
        let mut format = None;
        let mut signature = None;
        let mut others: Vec<String> = Vec::new();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match &*key {
                "signature_name" => signature = Some(map.next_value::<StringOnly>()?.0),
                "instances" | "inputs" if format.is_some() => {
                    return Err(self.ctx.fail(
                        "request has both \"instances\" and \"inputs\" (or one twice); send one of them"
                            .into(),
                    ))
                }
                "instances" => {
                    let instances = map.next_value_seed(InstancesSeed { ctx: &mut *self.ctx })?;
                    format = Some(Format::Row { instances });
                }
                "inputs" => {
                    map.next_value_seed(InputsSeed { ctx: &mut *self.ctx })?;
                    format = Some(Format::Columnar);
                }
                other => {
                    if others.len() < 8 {
                        others.push(other.chars().take(64).collect());
                    }
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        match format {
            Some(format) => Ok((format, signature)),
            None => {
                let found = if others.is_empty() {
                    String::new()
                } else {
                    format!(" (it has {})", others.join(", "))
                };
                Err(self.ctx.fail(format!(
                    "request has neither \"instances\" (row format) nor \"inputs\" (columnar format){found}"
                )))
            }
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Top, A::Error> {
        Err(self.not_an_object())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Top, E> {
        Err(self.not_an_object())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Top, E> {
        Err(self.not_an_object())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Top, E> {
        Err(self.not_an_object())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Top, E> {
        Err(self.not_an_object())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Top, E> {
        Err(self.not_an_object())
    }
    fn visit_unit<E: de::Error>(self) -> Result<Top, E> {
        Err(self.not_an_object())
    }
}

impl RequestSeed<'_, '_> {
    fn not_an_object<E: de::Error>(self) -> E {
        self.ctx
            .fail("request body must be a JSON object with \"instances\" or \"inputs\"".into())
    }
}

/// A string value, or `Err(())` for any other JSON value (skipped).
struct StringOnly(Result<String, ()>);

impl<'de> serde::Deserialize<'de> for StringOnly {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<StringOnly, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StringOnly;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StringOnly, E> {
                Ok(StringOnly(Ok(v.to_string())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StringOnly, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(StringOnly(Err(())))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StringOnly, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(StringOnly(Err(())))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<StringOnly, E> {
                Ok(StringOnly(Err(())))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<StringOnly, E> {
                Ok(StringOnly(Err(())))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<StringOnly, E> {
                Ok(StringOnly(Err(())))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<StringOnly, E> {
                Ok(StringOnly(Err(())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<StringOnly, E> {
                Ok(StringOnly(Err(())))
            }
        }
        d.deserialize_any(V)
    }
}
