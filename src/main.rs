//! The `switchyard` binary: parse the command line, run the subcommand.

use std::process::ExitCode;

use clap::Parser;
use switchyard::cli::{Cli, Command};

/// mimalloc instead of glibc malloc: the request path allocates small
/// buffers on one thread and frees them on another, where glibc's arenas
/// spent a sixth of the server's CPU at c=64 (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
    };
    let result = match cli.command {
        Command::Serve(config) => {
            let _log = switchyard::telemetry::init_logging(config.log_format);
            runtime()
                .and_then(|rt| rt.block_on(switchyard::run(*config)))
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Validate(args) => switchyard::cli::validate(args),
        Command::Rollout(args) => runtime().and_then(|rt| rt.block_on(switchyard::cli::rollout(args))),
        Command::Status(args) => runtime().and_then(|rt| rt.block_on(switchyard::cli::status(args))),
        Command::Load(args) => runtime().and_then(|rt| rt.block_on(switchyard::cli::load(args))),
        Command::Crd => {
            print!("{}", switchyard::fleet::crd_yaml());
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchyard: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
