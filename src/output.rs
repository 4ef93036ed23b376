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

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result};

use crate::cli::OutputMode;
use crate::display::quoted;
use crate::lockname::encode_id;
use crate::platform;
use crate::safedir::{DirKind, SafeDir};
use crate::spawn::Output;

/// `--output dir=PATH`: private, created with mode 0750.
pub const LOG_DIRS: DirKind = DirKind {
    what: "log directory",
    flag: "--output dir=",
    mode: 0o750,
    shared: false,
};

/// A line longer than this is cut and written in pieces, so a task that
/// never prints a newline cannot make scatter's memory grow without bound.
const MAX_LINE: usize = 64 * 1024;

/// The run-wide state of the output mode.
pub struct Outputs {
    mode: OutputMode,
    spool: Option<tempfile::TempDir>,
    /// `dir=PATH`: the log directory, open for the whole run.
    logs: Option<SafeDir>,
    /// `/dev/null`, opened once: every task's stdin (and output with
    /// `null`) is a dup of it, cheaper than opening it per start.
    null: File,
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
    partial: Vec<u8>,
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
            OutputMode::OnFailure => Some(
                tempfile::Builder::new()
                    .prefix("scatter-output-")
                    .tempdir()
                    .context(
                        "cannot create a spool directory for --output on-failure (check TMPDIR)",
                    )?,
            ),
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
            mode: mode.clone(),
            spool,
            logs,
            null,
        })
    }

    /// The stdio for one task, and what scatter keeps to handle it.
    pub fn for_task(&self, id: &std::ffi::OsStr, slot: usize) -> io::Result<(Output, Capture)> {
        let stdin = Stdio::from(self.null.try_clone()?);
        let (out, capture) = match &self.mode {
            OutputMode::Inherit => ((Stdio::inherit(), Stdio::inherit()), Capture::None),
            OutputMode::Null => (both(self.null.try_clone()?)?, Capture::None),
            OutputMode::Dir(_) => (both(self.open_dir_log(id)?)?, Capture::None),
            OutputMode::OnFailure => {
                let dir = self
                    .spool
                    .as_ref()
                    .map(tempfile::TempDir::path)
                    .unwrap_or(Path::new("/tmp"));
                let path = dir.join(format!("{slot}.out"));
                let file = open_log(&path, false, "spool file")?;
                (both(file)?, Capture::Spool(path))
            }
            OutputMode::Tag => {
                let (read, write) = platform::output_pipe()?;
                let pipe = LinePipe {
                    fd: read,
                    partial: Vec::new(),
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

    /// Reads what is available from a tag pipe and writes its whole lines.
    /// Returns true at end of file.
    pub fn read_pipe(&self, tag: &str, pipe: &mut LinePipe) -> bool {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match rustix::io::read(&pipe.fd, &mut buf) {
                Ok(0) => return true,
                Ok(n) => {
                    pipe.partial.extend_from_slice(&buf[..n]);
                    write_lines(tag, &mut pipe.partial, false);
                }
                Err(rustix::io::Errno::AGAIN) => return false,
                Err(rustix::io::Errno::INTR) => continue,
                Err(err) => {
                    log::warn!("{tag}: cannot read the task's output: {err}");
                    return true;
                }
            }
        }
    }

    /// Writes a pipe's last, unterminated line, if any.
    pub fn finish_pipe(&self, tag: &str, pipe: &mut LinePipe) {
        write_lines(tag, &mut pipe.partial, true);
    }

    /// `on-failure`: shows a failed task's output, tagged; then, failed or
    /// not, deletes the spool file.
    pub fn settle_spool(&self, tag: &str, path: &Path, failed: bool) {
        if failed {
            let mut text = Vec::new();
            match File::open(path).and_then(|mut f| f.read_to_end(&mut text)) {
                Ok(_) => write_lines(tag, &mut text, true),
                Err(err) => log::warn!(
                    "{tag}: cannot read its captured output {}: {err}",
                    quoted(path)
                ),
            }
        }
        let _ = std::fs::remove_file(path);
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

/// One file (or pipe end) as both stdout and stderr, so their order is kept.
fn both(file: File) -> io::Result<(Stdio, Stdio)> {
    let err = file.try_clone()?;
    Ok((Stdio::from(file), Stdio::from(err)))
}

/// Opens a task's log or spool file; an error names it as `what`.
fn open_log(path: &Path, truncate: bool, what: &str) -> io::Result<File> {
    use rustix::fs::OFlags;
    let mut flags = OFlags::NOFOLLOW;
    let mut opts = OpenOptions::new();
    opts.append(true).create(true).mode(0o640);
    if truncate {
        // Start each run's log afresh. The lock is held, so no earlier task
        // of this instance is still writing. (std refuses append together
        // with truncate, hence the raw flag.)
        flags |= OFlags::TRUNC;
    } else {
        opts.create_new(true);
    }
    opts.custom_flags(flags.bits() as i32)
        .open(path)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open {what} {}: {e}", quoted(path)),
            )
        })
}

/// Writes every complete line of `buf` (all of it if `flush`) to stdout as
/// `tag: line`, in one write, and keeps the unfinished rest in `buf`.
fn write_lines(tag: &str, buf: &mut Vec<u8>, flush: bool) {
    let mut out = Vec::new();
    let mut start = 0;
    while start < buf.len() {
        let end = match buf[start..].iter().position(|b| *b == b'\n') {
            Some(i) => start + i + 1,
            None if flush || buf.len() - start >= MAX_LINE => buf.len().min(start + MAX_LINE),
            None => break,
        };
        out.extend_from_slice(tag.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(&buf[start..end]);
        if out.last() != Some(&b'\n') {
            out.push(b'\n');
        }
        start = end;
    }
    buf.drain(..start);
    if !out.is_empty() {
        let mut stdout = io::stdout().lock();
        if let Err(err) = stdout.write_all(&out).and_then(|()| stdout.flush()) {
            log::warn!("cannot write task output to stdout: {err}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_lines_wait_for_their_newline() {
        let mut buf = b"one\ntw".to_vec();
        write_lines("t", &mut buf, false);
        assert_eq!(buf, b"tw");
        buf.extend_from_slice(b"o\n");
        write_lines("t", &mut buf, false);
        assert!(buf.is_empty());
    }

    #[test]
    fn flush_writes_the_rest() {
        let mut buf = b"no newline".to_vec();
        write_lines("t", &mut buf, true);
        assert!(buf.is_empty());
    }

    #[test]
    fn endless_lines_are_cut() {
        let mut buf = vec![b'x'; MAX_LINE + 10];
        write_lines("t", &mut buf, false);
        assert_eq!(buf.len(), 10);
    }
}
