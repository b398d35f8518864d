//! JSON tensor data: [`decode`] reads `data` arrays (nested or flat)
//! straight into typed buffers; [`encode`] writes buffers back as flat JSON
//! arrays (V2) or as arrays nested in the tensor's shape (V1).

pub mod decode;
pub mod encode;

pub use decode::{
    decode, decode_with, tensor_from_value, tensor_from_value_with, value_shape, DecodeError, DecodeOptions,
};
pub use encode::{write_nested, FlatJson, NonFinite};
