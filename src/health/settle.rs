//! The end of a run: back-off levels, the changes worth reporting, and the
//! queue for the `--on-change` hook, decided on the merged records.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::time::Duration;

use super::{Backoff, MAX_LEVEL, Spec, Verdict};
use crate::display::{self, quoted};
use crate::idcode::encode_id;
use crate::outcome::Kind;
use crate::state::health::short_reason;
use crate::state::{Alert, InstanceRecord, InstancesFile, Notice, Widespread};
use crate::transition::Transition;

/// What the end of a run needs besides its results, gathered before it.
#[derive(Debug, Clone, Default)]
pub struct Closing {
    /// `--only`: a run by hand neither begins nor ends a widespread failure.
    pub manual: bool,
    /// Encoded ids paused at their slot this run, and since when.
    pub paused: BTreeMap<String, f64>,
    pub backoff: Option<Backoff>,
    pub failures_before_report: u32,
    pub remind: Option<Duration>,
    /// This run has an `--on-change` hook.
    pub notify: bool,
}

impl Closing {
    pub fn new(manual: bool, spec: &Spec) -> Closing {
        Closing {
            manual,
            paused: BTreeMap::new(),
            backoff: spec.backoff,
            failures_before_report: spec.failures_before_report.max(1),
            remind: spec.remind,
            notify: spec.on_change.is_some(),
        }
    }

    fn remind_due(&self, last: f64, now: f64) -> bool {
        self.remind
            .is_some_and(|every| now >= last + every.as_secs_f64())
    }
}

/// Decides this run's changes on the merged `file` (under its lock) and
/// returns them; when the job has a hook, they are also queued in `file`,
/// numbered. `results` are this run's instances and how each ended.
pub fn settle(
    file: &mut InstancesFile,
    closing: &Closing,
    results: &[(OsString, Kind)],
    now: f64,
) -> Vec<Notice> {
    let verdict = Verdict::of_kinds(results.iter().map(|(_, k)| *k));
    let mut changes = Vec::new();
    if !closing.manual {
        file.job.notify = closing.notify;
        job_changes(file, closing, verdict, now, &mut changes);
    }
    // While a widespread failure lasts, levels stand still and instances'
    // own changes wait.
    let quiet = file.job.widespread.is_some();
    for (id, kind) in results {
        let key = encode_id(id);
        let Some(record) = file.instances.get_mut(&key) else {
            continue;
        };
        // A pause is the operator's: its end is reported even in an outage,
        // and the run's own outcome is judged as well.
        if let Some(since) = closing.paused.get(&key) {
            record.paused_since = Some(*since);
        } else if let Some(since) = record.paused_since.take() {
            changes.push(Notice {
                failures: u64::from(record.consecutive_failures),
                at: now,
                reason: "no longer paused".into(),
                since: Some(since),
                ..Notice::new(Transition::Unpaused, Some(id))
            });
        }
        changes.extend(instance_changes(record, id, *kind, closing, quiet, now));
    }
    if closing.notify || file.job.notify {
        for change in &mut changes {
            change.seq = file.job.next_seq.max(1);
            file.job.next_seq = change.seq.saturating_add(1);
            file.pending.push(change.clone());
        }
    }
    changes
}

fn job_changes(
    file: &mut InstancesFile,
    closing: &Closing,
    verdict: Verdict,
    now: f64,
    changes: &mut Vec<Notice>,
) {
    let of = |v: Verdict| format!("{} of {} instances failed", v.failed, v.attempted);
    match &mut file.job.widespread {
        None if verdict.widespread() => {
            changes.push(Notice {
                failures: verdict.failed as u64,
                reason: of(verdict),
                since: Some(now),
                at: now,
                ..Notice::new(Transition::Widespread, None)
            });
            file.job.widespread = Some(Widespread {
                since: now,
                last: now,
                failed: verdict.failed,
                attempted: verdict.attempted,
            });
        }
        Some(w) if verdict.healthy() => {
            changes.push(Notice {
                failures: verdict.failed as u64,
                reason: of(verdict),
                since: Some(w.since),
                at: now,
                ..Notice::new(Transition::WidespreadRecovered, None)
            });
            file.job.widespread = None;
        }
        Some(w) if closing.remind_due(w.last, now) => {
            w.last = now;
            let v = if verdict.attempted > 0 {
                verdict
            } else {
                Verdict {
                    attempted: w.attempted,
                    failed: w.failed,
                }
            };
            changes.push(Notice {
                failures: v.failed as u64,
                reason: of(v),
                since: Some(w.since),
                at: now,
                ..Notice::new(Transition::Reminder, None)
            });
        }
        _ => {}
    }
}

/// The change of one instance's health this run, and its level and alert
/// after it.
fn instance_changes(
    record: &mut InstanceRecord,
    id: &OsStr,
    kind: Kind,
    closing: &Closing,
    quiet: bool,
    now: f64,
) -> Option<Notice> {
    let count = u64::from(record.consecutive_failures);
    let notice = |event| Notice {
        failures: count,
        at: now,
        ..Notice::new(event, Some(id))
    };
    if kind == Kind::Paused || !(kind.attempted() || kind == Kind::BackedOff) {
        return None;
    }
    if kind.is_failure() && !quiet {
        record.backoff_level = record.backoff_level.saturating_add(1).min(MAX_LEVEL);
    }
    record.next_attempt = closing.backoff.and_then(|b| b.next_attempt(record));
    let failures = record.consecutive_failures;
    if record.failing() {
        let reason = short_reason(&failure_reason(record));
        let since = record.failing_since.unwrap_or(now);
        match &mut record.alert {
            Some(alert) => {
                alert.failures = failures;
                if quiet || !closing.remind_due(alert.last, now) {
                    return None;
                }
                alert.last = now;
                Some(Notice {
                    reason,
                    since: Some(alert.since),
                    ..notice(Transition::Reminder)
                })
            }
            None if !quiet && failures >= closing.failures_before_report => {
                record.alert = Some(Alert {
                    since,
                    last: now,
                    failures,
                });
                Some(Notice {
                    reason,
                    since: Some(since),
                    ..notice(Transition::Failing)
                })
            }
            None => None,
        }
    } else if record.outcome == Some(Kind::Ok) && !quiet {
        let alert = record.alert.take()?;
        Some(Notice {
            failures: u64::from(alert.failures),
            reason: "recovered".into(),
            since: Some(alert.since),
            ..notice(Transition::Recovered)
        })
    } else {
        None
    }
}

fn failure_reason(record: &InstanceRecord) -> String {
    let duration = record
        .last_duration_secs
        .and_then(|s| Duration::try_from_secs_f64(s).ok());
    record
        .last_outcome()
        .map_or("failing".to_string(), |o| o.describe(duration, None))
}

/// The report line for a change, `None` for changes only the hook hears
/// of (unpaused).
pub fn line(change: &Notice, now: f64) -> Option<String> {
    let id = change.raw_id().map(|id| quoted(&id));
    let lasted = change.since.map_or(String::new(), |since| {
        let d = Duration::try_from_secs_f64((now - since).max(0.0)).unwrap_or_default();
        display::duration(d)
    });
    let n = change.failures;
    let failures = if n == 1 {
        "1 failure".to_string()
    } else {
        format!("{n} failures")
    };
    let reason = super::text(&change.reason);
    Some(match (change.event, id) {
        (Transition::Failing, Some(id)) if n > 1 => {
            format!("scatter: {id}: failing, {failures} in a row: {reason}")
        }
        (Transition::Failing, Some(id)) => format!("scatter: {id}: failing: {reason}"),
        (Transition::Reminder, Some(id)) => {
            format!("scatter: {id}: still failing after {failures} in {lasted}: {reason}")
        }
        (Transition::Recovered, Some(id)) => {
            format!("scatter: {id}: recovered after {failures} in {lasted}")
        }
        (Transition::Widespread, None) => format!("scatter: {reason}: widespread failure"),
        (Transition::Reminder, None) => {
            format!("scatter: widespread failure for {lasted}: {reason}")
        }
        (Transition::WidespreadRecovered, None) => {
            format!("scatter: widespread failure over after {lasted}: {reason}")
        }
        _ => return None,
    })
}
