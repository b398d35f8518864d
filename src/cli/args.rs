//! The command line: subcommands and their arguments (`serve` takes the
//! server's [`Config`]). Flags that say how to reach a server (`--admin-url`,
//! `--token`) and how to print (`--output`) are accepted anywhere after the
//! subcommand that uses them, as kubectl does.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// Validate a model version before it takes traffic: it loads, matches
    /// the stable version's signature, runs every sample with finite
    /// outputs, and meets the [validation] thresholds of its config.toml.
    Validate(ValidateArgs),
    /// Drive rollouts through the admin API of a running server.
    Rollout(RolloutArgs),
    /// Show models, versions, traffic policies and rollouts of a running server.
    Status(StatusArgs),
    /// Send real requests (and feedback) to a running server: rows from the
    /// model's samples.json, spread over many users, at a steady rate.
    Load(LoadArgs),
    /// Print the ModelRollout CustomResourceDefinition (YAML) for fleet mode.
    Crd,
}

/// How to print an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Output {
    /// Aligned tables and sentences for people.
    #[default]
    Text,
    /// The admin API's JSON, pretty-printed.
    Json,
    /// The same data as YAML.
    Yaml,
}

/// `switchyard validate`.
#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    /// The model repository (Triton layout).
    #[arg(long, env = "SWITCHYARD_MODEL_REPOSITORY", default_value = "models")]
    pub model_repository: PathBuf,
    /// The model to validate.
    #[arg(long)]
    pub model: String,
    /// The version to validate.
    #[arg(long)]
    pub version: u64,
    /// The version to compare the signature with (default: the model's stable).
    #[arg(long)]
    pub against: Option<u64>,
    /// The ONNX Runtime shared library.
    #[arg(long, env = "SWITCHYARD_ONNXRUNTIME_LIB")]
    pub onnxruntime_lib: Option<PathBuf>,
    /// How to print the report.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Same as `--output json`.
    #[arg(long, hide = true)]
    pub json: bool,
}

/// How the CLI reaches a server's admin API, and how it prints.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// Base URL of the admin listener.
    #[arg(
        long,
        env = "SWITCHYARD_ADMIN_URL",
        default_value = "http://127.0.0.1:8081",
        global = true
    )]
    pub admin_url: String,
    /// Bearer token for the admin API.
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// How to print the answer.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text, global = true)]
    pub output: Output,
    /// Same as `--output json`.
    #[arg(long, hide = true, global = true)]
    pub json: bool,
}

impl AdminArgs {
    /// The output format, `--json` counting as `--output json`.
    pub fn format(&self) -> Output {
        if self.json {
            Output::Json
        } else {
            self.output
        }
    }
}

/// `switchyard status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Only this model (default: every model).
    pub model: Option<String>,
}

/// `switchyard rollout ...`.
#[derive(Debug, Clone, Args)]
pub struct RolloutArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    #[command(subcommand)]
    pub command: RolloutCommand,
}

/// The format of a rollout spec file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SpecFormat {
    Json,
    Toml,
    Yaml,
}

/// The rollout subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum RolloutCommand {
    /// Start a rollout from a spec file (JSON, TOML or YAML, told apart by
    /// content unless --format says).
    Start {
        /// The model to roll out.
        model: String,
        /// The rollout spec file (`-` reads standard input).
        #[arg(long)]
        spec: PathBuf,
        /// The spec's format (default: recognised from its content).
        #[arg(long, value_enum)]
        format: Option<SpecFormat>,
    },
    /// Phase, step, weights, time left in the bake and the last analysis.
    Status {
        /// The model whose rollout to show.
        model: String,
    },
    /// Move to the next step now (`--full`: promote the candidate at once).
    Promote {
        /// The model whose rollout to promote.
        model: String,
        /// Skip the remaining steps: the candidate becomes stable now.
        #[arg(long)]
        full: bool,
    },
    /// Hold the current step: no analysis, no promotion, weights kept.
    Pause {
        /// The model whose rollout to pause.
        model: String,
    },
    /// Continue a paused rollout from its current step.
    Resume {
        /// The model whose rollout to resume.
        model: String,
    },
    /// Stop the rollout: all traffic back on the stable version.
    Abort {
        /// The model whose rollout to abort.
        model: String,
    },
    /// Start an aborted rollout again from its first step.
    Retry {
        /// The model whose rollout to retry.
        model: String,
    },
    /// Put all traffic back on the version that was stable before the last
    /// promotion (inside the rollback window).
    Rollback {
        /// The model to roll back.
        model: String,
    },
    /// The audit log of the model's rollouts, oldest first.
    Events {
        /// The model whose events to show.
        model: String,
        /// Only the last N events.
        #[arg(long)]
        limit: Option<usize>,
    },
}

/// What the load command sends as feedback after each answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FeedbackKind {
    /// No feedback.
    None,
    /// 1 when the answer's label is the sample's true label, else 0.
    Correct,
}

/// `switchyard load`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Base URL of the data listener.
    #[arg(long, env = "SWITCHYARD_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The model to send requests to.
    #[arg(long)]
    pub model: String,
    /// The model repository whose `<model>/samples.json` gives the rows.
    #[arg(long, env = "SWITCHYARD_MODEL_REPOSITORY", default_value = "models")]
    pub model_repository: PathBuf,
    /// Requests per second.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// How many distinct users (`x-user-id: user-<n>`) the requests spread over.
    #[arg(long, default_value_t = 1000)]
    pub users: u64,
    /// How long to send (e.g. 90s, 5m).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Feedback to post for each answer (needs `label_output` in samples.json).
    #[arg(long, value_enum, default_value_t = FeedbackKind::Correct)]
    pub feedback: FeedbackKind,
    /// Token for the feedback route, when the server asks for one.
    #[arg(long, env = "SWITCHYARD_FEEDBACK_TOKEN", hide_env_values = true)]
    pub feedback_token: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_flags_go_anywhere_after_the_subcommand() {
        let parse = |argv: &[&str]| Cli::try_parse_from(argv).map(|c| c.command);
        for argv in [
            &[
                "switchyard",
                "rollout",
                "--admin-url",
                "http://h:1",
                "status",
                "digits",
            ][..],
            &[
                "switchyard",
                "rollout",
                "status",
                "digits",
                "--admin-url",
                "http://h:1",
            ][..],
            &[
                "switchyard",
                "rollout",
                "status",
                "--admin-url",
                "http://h:1",
                "digits",
            ][..],
        ] {
            match parse(argv).unwrap() {
                Command::Rollout(r) => {
                    assert_eq!(r.admin.admin_url, "http://h:1", "{argv:?}");
                    assert!(matches!(r.command, RolloutCommand::Status { .. }));
                }
                other => panic!("{other:?}"),
            }
        }
        match parse(&["switchyard", "status", "-o", "yaml", "--token", "t"]).unwrap() {
            Command::Status(s) => {
                assert_eq!(s.admin.format(), Output::Yaml);
                assert_eq!(s.admin.token.as_deref(), Some("t"));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["switchyard", "rollout", "events", "digits", "--json"]).unwrap() {
            Command::Rollout(r) => assert_eq!(r.admin.format(), Output::Json),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_subcommand_has_help() {
        use clap::CommandFactory;
        fn walk(cmd: &clap::Command, path: &str) {
            for sub in cmd.get_subcommands() {
                let name = format!("{path} {}", sub.get_name());
                assert!(sub.get_about().is_some(), "`{name}` has no help text");
                walk(sub, &name);
            }
        }
        walk(&Cli::command(), "switchyard");
    }
}
