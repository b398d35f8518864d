//! A signature is the list of a model's inputs and outputs with their data
//! types and shapes (`-1` for a dynamic dimension).

use serde::Serialize;

use crate::tensor::{shape_string, DataType, Tensor};

/// One declared input or output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: DataType,
    /// Declared dimensions; `-1` where dynamic.
    pub shape: Vec<i64>,
}

/// The inputs and outputs of a model version.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

impl Signature {
    /// True when every input and output has a dynamic first dimension, so
    /// requests can be concatenated along it.
    pub fn batchable(&self) -> bool {
        !self.inputs.is_empty()
            && self
                .inputs
                .iter()
                .chain(&self.outputs)
                .all(|t| t.shape.first() == Some(&-1))
    }

    /// Index of the input called `name`.
    pub fn input_index(&self, name: &str) -> Option<usize> {
        self.inputs.iter().position(|t| t.name == name)
    }

    /// Index of the output called `name`.
    pub fn output_index(&self, name: &str) -> Option<usize> {
        self.outputs.iter().position(|t| t.name == name)
    }

    /// Checks request tensors against the declared inputs and returns them in
    /// declaration order. Errors name the model input at fault.
    pub fn order_inputs(&self, tensors: Vec<Tensor>) -> Result<Vec<Tensor>, InputError> {
        let mut slots: Vec<Option<Tensor>> = vec![None; self.inputs.len()];
        for t in tensors {
            let Some(i) = self.input_index(&t.name) else {
                let known: Vec<&str> = self.inputs.iter().map(|s| s.name.as_str()).collect();
                return Err(InputError::Unknown {
                    name: t.name,
                    known: known.join(", "),
                });
            };
            let spec = &self.inputs[i];
            if t.dtype() != spec.datatype {
                return Err(InputError::Datatype {
                    got: t.dtype(),
                    name: t.name,
                    want: spec.datatype,
                });
            }
            if !shape_matches(&spec.shape, &t.shape) {
                return Err(InputError::Shape {
                    name: t.name,
                    got: shape_string(&t.shape),
                    want: shape_string(&spec.shape),
                });
            }
            if slots[i].is_some() {
                return Err(InputError::Twice(t.name));
            }
            slots[i] = Some(t);
        }
        slots
            .into_iter()
            .zip(&self.inputs)
            .map(|(slot, spec)| slot.ok_or_else(|| InputError::Missing(spec.name.clone())))
            .collect()
    }
}

/// Why request tensors do not fit a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("unknown input '{name}' (the model takes {known})")]
    Unknown { name: String, known: String },
    #[error("input '{name}' has datatype {got} but the model expects {want}")]
    Datatype {
        name: String,
        got: DataType,
        want: DataType,
    },
    #[error("input '{name}' has shape {got} but the model expects {want}")]
    Shape { name: String, got: String, want: String },
    #[error("input '{0}' is given twice")]
    Twice(String),
    #[error("missing input '{0}'")]
    Missing(String),
}

/// True when `actual` fits `declared` (same rank; `-1` matches any size).
pub(crate) fn shape_matches(declared: &[i64], actual: &[i64]) -> bool {
    declared.len() == actual.len()
        && declared
            .iter()
            .zip(actual)
            .all(|(&d, &a)| a >= 0 && (d < 0 || d == a))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TensorData;

    fn sig() -> Signature {
        Signature {
            inputs: vec![
                TensorSpec {
                    name: "a".into(),
                    datatype: DataType::Fp32,
                    shape: vec![-1, 2],
                },
                TensorSpec {
                    name: "b".into(),
                    datatype: DataType::Int64,
                    shape: vec![-1],
                },
            ],
            outputs: vec![TensorSpec {
                name: "y".into(),
                datatype: DataType::Fp32,
                shape: vec![-1],
            }],
        }
    }

    fn t(name: &str, shape: Vec<i64>, data: TensorData) -> Tensor {
        Tensor {
            name: name.into(),
            shape,
            data,
        }
    }

    #[test]
    fn orders_inputs_and_checks_them() {
        let s = sig();
        assert!(s.batchable());
        let ordered = s
            .order_inputs(vec![
                t("b", vec![1], TensorData::Int64(vec![1])),
                t("a", vec![1, 2], TensorData::Fp32(vec![1.0, 2.0])),
            ])
            .unwrap();
        assert_eq!(ordered[0].name, "a");
        let err = s
            .order_inputs(vec![t("a", vec![1, 2], TensorData::Fp32(vec![1.0, 2.0]))])
            .unwrap_err();
        assert_eq!(err.to_string(), "missing input 'b'");
        let err = s
            .order_inputs(vec![t("a", vec![1, 3], TensorData::Fp32(vec![0.0; 3]))])
            .unwrap_err();
        assert!(err.to_string().contains("shape [1, 3]"), "{err}");
        let err = s
            .order_inputs(vec![t("a", vec![2], TensorData::Int64(vec![1, 2]))])
            .unwrap_err();
        assert!(err.to_string().contains("datatype INT64"), "{err}");
        let err = s
            .order_inputs(vec![t("zz", vec![1], TensorData::Int64(vec![1]))])
            .unwrap_err();
        assert!(err.to_string().contains("unknown input 'zz'"), "{err}");
    }
}
