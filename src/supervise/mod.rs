//! The supervisor: one thread that starts, reaps, times out and stops tasks.
//!
//! It is split along one seam. The [`engine`] decides (the schedule, the
//! concurrency cap, timeouts, stop signals, outcomes) and the [`host`]
//! carries the decisions out; [`processes`] is the host that runs real
//! processes, and the unit tests run the same engine on a fake one.
//!
//! A single thread does everything. It sleeps in `poll` on the signal
//! self-pipe (and, with `--output tag`, the tasks' output pipes) until the
//! next absolute deadline: the next planned start, a timeout, the end of a
//! grace period. SIGCHLD wakes it to reap with `wait4(-1, WNOHANG)`, so no
//! child is ever polled in turn and no thread is spent per child; while it
//! catches up on overdue starts it also reaps between starts, so zombies
//! never fill the process table. Unless output is relayed, the spawner
//! keeps no descriptor per running task.
//!
//! Deadlines are `start + offset`, computed from one start instant, so a slow
//! start never pushes later ones back. If the machine cannot keep up, or
//! `--max-concurrent` holds starts back, they happen late but none is
//! skipped, and the schedule resumes on its original deadlines. A start that
//! fails with EAGAIN (a process limit) is retried once after reaping.
//!
//! Starts that fell behind (scatter was stopped, the machine froze, the cap
//! or the host's pressure held them) never go out in a burst: until the
//! schedule is caught up, consecutive starts are at least W/N ÷ `--catch-up`
//! apart. A machine too slow to start at the planned rate never gets there,
//! so the rule adds it no delay. While the host holds starts for pressure
//! (`--max-pressure`, `--max-load`), a start that waited `--max-defer` past
//! its slot is skipped as `deferred` (or, with `--max-defer-action start`,
//! started anyway).
//!
//! Timeouts and stop signals act on a task's whole process group: SIGTERM
//! first, SIGKILL after the grace period (`--kill-after`), even if the
//! group's leader has already exited, because children left in the group
//! still hold the lock; [`processes`] explains how it makes sure a group is
//! still the task's before it signals it.
//!
//! # What the loop calls, and why none of it blocks
//!
//! Every call the supervisor thread makes during a run, and what bounds it:
//!
//! * `poll` on the self-pipe and tag pipes: the one intended wait, always
//!   with the next deadline as its timeout; a signal wakes it.
//! * `read` on the self-pipe and on tag pipes: both are `O_NONBLOCK`
//!   (scatter's own ends, never shared).
//! * `wait4(-1, WNOHANG)` (which also returns the task's resource usage),
//!   `kill`, `clock_gettime`: never block.
//! * `setpriority(PRIO_PGRP)` and `ioprio_set(IOPRIO_WHO_PGRP)` right after
//!   a spawn, for `--nice` and `--ionice`: they set a field of each process
//!   in the group and never wait for it.
//! * The pressure files (`--max-pressure`, `--max-load`): at most every
//!   500 ms while starts are due, `openat` (`O_NOFOLLOW|O_NONBLOCK`) through
//!   a directory descriptor opened before the run, a read of at most 4 KiB
//!   and `close`. In `/proc` and cgroupfs these are generated in memory and
//!   never block; a `--pressure-source DIR` is the admin's choice of local
//!   directory, with the same caveat as the lock directory below.
//! * `stat` of the instance directory before its start, `openat` (with
//!   `O_NOFOLLOW|O_NONBLOCK`, so a planted FIFO cannot block the open),
//!   `fstat`, `flock(LOCK_NB)` and `pwrite` of the holder record on the lock
//!   file, and the open of a `dir=` log file (same flags): local file-system
//!   calls. They wait for the disk at worst; the README says to keep the
//!   lock directory on local storage (tmpfs ideally), because on a hung
//!   network file system they would hang with it.
//! * `posix_spawn`: returns once the child has called `exec` (it shares
//!   scatter's memory until then), so it costs the time of one `exec`.
//! * `/proc` reads (`stat`, `fd` links), only to verify a group before
//!   signalling a reaped leader's group or a hung holder of another run:
//!   procfs reads do not block on the target process; a descriptor is only
//!   `stat`ed when its link already names a `.lock` file.
//! * Diagnostics and relayed output: never written by this thread directly.
//!   They go into bounded buffers drained by another thread (`relay`), and
//!   log records go to syslog or the journal with non-blocking sends; what
//!   does not fit is dropped and counted, and said once.
//! * State records: queued in a list the state writer thread empties on
//!   its own schedule (an uncontended lock, never a wait for the disk); the
//!   disk is that thread's business.
//! * With `--url` ([`requests`]): `socket` and `connect` with `O_NONBLOCK`
//!   (connecting is under way when `connect` returns), `read`, `write` and
//!   one `recv(MSG_PEEK|MSG_DONTWAIT)` per reused connection, all on
//!   non-blocking sockets that `poll` watches, at most
//!   [`crate::http::exchange::READS_PER_STEP`] reads per request and wake,
//!   so a server that streams cannot keep the loop to itself; TLS is
//!   computation on buffers. The host's name is looked up once before the first start, on
//!   a thread of its own that the run waits for at most 10 s (an IP literal
//!   needs no lookup). Under `--output dir=` the body is written to the
//!   instance's log file: a local file-system call, as above.
//! * Paused and backed-off instances: decided before the run
//!   ([`crate::health::prepare`]) and handed over as held slots in the plan;
//!   the loop only records their outcome when their slot comes.
//!
//! What the same thread does after the loop has returned (the final merge
//! of the records, the `--on-change` hooks, each bounded by
//! `--hook-timeout`) is not on this list: no task is waiting for it.

mod claims;
pub mod engine;
#[cfg(test)]
mod fake;
#[cfg(test)]
mod gate_tests;
pub mod host;
pub mod processes;
pub mod requests;
#[cfg(test)]
mod tests;

use std::num::NonZeroUsize;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;

use crate::outcome::TaskResult;
use crate::output::OutputMode;
use crate::plan::Plan;
use crate::report::Report;
use crate::{pressure, priority};

/// The hosts' one sleep: `poll` on the signal self-pipe (`fds[0]`) and on
/// one descriptor per slot (`fds[1..]`, `slots` in the same order) until
/// `timeout`. Empties the self-pipe if it woke, and returns the slots whose
/// descriptor is ready.
fn poll_ready(
    signals: &crate::platform::Signals,
    mut fds: Vec<crate::platform::PollFd<'_>>,
    slots: &[usize],
    timeout: Option<Duration>,
) -> Vec<usize> {
    // A SIGCHLD not handled yet: look without sleeping.
    let timeout = if signals.will_sleep() {
        timeout
    } else {
        Some(Duration::ZERO)
    };
    let polled = crate::platform::poll(&mut fds, timeout);
    signals.woke();
    if let Err(err) = polled {
        // Not expected (EINTR is handled); sleep briefly rather than spin.
        log::warn!("poll failed: {err}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let woke = fds.first().is_some_and(|fd| !fd.revents().is_empty());
    let ready = fds
        .iter()
        .skip(1)
        .zip(slots)
        .filter(|(fd, _)| !fd.revents().is_empty())
        .map(|(_, slot)| *slot)
        .collect();
    drop(fds);
    if woke {
        signals.drain();
    }
    ready
}

/// How tasks are supervised.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--max-concurrent`: at most this many tasks alive at once.
    pub max_concurrent: Option<NonZeroUsize>,
    /// `--timeout`: SIGTERM the task's group after this long.
    pub timeout: Option<Duration>,
    /// `--kill-after`: SIGKILL this long after SIGTERM (zero: at once).
    pub kill_after: Duration,
    /// `--detach`: return after the last start without waiting.
    pub detach: bool,
    /// `--output`: where the tasks' stdout and stderr go.
    pub output: OutputMode,
    /// Log each failure as a record of its own (when logging to syslog or
    /// the journal, where the end-of-run report on stderr is not seen).
    pub log_failures: bool,
    /// `--url` with `https://`: the TLS configuration of every connection.
    pub tls: Option<crate::http::Tls>,
    /// `--catch-up`: once behind schedule, starts go out at most this many
    /// times the planned rate (W/N ÷ FACTOR apart) until caught up.
    pub catch_up: f64,
    /// `--max-pressure`, `--max-load`: what due starts wait for (`None`:
    /// nothing, as for `--only`).
    pub pressure: Option<pressure::Spec>,
    /// `--max-defer`: how long past its slot a start may wait for pressure
    /// (`None`: as long as it takes).
    pub max_defer: Option<Duration>,
    /// `--max-defer-action`: what happens to a start past `--max-defer`.
    pub defer_action: DeferAction,
    /// `--nice`, `--ionice`: applied to each task's process group.
    pub priority: priority::Priority,
}

/// The default `--catch-up` factor.
pub const CATCH_UP: f64 = 4.0;

/// What becomes of a start that waited for pressure past `--max-defer`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeferAction {
    /// Skip it, with the outcome `deferred` (not a failure).
    #[default]
    Skip,
    /// Start it anyway, with a warning.
    Start,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_concurrent: None,
            timeout: None,
            kill_after: Duration::from_secs(10),
            detach: false,
            output: OutputMode::Inherit,
            log_failures: false,
            catch_up: CATCH_UP,
            pressure: None,
            max_defer: None,
            defer_action: DeferAction::Skip,
            priority: priority::Priority::default(),
            tls: None,
        }
    }
}

/// Told what happens during a run, as it happens (for the state files).
pub trait Observer {
    /// The task of `slot` has started.
    fn started(&mut self, _slot: usize) {}
    /// The instance of `slot` has its final outcome for this run.
    fn ended(&mut self, _slot: usize, _result: &TaskResult) {}
    /// Due starts are now held back by the host (pressure), or no longer.
    fn held(&mut self, _held: bool) {}
}

/// An observer that ignores everything.
impl Observer for () {}

/// The instant a run began, on both clocks: offsets count from `start`, and
/// `start_wall` is what records and `SCATTER_WINDOW_START` show.
#[derive(Debug, Clone, Copy)]
pub struct RunStart {
    pub start: Instant,
    pub start_wall: SystemTime,
}

impl RunStart {
    pub fn now() -> RunStart {
        RunStart {
            start: Instant::now(),
            start_wall: SystemTime::now(),
        }
    }
}

/// Runs the plan to completion with real processes and returns what
/// happened to each instance.
pub fn run(
    plan: &Plan,
    begun: &RunStart,
    opts: &Options,
    observer: &mut dyn Observer,
) -> Result<Report> {
    if plan.request.is_some() {
        let host = requests::Requests::new(plan, opts)?;
        return Ok(engine::Engine::new(host, plan, begun.start, opts, observer).run());
    }
    let window_start = format!("{:.6}", crate::display::unix_secs(begun.start_wall));
    let host = processes::Processes::new(plan, opts, window_start)?;
    Ok(engine::Engine::new(host, plan, begun.start, opts, observer).run())
}
