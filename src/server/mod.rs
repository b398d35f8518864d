//! A running *server*: both listeners, the background tasks and graceful
//! shutdown ([`lifecycle`]); the accept loop that bounds connections in
//! time and number ([`listener`]); and the byte stream it wraps around each
//! connection ([`io`]).

pub mod busy_poll;
pub mod io;
pub mod lifecycle;
pub mod listener;

pub use lifecycle::{run, signal, start, Server};
pub use listener::ListenerSettings;
