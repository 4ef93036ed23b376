//! Outcomes, the end-of-run summary and the exit code they lead to.
//!
//! Every instance in the plan ends a run in exactly one [`Outcome`]; nothing
//! is dropped. A successful run prints nothing (cron mails any output). A run
//! with failures prints one line per failed instance and one summary line on
//! stderr, and `--format json` prints the whole report on stdout.

use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::display::{self, quoted};
use crate::exit;
use crate::plan::Plan;
use crate::platform::signal_name;

/// Why an instance was skipped. Skips are not failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Its lock is held by another process (described).
    Locked(String),
    /// Its lock was held by a task past its timeout whose run had died; that
    /// task's group was killed, and the next window runs the instance.
    KilledHungHolder(String),
    /// Its directory was removed between the plan and its slot.
    Vanished,
}

impl Skip {
    /// The reason, as shown in reports.
    pub fn reason(&self) -> String {
        match self {
            Skip::Locked(holder) => format!("locked by {holder}"),
            Skip::KilledHungHolder(holder) => format!("killed a hung holder: {holder}"),
            Skip::Vanished => "its directory no longer exists".to_string(),
        }
    }
}

/// How one instance ended this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Exited with a non-zero status.
    Failed(i32),
    /// Killed by a signal (not by our timeout).
    Killed(i32),
    /// Stopped by `--timeout`.
    TimedOut,
    Skipped(Skip),
    /// The lock or the spawn failed; `code` is the `--only` exit code.
    FailedToStart {
        reason: String,
        code: u8,
    },
    /// Scatter was stopped before this instance's slot.
    NotStarted,
    /// Started under `--detach`; its end was not waited for.
    Detached,
}

impl Outcome {
    /// Whether this outcome makes the run fail.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            Outcome::Failed(_)
                | Outcome::Killed(_)
                | Outcome::TimedOut
                | Outcome::FailedToStart { .. }
        )
    }

    /// The stable name used in JSON and summaries.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed(_) => "failed",
            Outcome::Killed(_) => "killed",
            Outcome::TimedOut => "timed_out",
            Outcome::Skipped(_) => "skipped",
            Outcome::FailedToStart { .. } => "failed_to_start",
            Outcome::NotStarted => "not_started",
            Outcome::Detached => "detached",
        }
    }
}

/// Every outcome kind, in summary order.
pub const KINDS: [&str; 8] = [
    "ok",
    "failed",
    "killed",
    "timed_out",
    "failed_to_start",
    "skipped",
    "not_started",
    "detached",
];

/// What happened to one planned instance.
#[derive(Debug, Clone)]
pub struct TaskResult {
    pub outcome: Outcome,
    /// Wall-clock start, if it started.
    pub started: Option<SystemTime>,
    /// Run time of the task's leader, if it started and ended.
    pub duration: Option<Duration>,
    /// How late the start was against its slot.
    pub lateness: Option<Duration>,
}

impl TaskResult {
    pub fn new(outcome: Outcome) -> TaskResult {
        TaskResult {
            outcome,
            started: None,
            duration: None,
            lateness: None,
        }
    }
}

/// The whole run's results, indexed by slot.
#[derive(Debug)]
pub struct Report {
    pub results: Vec<TaskResult>,
    /// The stop signal that ended the run early, if any.
    pub stopped_by: Option<i32>,
    /// `--timeout`, for messages.
    pub timeout: Option<Duration>,
    /// `--detach`: outcomes of started tasks are unknown.
    pub detached: bool,
    /// Starts that had to wait for `--max-concurrent`.
    pub cap_delayed: usize,
}

impl Report {
    /// How many instances ended in each kind, in [`KINDS`] order.
    pub fn counts(&self) -> Vec<(&'static str, usize)> {
        KINDS
            .iter()
            .map(|k| {
                (
                    *k,
                    self.results
                        .iter()
                        .filter(|r| r.outcome.kind() == *k)
                        .count(),
                )
            })
            .collect()
    }

    pub fn max_lateness(&self) -> Option<(usize, Duration)> {
        self.results
            .iter()
            .enumerate()
            .filter_map(|(slot, r)| r.lateness.map(|l| (slot, l)))
            .max_by_key(|(_, l)| *l)
    }

    /// The process exit code for this run.
    pub fn exit_code(&self, plan: &Plan) -> u8 {
        if let Some(sig) = self.stopped_by {
            return exit::SIGNAL_BASE.saturating_add(sig as u8);
        }
        if plan.manual && self.results.len() == 1 {
            return match &self.results[0].outcome {
                Outcome::Ok => exit::OK,
                Outcome::Failed(code) => (*code & 0xff) as u8,
                Outcome::Killed(sig) => exit::SIGNAL_BASE.saturating_add(*sig as u8),
                Outcome::TimedOut => exit::TIMED_OUT,
                Outcome::Skipped(Skip::Vanished) => exit::FAILURE,
                Outcome::Skipped(_) => exit::LOCKED,
                Outcome::FailedToStart { code, .. } => *code,
                Outcome::NotStarted => exit::FAILURE,
                Outcome::Detached => exit::OK,
            };
        }
        if self.results.iter().any(|r| r.outcome.is_failure()) {
            exit::FAILURE
        } else {
            exit::OK
        }
    }

    /// Writes one line per failed instance and a summary line, or nothing
    /// when every instance succeeded or was skipped.
    pub fn write_text(&self, plan: &Plan, out: &mut impl Write) -> io::Result<()> {
        let failures = self
            .results
            .iter()
            .filter(|r| r.outcome.is_failure())
            .count();
        let manual_locked = plan.manual
            && self
                .results
                .iter()
                .any(|r| matches!(r.outcome, Outcome::Skipped(_)));
        if failures == 0 && self.stopped_by.is_none() && !manual_locked {
            return Ok(());
        }
        for (entry, result) in plan.entries.iter().zip(&self.results) {
            if let Some(line) = describe(result, self.timeout) {
                writeln!(out, "scatter: {}: {line}", quoted(&entry.id))?;
            }
        }
        let parts: Vec<String> = self
            .counts()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(kind, n)| format!("{n} {}", kind.replace('_', " ")))
            .collect();
        let total = self.results.len();
        let head = match self.stopped_by {
            Some(sig) => format!("stopped by {}", signal_name(sig)),
            None if failures > 0 => format!("{failures} of {total} instances failed"),
            None => format!("{total} instances"),
        };
        writeln!(out, "scatter: {head} ({})", parts.join(", "))
    }

    /// The report as one JSON document (`--format json`).
    pub fn write_json(&self, plan: &Plan, out: &mut impl Write) -> io::Result<()> {
        #[derive(Serialize)]
        struct Instance {
            slot: usize,
            id: String,
            outcome: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            exit_code: Option<i32>,
            #[serde(skip_serializing_if = "Option::is_none")]
            signal: Option<i32>,
            #[serde(skip_serializing_if = "Option::is_none")]
            reason: Option<String>,
            started: Option<f64>,
            duration_secs: Option<f64>,
            lateness_secs: Option<f64>,
        }
        #[derive(Serialize)]
        struct Doc {
            format: &'static str,
            name: String,
            count: usize,
            exit_code: u8,
            stopped_by: Option<i32>,
            detached: bool,
            counts: serde_json::Map<String, serde_json::Value>,
            max_lateness_secs: Option<f64>,
            delayed_by_cap: usize,
            instances: Vec<Instance>,
        }
        let instances = plan
            .entries
            .iter()
            .zip(&self.results)
            .map(|(entry, r)| {
                let (exit_code, signal, reason) = match &r.outcome {
                    Outcome::Ok => (Some(0), None, None),
                    Outcome::Failed(c) => (Some(*c), None, None),
                    Outcome::Killed(s) => (None, Some(*s), None),
                    Outcome::TimedOut => (None, None, None),
                    Outcome::Skipped(skip) => (None, None, Some(skip.reason())),
                    Outcome::FailedToStart { reason, .. } => (None, None, Some(reason.clone())),
                    Outcome::NotStarted | Outcome::Detached => (None, None, None),
                };
                Instance {
                    slot: entry.slot,
                    id: entry.id.to_string_lossy().into_owned(),
                    outcome: r.outcome.kind(),
                    exit_code,
                    signal,
                    reason,
                    started: r.started.map(unix_secs),
                    duration_secs: r.duration.map(|d| d.as_secs_f64()),
                    lateness_secs: r.lateness.map(|d| d.as_secs_f64()),
                }
            })
            .collect();
        let doc = Doc {
            format: "scatter-report/1",
            name: plan.name.to_string_lossy().into_owned(),
            count: self.results.len(),
            exit_code: self.exit_code(plan),
            stopped_by: self.stopped_by,
            detached: self.detached,
            counts: self
                .counts()
                .into_iter()
                .map(|(k, n)| (k.to_string(), n.into()))
                .collect(),
            max_lateness_secs: self.max_lateness().map(|(_, l)| l.as_secs_f64()),
            delayed_by_cap: self.cap_delayed,
            instances,
        };
        serde_json::to_writer(&mut *out, &doc)?;
        writeln!(out)
    }
}

/// The report line for one instance, without the id; `None` for outcomes
/// that need no line (ok, not started, detached).
pub fn describe(r: &TaskResult, timeout: Option<Duration>) -> Option<String> {
    let after = r
        .duration
        .map(|d| format!(" after {}", display::duration(d)))
        .unwrap_or_default();
    Some(match &r.outcome {
        Outcome::Failed(code) => format!("exited with status {code}{after}"),
        Outcome::Killed(sig) => format!("killed by {}{after}", signal_name(*sig)),
        Outcome::TimedOut => match timeout {
            Some(t) => format!("timed out{after} (limit {})", humantime::format_duration(t)),
            None => format!("timed out{after}"),
        },
        Outcome::FailedToStart { reason, .. } => format!("failed to start: {reason}"),
        Outcome::Skipped(skip) => format!("skipped: {}", skip.reason()),
        Outcome::Ok | Outcome::NotStarted | Outcome::Detached => return None,
    })
}

/// Seconds since the epoch, with fraction.
pub fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}
