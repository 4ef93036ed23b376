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
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result};
use log::warn;
use rustix::io::Errno;

use crate::cli::OutputMode;
use crate::display::{self, quoted};
use crate::lockname::encode_id;
use crate::platform;
use crate::relay::{self, Stream};
use crate::safedir::{DirKind, SafeDir};
use crate::spawn::Output;

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

    /// The stdio for one task, and what scatter keeps to handle it.
    pub fn for_task(&self, id: &std::ffi::OsStr, slot: usize) -> io::Result<(Output, Capture)> {
        let stdin = Stdio::from(self.null.try_clone()?);
        let (out, capture) = match &self.mode {
            OutputMode::Inherit => ((Stdio::inherit(), Stdio::inherit()), Capture::None),
            OutputMode::Null => (both(self.null.try_clone()?)?, Capture::None),
            OutputMode::Dir(_) => (both(self.open_dir_log(id)?)?, Capture::None),
            OutputMode::OnFailure => match self.spool_file(slot) {
                Some((file, path)) => (both(file)?, Capture::Spool(path)),
                // Run it anyway, with its output where it would go without
                // --output: losing it silently would be worse.
                None => ((Stdio::inherit(), Stdio::inherit()), Capture::None),
            },
            OutputMode::Tag => {
                let (read, write) = platform::output_pipe()?;
                let pipe = LinePipe {
                    fd: read,
                    lines: Lines::default(),
                };
                (both(File::from(write))?, Capture::Pipe(pipe))
            }
        };
        let output = Output {
            stdin,
            stdout: out.0,
            stderr: out.1,
        };
        Ok((output, capture))
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

    /// A new spool file for the task of `slot`, or `None` (with one
    /// warning per run) when the spool cannot hold one.
    fn spool_file(&self, slot: usize) -> Option<(File, PathBuf)> {
        let path = self.spool.as_ref()?.path().join(format!("{slot}.out"));
        match open_spool(&path) {
            Ok(file) => Some((file, path)),
            Err(err) => {
                if !self.spool_warned.replace(true) {
                    warn!("{}; {UNSPOOLED}", crate::display::error_text(&err));
                }
                None
            }
        }
    }

    /// Reads what is available from a tag pipe, up to [`READS_PER_WAKE`]
    /// reads, and relays its whole lines. Returns true at end of file.
    pub fn read_pipe(&self, tag: &str, pipe: &mut LinePipe) -> bool {
        let mut buf = [0u8; READ_SIZE];
        let mut out = Vec::new();
        let mut emit = |piece: &[u8]| tagged(&mut out, tag, piece);
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
        relay::lines(Stream::Stdout, out);
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

    /// `on-failure`: shows the end of a failed task's output, tagged; then,
    /// failed or not, deletes the spool file.
    pub fn settle_spool(&self, tag: &str, path: &Path, failed: bool) {
        if failed {
            match self.spool_tail(tag, path) {
                Ok(out) => relay::lines(Stream::Stdout, out),
                Err(err) => warn!(
                    "{tag}: cannot read its captured output {}: {err}",
                    quoted(path)
                ),
            }
        }
        let _ = std::fs::remove_file(path);
    }

    /// The end of a spool file as tagged lines, within the task's and the
    /// run's limits.
    fn spool_tail(&self, tag: &str, path: &Path) -> io::Result<Vec<u8>> {
        let mut file = File::open(path)?;
        let size = file.metadata()?.len();
        let full = spool_full(&file);
        let left = SHOWN_PER_RUN.saturating_sub(self.shown.get());
        if size > 0 && left == 0 {
            self.not_shown.set(self.not_shown.get() + 1);
            return Ok(Vec::new());
        }
        let shown = size.min(SHOWN_PER_TASK).min(left);
        let mut out = Vec::new();
        if shown < size {
            let line = format!(
                "[… {} of output cut; the last {} follow]",
                display::size(size - shown),
                display::size(shown)
            );
            tagged(&mut out, tag, line.as_bytes());
            file.seek(SeekFrom::Start(size - shown))?;
        }
        // Only what was there when the task ended: a child it left behind
        // may still be appending.
        let mut rest = file.take(shown);
        let mut lines = Lines::default();
        let mut emit = |piece: &[u8]| tagged(&mut out, tag, piece);
        let mut buf = [0u8; READ_SIZE];
        loop {
            match rest.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => lines.feed(&buf[..n], &mut emit),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        lines.flush(&mut emit);
        if full {
            let tmp = path.parent().and_then(Path::parent).unwrap_or(path);
            let line = format!(
                "[output may be incomplete: the spool filesystem ({}) is full]",
                quoted(tmp)
            );
            tagged(&mut out, tag, line.as_bytes());
        }
        self.shown.set(self.shown.get() + shown);
        Ok(out)
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
                "scatter: [output of {n} more failed task{} not shown: the run's {} limit was reached]\n",
                if n == 1 { "" } else { "s" },
                display::size(SHOWN_PER_RUN)
            )
        })
    }
}

/// What the spool warnings add: where such a task's output goes instead.
const UNSPOOLED: &str = "tasks without a spool file write to scatter's own stdout and stderr, \
    whether they fail or not";

/// Whether the filesystem holding `file` has (next to) no room left.
fn spool_full(file: &File) -> bool {
    let Ok(fs) = rustix::fs::fstatvfs(file) else {
        return false;
    };
    // The tasks run as scatter's user; root may also fill the blocks the
    // filesystem reserves for it.
    let free = if platform::euid() == 0 {
        fs.f_bfree
    } else {
        fs.f_bavail
    };
    let block = if fs.f_frsize > 0 {
        fs.f_frsize
    } else {
        fs.f_bsize
    };
    free.saturating_mul(block) < SPOOL_FULL_BELOW
}

/// A stream cut into lines of at most [`MAX_LINE`] bytes, in one pass: each
/// byte is looked at once however long the line, and only the unfinished
/// end is kept.
#[derive(Default)]
struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    /// Calls `emit` with each complete piece of the stream so far (a line
    /// with its newline, or [`MAX_LINE`] bytes of a longer one) and keeps
    /// the unfinished rest.
    fn feed(&mut self, mut data: &[u8], emit: &mut impl FnMut(&[u8])) {
        while !data.is_empty() {
            let room = MAX_LINE - self.partial.len();
            let window = &data[..data.len().min(room)];
            let end = match memchr::memchr(b'\n', window) {
                Some(i) => i + 1,
                None if window.len() == room => room,
                None => {
                    self.partial.extend_from_slice(window);
                    return;
                }
            };
            if self.partial.is_empty() {
                emit(&data[..end]);
            } else {
                self.partial.extend_from_slice(&data[..end]);
                emit(&self.partial);
                // Hand the memory back: most tasks are between lines most
                // of the time, and thousands may be running.
                self.partial = Vec::new();
            }
            data = &data[end..];
        }
    }

    /// Emits the unfinished rest, if any.
    fn flush(&mut self, emit: &mut impl FnMut(&[u8])) {
        if !self.partial.is_empty() {
            emit(&self.partial);
            self.partial = Vec::new();
        }
    }

    /// Memory held for the unfinished rest.
    fn held(&self) -> usize {
        self.partial.capacity()
    }
}

/// Appends `tag: piece` to `out`, with a newline if the piece has none.
fn tagged(out: &mut Vec<u8>, tag: &str, piece: &[u8]) {
    out.reserve(tag.len() + 2 + piece.len() + 1);
    out.extend_from_slice(tag.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(piece);
    if !piece.ends_with(b"\n") {
        out.push(b'\n');
    }
}

/// One file (or pipe end) as both stdout and stderr, so their order is kept.
fn both(file: File) -> io::Result<(Stdio, Stdio)> {
    let err = file.try_clone()?;
    Ok((Stdio::from(file), Stdio::from(err)))
}

/// Creates a task's spool file, in scatter's own private spool directory.
fn open_spool(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open spool file {}: {e}", quoted(path)),
            )
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(chunks: &[&[u8]]) -> (Vec<Vec<u8>>, Vec<u8>) {
        let mut lines = Lines::default();
        let mut pieces = Vec::new();
        for chunk in chunks {
            lines.feed(chunk, &mut |p: &[u8]| pieces.push(p.to_vec()));
        }
        (pieces, lines.partial.clone())
    }

    #[test]
    fn partial_lines_wait_for_their_newline() {
        let (pieces, rest) = cut(&[b"one\ntw", b"o\nthr"]);
        assert_eq!(pieces, [b"one\n".to_vec(), b"two\n".to_vec()]);
        assert_eq!(rest, b"thr");
    }

    #[test]
    fn flush_writes_the_rest() {
        let mut lines = Lines::default();
        let mut out = Vec::new();
        lines.feed(b"no newline", &mut |p: &[u8]| tagged(&mut out, "t", p));
        assert!(out.is_empty());
        lines.flush(&mut |p: &[u8]| tagged(&mut out, "t", p));
        assert_eq!(out, b"t: no newline\n");
        assert_eq!(lines.held(), 0, "memory handed back");
    }

    #[test]
    fn endless_lines_are_cut_at_max_line() {
        let data = vec![b'x'; 3 * MAX_LINE + 10];
        let (pieces, rest) = cut(&[&data[..1000], &data[1000..]]);
        assert_eq!(pieces.len(), 3);
        assert!(pieces.iter().all(|p| p.len() == MAX_LINE));
        assert_eq!(rest.len(), 10);
    }

    #[test]
    fn cutting_is_linear() {
        // 64 MiB without a newline, fed in pipe-sized reads: quadratic
        // rescanning would take minutes; one pass takes milliseconds.
        let chunk = vec![b'x'; READ_SIZE];
        let mut lines = Lines::default();
        let mut total = 0usize;
        let started = std::time::Instant::now();
        for _ in 0..(64 << 20) / READ_SIZE {
            lines.feed(&chunk, &mut |p: &[u8]| total += p.len());
        }
        assert_eq!(total, 64 << 20);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    fn on_failure() -> Outputs {
        Outputs::new(&OutputMode::OnFailure).unwrap()
    }

    fn spool(outputs: &Outputs, slot: usize, content: &[u8]) -> PathBuf {
        let (mut file, path) = outputs.spool_file(slot).unwrap();
        std::io::Write::write_all(&mut file, content).unwrap();
        path
    }

    #[test]
    fn a_long_spool_shows_its_last_64_kib_after_a_cut_line() {
        let outputs = on_failure();
        let mut content = vec![b'a'; 1_000_000];
        content.extend_from_slice(b"\nthe end\n");
        let path = spool(&outputs, 0, &content);
        let out = outputs.spool_tail("t", &path).unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "t: [… 912.6 KiB of output cut; the last 64 KiB follow]"
        );
        // The rest: 64 KiB of the task's own bytes (two of them the
        // newlines `lines()` strips), cut into tagged pieces.
        let body: usize = lines.clone().map(|l| l.len() - "t: ".len()).sum();
        assert_eq!(body + 2, SHOWN_PER_TASK as usize);
        assert_eq!(lines.count(), 5, "4 pieces of 16 KiB, the last line");
        assert!(text.ends_with("t: the end\n"));
        assert_eq!(outputs.shown.get(), SHOWN_PER_TASK);
    }

    #[test]
    fn a_short_spool_is_shown_whole() {
        let outputs = on_failure();
        let path = spool(&outputs, 0, b"one\ntwo");
        let out = outputs.spool_tail("t", &path).unwrap();
        assert_eq!(out, b"t: one\nt: two\n");
    }

    #[test]
    fn the_run_limit_holds_back_later_failures() {
        let outputs = on_failure();
        let content = vec![b'z'; 200_000];
        let whole = (SHOWN_PER_RUN / SHOWN_PER_TASK) as usize;
        for slot in 0..whole + 3 {
            let path = spool(&outputs, slot, &content);
            let out = outputs.spool_tail("t", &path).unwrap();
            assert_eq!(out.is_empty(), slot >= whole, "slot {slot}");
        }
        assert_eq!(outputs.shown.get(), SHOWN_PER_RUN);
        // Empty output of a failed task is not "held back".
        let path = spool(&outputs, 99, b"");
        outputs.spool_tail("t", &path).unwrap();
        assert_eq!(
            outputs.held_back().unwrap(),
            "scatter: [output of 3 more failed tasks not shown: the run's 1 MiB limit was reached]\n"
        );
        outputs.not_shown.set(0);
    }
}
