//! The end-of-run report: the summary, the JSON document and the exit code
//! the outcomes lead to.
//!
//! Every instance in the plan ends a run in exactly one outcome
//! ([`crate::outcome`]); nothing is dropped. A successful run prints nothing
//! (cron mails any output). A run with failures or skips worth knowing
//! prints one line per such instance and one summary line on stderr, and
//! `--format json` prints the whole report on stdout.

use std::io::{self, Write};
use std::time::Duration;

use serde::Serialize;

use crate::display::{quoted, unix_secs};
use crate::exit;
use crate::outcome::{Kind, Outcome, Skip, TaskResult};
use crate::plan::Plan;
use crate::platform::signal_name;
use crate::state::Notice;

/// The whole run's results, indexed by slot.
#[derive(Debug, Default)]
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
    /// Most of this run's attempts failed (see [`crate::health`]).
    pub widespread: bool,
    /// The changes this run recorded (`--report changes`, `--on-change`).
    pub changes: Vec<Notice>,
    /// Starts the host held back (`--max-pressure`, `--max-load`), and the
    /// longest time one of them was held past its slot.
    pub pressure: Held,
    /// What scatter itself used up to the report, all its threads and none
    /// of its tasks, so that a user can see what scatter costs on the host.
    pub own: Option<crate::platform::Usage>,
}

/// Starts held back by pressure, as the report counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// Starts that waited for pressure to fall (or were forced by
    /// `--max-defer-action start`).
    pub delayed: usize,
    /// The longest of those waits, counted from the slot.
    pub longest: Option<Duration>,
}

impl Report {
    /// How many instances ended in each kind, in [`Kind::ALL`] order.
    pub fn counts(&self) -> Vec<(Kind, usize)> {
        Kind::ALL
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
                outcome @ (Outcome::Ok
                | Outcome::Failed(_)
                | Outcome::Killed(_)
                | Outcome::TimedOut
                | Outcome::HttpStatus(_)
                | Outcome::RequestFailed(_)) => {
                    // As a shell reports it, in the 0..=255 an exit code has.
                    (outcome.shell_status().unwrap_or(1) & 0xff) as u8
                }
                Outcome::Skipped(Skip::Vanished) => exit::FAILURE,
                Outcome::Skipped(_) => exit::LOCKED,
                Outcome::FailedToStart { code, .. } => *code,
                Outcome::NotStarted => exit::FAILURE,
                Outcome::Detached | Outcome::Paused(_) | Outcome::BackedOff(_) => exit::OK,
                // `--only` never waits for pressure; not a failure anyway.
                Outcome::Deferred => exit::OK,
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
            if let Some(line) = result.report_line(self.timeout) {
                writeln!(out, "scatter: {}: {line}", quoted(&entry.id))?;
            }
        }
        writeln!(out, "{}", self.summary_line())
    }

    /// The summary: `scatter: 2 of 120 instances failed (117 ok, 1 failed,
    /// 1 failed to start, 1 skipped)`.
    pub fn summary_line(&self) -> String {
        let failures = self
            .results
            .iter()
            .filter(|r| r.outcome.is_failure())
            .count();
        let parts: Vec<String> = self
            .counts()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(kind, n)| format!("{n} {}", kind.words()))
            .collect();
        let total = self.results.len();
        let head = match self.stopped_by {
            Some(sig) => format!("stopped by {}", signal_name(sig)),
            None if failures > 0 => format!("{failures} of {total} instances failed"),
            None => format!("{total} instances"),
        };
        format!("scatter: {head} ({})", parts.join(", "))
    }

    /// The report as one JSON document (`--format json`).
    pub fn write_json(&self, plan: &Plan, out: &mut impl Write) -> io::Result<()> {
        #[derive(Serialize)]
        struct Instance {
            slot: usize,
            id: String,
            outcome: Kind,
            #[serde(skip_serializing_if = "Option::is_none")]
            exit_code: Option<i32>,
            #[serde(skip_serializing_if = "Option::is_none")]
            signal: Option<i32>,
            #[serde(skip_serializing_if = "Option::is_none")]
            reason: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            http_status: Option<u16>,
            #[serde(skip_serializing_if = "Option::is_none")]
            next_attempt: Option<f64>,
            started: Option<f64>,
            duration_secs: Option<f64>,
            lateness_secs: Option<f64>,
            cpu_user_secs: Option<f64>,
            cpu_sys_secs: Option<f64>,
            max_rss_kib: Option<u64>,
        }
        #[derive(Serialize)]
        struct Doc<'a> {
            format: &'static str,
            name: String,
            count: usize,
            exit_code: u8,
            stopped_by: Option<i32>,
            detached: bool,
            counts: serde_json::Map<String, serde_json::Value>,
            max_lateness_secs: Option<f64>,
            delayed_by_cap: usize,
            delayed_by_pressure: usize,
            max_pressure_delay_secs: Option<f64>,
            deferred: usize,
            widespread: bool,
            changes: &'a [Notice],
            #[serde(skip_serializing_if = "Option::is_none")]
            own_cpu_user_secs: Option<f64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            own_cpu_sys_secs: Option<f64>,
            instances: Vec<Instance>,
        }
        let instances = plan
            .entries
            .iter()
            .zip(&self.results)
            .map(|(entry, r)| Instance {
                slot: entry.slot,
                id: entry.id.to_string_lossy().into_owned(),
                outcome: r.outcome.kind(),
                exit_code: r.outcome.exit_code(),
                signal: r.outcome.signal(),
                reason: r.outcome.reason(),
                http_status: r.outcome.http_status(),
                next_attempt: r.outcome.next_attempt().map(unix_secs),
                started: r.started.map(unix_secs),
                duration_secs: r.duration.map(|d| d.as_secs_f64()),
                lateness_secs: r.lateness.map(|d| d.as_secs_f64()),
                cpu_user_secs: r.usage.map(|u| u.user.as_secs_f64()),
                cpu_sys_secs: r.usage.map(|u| u.system.as_secs_f64()),
                max_rss_kib: r.usage.map(|u| u.max_rss_kib),
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
                .map(|(k, n)| (k.name().to_string(), n.into()))
                .collect(),
            max_lateness_secs: self.max_lateness().map(|(_, l)| l.as_secs_f64()),
            delayed_by_cap: self.cap_delayed,
            delayed_by_pressure: self.pressure.delayed,
            max_pressure_delay_secs: self.pressure.longest.map(|d| d.as_secs_f64()),
            deferred: self
                .results
                .iter()
                .filter(|r| r.outcome == Outcome::Deferred)
                .count(),
            widespread: self.widespread,
            changes: &self.changes,
            own_cpu_user_secs: self.own.map(|u| u.user.as_secs_f64()),
            own_cpu_sys_secs: self.own.map(|u| u.system.as_secs_f64()),
            instances,
        };
        serde_json::to_writer(&mut *out, &doc)?;
        writeln!(out)
    }
}
