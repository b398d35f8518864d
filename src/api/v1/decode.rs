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
use crate::tensor::json::{DecodeError, DecodeOptions, Shaped};
use crate::tensor::{shape_string, Tensor, TensorData};

const DECODE: DecodeOptions = DecodeOptions {
    nonfinite_strings: true,
};

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

/// One input's buffer while decoding.
#[derive(Default)]
struct Column {
    data: Option<TensorData>,
    /// Instance 0's shape (row format), or the tensor's shape (columnar).
    shape: Option<Vec<i64>>,
    /// Instances that had this input so far.
    seen: usize,
}

/// The decoder's state: the signature, each input's buffer, and the first
/// error found in the data.
struct Ctx<'s> {
    signature: &'s Signature,
    model: &'s str,
    columns: Vec<Column>,
    error: Option<String>,
    /// The most elements the body can hold.
    max_elements: usize,
}

impl Ctx<'_> {
    /// Records `message` as the request's error; returns the parser error
    /// that stops the walk.
    fn fail<E: de::Error>(&mut self, message: String) -> E {
        let e = E::custom(&message);
        self.error.get_or_insert(message);
        e
    }

    fn input_names(&self) -> String {
        let names: Vec<&str> = self.signature.inputs.iter().map(|t| t.name.as_str()).collect();
        names.join(", ")
    }

    fn unknown_input<E: de::Error>(&mut self, field: &str, name: &str) -> E {
        let message = format!(
            "{field}: model '{}' has no input '{name}' (it takes {})",
            self.model,
            self.input_names()
        );
        self.fail(message)
    }

    /// The single input of a one-input model, for values that do not name it.
    fn single_input<E: de::Error>(&mut self, field: &str) -> Result<usize, E> {
        match self.signature.inputs.len() {
            1 => Ok(0),
            n => {
                let message = format!(
                    "{field}: model '{}' has {n} inputs ({}); name them in a JSON object",
                    self.model,
                    self.input_names()
                );
                Err(self.fail(message))
            }
        }
    }

    /// Decodes one value of input `i` into its buffer with `feed` (which
    /// hands a [`Shaped`] seed or visitor the value) and returns its shape.
    fn decode_value<E: de::Error>(
        &mut self,
        i: usize,
        field: &str,
        feed: impl FnOnce(Shaped<'_>) -> Result<(), E>,
    ) -> Result<Vec<i64>, E> {
        let dtype = self.signature.inputs[i].datatype;
        // Room for every element the body can hold, reserved once: growing
        // by doubling would copy the buffer and hold both copies at once.
        // Pages never written are never resident, so the unused part of
        // the reservation costs address space, not memory.
        let room = if dtype.fixed_size().is_some() {
            self.max_elements
        } else {
            0
        };
        let column = &mut self.columns[i];
        let data = column
            .data
            .get_or_insert_with(|| TensorData::with_capacity(dtype, room));
        let (mut shape, mut error) = (Vec::new(), None::<DecodeError>);
        let seed = Shaped {
            out: data,
            options: DECODE,
            shape: &mut shape,
            error: &mut error,
        };
        match feed(seed) {
            Ok(()) => Ok(shape),
            Err(e) => match error {
                Some(err) => {
                    let name = &self.signature.inputs[i].name;
                    let message = format!("{field}: input '{name}': {err}");
                    Err(self.fail(message))
                }
                None => Err(e),
            },
        }
    }

    /// Records instance `index`'s shape for input `i`: it must be instance 0's.
    fn instance_shape<E: de::Error>(&mut self, i: usize, index: usize, shape: Vec<i64>) -> Result<(), E> {
        let column = &mut self.columns[i];
        column.seen += 1;
        match &column.shape {
            None => {
                column.shape = Some(shape);
                Ok(())
            }
            Some(first) if *first == shape => Ok(()),
            Some(first) => {
                let message = format!(
                    "\"instances\": input '{}' has shape {} in instance {index} but {} in instance 0; \
                     all instances of an input must have the same shape",
                    self.signature.inputs[i].name,
                    shape_string(&shape),
                    shape_string(first)
                );
                Err(self.fail(message))
            }
        }
    }

    /// The decoded tensors (row format: instances stacked along a new first
    /// dimension).
    fn tensors(&mut self, format: Format) -> Vec<Tensor> {
        let mut tensors = Vec::new();
        for (spec, column) in self.signature.inputs.iter().zip(&mut self.columns) {
            let (Some(data), Some(shape)) = (column.data.take(), column.shape.take()) else {
                continue;
            };
            let shape = match format {
                Format::Row { instances } => std::iter::once(instances as i64).chain(shape).collect(),
                Format::Columnar => shape,
            };
            tensors.push(Tensor {
                name: spec.name.clone(),
                shape,
                data,
            });
        }
        tensors
    }
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

/// `"instances"`: a list of instances; returns how many.
struct InstancesSeed<'c, 's> {
    ctx: &'c mut Ctx<'s>,
}

impl<'de> DeserializeSeed<'de> for InstancesSeed<'_, '_> {
    type Value = usize;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for InstancesSeed<'_, '_> {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a list of instances")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut named = None;
        let mut index = 0;
        loop {
            let seed = InstanceSeed {
                ctx: &mut *self.ctx,
                index,
                named: &mut named,
            };
            if seq.next_element_seed(seed)?.is_none() {
                break;
            }
            index += 1;
        }
        if index == 0 {
            return Err(self.ctx.fail("\"instances\" is empty".into()));
        }
        Ok(index)
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<usize, A::Error> {
        Err(self.not_a_list())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<usize, E> {
        Err(self.not_a_list())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<usize, E> {
        Err(self.not_a_list())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<usize, E> {
        Err(self.not_a_list())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<usize, E> {
        Err(self.not_a_list())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<usize, E> {
        Err(self.not_a_list())
    }
    fn visit_unit<E: de::Error>(self) -> Result<usize, E> {
        Err(self.not_a_list())
    }
}

impl InstancesSeed<'_, '_> {
    fn not_a_list<E: de::Error>(self) -> E {
        self.ctx
            .fail("\"instances\" must be a list with one item per instance".into())
    }
}

/// One instance: an object of input name → value, or the value of the
/// single input. `named` is instance 0's form, which every instance keeps.
struct InstanceSeed<'c, 's, 'n> {
    ctx: &'c mut Ctx<'s>,
    index: usize,
    named: &'n mut Option<bool>,
}

impl<'de> DeserializeSeed<'de> for InstanceSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl InstanceSeed<'_, '_, '_> {
    /// Checks this instance's form against instance 0's.
    fn form<E: de::Error>(&mut self, object: bool) -> Result<(), E> {
        match *self.named {
            None => {
                *self.named = Some(object);
                Ok(())
            }
            Some(named) if named == object => Ok(()),
            Some(named) => {
                let message = format!(
                    "\"instances\"[{}] {} an object but \"instances\"[0] {}; all instances must have one form",
                    self.index,
                    if named { "is not" } else { "is" },
                    if named { "is" } else { "is not" },
                );
                Err(self.ctx.fail(message))
            }
        }
    }

    /// A bare value: instance `index` of the single input.
    fn bare<E: de::Error>(mut self, feed: impl FnOnce(Shaped<'_>) -> Result<(), E>) -> Result<(), E> {
        self.form(false)?;
        let i = self.ctx.single_input("\"instances\"")?;
        let shape = self.ctx.decode_value(i, "\"instances\"", feed)?;
        self.ctx.instance_shape(i, self.index, shape)
    }
}

impl<'de> Visitor<'de> for InstanceSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an instance")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        self.form(true)?;
        let index = self.index;
        let field = format!("\"instances\"[{index}]");
        let mut here = vec![false; self.ctx.columns.len()];
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let Some(i) = self.ctx.signature.input_index(&key) else {
                return Err(self.ctx.unknown_input(&field, &key));
            };
            if here[i] {
                return Err(self.ctx.fail(format!("{field} names input '{key}' twice")));
            }
            if index > 0 && self.ctx.columns[i].seen < index {
                return Err(self.ctx.fail(format!(
                    "{field} has input '{key}', which \"instances\"[0] lacks; every instance must name the same inputs"
                )));
            }
            here[i] = true;
            let shape = self
                .ctx
                .decode_value(i, "\"instances\"", |seed| map.next_value_seed(seed))?;
            self.ctx.instance_shape(i, index, shape)?;
        }
        let lacking = self
            .ctx
            .columns
            .iter()
            .zip(&here)
            .position(|(c, &h)| c.seen > 0 && !h);
        if let Some(i) = lacking {
            let name = self.ctx.signature.inputs[i].name.clone();
            return Err(self.ctx.fail(format!(
                "{field} lacks input '{name}', which \"instances\"[0] has; every instance must name the same inputs"
            )));
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.bare(|s| s.visit_seq(seq))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.bare(|s| s.visit_str(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.bare(|s| s.visit_f64(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.bare(|s| s.visit_i64(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.bare(|s| s.visit_u64(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.bare(|s| s.visit_bool(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.bare(|s| s.visit_unit())
    }
}

/// `"inputs"`: an object of input name → tensor, or the single input's tensor.
struct InputsSeed<'c, 's> {
    ctx: &'c mut Ctx<'s>,
}

impl<'de> DeserializeSeed<'de> for InputsSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl InputsSeed<'_, '_> {
    fn bare<E: de::Error>(self, feed: impl FnOnce(Shaped<'_>) -> Result<(), E>) -> Result<(), E> {
        let i = self.ctx.single_input("\"inputs\"")?;
        let shape = self.ctx.decode_value(i, "\"inputs\"", feed)?;
        self.ctx.columns[i].shape = Some(shape);
        Ok(())
    }
}

impl<'de> Visitor<'de> for InputsSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "inputs")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let Some(i) = self.ctx.signature.input_index(&key) else {
                return Err(self.ctx.unknown_input("\"inputs\"", &key));
            };
            if self.ctx.columns[i].shape.is_some() {
                return Err(self.ctx.fail(format!("\"inputs\" names input '{key}' twice")));
            }
            let shape = self
                .ctx
                .decode_value(i, "\"inputs\"", |seed| map.next_value_seed(seed))?;
            self.ctx.columns[i].shape = Some(shape);
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.bare(|s| s.visit_seq(seq))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.bare(|s| s.visit_str(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.bare(|s| s.visit_f64(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.bare(|s| s.visit_i64(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.bare(|s| s.visit_u64(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.bare(|s| s.visit_bool(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.bare(|s| s.visit_unit())
    }
}
