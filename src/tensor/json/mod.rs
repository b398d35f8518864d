//! JSON tensor data: [`decode`] reads `data` arrays (nested or flat, of a
//! known shape) straight into typed buffers; [`shaped`] reads values whose
//! shape is their nesting (V1, samples) the same way; [`encode`] writes
//! buffers back as flat JSON arrays (V2) or as arrays nested in the
//! tensor's shape (V1).

pub mod decode;
mod element;
pub mod encode;
pub mod shaped;

pub use decode::{decode, decode_with, DataSeed, DecodeError, DecodeOptions};
pub use encode::{write_nested, FlatJson, NonFinite};
pub use shaped::{tensor_from_value, tensor_from_value_with, Shaped};
