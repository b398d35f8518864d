//! What every front end shares: the server's state, the predict pipeline
//! (admit → route → run → observe), readiness, the memory of recent request
//! ids for feedback, the per-second history the live page charts, the
//! metrics refresh, and the wire-independent answers
//! of model metadata, statistics and the model repository. HTTP (`api`) and
//! gRPC (`grpc`) call into it; nothing here knows a wire format.

pub mod catalog;
pub mod describe;
pub mod error;
pub mod history;
pub mod infer;
pub mod limits;
pub mod outcome;
pub mod probe;
pub mod readiness;
pub mod recent;
pub mod scrape;
pub mod state;
pub mod stats;

pub use error::ServeError;
pub use infer::{Protocol, RunOptions};
pub use outcome::Outcome;
pub use state::{AppState, BodySettings, Control, FeedbackSettings, Settings};
