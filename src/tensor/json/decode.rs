//! Decoding JSON tensor data: a `data` array (nested in the tensor's shape or
//! flat, row-major) read straight into a typed buffer.
//!
//! Decoding walks the JSON once with a `DeserializeSeed`, so no intermediate
//! `serde_json::Value` tree is built on the request path.

use std::fmt;

use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};

use super::element::{nonfinite, refusal, show_f64, Element};
use crate::tensor::{counted, element_count, shape_string, DataType, TensorData};

/// Why a JSON `data` array could not become a tensor.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("shape {shape} is invalid: a dimension is negative, or the element count overflows")]
    BadShape { shape: String },
    #[error("data holds {} but shape {shape} needs {want}", counted(*got, "element"))]
    Count { got: usize, want: usize, shape: String },
    #[error(
        "data is nested differently from shape {shape}: send it flat, or nested to the shape's full depth"
    )]
    Nesting { shape: String },
    #[error("data must be an array (flat, or nested as shape {shape}), not {found}")]
    NotArray { shape: String, found: &'static str },
    #[error("nested data is not rectangular (its rows differ in length or depth)")]
    Ragged,
    #[error("{0}")]
    Element(String),
}

/// Protocol-specific choices about how JSON scalars are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Read the strings `"NaN"`, `"Infinity"` and `"-Infinity"` as the
    /// non-finite values of FP16/FP32/FP64 elements (their proto3 JSON
    /// spelling). Other element types still reject them.
    pub nonfinite_strings: bool,
}

/// Decodes a JSON `data` value (nested in `shape` or flat) into a buffer of
/// `dtype`, checking that the element count equals `product(shape)`.
pub fn decode(raw: &str, dtype: DataType, shape: &[i64]) -> Result<TensorData, DecodeError> {
    decode_with(raw, dtype, shape, DecodeOptions::default())
}

/// [`decode`] with protocol-specific options.
pub fn decode_with(
    raw: &str,
    dtype: DataType,
    shape: &[i64],
    options: DecodeOptions,
) -> Result<TensorData, DecodeError> {
    let mut reading = Reading::start(dtype, shape, options)?;
    let mut de = serde_json::Deserializer::from_str(raw);
    let result = dispatch::decode_into(&mut reading.data, &mut reading.walk, &mut de);
    if let Some(err) = reading.walk.error.take() {
        return Err(err);
    }
    result.map_err(|e| DecodeError::Element(clean_serde_message(&e.to_string())))?;
    reading.finish()
}

/// One `data` value being read: the buffer, the walk over its nesting, and
/// the element count the shape asks for.
struct Reading<'s> {
    data: TensorData,
    walk: Walk<'s>,
    want: usize,
}

impl<'s> Reading<'s> {
    fn start(dtype: DataType, shape: &'s [i64], options: DecodeOptions) -> Result<Self, DecodeError> {
        let want = element_count(shape).ok_or_else(|| DecodeError::BadShape {
            shape: shape_string(shape),
        })?;
        Ok(Reading {
            data: TensorData::with_capacity(dtype, want.min(1 << 20)),
            walk: Walk {
                shape,
                leaf_depth: None,
                error: None,
                nonfinite_strings: options.nonfinite_strings,
            },
            want,
        })
    }

    /// The buffer, once it holds as many elements as the shape asks for.
    fn finish(self) -> Result<TensorData, DecodeError> {
        let got = self.data.len();
        if got != self.want {
            return Err(DecodeError::Count {
                got,
                want: self.want,
                shape: shape_string(self.walk.shape),
            });
        }
        Ok(self.data)
    }
}

/// Decodes a tensor's `data` while the document around it is being read,
/// its datatype and shape already known: one pass over the JSON instead
/// of keeping the value raw for [`decode`]. The result is what [`decode`]
/// gives for the same value; a failure is only a deserializer error, so a
/// caller that needs [`DecodeError`]'s exact text reads the value again
/// with [`decode`].
pub struct DataSeed<'s> {
    pub dtype: DataType,
    pub shape: &'s [i64],
}

impl<'de> DeserializeSeed<'de> for DataSeed<'_> {
    type Value = TensorData;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<TensorData, D::Error> {
        let mut reading =
            Reading::start(self.dtype, self.shape, DecodeOptions::default()).map_err(de::Error::custom)?;
        dispatch::flatten_into(&mut reading.data, &mut reading.walk, d)?;
        reading.finish().map_err(de::Error::custom)
    }
}

/// serde_json appends " at line L column C"; keep the message, drop positions
/// only when they point into the tensor fragment (which would mislead).
fn clean_serde_message(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Shape bookkeeping while walking nested arrays.
struct Walk<'s> {
    shape: &'s [i64],
    /// Depth of the first scalar seen: 1 means flat data, `rank` nested.
    leaf_depth: Option<usize>,
    error: Option<DecodeError>,
    /// See [`DecodeOptions::nonfinite_strings`].
    nonfinite_strings: bool,
}

impl Walk<'_> {
    fn nesting_error(&mut self) -> String {
        let shape = shape_string(self.shape);
        self.fail(DecodeError::Nesting { shape })
    }

    /// Keeps the first error (the one to report) and returns its text for
    /// serde, which stops the walk.
    fn fail(&mut self, err: DecodeError) -> String {
        let text = err.to_string();
        self.error.get_or_insert(err);
        text
    }

    /// A value that is not an array where the data itself must be one.
    fn not_array(&mut self, found: &'static str) -> String {
        let shape = shape_string(self.shape);
        self.fail(DecodeError::NotArray { shape, found })
    }

    /// Called for every scalar at `depth` (0 = the data value itself).
    fn leaf(&mut self, depth: usize) -> Result<(), String> {
        let rank = self.shape.len();
        match self.leaf_depth {
            None if depth == 0 && rank > 0 => Err(self.not_array("a single value")),
            None => {
                let ok = depth == 1 || depth == rank || (rank == 0 && depth == 0);
                if !ok {
                    return Err(self.nesting_error());
                }
                self.leaf_depth = Some(depth);
                Ok(())
            }
            Some(d) if d == depth => Ok(()),
            Some(_) => Err(self.nesting_error()),
        }
    }

    /// Called when an array at `depth` ends with `len` items.
    fn array_end(&mut self, depth: usize, len: usize) -> Result<(), String> {
        let nested = self.leaf_depth.is_some_and(|d| d == self.shape.len() && d > 1);
        if nested && self.shape.get(depth).is_some_and(|&d| d as usize != len) {
            return Err(self.nesting_error());
        }
        Ok(())
    }
}

/// Seed that appends every scalar under one JSON value to `out`.
struct Flatten<'a, 's, T> {
    out: &'a mut Vec<T>,
    walk: &'a mut Walk<'s>,
    depth: usize,
}

impl<'a, 's, T: Element> Flatten<'a, 's, T> {
    fn push<E: de::Error>(
        self,
        v: Option<T>,
        shown: fmt::Arguments<'_>,
        finite_number: bool,
    ) -> Result<(), E> {
        self.walk.leaf(self.depth).map_err(E::custom)?;
        match v {
            Some(v) => {
                self.out.push(v);
                Ok(())
            }
            None => Err(E::custom(refusal::<T>(shown, finite_number))),
        }
    }
}

impl<'de, T: Element> DeserializeSeed<'de> for Flatten<'_, '_, T> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: Element> Visitor<'de> for Flatten<'_, '_, T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of {}", T::WHAT)
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
        if self.walk.nonfinite_strings {
            if let Some(x) = nonfinite(v) {
                return self.push(T::from_f64(x), format_args!("{v}"), false);
            }
        }
        let shown = if v.len() > 32 {
            &v[..v.floor_char_boundary(32)]
        } else {
            v
        };
        self.push(None, format_args!("{shown:?}"), false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.push(None, format_args!("null"), false)
    }
    fn visit_map<A: de::MapAccess<'de>>(self, _map: A) -> Result<(), A::Error> {
        if self.depth == 0 {
            return Err(de::Error::custom(self.walk.not_array("an object")));
        }
        // the text V1's walker gives for the same element
        Err(de::Error::custom(format!(
            "an object is not a valid {} element",
            T::WHAT
        )))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let depth = self.depth + 1;
        let mut len = 0usize;
        loop {
            let seed = Flatten {
                out: &mut *self.out,
                walk: &mut *self.walk,
                depth,
            };
            if seq.next_element_seed(seed)?.is_none() {
                break;
            }
            len += 1;
        }
        self.walk.array_end(self.depth, len).map_err(de::Error::custom)
    }
}

mod dispatch {
    use super::*;

    /// Reads one whole `data` value (and nothing after it) into `data`.
    pub(super) fn decode_into(
        data: &mut TensorData,
        walk: &mut Walk<'_>,
        de: &mut serde_json::Deserializer<serde_json::de::StrRead<'_>>,
    ) -> Result<(), serde_json::Error> {
        flatten_into(data, walk, &mut *de)?;
        de.end()
    }

    /// Appends every scalar of the value `d` holds to `data`.
    pub(super) fn flatten_into<'de, D: de::Deserializer<'de>>(
        data: &mut TensorData,
        walk: &mut Walk<'_>,
        d: D,
    ) -> Result<(), D::Error> {
        macro_rules! go {
            ($v:expr) => {
                Flatten {
                    out: $v,
                    walk,
                    depth: 0,
                }
                .deserialize(d)
            };
        }
        match data {
            TensorData::Bool(v) => go!(v),
            TensorData::Uint8(v) => go!(v),
            TensorData::Uint16(v) => go!(v),
            TensorData::Uint32(v) => go!(v),
            TensorData::Uint64(v) => go!(v),
            TensorData::Int8(v) => go!(v),
            TensorData::Int16(v) => go!(v),
            TensorData::Int32(v) => go!(v),
            TensorData::Int64(v) => go!(v),
            TensorData::Fp16(v) => go!(v),
            TensorData::Fp32(v) => go!(v),
            TensorData::Fp64(v) => go!(v),
            TensorData::Bytes(v) => go!(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;
    #[test]
    fn flat_and_nested_decode_the_same() {
        let flat = decode("[1, 2, 3, 4, 5, 6]", DataType::Fp32, &[2, 3]).unwrap();
        let nested = decode("[[1, 2, 3], [4, 5, 6]]", DataType::Fp32, &[2, 3]).unwrap();
        assert_eq!(flat, nested);
        assert_eq!(flat, TensorData::Fp32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
    }

    #[test]
    fn nested_rows_must_match_the_shape() {
        let err = decode("[[1, 2], [3, 4, 5, 6]]", DataType::Fp32, &[2, 3]).unwrap_err();
        assert!(matches!(err, DecodeError::Nesting { .. }), "{err:?}");
        let err = decode("[[1, 2, 3], 4]", DataType::Fp32, &[2, 3]).unwrap_err();
        assert!(matches!(err, DecodeError::Nesting { .. }), "{err:?}");
    }

    #[test]
    fn data_that_is_not_an_array_says_so() {
        for (raw, found) in [
            ("5", "a single value"),
            ("\"x\"", "a single value"),
            ("true", "a single value"),
            ("{\"a\": 1}", "an object"),
        ] {
            let err = decode(raw, DataType::Fp32, &[1, 2]).unwrap_err();
            assert_eq!(
                err,
                DecodeError::NotArray {
                    shape: "[1, 2]".into(),
                    found
                },
                "{raw}"
            );
        }
        assert_eq!(
            decode("[1, {\"a\": 1}]", DataType::Fp32, &[2])
                .unwrap_err()
                .to_string(),
            "an object is not a valid FP32 element"
        );
        // a scalar tensor is a single value
        assert_eq!(
            decode("5", DataType::Fp32, &[]).unwrap(),
            TensorData::Fp32(vec![5.0])
        );
    }

    #[test]
    fn count_must_equal_product_of_shape() {
        let one = decode("[1]", DataType::Fp32, &[1, 2]).unwrap_err().to_string();
        assert_eq!(one, "data holds 1 element but shape [1, 2] needs 2");
        let err = decode("[1, 2, 3]", DataType::Fp32, &[1, 4]).unwrap_err();
        assert_eq!(
            err,
            DecodeError::Count {
                got: 3,
                want: 4,
                shape: "[1, 4]".into()
            }
        );
    }

    #[test]
    fn element_types_are_checked() {
        assert!(decode("[1.5]", DataType::Int64, &[1]).is_err());
        assert!(decode("[\"a\"]", DataType::Fp32, &[1]).is_err());
        assert!(decode("[300]", DataType::Uint8, &[1]).is_err());
        assert!(decode("[-1]", DataType::Uint32, &[1]).is_err());
        assert_eq!(
            decode("[true, 0]", DataType::Bool, &[2]).unwrap(),
            TensorData::Bool(vec![true, false])
        );
        assert_eq!(
            decode("[\"hi\"]", DataType::Bytes, &[1]).unwrap(),
            TensorData::Bytes(vec![b"hi".to_vec()])
        );
    }

    #[test]
    fn scalars_and_negative_shapes() {
        assert_eq!(
            decode("7", DataType::Int32, &[]).unwrap(),
            TensorData::Int32(vec![7])
        );
        assert!(matches!(
            decode("[1]", DataType::Int32, &[-1]).unwrap_err(),
            DecodeError::BadShape { .. }
        ));
    }

    #[test]
    fn nonfinite_strings_are_read_only_when_asked_and_only_for_floats() {
        let lenient = DecodeOptions {
            nonfinite_strings: true,
        };
        let raw = r#"["NaN", "Infinity", "-Infinity", 1.5]"#;
        assert!(decode(raw, DataType::Fp32, &[4]).is_err(), "strict by default");
        match decode_with(raw, DataType::Fp32, &[4], lenient).unwrap() {
            TensorData::Fp32(v) => {
                assert!(v[0].is_nan());
                assert_eq!(&v[1..], &[f32::INFINITY, f32::NEG_INFINITY, 1.5]);
            }
            other => panic!("{other:?}"),
        }
        match decode_with(raw, DataType::Fp64, &[4], lenient).unwrap() {
            TensorData::Fp64(v) => assert!(v[0].is_nan() && v[1] == f64::INFINITY),
            other => panic!("{other:?}"),
        }
        match decode_with(r#"["-Infinity"]"#, DataType::Fp16, &[1], lenient).unwrap() {
            TensorData::Fp16(v) => assert_eq!(v[0], f16::NEG_INFINITY),
            other => panic!("{other:?}"),
        }
        let err = decode_with(r#"["NaN"]"#, DataType::Int32, &[1], lenient).unwrap_err();
        assert_eq!(err.to_string(), "element NaN is not a valid INT32");
        assert!(decode_with(r#"["nan"]"#, DataType::Fp32, &[1], lenient).is_err());
        // BYTES keeps strings as they are
        assert_eq!(
            decode_with(r#"["NaN"]"#, DataType::Bytes, &[1], lenient).unwrap(),
            TensorData::Bytes(vec![b"NaN".to_vec()])
        );
    }

    #[test]
    fn the_seed_decodes_what_decode_does_and_refuses_what_it_refuses() {
        let seeded = |raw: &str, dtype, shape: &[i64]| {
            let mut de = serde_json::Deserializer::from_str(raw);
            DataSeed { dtype, shape }.deserialize(&mut de).ok()
        };
        for (raw, dtype, shape) in [
            ("[[1, 2], [3, 4]]", DataType::Fp32, &[2, 2][..]),
            ("[1, 2, 3, 4]", DataType::Int64, &[2, 2][..]),
            ("[true, false]", DataType::Bool, &[2][..]),
            ("[\"a\", \"b\\u00e9\"]", DataType::Bytes, &[2][..]),
            ("7", DataType::Int32, &[][..]),
            ("[1, 2, 3]", DataType::Fp32, &[2, 2][..]),
            ("[[1, 2], [3]]", DataType::Fp32, &[2, 2][..]),
            ("[300]", DataType::Uint8, &[1][..]),
            ("null", DataType::Fp32, &[][..]),
            ("5", DataType::Fp32, &[1][..]),
            ("[1]", DataType::Fp32, &[-1][..]),
        ] {
            assert_eq!(seeded(raw, dtype, shape), decode(raw, dtype, shape).ok(), "{raw}");
        }
    }

    #[test]
    fn serde_json_refuses_overflowing_literals() {
        // Why non-finite tokens are not rewritten to 1e999: serde_json
        // rejects numbers that overflow f64 instead of reading infinity.
        assert!(serde_json::from_str::<f64>("1e999").is_err());
    }
}
