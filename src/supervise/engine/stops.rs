//! Timers and stop signals: a task's timeout and its escalation to SIGKILL,
//! the grace period for its output, and what a stop signal to scatter does
//! to every task.

use std::cmp::Reverse;
use std::time::Duration;

use log::{debug, info};
use signal_hook::consts::{SIGKILL, SIGTERM};

use crate::display::{self, quoted};
use crate::platform::{self, later};
use crate::supervise::host::Host;

use super::*;

impl<H: Host> Engine<'_, H> {
    pub(super) fn fire_timers(&mut self) {
        let now = self.host.now();
        while let Some(Reverse((at, kind, slot))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let kill_after = self.opts.kill_after;
            let plan = self.plan;
            let tag = || quoted(&plan.entries[slot].id);
            let Some(task) = self.tasks.get_mut(&slot) else {
                continue;
            };
            match (kind, task.life) {
                (Timer::Timeout, Life::Running) => {
                    let first = first_signal(kill_after);
                    let kill_at = (first == SIGTERM).then(|| later(now, kill_after));
                    task.life = Life::TimingOut { kill_at };
                    if let Some(kill_at) = kill_at {
                        self.timers.push(Reverse((kill_at, Timer::Kill, slot)));
                    }
                    info!(
                        instance = &*self.plan.entries[slot].id.to_string_lossy();
                        "{}: timed out; sending {} to its process group",
                        tag(),
                        platform::signal_name(first)
                    );
                    self.host.signal(&[slot], first);
                }
                (Timer::Kill, Life::TimingOut { kill_at: Some(due) })
                | (Timer::Kill, Life::Exited { kill_at: Some(due) })
                    if due == at =>
                {
                    task.life = match task.life {
                        Life::TimingOut { .. } => Life::TimingOut { kill_at: None },
                        _ => Life::Exited { kill_at: None },
                    };
                    info!(
                        instance = &*self.plan.entries[slot].id.to_string_lossy();
                        "{}: still running {} after SIGTERM; sending SIGKILL to its process group",
                        tag(),
                        display::duration(kill_after)
                    );
                    self.host.signal(&[slot], SIGKILL);
                }
                (Timer::Drain, Life::Exited { .. }) if task.output => {
                    debug!(
                        "{}: its output is still open after the grace period; closing it",
                        tag()
                    );
                    task.output = false;
                    self.host.close_output(slot);
                }
                // A timer of a task that has moved on since it was set.
                _ => {}
            }
            self.remove_if_settled(slot);
        }
    }

    pub(super) fn check_signals(&mut self) {
        let (count, signal) = self.host.stops();
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
                    kill_at: later(self.host.now(), self.opts.kill_after),
                    killed: false,
                });
                if !self.opts.detach {
                    let slots: Vec<usize> = self.tasks.keys().copied().collect();
                    self.host.signal(&slots, signal);
                }
            } else if !self.opts.detach {
                info!("received a second stop signal: killing every task now");
                self.kill_all();
            }
        }
        if let Some(stop) = &self.stop
            && !stop.killed
            && !self.opts.detach
            && self.host.now() >= stop.kill_at
        {
            self.kill_all();
        }
    }

    fn kill_all(&mut self) {
        let slots: Vec<usize> = self.tasks.keys().copied().collect();
        self.host.signal(&slots, SIGKILL);
        if let Some(stop) = &mut self.stop {
            stop.killed = true;
        }
        // SIGKILL cannot be ignored: groups whose leader is gone need no
        // more attention, and their output no more reading. Leaders still
        // alive are reaped as they die.
        // A running task killed by the stop keeps the outcome its exit
        // status gives (killed by SIGKILL); one that was timing out stays
        // timed out.
        for (slot, task) in &mut self.tasks {
            match task.life {
                Life::Running => {}
                Life::TimingOut { .. } => task.life = Life::TimingOut { kill_at: None },
                Life::Exited { .. } => {
                    task.life = Life::Exited { kill_at: None };
                    if task.output {
                        task.output = false;
                        self.host.close_output(*slot);
                    }
                }
            }
        }
        let settled: Vec<usize> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.settled())
            .map(|(slot, _)| *slot)
            .collect();
        for slot in settled {
            self.remove_if_settled(slot);
        }
    }
}

/// The signal that starts stopping a group: SIGTERM, or SIGKILL at once when
/// there is no grace period (`--kill-after 0s`).
pub fn first_signal(kill_after: Duration) -> i32 {
    if kill_after.is_zero() {
        SIGKILL
    } else {
        SIGTERM
    }
}
