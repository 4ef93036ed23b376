//! Whether a due start may go now, beyond its deadline and the cap: the
//! no-burst rule (`--catch-up`) and the host's hold (pressure), bounded by
//! `--max-defer`.
//!
//! **No burst.** Every start is at least W/N ÷ FACTOR after the one before.
//! On schedule starts are W/N apart, so the rule only binds once starts fell
//! behind (scatter was stopped, the machine froze, the cap or the pressure
//! let go): the overdue ones then go out at FACTOR times the planned rate
//! until the schedule is caught up, instead of all at once. A machine too
//! slow to start at the planned rate is never held up by it, and `--only`
//! plans (W/N = 0) are not paced at all.
//!
//! **Pressure.** While the host holds starts, the next one waits, and is
//! asked about again when the host says or when it reaches `--max-defer`
//! past its slot; it is then skipped as `deferred`, or with
//! `--max-defer-action start` started anyway (still paced), so a long spell
//! of pressure sheds the backlog instead of carrying it into the next run.

use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::Engine;
use crate::display::{self, quoted};
use crate::outcome::{Outcome, TaskResult};
use crate::plan::Entry;
use crate::platform::later;
use crate::report::Held;
use crate::supervise::host::Host;
use crate::supervise::{DeferAction, Options};

/// The gate's state for one run.
#[derive(Debug)]
pub(super) struct Gate {
    /// W/N ÷ FACTOR: the least time between two starts.
    spacing: Duration,
    /// When the last start was made.
    last_start: Option<Instant>,
    /// The slot waiting for the spacing, and until when.
    paced: Option<(usize, Instant)>,
    /// The slot the host holds back, when to ask again, and when it is
    /// deferred.
    held: Option<(usize, Instant, Option<Instant>)>,
    /// Since when the host holds starts back (`None`: it does not).
    hold_since: Option<Instant>,
    /// When the host last stopped holding them.
    hold_lifted: Option<Instant>,
    /// Starts the hold delayed, for the report.
    pub(super) pressure: Held,
}

/// What the gate says about a due start.
pub(super) enum Clearance {
    /// Not yet: the engine sleeps until [`Gate::wake`].
    Wait,
    /// Deferred (recorded): go on with the next slot.
    Shed,
    /// Start it now.
    Go,
}

impl Gate {
    /// `interval` is the plan's W/N (zero for `--only`).
    pub(super) fn new(interval: Duration, opts: &Options) -> Gate {
        // At least 1 when parsed; anything else (NaN) stands for 1 here.
        let factor = opts.catch_up.max(1.0);
        let spacing =
            Duration::try_from_secs_f64(interval.as_secs_f64() / factor).unwrap_or(Duration::ZERO);
        Gate {
            spacing,
            last_start: None,
            paced: None,
            held: None,
            hold_since: None,
            hold_lifted: None,
            pressure: Held::default(),
        }
    }

    /// When the start of `slot`, due at `due`, may be tried again: its
    /// deadline, or later while it waits for the spacing or the host.
    pub(super) fn wake(&self, slot: usize, due: Instant) -> Instant {
        let mut at = due;
        if let Some((s, until)) = self.paced
            && s == slot
        {
            at = at.max(until);
        }
        if let Some((s, until, defer_at)) = self.held
            && s == slot
        {
            at = at.max(defer_at.map_or(until, |d| until.min(d)));
        }
        at
    }
}

impl<H: Host> Engine<'_, H> {
    /// Whether the due start of `entry` (deadline `deadline`) may go at
    /// `now`; the cap has been checked.
    pub(super) fn clearance(
        &mut self,
        entry: &Entry,
        deadline: Instant,
        now: Instant,
    ) -> Clearance {
        let slot = entry.slot;
        if let Some(last) = self.gate.last_start {
            let at = later(last, self.gate.spacing);
            if now < at {
                self.gate.paced = Some((slot, at));
                return Clearance::Wait;
            }
        }
        let forced = match self.host.hold_starts() {
            None => {
                self.lift_hold(now);
                false
            }
            Some(until) => {
                self.begin_hold(now);
                let defer_at = self.opts.max_defer.map(|d| later(deadline, d));
                if defer_at.is_none_or(|at| now < at) {
                    self.gate.held = Some((slot, until, defer_at));
                    return Clearance::Wait;
                }
                let waited = display::duration(now.saturating_duration_since(deadline));
                match self.opts.defer_action {
                    DeferAction::Skip => {
                        info!(
                            instance = &*entry.id.to_string_lossy();
                            "{}: deferred: the host was under pressure for {waited} past its slot (--max-defer)",
                            quoted(&entry.id)
                        );
                        self.record(slot, TaskResult::new(Outcome::Deferred));
                        return Clearance::Shed;
                    }
                    DeferAction::Start => {
                        warn!(
                            instance = &*entry.id.to_string_lossy();
                            "{}: starting despite pressure: {waited} past its slot, the --max-defer limit",
                            quoted(&entry.id)
                        );
                        true
                    }
                }
            }
        };
        // Held if a hold ended (or is forced through) after its slot: it
        // was due, or in the backlog, while the host held starts.
        let released = if forced {
            Some(now)
        } else {
            self.gate.hold_lifted
        };
        if let Some(end) = released
            && end > deadline
        {
            let delay = end - deadline;
            let held = &mut self.gate.pressure;
            held.delayed += 1;
            held.longest = Some(held.longest.map_or(delay, |l| l.max(delay)));
            if !forced {
                debug!(
                    "{}: starting {} late; pressure held it {}",
                    quoted(&entry.id),
                    display::duration_precise(now.saturating_duration_since(deadline)),
                    display::duration_precise(delay)
                );
            }
        }
        self.gate.last_start = Some(now);
        Clearance::Go
    }

    fn begin_hold(&mut self, now: Instant) {
        if self.gate.hold_since.is_none() {
            self.gate.hold_since = Some(now);
            self.observer.held(true);
        }
    }

    pub(super) fn lift_hold(&mut self, now: Instant) {
        if self.gate.hold_since.take().is_some() {
            self.gate.hold_lifted = Some(now);
            self.observer.held(false);
        }
    }
}
