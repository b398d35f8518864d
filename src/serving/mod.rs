//! What every front end shares: the server's state, the predict pipeline
//! (admit → route → run → observe), the caps on client-supplied strings and
//! the body budget ([`limits`]), readiness, the memory of recent request ids
//! for feedback, breaker probes and the metrics refresh. HTTP (`api`) and
//! gRPC call into it; nothing here knows a wire format.

pub mod error;
pub mod infer;
pub mod limits;
pub mod outcome;
pub mod probe;
pub mod readiness;
pub mod recent;
pub mod scrape;
pub mod state;

pub use error::ServeError;
pub use infer::{Protocol, RunOptions};
pub use outcome::Outcome;
pub use state::{AppState, BodySettings, FeedbackSettings, Settings};
