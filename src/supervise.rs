//! The supervisor: one loop that starts, reaps, times out and stops tasks.
//!
//! A single thread does everything. It sleeps in `poll` on the signal
//! self-pipe (and, with `--output tag`, the tasks' output pipes) until the
//! next absolute deadline: the next planned start, a timeout, the end of a
//! grace period. SIGCHLD wakes it to reap with `waitpid(-1, WNOHANG)` and a
//! pid → task map, so no child is ever polled in turn and no thread is spent
//! per child. Unless output is relayed, the spawner keeps no descriptor per
//! running task: each lock descriptor is closed as soon as the task owns it.
//!
//! Deadlines are `start + offset`, computed from one start instant, so a slow
//! start never pushes later ones back. If the machine cannot keep up, or
//! `--max-concurrent` holds starts back, they happen late but none is
//! skipped, and the schedule resumes on its original deadlines.
//!
//! Timeouts and stop signals act on a task's whole process group: SIGTERM
//! first, SIGKILL after the grace period (`--kill-after`), even if the
//! group's leader has already exited, because children left in the group
//! still hold the lock.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::num::NonZeroUsize;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use log::{debug, info, warn};
use signal_hook::consts::{SIGKILL, SIGTERM};

use crate::cli::OutputMode;
use crate::config::Clock;
use crate::display::{self, quoted};
use crate::exit;
use crate::lock::{self, Attempt, Holder, StartTime};
use crate::output::{Capture, Outputs};
use crate::plan::{Entry, Plan};
use crate::platform::{self, ExitStatus, PollFd, PollFlags, Signals};
use crate::reclaim;
use crate::report::{Outcome, Report, Skip, TaskResult};
use crate::spawn::{self, TaskEnv};

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
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_concurrent: None,
            timeout: None,
            kill_after: Duration::from_secs(10),
            detach: false,
            output: OutputMode::Inherit,
        }
    }
}

/// Told what happens during a run, as it happens (for the state files).
pub trait Observer {
    /// The task of `slot` has started.
    fn started(&mut self, _slot: usize) {}
    /// The instance of `slot` has its final outcome for this run.
    fn ended(&mut self, _slot: usize, _result: &TaskResult) {}
}

/// An observer that ignores everything.
impl Observer for () {}

/// A started task whose process group or output we may still have to handle.
struct Task {
    slot: usize,
    /// The id, quoted for messages and output tags.
    tag: String,
    started: Instant,
    started_wall: SystemTime,
    lateness: Duration,
    leader_alive: bool,
    timed_out: bool,
    /// A SIGTERM was sent (timeout); the SIGKILL is still due.
    escalating: bool,
    capture: Capture,
}

impl Task {
    /// Nothing is left to do for this task.
    fn settled(&self) -> bool {
        !self.leader_alive && !self.escalating && !matches!(self.capture, Capture::Pipe(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    /// The task's `--timeout` is up.
    Timeout,
    /// The grace period after a timeout's SIGTERM is up.
    Kill,
    /// The grace period for reading a tag pipe after the leader exited.
    Drain,
    /// The grace period after SIGTERM to a hung holder of another run.
    KillHung,
}

/// A stop signal received by scatter itself.
struct Stop {
    signal: i32,
    kill_at: Instant,
    killed: bool,
}

/// Runs the plan to completion and returns what happened to each instance.
pub fn run(
    plan: &Plan,
    clock: &Clock,
    opts: &Options,
    observer: &mut dyn Observer,
) -> Result<Report> {
    let signals = Signals::install().context("cannot install signal handlers")?;
    let outputs = Outputs::new(&opts.output)?;
    let mut sup = Supervisor {
        plan,
        clock,
        opts,
        signals,
        outputs,
        window_start: format!("{:.6}", crate::report::unix_secs(clock.start_wall)),
        tasks: HashMap::new(),
        alive: 0,
        timers: BinaryHeap::new(),
        results: vec![None; plan.entries.len()],
        next: 0,
        stop: None,
        stops_seen: 0,
        hung_pending: 0,
        cap_waiting: false,
        cap_delayed: 0,
        observer,
    };
    sup.run_loop()?;
    Ok(sup.into_report())
}

struct Supervisor<'a> {
    observer: &'a mut dyn Observer,
    plan: &'a Plan,
    clock: &'a Clock,
    opts: &'a Options,
    signals: Signals,
    outputs: Outputs,
    window_start: String,
    /// Keyed by the leader's pid, which is also the group id.
    tasks: HashMap<i32, Task>,
    /// Tasks whose leader has not been reaped yet.
    alive: usize,
    timers: BinaryHeap<Reverse<(Instant, TimerKind, i32)>>,
    results: Vec<Option<TaskResult>>,
    /// The next slot to start.
    next: usize,
    stop: Option<Stop>,
    stops_seen: usize,
    /// Hung holders of other runs that still have a SIGKILL due.
    hung_pending: usize,
    /// A due start is waiting for a free slot under `--max-concurrent`.
    cap_waiting: bool,
    /// Starts that waited for a free slot under `--max-concurrent`.
    cap_delayed: usize,
}

impl Supervisor<'_> {
    fn run_loop(&mut self) -> Result<()> {
        let relay = matches!(self.opts.output, OutputMode::Tag);
        let (mut pids, mut ready) = (Vec::new(), Vec::new());
        // Whether the self-pipe woke us: only then can a child have exited.
        // waitpid(-1) walks every live child in the kernel, so calling it on
        // every pass would cost O(tasks) per start with 10,000 tasks alive.
        let mut signalled = false;
        loop {
            if signalled {
                self.reap()?;
            }
            self.check_signals();
            self.fire_timers();
            self.start_due();
            if self.finished() {
                return Ok(());
            }
            let timeout = self
                .next_wake()
                .map(|t| t.saturating_duration_since(Instant::now()));
            let mut fds = vec![PollFd::from_borrowed_fd(self.signals.fd(), PollFlags::IN)];
            pids.clear();
            if relay {
                for (pid, task) in &self.tasks {
                    if let Capture::Pipe(pipe) = &task.capture {
                        fds.push(PollFd::new(pipe.fd(), PollFlags::IN));
                        pids.push(*pid);
                    }
                }
            }
            platform::poll(&mut fds, timeout).context("poll failed")?;
            signalled = !fds[0].revents().is_empty();
            if signalled {
                self.signals.drain();
            }
            ready.clear();
            ready.extend(
                fds[1..]
                    .iter()
                    .zip(&pids)
                    .filter(|(fd, _)| !fd.revents().is_empty())
                    .map(|(_, pid)| *pid),
            );
            drop(fds);
            for pid in ready.drain(..) {
                self.read_output(pid);
            }
        }
    }

    fn finished(&self) -> bool {
        if self.hung_pending > 0 {
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
        let start = (self.stop.is_none() && !self.cap_reached())
            .then(|| self.plan.entries.get(self.next).map(|e| self.deadline(e)))
            .flatten();
        let timer = self.timers.peek().map(|Reverse((at, _, _))| *at);
        let stop = self.stop.as_ref().filter(|s| !s.killed).map(|s| s.kill_at);
        [start, timer, stop].into_iter().flatten().min()
    }

    fn deadline(&self, entry: &Entry) -> Instant {
        self.clock.start + entry.offset
    }

    fn start_due(&mut self) {
        if self.stop.is_some() {
            return;
        }
        let mut now = Instant::now();
        while let Some(entry) = self.plan.entries.get(self.next) {
            let deadline = self.deadline(entry);
            if now < deadline {
                // Caught up with the schedule.
                self.cap_waiting = false;
                break;
            }
            if self.cap_reached() {
                self.cap_waiting = true;
                return;
            }
            if self.cap_waiting {
                self.cap_delayed += 1;
                debug!(
                    "{}: starting {} late because --max-concurrent was reached",
                    quoted(&entry.id),
                    display::duration_precise(now - deadline)
                );
            }
            self.start(entry, deadline);
            self.next += 1;
            now = Instant::now();
        }
    }

    fn start(&mut self, entry: &Entry, deadline: Instant) {
        let tag = quoted(&entry.id);
        let path = self.plan.path(entry);
        if !path.is_dir() {
            // Removed (a tenant deleted) since the plan was made.
            info!(instance = &*entry.id.to_string_lossy(); "{tag}: skipped: its directory no longer exists");
            self.record(
                entry.slot,
                TaskResult::new(Outcome::Skipped(Skip::Vanished)),
            );
            return;
        }
        let lock_path = self.plan.lock_path(entry);
        let file = match self.plan.try_lock(entry) {
            Ok(Attempt::Acquired(locked)) => locked,
            Ok(Attempt::Busy(holder)) => {
                let skip = self.busy(&tag, &entry.id, holder, &lock_path);
                self.record(entry.slot, TaskResult::new(Outcome::Skipped(skip)));
                return;
            }
            Err(err) => {
                self.failed_to_start(entry, &tag, err.to_string(), exit::FAILURE);
                return;
            }
        };
        let (output, capture) = match self.outputs.for_task(&entry.id, entry.slot) {
            Ok(pair) => pair,
            Err(err) => {
                self.failed_to_start(entry, &tag, err.to_string(), exit::FAILURE);
                return;
            }
        };
        let argv = self.plan.argv(entry);
        let env = TaskEnv {
            id: &entry.id,
            path: &path,
            slot: entry.slot,
            window_start: &self.window_start,
        };
        let before = platform::boottime_ticks();
        let spawned = spawn::spawn(
            self.plan.program.as_deref(),
            &argv,
            &env,
            &file.file,
            output,
        );
        let starttime = StartTime {
            lo: before,
            hi: platform::boottime_ticks(),
        };
        let pid = match spawned {
            Ok(pid) => pid,
            Err(err) => {
                if let Capture::Spool(spool) = &capture {
                    self.outputs.settle_spool(&tag, spool, false);
                }
                let reason = format!("{}: {}", quoted(&argv[0]), spawn::describe(&err));
                self.failed_to_start(entry, &tag, reason, spawn::start_failure_code(&err));
                return;
            }
        };
        let started = Instant::now();
        let started_wall = SystemTime::now();
        let lateness = started.saturating_duration_since(deadline);
        self.record_holder(&file, pid, starttime, started_wall, &tag);
        drop(file);
        debug!(
            instance = &*entry.id.to_string_lossy();
            "{tag}: started pid {pid} (slot {}, {} late)",
            entry.slot,
            display::duration_precise(lateness)
        );
        self.tasks.insert(
            pid,
            Task {
                slot: entry.slot,
                tag,
                started,
                started_wall,
                lateness,
                leader_alive: true,
                timed_out: false,
                escalating: false,
                capture,
            },
        );
        self.alive += 1;
        self.observer.started(entry.slot);
        if let Some(timeout) = self.opts.timeout {
            self.timers
                .push(Reverse((started + timeout, TimerKind::Timeout, pid)));
        }
    }

    fn failed_to_start(&mut self, entry: &Entry, tag: &str, reason: String, code: u8) {
        info!(instance = &*entry.id.to_string_lossy(); "{tag}: not started: {reason}");
        self.record(
            entry.slot,
            TaskResult::new(Outcome::FailedToStart { reason, code }),
        );
    }

    /// Sets an instance's final outcome for this run.
    fn record(&mut self, slot: usize, result: TaskResult) {
        if result.outcome.is_failure()
            && crate::logging::structured()
            && let Some(line) = crate::report::describe(&result, self.opts.timeout)
        {
            let id = &self.plan.entries[slot].id;
            warn!(instance = &*id.to_string_lossy(); "{}: {line}", quoted(id));
        }
        self.observer.ended(slot, &result);
        self.results[slot] = Some(result);
    }

    /// Decides what a busy lock means: another run's task, or a hung one
    /// whose run died, which is then killed.
    fn busy(
        &mut self,
        tag: &str,
        id: &std::ffi::OsStr,
        holder: Option<Holder>,
        lock_path: &std::path::Path,
    ) -> Skip {
        let raw = id.to_string_lossy();
        let now = SystemTime::now();
        let Some(holder) = holder else {
            let who = "another process (no holder record in the lock file)".to_string();
            info!(instance = &*raw; "{tag}: skipped: lock is held by {who}");
            return Skip::Locked(who);
        };
        let who = holder.describe(now);
        if !holder.is_overdue(now) {
            info!(instance = &*raw; "{tag}: skipped: lock is held by {who}");
            return Skip::Locked(who);
        }
        let Some(pgid) = reclaim::verified_group(&holder, lock_path) else {
            info!(
                instance = &*raw;
                "{tag}: skipped: lock is held by {who}, past its timeout, but no process of its group holds it"
            );
            return Skip::Locked(who);
        };
        let limit = holder.timeout.unwrap_or_default();
        let first = first_signal(self.opts.kill_after);
        warn!(
            instance = &*raw;
            "{tag}: lock holder {who} is past its {} timeout and its run is gone; sending {} to its process group {pgid}",
            humantime::format_duration(limit),
            platform::signal_name(first)
        );
        signal_group(pgid, first, tag);
        if first == SIGTERM {
            self.hung_pending += 1;
            self.timers.push(Reverse((
                Instant::now() + self.opts.kill_after,
                TimerKind::KillHung,
                pgid,
            )));
        }
        Skip::KilledHungHolder(who)
    }

    fn record_holder(
        &self,
        file: &lock::Locked,
        pid: i32,
        starttime: StartTime,
        started: SystemTime,
        tag: &str,
    ) {
        let holder = Holder {
            pid,
            starttime,
            started,
            timeout: self.opts.timeout,
            grace: self.opts.kill_after,
            run_pid: platform::pid(),
        };
        if let Err(err) = file.record(&holder) {
            warn!("{tag}: cannot write the holder record into its lock file: {err}");
        }
    }

    fn reap(&mut self) -> Result<()> {
        while let Some((pid, status)) = platform::reap_any().context("waitpid failed")? {
            let Some(task) = self.tasks.get_mut(&pid) else {
                debug!("reaped pid {pid}, which is not one of our tasks");
                continue;
            };
            task.leader_alive = false;
            self.alive -= 1;
            let duration = task.started.elapsed();
            let outcome = match status {
                _ if task.timed_out => Outcome::TimedOut,
                ExitStatus::Code(0) => Outcome::Ok,
                ExitStatus::Code(code) => Outcome::Failed(code),
                ExitStatus::Signal(sig) => Outcome::Killed(sig),
            };
            debug!(
                instance = &*self.plan.entries[task.slot].id.to_string_lossy();
                "{}: {} after {}",
                task.tag,
                match status {
                    ExitStatus::Code(c) => format!("exited with status {c}"),
                    ExitStatus::Signal(s) => format!("killed by {}", platform::signal_name(s)),
                },
                display::duration(duration)
            );
            if let Capture::Spool(spool) = &task.capture {
                self.outputs
                    .settle_spool(&task.tag, spool, outcome.is_failure());
                task.capture = Capture::None;
            }
            if matches!(task.capture, Capture::Pipe(_)) {
                // Read on until the pipe closes, but no longer than the grace
                // period: a background child may keep it open forever.
                self.timers.push(Reverse((
                    Instant::now() + self.opts.kill_after,
                    TimerKind::Drain,
                    pid,
                )));
            }
            let slot = task.slot;
            let result = TaskResult {
                outcome,
                started: Some(task.started_wall),
                duration: Some(duration),
                lateness: Some(task.lateness),
            };
            let task = &self.tasks[&pid];
            if log::log_enabled!(log::Level::Debug)
                && !task.escalating
                && platform::group_alive(pid)
            {
                debug!(
                    "{}: processes left in its group keep running and keep the lock",
                    task.tag
                );
            }
            self.record(slot, result);
            self.remove_if_settled(pid);
        }
        Ok(())
    }

    fn read_output(&mut self, pid: i32) {
        let Some(task) = self.tasks.get_mut(&pid) else {
            return;
        };
        if let Capture::Pipe(pipe) = &mut task.capture
            && self.outputs.read_pipe(&task.tag, pipe)
        {
            self.outputs.finish_pipe(&task.tag, pipe);
            task.capture = Capture::None;
            self.remove_if_settled(pid);
        }
    }

    fn remove_if_settled(&mut self, pid: i32) {
        if self.tasks.get(&pid).is_some_and(Task::settled) {
            self.tasks.remove(&pid);
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, kind, pid))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if kind == TimerKind::KillHung {
                self.hung_pending -= 1;
                if platform::group_alive(pid) {
                    info!("hung process group {pid} survived SIGTERM; sending SIGKILL");
                    signal_group(pid, SIGKILL, &format!("process group {pid}"));
                }
                continue;
            }
            let kill_after = self.opts.kill_after;
            let Some(task) = self.tasks.get_mut(&pid) else {
                continue;
            };
            match kind {
                TimerKind::Timeout if task.leader_alive && !task.timed_out => {
                    task.timed_out = true;
                    task.escalating = true;
                    let first = first_signal(kill_after);
                    info!(
                        instance = &*self.plan.entries[task.slot].id.to_string_lossy();
                        "{}: timed out; sending {} to its process group",
                        task.tag,
                        platform::signal_name(first)
                    );
                    signal_group(pid, first, &task.tag);
                    self.timers
                        .push(Reverse((now + kill_after, TimerKind::Kill, pid)));
                }
                TimerKind::Kill => {
                    if platform::group_alive(pid) {
                        info!(
                            instance = &*self.plan.entries[task.slot].id.to_string_lossy();
                            "{}: still running {} after SIGTERM; sending SIGKILL to its process group",
                            task.tag,
                            display::duration(kill_after)
                        );
                        signal_group(pid, SIGKILL, &task.tag);
                    }
                    task.escalating = false;
                }
                TimerKind::Drain => {
                    if let Capture::Pipe(pipe) = &mut task.capture {
                        debug!(
                            "{}: its output pipe is still open after the grace period; closing it",
                            task.tag
                        );
                        self.outputs.read_pipe(&task.tag, pipe);
                        self.outputs.finish_pipe(&task.tag, pipe);
                        task.capture = Capture::None;
                    }
                }
                TimerKind::Timeout | TimerKind::KillHung => {}
            }
            self.remove_if_settled(pid);
        }
    }

    fn check_signals(&mut self) {
        let (count, signal) = self.signals.stops();
        if count > self.stops_seen {
            self.stops_seen = count;
            if self.stop.is_none() {
                let remaining = self.plan.entries.len() - self.next;
                info!(
                    "received {}: not starting the remaining {remaining} instances; {} {} running tasks",
                    platform::signal_name(signal),
                    if self.opts.detach {
                        "leaving alone"
                    } else {
                        "forwarding it to"
                    },
                    self.alive
                );
                self.stop = Some(Stop {
                    signal,
                    kill_at: Instant::now() + self.opts.kill_after,
                    killed: false,
                });
                if !self.opts.detach {
                    self.signal_all(signal);
                }
            } else if !self.opts.detach {
                info!("received a second stop signal: killing every task now");
                self.kill_all();
            }
        }
        if let Some(stop) = &self.stop
            && !stop.killed
            && !self.opts.detach
            && Instant::now() >= stop.kill_at
        {
            self.kill_all();
        }
    }

    fn signal_all(&self, sig: i32) {
        for (pid, task) in &self.tasks {
            signal_group(*pid, sig, &task.tag);
        }
    }

    fn kill_all(&mut self) {
        self.signal_all(SIGKILL);
        if let Some(stop) = &mut self.stop {
            stop.killed = true;
        }
        // SIGKILL cannot be ignored: groups whose leader is gone need no more
        // attention, and their pipes no more reading. Leaders still alive
        // are reaped as they die.
        for task in self.tasks.values_mut() {
            task.escalating = false;
            if let Capture::Pipe(pipe) = &mut task.capture
                && !task.leader_alive
            {
                self.outputs.finish_pipe(&task.tag, pipe);
                task.capture = Capture::None;
            }
        }
        self.tasks.retain(|_, t| !t.settled());
    }

    fn into_report(mut self) -> Report {
        let stopped_by = self.stop.as_ref().map(|s| s.signal);
        let detached: Vec<(usize, TaskResult)> = self
            .tasks
            .values()
            .map(|task| {
                // Only reachable with --detach: started, not waited for.
                let result = TaskResult {
                    outcome: Outcome::Detached,
                    started: Some(task.started_wall),
                    duration: None,
                    lateness: Some(task.lateness),
                };
                (task.slot, result)
            })
            .collect();
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
        };
        if let Some((slot, late)) = report.max_lateness() {
            debug!(
                "worst start lateness: {} ({}, slot {slot})",
                display::duration_precise(late),
                quoted(&self.plan.entries[slot].id)
            );
        }
        if self.cap_delayed > 0 {
            debug!("{} starts waited for --max-concurrent", self.cap_delayed);
        }
        report
    }
}

/// The signal that starts stopping a group: SIGTERM, or SIGKILL at once when
/// there is no grace period (`--kill-after 0s`).
fn first_signal(kill_after: Duration) -> i32 {
    if kill_after.is_zero() {
        SIGKILL
    } else {
        SIGTERM
    }
}

fn signal_group(pgid: i32, sig: i32, tag: &str) {
    if let Err(err) = platform::kill_group(pgid, sig) {
        warn!(
            "{tag}: cannot send {} to process group {pgid}: {err}",
            platform::signal_name(sig)
        );
    }
}
