//! A fake [`Host`] on a fake clock, for the engine's unit tests: tasks are
//! scripts (how long they run, how they exit, whether they ignore SIGTERM,
//! what starting them does, what they cost), and every call the engine
//! makes is logged with the fake instant it was made at. The host can hold
//! starts back for a while, take time to start each task (a saturated
//! machine), or stall: stop, as SIGSTOP or a frozen VM stops scatter, while
//! its clock runs on.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use super::host::{Event, Host, Started};
use crate::outcome::{Outcome, Skip};
use crate::plan::Entry;
use crate::platform::{ExitStatus, Usage};

pub const SIGTERM: i32 = 15;
pub const SIGKILL: i32 = 9;

pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// How a fake task behaves.
#[derive(Clone, Debug)]
pub struct Script {
    /// `None`: runs until killed.
    pub runs_for: Option<Duration>,
    pub status: ExitStatus,
    pub ignores_term: bool,
    /// What starting it does: results handed out in turn, the last repeated.
    pub start: Vec<FakeStart>,
    /// Its output stays open this long after the leader exits (`None`: it
    /// has no relayed output).
    pub output_lingers: Option<Duration>,
    /// What the host reports it cost when it is reaped.
    pub usage: Option<Usage>,
    /// A task that is not a process (a request): it has no pid and ends
    /// with this outcome instead of an exit status.
    pub request: Option<Outcome>,
}

#[derive(Clone, Debug)]
pub enum FakeStart {
    Run,
    Busy,
    Fail { again: bool },
}

impl Default for Script {
    fn default() -> Script {
        Script {
            runs_for: Some(secs(0.1)),
            status: ExitStatus::Code(0),
            ignores_term: false,
            start: vec![FakeStart::Run],
            output_lingers: None,
            usage: None,
            request: None,
        }
    }
}

impl Script {
    /// Runs for `secs`, then exits 0.
    pub fn runs(secs_: f64) -> Script {
        Script {
            runs_for: Some(secs(secs_)),
            ..Script::default()
        }
    }

    /// Runs until killed; exits on SIGTERM.
    pub fn forever() -> Script {
        Script {
            runs_for: None,
            ..Script::default()
        }
    }

    /// Runs until killed, and ignores SIGTERM.
    pub fn stubborn() -> Script {
        Script {
            ignores_term: true,
            ..Script::forever()
        }
    }

    /// Starting it gives these results in turn.
    pub fn starting(start: Vec<FakeStart>) -> Script {
        Script {
            start,
            ..Script::default()
        }
    }
}

/// What the engine asked the host to do, with the fake time it happened at.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Start(usize),
    Signal(usize, i32),
    Ended(usize, bool),
    CloseOutput(usize),
}

struct Running {
    exit_at: Option<Instant>,
    status: ExitStatus,
    ignores_term: bool,
    output_until: Option<Option<Instant>>,
    exited: bool,
    usage: Option<Usage>,
    request: Option<Outcome>,
}

pub struct Fake {
    pub base: Instant,
    pub now: Instant,
    scripts: HashMap<usize, Script>,
    attempts: HashMap<usize, usize>,
    running: HashMap<usize, Running>,
    /// Stop signals scatter receives, at offsets from the start.
    pub stops: Vec<(Duration, i32)>,
    pub calls: Vec<(Duration, Call)>,
    /// Starts are held back until this offset from the start.
    pub hold_until: Option<Duration>,
    /// Starts are held back during each of these spans (from, until).
    pub holds: Vec<(Duration, Duration)>,
    /// scatter is stopped from the first offset to the second: nothing it
    /// waits for is seen before then.
    pub stall: Option<(Duration, Duration)>,
    /// How long each start takes.
    pub start_cost: Duration,
    waits: usize,
}

impl Fake {
    pub fn new(scripts: HashMap<usize, Script>) -> Fake {
        let base = Instant::now();
        Fake {
            base,
            now: base,
            scripts,
            attempts: HashMap::new(),
            running: HashMap::new(),
            stops: Vec::new(),
            calls: Vec::new(),
            hold_until: None,
            holds: Vec::new(),
            stall: None,
            start_cost: Duration::ZERO,
            waits: 0,
        }
    }

    fn log(&mut self, call: Call) {
        let at = self.now - self.base;
        self.calls.push((at, call));
    }

    fn collect(&mut self, events: &mut Vec<Event>) {
        let now = self.now;
        let mut slots: Vec<usize> = self.running.keys().copied().collect();
        slots.sort_unstable();
        for slot in slots {
            let r = self.running.get_mut(&slot).unwrap();
            if !r.exited && r.exit_at.is_some_and(|t| t <= now) {
                r.exited = true;
                match &r.request {
                    Some(outcome) => events.push(Event::Done {
                        slot,
                        outcome: outcome.clone(),
                    }),
                    None => events.push(Event::Exited {
                        slot,
                        status: r.status,
                        usage: r.usage,
                    }),
                }
            }
            if r.exited
                && let Some(Some(until)) = r.output_until
                && until <= now
            {
                r.output_until = None;
                events.push(Event::OutputClosed { slot });
            }
        }
    }

    fn next_event(&self) -> Option<Instant> {
        let exits = self.running.values().filter_map(|r| {
            if !r.exited {
                r.exit_at
            } else {
                r.output_until.flatten()
            }
        });
        let stops = self
            .stops
            .iter()
            .map(|(at, _)| self.base + *at)
            .filter(|t| *t > self.now);
        exits.chain(stops).min()
    }
}

impl Host for &mut Fake {
    fn now(&self) -> Instant {
        self.now
    }

    fn stops(&self) -> (usize, i32) {
        let now = self.now - self.base;
        let seen: Vec<_> = self.stops.iter().filter(|(at, _)| *at <= now).collect();
        (seen.len(), seen.last().map_or(0, |(_, sig)| *sig))
    }

    fn start(&mut self, entry: &Entry) -> Started {
        let slot = entry.slot;
        self.log(Call::Start(slot));
        let script = self.scripts.get(&slot).cloned().unwrap_or_default();
        let n = self.attempts.entry(slot).or_default();
        let what = script.start[(*n).min(script.start.len() - 1)].clone();
        *n += 1;
        match what {
            FakeStart::Busy => Started::Skipped(Skip::Locked("pid 7".into())),
            FakeStart::Fail { again } => Started::Failed {
                reason: "no".into(),
                code: 126,
                again,
            },
            FakeStart::Run => {
                let now = self.now;
                self.running.insert(
                    slot,
                    Running {
                        exit_at: script.runs_for.map(|d| now + d),
                        status: script.status,
                        ignores_term: script.ignores_term,
                        output_until: script
                            .output_lingers
                            .map(|d| script.runs_for.map(|r| now + r + d)),
                        exited: false,
                        usage: script.usage,
                        request: script.request.clone(),
                    },
                );
                self.now += self.start_cost;
                Started::Running {
                    pid: script.request.is_none().then_some(1000 + slot as i32),
                    wall: SystemTime::now(),
                    output: script.output_lingers.is_some(),
                }
            }
        }
    }

    fn hold_starts(&mut self) -> Option<Instant> {
        let now = self.now - self.base;
        let spans = self.hold_until.map(|until| (Duration::ZERO, until));
        spans
            .into_iter()
            .chain(self.holds.iter().copied())
            .filter(|(from, until)| *from <= now && now < *until)
            .map(|(_, until)| self.base + until)
            .max()
    }

    fn signal(&mut self, slots: &[usize], sig: i32) {
        let mut slots = slots.to_vec();
        slots.sort_unstable();
        for slot in slots {
            self.log(Call::Signal(slot, sig));
            let now = self.now;
            if let Some(r) = self.running.get_mut(&slot)
                && !r.exited
                && (sig == SIGKILL || !r.ignores_term)
            {
                r.exit_at = Some(now);
                r.status = ExitStatus::Signal(sig);
                if r.request.is_some() {
                    r.request = Some(Outcome::Killed(sig));
                }
            }
        }
    }

    fn reap(&mut self, events: &mut Vec<Event>) {
        self.collect(events);
    }

    fn wait(&mut self, deadline: Option<Instant>, events: &mut Vec<Event>) {
        self.waits += 1;
        assert!(self.waits < 10_000, "the engine does not make progress");
        let next = [deadline, self.next_event()].into_iter().flatten().min();
        let next = next.expect("the engine would sleep forever");
        let mut to = self.now.max(next);
        if let Some((from, until)) = self.stall
            && self.now < self.base + from
            && self.base + from <= to
        {
            // Stopped: the wake-up comes when it resumes, not before.
            to = to.max(self.base + until);
            self.stall = None;
        }
        self.now = to;
        self.collect(events);
    }

    fn ended(&mut self, slot: usize, failed: bool) {
        self.log(Call::Ended(slot, failed));
    }

    fn close_output(&mut self, slot: usize) {
        self.log(Call::CloseOutput(slot));
        if let Some(r) = self.running.get_mut(&slot) {
            r.output_until = None;
        }
    }

    fn forget(&mut self, _slot: usize) {}

    fn pending(&self) -> Option<Instant> {
        None
    }
}
