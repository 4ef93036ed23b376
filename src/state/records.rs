//! The records themselves: what is kept per instance and per run, and how
//! one event changes an instance's record. Every field is read leniently
//! ([`crate::lenient`]), since anyone who can write the state directory, or
//! another release, may have written it.
//!
//! What a task cost (CPU time, peak memory) is kept as the last value and
//! as an exponentially weighted average over runs ([`EWMA_ALPHA`]), so one
//! odd run neither hides nor dominates a tenant's usual cost.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::display::unix_secs;
use crate::lenient;
use crate::outcome::{Kind, Outcome, RunState, TaskResult};

use super::health::{JobHealth, Notice};

/// The weight of the newest run in the averages of a task's cost.
pub const EWMA_ALPHA: f64 = 0.3;

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// A normal run, normally from cron or a timer.
    Cron,
    /// `--only`: a run by hand.
    Manual,
}

/// The last known state of one instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InstanceRecord {
    /// The id (lossy if it is not UTF-8; then `id_hex` has the bytes).
    #[serde(deserialize_with = "lenient::or_default")]
    pub id: String,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::or_default"
    )]
    pub id_hex: Option<String>,
    /// The last outcome of a run that tried to start it: `ok`, `failed`,
    /// `killed`, `timed_out`, `failed_to_start` or `detached`. Skips are
    /// kept apart, in `last_skip_*`.
    #[serde(deserialize_with = "lenient::or_default")]
    pub outcome: Option<Kind>,
    #[serde(deserialize_with = "lenient::or_default")]
    pub exit_code: Option<i32>,
    #[serde(deserialize_with = "lenient::or_default")]
    pub signal: Option<i32>,
    #[serde(deserialize_with = "lenient::or_default")]
    pub reason: Option<String>,
    /// `--url`: the status of a request that failed with one (400 or
    /// above). Older records have none.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::http_status"
    )]
    pub http_status: Option<u16>,
    #[serde(deserialize_with = "lenient::time")]
    pub last_start: Option<f64>,
    #[serde(deserialize_with = "lenient::time")]
    pub last_end: Option<f64>,
    #[serde(deserialize_with = "lenient::secs")]
    pub last_duration_secs: Option<f64>,
    #[serde(deserialize_with = "lenient::time")]
    pub last_success: Option<f64>,
    #[serde(deserialize_with = "lenient::count")]
    pub consecutive_failures: u32,
    #[serde(deserialize_with = "lenient::or_default")]
    pub last_skip_reason: Option<String>,
    #[serde(deserialize_with = "lenient::time")]
    pub last_skip_at: Option<f64>,
    #[serde(deserialize_with = "lenient::or_default")]
    pub trigger: Option<Trigger>,
    /// When this record last changed (unix seconds).
    #[serde(deserialize_with = "lenient::time_or_zero")]
    pub updated: f64,
    /// What the last task cost: user and system CPU seconds, peak resident
    /// memory in KiB (of its leader and the descendants it waited for).
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::secs"
    )]
    pub last_cpu_user_secs: Option<f64>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::secs"
    )]
    pub last_cpu_sys_secs: Option<f64>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::whole"
    )]
    pub last_max_rss_kib: Option<u64>,
    /// The same, as exponentially weighted averages over the runs that
    /// reported them (α = [`EWMA_ALPHA`]).
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::secs"
    )]
    pub avg_cpu_user_secs: Option<f64>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::secs"
    )]
    pub avg_cpu_sys_secs: Option<f64>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::amount"
    )]
    pub avg_max_rss_kib: Option<f64>,
    /// Failures in a row that were not part of a widespread failure: the
    /// `--backoff` level. Success resets it; a widespread failure leaves it.
    #[serde(deserialize_with = "lenient::count")]
    pub backoff_level: u32,
    /// When `--backoff` lets this failing instance be attempted again (unix
    /// seconds); `None` when it is not backing off.
    #[serde(deserialize_with = "lenient::time")]
    pub next_attempt: Option<f64>,
    /// When its current failures began: the start of the first of them.
    #[serde(deserialize_with = "lenient::time")]
    pub failing_since: Option<f64>,
    /// Since when it is paused, as the last run that reached it saw; `None`
    /// when it was not paused then.
    #[serde(deserialize_with = "lenient::time")]
    pub paused_since: Option<f64>,
    /// Its failure was reported (`failing`, later `reminder`s); `None` when
    /// there is nothing to report a recovery from.
    #[serde(deserialize_with = "lenient::or_default")]
    pub alert: Option<Alert>,
}

/// A reported failure of one instance: the start of its failures, when it
/// was last reported, and how many failures in a row there were then.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Alert {
    #[serde(deserialize_with = "lenient::time_or_zero")]
    pub since: f64,
    #[serde(deserialize_with = "lenient::time_or_zero")]
    pub last: f64,
    #[serde(deserialize_with = "lenient::count")]
    pub failures: u32,
}

impl InstanceRecord {
    /// Whether the last outcome is a failure.
    pub fn failing(&self) -> bool {
        self.outcome.is_some_and(Kind::is_failure)
    }

    /// The last task's CPU time, user and system together.
    pub fn last_cpu_secs(&self) -> Option<f64> {
        match (self.last_cpu_user_secs, self.last_cpu_sys_secs) {
            (None, None) => None,
            (user, sys) => Some(user.unwrap_or(0.0) + sys.unwrap_or(0.0)),
        }
    }

    /// The averages of CPU time, user and system together.
    pub fn avg_cpu_secs(&self) -> Option<f64> {
        match (self.avg_cpu_user_secs, self.avg_cpu_sys_secs) {
            (None, None) => None,
            (user, sys) => Some(user.unwrap_or(0.0) + sys.unwrap_or(0.0)),
        }
    }

    /// The last outcome, rebuilt from what the record keeps of it; `None`
    /// if it never ran or its outcome is one this build does not know.
    pub fn last_outcome(&self) -> Option<Outcome> {
        Outcome::from_record(
            self.outcome?,
            self.exit_code,
            self.signal,
            self.reason.as_deref(),
            self.http_status,
        )
    }
}

/// `instances.json`: every instance record, and the job's own health with
/// the queue of changes whose hooks have not run yet. One file, so a change
/// and the record it changes are written in one atomic rename.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct InstancesFile {
    #[serde(deserialize_with = "lenient::or_default")]
    pub format: String,
    #[serde(deserialize_with = "lenient::records")]
    pub instances: BTreeMap<String, InstanceRecord>,
    #[serde(deserialize_with = "lenient::or_default")]
    pub job: JobHealth,
    /// Changes whose `--on-change` hook may not have run yet, oldest first.
    #[serde(deserialize_with = "lenient::items")]
    pub pending: Vec<Notice>,
}

/// One run, as `scatter status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunRecord {
    #[serde(deserialize_with = "lenient::or_default")]
    pub format: String,
    #[serde(deserialize_with = "lenient::or_default")]
    pub run_id: String,
    #[serde(deserialize_with = "lenient::or_default")]
    pub name: String,
    #[serde(deserialize_with = "lenient::or_default")]
    pub pid: i32,
    /// The run's start time in clock ticks (`/proc/<pid>/stat` field 22),
    /// to tell a live run from a reused pid.
    #[serde(deserialize_with = "lenient::count")]
    pub pid_starttime: u64,
    #[serde(deserialize_with = "lenient::or_default")]
    pub trigger: Option<Trigger>,
    #[serde(deserialize_with = "lenient::or_default")]
    pub instances_dir: String,
    #[serde(deserialize_with = "lenient::or_default")]
    pub lock_dir: String,
    #[serde(deserialize_with = "lenient::time_or_zero")]
    pub started: f64,
    /// When the last start is planned (unix seconds).
    #[serde(deserialize_with = "lenient::time_or_zero")]
    pub spread_end: f64,
    #[serde(deserialize_with = "lenient::secs_or_zero")]
    pub window_secs: f64,
    /// `K/N` when the run covered one shard.
    #[serde(deserialize_with = "lenient::or_default")]
    pub shard: Option<String>,
    #[serde(deserialize_with = "lenient::count")]
    pub count: usize,
    #[serde(deserialize_with = "lenient::count")]
    pub started_count: usize,
    #[serde(deserialize_with = "lenient::count")]
    pub running: usize,
    #[serde(deserialize_with = "lenient::count")]
    pub finished_count: usize,
    #[serde(deserialize_with = "lenient::counts")]
    pub counts: BTreeMap<String, usize>,
    /// `running`, `finished` or `aborted` (stopped by a signal).
    #[serde(deserialize_with = "lenient::or_default")]
    pub state: RunState,
    #[serde(deserialize_with = "lenient::or_default")]
    pub stopped_by: Option<i32>,
    #[serde(deserialize_with = "lenient::time")]
    pub ended: Option<f64>,
    #[serde(deserialize_with = "lenient::or_default")]
    pub exit_code: Option<u8>,
    #[serde(deserialize_with = "lenient::secs")]
    pub max_lateness_secs: Option<f64>,
    /// Since when due starts are held back by pressure (unix seconds);
    /// `None` while they are not.
    #[serde(deserialize_with = "lenient::time")]
    pub held_since: Option<f64>,
    /// Starts that waited for pressure so far.
    #[serde(deserialize_with = "lenient::count")]
    pub delayed_by_pressure: usize,
    /// Most of the run's attempts failed: likely a shared service, not
    /// each tenant.
    #[serde(deserialize_with = "lenient::or_default")]
    pub widespread: bool,
}

/// Something that happened to an instance, to be merged into its record.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: OsString,
    pub trigger: Trigger,
    /// When it happened.
    pub at: SystemTime,
    pub result: TaskResult,
}

/// Merges one event into an instance's record.
pub fn apply(record: &mut InstanceRecord, event: &Event) {
    let at = unix_secs(event.at);
    let bytes = event.id.as_bytes();
    record.id = event.id.to_string_lossy().into_owned();
    record.id_hex = crate::display::hex_unless_utf8(bytes);
    record.updated = at;
    let r = &event.result;
    match &r.outcome {
        Outcome::NotStarted | Outcome::Paused(_) => {}
        Outcome::BackedOff(next) => record.next_attempt = next.map(unix_secs),
        Outcome::Skipped(_) | Outcome::Deferred => {
            record.last_skip_reason = r.outcome.reason();
            record.last_skip_at = Some(at);
        }
        outcome => {
            record.outcome = Some(outcome.kind());
            record.trigger = Some(event.trigger);
            record.exit_code = outcome.exit_code();
            record.signal = outcome.signal();
            record.reason = outcome.reason();
            record.http_status = outcome.http_status();
            record.last_start = Some(r.started.map_or(at, unix_secs));
            record.last_end = (!matches!(outcome, Outcome::Detached)).then_some(at);
            record.last_duration_secs = r.duration.map(|d| d.as_secs_f64());
            if outcome.is_failure() {
                if record.consecutive_failures == 0 || record.failing_since.is_none() {
                    record.failing_since = record.last_start;
                }
                record.consecutive_failures = record.consecutive_failures.saturating_add(1);
            } else if *outcome == Outcome::Ok {
                record.consecutive_failures = 0;
                record.last_success = Some(at);
                record.backoff_level = 0;
                record.next_attempt = None;
                record.failing_since = None;
            }
            if let Some(usage) = r.usage {
                let user = usage.user.as_secs_f64();
                let sys = usage.system.as_secs_f64();
                let rss = usage.max_rss_kib as f64;
                record.last_cpu_user_secs = Some(user);
                record.last_cpu_sys_secs = Some(sys);
                record.last_max_rss_kib = Some(usage.max_rss_kib);
                record.avg_cpu_user_secs = Some(ewma(record.avg_cpu_user_secs, user));
                record.avg_cpu_sys_secs = Some(ewma(record.avg_cpu_sys_secs, sys));
                record.avg_max_rss_kib = Some(ewma(record.avg_max_rss_kib, rss));
            }
        }
    }
}

/// The next value of an exponentially weighted average: the first sample
/// starts it.
pub fn ewma(average: Option<f64>, sample: f64) -> f64 {
    match average {
        Some(avg) => avg + EWMA_ALPHA * (sample - avg),
        None => sample,
    }
}

/// The id of a run: its UTC start and pid, sortable by time.
pub fn run_id(start: SystemTime, pid: i32) -> String {
    let stamp = humantime::format_rfc3339_millis(start).to_string();
    let compact: String = stamp.chars().filter(|c| *c != '-' && *c != ':').collect();
    format!("{compact}-{pid}")
}
