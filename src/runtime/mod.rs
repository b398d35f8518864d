//! The runtime executes inferences for one model version.
//!
//! A [`VersionRuntime`] owns a bounded queue and worker threads, each with
//! its own [`Backend`] (an ONNX Runtime session in production, [`onnx`]).
//! When the model's first dimension is dynamic, a worker concatenates the
//! rows of queued jobs with the same non-batch shapes into one run and
//! splits the outputs back ([`batcher`](self)). A fast version
//! (`inline_below_us`) runs on the caller's thread with a worker's backend
//! instead: a lone request at once, concurrent ones in batches of what the
//! thread's event loop received in one turn ([`turn`](self)). A worker whose backend
//! panics is kept alive and given a fresh backend ([`Reopen`]); its version
//! reports unhealthy until then. Per-version counters feed the
//! statistics extension ([`stats`]) and rollout analysis ([`window`]).

mod arrival;
mod awaiting;
mod batcher;
mod job;
pub mod onnx;
mod signature;
pub mod stats;
mod turn;
mod version;
pub mod window;

pub use arrival::Arrival;
pub use awaiting::awaiting_workers;
pub(crate) use awaiting::Awaiting;
pub use job::{Backend, BackendError, Budget, DeadlineOwner, RuntimeError};
pub use signature::{InputError, Signature, TensorSpec};
pub use stats::VersionStats;
pub use version::{ExecutionConfig, Reopen, VersionRuntime};
pub use window::Window;
