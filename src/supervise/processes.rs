//! The real [`Host`]: tasks are processes, each the leader of its own
//! process group, holding its instance's lock.
//!
//! Starting claims the lock ([`super::claims`], shared with every host), spawns
//! through `posix_spawn` with the locked descriptor inherited, and writes
//! the holder record, then gives the task's group its `--nice` and
//! `--ionice` priorities. Reaping is `wait4(-1, WNOHANG)`, done only after
//! SIGCHLD, which also hands over what the task cost. Sleeping is one `poll`
//! on the signal self-pipe and, with `--output tag`, the tasks' output
//! pipes. Due starts are held while the host is under pressure
//! ([`crate::pressure`]).
//!
//! **Signalling only the task's own group.** A task's group id is its
//! leader's pid. While the leader has not been reaped, that pid cannot be
//! reused, so the group id is safe to signal. Once the leader is reaped, the
//! id could be taken by an unrelated process (`setsid`) as soon as the last
//! member of the group exits; so before signalling a reaped leader's group,
//! the host checks in `/proc` that a member of the group, started no earlier
//! than the leader, still holds the task's lock file open (a group id cannot
//! be reused while any member lives). A group id of 1 or less is never
//! signalled. Timers live in the engine and are keyed by slot, never by
//! pid, so a pid reused by a later task is never mistaken for an earlier
//! one.

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result};
use log::{debug, warn};

use super::Options;
use super::claims::{Claims, signal_group};
use super::host::{Event, Host, Started};
use crate::display::quoted;
use crate::exit;
use crate::lock::{HolderTask, StartTime};
use crate::output::{Capture, Outputs};
use crate::plan::{Entry, Plan};
use crate::platform::{self, Group, PollFd, PollFlags, Signals};
use crate::pressure::Gauge;
use crate::priority::Prioritizer;
use crate::spawn::{self, Spawner, TaskEnv};

/// What the host keeps for one started task.
struct Proc {
    pid: i32,
    reaped: bool,
    group: Group,
    capture: Capture,
}

pub struct Processes<'a> {
    plan: &'a Plan,
    opts: &'a Options,
    signals: Signals,
    outputs: Outputs,
    /// What every spawn of the run shares (attributes, environment).
    spawner: Spawner,
    /// Locks, holder records and hung holders of dead runs.
    claims: Claims<'a>,
    procs: HashMap<usize, Proc>,
    /// Leaders not reaped yet, by pid.
    by_pid: HashMap<i32, usize>,
    /// `--max-pressure`, `--max-load`.
    gauge: Option<Gauge>,
    /// `--nice`, `--ionice`.
    priority: Prioritizer,
}

impl<'a> Processes<'a> {
    pub fn new(plan: &'a Plan, opts: &'a Options, window_start: String) -> Result<Self> {
        let signals = Signals::install().context("cannot install signal handlers")?;
        let outputs = Outputs::new(&opts.output)?;
        let gauge = opts.pressure.as_ref().map(Gauge::open).transpose()?;
        Ok(Processes {
            plan,
            opts,
            signals,
            outputs,
            spawner: Spawner::new(&window_start).context("cannot prepare to start tasks")?,
            claims: Claims::new(plan, opts),
            procs: HashMap::new(),
            by_pid: HashMap::new(),
            gauge,
            priority: Prioritizer::new(opts.priority),
        })
    }

    fn tag(&self, slot: usize) -> String {
        quoted(&self.plan.entries[slot].id)
    }

    fn failed(reason: String, code: u8) -> Started {
        Started::Failed {
            reason,
            code,
            again: false,
        }
    }
}

impl Host for Processes<'_> {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn stops(&self) -> (usize, i32) {
        self.signals.stops()
    }

    fn start(&mut self, entry: &Entry) -> Started {
        let file = match self.claims.claim(entry) {
            Ok(locked) => locked,
            Err(refused) => return refused,
        };
        let path = self.plan.path(entry);
        let lock_id = file.id;
        let (output, capture) = match self.outputs.for_task(&entry.id, entry.slot) {
            Ok(pair) => pair,
            Err(err) => return Self::failed(err.to_string(), exit::FAILURE),
        };
        let argv = self.plan.argv_at(entry, &path);
        let env = TaskEnv {
            id: &entry.id,
            path: &path,
            slot: entry.slot,
        };
        let before = platform::boottime_ticks();
        let spawned = self.spawner.spawn(
            self.plan.program.as_deref(),
            &argv,
            &env,
            std::os::fd::AsFd::as_fd(&file.file),
            &output,
        );
        // The task has its own copies of its stdout and stderr now.
        drop(output);
        let starttime = StartTime {
            lo: before,
            hi: platform::boottime_ticks(),
        };
        let pid = match spawned {
            Ok(pid) => pid,
            Err(err) => {
                if let Capture::Spool(spool) = &capture {
                    self.outputs.settle_spool(&quoted(&entry.id), spool, false);
                }
                let again = err.raw_os_error() == Some(rustix::io::Errno::AGAIN.raw_os_error());
                return Started::Failed {
                    reason: format!("{}: {}", quoted(&argv[0]), crate::display::error_text(&err)),
                    code: spawn::start_failure_code(&err),
                    again,
                };
            }
        };
        // Right after the exec: the gap is documented (README, `priority`).
        self.priority.apply(pid);
        self.claims
            .record(&file, pid, starttime, HolderTask::Process, &entry.id);
        drop(file);
        let output = matches!(capture, Capture::Pipe(_));
        self.procs.insert(
            entry.slot,
            Proc {
                pid,
                reaped: false,
                group: Group {
                    pgid: pid,
                    lock: lock_id,
                    not_before: starttime.lo,
                },
                capture,
            },
        );
        self.by_pid.insert(pid, entry.slot);
        Started::Running {
            pid: Some(pid),
            wall: SystemTime::now(),
            output,
        }
    }

    fn hold_starts(&mut self) -> Option<Instant> {
        self.gauge.as_mut()?.hold(Instant::now())
    }

    fn signal(&mut self, slots: &[usize], sig: i32) {
        let mut reaped: Vec<(usize, Group)> = Vec::new();
        for slot in slots {
            let Some(proc_) = self.procs.get(slot) else {
                continue;
            };
            if proc_.reaped {
                reaped.push((*slot, proc_.group));
            } else {
                // An unreaped leader's pid cannot have been reused.
                signal_group(proc_.pid, sig, &self.tag(*slot));
            }
        }
        if reaped.is_empty() {
            return;
        }
        let groups: Vec<Group> = reaped.iter().map(|(_, g)| *g).collect();
        let holding = platform::groups_holding(&groups);
        for ((slot, group), holds) in reaped.into_iter().zip(holding) {
            if holds {
                signal_group(group.pgid, sig, &self.tag(slot));
            } else {
                debug!(
                    "{}: no process of its group {} holds its lock any more; not sending {}",
                    self.tag(slot),
                    group.pgid,
                    platform::signal_name(sig)
                );
            }
        }
    }

    fn reap(&mut self, events: &mut Vec<Event>) {
        if self.signals.take_child() {
            loop {
                match platform::reap_any() {
                    Ok(Some((pid, status, usage))) => {
                        let Some(slot) = self.by_pid.remove(&pid) else {
                            debug!("reaped pid {pid}, which is not one of our tasks");
                            continue;
                        };
                        if let Some(proc_) = self.procs.get_mut(&slot) {
                            proc_.reaped = true;
                        }
                        events.push(Event::Exited {
                            slot,
                            status,
                            usage: Some(usage),
                        });
                    }
                    Ok(None) => break,
                    Err(err) => {
                        warn!("wait4 failed: {err}");
                        break;
                    }
                }
            }
        }
        self.claims.fire_hung();
    }

    fn wait(&mut self, deadline: Option<Instant>, events: &mut Vec<Event>) {
        let timeout = deadline.map(|t| t.saturating_duration_since(Instant::now()));
        let mut slots = Vec::new();
        let mut fds = vec![PollFd::from_borrowed_fd(self.signals.fd(), PollFlags::IN)];
        if matches!(self.opts.output, crate::output::OutputMode::Tag) {
            for (slot, proc_) in &self.procs {
                if let Capture::Pipe(pipe) = &proc_.capture {
                    fds.push(PollFd::new(pipe.fd(), PollFlags::IN));
                    slots.push(*slot);
                }
            }
        }
        let ready = super::poll_ready(&self.signals, fds, &slots, timeout);
        for slot in ready {
            let tag = self.tag(slot);
            let Some(proc_) = self.procs.get_mut(&slot) else {
                continue;
            };
            if let Capture::Pipe(pipe) = &mut proc_.capture
                && self.outputs.read_pipe(&tag, pipe)
            {
                self.outputs.finish_pipe(&tag, pipe);
                proc_.capture = Capture::None;
                events.push(Event::OutputClosed { slot });
            }
        }
        self.reap(events);
    }

    fn ended(&mut self, slot: usize, failed: bool) {
        let tag = self.tag(slot);
        let Some(proc_) = self.procs.get_mut(&slot) else {
            return;
        };
        if let Capture::Spool(spool) = &proc_.capture {
            self.outputs.settle_spool(&tag, spool, failed);
            proc_.capture = Capture::None;
        }
        if log::log_enabled!(log::Level::Debug) && platform::group_alive(proc_.pid) {
            debug!("{tag}: processes left in its group keep running and keep the lock");
        }
    }

    fn close_output(&mut self, slot: usize) {
        let tag = self.tag(slot);
        let Some(proc_) = self.procs.get_mut(&slot) else {
            return;
        };
        if let Capture::Pipe(pipe) = &mut proc_.capture {
            self.outputs.read_pipe(&tag, pipe);
            self.outputs.finish_pipe(&tag, pipe);
            proc_.capture = Capture::None;
        }
    }

    fn forget(&mut self, slot: usize) {
        if let Some(proc_) = self.procs.remove(&slot)
            && !proc_.reaped
        {
            self.by_pid.remove(&proc_.pid);
        }
    }

    fn pending(&self) -> Option<Instant> {
        self.claims.pending()
    }
}

impl Drop for Processes<'_> {
    fn drop(&mut self) {
        // The supervisor's stop handlers go with `signals`, right after
        // this; the relay's take over first, so no stop signal falls in
        // between and is ignored while the report waits for its reader.
        crate::relay::arm();
    }
}
