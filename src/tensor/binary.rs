//! Binary tensor data (Triton's binary tensor data extension): raw
//! little-endian, row-major element bytes without padding.
//!
//! An element's *binary size* is its native width (BOOL one byte, 0 or 1;
//! FP16 two bytes); a BYTES element is a 4-byte little-endian length followed
//! by that many bytes. A request or response *body* is a JSON header of
//! `Inference-Header-Content-Length` bytes followed by the *binary section*:
//! the binary tensors one after another, in the order the JSON lists them.

use half::f16;

use super::{counted, element_count, shape_string, DataType, TensorData};

/// Why binary tensor data or its framing was rejected.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BinaryError {
    #[error("Inference-Header-Content-Length {header} exceeds the body length {body}")]
    HeaderTooLong { header: usize, body: usize },
    #[error("shape {shape} is invalid")]
    BadShape { shape: String },
    #[error("binary_data_size {size} is not a multiple of the {dtype} element size {width}")]
    NotMultiple {
        size: usize,
        dtype: DataType,
        width: usize,
    },
    #[error("binary_data_size {size} holds {} but shape {shape} needs {want}", counted(*got, &format!("{dtype} element")))]
    Count {
        size: usize,
        dtype: DataType,
        got: usize,
        want: usize,
        shape: String,
    },
    #[error("BYTES element {index} runs past the end of its {size}-byte buffer")]
    Truncated { index: usize, size: usize },
    #[error("BOOL element {index} is {value}; expected 0 or 1")]
    BadBool { index: usize, value: u8 },
}

/// Splits a body into its JSON header (the first `header_len` bytes) and
/// the binary section (the rest).
pub fn split(body: &[u8], header_len: usize) -> Result<(&[u8], &[u8]), BinaryError> {
    if header_len > body.len() {
        return Err(BinaryError::HeaderTooLong {
            header: header_len,
            body: body.len(),
        });
    }
    Ok(body.split_at(header_len))
}

/// Decodes one tensor's binary data, checking it holds exactly
/// `product(shape)` elements of `dtype`.
pub fn decode(bytes: &[u8], dtype: DataType, shape: &[i64]) -> Result<TensorData, BinaryError> {
    let want = element_count(shape).ok_or_else(|| BinaryError::BadShape {
        shape: shape_string(shape),
    })?;
    let size = bytes.len();
    let data = match dtype.fixed_size() {
        Some(width) => {
            if !size.is_multiple_of(width) {
                return Err(BinaryError::NotMultiple { size, dtype, width });
            }
            let got = size / width;
            if got != want {
                return Err(BinaryError::Count {
                    size,
                    dtype,
                    got,
                    want,
                    shape: shape_string(shape),
                });
            }
            decode_fixed(bytes, dtype)?
        }
        None => {
            let strings = decode_bytes(bytes)?;
            if strings.len() != want {
                return Err(BinaryError::Count {
                    size,
                    dtype,
                    got: strings.len(),
                    want,
                    shape: shape_string(shape),
                });
            }
            TensorData::Bytes(strings)
        }
    };
    Ok(data)
}

/// Decodes a buffer whose length is already a multiple of the element width.
fn decode_fixed(bytes: &[u8], dtype: DataType) -> Result<TensorData, BinaryError> {
    macro_rules! le {
        ($variant:ident, $t:ty) => {
            TensorData::$variant(
                bytes
                    .chunks_exact(std::mem::size_of::<$t>())
                    .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk of the element width")))
                    .collect(),
            )
        };
    }
    Ok(match dtype {
        DataType::Bool => {
            let mut out = Vec::with_capacity(bytes.len());
            for (index, &value) in bytes.iter().enumerate() {
                match value {
                    0 => out.push(false),
                    1 => out.push(true),
                    _ => return Err(BinaryError::BadBool { index, value }),
                }
            }
            TensorData::Bool(out)
        }
        DataType::Uint8 => TensorData::Uint8(bytes.to_vec()),
        DataType::Int8 => TensorData::Int8(bytes.iter().map(|&b| b as i8).collect()),
        DataType::Uint16 => le!(Uint16, u16),
        DataType::Uint32 => le!(Uint32, u32),
        DataType::Uint64 => le!(Uint64, u64),
        DataType::Int16 => le!(Int16, i16),
        DataType::Int32 => le!(Int32, i32),
        DataType::Int64 => le!(Int64, i64),
        DataType::Fp16 => TensorData::Fp16(
            bytes
                .chunks_exact(2)
                .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
        ),
        DataType::Fp32 => le!(Fp32, f32),
        DataType::Fp64 => le!(Fp64, f64),
        DataType::Bytes => unreachable!("BYTES has no fixed size"),
    })
}

/// Decodes length-prefixed BYTES elements until the buffer is used up.
fn decode_bytes(bytes: &[u8]) -> Result<Vec<Vec<u8>>, BinaryError> {
    let size = bytes.len();
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let index = out.len();
        let truncated = BinaryError::Truncated { index, size };
        let (prefix, tail) = rest.split_first_chunk::<4>().ok_or_else(|| truncated.clone())?;
        let len = u32::from_le_bytes(*prefix) as usize;
        if len > tail.len() {
            return Err(truncated);
        }
        let (element, tail) = tail.split_at(len);
        out.push(element.to_vec());
        rest = tail;
    }
    Ok(out)
}

/// Bytes `data` takes in the binary encoding.
pub fn encoded_len(data: &TensorData) -> usize {
    match (data, data.dtype().fixed_size()) {
        (TensorData::Bytes(v), _) => v.iter().map(|s| 4 + s.len()).sum(),
        (_, Some(width)) => data.len() * width,
        (_, None) => unreachable!("only BYTES has no fixed size"),
    }
}

/// Appends the binary encoding of `data` to `out`.
///
/// BYTES elements longer than `u32::MAX` cannot be framed; the body limit
/// keeps every tensor far below that.
pub fn encode(data: &TensorData, out: &mut Vec<u8>) {
    out.reserve(encoded_len(data));
    macro_rules! le {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match data {
        TensorData::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        TensorData::Uint8(v) => out.extend_from_slice(v),
        TensorData::Int8(v) => out.extend(v.iter().map(|&b| b as u8)),
        TensorData::Uint16(v) => le!(v),
        TensorData::Uint32(v) => le!(v),
        TensorData::Uint64(v) => le!(v),
        TensorData::Int16(v) => le!(v),
        TensorData::Int32(v) => le!(v),
        TensorData::Int64(v) => le!(v),
        TensorData::Fp16(v) => le!(v),
        TensorData::Fp32(v) => le!(v),
        TensorData::Fp64(v) => le!(v),
        TensorData::Bytes(v) => {
            for s in v {
                let len = u32::try_from(s.len()).expect("BYTES element longer than 4 GiB");
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dtype: DataType) -> TensorData {
        match dtype {
            DataType::Bool => TensorData::Bool(vec![true, false, true, true, false, false]),
            DataType::Uint8 => TensorData::Uint8(vec![0, 1, 2, 127, 128, 255]),
            DataType::Uint16 => TensorData::Uint16(vec![0, 1, 256, 4096, 65534, u16::MAX]),
            DataType::Uint32 => TensorData::Uint32(vec![0, 1, 1 << 16, 1 << 24, 7, u32::MAX]),
            DataType::Uint64 => TensorData::Uint64(vec![0, 1, 1 << 40, 1 << 63, 9, u64::MAX]),
            DataType::Int8 => TensorData::Int8(vec![i8::MIN, -1, 0, 1, 100, i8::MAX]),
            DataType::Int16 => TensorData::Int16(vec![i16::MIN, -300, 0, 1, 300, i16::MAX]),
            DataType::Int32 => TensorData::Int32(vec![i32::MIN, -70000, 0, 1, 70000, i32::MAX]),
            DataType::Int64 => TensorData::Int64(vec![i64::MIN, -(1 << 40), 0, 1, 1 << 40, i64::MAX]),
            DataType::Fp16 => TensorData::Fp16(
                [-2.5f32, -0.0, 0.0, 1.0, 65504.0, 0.333]
                    .iter()
                    .map(|&x| f16::from_f32(x))
                    .collect(),
            ),
            DataType::Fp32 => TensorData::Fp32(vec![-1.5, 0.0, 1e-30, 3.25, f32::MAX, f32::INFINITY]),
            DataType::Fp64 => TensorData::Fp64(vec![-1.5, 0.0, 1e-300, 3.25, f64::MAX, f64::NEG_INFINITY]),
            DataType::Bytes => TensorData::Bytes(vec![
                b"".to_vec(),
                b"a".to_vec(),
                "héllo".as_bytes().to_vec(),
                vec![0, 255, 10],
                b"x".repeat(300),
                b"end".to_vec(),
            ]),
        }
    }

    #[test]
    fn every_datatype_round_trips() {
        for dtype in DataType::ALL {
            let data = sample(dtype);
            let mut buf = Vec::new();
            encode(&data, &mut buf);
            assert_eq!(buf.len(), encoded_len(&data), "{dtype}");
            let back = decode(&buf, dtype, &[2, 3]).unwrap_or_else(|e| panic!("{dtype}: {e}"));
            assert_eq!(back, data, "{dtype}");
        }
    }

    #[test]
    fn encoding_is_little_endian_and_native_width() {
        let mut buf = Vec::new();
        encode(&TensorData::Uint32(vec![0x0102_0304]), &mut buf);
        assert_eq!(buf, [4, 3, 2, 1]);
        buf.clear();
        encode(&TensorData::Bool(vec![true, false]), &mut buf);
        assert_eq!(buf, [1, 0]);
        buf.clear();
        encode(&TensorData::Fp16(vec![f16::from_f32(1.0)]), &mut buf);
        assert_eq!(buf, [0x00, 0x3c]);
        buf.clear();
        encode(&TensorData::Fp32(vec![1.0]), &mut buf);
        assert_eq!(buf, [0, 0, 0x80, 0x3f]);
        buf.clear();
        encode(&TensorData::Bytes(vec![b"ab".to_vec(), b"".to_vec()]), &mut buf);
        assert_eq!(buf, [2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0]);
    }

    #[test]
    fn split_checks_the_header_length() {
        let body = b"{}\x01\x02";
        assert_eq!(split(body, 2).unwrap(), (&b"{}"[..], &b"\x01\x02"[..]));
        assert_eq!(split(body, 4).unwrap(), (&body[..], &b""[..]));
        assert_eq!(
            split(body, 5).unwrap_err(),
            BinaryError::HeaderTooLong { header: 5, body: 4 }
        );
    }

    #[test]
    fn size_must_be_a_multiple_of_the_element_size() {
        let err = decode(&[0; 6], DataType::Fp32, &[1, 1]).unwrap_err();
        assert_eq!(
            err,
            BinaryError::NotMultiple {
                size: 6,
                dtype: DataType::Fp32,
                width: 4
            }
        );
        assert!(matches!(
            decode(&[0; 3], DataType::Int16, &[1]).unwrap_err(),
            BinaryError::NotMultiple { .. }
        ));
    }

    #[test]
    fn size_must_match_the_shape() {
        let err = decode(&[0; 8], DataType::Fp32, &[1, 3]).unwrap_err();
        assert_eq!(
            err,
            BinaryError::Count {
                size: 8,
                dtype: DataType::Fp32,
                got: 2,
                want: 3,
                shape: "[1, 3]".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "binary_data_size 8 holds 2 FP32 elements but shape [1, 3] needs 3"
        );
        let one = decode(&[0; 4], DataType::Fp32, &[1, 3]).unwrap_err();
        assert_eq!(
            one.to_string(),
            "binary_data_size 4 holds 1 FP32 element but shape [1, 3] needs 3"
        );
        // BYTES: element count, not byte count, must match
        let mut buf = Vec::new();
        encode(&TensorData::Bytes(vec![b"a".to_vec(), b"b".to_vec()]), &mut buf);
        assert!(matches!(
            decode(&buf, DataType::Bytes, &[3]).unwrap_err(),
            BinaryError::Count { got: 2, want: 3, .. }
        ));
        assert!(matches!(
            decode(&[0; 4], DataType::Uint8, &[-1]).unwrap_err(),
            BinaryError::BadShape { .. }
        ));
    }

    #[test]
    fn bytes_length_prefix_must_stay_inside_the_buffer() {
        // prefix says 5 bytes, only 2 follow
        let err = decode(&[5, 0, 0, 0, b'a', b'b'], DataType::Bytes, &[1]).unwrap_err();
        assert_eq!(err, BinaryError::Truncated { index: 0, size: 6 });
        // second element has a cut-off prefix
        let err = decode(&[1, 0, 0, 0, b'a', 9, 0], DataType::Bytes, &[2]).unwrap_err();
        assert_eq!(err, BinaryError::Truncated { index: 1, size: 7 });
        // a huge prefix does not allocate or overflow
        let err = decode(&[0xff, 0xff, 0xff, 0xff], DataType::Bytes, &[1]).unwrap_err();
        assert_eq!(err, BinaryError::Truncated { index: 0, size: 4 });
    }

    #[test]
    fn bool_bytes_are_zero_or_one() {
        let err = decode(&[1, 2], DataType::Bool, &[2]).unwrap_err();
        assert_eq!(err, BinaryError::BadBool { index: 1, value: 2 });
    }

    #[test]
    fn empty_tensors_are_fine() {
        assert_eq!(
            decode(&[], DataType::Fp32, &[0, 4]).unwrap(),
            TensorData::Fp32(vec![])
        );
        assert_eq!(
            decode(&[], DataType::Bytes, &[0]).unwrap(),
            TensorData::Bytes(vec![])
        );
        let mut buf = Vec::new();
        encode(&TensorData::Bytes(vec![]), &mut buf);
        assert!(buf.is_empty());
    }
}
