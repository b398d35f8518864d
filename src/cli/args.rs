//! The command line: subcommands and their arguments (`serve` takes the
//! server's [`Config`]).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Config;

/// switchyard: serve ONNX models over HTTP and roll new versions out safely.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of the binary.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the models of a repository over HTTP.
    Serve(Box<Config>),
    /// Validate a model version before it takes traffic.
    Validate(ValidateArgs),
    /// Drive rollouts through the admin API of a running server.
    Rollout(RolloutArgs),
    /// Show models, versions, policies and rollouts of a running server.
    Status(AdminArgs),
    /// Print the ModelRollout CustomResourceDefinition (YAML) for fleet mode.
    Crd,
}

/// `switchyard validate`.
#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    #[arg(long, env = "SWITCHYARD_MODEL_REPOSITORY", default_value = "models")]
    pub model_repository: PathBuf,
    #[arg(long)]
    pub model: String,
    #[arg(long)]
    pub version: u64,
    /// The version to compare the signature with (default: the model's stable).
    #[arg(long)]
    pub against: Option<u64>,
    #[arg(long, env = "SWITCHYARD_ONNXRUNTIME_LIB")]
    pub onnxruntime_lib: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// How the CLI reaches a server's admin API.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// Base URL of the admin listener.
    #[arg(long, env = "SWITCHYARD_ADMIN_URL", default_value = "http://127.0.0.1:8081")]
    pub admin_url: String,
    /// Bearer token for the admin API.
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print raw JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `switchyard rollout ...`.
#[derive(Debug, Clone, Args)]
pub struct RolloutArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    #[command(subcommand)]
    pub command: RolloutCommand,
}

/// The rollout subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum RolloutCommand {
    /// Start a rollout from a spec file (JSON or TOML).
    Start {
        model: String,
        /// The rollout spec (`.json` or `.toml`).
        #[arg(long)]
        spec: PathBuf,
    },
    /// Phase, step, weights and the last analysis.
    Status {
        model: String,
    },
    /// Next step (`--full`: straight to promoted).
    Promote {
        model: String,
        #[arg(long)]
        full: bool,
    },
    Pause {
        model: String,
    },
    Resume {
        model: String,
    },
    Abort {
        model: String,
    },
    Retry {
        model: String,
    },
    /// Back to the previous stable version (inside the rollback window).
    Rollback {
        model: String,
    },
    /// The audit log.
    Events {
        model: String,
    },
}

impl Cli {
    /// The serve config; panics for other subcommands (tests only).
    pub fn into_serve(self) -> Config {
        match self.command {
            Command::Serve(c) => *c,
            other => panic!("not a serve command: {other:?}"),
        }
    }
}
