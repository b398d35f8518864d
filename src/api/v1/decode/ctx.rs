//! The decoder's context: each input's buffer and the first error found.

use serde::de::{self};

use super::super::predict::Format;
use crate::runtime::Signature;
use crate::tensor::json::{DecodeError, DecodeOptions, Shaped};
use crate::tensor::{shape_string, Tensor, TensorData};

pub(super) const DECODE: DecodeOptions = DecodeOptions {
    nonfinite_strings: true,
};

/// One input's buffer while decoding.
#[derive(Default)]
pub(super) struct Column {
    pub(super) data: Option<TensorData>,
    /// Instance 0's shape (row format), or the tensor's shape (columnar).
    pub(super) shape: Option<Vec<i64>>,
    /// Instances that had this input so far.
    pub(super) seen: usize,
}

/// The decoder's state: the signature, each input's buffer, and the first
/// error found in the data.
pub(super) struct Ctx<'s> {
    pub(super) signature: &'s Signature,
    pub(super) model: &'s str,
    pub(super) columns: Vec<Column>,
    pub(super) error: Option<String>,
    /// The most elements the body can hold.
    pub(super) max_elements: usize,
}

impl Ctx<'_> {
    /// Records `message` as the request's error; returns the parser error
    /// that stops the walk.
    pub(super) fn fail<E: de::Error>(&mut self, message: String) -> E {
        let e = E::custom(&message);
        self.error.get_or_insert(message);
        e
    }

    pub(super) fn input_names(&self) -> String {
        let names: Vec<&str> = self.signature.inputs.iter().map(|t| t.name.as_str()).collect();
        names.join(", ")
    }

    pub(super) fn unknown_input<E: de::Error>(&mut self, field: &str, name: &str) -> E {
        let message = format!(
            "{field}: model '{}' has no input '{name}' (it takes {})",
            self.model,
            self.input_names()
        );
        self.fail(message)
    }

    /// The single input of a one-input model, for values that do not name it.
    pub(super) fn single_input<E: de::Error>(&mut self, field: &str) -> Result<usize, E> {
        match self.signature.inputs.len() {
            1 => Ok(0),
            n => {
                let message = format!(
                    "{field}: model '{}' has {n} inputs ({}); name them in a JSON object",
                    self.model,
                    self.input_names()
                );
                Err(self.fail(message))
            }
        }
    }

    /// Decodes one value of input `i` into its buffer with `feed` (which
    /// hands a [`Shaped`] seed or visitor the value) and returns its shape.
    pub(super) fn decode_value<E: de::Error>(
        &mut self,
        i: usize,
        field: &str,
        feed: impl FnOnce(Shaped<'_>) -> Result<(), E>,
    ) -> Result<Vec<i64>, E> {
        let dtype = self.signature.inputs[i].datatype;
        // Room for every element the body can hold, reserved once: growing
        // by doubling would copy the buffer and hold both copies at once.
        // Pages never written are never resident, so the unused part of
        // the reservation costs address space, not memory.
        let room = if dtype.fixed_size().is_some() {
            self.max_elements
        } else {
            0
        };
        let column = &mut self.columns[i];
        let data = column
            .data
            .get_or_insert_with(|| TensorData::with_capacity(dtype, room));
        let (mut shape, mut error) = (Vec::new(), None::<DecodeError>);
        let seed = Shaped {
            out: data,
            options: DECODE,
            shape: &mut shape,
            error: &mut error,
        };
        match feed(seed) {
            Ok(()) => Ok(shape),
            Err(e) => match error {
                Some(err) => {
                    let name = &self.signature.inputs[i].name;
                    let message = format!("{field}: input '{name}': {err}");
                    Err(self.fail(message))
                }
                None => Err(e),
            },
        }
    }

    /// Records instance `index`'s shape for input `i`: it must be instance 0's.
    pub(super) fn instance_shape<E: de::Error>(
        &mut self,
        i: usize,
        index: usize,
        shape: Vec<i64>,
    ) -> Result<(), E> {
        let column = &mut self.columns[i];
        column.seen += 1;
        match &column.shape {
            None => {
                column.shape = Some(shape);
                Ok(())
            }
            Some(first) if *first == shape => Ok(()),
            Some(first) => {
                let message = format!(
                    "\"instances\": input '{}' has shape {} in instance {index} but {} in instance 0; \
                     all instances of an input must have the same shape",
                    self.signature.inputs[i].name,
                    shape_string(&shape),
                    shape_string(first)
                );
                Err(self.fail(message))
            }
        }
    }

    /// The decoded tensors (row format: instances stacked along a new first
    /// dimension).
    pub(super) fn tensors(&mut self, format: Format) -> Vec<Tensor> {
        let mut tensors = Vec::new();
        for (spec, column) in self.signature.inputs.iter().zip(&mut self.columns) {
            let (Some(data), Some(shape)) = (column.data.take(), column.shape.take()) else {
                continue;
            };
            let shape = match format {
                Format::Row { instances } => std::iter::once(instances as i64).chain(shape).collect(),
                Format::Columnar => shape,
            };
            tensors.push(Tensor {
                name: spec.name.clone(),
                shape,
                data,
            });
        }
        tensors
    }
}
