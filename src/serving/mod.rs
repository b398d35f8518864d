//! What every front end shares: the server's state, the predict pipeline
//! (admit → route → run → observe), readiness, the memory of recent request
//! ids for feedback, and the metrics refresh. HTTP (`api`) and gRPC call
//! into it; nothing here knows a wire format.

pub mod error;
pub mod infer;
pub mod readiness;
pub mod recent;
pub mod scrape;
pub mod state;

pub use error::ServeError;
pub use infer::{Outcome, Protocol};
pub use state::{AppState, Control, Settings};
