//! Why a model or a version could not be read or loaded. Messages are safe
//! to show to clients once the repository path is scrubbed from them.

use std::path::Path;

use super::external::ExternalError;
use crate::runtime::onnx::OrtError;
use crate::runtime::{InputError, RuntimeError};
use crate::tensor::json::DecodeError;

/// A model's own file (`config.toml`, `samples.json`) that is unreadable or
/// invalid; the message names the file and the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FileError {
    pub path: String,
    pub message: String,
}

impl FileError {
    /// The error of the file at `path`.
    pub fn new(path: &Path, message: impl std::fmt::Display) -> FileError {
        FileError {
            path: path.display().to_string(),
            message: message.to_string(),
        }
    }
}

/// Why a model name from a request or the disk does not name a directory
/// of the repository. Messages never carry a path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "'{0}' is not a valid model name (1 to 255 characters of A-Z a-z 0-9 _ . -, \
         not starting with '.', without '..')"
    )]
    Invalid(String),
    #[error("model '{0}' has no directory in the model repository")]
    NoDirectory(String),
    #[error("model '{0}' has no version directory {1} in the model repository")]
    NoVersionDirectory(String, u64),
    #[error("model '{0}' resolves to a directory outside the model repository")]
    Outside(String),
}

/// Why a version did not become READY, or could not be asked to.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LoadError {
    #[error("model '{0}' has no complete version directory {1} (with model.onnx)")]
    NoVersionDirectory(String, u64),
    #[error("model '{0}' could not be read")]
    ModelUnreadable(String),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("{0}")]
    Files(#[from] FileError),
    /// The model's own files are broken (the scrubbed reason).
    #[error("{0}")]
    Broken(String),
    #[error("cannot read model.onnx: {0}")]
    ModelFile(String),
    #[error(transparent)]
    External(#[from] ExternalError),
    #[error("ONNX Runtime could not load model.onnx: {0}")]
    Ort(#[from] OrtError),
    /// The model does not match what its configuration declares.
    #[error("{0}")]
    Config(String),
    #[error("no instances configured")]
    NoInstances,
    #[error("cannot start worker threads: {0}")]
    Workers(String),
    #[error("warm-up inference failed: {0}")]
    Warmup(#[from] RuntimeError),
    #[error("warm-up sample: {0}")]
    Sample(#[from] SampleError),
}

/// Why a sample does not fit a model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SampleError {
    #[error("sample input '{0}' is not an input of the model")]
    UnknownInput(String),
    #[error("sample input '{0}': {1}")]
    Data(String, DecodeError),
    #[error(transparent)]
    Inputs(#[from] InputError),
}
