//! Encoding tensor buffers as JSON: flat arrays (V2) or arrays nested in the
//! tensor's shape (V1), with a choice for NaN and ±infinity.

use half::f16;
use serde::ser::{Serialize, SerializeSeq, Serializer};

use super::decode::DecodeError;
use crate::tensor::{element_count, shape_string, TensorData};

/// Serializes a buffer as a flat JSON array (FP16 as numbers, BYTES as
/// strings, lossy UTF-8; non-finite floats as `null`, as serde_json does).
pub struct FlatJson<'a>(pub &'a TensorData);

impl Serialize for FlatJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            TensorData::Fp16(v) => {
                let mut seq = s.serialize_seq(Some(v.len()))?;
                for x in v {
                    seq.serialize_element(&x.to_f32())?;
                }
                seq.end()
            }
            TensorData::Bytes(v) => {
                let mut seq = s.serialize_seq(Some(v.len()))?;
                for x in v {
                    seq.serialize_element(&String::from_utf8_lossy(x))?;
                }
                seq.end()
            }
            TensorData::Bool(v) => v.serialize(s),
            TensorData::Uint8(v) => v.serialize(s),
            TensorData::Uint16(v) => v.serialize(s),
            TensorData::Uint32(v) => v.serialize(s),
            TensorData::Uint64(v) => v.serialize(s),
            TensorData::Int8(v) => v.serialize(s),
            TensorData::Int16(v) => v.serialize(s),
            TensorData::Int32(v) => v.serialize(s),
            TensorData::Int64(v) => v.serialize(s),
            TensorData::Fp32(v) => v.serialize(s),
            TensorData::Fp64(v) => v.serialize(s),
        }
    }
}

/// How [`write_nested`] writes NaN and ±infinity, which JSON cannot express.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonFinite {
    /// `null`, as serde_json does.
    Null,
    /// The bare tokens `NaN`, `Infinity`, `-Infinity`, as TF Serving (and
    /// JavaScript, Python's `json`, proto3 parsers) read them.
    Tokens,
}

/// One element written as JSON.
trait WriteElement {
    fn write(&self, out: &mut Vec<u8>, nonfinite: NonFinite);
}

/// Appends a JSON scalar; serialising a scalar into a `Vec` cannot fail.
fn put<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    serde_json::to_writer(out, v).expect("a JSON scalar serialises into a Vec");
}

macro_rules! plain_element {
    ($($t:ty),*) => {$(
        impl WriteElement for $t {
            fn write(&self, out: &mut Vec<u8>, _: NonFinite) {
                put(out, self);
            }
        }
    )*};
}
plain_element!(bool, u8, u16, u32, u64, i8, i16, i32, i64);

macro_rules! float_write {
    ($($t:ty),*) => {$(
        impl WriteElement for $t {
            fn write(&self, out: &mut Vec<u8>, nonfinite: NonFinite) {
                if self.is_finite() || nonfinite == NonFinite::Null {
                    put(out, self);
                } else if self.is_nan() {
                    out.extend_from_slice(b"NaN");
                } else if *self > 0.0 {
                    out.extend_from_slice(b"Infinity");
                } else {
                    out.extend_from_slice(b"-Infinity");
                }
            }
        }
    )*};
}
float_write!(f32, f64);

impl WriteElement for f16 {
    fn write(&self, out: &mut Vec<u8>, nonfinite: NonFinite) {
        self.to_f32().write(out, nonfinite);
    }
}

impl WriteElement for Vec<u8> {
    fn write(&self, out: &mut Vec<u8>, _: NonFinite) {
        put(out, &String::from_utf8_lossy(self));
    }
}

/// Appends the `product(shape)` elements of `data` that start at element
/// `start`, as JSON arrays nested in `shape` (a bare scalar for `[]`).
/// Fails when `data` holds too few elements or a dimension is negative.
pub fn write_nested(
    out: &mut Vec<u8>,
    data: &TensorData,
    shape: &[i64],
    start: usize,
    nonfinite: NonFinite,
) -> Result<(), DecodeError> {
    let count = element_count(shape).ok_or_else(|| DecodeError::BadShape {
        shape: shape_string(shape),
    })?;
    let len = data.len();
    if start.checked_add(count).is_none_or(|end| end > len) {
        return Err(DecodeError::Count {
            got: len.saturating_sub(start),
            want: count,
            shape: shape_string(shape),
        });
    }
    fn nested<T: WriteElement>(out: &mut Vec<u8>, v: &[T], shape: &[i64], nonfinite: NonFinite) {
        match shape.split_first() {
            None => v[0].write(out, nonfinite),
            Some((&dim, rest)) => {
                // element_count(shape) succeeded, so every dimension is >= 0.
                let stride = element_count(rest).unwrap_or(0);
                out.push(b'[');
                for i in 0..dim as usize {
                    if i > 0 {
                        out.push(b',');
                    }
                    nested(out, &v[i * stride..(i + 1) * stride], rest, nonfinite);
                }
                out.push(b']');
            }
        }
    }
    let range = start..start + count;
    match data {
        TensorData::Bool(v) => nested(out, &v[range], shape, nonfinite),
        TensorData::Uint8(v) => nested(out, &v[range], shape, nonfinite),
        TensorData::Uint16(v) => nested(out, &v[range], shape, nonfinite),
        TensorData::Uint32(v) => nested(out, &v[range], shape, nonfinite),
        TensorData::Uint64(v) => nested(out, &v[range], shape, nonfinite),
        TensorData::Int8(v) => nested(out, &v[range], shape, nonfinite),
        TensorData::Int16(v) => nested(out, &v[range], shape, nonfinite),
        TensorData::Int32(v) => nested(out, &v[range], shape, nonfinite),
        TensorData::Int64(v) => nested(out, &v[range], shape, nonfinite),
        TensorData::Fp16(v) => nested(out, &v[range], shape, nonfinite),
        TensorData::Fp32(v) => nested(out, &v[range], shape, nonfinite),
        TensorData::Fp64(v) => nested(out, &v[range], shape, nonfinite),
        TensorData::Bytes(v) => nested(out, &v[range], shape, nonfinite),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn encodes_flat() {
        let s = serde_json::to_string(&FlatJson(&TensorData::Fp16(vec![f16::from_f32(1.5)]))).unwrap();
        assert_eq!(s, "[1.5]");
    }

    fn nested_string(data: &TensorData, shape: &[i64], start: usize, nf: NonFinite) -> String {
        let mut out = Vec::new();
        write_nested(&mut out, data, shape, start, nf).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn writes_nested_in_the_shape() {
        let d = TensorData::Fp32(vec![1.0, 2.5, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(
            nested_string(&d, &[2, 3], 0, NonFinite::Null),
            "[[1.0,2.5,3.0],[4.0,5.0,6.0]]"
        );
        assert_eq!(nested_string(&d, &[3], 3, NonFinite::Null), "[4.0,5.0,6.0]");
        assert_eq!(nested_string(&d, &[], 1, NonFinite::Null), "2.5");
        assert_eq!(nested_string(&d, &[2, 0], 0, NonFinite::Null), "[[],[]]");
        let i = TensorData::Int64(vec![7, -1]);
        assert_eq!(nested_string(&i, &[2, 1], 0, NonFinite::Null), "[[7],[-1]]");
        let b = TensorData::Bytes(vec![b"a\"".to_vec()]);
        assert_eq!(nested_string(&b, &[1], 0, NonFinite::Null), r#"["a\""]"#);
        let mut out = Vec::new();
        assert!(write_nested(&mut out, &d, &[2, 3], 1, NonFinite::Null).is_err());
        assert!(write_nested(&mut out, &d, &[-1, 3], 0, NonFinite::Null).is_err());
    }

    #[test]
    fn nonfinite_floats_are_null_or_tokens() {
        let d = TensorData::Fp64(vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.5]);
        assert_eq!(
            nested_string(&d, &[4], 0, NonFinite::Null),
            "[null,null,null,0.5]"
        );
        assert_eq!(
            nested_string(&d, &[4], 0, NonFinite::Tokens),
            "[NaN,Infinity,-Infinity,0.5]"
        );
        let h = TensorData::Fp16(vec![f16::NAN]);
        assert_eq!(nested_string(&h, &[1], 0, NonFinite::Tokens), "[NaN]");
    }
}
