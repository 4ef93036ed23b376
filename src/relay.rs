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

use std::collections::VecDeque;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

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
    let mut notices = String::new();
    for channel in relay.channels() {
        notices.push_str(&channel.take_notices());
    }
    report(Stream::Stderr, notices.into_bytes());
    relay
        .channels()
        .iter()
        .find_map(|channel| match channel.wait(None, &stopped) {
            Err(Undelivered::Stopped(sig)) => Some(sig),
            _ => None,
        })
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

/// Lines and bytes counted for a notice.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    lines: u64,
    bytes: u64,
}

impl Tally {
    fn add(&mut self, bytes: &[u8]) {
        self.lines += count_lines(bytes);
        self.bytes += bytes.len() as u64;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Nothing pushed yet: the thread starts with the first push.
    Idle,
    Thread,
    /// The thread could not be started: pushes write without blocking.
    Inline,
}

struct Chunk {
    seq: u64,
    fd: RawFd,
    bytes: Vec<u8>,
    /// Counted against the queue's bound and dropped when it is full.
    bounded: bool,
}

struct State {
    queue: VecDeque<Chunk>,
    /// Bytes of the front chunk already written (inline mode only).
    front_written: usize,
    /// Bytes of bounded chunks queued or being written.
    bounded: usize,
    mode: Mode,
    /// The thread has taken a chunk out of the queue and is writing it.
    writing: bool,
    /// Sequence number of the last chunk pushed.
    pushed: u64,
    /// Every chunk up to this one has been written or discarded.
    completed: u64,
    /// The first write error; nothing is written after it.
    error: Option<String>,
    /// The first chunk that was not delivered because of `error`.
    failed_from: Option<u64>,
    /// Dropped because the queue was full.
    dropped: Tally,
    /// Discarded because of `error`.
    lost: Tally,
}

struct Channel {
    name: &'static str,
    limit: usize,
    /// Whether a writer thread may be started (tests force inline mode).
    threads: bool,
    state: Mutex<State>,
    /// Wakes the writer thread: the queue is no longer empty.
    work: Condvar,
    /// Wakes waiters: a chunk left the queue.
    progress: Condvar,
}

impl Channel {
    fn new(name: &'static str, limit: usize, threads: bool) -> Arc<Channel> {
        Arc::new(Channel {
            name,
            limit,
            threads,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                front_written: 0,
                bounded: 0,
                mode: Mode::Idle,
                writing: false,
                pushed: 0,
                completed: 0,
                error: None,
                failed_from: None,
                dropped: Tally::default(),
                lost: Tally::default(),
            }),
            work: Condvar::new(),
            progress: Condvar::new(),
        })
    }

    /// A poisoned lock only means a panic elsewhere; the state is still
    /// consistent, and output must go on.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `bytes` for `fd`; returns its sequence number.
    fn push(self: &Arc<Self>, fd: RawFd, mut bytes: Vec<u8>, bounded: bool) -> u64 {
        let mut st = self.lock();
        st.pushed += 1;
        let seq = st.pushed;
        if st.error.is_some() {
            if bounded {
                st.lost.add(&bytes);
            }
            st.completed = seq;
            return seq;
        }
        if bounded {
            let room = self.limit.saturating_sub(st.bounded);
            if bytes.len() > room {
                let keep = whole_lines_within(&bytes, room);
                st.dropped.add(&bytes[keep..]);
                bytes.truncate(keep);
                if bytes.is_empty() {
                    return seq;
                }
            }
            st.bounded += bytes.len();
        }
        st.queue.push_back(Chunk {
            seq,
            fd,
            bytes,
            bounded,
        });
        if st.mode == Mode::Idle {
            st.mode = if self.threads && self.start_thread() {
                Mode::Thread
            } else {
                Mode::Inline
            };
        }
        match st.mode {
            Mode::Thread => self.work.notify_one(),
            Mode::Inline | Mode::Idle => self.pump(&mut st),
        }
        seq
    }

    fn start_thread(self: &Arc<Self>) -> bool {
        let channel = Arc::clone(self);
        std::thread::Builder::new()
            .name(format!("scatter-{}", self.name))
            // It only ever writes: a small stack is plenty.
            .stack_size(64 * 1024)
            .spawn(move || channel.writer_loop())
            .is_ok()
    }

    fn writer_loop(&self) {
        let mut st = self.lock();
        loop {
            let Some(chunk) = st.queue.pop_front() else {
                st = self.work.wait(st).unwrap_or_else(PoisonError::into_inner);
                continue;
            };
            st.writing = true;
            drop(st);
            let result = write_all(chunk.fd, &chunk.bytes);
            st = self.lock();
            st.writing = false;
            if chunk.bounded {
                st.bounded = st.bounded.saturating_sub(chunk.bytes.len());
            }
            st.completed = chunk.seq;
            if let Err(err) = result {
                st.fail(&err, Some(&chunk));
            }
            self.progress.notify_all();
        }
    }

    /// Inline mode: writes what the descriptors take without blocking.
    fn pump(&self, st: &mut State) {
        while let Some(chunk) = st.queue.front() {
            let fd = borrow(chunk.fd);
            if !writable_now(fd) {
                return;
            }
            let start = st.front_written;
            let end = chunk.bytes.len().min(start + rustix::pipe::PIPE_BUF);
            match rustix::io::write(fd, &chunk.bytes[start..end]) {
                Ok(n) => {
                    st.front_written += n;
                    if st.front_written == chunk.bytes.len() {
                        let chunk = st.queue.pop_front().expect("front chunk");
                        st.front_written = 0;
                        if chunk.bounded {
                            st.bounded = st.bounded.saturating_sub(chunk.bytes.len());
                        }
                        st.completed = chunk.seq;
                        self.progress.notify_all();
                    }
                }
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => return,
                Err(err) => {
                    st.fail(&err.into(), None);
                    self.progress.notify_all();
                    return;
                }
            }
        }
    }

    /// Waits until chunk `seq` (or, with `None`, everything) has left the
    /// queue, or until `stop` reports a signal.
    fn wait(&self, seq: Option<u64>, stop: &dyn Fn() -> Option<i32>) -> Result<(), Undelivered> {
        let mut st = self.lock();
        loop {
            let done = match seq {
                Some(seq) => st.completed >= seq,
                None => st.queue.is_empty() && !st.writing,
            };
            if done {
                return match (seq, st.failed_from) {
                    (Some(seq), Some(failed)) if failed <= seq => Err(Undelivered::Failed(
                        st.error.clone().unwrap_or_else(|| "write error".into()),
                    )),
                    _ => Ok(()),
                };
            }
            if let Some(sig) = stop() {
                return Err(Undelivered::Stopped(sig));
            }
            if st.mode == Mode::Thread {
                st = self
                    .progress
                    .wait_timeout(st, STOP_CHECK)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                continue;
            }
            self.pump(&mut st);
            let Some(fd) = st.queue.front().map(|c| c.fd) else {
                continue;
            };
            // Wait for the reader without holding the lock, so that other
            // threads can still push (and drop) meanwhile.
            drop(st);
            let mut fds = [PollFd::from_borrowed_fd(borrow(fd), PollFlags::OUT)];
            let timeout = Timespec::try_from(STOP_CHECK).expect("small timeout");
            let _ = rustix::event::poll(&mut fds, Some(&timeout));
            st = self.lock();
        }
    }

    /// One warning line for each kind of loss since the last call.
    fn take_notices(&self) -> String {
        let mut st = self.lock();
        let mut text = String::new();
        let dropped = std::mem::take(&mut st.dropped);
        if dropped.lines > 0 {
            text.push_str(&format!(
                "scatter: warning: {} of output dropped ({}): the reader of {} was not keeping up\n",
                plural(dropped.lines, "line"),
                crate::display::size(dropped.bytes),
                self.display_name(),
            ));
        }
        let lost = std::mem::take(&mut st.lost);
        if lost.lines > 0 {
            text.push_str(&format!(
                "scatter: warning: cannot write to {}: {}; {} of output lost\n",
                self.display_name(),
                st.error.as_deref().unwrap_or("write error"),
                plural(lost.lines, "line"),
            ));
        }
        text
    }

    fn display_name(&self) -> &'static str {
        match RELAY.get() {
            Some(relay) if Arc::ptr_eq(&relay.stdout, &relay.stderr) => "stdout and stderr",
            _ => self.name,
        }
    }
}

impl State {
    /// After a write error: discards everything queued, and remembers the
    /// error so that later pushes are discarded too.
    fn fail(&mut self, err: &io::Error, in_flight: Option<&Chunk>) {
        if self.error.is_none() {
            self.error = Some(crate::display::error_text(err));
        }
        let mut first = None;
        for chunk in in_flight.into_iter().chain(self.queue.iter()) {
            first = first.or(Some(chunk.seq));
            if chunk.bounded {
                self.lost.add(&chunk.bytes);
            }
        }
        if self.failed_from.is_none() {
            self.failed_from = first;
        }
        self.queue.clear();
        self.front_written = 0;
        self.bounded = 0;
        self.completed = self.pushed;
    }
}

/// How much of `bytes`, in whole lines, fits in `room` bytes.
fn whole_lines_within(bytes: &[u8], room: usize) -> usize {
    if bytes.len() <= room {
        return bytes.len();
    }
    memchr::memrchr(b'\n', &bytes[..room]).map_or(0, |i| i + 1)
}

/// Lines in `bytes`, counting an unterminated last one.
fn count_lines(bytes: &[u8]) -> u64 {
    let newlines = memchr::memchr_iter(b'\n', bytes).count() as u64;
    newlines + u64::from(!bytes.is_empty() && !bytes.ends_with(b"\n"))
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn borrow<'a>(fd: RawFd) -> BorrowedFd<'a> {
    // SAFETY: the descriptors written to are 1 and 2, open for the life of
    // the process (see `same_file`), or, in tests, pipes the test keeps
    // open for as long as the channel writes to them.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// Whether `poll` with a zero timeout reports the descriptor writable (or
/// in error, which the next write will tell).
fn writable_now(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::from_borrowed_fd(fd, PollFlags::OUT)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
}

/// The writer thread's blocking write of a whole chunk.
fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    let fd = borrow(fd);
    while !buf.is_empty() {
        match rustix::io::write(fd, buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN) => {
                // Someone sharing the descriptor made it non-blocking: wait
                // here, on this thread, for room.
                let mut fds = [PollFd::from_borrowed_fd(fd, PollFlags::OUT)];
                let _ = rustix::event::poll(&mut fds, None);
            }
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, OwnedFd};

    fn never() -> Option<i32> {
        None
    }

    /// A pipe whose write end is non-blocking only as far as the test
    /// needs: `fill` stuffs it until it is full.
    fn pipe() -> (OwnedFd, OwnedFd) {
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap()
    }

    fn fill(write: &OwnedFd) {
        let flags = rustix::fs::fcntl_getfl(write).unwrap();
        rustix::fs::fcntl_setfl(write, flags | rustix::fs::OFlags::NONBLOCK).unwrap();
        let block = [b'.'; 4096];
        while rustix::io::write(write, &block).is_ok() {}
        rustix::fs::fcntl_setfl(write, flags).unwrap();
    }

    fn read_all(read: &OwnedFd) -> Vec<u8> {
        let flags = rustix::fs::fcntl_getfl(read).unwrap();
        rustix::fs::fcntl_setfl(read, flags | rustix::fs::OFlags::NONBLOCK).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        while let Ok(n) = rustix::io::read(read, &mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        rustix::fs::fcntl_setfl(read, flags).unwrap();
        out
    }

    #[test]
    fn whole_lines_are_kept_or_dropped() {
        assert_eq!(whole_lines_within(b"ab\ncd\nef\n", 100), 9);
        assert_eq!(whole_lines_within(b"ab\ncd\nef\n", 7), 6);
        assert_eq!(whole_lines_within(b"ab\ncd\nef\n", 2), 0);
        assert_eq!(count_lines(b"a\nb\n"), 2);
        assert_eq!(count_lines(b"a\nb"), 2);
        assert_eq!(count_lines(b""), 0);
    }

    #[test]
    fn a_full_queue_drops_whole_lines_and_counts_them() {
        let (read, write) = pipe();
        fill(&write);
        let channel = Channel::new("test", 10, false);
        channel.push(write.as_raw_fd(), b"1234\n".to_vec(), true);
        // 5 bytes of room left: "ab\n" fits, "cdef\n" does not.
        channel.push(write.as_raw_fd(), b"ab\ncdef\n".to_vec(), true);
        channel.push(write.as_raw_fd(), b"more\nlines\n".to_vec(), true);
        assert_eq!(
            channel.lock().dropped,
            Tally {
                lines: 3,
                bytes: 16
            }
        );
        // Bytes that must arrive ignore the bound.
        channel.push(write.as_raw_fd(), vec![b'r'; 100], false);
        let notices = channel.take_notices();
        assert!(
            notices.contains("3 lines of output dropped (16 bytes)"),
            "{notices}"
        );
        assert_eq!(channel.take_notices(), "", "said once");
        // Once the reader catches up, everything queued arrives, in order.
        let mut seen = read_all(&read);
        channel.wait(None, &never).unwrap();
        seen.extend(read_all(&read));
        let text = String::from_utf8(seen).unwrap();
        let tail = text.trim_start_matches('.');
        assert_eq!(tail, format!("1234\nab\n{}", "r".repeat(100)));
    }

    #[test]
    fn without_a_thread_pushes_write_only_what_fits() {
        let (read, write) = pipe();
        let channel = Channel::new("test", 1 << 20, false);
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        channel.push(write.as_raw_fd(), big.clone(), false);
        {
            // The push returned with the pipe full and the rest queued.
            let st = channel.lock();
            assert_eq!(st.mode, Mode::Inline);
            assert_eq!(st.queue.len(), 1);
            assert!(st.front_written > 0 && st.front_written < big.len());
        }
        let want = big.len();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 8192];
            while got.len() < want {
                let n = rustix::io::read(&read, &mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            got
        });
        // The end-of-run wait writes the rest as the reader makes room.
        channel.wait(None, &never).unwrap();
        assert_eq!(reader.join().unwrap(), big);
    }

    #[test]
    fn a_broken_pipe_is_reported_once_and_fails_delivery() {
        let (read, write) = pipe();
        drop(read);
        let channel = Channel::new("test", 1 << 20, false);
        for _ in 0..100 {
            channel.push(write.as_raw_fd(), b"line\n".to_vec(), true);
        }
        let seq = channel.push(write.as_raw_fd(), b"report\n".to_vec(), false);
        assert_eq!(
            channel.wait(Some(seq), &never),
            Err(Undelivered::Failed("Broken pipe".into()))
        );
        let notices = channel.take_notices();
        assert_eq!(notices.lines().count(), 1, "{notices}");
        assert!(notices.contains("cannot write to test: Broken pipe; 100 lines of output lost"));
    }

    #[test]
    fn the_writer_thread_delivers_in_order() {
        let (read, write) = pipe();
        let channel = Channel::new("test", 1 << 20, true);
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = rustix::io::read(&read, &mut buf) {
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
                if out.ends_with(b"end\n") {
                    break;
                }
            }
            out
        });
        let mut want = Vec::new();
        for i in 0..1000 {
            let line = format!("line {i}\n").into_bytes();
            want.extend_from_slice(&line);
            channel.push(write.as_raw_fd(), line, true);
        }
        let seq = channel.push(write.as_raw_fd(), b"end\n".to_vec(), false);
        want.extend_from_slice(b"end\n");
        channel.wait(Some(seq), &never).unwrap();
        assert_eq!(channel.lock().mode, Mode::Thread);
        assert_eq!(reader.join().unwrap(), want);
        // The thread sleeps on the channel from now on and never writes to
        // the descriptor again; keep its number from being reused anyway.
        std::mem::forget(write);
    }

    #[test]
    fn a_stop_signal_ends_the_wait_for_a_stalled_reader() {
        let (_read, write) = pipe();
        fill(&write);
        let channel = Channel::new("test", 1 << 20, false);
        let seq = channel.push(write.as_raw_fd(), b"report\n".to_vec(), false);
        assert_eq!(
            channel.wait(Some(seq), &|| Some(15)),
            Err(Undelivered::Stopped(15))
        );
    }
}
