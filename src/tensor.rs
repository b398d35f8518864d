//! Tensors as the API sees them.
//!
//! A [`Tensor`] is a name, a shape and a flat, row-major buffer of one
//! [`DataType`]. Protocol codecs (`json`, `binary`) turn wire formats into
//! tensors; the runtime turns tensors into ONNX Runtime values and back.

pub mod binary;
pub mod json;

use half::f16;

/// Element type of a tensor, named as in the Open Inference Protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Fp32,
    Fp64,
    Bytes,
}

impl DataType {
    /// Every data type, in protocol order.
    pub const ALL: [DataType; 13] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Fp32,
        DataType::Fp64,
        DataType::Bytes,
    ];

    /// The OIP name (`"FP32"`, `"BYTES"`, …).
    pub fn name(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    /// Parses an OIP name; `None` for anything else.
    pub fn from_name(name: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Bytes per element in the binary encoding; `None` for BYTES.
    pub fn fixed_size(self) -> Option<usize> {
        Some(match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => 1,
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 => 2,
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => 4,
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => 8,
            DataType::Bytes => return None,
        })
    }

    /// The TF Serving / numpy-ish lowercase name used in V1 metadata.
    pub fn tf_name(self) -> &'static str {
        match self {
            DataType::Bool => "DT_BOOL",
            DataType::Uint8 => "DT_UINT8",
            DataType::Uint16 => "DT_UINT16",
            DataType::Uint32 => "DT_UINT32",
            DataType::Uint64 => "DT_UINT64",
            DataType::Int8 => "DT_INT8",
            DataType::Int16 => "DT_INT16",
            DataType::Int32 => "DT_INT32",
            DataType::Int64 => "DT_INT64",
            DataType::Fp16 => "DT_HALF",
            DataType::Fp32 => "DT_FLOAT",
            DataType::Fp64 => "DT_DOUBLE",
            DataType::Bytes => "DT_STRING",
        }
    }
}

impl serde::Serialize for DataType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A flat, row-major element buffer of one data type.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    Bool(Vec<bool>),
    Uint8(Vec<u8>),
    Uint16(Vec<u16>),
    Uint32(Vec<u32>),
    Uint64(Vec<u64>),
    Int8(Vec<i8>),
    Int16(Vec<i16>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Fp16(Vec<f16>),
    Fp32(Vec<f32>),
    Fp64(Vec<f64>),
    Bytes(Vec<Vec<u8>>),
}

/// Applies `$body` to the inner vector of a [`TensorData`], whatever its type.
macro_rules! with_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::Bool($v) => $body,
            TensorData::Uint8($v) => $body,
            TensorData::Uint16($v) => $body,
            TensorData::Uint32($v) => $body,
            TensorData::Uint64($v) => $body,
            TensorData::Int8($v) => $body,
            TensorData::Int16($v) => $body,
            TensorData::Int32($v) => $body,
            TensorData::Int64($v) => $body,
            TensorData::Fp16($v) => $body,
            TensorData::Fp32($v) => $body,
            TensorData::Fp64($v) => $body,
            TensorData::Bytes($v) => $body,
        }
    };
}

impl TensorData {
    /// An empty buffer of the given type with room for `capacity` elements.
    pub fn with_capacity(dtype: DataType, capacity: usize) -> TensorData {
        match dtype {
            DataType::Bool => TensorData::Bool(Vec::with_capacity(capacity)),
            DataType::Uint8 => TensorData::Uint8(Vec::with_capacity(capacity)),
            DataType::Uint16 => TensorData::Uint16(Vec::with_capacity(capacity)),
            DataType::Uint32 => TensorData::Uint32(Vec::with_capacity(capacity)),
            DataType::Uint64 => TensorData::Uint64(Vec::with_capacity(capacity)),
            DataType::Int8 => TensorData::Int8(Vec::with_capacity(capacity)),
            DataType::Int16 => TensorData::Int16(Vec::with_capacity(capacity)),
            DataType::Int32 => TensorData::Int32(Vec::with_capacity(capacity)),
            DataType::Int64 => TensorData::Int64(Vec::with_capacity(capacity)),
            DataType::Fp16 => TensorData::Fp16(Vec::with_capacity(capacity)),
            DataType::Fp32 => TensorData::Fp32(Vec::with_capacity(capacity)),
            DataType::Fp64 => TensorData::Fp64(Vec::with_capacity(capacity)),
            DataType::Bytes => TensorData::Bytes(Vec::with_capacity(capacity)),
        }
    }

    /// `len` zero elements (empty strings for BYTES).
    pub fn zeros(dtype: DataType, len: usize) -> TensorData {
        match dtype {
            DataType::Bool => TensorData::Bool(vec![false; len]),
            DataType::Uint8 => TensorData::Uint8(vec![0; len]),
            DataType::Uint16 => TensorData::Uint16(vec![0; len]),
            DataType::Uint32 => TensorData::Uint32(vec![0; len]),
            DataType::Uint64 => TensorData::Uint64(vec![0; len]),
            DataType::Int8 => TensorData::Int8(vec![0; len]),
            DataType::Int16 => TensorData::Int16(vec![0; len]),
            DataType::Int32 => TensorData::Int32(vec![0; len]),
            DataType::Int64 => TensorData::Int64(vec![0; len]),
            DataType::Fp16 => TensorData::Fp16(vec![f16::ZERO; len]),
            DataType::Fp32 => TensorData::Fp32(vec![0.0; len]),
            DataType::Fp64 => TensorData::Fp64(vec![0.0; len]),
            DataType::Bytes => TensorData::Bytes(vec![Vec::new(); len]),
        }
    }

    /// The element type.
    pub fn dtype(&self) -> DataType {
        match self {
            TensorData::Bool(_) => DataType::Bool,
            TensorData::Uint8(_) => DataType::Uint8,
            TensorData::Uint16(_) => DataType::Uint16,
            TensorData::Uint32(_) => DataType::Uint32,
            TensorData::Uint64(_) => DataType::Uint64,
            TensorData::Int8(_) => DataType::Int8,
            TensorData::Int16(_) => DataType::Int16,
            TensorData::Int32(_) => DataType::Int32,
            TensorData::Int64(_) => DataType::Int64,
            TensorData::Fp16(_) => DataType::Fp16,
            TensorData::Fp32(_) => DataType::Fp32,
            TensorData::Fp64(_) => DataType::Fp64,
            TensorData::Bytes(_) => DataType::Bytes,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        with_data!(self, v => v.len())
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `other`'s elements; both must have the same type.
    pub fn extend_from(&mut self, other: &TensorData) {
        macro_rules! ext {
            ($($var:ident),*) => {
                match (self, other) {
                    $((TensorData::$var(a), TensorData::$var(b)) => a.extend_from_slice(b),)*
                    (a, b) => panic!("extend_from: {} with {}", a.dtype(), b.dtype()),
                }
            };
        }
        ext!(Bool, Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, Fp16, Fp32, Fp64, Bytes)
    }

    /// A copy of the elements in `range`.
    pub fn slice(&self, range: std::ops::Range<usize>) -> TensorData {
        macro_rules! sl {
            ($($var:ident),*) => {
                match self {
                    $(TensorData::$var(v) => TensorData::$var(v[range].to_vec()),)*
                }
            };
        }
        sl!(Bool, Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, Fp16, Fp32, Fp64, Bytes)
    }
}

/// A named tensor with a concrete shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub data: TensorData,
}

impl Tensor {
    /// The element type.
    pub fn dtype(&self) -> DataType {
        self.data.dtype()
    }
}

/// Number of elements a shape holds, or `None` when a dimension is negative
/// or the product overflows.
pub fn element_count(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| {
        usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
    })
}

/// Formats a shape the way error messages show it: `[1, 64]`.
pub fn shape_string(shape: &[i64]) -> String {
    format!("{shape:?}")
}

/// A count and its noun the way error messages say it: "1 element",
/// "4 elements", "1 FP32 element".
pub fn counted(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
