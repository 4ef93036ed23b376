//! Whether a due start may go now, beyond its deadline, the cap and the
//! host's hold: the no-burst rule (`--catch-up`).
//!
//! **No burst.** Every start is at least W/N ÷ FACTOR after the one before.
//! On schedule starts are W/N apart, so the rule only binds once starts fell
//! behind (scatter was stopped, the machine froze, the cap or the host let
//! go): the overdue ones then go out at FACTOR times the planned rate until
//! the schedule is caught up, instead of all at once. A machine too slow to
//! start at the planned rate is never held up by it, and `--only` plans
//! (W/N = 0) are not paced at all.

use std::time::{Duration, Instant};

use super::Engine;
use crate::platform::later;
use crate::supervise::Options;
use crate::supervise::host::Host;

/// The gate's state for one run.
#[derive(Debug)]
pub(super) struct Gate {
    /// W/N ÷ FACTOR: the least time between two starts.
    spacing: Duration,
    /// When the last start was made.
    last_start: Option<Instant>,
    /// The slot waiting for the spacing, and until when.
    paced: Option<(usize, Instant)>,
}

/// What the gate says about a due start.
pub(super) enum Clearance {
    /// Not yet: the engine sleeps until [`Gate::wake`].
    Wait,
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
        }
    }

    /// When the start of `slot`, due at `due`, may be tried again: its
    /// deadline, or later while it waits for the spacing.
    pub(super) fn wake(&self, slot: usize, due: Instant) -> Instant {
        match self.paced {
            Some((s, until)) if s == slot => due.max(until),
            _ => due,
        }
    }
}

impl<H: Host> Engine<'_, H> {
    /// Whether the due start of `slot` may go at `now`; the cap and the
    /// host's hold have been checked.
    pub(super) fn clearance(&mut self, slot: usize, now: Instant) -> Clearance {
        if let Some(last) = self.gate.last_start {
            let at = later(last, self.gate.spacing);
            if now < at {
                self.gate.paced = Some((slot, at));
                return Clearance::Wait;
            }
        }
        self.gate.last_start = Some(now);
        Clearance::Go
    }
}
