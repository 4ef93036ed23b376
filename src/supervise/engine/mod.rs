//! The supervisor's decisions: when each task starts, times out, is
//! signalled and is done, and what its outcome is.
//!
//! The engine owns the schedule (absolute deadlines from one start instant),
//! the concurrency cap, every timer and the reaction to stop signals. It
//! does no I/O of its own: everything goes through a [`Host`], which is what
//! lets the unit tests drive it with a fake clock and fake tasks.
//!
//! A task's life is a [`Life`]: running; timing out (our timeout sent its
//! first signal and a SIGKILL may be due); exited (its leader was reaped,
//! its outcome is known, and a SIGKILL of what is left of its group may
//! still be due). Timers are keyed by slot and checked against the task's
//! life when they fire, so a timer of a task that has moved on does nothing,
//! and a timer can never reach another task.
//!
//! Whether a due start may go beyond its deadline and the cap (the no-burst
//! rule, the host's hold for pressure, `--max-defer`) is [`gate`]'s
//! decision; timers and stop signals are handled in [`stops`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant, SystemTime};

use log::{debug, info, warn};

use super::host::{Event, Host, Started};
use super::{Observer, Options};
use crate::display::{self, quoted};
use crate::outcome::{Outcome, TaskResult};
use crate::plan::{Entry, Plan};
use crate::platform::{self, ExitStatus, Usage, later};
use crate::report::Report;
use gate::{Clearance, Gate};

mod gate;
mod stops;
pub use stops::first_signal;

/// EAGAIN retries a run may make: each start that hits a process limit is
/// retried once after reaping, but a limit that never lifts (`--nproc=1`)
/// costs at most this many extra attempts.
pub(super) const RETRY_BUDGET: usize = 256;

/// Where a started task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    /// The leader runs; nothing was sent to it.
    Running,
    /// Our timeout sent the first signal; SIGKILL is due at `kill_at`
    /// (`None`: already sent). The leader has not been reaped.
    TimingOut { kill_at: Option<Instant> },
    /// The leader was reaped and the outcome recorded. A SIGKILL of what is
    /// left of its group may still be due (after a timeout).
    Exited { kill_at: Option<Instant> },
}

/// A started task the engine still has to attend to.
#[derive(Debug)]
struct Task {
    started: Instant,
    started_wall: SystemTime,
    lateness: Duration,
    life: Life,
    /// Its output is still relayed through the host.
    output: bool,
}

impl Task {
    /// Nothing is left to do for this task.
    fn settled(&self) -> bool {
        self.life == Life::Exited { kill_at: None } && !self.output
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// The task's `--timeout` is up.
    Timeout,
    /// The grace period after the timeout's SIGTERM is up.
    Kill,
    /// The grace period for reading its output after the leader exited.
    Drain,
}

/// A stop signal received by scatter itself.
struct Stop {
    signal: i32,
    kill_at: Instant,
    killed: bool,
}

pub struct Engine<'a, H: Host> {
    host: H,
    plan: &'a Plan,
    /// The instant offsets count from.
    start: Instant,
    opts: &'a Options,
    observer: &'a mut dyn Observer,
    tasks: HashMap<usize, Task>,
    /// Tasks whose leader has not been reaped yet.
    alive: usize,
    timers: BinaryHeap<Reverse<(Instant, Timer, usize)>>,
    results: Vec<Option<TaskResult>>,
    /// The next slot to start.
    next: usize,
    stop: Option<Stop>,
    stops_seen: usize,
    /// A due start is waiting for a free slot under `--max-concurrent`.
    cap_waiting: bool,
    /// Starts that waited for a free slot under `--max-concurrent`.
    cap_delayed: usize,
    /// When a task last ended while the cap was full: a start due before
    /// then that is still waiting was held back by the cap.
    cap_released: Option<Instant>,
    retries_left: usize,
    /// Pacing after a stall, and the host's hold (pressure).
    gate: Gate,
    events: Vec<Event>,
}

impl<'a, H: Host> Engine<'a, H> {
    pub fn new(
        host: H,
        plan: &'a Plan,
        start: Instant,
        opts: &'a Options,
        observer: &'a mut dyn Observer,
    ) -> Self {
        Engine {
            host,
            plan,
            start,
            opts,
            observer,
            tasks: HashMap::new(),
            alive: 0,
            timers: BinaryHeap::new(),
            results: vec![None; plan.entries.len()],
            next: 0,
            stop: None,
            stops_seen: 0,
            cap_waiting: false,
            cap_delayed: 0,
            cap_released: None,
            retries_left: RETRY_BUDGET,
            gate: Gate::new(plan.interval(), opts),
            events: Vec::new(),
        }
    }

    /// Runs the plan to the end and returns what happened to each instance.
    pub fn run(mut self) -> Report {
        loop {
            self.check_signals();
            self.fire_timers();
            self.start_due();
            if self.finished() {
                return self.into_report();
            }
            let wake = self.next_wake();
            let mut events = std::mem::take(&mut self.events);
            self.host.wait(wake, &mut events);
            self.handle(&mut events);
            self.events = events;
        }
    }

    fn handle(&mut self, events: &mut Vec<Event>) {
        for event in events.drain(..) {
            match event {
                Event::Exited {
                    slot,
                    status,
                    usage,
                } => self.exited(slot, status, usage),
                Event::Done { slot, outcome } => self.ended(slot, outcome, None, None),
                Event::OutputClosed { slot } => {
                    if let Some(task) = self.tasks.get_mut(&slot) {
                        task.output = false;
                    }
                    self.remove_if_settled(slot);
                }
            }
        }
    }

    /// Reaps what ended, between starts: catching up after a stall starts
    /// many tasks back to back, and their zombies must not fill the process
    /// table meanwhile.
    fn reap(&mut self) {
        let mut events = std::mem::take(&mut self.events);
        self.host.reap(&mut events);
        self.handle(&mut events);
        self.events = events;
    }

    fn finished(&self) -> bool {
        if self.host.pending().is_some() {
            return false;
        }
        let all_started = self.next >= self.plan.entries.len();
        if self.opts.detach {
            self.stop.is_some() || all_started
        } else {
            (self.stop.is_some() || all_started) && self.tasks.is_empty()
        }
    }

    fn cap_reached(&self) -> bool {
        self.opts
            .max_concurrent
            .is_some_and(|cap| self.alive >= cap.get())
    }

    fn next_wake(&self) -> Option<Instant> {
        let next = self.plan.entries.get(self.next);
        let held = next.is_some_and(|e| self.plan.held(e.slot).is_some());
        let start = (self.stop.is_none() && (held || !self.cap_reached()))
            .then(|| next.map(|e| self.deadline(e)))
            .flatten()
            .map(|due| self.gate.wake(self.next, due));
        let timer = self.timers.peek().map(|Reverse((at, _, _))| *at);
        let stop = self.stop.as_ref().filter(|s| !s.killed).map(|s| s.kill_at);
        [start, timer, stop, self.host.pending()]
            .into_iter()
            .flatten()
            .min()
    }

    fn deadline(&self, entry: &Entry) -> Instant {
        later(self.start, entry.offset)
    }

    fn tag(&self, slot: usize) -> String {
        quoted(&self.plan.entries[slot].id)
    }

    fn start_due(&mut self) {
        while self.stop.is_none() {
            let Some(entry) = self.plan.entries.get(self.next) else {
                // Nothing is left to hold back, whatever the pressure.
                self.lift_hold(self.host.now());
                return;
            };
            let deadline = self.deadline(entry);
            let now = self.host.now();
            if now < deadline {
                // Caught up with the schedule.
                self.cap_waiting = false;
                return;
            }
            if let Some(held) = self.plan.held(entry.slot) {
                // Paused or backed off: its outcome, at its slot, no start.
                self.next += 1;
                self.record(entry.slot, TaskResult::new(held.clone()));
                continue;
            }
            if self.cap_reached() {
                self.cap_waiting = true;
                return;
            }
            match self.clearance(entry, deadline, now) {
                Clearance::Wait => return,
                Clearance::Shed => {
                    self.next += 1;
                    continue;
                }
                Clearance::Go => {}
            }
            let held = self.cap_waiting || self.cap_released.is_some_and(|t| t >= deadline);
            if held && now > deadline {
                self.cap_delayed += 1;
                debug!(
                    "{}: starting {} late because --max-concurrent was reached",
                    quoted(&entry.id),
                    display::duration_precise(now - deadline)
                );
            }
            self.next += 1;
            self.start(entry, deadline);
            self.reap();
            // A signal that arrived meanwhile stops the catch-up at once.
            self.check_signals();
        }
    }

    fn start(&mut self, entry: &'a Entry, deadline: Instant) {
        let mut started = self.host.start(entry);
        if let Started::Failed { again: true, .. } = started
            && self.retries_left > 0
        {
            // A process limit: children that ended may not have been
            // reaped yet. Reap them and try once more.
            self.retries_left -= 1;
            self.reap();
            debug!(
                "{}: start hit a process limit; retrying once",
                self.tag(entry.slot)
            );
            started = self.host.start(entry);
        }
        match started {
            Started::Running { pid, wall, output } => {
                let now = self.host.now();
                let lateness = now.saturating_duration_since(deadline);
                debug!(
                    instance = &*entry.id.to_string_lossy();
                    "{}: started{} (slot {}, {} late)",
                    self.tag(entry.slot),
                    pid.map_or(String::new(), |pid| format!(" pid {pid}")),
                    entry.slot,
                    display::duration_precise(lateness)
                );
                self.tasks.insert(
                    entry.slot,
                    Task {
                        started: now,
                        started_wall: wall,
                        lateness,
                        life: Life::Running,
                        output,
                    },
                );
                self.alive += 1;
                self.observer.started(entry.slot);
                if let Some(timeout) = self.opts.timeout {
                    self.timers
                        .push(Reverse((later(now, timeout), Timer::Timeout, entry.slot)));
                }
            }
            Started::Skipped(skip) => {
                self.record(entry.slot, TaskResult::new(Outcome::Skipped(skip)));
            }
            Started::Failed { reason, code, .. } => {
                info!(
                    instance = &*entry.id.to_string_lossy();
                    "{}: not started: {reason}",
                    self.tag(entry.slot)
                );
                self.record(
                    entry.slot,
                    TaskResult::new(Outcome::FailedToStart { reason, code }),
                );
            }
        }
    }

    /// Sets an instance's final outcome for this run.
    fn record(&mut self, slot: usize, result: TaskResult) {
        if result.outcome.is_failure()
            && self.opts.log_failures
            && let Some(line) = result.report_line(self.opts.timeout)
        {
            let id = &self.plan.entries[slot].id;
            warn!(instance = &*id.to_string_lossy(); "{}: {line}", quoted(id));
        }
        self.observer.ended(slot, &result);
        self.results[slot] = Some(result);
    }

    fn exited(&mut self, slot: usize, status: ExitStatus, usage: Option<Usage>) {
        let outcome = match status {
            ExitStatus::Code(0) => Outcome::Ok,
            ExitStatus::Code(c) => Outcome::Failed(c),
            ExitStatus::Signal(s) => Outcome::Killed(s),
        };
        self.ended(slot, outcome, Some(status), usage);
    }

    /// The task's leader (or request) ended: `outcome` is its outcome unless
    /// our timeout stopped it; `status` is the leader's exit status (none
    /// for a request); `usage` is what it cost, if the host knows.
    fn ended(
        &mut self,
        slot: usize,
        outcome: Outcome,
        status: Option<ExitStatus>,
        usage: Option<Usage>,
    ) {
        // How it ended, for the debug log only: not built at every end.
        let what = log::log_enabled!(log::Level::Debug).then(|| match status {
            Some(ExitStatus::Code(c)) => format!("exited with status {c}"),
            Some(ExitStatus::Signal(s)) => format!("killed by {}", platform::signal_name(s)),
            None => outcome.describe(None, None),
        });
        let now = self.host.now();
        let kill_after = self.opts.kill_after;
        let Some(task) = self.tasks.get_mut(&slot) else {
            return;
        };
        let (outcome, kill_at) = match task.life {
            Life::Exited { .. } => return,
            Life::TimingOut { kill_at } => (Outcome::TimedOut, kill_at),
            Life::Running => (outcome, None),
        };
        task.life = Life::Exited { kill_at };
        if self
            .opts
            .max_concurrent
            .is_some_and(|cap| self.alive >= cap.get())
        {
            self.cap_released = Some(now);
        }
        self.alive -= 1;
        let duration = now.saturating_duration_since(task.started);
        let result = TaskResult {
            outcome,
            started: Some(task.started_wall),
            duration: Some(duration),
            lateness: Some(task.lateness),
            usage,
        };
        if task.output {
            // Read on until the pipe closes, but no longer than the grace
            // period: a background child may keep it open forever.
            self.timers
                .push(Reverse((later(now, kill_after), Timer::Drain, slot)));
        }
        if let Some(what) = what {
            debug!(
                instance = &*self.plan.entries[slot].id.to_string_lossy();
                "{}: {what} after {}",
                self.tag(slot),
                display::duration(duration)
            );
        }
        self.host.ended(slot, result.outcome.is_failure());
        self.record(slot, result);
        self.remove_if_settled(slot);
    }

    fn remove_if_settled(&mut self, slot: usize) {
        if self.tasks.get(&slot).is_some_and(Task::settled) {
            self.tasks.remove(&slot);
            self.host.forget(slot);
        }
    }

    fn into_report(mut self) -> Report {
        let stopped_by = self.stop.as_ref().map(|s| s.signal);
        let mut detached: Vec<(usize, TaskResult)> = self
            .tasks
            .iter()
            .map(|(slot, task)| {
                // Only reachable with --detach: started, not waited for.
                let result = TaskResult {
                    outcome: Outcome::Detached,
                    started: Some(task.started_wall),
                    duration: None,
                    lateness: Some(task.lateness),
                    usage: None,
                };
                (*slot, result)
            })
            .collect();
        detached.sort_by_key(|(slot, _)| *slot);
        for (slot, result) in detached {
            self.record(slot, result);
        }
        for slot in 0..self.results.len() {
            if self.results[slot].is_none() {
                self.record(slot, TaskResult::new(Outcome::NotStarted));
            }
        }
        let results: Vec<TaskResult> = std::mem::take(&mut self.results)
            .into_iter()
            .flatten()
            .collect();
        let report = Report {
            results,
            stopped_by,
            timeout: self.opts.timeout,
            detached: self.opts.detach,
            cap_delayed: self.cap_delayed,
            pressure: self.gate.pressure,
            ..Report::default()
        };
        if let Some((slot, late)) = report.max_lateness() {
            debug!(
                "worst start lateness: {} ({}, slot {slot})",
                display::duration_precise(late),
                self.tag(slot)
            );
        }
        if self.cap_delayed > 0 {
            debug!("{} starts waited for --max-concurrent", self.cap_delayed);
        }
        report
    }
}
