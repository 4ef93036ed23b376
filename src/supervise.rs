//! The supervisor: one loop that starts, reaps, times out and stops tasks.
//!
//! A single thread does everything. It sleeps in `poll` on the signal
//! self-pipe until the next absolute deadline: the next planned start, a
//! timeout, the end of a grace period. SIGCHLD wakes it to reap with
//! `waitpid(-1, WNOHANG)` and a pid → task map, so no child is ever polled in
//! turn and no thread is spent per child. The spawner keeps no descriptor per
//! running task: each lock descriptor is closed as soon as the task owns it.
//!
//! Deadlines are `start + offset`, computed from one start instant, so a slow
//! start never pushes later ones back. If the machine cannot keep up, starts
//! happen late but none is skipped.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::num::NonZeroUsize;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use log::{debug, info, warn};

use crate::config::Clock;
use crate::display::{self, quoted};
use crate::exit;
use crate::lock::{self, Attempt, Holder};
use crate::plan::{Entry, Plan};
use crate::platform::{self, ExitStatus, PollFd, PollFlags, Signals};
use crate::report::{Outcome, Report, Skip, TaskResult};
use crate::spawn::{self, Output, TaskEnv};

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
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_concurrent: None,
            timeout: None,
            kill_after: Duration::from_secs(10),
            detach: false,
        }
    }
}

/// A started task whose process group we may still have to signal.
struct Task {
    slot: usize,
    started: Instant,
    started_wall: SystemTime,
    lateness: Duration,
    leader_alive: bool,
    timed_out: bool,
    /// SIGTERM sent by a timeout, SIGKILL still due.
    escalating: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    Timeout,
    Kill,
}

/// A stop signal received by scatter itself.
struct Stop {
    signal: i32,
    kill_at: Instant,
    killed: bool,
}

/// Runs the plan to completion and returns what happened to each instance.
pub fn run(plan: &Plan, clock: &Clock, opts: &Options) -> Result<Report> {
    let signals = Signals::install().context("cannot install signal handlers")?;
    let mut sup = Supervisor {
        plan,
        clock,
        opts,
        signals,
        window_start: format!("{:.6}", crate::report::unix_secs(clock.start_wall)),
        tasks: HashMap::new(),
        alive: 0,
        timers: BinaryHeap::new(),
        results: vec![None; plan.entries.len()],
        next: 0,
        stop: None,
        stops_seen: 0,
        cap_waiting: false,
        cap_delayed: 0,
    };
    sup.run_loop()?;
    Ok(sup.into_report())
}

struct Supervisor<'a> {
    plan: &'a Plan,
    clock: &'a Clock,
    opts: &'a Options,
    signals: Signals,
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
    /// A due start is waiting for a free slot under `--max-concurrent`.
    cap_waiting: bool,
    /// Starts that waited for a free slot under `--max-concurrent`.
    cap_delayed: usize,
}

impl Supervisor<'_> {
    fn run_loop(&mut self) -> Result<()> {
        loop {
            self.reap()?;
            self.check_signals();
            self.fire_timers();
            self.start_due();
            if self.finished() {
                return Ok(());
            }
            let timeout = self
                .next_wake()
                .map(|t| t.saturating_duration_since(Instant::now()));
            let mut fds = [PollFd::from_borrowed_fd(self.signals.fd(), PollFlags::IN)];
            platform::poll(&mut fds, timeout).context("poll failed")?;
            if !fds[0].revents().is_empty() {
                self.signals.drain();
            }
        }
    }

    fn finished(&self) -> bool {
        let all_started = self.next >= self.plan.entries.len();
        if self.stop.is_some() {
            self.opts.detach || self.tasks.is_empty()
        } else if self.opts.detach {
            all_started
        } else {
            all_started && self.tasks.is_empty()
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
        let id = quoted(&entry.id);
        let lock_path = self.plan.lock_path(entry);
        let file = match lock::try_acquire(&lock_path) {
            Ok(Attempt::Acquired(file)) => file,
            Ok(Attempt::Busy(holder)) => {
                let who = match holder {
                    Some(h) => h.describe(SystemTime::now()),
                    None => "another process (no holder record in the lock file)".to_string(),
                };
                info!("{id}: skipped: lock is held by {who}");
                self.results[entry.slot] =
                    Some(TaskResult::new(Outcome::Skipped(Skip::Locked(who))));
                return;
            }
            Err(err) => {
                info!("{id}: not started: {err}");
                self.results[entry.slot] = Some(TaskResult::new(Outcome::FailedToStart {
                    reason: err.to_string(),
                    code: exit::FAILURE,
                }));
                return;
            }
        };
        let argv = self.plan.argv(entry);
        let path = self.plan.path(entry);
        let env = TaskEnv {
            id: &entry.id,
            path: &path,
            slot: entry.slot,
            window_start: &self.window_start,
        };
        let pid = match spawn::spawn(
            self.plan.program.as_deref(),
            &argv,
            &env,
            &file,
            Output::inherit(),
        ) {
            Ok(pid) => pid,
            Err(err) => {
                let reason = format!("{}: {}", quoted(&argv[0]), spawn::describe(&err));
                info!("{id}: not started: {reason}");
                self.results[entry.slot] = Some(TaskResult::new(Outcome::FailedToStart {
                    reason,
                    code: spawn::start_failure_code(&err),
                }));
                return;
            }
        };
        let started = Instant::now();
        let started_wall = SystemTime::now();
        let lateness = started.saturating_duration_since(deadline);
        self.record_holder(&file, pid, started_wall, &id);
        drop(file);
        debug!(
            "{id}: started pid {pid} (slot {}, {} late)",
            entry.slot,
            display::duration_precise(lateness)
        );
        self.tasks.insert(
            pid,
            Task {
                slot: entry.slot,
                started,
                started_wall,
                lateness,
                leader_alive: true,
                timed_out: false,
                escalating: false,
            },
        );
        self.alive += 1;
        if let Some(timeout) = self.opts.timeout {
            self.timers
                .push(Reverse((started + timeout, TimerKind::Timeout, pid)));
        }
    }

    fn record_holder(&self, file: &std::fs::File, pid: i32, started: SystemTime, id: &str) {
        let Some(stat) = platform::proc_stat(pid) else {
            debug!("{id}: /proc/{pid}/stat unreadable; no holder record written");
            return;
        };
        let holder = Holder {
            pid,
            starttime: stat.starttime,
            started,
            timeout: self.opts.timeout,
            run_pid: platform::pid(),
        };
        if let Err(err) = holder.write_to(file) {
            warn!("{id}: cannot write the holder record into its lock file: {err}");
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
            let entry = &self.plan.entries[task.slot];
            debug!(
                "{}: {} after {}",
                quoted(&entry.id),
                match status {
                    ExitStatus::Code(c) => format!("exited with status {c}"),
                    ExitStatus::Signal(s) => format!("killed by {}", platform::signal_name(s)),
                },
                display::duration(duration)
            );
            self.results[task.slot] = Some(TaskResult {
                outcome,
                started: Some(task.started_wall),
                duration: Some(duration),
                lateness: Some(task.lateness),
            });
            if task.escalating {
                // Its group still gets the SIGKILL that is due: children
                // left in it may hold the lock.
                continue;
            }
            if platform::group_alive(pid) {
                debug!(
                    "{}: processes left in its group keep running and keep the lock",
                    quoted(&entry.id)
                );
            }
            self.tasks.remove(&pid);
        }
        Ok(())
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, kind, pid))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(task) = self.tasks.get_mut(&pid) else {
                continue;
            };
            match kind {
                TimerKind::Timeout if task.leader_alive && !task.timed_out => {
                    task.timed_out = true;
                    task.escalating = true;
                    let id = quoted(&self.plan.entries[task.slot].id);
                    let first = if self.opts.kill_after.is_zero() {
                        libc_sigkill()
                    } else {
                        libc_sigterm()
                    };
                    info!(
                        "{id}: timed out; sending {} to its process group",
                        platform::signal_name(first)
                    );
                    signal_group(pid, first, &id);
                    self.timers
                        .push(Reverse((now + self.opts.kill_after, TimerKind::Kill, pid)));
                }
                TimerKind::Timeout => {}
                TimerKind::Kill => {
                    let id = quoted(&self.plan.entries[task.slot].id);
                    if platform::group_alive(pid) {
                        info!(
                            "{id}: still running {} after SIGTERM; sending SIGKILL",
                            display::duration(self.opts.kill_after)
                        );
                        signal_group(pid, libc_sigkill(), &id);
                    }
                    task.escalating = false;
                    if !task.leader_alive {
                        self.tasks.remove(&pid);
                    }
                }
            }
        }
    }

    fn check_signals(&mut self) {
        let (count, signal) = self.signals.stops();
        if count > self.stops_seen {
            self.stops_seen = count;
            match &self.stop {
                None => {
                    let remaining = self.plan.entries.len() - self.next;
                    info!(
                        "received {}: not starting the remaining {remaining} instances; forwarding it to {} running tasks",
                        platform::signal_name(signal),
                        self.tasks.len()
                    );
                    self.stop = Some(Stop {
                        signal,
                        kill_at: Instant::now() + self.opts.kill_after,
                        killed: false,
                    });
                    if !self.opts.detach {
                        self.signal_all(signal);
                    }
                }
                Some(_) => {
                    info!("received a second stop signal: killing every task now");
                    self.kill_all();
                }
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
            signal_group(*pid, sig, &quoted(&self.plan.entries[task.slot].id));
        }
    }

    fn kill_all(&mut self) {
        self.signal_all(libc_sigkill());
        if let Some(stop) = &mut self.stop {
            stop.killed = true;
        }
        // Groups whose leader is gone need no more attention: SIGKILL cannot
        // be ignored. Leaders still alive are reaped as they die.
        self.tasks.retain(|_, t| t.leader_alive);
    }

    fn into_report(self) -> Report {
        let stopped_by = self.stop.as_ref().map(|s| s.signal);
        let detached = self.opts.detach;
        let mut results = self.results;
        for task in self.tasks.values() {
            // Only reachable with --detach: started, not waited for.
            results[task.slot] = Some(TaskResult {
                outcome: Outcome::Detached,
                started: Some(task.started_wall),
                duration: None,
                lateness: Some(task.lateness),
            });
        }
        let results: Vec<TaskResult> = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| TaskResult::new(Outcome::NotStarted)))
            .collect();
        let report = Report {
            results,
            stopped_by,
            timeout: self.opts.timeout,
            detached,
            cap_delayed: self.cap_delayed,
        };
        if let Some((slot, late)) = report.max_lateness() {
            debug!(
                "worst start lateness: {} ({}, slot {slot})",
                display::duration_precise(late),
                quoted(&self.plan.entries[slot].id)
            );
        }
        report
    }
}

fn libc_sigterm() -> i32 {
    signal_hook::consts::SIGTERM
}

fn libc_sigkill() -> i32 {
    signal_hook::consts::SIGKILL
}

fn signal_group(pgid: i32, sig: i32, id: &str) {
    if let Err(err) = platform::kill_group(pgid, sig) {
        warn!(
            "{id}: cannot send {} to process group {pgid}: {err}",
            platform::signal_name(sig)
        );
    }
}
