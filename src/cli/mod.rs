//! The command line: [`args`] parses it; [`commands`] runs the client
//! subcommands (`validate` loads a model itself; `rollout` and `status`
//! talk to a running server's admin API).

pub mod args;
mod client;
pub mod commands;

pub use args::{AdminArgs, Cli, Command, RolloutArgs, RolloutCommand, ValidateArgs};
pub use commands::{rollout, status, validate};
