//! The `switchyard` binary: parse the command line, run the subcommand.

use clap::Parser;
use switchyard::config::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(config) => {
            switchyard::telemetry::init_logging(config.log_format);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(switchyard::run(config)))
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
