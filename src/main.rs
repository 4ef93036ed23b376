//! The `scatter` binary: parse, run, map the result to an exit code.

use std::process::ExitCode;

use clap::Parser;

use scatter::cli::{Cli, Command};
use scatter::supervise::RunStart;
use scatter::{app, docs, exit, logging, status};

fn main() -> ExitCode {
    // Taken first, so that scatter's own start-up counts against the window.
    let begun = RunStart::now();
    let cli = Cli::parse();
    logging::init(cli.verbosity, cli.log);
    let result = match cli.command {
        Command::Run(args) => app::run(args, begun),
        Command::Status(args) => status::run(args),
        Command::Completions { shell } => {
            docs::completions(shell, &mut std::io::stdout().lock());
            Ok(exit::OK)
        }
        Command::Manpage { dir } => match dir {
            Some(dir) => docs::manpages_to(&dir).map(|()| exit::OK),
            None => docs::manpage(&mut std::io::stdout().lock()).map(|()| exit::OK),
        },
    };
    match result {
        Ok(code) => ExitCode::from(code),
        // `scatter status | head`: the reader has seen enough.
        Err(err) if exit::is_broken_pipe(&err) => ExitCode::from(exit::OK),
        Err(err) => {
            eprintln!("scatter: error: {err:#}");
            if let Some(hint) = exit::fatal_of(&err).and_then(|f| f.hint.as_deref()) {
                eprintln!("scatter: hint: {hint}");
            }
            ExitCode::from(exit::code_of(&err))
        }
    }
}
