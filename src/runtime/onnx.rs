//! The ONNX Runtime backend: one `ort` session per worker thread.
//!
//! The shared library is loaded once per process ([`init`]) from an explicit
//! path, so a missing library is a start-up error instead of `ort`'s panic.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use half::f16;
use ort::environment::Environment;
use ort::logging::LogLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor as OrtTensor, TensorElementType, ValueType};

use super::job::{Backend, BackendError};
use super::signature::{Signature, TensorSpec};
use crate::tensor::{DataType, Tensor, TensorData};

/// The command that fetches the pinned ONNX Runtime library.
pub const SETUP_COMMAND: &str = "scripts/setup-onnxruntime.sh";

static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();

/// Why ONNX Runtime could not be set up or could not open a model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OrtError {
    #[error(
        "the ONNX Runtime library {} does not exist; run `{SETUP_COMMAND}` (or `make setup`) to fetch it, \
         or point --onnxruntime-lib / SWITCHYARD_ONNXRUNTIME_LIB at libonnxruntime.so",
        .0.display()
    )]
    LibraryMissing(PathBuf),
    #[error(
        "could not load the ONNX Runtime library {}: {}; run `{SETUP_COMMAND}` to fetch the pinned version",
        .0.display(),
        .1
    )]
    LibraryLoad(PathBuf, String),
    #[error("could not create the ONNX Runtime environment: {0}")]
    Environment(String),
    #[error("ONNX Runtime is not initialised")]
    NotInitialised,
    /// ONNX Runtime refused the session options or the model file.
    #[error("{0}")]
    Session(String),
    /// An input or output the server cannot exchange.
    #[error("{0}")]
    Unsupported(String),
}

/// Loads the ONNX Runtime shared library at `lib` and creates the process
/// environment. Idempotent: later calls return the first environment.
pub fn init(lib: &Path) -> Result<&'static Environment, OrtError> {
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    // One environment per process, built once: a second build would hand
    // ONNX Runtime's process-wide environment a logger that is freed when
    // the losing copy is dropped.
    static BUILDING: parking_lot::Mutex<()> = parking_lot::Mutex::new(());
    let _once = BUILDING.lock();
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    if !lib.is_file() {
        return Err(OrtError::LibraryMissing(lib.to_path_buf()));
    }
    let builder = ort::init_from(lib).map_err(|e| OrtError::LibraryLoad(lib.to_path_buf(), e.to_string()))?;
    let env = builder
        .with_name("switchyard")
        .with_telemetry(false)
        .with_logger(std::sync::Arc::new(forward_log))
        .build()
        .map_err(|e| OrtError::Environment(e.to_string()))?;
    // ONNX Runtime formats only the messages at or above this level.
    env.set_log_level(ort_log_level());
    Ok(ENVIRONMENT.get_or_init(|| env))
}

/// ONNX Runtime's own log lines go through the server's log (target
/// `onnxruntime`), not raw to stderr. ORT's INFO is its internal chatter
/// (graph transforms, allocations): it becomes DEBUG; VERBOSE becomes TRACE.
fn forward_log(level: LogLevel, category: &str, id: &str, location: &str, message: &str) {
    match level {
        LogLevel::Verbose => tracing::trace!(target: "onnxruntime", category, id, location, "{message}"),
        LogLevel::Info => tracing::debug!(target: "onnxruntime", category, id, location, "{message}"),
        LogLevel::Warning => tracing::warn!(target: "onnxruntime", category, id, location, "{message}"),
        LogLevel::Error | LogLevel::Fatal => {
            tracing::error!(target: "onnxruntime", category, id, location, "{message}")
        }
    }
}

/// The most detailed ONNX Runtime level the server's log would show.
fn ort_log_level() -> LogLevel {
    if tracing::enabled!(target: "onnxruntime", tracing::Level::TRACE) {
        LogLevel::Verbose
    } else if tracing::enabled!(target: "onnxruntime", tracing::Level::DEBUG) {
        LogLevel::Info
    } else {
        LogLevel::Warning
    }
}

/// The environment, once [`init`] succeeded.
pub fn environment() -> Option<&'static Environment> {
    ENVIRONMENT.get()
}

/// Where the library is by default: `$ORT_DYLIB_PATH`, else the setup
/// script's folder under the current directory.
pub fn default_library_path() -> PathBuf {
    std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".onnxruntime/libonnxruntime.so.1.31.1"))
}

/// One ORT session.
pub struct OnnxBackend {
    session: Session,
    input_names: Vec<String>,
    outputs: Vec<TensorSpec>,
}

impl OnnxBackend {
    /// Opens `model` with `intra_op_threads` threads. Errors carry ORT's
    /// message, which the caller logs and summarises. The intra-op threads
    /// sleep between runs instead of spinning: on a box shared with the HTTP
    /// side, spinning threads take the cores that requests need (mlp_wide,
    /// 2 threads, c=64: 8,700 req/s without spinning, BENCHMARKS.md).
    pub fn open(model: &Path, intra_op_threads: usize) -> Result<(OnnxBackend, Signature), OrtError> {
        let env = environment().ok_or(OrtError::NotInitialised)?;
        let mut builder = Session::builder(env)
            .and_then(|b| b.with_intra_threads(intra_op_threads.max(1)).map_err(Into::into))
            .and_then(|b| b.with_inter_threads(1).map_err(Into::into))
            .and_then(|b| b.with_intra_op_spinning(false).map_err(Into::into))
            .map_err(|e| OrtError::Session(e.to_string()))?;
        let session = builder
            .commit_from_file(model)
            .map_err(|e| OrtError::Session(e.to_string()))?;
        let signature = Signature {
            inputs: session
                .inputs()
                .iter()
                .map(|o| spec(o.name(), o.dtype()))
                .collect::<Result<_, _>>()?,
            outputs: session
                .outputs()
                .iter()
                .map(|o| spec(o.name(), o.dtype()))
                .collect::<Result<_, _>>()?,
        };
        let backend = OnnxBackend {
            input_names: signature.inputs.iter().map(|t| t.name.clone()).collect(),
            outputs: signature.outputs.clone(),
            session,
        };
        Ok((backend, signature))
    }
}

fn spec(name: &str, ty: &ValueType) -> Result<TensorSpec, OrtError> {
    match ty {
        ValueType::Tensor { ty, shape, .. } => Ok(TensorSpec {
            name: name.to_string(),
            datatype: from_ort(*ty).ok_or_else(|| {
                OrtError::Unsupported(format!("'{name}' has unsupported element type {ty:?}"))
            })?,
            shape: shape.iter().map(|&d| if d < 0 { -1 } else { d }).collect(),
        }),
        other => Err(OrtError::Unsupported(format!(
            "'{name}' is a {other:?}, only tensors are supported"
        ))),
    }
}

fn from_ort(t: TensorElementType) -> Option<DataType> {
    Some(match t {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float16 => DataType::Fp16,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

fn to_value(t: Tensor) -> Result<SessionInputValue<'static>, BackendError> {
    let shape: Vec<i64> = t.shape;
    macro_rules! prim {
        ($v:expr) => {
            OrtTensor::from_array((shape, $v)).map(|v| v.into_dyn().into())
        };
    }
    let value: ort::Result<SessionInputValue<'static>> = match t.data {
        TensorData::Bool(v) => prim!(v),
        TensorData::Uint8(v) => prim!(v),
        TensorData::Uint16(v) => prim!(v),
        TensorData::Uint32(v) => prim!(v),
        TensorData::Uint64(v) => prim!(v),
        TensorData::Int8(v) => prim!(v),
        TensorData::Int16(v) => prim!(v),
        TensorData::Int32(v) => prim!(v),
        TensorData::Int64(v) => prim!(v),
        TensorData::Fp16(v) => prim!(v),
        TensorData::Fp32(v) => prim!(v),
        TensorData::Fp64(v) => prim!(v),
        TensorData::Bytes(v) => {
            let strings = v
                .into_iter()
                .map(String::from_utf8)
                .collect::<Result<Vec<String>, _>>()
                .map_err(|_| {
                    BackendError::Input(format!("input '{}': BYTES element is not valid UTF-8", t.name))
                })?;
            OrtTensor::from_string_array((shape, strings.as_slice())).map(|v| v.into_dyn().into())
        }
    };
    value.map_err(|e| BackendError::Run(e.to_string()))
}

fn from_value(spec: &TensorSpec, value: &DynValue) -> Result<Tensor, BackendError> {
    let ty = match value.dtype() {
        ValueType::Tensor { ty, .. } => *ty,
        other => {
            return Err(BackendError::Run(format!(
                "output '{}' is a {other:?}",
                spec.name
            )))
        }
    };
    macro_rules! prim {
        ($t:ty, $var:ident) => {{
            let (shape, data) = value
                .try_extract_tensor::<$t>()
                .map_err(|e| BackendError::Run(e.to_string()))?;
            (shape.to_vec(), TensorData::$var(data.to_vec()))
        }};
    }
    let (shape, data) = match ty {
        TensorElementType::Bool => prim!(bool, Bool),
        TensorElementType::Uint8 => prim!(u8, Uint8),
        TensorElementType::Uint16 => prim!(u16, Uint16),
        TensorElementType::Uint32 => prim!(u32, Uint32),
        TensorElementType::Uint64 => prim!(u64, Uint64),
        TensorElementType::Int8 => prim!(i8, Int8),
        TensorElementType::Int16 => prim!(i16, Int16),
        TensorElementType::Int32 => prim!(i32, Int32),
        TensorElementType::Int64 => prim!(i64, Int64),
        TensorElementType::Float16 => prim!(f16, Fp16),
        TensorElementType::Float32 => prim!(f32, Fp32),
        TensorElementType::Float64 => prim!(f64, Fp64),
        TensorElementType::String => {
            let (shape, strings) = value
                .try_extract_strings()
                .map_err(|e| BackendError::Run(e.to_string()))?;
            (
                shape.to_vec(),
                TensorData::Bytes(strings.into_iter().map(String::into_bytes).collect()),
            )
        }
        other => {
            return Err(BackendError::Run(format!(
                "output '{}' has unsupported type {other:?}",
                spec.name
            )))
        }
    };
    Ok(Tensor {
        name: spec.name.clone(),
        shape,
        data,
    })
}

impl Backend for OnnxBackend {
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError> {
        let mut values = Vec::with_capacity(inputs.len());
        for (name, t) in self.input_names.iter().zip(inputs) {
            values.push((name.as_str(), to_value(t)?));
        }
        let outputs = self
            .session
            .run(values)
            .map_err(|e| BackendError::Run(e.to_string()))?;
        self.outputs
            .iter()
            .map(|spec| {
                let value = outputs.get(&spec.name).ok_or_else(|| {
                    BackendError::Run(format!("output '{}' missing from the run", spec.name))
                })?;
                from_value(spec, value)
            })
            .collect()
    }
}
