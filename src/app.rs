//! `scatter run` from validated flags to exit code: discover, plan, then
//! either print the plan (dry run) or execute it, report, and run the
//! `--on-change` hooks.

use std::io::Write;

use anyhow::{Context, Result};
use log::{debug, warn};

use crate::cli::Format;
use crate::cli::RunArgs;
use crate::config::RunConfig;
use crate::display::{quoted, unix_secs};
use crate::health::{self, ReportMode};
use crate::history::History;
use crate::hook::Hooks;
use crate::plan::Plan;
use crate::relay::{self, Stream, Undelivered};
use crate::report::Report;
use crate::state::StateDir;
use crate::supervise::{self, RunStart};
use crate::{discovery, dryrun, exit, lock, logging, output};

/// Runs `scatter run` and returns the process exit code.
pub fn run(args: RunArgs, begun: RunStart) -> Result<u8> {
    let cfg = RunConfig::from_args(args)?;
    let ids = discovery::discover(&cfg.plan.instances)?;
    let mut plan = Plan::build(&cfg.plan, ids)?;
    for id in &plan.excluded {
        debug!("{}: left out by --include/--exclude", quoted(id));
    }
    let state = cfg.history.state_dir.as_deref();
    if cfg.dry_run {
        // The same checks as a real run, on what exists; nothing is created.
        lock::check_dirs(&cfg.lock_base, &cfg.plan.name)?;
        output::check_log_dir(&cfg.supervision.output, false)?;
        if cfg.with_state {
            let dir = state.and_then(|path| StateDir::open(path).ok().flatten());
            health::prepare(&mut plan, dir.as_ref(), &cfg.health, begun.start_wall);
        }
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
    // Made and checked once, for the holds before the run and the records
    // during it. One this run may not write to (another user's) may still
    // be read for its pauses.
    let dir = state.map(StateDir::create);
    let readable = match (&dir, state) {
        (Some(Err(_)), Some(path)) => StateDir::open(path).ok().flatten(),
        _ => None,
    };
    let usable = dir.as_ref().and_then(|made| made.as_ref().ok());
    let closing = health::prepare(
        &mut plan,
        usable.or(readable.as_ref()),
        &cfg.health,
        begun.start_wall,
    );
    let mut history = History::start(&cfg.history, dir, &plan, &begun);
    let report = supervise::run(&plan, &begun, &cfg.supervision, &mut history);
    // The supervisor armed the relay's own stop handlers as it finished
    // (this is for a supervisor that could not start): from here on a stop
    // signal ends the wait for readers, and scatter.
    relay::arm();
    let mut report = report?;
    let code = report.exit_code(&plan);
    // Problems with the history files are warnings; they never change the
    // outcome of the tasks.
    let settled = history.finish(&mut report, code, Some(closing));
    report.own = Some(own_cost(&report));
    if let Some(sig) = report.stopped_by {
        relay::stopped_by(sig);
    }
    // Changes only, when there is a state directory to tell them from
    // repeats, and the run was not stopped (a stop is news of its own).
    let changes_only = cfg.health.report == ReportMode::Changes
        && settled.is_some()
        && report.stopped_by.is_none();
    if changes_only {
        tell_changes(&report, cfg.format);
    }
    let mut text = Vec::new();
    let stream = match cfg.format {
        Format::Text if changes_only => Stream::Stderr,
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
        Ok(()) => {}
        Err(Undelivered::Stopped(sig)) => return Ok(exit::SIGNAL_BASE.saturating_add(sig as u8)),
        Err(Undelivered::Failed(err)) => {
            let message = format!("cannot write the run report to {}: {err}", stream.name());
            if logging::structured() {
                warn!("{message}");
            }
            relay::report(
                Stream::Stderr,
                format!("scatter: warning: {message}\n").into_bytes(),
            );
        }
    }
    if let (Some(program), Some(settled), None) =
        (&cfg.health.on_change, &settled, report.stopped_by)
    {
        let hooks = Hooks {
            program,
            timeout: cfg.health.hook_timeout,
            name: &cfg.plan.name,
            state_dir: settled.state.path.clone(),
        };
        if let Some(sig) = hooks.fire(&settled.state, &settled.pending) {
            return Ok(exit::SIGNAL_BASE.saturating_add(sig as u8));
        }
    }
    Ok(code)
}

/// `--report changes`: one line per change and the summary, on stderr, or
/// nothing at all when nothing changed. With syslog or the journal, each
/// line is also a record of its own.
fn tell_changes(report: &Report, format: Format) {
    let now = unix_secs(std::time::SystemTime::now());
    let lines: Vec<String> = report
        .changes
        .iter()
        .filter_map(|c| health::line(c, now))
        .collect();
    if lines.is_empty() {
        return;
    }
    let mut text = String::new();
    for line in &lines {
        if logging::structured() {
            warn!("{}", line.trim_start_matches("scatter: "));
        }
        text.push_str(line);
        text.push('\n');
    }
    if format == Format::Text {
        text.push_str(&report.summary_line());
        text.push('\n');
    }
    relay::report(Stream::Stderr, text.into_bytes());
}

/// scatter's own CPU so far (all its threads, none of its tasks), logged at
/// debug level with its cost per start.
fn own_cost(report: &crate::report::Report) -> crate::platform::Usage {
    let own = crate::platform::own_usage();
    let starts = report
        .results
        .iter()
        .filter(|r| r.started.is_some())
        .count();
    let per_start = match u32::try_from(starts) {
        Ok(n) if n > 0 => format!(
            ", {} per start",
            crate::display::duration_precise(own.cpu() / n)
        ),
        _ => String::new(),
    };
    debug!(
        "scatter's own CPU: {} ({} user, {} system){per_start}",
        crate::display::duration_precise(own.cpu()),
        crate::display::duration_precise(own.user),
        crate::display::duration_precise(own.system),
    );
    own
}
