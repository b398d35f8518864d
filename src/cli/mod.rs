//! The command line: [`args`] parses it; the client subcommands run here:
//! `validate` loads a model itself; `rollout` and `status` talk to a running
//! server's admin API; `load` sends real traffic to its data listener.
//! Text output is for people ([`output`]); `--output json|yaml` for scripts.

pub mod args;
mod client;
mod load;
pub mod output;
mod rollout;
mod status;
mod validate;

pub use args::{
    AdminArgs, Cli, Command, LoadArgs, Output, RolloutArgs, RolloutCommand, StatusArgs, ValidateArgs,
};
pub use load::load;
pub use rollout::rollout;
pub use status::status;
pub use validate::validate;
