//! `samples.json`: example requests for a model, with the true label where
//! known. Used to warm versions up, to validate them and in tests.
//!
//! ```json
//! {"label_output": "label",
//!  "samples": [{"inputs": {"input": [[0.0, 1.0, ...]]}, "label": 3}]}
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::error::{FileError, SampleError};
use crate::runtime::Signature;
use crate::tensor::{json, Tensor};

/// The parsed file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Samples {
    /// The output whose value is compared with `label`.
    #[serde(default)]
    pub label_output: Option<String>,
    pub samples: Vec<Sample>,
}

/// One example request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    /// Input name → nested array.
    pub inputs: BTreeMap<String, serde_json::Value>,
    /// The true class, when known.
    #[serde(default)]
    pub label: Option<i64>,
}

impl Samples {
    /// Reads `path`; `Ok(None)` when it does not exist.
    pub fn read(path: &Path) -> Result<Option<Samples>, FileError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(FileError::new(path, e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| FileError::new(path, e))
    }
}

impl Sample {
    /// The sample's inputs as tensors ordered for `signature`.
    pub fn tensors(&self, signature: &Signature) -> Result<Vec<Tensor>, SampleError> {
        let mut tensors = Vec::with_capacity(self.inputs.len());
        for (name, value) in &self.inputs {
            let spec = signature
                .inputs
                .iter()
                .find(|s| &s.name == name)
                .ok_or_else(|| SampleError::UnknownInput(name.clone()))?;
            tensors.push(
                json::tensor_from_value(name, value, spec.datatype)
                    .map_err(|e| SampleError::Data(name.clone(), e))?,
            );
        }
        Ok(signature.order_inputs(tensors)?)
    }
}
