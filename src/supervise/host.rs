//! The seam between the supervisor's decisions and the operating system.
//!
//! The engine decides when to start, time out, forward a stop signal and
//! kill; a [`Host`] carries those decisions out and reports what happened.
//! The real host ([`super::processes`]) locks, spawns, signals process
//! groups, reaps and sleeps in `poll`; the unit tests drive the same engine
//! through a fake host with a fake clock, so every decision is tested
//! without processes or real time.
//!
//! The seam is in terms of slots (an instance's position in the plan), not
//! pids: a slot names one task for the whole run, while a pid can be reused
//! as soon as its process is reaped. Only the host ever sees a pid, and it
//! only signals a group it knows to be the task's. A task need not be a
//! process either: anything the host can start, wait for and report an end
//! of fits behind [`Host::start`] and [`Event::Exited`] (a request made in
//! process has no pid), and [`Host::hold_starts`] lets a host hold due
//! starts back (say, while the machine is under pressure) without the
//! engine knowing why.

use std::time::{Instant, SystemTime};

use crate::outcome::{Outcome, Skip};
use crate::plan::Entry;
use crate::platform::{ExitStatus, Usage};

/// What the engine needs from the operating system.
pub trait Host {
    /// The monotonic clock every deadline is on.
    fn now(&self) -> Instant;

    /// How many stop signals (SIGTERM, SIGINT, SIGHUP) arrived so far, and
    /// the number of the last one.
    fn stops(&self) -> (usize, i32);

    /// Locks the instance and starts its task.
    fn start(&mut self, entry: &Entry) -> Started;

    /// Whether due starts must wait, and until when at the latest (the
    /// engine asks again then, or sooner if something else wakes it).
    /// `None`: start now.
    fn hold_starts(&mut self) -> Option<Instant> {
        None
    }

    /// Sends `sig` to the process groups of these tasks. The host signals a
    /// group only while it is sure the group is still the task's.
    fn signal(&mut self, slots: &[usize], sig: i32);

    /// Without blocking: reaps leaders that exited and does the host's own
    /// due work. Cheap when nothing happened, so the engine calls it between
    /// starts.
    fn reap(&mut self, events: &mut Vec<Event>);

    /// Sleeps until `deadline` (`None`: until something happens), a signal
    /// or ready output, then does what [`Host::reap`] does and relays
    /// output.
    fn wait(&mut self, deadline: Option<Instant>, events: &mut Vec<Event>);

    /// The task's leader has ended with this outcome: show or drop captured
    /// output (`failed` decides for `--output on-failure`).
    fn ended(&mut self, slot: usize, failed: bool);

    /// Stops waiting for the task's output: reads what is there and closes
    /// it.
    fn close_output(&mut self, slot: usize);

    /// The engine is done with the task: the host may drop what it kept.
    fn forget(&mut self, slot: usize);

    /// When the host's own pending work (SIGKILL of a hung holder of another
    /// run) is due; the run does not end while there is some.
    fn pending(&self) -> Option<Instant>;
}

/// The result of trying to start one instance.
#[derive(Debug)]
pub enum Started {
    /// The task runs; `pid` is its process, the leader of its own group
    /// (`None` for a task that is not a process). `output`: its output is
    /// relayed through the host until [`Event::OutputClosed`].
    Running {
        pid: Option<i32>,
        wall: SystemTime,
        output: bool,
    },
    /// Not started, and not a failure (its lock is busy, its directory is
    /// gone).
    Skipped(Skip),
    /// The lock, the output or the spawn failed. `code` is the `--only`
    /// exit code; `again` says the failure was EAGAIN (a process limit), so
    /// a retry after reaping may succeed.
    Failed {
        reason: String,
        code: u8,
        again: bool,
    },
}

/// Something that happened to a running task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Its leader exited and was reaped; `usage` is what it cost, if the
    /// host knows.
    Exited {
        slot: usize,
        status: ExitStatus,
        usage: Option<Usage>,
    },
    /// Its output reached end of file.
    OutputClosed { slot: usize },
    /// A task that is not a process (a request) ended with this outcome,
    /// unless the engine had already timed it out.
    Done { slot: usize, outcome: Outcome },
}
