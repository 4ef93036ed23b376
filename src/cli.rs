//! The command line: every subcommand, flag and environment variable.
//!
//! This module only describes and parses; turning the parsed values into a
//! checked configuration is `config`'s job. Each option can also be set
//! through the environment variable named in its help (clap's `env`), which
//! keeps crontab lines short.

use std::ffi::{OsStr, OsString};
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{OsStringValueParser, TypedValueParser};
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

use crate::exit;
use crate::health::{Backoff, DEFAULT_BACKOFF_MAX, ReportMode};
use crate::http::Method;
use crate::logging::Sink;
use crate::output::OutputMode;
use crate::plan::Order;
use crate::shard::{self, Shard};

mod protect;
pub use protect::{MAX_CATCH_UP, ProtectArgs};

const ABOUT: &str =
    "Spread one task per instance directory evenly across a time window, each under its own lock";

const LONG_ABOUT: &str = "\
scatter is run by cron once a minute. It lists the instance directories (one
per tenant), starts one task per instance, and spreads the starts evenly
across the window, W/N apart, so that a thousand tenants never hit the machine
in the same second. Each task runs under a non-blocking per-instance lock, so
a slow instance is never worked on twice at once, even when runs overlap or
one of them is killed.";

const RUN_AFTER: &str = "\
Placeholders in COMMAND and its arguments:
  {} or {id}   the instance id (the directory's name), as one argument
  {path}       the instance directory's absolute path
  {{ and }}    literal braces; any other brace is kept as it is
The command is run directly, never through a shell. For shell syntax write:
  scatter run --instances /srv/instances -- sh -c 'exec ./task \"$1\"' sh {}

Each task also gets SCATTER_INSTANCE, SCATTER_INSTANCE_DIR, SCATTER_SLOT,
SCATTER_WINDOW_START and SCATTER_LOCK_FD in its environment.

Tenant health: --exclude GLOB leaves directories out (lost+found); `scatter
pause ID` holds an instance back; --backoff 1m,1h attempts a failing instance
less and less often; --report changes prints only changes (an instance starts
failing, recovers, most instances fail at once); --on-change PROGRAM runs once
per change with SCATTER_EVENT, SCATTER_INSTANCE, SCATTER_FAILURES,
SCATTER_REASON, SCATTER_SINCE, SCATTER_NAME and SCATTER_STATE_DIR set.

With --timeout, a task still running after DURATION gets SIGTERM sent to its
whole process group, and SIGKILL --kill-after later. On SIGTERM, SIGINT or
SIGHUP scatter stops starting tasks, forwards the signal to every task's
group, and SIGKILLs what remains after --kill-after; a second signal kills
at once.

Instead of a command, --url makes one HTTP request per instance from scatter
itself, with no process per instance. {} and {id} may appear only in its path
and query, and are percent-encoded (as in header values and --data). A status
below 400 is ok, 400 and above failed; redirects are not followed. With --url,
--timeout defaults to 30s and --max-concurrent to 64; --kill-after does not
apply, and --detach is refused.

Examples:
  scatter run --instances /srv/instances --url 'http://127.0.0.1/{}/checkmail.php'
  scatter run --instances /srv/instances -- curl -fsS http://127.0.0.1/{}/checkmail.php
  scatter run --instances /srv/instances --only acme -- ./checkmail {}
  scatter run --instances /srv/instances --dry-run --format json -- ./checkmail {}";

#[derive(Parser, Debug)]
#[command(name = "scatter", version, about = ABOUT, long_about = LONG_ABOUT, after_help = exit::HELP_TABLE,
          args_override_self = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    #[command(flatten)]
    pub verbosity: Verbosity,

    /// Where diagnostics go: stderr, syslog (facility cron), journald, or auto
    /// (journald when stderr is connected to the journal).
    #[arg(long, value_enum, value_name = "SINK", default_value_t = Sink::Stderr, global = true,
          env = "SCATTER_LOG")]
    pub log: Sink,
}

#[derive(Args, Debug, Clone, Copy, Default)]
pub struct Verbosity {
    /// More detail on stderr: -v for debug, -vv for trace. RUST_LOG overrides.
    #[arg(short, long, action = ArgAction::Count, global = true, conflicts_with = "quiet",
          env = "SCATTER_VERBOSE")]
    pub verbose: u8,

    /// Only errors on stderr.
    #[arg(short, long, global = true, env = "SCATTER_QUIET")]
    pub quiet: bool,
}

impl Verbosity {
    /// The level diagnostics are shown from: warnings by default, debug with
    /// `-v`, trace with `-vv`, errors only with `-q`.
    pub fn level(self) -> log::LevelFilter {
        match (self.quiet, self.verbose) {
            (true, _) => log::LevelFilter::Error,
            (false, 0) => log::LevelFilter::Warn,
            (false, 1) => log::LevelFilter::Debug,
            (false, _) => log::LevelFilter::Trace,
        }
    }
}

// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start one task per instance, spread across the window.
    #[command(after_help = format!("{RUN_AFTER}\n\n{}", exit::HELP_TABLE))]
    Run(RunArgs),
    /// Show runs in progress, tasks running now and each instance's last outcome.
    #[command(after_help = STATUS_AFTER)]
    Status(StatusArgs),
    /// Hold instances back from the job's runs until resumed, or for a while.
    #[command(after_help = PAUSE_AFTER)]
    Pause(PauseArgs),
    /// End pauses made by scatter pause.
    #[command(after_help = PAUSE_AFTER)]
    Resume(ResumeArgs),
    /// Print a shell completion script.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (scatter.1), or write every page into a directory.
    Manpage {
        /// Write scatter.1 and one page per subcommand here instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

const STATUS_AFTER: &str = "\
Exit status:
    0    every instance's last outcome is ok (or it was only skipped)
    1    at least one instance's last outcome is a failure
    2    usage or configuration error
   66    no state recorded in the state directory";

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Job name, as given to scatter run (takes precedence over --instances).
    #[arg(long, value_name = "NAME", env = "SCATTER_NAME",
          value_parser = OsStringValueParser::new().try_map(parse_name))]
    pub name: Option<OsString>,

    /// The instances directory of the job; its basename is the job name.
    #[arg(long, value_name = "DIR", env = "SCATTER_INSTANCES")]
    pub instances: Option<PathBuf>,

    /// State directory [default: /var/lib/scatter/NAME, else $XDG_STATE_HOME/scatter/NAME].
    #[arg(long, value_name = "DIR", env = "SCATTER_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// Lock base directory [default: the one the last run used].
    #[arg(long, value_name = "DIR", env = "SCATTER_LOCK_DIR")]
    pub lock_dir: Option<PathBuf>,

    /// Output format.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = Format::Text, env = "SCATTER_FORMAT")]
    pub format: Format,

    /// List the costliest instances first: by the CPU time, peak memory (rss) or run time of
    /// their last task, with those figures.
    #[arg(long, value_enum, value_name = "KEY")]
    pub sort: Option<SortKey>,

    /// List only the first N instances.
    #[arg(long, value_name = "N", value_parser = parse_top)]
    pub top: Option<NonZeroUsize>,
}

/// `scatter status --sort`: what makes an instance costly.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// User and system CPU time of its last task.
    Cpu,
    /// Peak resident memory of its last task.
    Rss,
    /// Run time of its last task.
    Duration,
}

const PAUSE_AFTER: &str = "\
A paused instance gets the outcome `paused` in every run (neither a failure
nor a start) until it is resumed or its --for runs out; `scatter run --only
ID` still runs it. Pauses are kept in the job's state directory, found as
scatter status finds it, so give the job the way scatter run was given it.
An id that is not a single path component is refused; one starting with -
goes after --:
  scatter pause --name checkmail --for 2h --reason 'moving mailboxes' acme
  scatter resume --name checkmail -- -odd-id
  scatter resume --name checkmail --all

Exit status:
    0    done
    2    nothing was changed: a usage error (an id that is not an instance,
         a state directory no run has used; see --force), or the pauses
         could not be read or written";

/// Which job: as `scatter run` was given it, and where its state is.
#[derive(Args, Debug)]
pub struct JobArgs {
    /// Job name, as given to scatter run (takes precedence over --instances).
    #[arg(long, value_name = "NAME", env = "SCATTER_NAME",
          value_parser = OsStringValueParser::new().try_map(parse_name))]
    pub name: Option<OsString>,

    /// The instances directory of the job; its basename is the job name.
    #[arg(long, value_name = "DIR", env = "SCATTER_INSTANCES")]
    pub instances: Option<PathBuf>,

    /// State directory [default: /var/lib/scatter/NAME, else $XDG_STATE_HOME/scatter/NAME].
    #[arg(long, value_name = "DIR", env = "SCATTER_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// Use a state directory no run has written yet, and (pause) ids that
    /// are not instances yet.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct PauseArgs {
    #[command(flatten)]
    pub job: JobArgs,

    /// End the pause by itself after this long (default: when resumed).
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_window)]
    pub duration: Option<Duration>,

    /// Why, for scatter status and the --on-change hook.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,

    /// The instance ids to pause.
    #[arg(required = true, value_name = "ID", value_parser = OsStringValueParser::new())]
    pub ids: Vec<OsString>,
}

#[derive(Args, Debug)]
pub struct ResumeArgs {
    #[command(flatten)]
    pub job: JobArgs,

    /// End every pause of the job.
    #[arg(long, conflicts_with = "ids")]
    pub all: bool,

    /// The instance ids to resume.
    #[arg(required_unless_present = "all", value_name = "ID",
          value_parser = OsStringValueParser::new())]
    pub ids: Vec<OsString>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Directory whose subdirectories are the instances.
    #[arg(long, value_name = "DIR", env = "SCATTER_INSTANCES")]
    pub instances: PathBuf,

    /// Spread the starts across this long, e.g. 60s, 1.5s, 500ms, "1m 30s".
    #[arg(long, value_name = "DURATION", default_value = "60s", env = "SCATTER_WINDOW",
          value_parser = parse_window)]
    pub window: Duration,

    /// Lock base directory [default: /run/lock/scatter, else $XDG_RUNTIME_DIR/scatter].
    #[arg(long, value_name = "DIR", env = "SCATTER_LOCK_DIR")]
    pub lock_dir: Option<PathBuf>,

    /// Job name, used for the lock subdirectory [default: basename of --instances].
    #[arg(long, value_name = "NAME", env = "SCATTER_NAME",
          value_parser = OsStringValueParser::new().try_map(parse_name))]
    pub name: Option<OsString>,

    /// Start order: by name (bytewise) or by a stable hash of the id.
    #[arg(long, value_enum, value_name = "ORDER", default_value_t = Order::Name, env = "SCATTER_ORDER")]
    pub order: Order,

    /// Run only this instance, at once and without spreading (repeatable).
    #[arg(long, value_name = "ID", env = "SCATTER_ONLY", value_parser = OsStringValueParser::new())]
    pub only: Vec<OsString>,

    /// Print the plan and exit: no locks, no tasks, no waiting.
    #[arg(long, env = "SCATTER_DRY_RUN")]
    pub dry_run: bool,

    /// Output format of the dry-run plan and of the end-of-run report.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = Format::Text, env = "SCATTER_FORMAT")]
    pub format: Format,

    /// At most N tasks of this run alive at once; due starts wait for a free slot.
    #[arg(long, value_name = "N", env = "SCATTER_MAX_CONCURRENT", value_parser = parse_cap)]
    pub max_concurrent: Option<NonZeroUsize>,

    /// SIGTERM a task's whole process group after this long.
    #[arg(long, value_name = "DURATION", env = "SCATTER_TIMEOUT", value_parser = parse_window)]
    pub timeout: Option<Duration>,

    /// Grace period before SIGKILL, after a timeout or a stop signal (0: at once).
    #[arg(long, value_name = "DURATION", default_value = "10s", env = "SCATTER_KILL_AFTER",
          value_parser = parse_duration)]
    pub kill_after: Duration,

    /// Exit right after the last start; tasks keep running under their locks.
    #[arg(long, env = "SCATTER_DETACH")]
    pub detach: bool,

    /// Run only the instances of shard K of N (K from 0), by rendezvous hashing of the id.
    #[arg(long, value_name = "K/N", env = "SCATTER_SHARD", value_parser = Shard::parse)]
    pub shard: Option<Shard>,

    /// Number of shards; this run's index then comes from JOB_COMPLETION_INDEX.
    #[arg(long, value_name = "N", env = "SCATTER_SHARDS", value_parser = shard::parse_count)]
    pub shards: Option<u32>,

    /// Where run and instance records go, for scatter status
    /// [default: /var/lib/scatter/NAME, else $XDG_STATE_HOME/scatter/NAME].
    #[arg(long, value_name = "DIR", env = "SCATTER_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// Keep this many run records in the state directory.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 100,
        env = "SCATTER_KEEP_RUNS"
    )]
    pub keep_runs: usize,

    /// At the end of the run, write Prometheus metrics here (textfile collector).
    #[arg(long, value_name = "PATH", env = "SCATTER_METRICS_FILE")]
    pub metrics_file: Option<PathBuf>,

    /// Task output: inherit, null, tag, dir=PATH or on-failure.
    #[arg(long, value_name = "MODE", default_value = "inherit", env = "SCATTER_OUTPUT",
          value_parser = OutputMode::parse)]
    pub output: OutputMode,

    /// Pacing by the host's pressure, catching up, the tasks' priority.
    #[command(flatten)]
    pub protect: ProtectArgs,

    /// Run only instances whose id matches this shell-style glob (repeatable).
    #[arg(long, value_name = "GLOB", env = "SCATTER_INCLUDE")]
    pub include: Vec<String>,

    /// Leave out instances whose id matches this glob, such as 'lost+found' (repeatable).
    #[arg(long, value_name = "GLOB", env = "SCATTER_EXCLUDE")]
    pub exclude: Vec<String>,

    /// After k failures in a row, attempt an instance at most once per
    /// BASE*2^(k-1), up to MAX (default 1h), e.g. 1m,1h.
    #[arg(long, value_name = "BASE[,MAX]", env = "SCATTER_BACKOFF", value_parser = parse_backoff)]
    pub backoff: Option<Backoff>,

    /// Report every failure (every), or only changes (changes): an instance
    /// starts failing, recovers, a widespread failure begins or ends.
    #[arg(long, value_enum, value_name = "WHAT", default_value_t = ReportMode::Every,
          env = "SCATTER_REPORT")]
    pub report: ReportMode,

    /// An instance is failing (for --report changes and --on-change) after
    /// N failures in a row.
    #[arg(long, value_name = "N", default_value = "1", env = "SCATTER_FAILURES_BEFORE_REPORT",
          value_parser = parse_failures)]
    pub failures_before_report: NonZeroU32,

    /// Report again every DURATION that an instance (or a widespread
    /// failure) is still failing [default: never].
    #[arg(long, value_name = "DURATION", env = "SCATTER_REMIND", value_parser = parse_window)]
    pub remind: Option<Duration>,

    /// Run this executable once per change, after the run, with no
    /// arguments and no shell; SCATTER_EVENT and others describe the change.
    #[arg(long, value_name = "PROGRAM", env = "SCATTER_ON_CHANGE")]
    pub on_change: Option<PathBuf>,

    /// Kill an --on-change hook's whole process group after this long.
    #[arg(long, value_name = "DURATION", default_value = "30s", env = "SCATTER_HOOK_TIMEOUT",
          value_parser = parse_window)]
    pub hook_timeout: Duration,

    /// With --dry-run: read the state directory and show what a real run
    /// would do now (paused and backed-off instances).
    #[arg(long, requires = "dry_run", env = "SCATTER_WITH_STATE")]
    pub with_state: bool,

    /// Instead of a command: make this HTTP request for each instance, from
    /// scatter itself ({} and {id}, percent-encoded, only in the path and query).
    #[arg(
        long,
        value_name = "URL",
        env = "SCATTER_URL",
        conflicts_with = "command",
        help_heading = "Requests (--url)"
    )]
    pub url: Option<String>,

    /// With --url: GET (the default; POST with --data), HEAD or POST.
    #[arg(
        long,
        value_enum,
        value_name = "METHOD",
        env = "SCATTER_METHOD",
        requires = "url",
        ignore_case = true,
        help_heading = "Requests (--url)"
    )]
    pub method: Option<Method>,

    /// With --url: send this header too, 'Name: value' (repeatable; {} percent-encoded).
    #[arg(
        long = "header",
        value_name = "HEADER",
        requires = "url",
        help_heading = "Requests (--url)"
    )]
    pub headers: Vec<String>,

    /// With --url: send this body, as curl's --data ({} percent-encoded, %20 not +).
    #[arg(
        long,
        value_name = "STRING",
        env = "SCATTER_DATA",
        requires = "url",
        help_heading = "Requests (--url)"
    )]
    pub data: Option<String>,

    /// With an https:// --url: trust the CA certificates in this PEM file instead of the system's.
    #[arg(
        long,
        value_name = "FILE",
        env = "SCATTER_CACERT",
        requires = "url",
        help_heading = "Requests (--url)"
    )]
    pub cacert: Option<PathBuf>,

    /// The task to run for each instance, after `--` (not with --url).
    #[arg(last = true, required_unless_present = "url", value_name = "COMMAND",
          value_parser = OsStringValueParser::new(), num_args = 1..)]
    pub command: Vec<OsString>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Parses a humantime duration that must be greater than zero.
pub fn parse_window(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!(
            "{s:?} is zero; give a positive duration such as 60s"
        ));
    }
    Ok(d)
}

/// The longest duration any flag accepts: one year (365.25 days, humantime's
/// `1y`). Longer makes no sense for a window, a timeout or a grace period,
/// and a bound keeps every deadline computed from one far from overflowing.
pub const MAX_DURATION: Duration = Duration::from_secs(31_557_600);

/// Parses a humantime duration (`1.5s`, `500ms`, `1m 30s`) of at most
/// [`MAX_DURATION`]; zero allowed.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!(
            "{s:?} is negative; durations must be positive, such as 60s"
        ));
    }
    let d = humantime::parse_duration(t).map_err(|e| {
        format!("{s:?} is not a duration ({e}); use a number with a unit, such as 60s, 1.5s, 500ms or \"1m 30s\"")
    })?;
    if d > MAX_DURATION {
        return Err(format!(
            "{s:?} is longer than the longest accepted duration, 1 year"
        ));
    }
    Ok(d)
}

/// `BASE[,MAX]`: two durations greater than zero, MAX at least BASE; MAX
/// defaults to [`DEFAULT_BACKOFF_MAX`], or BASE if that is longer.
pub fn parse_backoff(s: &str) -> Result<Backoff, String> {
    let (base, max) = match s.split_once(',') {
        Some((base, max)) => (parse_window(base)?, Some(parse_window(max)?)),
        None => (parse_window(s)?, None),
    };
    let max = max.unwrap_or(DEFAULT_BACKOFF_MAX.max(base));
    if max < base {
        return Err(format!(
            "{s:?}: MAX is shorter than BASE; give BASE,MAX such as 1m,1h"
        ));
    }
    Ok(Backoff { base, max })
}

fn parse_failures(s: &str) -> Result<NonZeroU32, String> {
    match s.trim().parse::<u32>().map(NonZeroU32::new) {
        Ok(Some(n)) => Ok(n),
        Ok(None) => Err("0 failures would report before anything failed; give at least 1".into()),
        Err(_) => Err(format!(
            "{s:?} is not a number of failures; give a whole number such as 3"
        )),
    }
}

fn parse_cap(s: &str) -> Result<NonZeroUsize, String> {
    match s.trim().parse::<usize>().map(NonZeroUsize::new) {
        Ok(Some(n)) => Ok(n),
        Ok(None) => Err("0 would never start anything; give at least 1".into()),
        Err(_) => Err(format!(
            "{s:?} is not a number of tasks; give a whole number such as 50"
        )),
    }
}

fn parse_top(s: &str) -> Result<NonZeroUsize, String> {
    match s.trim().parse::<usize>().map(NonZeroUsize::new) {
        Ok(Some(n)) => Ok(n),
        _ => Err(format!(
            "{s:?} is not a number of instances; give a whole number such as 10"
        )),
    }
}

fn parse_name(s: OsString) -> Result<OsString, String> {
    let bytes = <OsStr as std::os::unix::ffi::OsStrExt>::as_bytes(&s);
    if bytes.is_empty() {
        return Err("the name is empty".into());
    }
    if bytes.contains(&b'/') {
        return Err(format!(
            "{s:?} contains '/'; the name must be a single path component"
        ));
    }
    if bytes == b"." || bytes == b".." {
        return Err(format!(
            "{s:?} is not a usable name; pick a plain word such as checkmail"
        ));
    }
    Ok(s)
}

#[cfg(test)]
mod tests;
