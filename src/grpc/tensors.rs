//! Tensors on the gRPC wire. An input arrives either as *typed contents*
//! (`InferTensorContents`, one repeated field per element family) or as
//! *raw contents* (one `raw_input_contents` entry per input: little-endian,
//! row-major, BYTES with 4-byte length prefixes; what `tritonclient.grpc`
//! sends). Outputs go back the same way the request came: raw when it sent
//! raw inputs (or when an output has no typed field, FP16), typed otherwise.
//!
//! Typed vectors move into the tensor without a copy where the element
//! types agree (FP32, FP64, INT32, INT64, UINT32, UINT64, BOOL, BYTES); raw
//! contents are read once, straight from the received buffer, by the same
//! decoder as Triton's binary tensor data over HTTP.

use bytes::Bytes;

use super::proto::model_infer_request::InferInputTensor;
use super::proto::model_infer_response::InferOutputTensor;
use super::proto::InferTensorContents;
use super::status::GrpcError;
use crate::tensor::{binary, counted, element_count, shape_string, DataType, Tensor, TensorData};

/// Decodes a request's inputs, in request order.
pub(super) fn decode_inputs(
    inputs: Vec<InferInputTensor>,
    raw: Vec<Bytes>,
) -> Result<Vec<Tensor>, GrpcError> {
    if !raw.is_empty() && raw.len() != inputs.len() {
        return Err(GrpcError::InvalidArgument(format!(
            "the request has {} raw_input_contents for {} inputs; send one per input, in input order, or none",
            raw.len(),
            inputs.len()
        )));
    }
    let mut raw = raw.into_iter();
    inputs
        .into_iter()
        .map(|input| decode_input(input, raw.next()))
        .collect()
}

fn decode_input(input: InferInputTensor, raw: Option<Bytes>) -> Result<Tensor, GrpcError> {
    let name = input.name;
    let bad = |m: String| GrpcError::InvalidArgument(format!("input '{name}': {m}"));
    let dtype = DataType::from_name(&input.datatype)
        .ok_or_else(|| bad(format!("unknown datatype '{}'", input.datatype)))?;
    let data = match (input.contents, raw) {
        (Some(contents), Some(_)) if !filled(&contents).is_empty() => {
            return Err(bad("has both contents and raw_input_contents; send one".into()))
        }
        (_, Some(bytes)) => binary::decode(&bytes, dtype, &input.shape).map_err(|e| bad(raw_message(e)))?,
        (contents, None) => typed(contents.unwrap_or_default(), dtype, &input.shape).map_err(bad)?,
    };
    Ok(Tensor {
        name,
        shape: input.shape,
        data,
    })
}

/// The binary decoder speaks of HTTP's `binary_data_size`; over gRPC the
/// bytes are the input's raw contents.
fn raw_message(e: binary::BinaryError) -> String {
    format!(
        "raw_input_contents: {}",
        e.to_string().replace("binary_data_size", "size")
    )
}

/// The typed fields that hold elements, by name.
fn filled(c: &InferTensorContents) -> Vec<&'static str> {
    [
        ("bool_contents", c.bool_contents.len()),
        ("int_contents", c.int_contents.len()),
        ("int64_contents", c.int64_contents.len()),
        ("uint_contents", c.uint_contents.len()),
        ("uint64_contents", c.uint64_contents.len()),
        ("fp32_contents", c.fp32_contents.len()),
        ("fp64_contents", c.fp64_contents.len()),
        ("bytes_contents", c.bytes_contents.len()),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(field, _)| field)
    .collect()
}

/// The typed field that carries `dtype`, if any.
fn field_of(dtype: DataType) -> Option<&'static str> {
    Some(match dtype {
        DataType::Bool => "bool_contents",
        DataType::Int8 | DataType::Int16 | DataType::Int32 => "int_contents",
        DataType::Int64 => "int64_contents",
        DataType::Uint8 | DataType::Uint16 | DataType::Uint32 => "uint_contents",
        DataType::Uint64 => "uint64_contents",
        DataType::Fp32 => "fp32_contents",
        DataType::Fp64 => "fp64_contents",
        DataType::Bytes => "bytes_contents",
        DataType::Fp16 => return None,
    })
}

/// Decodes typed contents: the one field of `dtype`, holding exactly
/// `product(shape)` elements, each in range.
fn typed(c: InferTensorContents, dtype: DataType, shape: &[i64]) -> Result<TensorData, String> {
    let want = element_count(shape).ok_or_else(|| format!("shape {} is invalid", shape_string(shape)))?;
    let Some(field) = field_of(dtype) else {
        return Err(format!(
            "{dtype} has no typed contents field; send it in raw_input_contents"
        ));
    };
    if let Some(other) = filled(&c).into_iter().find(|f| *f != field) {
        return Err(format!("{dtype} data goes in {field}, not {other}"));
    }
    let data = match dtype {
        DataType::Bool => TensorData::Bool(c.bool_contents),
        DataType::Int8 => TensorData::Int8(narrow(c.int_contents, dtype)?),
        DataType::Int16 => TensorData::Int16(narrow(c.int_contents, dtype)?),
        DataType::Int32 => TensorData::Int32(c.int_contents),
        DataType::Int64 => TensorData::Int64(c.int64_contents),
        DataType::Uint8 => TensorData::Uint8(narrow(c.uint_contents, dtype)?),
        DataType::Uint16 => TensorData::Uint16(narrow(c.uint_contents, dtype)?),
        DataType::Uint32 => TensorData::Uint32(c.uint_contents),
        DataType::Uint64 => TensorData::Uint64(c.uint64_contents),
        DataType::Fp32 => TensorData::Fp32(c.fp32_contents),
        DataType::Fp64 => TensorData::Fp64(c.fp64_contents),
        DataType::Bytes => TensorData::Bytes(c.bytes_contents),
        DataType::Fp16 => unreachable!("FP16 has no typed field (checked above)"),
    };
    if data.len() != want {
        return Err(format!(
            "{field} holds {} but shape {} needs {want}",
            counted(data.len(), "element"),
            shape_string(shape)
        ));
    }
    Ok(data)
}

/// Narrows the 32-bit elements of a typed field to the input's width.
fn narrow<W: Copy + std::fmt::Display, T: TryFrom<W>>(
    values: Vec<W>,
    dtype: DataType,
) -> Result<Vec<T>, String> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| T::try_from(v).map_err(|_| format!("element {i} ({v}) is out of range for {dtype}")))
        .collect()
}

/// True when outputs must go back as raw contents: the request sent raw
/// inputs, or an output has no typed field (raw and typed outputs cannot
/// be mixed: raw entries pair with outputs by position).
pub(super) fn answer_raw(request_raw: bool, outputs: &[Tensor]) -> bool {
    request_raw || outputs.iter().any(|t| field_of(t.dtype()).is_none())
}

/// Encodes outputs: typed contents, or raw contents (one entry per output).
pub(super) fn encode_outputs(outputs: Vec<Tensor>, raw: bool) -> (Vec<InferOutputTensor>, Vec<Bytes>) {
    let mut tensors = Vec::with_capacity(outputs.len());
    let mut raw_contents = Vec::new();
    for t in outputs {
        let datatype = t.dtype().name().to_string();
        let contents = if raw {
            let mut buf = Vec::with_capacity(binary::encoded_len(&t.data));
            binary::encode(&t.data, &mut buf);
            raw_contents.push(Bytes::from(buf));
            None
        } else {
            Some(contents_of(t.data))
        };
        tensors.push(InferOutputTensor {
            name: t.name,
            datatype,
            shape: t.shape,
            parameters: Default::default(),
            contents,
        });
    }
    (tensors, raw_contents)
}

/// Typed contents of a tensor that has a typed field.
fn contents_of(data: TensorData) -> InferTensorContents {
    let mut c = InferTensorContents::default();
    match data {
        TensorData::Bool(v) => c.bool_contents = v,
        TensorData::Int8(v) => c.int_contents = v.into_iter().map(i32::from).collect(),
        TensorData::Int16(v) => c.int_contents = v.into_iter().map(i32::from).collect(),
        TensorData::Int32(v) => c.int_contents = v,
        TensorData::Int64(v) => c.int64_contents = v,
        TensorData::Uint8(v) => c.uint_contents = v.into_iter().map(u32::from).collect(),
        TensorData::Uint16(v) => c.uint_contents = v.into_iter().map(u32::from).collect(),
        TensorData::Uint32(v) => c.uint_contents = v,
        TensorData::Uint64(v) => c.uint64_contents = v,
        TensorData::Fp32(v) => c.fp32_contents = v,
        TensorData::Fp64(v) => c.fp64_contents = v,
        TensorData::Bytes(v) => c.bytes_contents = v,
        TensorData::Fp16(_) => unreachable!("FP16 outputs are always raw (answer_raw)"),
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(
        name: &str,
        datatype: &str,
        shape: Vec<i64>,
        contents: Option<InferTensorContents>,
    ) -> InferInputTensor {
        InferInputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape,
            parameters: Default::default(),
            contents,
        }
    }

    fn message(r: Result<Vec<Tensor>, GrpcError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn typed_contents_decode_and_check_their_field_count_and_range() {
        let c = InferTensorContents {
            fp32_contents: vec![1.0, 2.0, 3.0, 4.0],
            ..Default::default()
        };
        let t = decode_inputs(vec![input("x", "FP32", vec![2, 2], Some(c.clone()))], vec![]).unwrap();
        assert_eq!(t[0].data, TensorData::Fp32(vec![1.0, 2.0, 3.0, 4.0]));
        let e = message(decode_inputs(
            vec![input("x", "FP32", vec![1, 3], Some(c.clone()))],
            vec![],
        ));
        assert!(
            e.contains("input 'x': fp32_contents holds 4 elements but shape [1, 3] needs 3"),
            "{e}"
        );
        let one = InferTensorContents {
            fp32_contents: vec![1.0],
            ..Default::default()
        };
        let e = message(decode_inputs(
            vec![input("x", "FP32", vec![1, 3], Some(one))],
            vec![],
        ));
        assert!(
            e.contains("input 'x': fp32_contents holds 1 element but shape [1, 3] needs 3"),
            "{e}"
        );
        let e = message(decode_inputs(vec![input("x", "INT64", vec![4], Some(c))], vec![]));
        assert!(
            e.contains("INT64 data goes in int64_contents, not fp32_contents"),
            "{e}"
        );
        let small = InferTensorContents {
            int_contents: vec![1, -128, 300],
            ..Default::default()
        };
        let e = message(decode_inputs(
            vec![input("x", "INT8", vec![3], Some(small))],
            vec![],
        ));
        assert!(e.contains("element 2 (300) is out of range for INT8"), "{e}");
        let e = message(decode_inputs(vec![input("x", "FP16", vec![1], None)], vec![]));
        assert!(e.contains("FP16 has no typed contents field"), "{e}");
        let e = message(decode_inputs(vec![input("x", "FLOAT", vec![1], None)], vec![]));
        assert!(e.contains("unknown datatype 'FLOAT'"), "{e}");
        // no contents at all: only an empty tensor fits
        assert_eq!(
            decode_inputs(vec![input("x", "FP32", vec![0, 2], None)], vec![]).unwrap()[0].data,
            TensorData::Fp32(vec![])
        );
        assert!(decode_inputs(vec![input("x", "FP32", vec![1, 2], None)], vec![]).is_err());
    }

    #[test]
    fn raw_contents_decode_little_endian_and_pair_with_inputs() {
        let raw = Bytes::from(
            [1.5f32, -2.0]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<u8>>(),
        );
        let t = decode_inputs(vec![input("x", "FP32", vec![1, 2], None)], vec![raw.clone()]).unwrap();
        assert_eq!(t[0].data, TensorData::Fp32(vec![1.5, -2.0]));
        let e = message(decode_inputs(
            vec![
                input("x", "FP32", vec![1, 2], None),
                input("y", "FP32", vec![1, 2], None),
            ],
            vec![raw.clone()],
        ));
        assert!(e.contains("1 raw_input_contents for 2 inputs"), "{e}");
        let e = message(decode_inputs(
            vec![input("x", "FP32", vec![1, 3], None)],
            vec![raw.clone()],
        ));
        assert!(
            e.contains(
                "input 'x': raw_input_contents: size 8 holds 2 FP32 elements but shape [1, 3] needs 3"
            ),
            "{e}"
        );
        let both = InferTensorContents {
            fp32_contents: vec![1.0, 2.0],
            ..Default::default()
        };
        let e = message(decode_inputs(
            vec![input("x", "FP32", vec![1, 2], Some(both))],
            vec![raw],
        ));
        assert!(e.contains("both contents and raw_input_contents"), "{e}");
    }

    #[test]
    fn outputs_round_trip_typed_and_raw() {
        let outputs = vec![
            Tensor {
                name: "label".into(),
                shape: vec![2],
                data: TensorData::Int64(vec![3, -1]),
            },
            Tensor {
                name: "small".into(),
                shape: vec![2],
                data: TensorData::Uint8(vec![0, 255]),
            },
        ];
        let (typed, raw) = encode_outputs(outputs.clone(), false);
        assert!(raw.is_empty());
        let c = typed[1].contents.as_ref().unwrap();
        assert_eq!(c.uint_contents, vec![0, 255]);
        assert_eq!(typed[0].contents.as_ref().unwrap().int64_contents, vec![3, -1]);
        let (tensors, raw) = encode_outputs(outputs, true);
        assert!(tensors.iter().all(|t| t.contents.is_none()));
        assert_eq!(
            &raw[0][..],
            &[3, 0, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255, 255, 255, 255, 255]
        );
        assert_eq!(&raw[1][..], &[0, 255]);
        let fp16 = Tensor {
            name: "h".into(),
            shape: vec![1],
            data: TensorData::Fp16(vec![half::f16::ONE]),
        };
        assert!(answer_raw(false, &[fp16]));
    }
}
