//! Logging: the global tracing subscriber, its line format, and ONNX
//! Runtime's own log routed through it.

use tracing_subscriber::EnvFilter;

use super::log_writer::{gathering_writer, LogGuard, BUFFER_BYTES};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global tracing subscriber; `RUST_LOG` overrides the level
/// (default `info`). Lines go to stdout through the log's writer thread
/// ([`gathering_writer`]), so the per-request log costs the request path a
/// short lock and a copy rather than a `write` or a wake-up of its own;
/// colours only when stdout is a terminal. Should stdout stall, lines beyond
/// the writer's buffer (8 MiB) are dropped and counted rather than stalling
/// requests. Keep the returned guard alive until exit: dropping it writes
/// the lines still buffered.
pub fn init_logging(format: LogFormat) -> LogGuard {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stdout().is_terminal();
    let (writer, guard) = gathering_writer(std::io::stdout(), BUFFER_BYTES);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    guard
}

/// The message of a caught panic, for the log.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}
