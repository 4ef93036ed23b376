//! Bounded delivery of what scatter itself writes to stdout and stderr.
//!
//! scatter's stdout and stderr are shared with whoever started it (cron's
//! mail pipe, a terminal, a pager, the journal's stream), and a reader that
//! stops reading must not stop scatter: a blocking write on the supervisor's
//! thread would hold back every later start, timeout and signal. This module
//! owns every byte scatter writes there during a run: task output relayed by
//! `--output tag` and `on-failure` (stdout), the logger's diagnostics
//! (stderr, through [`Writer`]), and the end-of-run report.
//!
//! * **Pushing never blocks.** Callers push bytes into a queue; a writer
//!   thread does the blocking writes. stdout and stderr get one thread each,
//!   or one between them when they are the same file (a terminal, cron's
//!   pipe), so their lines keep their order and never interleave. The
//!   descriptors themselves stay blocking: `O_NONBLOCK` belongs to the open
//!   file description, which cron or the terminal shares, so setting it
//!   would change their behaviour too.
//! * **Bounded; drop and count.** A queue holds at most [`QUEUE_LIMIT`]
//!   bytes of relayed output. What does not fit is dropped in whole lines
//!   and counted, and [`finish`] says once, on stderr, how many lines were
//!   dropped. Task output is never allowed to wait for a reader, so a paused
//!   reader costs lines, not punctuality.
//! * **A broken descriptor** (EPIPE: the reader is gone) is written to no
//!   more: what is queued for it and everything pushed later is discarded
//!   and counted, and [`finish`] says so in one warning, not one per line.
//! * **Without a thread.** If the writer thread cannot be started (EAGAIN
//!   under `RLIMIT_NPROC`), nothing panics: the queue is emptied by the
//!   callers themselves, without blocking. Each push writes while a `poll`
//!   with a zero timeout says the descriptor is writable, at most `PIPE_BUF`
//!   bytes per write, which a pipe accepts whole once it reports POLLOUT (a
//!   terminal or a socket almost always does too). What cannot be written
//!   stays queued, within the same bound, for a later push or the end.
//! * **The report and the end.** [`deliver`] and [`report`] push bytes that
//!   are exempt from the bound (the end-of-run report, error messages,
//!   these notices): they are delivered whole, after everything queued
//!   before them. [`finish`] waits until every queue is empty. That wait has
//!   no time limit, since the report must arrive, but it can be interrupted:
//!   the supervisor's stop-signal handlers are unregistered by then, and
//!   signal-hook leaves the signals caught, so their default action would
//!   not come back and SIGTERM would be ignored. So [`arm`], called as
//!   soon as the supervisor returns (and by any wait), installs handlers of
//!   its own, and SIGTERM, SIGINT or SIGHUP then ends the wait, and
//!   scatter, within 50 ms with exit code 128 + the signal number. A run that a
//!   signal already stopped waits at most [`STOPPED_WAIT`] (2 s).

use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

mod channel;
#[cfg(test)]
mod tests;

use channel::*;

/// The most bytes of bounded output queued per descriptor. 1 MiB rides out
/// a reader that pauses for a moment (a pipe holds only 64 KiB) while
/// keeping scatter's memory small whatever its tasks print.
pub const QUEUE_LIMIT: usize = 1 << 20;

/// How often a waiting [`finish`] looks for a stop signal.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// One of scatter's own output descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn fd(self) -> RawFd {
        match self {
            Stream::Stdout => 1,
            Stream::Stderr => 2,
        }
    }
}

/// Why bytes given to [`deliver`] did not all arrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undelivered {
    /// Writing failed (the error, as text); the rest was discarded.
    Failed(String),
    /// A stop signal (its number) ended the wait.
    Stopped(i32),
}

/// Pushes whole lines of output; when the queue is full, whole lines are
/// dropped and counted. Never blocks.
pub fn lines(stream: Stream, bytes: Vec<u8>) {
    if !bytes.is_empty() {
        relay().channel(stream).push(stream.fd(), bytes, true);
    }
}

/// Counts lines dropped before they were built (too many to hold), as if
/// the queue had dropped them: they are reported the same way.
pub fn dropped(stream: Stream, lines: u64, bytes: u64) {
    if lines > 0 {
        relay().channel(stream).count_dropped(lines, bytes);
    }
}

/// Pushes bytes that must not be dropped (a report, an error message).
/// Never blocks; [`finish`] waits for them.
pub fn report(stream: Stream, bytes: Vec<u8>) {
    if !bytes.is_empty() {
        relay().channel(stream).push(stream.fd(), bytes, false);
    }
}

/// Pushes bytes that must not be dropped and waits until they are written,
/// or until writing fails or a stop signal arrives.
pub fn deliver(stream: Stream, bytes: Vec<u8>) -> Result<(), Undelivered> {
    if bytes.is_empty() {
        return Ok(());
    }
    let channel = relay().channel(stream);
    let seq = channel.push(stream.fd(), bytes, false);
    channel.wait(Some(seq), &stopped)
}

/// Says on stderr what was dropped or lost, then waits until everything
/// queued is written. Returns the stop signal that cut the wait short, if
/// one did.
pub fn finish() -> Option<i32> {
    let relay = RELAY.get()?;
    let notices = |relay: &Relay| {
        let mut text = String::new();
        for channel in relay.channels() {
            text.push_str(&channel.take_notices());
        }
        text.into_bytes()
    };
    let wait = |relay: &Relay| {
        relay
            .channels()
            .iter()
            .find_map(|channel| match channel.wait(None, &stopped) {
                Err(Undelivered::Stopped(sig)) => Some(sig),
                _ => None,
            })
    };
    report(Stream::Stderr, notices(relay));
    let stop = wait(relay);
    // What the last writes lost (a reader gone meanwhile) is said too.
    let late = notices(relay);
    if stop.is_some() || late.is_empty() {
        return stop;
    }
    report(Stream::Stderr, late);
    wait(relay)
}

/// A `Write` that pushes each write as bounded lines: a logger's target.
pub struct Writer(pub Stream);

impl io::Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        lines(self.0, buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Relay {
    stdout: Arc<Channel>,
    /// The same channel as `stdout` when both are the same file.
    stderr: Arc<Channel>,
}

impl Relay {
    fn channel(&self, stream: Stream) -> &Arc<Channel> {
        match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        }
    }

    fn channels(&self) -> Vec<&Arc<Channel>> {
        if Arc::ptr_eq(&self.stdout, &self.stderr) {
            vec![&self.stdout]
        } else {
            vec![&self.stdout, &self.stderr]
        }
    }
}

static RELAY: OnceLock<Relay> = OnceLock::new();

fn relay() -> &'static Relay {
    RELAY.get_or_init(|| {
        let stdout = Channel::new("stdout", QUEUE_LIMIT, true);
        let stderr = if same_file(1, 2) {
            Arc::clone(&stdout)
        } else {
            Channel::new("stderr", QUEUE_LIMIT, true)
        };
        Relay { stdout, stderr }
    })
}

/// Whether two descriptors refer to the same file (device and inode).
fn same_file(a: RawFd, b: RawFd) -> bool {
    // SAFETY: 1 and 2 stay open for the life of the process: std reopens
    // them on /dev/null at start-up if they were closed, and scatter never
    // closes them.
    let (a, b) = unsafe { (BorrowedFd::borrow_raw(a), BorrowedFd::borrow_raw(b)) };
    match (rustix::fs::fstat(a), rustix::fs::fstat(b)) {
        (Ok(a), Ok(b)) => a.st_dev == b.st_dev && a.st_ino == b.st_ino,
        _ => false,
    }
}

/// How long the end-of-run wait may last after scatter was stopped by a
/// signal: whoever sent it wants scatter gone, and a reader that does not
/// take the report within this long is not going to.
pub const STOPPED_WAIT: Duration = Duration::from_secs(2);

/// After a stop signal ended the run: waiting for readers ends, as if that
/// signal had come again, [`STOPPED_WAIT`] from now.
pub fn stopped_by(sig: i32) {
    let _ = GIVE_UP.set((Instant::now() + STOPPED_WAIT, sig));
}

static STOPS: AtomicUsize = AtomicUsize::new(0);
static LAST_STOP: AtomicUsize = AtomicUsize::new(0);
static ARMED: OnceLock<()> = OnceLock::new();
static GIVE_UP: OnceLock<(Instant, i32)> = OnceLock::new();

/// The stop signal received since the end-of-run wait began, if any, or
/// the one that stopped the run once [`STOPPED_WAIT`] has passed.
fn stopped() -> Option<i32> {
    if let Some((at, sig)) = GIVE_UP.get()
        && Instant::now() >= *at
    {
        return Some(*sig);
    }
    arm();
    (STOPS.load(Ordering::SeqCst) > 0).then(|| LAST_STOP.load(Ordering::SeqCst) as i32)
}

/// A stop signal (SIGTERM, SIGINT, SIGHUP) received since the end-of-run
/// handlers were armed, if any: what scatter does after a run (the
/// `--on-change` hooks) ends on it.
pub fn stop_received() -> Option<i32> {
    stopped()
}

/// Catches SIGTERM, SIGINT and SIGHUP from now on, so that the end-of-run
/// wait can be cut short. Call it as soon as the supervisor's own handlers
/// are gone: until then a stop signal is its business, and in between the
/// signal would be caught and ignored.
pub fn arm() {
    ARMED.get_or_init(|| {
        for sig in [SIGTERM, SIGINT, SIGHUP] {
            // SAFETY: the action only stores to atomics, which is
            // async-signal-safe; it allocates nothing and takes no lock.
            let registered = unsafe {
                signal_hook::low_level::register(sig, move || {
                    LAST_STOP.store(sig as usize, Ordering::SeqCst);
                    STOPS.fetch_add(1, Ordering::SeqCst);
                })
            };
            // Without a handler the wait is merely uninterruptible by it.
            drop(registered);
        }
    });
}
