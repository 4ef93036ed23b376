//! The `scatter` binary: parse, run, map the result to an exit code.

use std::process::ExitCode;

use clap::Parser;

use scatter::cli::{Cli, Command};
use scatter::relay::{self, Stream};
use scatter::supervise::RunStart;
use scatter::{app, docs, exit, logging, pause, status};

fn main() -> ExitCode {
    // Taken first, so that scatter's own start-up counts against the window.
    let begun = RunStart::now();
    let cli = Cli::parse();
    logging::init(cli.verbosity.level(), cli.log);
    let result = match cli.command {
        Command::Run(args) => app::run(args, begun),
        Command::Status(args) => status::run(args),
        Command::Pause(args) => pause::pause(args),
        Command::Resume(args) => pause::resume(args),
        Command::Completions { shell } => {
            docs::completions(shell, &mut std::io::stdout().lock());
            Ok(exit::OK)
        }
        Command::Manpage { dir } => match dir {
            Some(dir) => docs::manpages_to(&dir).map(|()| exit::OK),
            None => docs::manpage(&mut std::io::stdout().lock()).map(|()| exit::OK),
        },
    };
    let code = match result {
        Ok(code) => code,
        // `scatter status | head`: the reader has seen enough. A run never
        // gets here for a closed stdout: its output goes through the relay,
        // and its exit code is always its tasks'.
        Err(err) if exit::is_broken_pipe(&err) => exit::OK,
        Err(err) => {
            let mut text = format!("scatter: error: {err:#}\n");
            if let Some(hint) = exit::fatal_of(&err).and_then(|f| f.hint.as_deref()) {
                text.push_str(&format!("scatter: hint: {hint}\n"));
            }
            relay::report(Stream::Stderr, text.into_bytes());
            exit::code_of(&err)
        }
    };
    logging::finish();
    match relay::finish() {
        Some(sig) => ExitCode::from(exit::SIGNAL_BASE.saturating_add(sig as u8)),
        None => ExitCode::from(code),
    }
}
