//! Tenant health: which instances a run holds back (paused, backed off),
//! and which changes in health it reports (failing, reminder, recovered,
//! unpaused, a widespread failure and its end).
//!
//! Everything here decides; nothing here does I/O but reading the state
//! directory before a run ([`prepare`]). The decisions are pure functions
//! of an instance's record, the pauses, the flags and the time, unit-tested
//! on their own:
//!
//! * **Before a run**, [`prepare`] holds back, at their slots, instances
//!   that are paused (`scatter pause`) and failing instances whose back-off
//!   delay has not passed ([`Backoff::held_until`]). `--only` runs both
//!   anyway. The engine knows nothing of health: it is handed held slots
//!   and records their outcome when their slot comes, so the others keep
//!   their spacing.
//! * **After a run**, [`settle`] runs inside the last merge of the instance
//!   records, under their lock, so two overlapping runs never report the
//!   same change twice. It advances back-off levels (not in a widespread
//!   failure), decides the changes, and queues them for the `--on-change`
//!   hook in the same atomic write.
//!
//! A run in which at least [`WIDESPREAD_MIN`] instances were attempted and
//! more than half of them failed is a widespread failure: most likely a
//! shared service is down, not each tenant. While one lasts, back-off
//! levels do not advance and instances' own changes are not reported; it
//! is one change when it begins and one when a healthy run follows.

mod settle;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::ValueEnum;
use log::warn;

use crate::display::{quoted, unix_secs};
use crate::idcode::encode_id;
use crate::outcome::{Kind, Outcome, TaskResult, clock};
use crate::plan::Plan;
use crate::state::{InstanceRecord, Pause, StateDir};

pub use settle::{Closing, line, settle};

/// A widespread failure needs at least this many attempts in the run.
pub const WIDESPREAD_MIN: usize = 5;

/// `--backoff MAX` when only BASE is given (or BASE, if it is longer).
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(3600);

/// The highest back-off level kept: far past any delay that is not
/// already MAX.
const MAX_LEVEL: u32 = 64;

/// What the end-of-run report says (`--report`).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReportMode {
    /// Every failure, every run (cron mails each failing run).
    #[default]
    Every,
    /// Only changes: an instance starts failing, is still failing after
    /// --remind, recovers; a widespread failure begins or ends.
    Changes,
}

/// The health flags of `scatter run`.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    pub backoff: Option<Backoff>,
    pub report: ReportMode,
    /// `--failures-before-report`: failures in a row before `failing`.
    pub failures_before_report: u32,
    pub remind: Option<Duration>,
    /// `--on-change`: the hook, resolved to a path.
    pub on_change: Option<PathBuf>,
    pub hook_timeout: Duration,
}

/// `--backoff BASE[,MAX]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The delay after `level` failures: BASE·2^(level−1), at most MAX;
    /// zero at level 0.
    pub fn delay(self, level: u32) -> Duration {
        if level == 0 {
            return Duration::ZERO;
        }
        let doubled = (level - 1).min(MAX_LEVEL);
        let factor = 1u32.checked_shl(doubled).unwrap_or(u32::MAX);
        self.base
            .checked_mul(factor)
            .unwrap_or(Duration::MAX)
            .min(self.max)
    }

    /// When a failing instance may be attempted next, if a slot at `at`
    /// (unix seconds) is too early for it: its delay counts from its last
    /// failed start, and a slot up to a tenth of the delay early counts as
    /// on time, so that cron's jitter never costs an extra run.
    pub fn held_until(self, record: &InstanceRecord, at: f64) -> Option<f64> {
        if !record.failing() || record.backoff_level == 0 {
            return None;
        }
        let next = self.next_attempt(record)?;
        let delay = self.delay(record.backoff_level).as_secs_f64();
        (at + delay / 10.0 < next).then_some(next)
    }

    /// When a failing instance is due again, from its last failed start.
    pub fn next_attempt(self, record: &InstanceRecord) -> Option<f64> {
        if !record.failing() || record.backoff_level == 0 {
            return None;
        }
        Some(record.last_start? + self.delay(record.backoff_level).as_secs_f64())
    }
}

/// How a run's attempts went: how many instances it tried to start and how
/// many of those failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Verdict {
    pub attempted: usize,
    pub failed: usize,
}

impl Verdict {
    pub fn of(results: &[TaskResult]) -> Verdict {
        let kinds = results.iter().map(|r| r.outcome.kind());
        Verdict::of_kinds(kinds)
    }

    pub fn of_kinds(kinds: impl Iterator<Item = Kind>) -> Verdict {
        let mut v = Verdict::default();
        for kind in kinds.filter(|k| k.attempted()) {
            v.attempted += 1;
            v.failed += usize::from(kind.is_failure());
        }
        v
    }

    /// At least [`WIDESPREAD_MIN`] attempts, and more than half failed.
    pub fn widespread(self) -> bool {
        self.attempted >= WIDESPREAD_MIN && self.failed * 2 > self.attempted
    }

    /// Something was attempted, and at most half of it failed: ends a
    /// widespread failure. (A run that attempted too little to tell, say
    /// because everyone is backed off, neither begins nor ends one.)
    pub fn healthy(self) -> bool {
        self.attempted > 0 && self.failed * 2 <= self.attempted
    }
}

/// Reads the pauses and, with `--backoff`, the records, and holds back in
/// `plan` the instances a run must not start now. Returns what the end of
/// the run needs to settle the changes. Without a usable state directory
/// nothing is held (the run warns about that directory anyway).
pub fn prepare(plan: &mut Plan, dir: Option<&StateDir>, spec: &Spec, start: SystemTime) -> Closing {
    let mut closing = Closing::new(plan.manual, spec);
    let Some(dir) = dir else {
        return closing;
    };
    let pauses = dir.pauses().unwrap_or_else(|err| {
        warn!("{err:#}; pauses are not applied this run");
        BTreeMap::new()
    });
    let records = match spec.backoff {
        Some(_) if !plan.manual => dir.instances().unwrap_or_else(|err| {
            warn!("{err:#}; --backoff is not applied this run");
            BTreeMap::new()
        }),
        _ => BTreeMap::new(),
    };
    let start = unix_secs(start);
    let mut holds = Vec::new();
    for entry in &plan.entries {
        let at = start + entry.offset.as_secs_f64();
        let key = encode_id(&entry.id);
        if let Some(pause) = pauses.get(&key).filter(|p| p.active(at)) {
            closing.paused.insert(key.clone(), pause.since);
            if plan.manual {
                warn!(
                    "{} is {}; running it anyway, as --only says",
                    quoted(&entry.id),
                    pause_words(pause)
                );
            } else {
                holds.push((entry.slot, Outcome::Paused(pause_words(pause))));
            }
            continue;
        }
        let held = spec
            .backoff
            .zip(records.get(&key))
            .and_then(|(backoff, record)| backoff.held_until(record, at));
        if let Some(next) = held {
            let next = SystemTime::UNIX_EPOCH + Duration::from_secs_f64(next);
            holds.push((entry.slot, Outcome::BackedOff(Some(next))));
        }
    }
    for (slot, outcome) in holds {
        plan.hold(slot, outcome);
    }
    closing
}

/// `paused by root (sudo: alice) until 2026-11-29T20:00:00Z: migrating`.
pub fn pause_words(pause: &Pause) -> String {
    let mut words = format!("paused by {}", pause.who());
    match pause.until {
        Some(until) => words.push_str(&format!(" until {}", clock(at(until)))),
        None => words.push_str(&format!(" since {}", clock(at(pause.since)))),
    }
    if let Some(reason) = &pause.reason {
        words.push_str(": ");
        words.push_str(&crate::state::health::short_reason(&text(reason)));
    }
    words
}

/// A time from a record, as a `SystemTime` (records hold only plausible
/// times, see [`crate::lenient`]).
fn at(secs: f64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or_default()
}

/// Text someone typed (a pause reason), on one line: as it is, or quoted
/// when it holds anything that could break or forge a line.
pub fn text(s: &str) -> String {
    if s.chars().any(char::is_control) {
        quoted(s)
    } else {
        s.to_string()
    }
}
