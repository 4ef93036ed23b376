//! `scatter run` from validated flags to exit code: discover, plan, then
//! either print the plan (dry run) or execute it and report.

use std::io::Write;

use anyhow::{Context, Result};
use log::{debug, warn};

use crate::cli::{Format, RunArgs};
use crate::config::RunConfig;
use crate::display::quoted;
use crate::history::History;
use crate::plan::Plan;
use crate::relay::{self, Stream, Undelivered};
use crate::supervise::{self, RunStart};
use crate::{discovery, dryrun, exit, lock, logging, output};

/// Runs `scatter run` and returns the process exit code.
pub fn run(args: RunArgs, begun: RunStart) -> Result<u8> {
    let cfg = RunConfig::from_args(args)?;
    let ids = discovery::discover(&cfg.plan.instances)?;
    let mut plan = Plan::build(&cfg.plan, ids)?;
    if cfg.dry_run {
        // The same checks as a real run, on what exists; nothing is created.
        lock::check_dirs(&cfg.lock_base, &cfg.plan.name)?;
        output::check_log_dir(&cfg.supervision.output, false)?;
        // stdout is line-buffered; a plan can have 100,000 lines.
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
        dryrun::write(&plan, cfg.format, &mut out).context("cannot write the plan to stdout")?;
        out.flush().context("cannot write the plan to stdout")?;
        return Ok(exit::OK);
    }
    plan.attach_locks(lock::prepare_dirs(&cfg.lock_base, &cfg.plan.name)?);
    // Refused before the run is recorded: nothing starts, nothing is written.
    output::check_log_dir(&cfg.supervision.output, true)?;
    if plan.entries.is_empty() {
        debug!(
            "no instances in {}; nothing to do",
            quoted(&cfg.plan.instances)
        );
    }
    let mut history = History::start(&cfg.history, &plan, &begun);
    let report = supervise::run(&plan, &begun, &cfg.supervision, &mut history);
    // The supervisor armed the relay's own stop handlers as it finished
    // (this is for a supervisor that could not start): from here on a stop
    // signal ends the wait for readers, and scatter.
    relay::arm();
    let report = report?;
    let code = report.exit_code(&plan);
    // Problems with the history files are warnings; they never change the
    // outcome of the tasks.
    history.finish(&report, code);
    if let Some(sig) = report.stopped_by {
        relay::stopped_by(sig);
    }
    let mut text = Vec::new();
    let stream = match cfg.format {
        Format::Text => {
            report
                .write_text(&plan, &mut text)
                .context("cannot format the run report")?;
            Stream::Stderr
        }
        Format::Json => {
            report
                .write_json(&plan, &mut text)
                .context("cannot format the run report")?;
            Stream::Stdout
        }
    };
    // The exit code is the tasks', whatever becomes of the report: a run
    // piped into a reader that went away still failed if a task failed.
    match relay::deliver(stream, text) {
        Ok(()) => Ok(code),
        Err(Undelivered::Stopped(sig)) => Ok(exit::SIGNAL_BASE.saturating_add(sig as u8)),
        Err(Undelivered::Failed(err)) => {
            let message = format!("cannot write the run report to {}: {err}", stream.name());
            if logging::structured() {
                warn!("{message}");
            }
            relay::report(
                Stream::Stderr,
                format!("scatter: warning: {message}\n").into_bytes(),
            );
            Ok(code)
        }
    }
}
