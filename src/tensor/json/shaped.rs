//! Decoding a JSON value whose *shape is its nesting* (`[[1, 2, 3]]` is
//! `[1, 3]`, a scalar is `[]`): V1 tensors and samples. Elements go straight
//! into a typed buffer while the walk records each level's length and
//! checks that the value is rectangular (every row of a level as long as
//! the first, every element at the same depth), so no `serde_json::Value`
//! tree is built for request data.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::decode::{DecodeError, DecodeOptions};
use super::element::{nonfinite, refusal, show_f64, Element};
use crate::tensor::{element_count, DataType, Tensor, TensorData};

/// A seed (and visitor) that appends one JSON value's elements to `out` and
/// records its shape. On failure, `error` holds the decoding error when the
/// value (not the JSON syntax) was at fault.
pub struct Shaped<'a> {
    pub out: &'a mut TensorData,
    pub options: DecodeOptions,
    /// The value's shape, set when it decoded.
    pub shape: &'a mut Vec<i64>,
    pub error: &'a mut Option<DecodeError>,
}

/// Builds a tensor from a JSON value, its shape taken from the nesting
/// (`[[1, 2, 3]]` → `[1, 3]`). Used for samples.
pub fn tensor_from_value(
    name: &str,
    value: &serde_json::Value,
    dtype: DataType,
) -> Result<Tensor, DecodeError> {
    tensor_from_value_with(name, value, dtype, DecodeOptions::default())
}

/// [`tensor_from_value`] with protocol-specific options.
pub fn tensor_from_value_with(
    name: &str,
    value: &serde_json::Value,
    dtype: DataType,
    options: DecodeOptions,
) -> Result<Tensor, DecodeError> {
    let mut data = TensorData::with_capacity(dtype, 0);
    let (mut shape, mut error) = (Vec::new(), None);
    let seed = Shaped {
        out: &mut data,
        options,
        shape: &mut shape,
        error: &mut error,
    };
    match seed.deserialize(value) {
        Ok(()) => Ok(Tensor {
            name: name.to_string(),
            shape,
            data,
        }),
        Err(e) => Err(error.unwrap_or_else(|| DecodeError::Element(e.to_string()))),
    }
}

/// The levels seen so far.
struct Rect {
    /// Length of the arrays at each depth (the first one seen).
    dims: Vec<Option<usize>>,
    /// Depth of the elements (0 for a scalar).
    leaf: Option<usize>,
    /// Deepest array seen.
    deepest_array: Option<usize>,
    error: Option<DecodeError>,
    nonfinite_strings: bool,
}

impl Rect {
    fn fail(&mut self, e: DecodeError) -> String {
        let text = e.to_string();
        self.error.get_or_insert(e);
        text
    }

    fn leaf(&mut self, depth: usize) -> Result<(), String> {
        let arrays_below = self.deepest_array.is_some_and(|a| a >= depth);
        if arrays_below || self.leaf.is_some_and(|l| l != depth) {
            return Err(self.fail(DecodeError::Ragged));
        }
        self.leaf = Some(depth);
        Ok(())
    }

    fn array_start(&mut self, depth: usize) -> Result<(), String> {
        if self.leaf.is_some_and(|l| depth >= l) {
            return Err(self.fail(DecodeError::Ragged));
        }
        self.deepest_array = Some(self.deepest_array.map_or(depth, |a| a.max(depth)));
        Ok(())
    }

    fn array_end(&mut self, depth: usize, len: usize) -> Result<(), String> {
        if self.dims.len() <= depth {
            self.dims.resize(depth + 1, None);
        }
        match self.dims[depth] {
            None => self.dims[depth] = Some(len),
            Some(l) if l == len => {}
            Some(_) => return Err(self.fail(DecodeError::Ragged)),
        }
        Ok(())
    }

    fn shape(&self) -> Vec<i64> {
        let rank = self.leaf.unwrap_or(self.dims.len()).min(self.dims.len());
        self.dims[..rank].iter().map(|d| d.unwrap_or(0) as i64).collect()
    }
}

/// Appends the elements under one JSON value at `depth` to `out`.
struct Walker<'a, T> {
    out: &'a mut Vec<T>,
    rect: &'a mut Rect,
    depth: usize,
}

impl<T: Element> Walker<'_, T> {
    fn push<E: de::Error>(
        self,
        v: Option<T>,
        shown: fmt::Arguments<'_>,
        finite_number: bool,
    ) -> Result<(), E> {
        self.rect.leaf(self.depth).map_err(E::custom)?;
        match v {
            Some(v) => {
                self.out.push(v);
                Ok(())
            }
            None => {
                let message = refusal::<T>(shown, finite_number);
                Err(E::custom(self.rect.fail(DecodeError::Element(message))))
            }
        }
    }
}

impl<'de, T: Element> DeserializeSeed<'de> for Walker<'_, T> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: Element> Visitor<'de> for Walker<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a (nested) array of {}", T::WHAT)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.push(T::from_bool(v), format_args!("{v}"), false)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.push(T::from_i64(v), format_args!("{v}"), true)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.push(T::from_u64(v), format_args!("{v}"), true)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        // the refusal's text only when refused: formatting every accepted
        // number would cost an allocation per element
        match T::from_f64(v) {
            Some(x) => self.push(Some(x), format_args!(""), true),
            None => self.push(None, format_args!("{}", show_f64(v)), v.is_finite()),
        }
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        if let Some(x) = T::from_str(v) {
            return self.push(Some(x), format_args!(""), false);
        }
        if self.rect.nonfinite_strings {
            if let Some(x) = nonfinite(v) {
                return self.push(T::from_f64(x), format_args!("{v}"), false);
            }
        }
        let shown = &v[..v.floor_char_boundary(32)];
        self.push(None, format_args!("{shown:?}"), false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.push(None, format_args!("null"), false)
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        let e = DecodeError::Element(format!("an object is not a valid {} element", T::WHAT));
        Err(de::Error::custom(self.rect.fail(e)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.rect.array_start(self.depth).map_err(de::Error::custom)?;
        let mut len = 0usize;
        loop {
            let seed = Walker {
                out: &mut *self.out,
                rect: &mut *self.rect,
                depth: self.depth + 1,
            };
            if seq.next_element_seed(seed)?.is_none() {
                break;
            }
            len += 1;
        }
        self.rect.array_end(self.depth, len).map_err(de::Error::custom)
    }
}

/// Runs `$call` with a walker `$w` over the buffer's element type.
macro_rules! walk {
    ($self:ident, $w:ident => $call:expr) => {{
        let mut rect = Rect {
            dims: Vec::new(),
            leaf: None,
            deepest_array: None,
            error: None,
            nonfinite_strings: $self.options.nonfinite_strings,
        };
        let before = $self.out.len();
        let result = match &mut *$self.out {
            TensorData::Bool(v) => walk!(@go v, rect, $w => $call),
            TensorData::Uint8(v) => walk!(@go v, rect, $w => $call),
            TensorData::Uint16(v) => walk!(@go v, rect, $w => $call),
            TensorData::Uint32(v) => walk!(@go v, rect, $w => $call),
            TensorData::Uint64(v) => walk!(@go v, rect, $w => $call),
            TensorData::Int8(v) => walk!(@go v, rect, $w => $call),
            TensorData::Int16(v) => walk!(@go v, rect, $w => $call),
            TensorData::Int32(v) => walk!(@go v, rect, $w => $call),
            TensorData::Int64(v) => walk!(@go v, rect, $w => $call),
            TensorData::Fp16(v) => walk!(@go v, rect, $w => $call),
            TensorData::Fp32(v) => walk!(@go v, rect, $w => $call),
            TensorData::Fp64(v) => walk!(@go v, rect, $w => $call),
            TensorData::Bytes(v) => walk!(@go v, rect, $w => $call),
        };
        $self.finish(rect, before, result)
    }};
    (@go $v:ident, $rect:ident, $w:ident => $call:expr) => {{
        let $w = Walker {
            out: $v,
            rect: &mut $rect,
            depth: 0,
        };
        $call
    }};
}

impl Shaped<'_> {
    fn finish<E: de::Error>(self, rect: Rect, before: usize, result: Result<(), E>) -> Result<(), E> {
        if let Err(e) = result {
            *self.error = rect.error;
            return Err(e);
        }
        let shape = rect.shape();
        // rectangular by construction; checked once more against the count
        if element_count(&shape) != Some(self.out.len() - before) {
            *self.error = Some(DecodeError::Ragged);
            return Err(E::custom(DecodeError::Ragged));
        }
        *self.shape = shape;
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Shaped<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Shaped<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a tensor value (a number, string, boolean or nested array)")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        walk!(self, w => w.visit_bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        walk!(self, w => w.visit_i64(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        walk!(self, w => w.visit_u64(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        walk!(self, w => w.visit_f64(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        walk!(self, w => w.visit_str(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        walk!(self, w => w.visit_unit())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        walk!(self, w => w.visit_seq(seq))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        let e = DecodeError::Element("an object is not a tensor value".into());
        let text = e.to_string();
        *self.error = Some(e);
        Err(de::Error::custom(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shaped(value: serde_json::Value, dtype: DataType) -> Result<(Vec<i64>, TensorData), DecodeError> {
        tensor_from_value_with("x", &value, dtype, DecodeOptions::default()).map(|t| (t.shape, t.data))
    }

    #[test]
    fn shapes_come_from_the_nesting() {
        assert_eq!(
            shaped(json!([[1, 2, 3], [4, 5, 6]]), DataType::Int32).unwrap(),
            (vec![2, 3], TensorData::Int32(vec![1, 2, 3, 4, 5, 6]))
        );
        assert_eq!(
            shaped(json!(7), DataType::Fp32).unwrap(),
            (vec![], TensorData::Fp32(vec![7.0]))
        );
        assert_eq!(shaped(json!([]), DataType::Fp32).unwrap().0, vec![0]);
        assert_eq!(shaped(json!([[], []]), DataType::Fp32).unwrap().0, vec![2, 0]);
        assert_eq!(
            shaped(json!([[["a"]]]), DataType::Bytes).unwrap().0,
            vec![1, 1, 1]
        );
    }

    #[test]
    fn ragged_values_are_refused() {
        for v in [
            json!([[1, 2], [3]]),
            json!([[1, 2], 3]),
            json!([1, [2]]),
            json!([[1], []]),
            json!([[], [1]]),
            json!([[[]], [1]]),
        ] {
            assert_eq!(
                shaped(v.clone(), DataType::Fp32).unwrap_err(),
                DecodeError::Ragged,
                "{v}"
            );
        }
        assert!(matches!(
            shaped(json!({"a": 1}), DataType::Fp32),
            Err(DecodeError::Element(_))
        ));
        let e = shaped(json!([1, 1e39]), DataType::Fp32).unwrap_err();
        assert_eq!(
            e,
            DecodeError::Element("element 1e39 is out of the range of FP32".into())
        );
    }

    #[test]
    fn a_seed_decodes_from_the_text_without_a_value_tree() {
        let mut data = TensorData::with_capacity(DataType::Fp64, 0);
        let (mut shape, mut error) = (Vec::new(), None);
        let mut de = serde_json::Deserializer::from_str("[[1.5, \"NaN\"]]");
        let seed = Shaped {
            out: &mut data,
            options: DecodeOptions {
                nonfinite_strings: true,
            },
            shape: &mut shape,
            error: &mut error,
        };
        seed.deserialize(&mut de).unwrap();
        assert_eq!(shape, vec![1, 2]);
        match data {
            TensorData::Fp64(v) => assert!(v[0] == 1.5 && v[1].is_nan()),
            other => panic!("{other:?}"),
        }
    }
}
