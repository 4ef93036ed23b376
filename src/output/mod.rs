//! Where the tasks' output goes (`--output`).
//!
//! * `inherit`: scatter's own stdout and stderr (the default).
//! * `null`: discarded.
//! * `dir=PATH`: each task's stdout and stderr go to `PATH/<encoded-id>.log`,
//!   replaced on every run. Scatter opens the file, hands it to the task and
//!   closes its own copy, so it holds no descriptor per running task. The
//!   directory is private (see [`crate::safedir`]) and held open for the
//!   run; a log file is opened relative to it without following a symlink
//!   or blocking on a FIFO, checked to be a regular file of ours, and only
//!   then truncated. Anything else there fails that instance only.
//! * `tag`: each task writes into a pipe that scatter reads; every line is
//!   written to scatter's stdout as `<id>: line`, whole, so lines of two tasks
//!   never mix. A last line without a newline gets one. After the task's
//!   leader exits, the pipe is read for at most the grace period
//!   (`--kill-after`), so a background child holding it open cannot keep
//!   scatter waiting.
//! * `on-failure`: like chronic, output is kept in a private spool directory
//!   and shown (tagged) only if the task failed or timed out.
//!
//! Nothing here grows with what the tasks print, and nothing waits for
//! scatter's own stdout:
//!
//! * Everything shown goes through [`crate::relay`]: a reader of scatter's
//!   stdout that falls behind costs dropped lines (counted, and reported
//!   once), never a late start.
//! * A line longer than [`MAX_LINE`] (16 KiB) is cut into pieces, each
//!   tagged. That is longer than practically any log line (syslog relays
//!   commonly cut at 1 to 8 KiB, journald at 48 KiB), and short enough that
//!   the unfinished lines of all running tasks, capped together at
//!   [`PARTIAL_BUDGET`] (4 MiB), hold 256 tasks' worst case before the cap
//!   bites. Past the cap, a task's unfinished line is written out (cut) at
//!   once, so 10,000 tasks stuck mid-line cost 4 MiB, not 10,000 × 16 KiB.
//! * A pipe is read at most [`READS_PER_WAKE`] × 16 KiB at a time, so a
//!   task that prints without pause cannot keep the supervisor from its
//!   other work; `poll` reports the rest on the next pass.
//! * `on-failure` shows at most the last [`SHOWN_PER_TASK`] (64 KiB) of a
//!   failed task's output, after a line saying how much was cut, and at
//!   most [`SHOWN_PER_RUN`] (1 MiB) per run, since 500 failures must not
//!   make a 500 MiB cron mail: once the run's share is used up, failed
//!   tasks' output is no longer shown, and one line at the end says for how
//!   many. Only the tail is read, 16 KiB at a time, and lines are cut in
//!   one pass, so time and memory do not depend on how much a task printed.
//! * A spool file that cannot be created (a full or read-only `$TMPDIR`)
//!   does not stop the task: it runs with scatter's own stdout and stderr,
//!   so its output is shown whether it fails or not, and one warning says
//!   so. A spool filesystem that filled up while tasks wrote is noticed
//!   (`fstatvfs`) when a failed task's output is shown, with a line saying
//!   that output may be incomplete.

use std::cell::Cell;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use anyhow::{Context, Result};
use log::warn;
use rustix::io::Errno;

use crate::display::{self, quoted};
use crate::idcode::encode_id;
use crate::platform;
use crate::relay::{self, Stream};
use crate::safedir::{DirKind, SafeDir};
use crate::spawn::{Output, Redirect};

mod body;
mod lines;
mod spool;
#[cfg(test)]
mod tests;

use lines::*;
pub(crate) use lines::{Lines, tagged};
use spool::UNSPOOLED;

/// Where the tasks' stdout and stderr go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputMode {
    /// Scatter's own stdout and stderr.
    Inherit,
    /// Discarded.
    Null,
    /// Through scatter, every line prefixed with `<id>: `, on stdout.
    Tag,
    /// Into `PATH/<encoded-id>.log`, replaced on each run.
    Dir(PathBuf),
    /// Kept aside and shown (tagged) only if the task failed or timed out.
    OnFailure,
}

impl OutputMode {
    /// Parses `--output`: `inherit`, `null`, `tag`, `dir=PATH` or `on-failure`.
    pub fn parse(s: &str) -> Result<OutputMode, String> {
        Ok(match s {
            "inherit" => OutputMode::Inherit,
            "null" => OutputMode::Null,
            "tag" => OutputMode::Tag,
            "on-failure" => OutputMode::OnFailure,
            _ => match s.strip_prefix("dir=") {
                Some("") => return Err("dir= needs a directory, as in dir=/var/log/scatter".into()),
                Some(dir) => OutputMode::Dir(PathBuf::from(dir)),
                None => {
                    return Err(format!(
                        "{s:?} is not an output mode; use inherit, null, tag, dir=PATH or on-failure"
                    ));
                }
            },
        })
    }
}

/// `--output dir=PATH`: private, created with mode 0750.
pub const LOG_DIRS: DirKind = DirKind {
    what: "log directory",
    flag: "--output dir=",
    mode: 0o750,
    shared: false,
};

/// A longer line is cut and written in pieces, so a task that never prints
/// a newline cannot make scatter's memory grow without bound.
pub const MAX_LINE: usize = 16 * 1024;
/// The most bytes held in unfinished lines, all running tasks together.
pub const PARTIAL_BUDGET: usize = 4 << 20;
/// `on-failure`: the most output shown for one failed task (its end).
pub const SHOWN_PER_TASK: u64 = 64 * 1024;
/// `on-failure`: the most output shown in one run.
pub const SHOWN_PER_RUN: u64 = 1 << 20;
/// One read from a pipe or spool file.
const READ_SIZE: usize = 16 * 1024;
/// Reads from one pipe before the supervisor turns to other work.
pub const READS_PER_WAKE: usize = 4;
/// Less free space than this on the spool filesystem counts as full: a task
/// whose write failed with ENOSPC leaves at most a block or two free.
const SPOOL_FULL_BELOW: u64 = 64 * 1024;

/// The run-wide state of the output mode.
pub struct Outputs {
    mode: OutputMode,
    spool: Option<tempfile::TempDir>,
    /// `dir=PATH`: the log directory, open for the whole run.
    logs: Option<SafeDir>,
    /// `/dev/null`, opened once: every task's stdin (and output with
    /// `null`) is a dup of it, cheaper than opening it per start.
    null: File,
    /// `tag`: bytes held in unfinished lines, all tasks together.
    partial_total: Cell<usize>,
    /// `on-failure`: output bytes shown so far in this run.
    shown: Cell<u64>,
    /// `on-failure`: failed tasks whose output the run's limit held back.
    not_shown: Cell<usize>,
    /// `on-failure`: the warning that the spool is unusable was given.
    spool_warned: Cell<bool>,
}

/// What scatter keeps for one running task's output.
pub enum Capture {
    None,
    /// `tag`: the read end of the task's pipe and its unfinished line.
    Pipe(LinePipe),
    /// `on-failure`: the spool file holding its output.
    Spool(PathBuf),
}

pub struct LinePipe {
    fd: OwnedFd,
    lines: Lines,
}

impl LinePipe {
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }
}

impl Outputs {
    /// Prepares the output mode: creates the log or spool directory.
    pub fn new(mode: &OutputMode) -> Result<Outputs> {
        let spool = match mode {
            OutputMode::OnFailure => {
                match tempfile::Builder::new().prefix("scatter-output-").tempdir() {
                    Ok(dir) => Some(dir),
                    Err(err) => {
                        warn!(
                            "cannot create a spool directory for --output on-failure in {}: {err}; {UNSPOOLED}",
                            quoted(std::env::temp_dir())
                        );
                        None
                    }
                }
            }
            _ => None,
        };
        let logs = match mode {
            OutputMode::Dir(dir) => Some(SafeDir::create(dir, LOG_DIRS)?),
            _ => None,
        };
        let null = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .context("cannot open /dev/null")?;
        Ok(Outputs {
            spool_warned: Cell::new(matches!(mode, OutputMode::OnFailure) && spool.is_none()),
            mode: mode.clone(),
            spool,
            logs,
            null,
            partial_total: Cell::new(0),
            shown: Cell::new(0),
            not_shown: Cell::new(0),
        })
    }

    /// The stdio for one task, and what scatter keeps to handle it. The
    /// task's stdin is scatter's `/dev/null`, and its stdout and stderr
    /// share one descriptor, so their order is kept; the spawn duplicates
    /// them in the child, so nothing is duplicated here.
    pub fn for_task(&self, id: &std::ffi::OsStr, slot: usize) -> io::Result<(Output, Capture)> {
        use std::os::fd::{AsRawFd, OwnedFd};
        let both = |fd: OwnedFd| Output {
            stdin: self.null.as_raw_fd(),
            stdout: Redirect::Fd(fd.as_raw_fd()),
            stderr: Redirect::Fd(fd.as_raw_fd()),
            keep: Some(fd),
        };
        let inherit = Output {
            stdin: self.null.as_raw_fd(),
            stdout: Redirect::Inherit,
            stderr: Redirect::Inherit,
            keep: None,
        };
        Ok(match &self.mode {
            OutputMode::Inherit => (inherit, Capture::None),
            OutputMode::Null => {
                let null = Output {
                    stdout: Redirect::Fd(self.null.as_raw_fd()),
                    stderr: Redirect::Fd(self.null.as_raw_fd()),
                    ..inherit
                };
                (null, Capture::None)
            }
            OutputMode::Dir(_) => (both(self.open_dir_log(id)?.into()), Capture::None),
            OutputMode::OnFailure => match self.spool_file(slot) {
                Some((file, path)) => (both(file.into()), Capture::Spool(path)),
                // Run it anyway, with its output where it would go without
                // --output: losing it silently would be worse.
                None => (inherit, Capture::None),
            },
            OutputMode::Tag => {
                let (read, write) = platform::output_pipe()?;
                let pipe = LinePipe {
                    fd: read,
                    lines: Lines::default(),
                };
                (both(write), Capture::Pipe(pipe))
            }
        })
    }

    /// `dir=PATH`: opens an instance's log file for this run, empty.
    fn open_dir_log(&self, id: &OsStr) -> io::Result<File> {
        use rustix::fs::OFlags;
        let dir = self
            .logs
            .as_ref()
            .ok_or_else(|| io::Error::other("the log directory is not open"))?;
        let name = format!("{}.log", encode_id(id));
        let (file, _) = dir.open_own(
            OsStr::new(&name),
            "log file",
            OFlags::WRONLY | OFlags::APPEND,
            0o640,
        )?;
        // Checked: our own regular file with one link. Only now start this
        // run's log afresh. The lock is held, so no earlier task of this
        // instance is still writing (a child it left behind may be).
        let fail = |what: &str, e: rustix::io::Errno| {
            let e = io::Error::from(e);
            io::Error::new(
                e.kind(),
                format!("cannot {what} log file {}: {e}", quoted(dir.join(&name))),
            )
        };
        rustix::fs::ftruncate(&file, 0).map_err(|e| fail("truncate", e))?;
        // The task gets an ordinary descriptor; O_NONBLOCK only guarded the
        // open against a FIFO.
        rustix::fs::fcntl_getfl(&file)
            .and_then(|flags| rustix::fs::fcntl_setfl(&file, flags - OFlags::NONBLOCK))
            .map_err(|e| fail("set up", e))?;
        Ok(file)
    }

    /// Reads what is available from a tag pipe, up to [`READS_PER_WAKE`]
    /// reads, and relays its whole lines. Returns true at end of file.
    pub fn read_pipe(&self, tag: &str, pipe: &mut LinePipe) -> bool {
        let mut buf = [0u8; READ_SIZE];
        let mut out = TaggedLines::new(tag);
        let mut emit = |piece: &[u8]| out.push(piece);
        let others = self.partial_total.get().saturating_sub(pipe.lines.held());
        let mut eof = false;
        for _ in 0..READS_PER_WAKE {
            match rustix::io::read(&pipe.fd, &mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => pipe.lines.feed(&buf[..n], &mut emit),
                Err(Errno::AGAIN) => break,
                Err(Errno::INTR) => continue,
                Err(err) => {
                    warn!("{tag}: cannot read the task's output: {err}");
                    eof = true;
                    break;
                }
            }
        }
        if others + pipe.lines.held() > PARTIAL_BUDGET {
            pipe.lines.flush(&mut emit);
        }
        self.partial_total.set(others + pipe.lines.held());
        out.relay();
        eof
    }

    /// Writes a pipe's last, unterminated line, if any.
    pub fn finish_pipe(&self, tag: &str, pipe: &mut LinePipe) {
        let total = self.partial_total.get();
        self.partial_total
            .set(total.saturating_sub(pipe.lines.held()));
        let mut out = Vec::new();
        pipe.lines.flush(&mut |piece| tagged(&mut out, tag, piece));
        relay::lines(Stream::Stdout, out);
    }
}

impl Drop for Outputs {
    /// The end of the run: says how many failed tasks' output the run's
    /// limit held back.
    fn drop(&mut self) {
        if let Some(line) = self.held_back() {
            relay::report(Stream::Stdout, line.into_bytes());
        }
    }
}

impl Outputs {
    fn held_back(&self) -> Option<String> {
        let n = self.not_shown.get();
        (n > 0).then(|| {
            format!(
                "scatter: [output of {} not shown: the run's {} limit was reached]\n",
                display::plural(n as u64, "more failed task"),
                display::size(SHOWN_PER_RUN)
            )
        })
    }
}

/// Checks `--output dir=PATH` before the run records anything: creates the
/// directory and refuses it as a real run would, or, with `create` false
/// (the dry run), checks it only if it exists.
pub fn check_log_dir(mode: &OutputMode, create: bool) -> Result<()> {
    if let OutputMode::Dir(dir) = mode {
        if create {
            SafeDir::create(dir, LOG_DIRS)?;
        } else {
            SafeDir::existing(dir, LOG_DIRS)?;
        }
    }
    Ok(())
}
