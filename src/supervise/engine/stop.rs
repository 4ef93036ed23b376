//! Stop signals to scatter itself (SIGTERM, SIGINT, SIGHUP): stop
//! starting, forward the signal to every task's group, SIGKILL what is left
//! after `--kill-after`, and SIGKILL at once on a second signal.

use std::time::Instant;

use log::info;
use signal_hook::consts::SIGKILL;

use super::{Engine, Life};
use crate::platform::{self, later};
use crate::supervise::host::Host;

/// A stop signal received by scatter itself.
pub(super) struct Stop {
    pub(super) signal: i32,
    pub(super) kill_at: Instant,
    pub(super) killed: bool,
}

impl<H: Host> Engine<'_, H> {
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
