//! One descriptor's queue: what is pushed, dropped, written and waited
//! for, by its writer thread or, without one, by whoever pushes.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;

use super::*;

/// Lines and bytes counted for a notice.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tally {
    pub(super) lines: u64,
    pub(super) bytes: u64,
}

impl Tally {
    fn add(&mut self, bytes: &[u8]) {
        self.lines += count_lines(bytes);
        self.bytes += bytes.len() as u64;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Nothing pushed yet: the thread starts with the first push.
    Idle,
    Thread,
    /// The thread could not be started: pushes write without blocking.
    Inline,
}

pub(super) struct Chunk {
    seq: u64,
    fd: RawFd,
    bytes: Vec<u8>,
    /// Counted against the queue's bound and dropped when it is full.
    bounded: bool,
}

pub(super) struct State {
    pub(super) queue: VecDeque<Chunk>,
    /// Bytes of the front chunk already written (inline mode only).
    pub(super) front_written: usize,
    /// Bytes of bounded chunks queued or being written.
    bounded: usize,
    pub(super) mode: Mode,
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
    pub(super) dropped: Tally,
    /// Discarded because of `error`.
    lost: Tally,
}

pub(super) struct Channel {
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
    pub(super) fn new(name: &'static str, limit: usize, threads: bool) -> Arc<Channel> {
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
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `bytes` for `fd`; returns its sequence number.
    /// Adds lines dropped before they reached the queue to its tally.
    pub(super) fn count_dropped(&self, lines: u64, bytes: u64) {
        let mut st = self.lock();
        st.dropped.lines += lines;
        st.dropped.bytes += bytes;
    }

    pub(super) fn push(self: &Arc<Self>, fd: RawFd, mut bytes: Vec<u8>, bounded: bool) -> u64 {
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
                    if st.front_written == chunk.bytes.len()
                        && let Some(chunk) = st.queue.pop_front()
                    {
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
    pub(super) fn wait(
        &self,
        seq: Option<u64>,
        stop: &dyn Fn() -> Option<i32>,
    ) -> Result<(), Undelivered> {
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
            let timeout = Timespec {
                tv_sec: 0,
                tv_nsec: i64::from(STOP_CHECK.subsec_nanos()),
            };
            let _ = rustix::event::poll(&mut fds, Some(&timeout));
            st = self.lock();
        }
    }

    /// One warning line for each kind of loss since the last call.
    pub(super) fn take_notices(&self) -> String {
        let mut st = self.lock();
        let mut text = String::new();
        let dropped = std::mem::take(&mut st.dropped);
        if dropped.lines > 0 {
            text.push_str(&format!(
                "scatter: warning: {} of output dropped ({}): the reader of {} was not keeping up\n",
                crate::display::plural(dropped.lines, "line"),
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
                crate::display::plural(lost.lines, "line"),
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
pub(super) fn whole_lines_within(bytes: &[u8], room: usize) -> usize {
    if bytes.len() <= room {
        return bytes.len();
    }
    memchr::memrchr(b'\n', &bytes[..room]).map_or(0, |i| i + 1)
}

/// Lines in `bytes`, counting an unterminated last one.
pub(super) fn count_lines(bytes: &[u8]) -> u64 {
    let newlines = memchr::memchr_iter(b'\n', bytes).count() as u64;
    newlines + u64::from(!bytes.is_empty() && !bytes.ends_with(b"\n"))
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
