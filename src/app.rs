//! `scatter run` from validated flags to exit code: discover, plan, then
//! either print the plan (dry run) or execute it and report.

use std::io::Write;

use anyhow::{Context, Result};
use log::{debug, warn};

use crate::cli::{Format, RunArgs};
use crate::config::{Clock, RunConfig};
use crate::display::quoted;
use crate::history::History;
use crate::plan::Plan;
use crate::relay::{self, Stream, Undelivered};
use crate::supervise;
use crate::{discovery, dryrun, exit, lock, logging};

/// Runs `scatter run` and returns the process exit code.
pub fn run(args: RunArgs, clock: Clock) -> Result<u8> {
    let cfg = RunConfig::from_args(args)?;
    let ids = discovery::discover(&cfg.instances)?;
    let plan = Plan::build(&cfg, ids)?;
    if cfg.dry_run {
        lock::check_dirs(&cfg.lock_base, &cfg.lock_dir)?;
        // stdout is line-buffered; a plan can have 100,000 lines.
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
        dryrun::write(&plan, cfg.format, &mut out).context("cannot write the plan to stdout")?;
        out.flush().context("cannot write the plan to stdout")?;
        return Ok(exit::OK);
    }
    lock::prepare_dirs(&cfg.lock_base, &cfg.lock_dir)?;
    if plan.entries.is_empty() {
        debug!("no instances in {}; nothing to do", quoted(&cfg.instances));
    }
    let mut history = History::start(&cfg, &plan, &clock);
    let report = supervise::run(&plan, &clock, &cfg.supervision, &mut history);
    // The supervisor's signal handlers are gone: from here on a stop signal
    // ends the wait for readers (and scatter), whatever else is going on.
    relay::arm();
    let report = report?;
    let code = report.exit_code(&plan);
    // Problems with the history files were logged as warnings when they
    // happened; they do not change the outcome of the tasks.
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
