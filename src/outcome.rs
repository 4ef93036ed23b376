//! How an instance ends a run, and how a run ends: the types, their stable
//! names, and everything derived from them in one place.
//!
//! Every instance in a plan ends a run in exactly one [`Outcome`]. Its
//! [`Kind`] is the stable name written in reports, state records and
//! metrics; the mapping from an outcome to its exit code, signal, reason and
//! one-line description exists only here, so a report, `scatter status` and
//! the metrics file can never disagree about it, and a new outcome is one
//! new variant the compiler then asks about everywhere.
//!
//! Names are read back from files an older or newer release may have
//! written: a name this build does not know reads as `Unknown`, which costs
//! that one record its outcome, never the file.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::display;
use crate::exit;
use crate::platform::{Usage, signal_name};

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
    /// A skip read back from a record, known only by its reason.
    Recorded(String),
}

impl Skip {
    /// The reason, as shown in reports.
    pub fn reason(&self) -> String {
        match self {
            Skip::Locked(holder) => format!("locked by {holder}"),
            Skip::KilledHungHolder(holder) => format!("killed a hung holder: {holder}"),
            Skip::Vanished => "its directory no longer exists".to_string(),
            Skip::Recorded(reason) => reason.clone(),
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
    /// `--url`: the server answered with this status, 400 or above (a
    /// failure, as `curl -f` judges it).
    HttpStatus(u16),
    /// `--url`: the request failed before a status arrived (connection,
    /// TLS or protocol error), for this reason.
    RequestFailed(String),
    /// Not attempted: `scatter pause` holds it (the text says by whom,
    /// until when and why). Neither a failure nor a start.
    Paused(String),
    /// Not attempted: it is failing, and its `--backoff` delay has not
    /// passed. The next attempt is due then (`None` only when rebuilt from
    /// a record that does not keep it). Not a failure of this run, though
    /// the instance still counts as failing.
    BackedOff(Option<SystemTime>),
    /// Not started: the host stayed under pressure (`--max-pressure`,
    /// `--max-load`) for longer than `--max-defer` past its slot. Not a
    /// failure; the next run tries again.
    Deferred,
}

/// The stable name of an outcome, without its details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Ok,
    Failed,
    Killed,
    TimedOut,
    FailedToStart,
    Skipped,
    NotStarted,
    Detached,
    Paused,
    BackedOff,
    Deferred,
    /// A name this build does not know (written by a newer release, or
    /// crafted). Never written.
    Unknown,
}

impl Kind {
    /// Every kind a run can produce, in the order summaries list them.
    pub const ALL: [Kind; 11] = [
        Kind::Ok,
        Kind::Failed,
        Kind::Killed,
        Kind::TimedOut,
        Kind::FailedToStart,
        Kind::Skipped,
        Kind::NotStarted,
        Kind::Detached,
        Kind::Paused,
        Kind::BackedOff,
        Kind::Deferred,
    ];

    /// The name used in JSON, state records and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ok => "ok",
            Kind::Failed => "failed",
            Kind::Killed => "killed",
            Kind::TimedOut => "timed_out",
            Kind::FailedToStart => "failed_to_start",
            Kind::Skipped => "skipped",
            Kind::NotStarted => "not_started",
            Kind::Detached => "detached",
            Kind::Paused => "paused",
            Kind::BackedOff => "backed_off",
            Kind::Deferred => "deferred",
            Kind::Unknown => "unknown",
        }
    }

    /// The kind of a name, `Unknown` for any other.
    pub fn from_name(name: &str) -> Kind {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .unwrap_or(Kind::Unknown)
    }

    /// The name for people: `timed out`, `failed to start`.
    pub fn words(self) -> String {
        self.name().replace('_', " ")
    }

    /// Whether an instance whose last outcome is this is failing.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Kind::Failed | Kind::Killed | Kind::TimedOut | Kind::FailedToStart
        )
    }

    /// Whether the run tried to start the instance: its task ran (or
    /// could not start), so the outcome says something about its health.
    /// Skips, holds, detached and not-started tasks say nothing.
    pub fn attempted(self) -> bool {
        self == Kind::Ok || self.is_failure()
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Kind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
        let name = String::deserialize(d)?;
        Ok(Kind::from_name(&name))
    }
}

impl Outcome {
    pub fn kind(&self) -> Kind {
        match self {
            Outcome::Ok => Kind::Ok,
            Outcome::Failed(_) => Kind::Failed,
            Outcome::Killed(_) => Kind::Killed,
            Outcome::TimedOut => Kind::TimedOut,
            Outcome::Skipped(_) => Kind::Skipped,
            Outcome::FailedToStart { .. } => Kind::FailedToStart,
            Outcome::NotStarted => Kind::NotStarted,
            Outcome::Detached => Kind::Detached,
            Outcome::HttpStatus(_) | Outcome::RequestFailed(_) => Kind::Failed,
            Outcome::Paused(_) => Kind::Paused,
            Outcome::BackedOff(_) => Kind::BackedOff,
            Outcome::Deferred => Kind::Deferred,
        }
    }

    /// Whether this outcome makes the run fail.
    pub fn is_failure(&self) -> bool {
        self.kind().is_failure()
    }

    /// The task's exit status, if it exited.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Outcome::Ok => Some(0),
            Outcome::Failed(code) => Some(*code),
            _ => None,
        }
    }

    /// The signal that killed the task, if one did (not our timeout).
    pub fn signal(&self) -> Option<i32> {
        match self {
            Outcome::Killed(sig) => Some(*sig),
            _ => None,
        }
    }

    /// Why it was skipped, held, could not start, or (a request) failed.
    pub fn reason(&self) -> Option<String> {
        match self {
            Outcome::Skipped(skip) => Some(skip.reason()),
            Outcome::FailedToStart { reason, .. } => Some(reason.clone()),
            Outcome::RequestFailed(reason) => Some(reason.clone()),
            Outcome::Paused(reason) => Some(reason.clone()),
            Outcome::BackedOff(next) => Some(match next {
                Some(at) => format!("failing; next attempt at {}", clock(*at)),
                None => "failing; next attempt unknown".to_string(),
            }),
            Outcome::Deferred => Some(DEFERRED_REASON.to_string()),
            _ => None,
        }
    }

    /// The HTTP status of a request that failed with one.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Outcome::HttpStatus(status) => Some(*status),
            _ => None,
        }
    }

    /// When a backed-off instance is next attempted.
    pub fn next_attempt(&self) -> Option<SystemTime> {
        match self {
            Outcome::BackedOff(next) => *next,
            _ => None,
        }
    }

    /// The status a shell would report for a task that ran: its exit code,
    /// 124 for a timeout (as `timeout(1)`), 128+N for signal N.
    pub fn shell_status(&self) -> Option<i32> {
        match self {
            Outcome::TimedOut => Some(i32::from(exit::TIMED_OUT)),
            Outcome::Killed(sig) => Some(i32::from(exit::SIGNAL_BASE).saturating_add(*sig)),
            // A request that failed: what `--only ID` exits with.
            Outcome::HttpStatus(_) | Outcome::RequestFailed(_) => Some(i32::from(exit::FAILURE)),
            other => other.exit_code(),
        }
    }

    /// Rebuilds an outcome from what a state record keeps of it.
    pub fn from_parts(
        kind: Kind,
        exit_code: Option<i32>,
        signal: Option<i32>,
        reason: Option<&str>,
    ) -> Option<Outcome> {
        Some(match kind {
            Kind::Ok => Outcome::Ok,
            Kind::Failed => Outcome::Failed(exit_code.unwrap_or(-1)),
            Kind::Killed => Outcome::Killed(signal.unwrap_or(0)),
            Kind::TimedOut => Outcome::TimedOut,
            Kind::FailedToStart => Outcome::FailedToStart {
                reason: reason.unwrap_or("unknown reason").to_string(),
                code: exit::FAILURE,
            },
            Kind::Skipped => Outcome::Skipped(Skip::Recorded(
                reason.unwrap_or("unknown reason").to_string(),
            )),
            Kind::NotStarted => Outcome::NotStarted,
            Kind::Detached => Outcome::Detached,
            Kind::Paused => Outcome::Paused(reason.unwrap_or("paused").to_string()),
            Kind::BackedOff => Outcome::BackedOff(None),
            Kind::Deferred => Outcome::Deferred,
            Kind::Unknown => return None,
        })
    }

    /// Like [`Outcome::from_parts`], for a record that may also keep an
    /// HTTP status: a failure with a status, or with a reason but no exit
    /// code, was a request's.
    pub fn from_record(
        kind: Kind,
        exit_code: Option<i32>,
        signal: Option<i32>,
        reason: Option<&str>,
        http_status: Option<u16>,
    ) -> Option<Outcome> {
        match (kind, http_status, exit_code, reason) {
            (Kind::Failed, Some(status), _, _) => Some(Outcome::HttpStatus(status)),
            (Kind::Failed, None, None, Some(reason)) => {
                Some(Outcome::RequestFailed(reason.to_string()))
            }
            _ => Outcome::from_parts(kind, exit_code, signal, reason),
        }
    }

    /// One line describing the outcome, without the id: `exited with status
    /// 3 after 1.2s`. `duration` is how long the task ran, `timeout` the
    /// limit it ran under.
    pub fn describe(&self, duration: Option<Duration>, timeout: Option<Duration>) -> String {
        let after = duration
            .map(|d| format!(" after {}", display::duration(d)))
            .unwrap_or_default();
        match self {
            Outcome::Ok => format!("ok{after}"),
            Outcome::Failed(code) => format!("exited with status {code}{after}"),
            Outcome::Killed(sig) => format!("killed by {}{after}", signal_name(*sig)),
            Outcome::TimedOut => match timeout {
                Some(t) => format!("timed out{after} (limit {})", humantime::format_duration(t)),
                None => format!("timed out{after}"),
            },
            Outcome::FailedToStart { reason, .. } => format!("failed to start: {reason}"),
            Outcome::Skipped(skip) => format!("skipped: {}", skip.reason()),
            Outcome::NotStarted => "not started".to_string(),
            Outcome::Detached => format!("detached{after}"),
            Outcome::HttpStatus(status) => format!("HTTP status {status}{after}"),
            Outcome::RequestFailed(reason) => format!("request failed{after}: {reason}"),
            Outcome::Paused(reason) => reason.clone(),
            Outcome::BackedOff(_) => format!("backed off: {}", self.reason().unwrap_or_default()),
            Outcome::Deferred => format!("deferred: {DEFERRED_REASON}"),
        }
    }
}

/// A wall-clock time for messages: RFC 3339 in UTC, to the second.
pub fn clock(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Why an instance was deferred, as reports and records say it.
pub const DEFERRED_REASON: &str =
    "the host was under pressure for longer than --max-defer past its slot";

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
    /// What the task cost (CPU, peak memory), if it was reaped.
    pub usage: Option<Usage>,
}

impl TaskResult {
    pub fn new(outcome: Outcome) -> TaskResult {
        TaskResult {
            outcome,
            started: None,
            duration: None,
            lateness: None,
            usage: None,
        }
    }

    /// The report line for this instance, without the id; `None` for
    /// outcomes that need no line (ok, not started, detached, paused: a
    /// pause is the operator's own doing).
    pub fn report_line(&self, timeout: Option<Duration>) -> Option<String> {
        match self.outcome {
            Outcome::Ok | Outcome::NotStarted | Outcome::Detached | Outcome::Paused(_) => None,
            _ => Some(self.outcome.describe(self.duration, timeout)),
        }
    }
}

/// Where a run is, as its record and `scatter status` say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunState {
    /// In progress, as far as its record knows.
    #[default]
    Running,
    /// Its record says running, but its process is gone (killed). Only
    /// `scatter status` says this; no record is written with it.
    Died,
    Finished,
    /// Stopped by a signal.
    Aborted,
    /// A state this build does not know.
    Unknown,
}

impl RunState {
    const ALL: [RunState; 4] = [
        RunState::Running,
        RunState::Died,
        RunState::Finished,
        RunState::Aborted,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Died => "died",
            RunState::Finished => "finished",
            RunState::Aborted => "aborted",
            RunState::Unknown => "unknown",
        }
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for RunState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for RunState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RunState, D::Error> {
        let name = String::deserialize(d)?;
        Ok(RunState::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .unwrap_or(RunState::Unknown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_outcome() -> Vec<Outcome> {
        vec![
            Outcome::Ok,
            Outcome::Failed(3),
            Outcome::Killed(9),
            Outcome::TimedOut,
            Outcome::FailedToStart {
                reason: "r".into(),
                code: 126,
            },
            Outcome::Skipped(Skip::Vanished),
            Outcome::NotStarted,
            Outcome::Detached,
            Outcome::Paused("paused by root".into()),
            Outcome::BackedOff(Some(
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            )),
            Outcome::Deferred,
        ]
    }

    /// The outcomes of `--url` requests, whose kind is `failed`.
    fn request_outcomes() -> Vec<Outcome> {
        vec![
            Outcome::HttpStatus(503),
            Outcome::RequestFailed("connection refused".into()),
        ]
    }

    #[test]
    fn request_failures_are_failed_and_survive_a_record() {
        for outcome in request_outcomes() {
            assert_eq!(outcome.kind(), Kind::Failed);
            assert!(outcome.is_failure());
            assert_eq!(outcome.exit_code(), None);
            assert_eq!(outcome.shell_status(), Some(1));
            let back = Outcome::from_record(
                outcome.kind(),
                outcome.exit_code(),
                outcome.signal(),
                outcome.reason().as_deref(),
                outcome.http_status(),
            );
            assert_eq!(back.as_ref(), Some(&outcome));
        }
        assert_eq!(Outcome::HttpStatus(404).http_status(), Some(404));
        assert_eq!(
            Outcome::HttpStatus(404).describe(None, None),
            "HTTP status 404"
        );
        // A process's failure stays one.
        assert_eq!(
            Outcome::from_record(Kind::Failed, Some(3), None, None, None),
            Some(Outcome::Failed(3))
        );
    }

    #[test]
    fn every_kind_is_listed_once_and_round_trips() {
        let kinds: Vec<Kind> = every_outcome().iter().map(Outcome::kind).collect();
        assert_eq!(kinds, Kind::ALL);
        for kind in Kind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(serde_json::from_str::<Kind>(&json).unwrap(), kind);
        }
        assert_eq!(
            serde_json::from_str::<Kind>("\"quarantined\"").unwrap(),
            Kind::Unknown
        );
        // Holds are neither failures nor attempts; back-off does not fail a run.
        for kind in [Kind::Paused, Kind::BackedOff] {
            assert!(!kind.is_failure() && !kind.attempted(), "{kind}");
        }
        assert!(Kind::Ok.attempted() && Kind::FailedToStart.attempted());
        assert!(!Kind::Skipped.attempted() && !Kind::Detached.attempted());
    }

    #[test]
    fn outcomes_survive_what_a_record_keeps_of_them() {
        for outcome in every_outcome() {
            let back = Outcome::from_parts(
                outcome.kind(),
                outcome.exit_code(),
                outcome.signal(),
                outcome.reason().as_deref(),
            )
            .unwrap();
            assert_eq!(back.kind(), outcome.kind());
            assert_eq!(back.exit_code(), outcome.exit_code());
            assert_eq!(back.signal(), outcome.signal());
            if !matches!(outcome.kind(), Kind::FailedToStart | Kind::BackedOff) {
                assert_eq!(back.describe(None, None), outcome.describe(None, None));
            }
        }
    }

    #[test]
    fn shell_status_follows_the_exit_code_table() {
        assert_eq!(Outcome::TimedOut.shell_status(), Some(124));
        assert_eq!(Outcome::Killed(15).shell_status(), Some(143));
        assert_eq!(Outcome::Failed(3).shell_status(), Some(3));
        assert_eq!(Outcome::NotStarted.shell_status(), None);
    }

    #[test]
    fn run_states_round_trip_and_unknown_ones_degrade() {
        for state in RunState::ALL {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(serde_json::from_str::<RunState>(&json).unwrap(), state);
        }
        assert_eq!(
            serde_json::from_str::<RunState>("\"paused\"").unwrap(),
            RunState::Unknown
        );
    }
}
