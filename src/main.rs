//! The `scatter` binary: parse, run, map the result to an exit code.

use std::process::ExitCode;

use clap::Parser;

use scatter::cli::{Cli, Command};
use scatter::config::Clock;
use scatter::{app, exit, logging};

fn main() -> ExitCode {
    // Taken first, so that scatter's own start-up counts against the window.
    let clock = Clock::now();
    let cli = Cli::parse();
    logging::init(cli.verbosity);
    let result = match cli.command {
        Command::Run(args) => app::run(args, clock),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("scatter: error: {err:#}");
            if let Some(hint) = exit::fatal_of(&err).and_then(|f| f.hint.as_deref()) {
                eprintln!("scatter: hint: {hint}");
            }
            ExitCode::from(exit::code_of(&err))
        }
    }
}
