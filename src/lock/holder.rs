//! The holder record: the one line a running task's lock file holds, naming
//! the task and the run that started it, so a skipped run can say who holds
//! the lock and a later run can tell a hung orphan from a live task.

use std::fs::File;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::display::{self};
use crate::platform;

/// Who holds an instance's lock: written into the lock file right after the
/// task starts, while scatter still holds the locked descriptor.
#[derive(Debug, Clone, PartialEq)]
pub struct Holder {
    /// The task's pid, which is also its process group id.
    pub pid: i32,
    /// The task's start time in clock ticks since boot (`/proc/<pid>/stat`
    /// field 22), to tell it from a later process that reuses the pid: the
    /// spawner knows it lies between two clock readings around the spawn.
    pub starttime: StartTime,
    /// Wall-clock start.
    pub started: SystemTime,
    /// The timeout the task runs under, if any.
    pub timeout: Option<Duration>,
    /// The grace period between SIGTERM and SIGKILL of the run that
    /// started it (`--kill-after`).
    pub grace: Duration,
    /// The pid of the scatter run that started it.
    pub run_pid: i32,
    /// That run's own start time (`/proc/<pid>/stat` field 22), so a later
    /// run can tell whether it still lives. `None` in version 1 records.
    pub run_start: Option<u64>,
    /// What holds the lock: a task's process, or scatter itself for the
    /// length of a request (`task=request`; then `pid` is scatter's own).
    pub task: HolderTask,
}

/// What a holder record names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HolderTask {
    /// A task's process, the leader of its own group (written without a
    /// `task=` key, as before it existed).
    #[default]
    Process,
    /// A request scatter makes itself (`--url`): the lock is scatter's, and
    /// `pid` is scatter's, which leads no task's group; it is never
    /// signalled.
    Request,
}

/// Records are written in version 2 (with `run_start=`); version 1 records,
/// written by older releases into lock files that outlive an upgrade, are
/// still read.
const RECORD_TAG: &str = "scatter-holder/2";
const RECORD_TAG_V1: &str = "scatter-holder/1";

/// A start time known to lie in `lo..=hi` (usually `lo == hi`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartTime {
    pub lo: u64,
    pub hi: u64,
}

impl StartTime {
    pub fn exact(t: u64) -> StartTime {
        StartTime { lo: t, hi: t }
    }

    pub fn contains(&self, t: u64) -> bool {
        (self.lo..=self.hi).contains(&t)
    }

    fn parse(s: &str) -> Option<StartTime> {
        let (lo, hi) = s.split_once('-').unwrap_or((s, s));
        Some(StartTime {
            lo: lo.parse().ok()?,
            hi: hi.parse().ok()?,
        })
    }
}

impl std::fmt::Display for StartTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

impl Holder {
    /// The record's one-line text form.
    pub fn to_line(&self) -> String {
        let started = decimal_secs(self.started.duration_since(UNIX_EPOCH).unwrap_or_default());
        let timeout = self.timeout.map_or("none".to_string(), decimal_secs);
        let run_start = self.run_start.map_or("none".to_string(), |t| t.to_string());
        // Older readers ignore keys they do not know; a process holder's
        // record is written as it always was.
        let task = match self.task {
            HolderTask::Process => "",
            HolderTask::Request => " task=request",
        };
        format!(
            "{RECORD_TAG} pid={} starttime={} started={started} timeout={timeout} grace={} run={} run_start={run_start}{task}\n",
            self.pid,
            self.starttime,
            decimal_secs(self.grace),
            self.run_pid
        )
    }

    /// Parses the first line of a lock file; `None` if it is not a record.
    /// Anyone who can write the lock file can write this line, so every
    /// number is checked: a pid must name a possible task (above 1), and
    /// times must be representable.
    pub fn parse(text: &str) -> Option<Holder> {
        let line = text.lines().next()?;
        let mut words = line.split_ascii_whitespace();
        let tag = words.next()?;
        if tag != RECORD_TAG && tag != RECORD_TAG_V1 {
            return None;
        }
        let (mut pid, mut starttime, mut started, mut timeout, mut run_pid) =
            (None, None, None, None, 0);
        let (mut grace, mut run_start, mut task) = (Duration::ZERO, None, HolderTask::Process);
        for word in words {
            let (key, value) = word.split_once('=')?;
            match key {
                "pid" => pid = value.parse::<i32>().ok().filter(|p| *p > 1),
                "starttime" => starttime = StartTime::parse(value),
                "started" => started = parse_decimal_secs(value),
                "timeout" if value != "none" => timeout = Some(parse_decimal_secs(value)?),
                "grace" => grace = parse_decimal_secs(value)?,
                "run" => run_pid = value.parse::<i32>().ok().filter(|p| *p > 0).unwrap_or(0),
                "run_start" if value != "none" => run_start = Some(value.parse().ok()?),
                "task" => {
                    task = match value {
                        "process" => HolderTask::Process,
                        "request" => HolderTask::Request,
                        // A holder of a kind this build does not know: not
                        // one it may act on.
                        _ => return None,
                    }
                }
                _ => {}
            }
        }
        Some(Holder {
            pid: pid?,
            starttime: starttime?,
            started: UNIX_EPOCH.checked_add(started?)?,
            timeout,
            grace,
            run_pid,
            run_start,
            task,
        })
    }

    /// Reads the record from a lock file we opened but do not hold.
    pub fn read_from(file: &File) -> Option<Holder> {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 512];
        let n = file.read_at(&mut buf, 0).ok()?;
        Holder::parse(std::str::from_utf8(&buf[..n]).ok()?)
    }

    /// Whether the task is past its timeout plus the grace period its own
    /// run would have allowed: by then that run, if alive, would have killed
    /// it. `now` is [`platform::boottime_ticks`]: the age is counted on the
    /// boot clock from the task's start time, so a step of the wall clock
    /// (NTP, a wrong RTC, a manual `date`) can never make a task look old.
    pub fn is_overdue(&self, now: u64) -> bool {
        let Some(timeout) = self.timeout else {
            return false;
        };
        let limit = timeout.saturating_add(self.grace);
        let limit_ticks = platform::ticks(limit);
        // The later bound of the start: never older than it really is.
        now.saturating_sub(self.starttime.hi) > limit_ticks
    }

    /// The recorded process's `/proc` status, if it is still the process
    /// that took the lock (same pid, same start time).
    pub fn leader_stat(&self) -> Option<platform::ProcStat> {
        platform::proc_stat(self.pid).filter(|s| self.starttime.contains(s.starttime))
    }

    /// Whether the recorded process is still the one that took the lock.
    pub fn is_alive(&self) -> bool {
        self.leader_stat().is_some()
    }

    /// Whether the scatter run that started the task may still be alive, and
    /// so still supervising it. A version 2 record names the run by pid and
    /// start time; for a version 1 record any process with the run's pid
    /// counts as alive, since a reused pid cannot be told apart.
    pub fn run_may_be_alive(&self) -> bool {
        if self.run_pid <= 0 {
            return false;
        }
        match (platform::proc_stat(self.run_pid), self.run_start) {
            (None, _) => false,
            (Some(stat), Some(start)) => stat.starttime == start,
            (Some(_), None) => true,
        }
    }

    /// "pid 1234 since 2026-11-23T15:12:01Z (3m 2s)", for skip messages.
    pub fn summary(&self, now: SystemTime) -> String {
        let age = now.duration_since(self.started).unwrap_or_default();
        let since = humantime::format_rfc3339_seconds(self.started);
        if self.task == HolderTask::Request {
            return format!(
                "a request of scatter pid {} since {since} ({} ago)",
                self.pid,
                display::duration(age)
            );
        }
        if self.is_alive() {
            format!(
                "pid {} since {since} ({} ago)",
                self.pid,
                display::duration(age)
            )
        } else {
            format!(
                "a process whose last recorded holder (pid {} since {since}) has exited; perhaps a child it left behind",
                self.pid
            )
        }
    }
}

/// Seconds with microseconds, written exactly: `1763900000.123456`.
fn decimal_secs(d: Duration) -> String {
    format!("{}.{:06}", d.as_secs(), d.subsec_micros())
}

fn parse_decimal_secs(s: &str) -> Option<Duration> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) || secs.starts_with('+') {
        return None;
    }
    let nanos = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    Some(Duration::new(secs.parse().ok()?, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_round_trips() {
        let h = Holder {
            pid: 1234,
            starttime: StartTime {
                lo: 98765,
                hi: 98766,
            },
            started: UNIX_EPOCH + Duration::from_micros(1_763_900_000_123_456),
            timeout: Some(Duration::from_millis(30_500)),
            grace: Duration::from_secs(10),
            run_pid: 42,
            run_start: Some(777),
            task: HolderTask::Process,
        };
        assert_eq!(Holder::parse(&h.to_line()), Some(h.clone()));
        assert!(!h.to_line().contains("task="), "written as before");
        let request = Holder {
            task: HolderTask::Request,
            ..h.clone()
        };
        assert!(request.to_line().contains(" task=request\n"));
        assert_eq!(Holder::parse(&request.to_line()), Some(request));
        let none = Holder { timeout: None, ..h };
        assert_eq!(Holder::parse(&none.to_line()), Some(none));
        assert_eq!(Holder::parse("garbage"), None);
        assert_eq!(Holder::parse(""), None);
    }

    #[test]
    fn version_1_records_are_still_read() {
        let line = "scatter-holder/1 pid=1234 starttime=98765 started=1763900000.5 timeout=30.000000 grace=10.000000 run=42\n";
        let h = Holder::parse(line).unwrap();
        assert_eq!(h.pid, 1234);
        assert_eq!(h.run_pid, 42);
        assert_eq!(h.run_start, None);
        assert_eq!(h.timeout, Some(Duration::from_secs(30)));
    }

    #[test]
    fn the_task_key_is_validated() {
        let base = "scatter-holder/2 pid=1234 starttime=5 started=1 timeout=1.0 grace=1.0 run=9 run_start=3";
        let task = |line: &str| Holder::parse(line).map(|h| h.task);
        assert_eq!(task(base), Some(HolderTask::Process));
        assert_eq!(
            task(&format!("{base} task=process")),
            Some(HolderTask::Process)
        );
        assert_eq!(
            task(&format!("{base} task=request")),
            Some(HolderTask::Request)
        );
        for bad in ["task=", "task=daemon", "task=Request", "task=request\u{0}"] {
            assert_eq!(task(&format!("{base} {bad}")), None, "{bad}");
        }
    }

    #[test]
    fn records_naming_impossible_pids_or_times_are_refused() {
        let base = "scatter-holder/2 starttime=5 started=1 timeout=1.0 grace=1.0 run=9";
        for pid in ["1", "0", "-1", "-4242", "2147483648", "x"] {
            assert_eq!(
                Holder::parse(&format!("{base} pid={pid}")),
                None,
                "pid={pid}"
            );
        }
        let ok = format!("{base} pid=2");
        assert!(Holder::parse(&ok).is_some());
        for bad in [
            "started=18446744073709551615.9",
            "timeout=+5",
            "grace=1e300",
            "starttime=-1",
        ] {
            let (key, _) = bad.split_once('=').unwrap();
            let line: String = ok
                .split(' ')
                .map(|w| {
                    if w.starts_with(&format!("{key}=")) {
                        bad
                    } else {
                        w
                    }
                })
                .collect::<Vec<_>>()
                .join(" ");
            assert_eq!(Holder::parse(&line), None, "{line}");
        }
    }

    #[test]
    fn overdue_is_counted_on_the_boot_clock() {
        let hz = rustix::param::clock_ticks_per_second();
        let h = Holder {
            pid: 1234,
            starttime: StartTime::exact(1000 * hz),
            // A wall clock an hour off changes nothing.
            started: SystemTime::now() + Duration::from_secs(3600),
            timeout: Some(Duration::from_secs(30)),
            grace: Duration::from_secs(10),
            run_pid: 42,
            run_start: None,
            task: HolderTask::Process,
        };
        assert!(!h.is_overdue(1039 * hz));
        assert!(h.is_overdue(1041 * hz));
        // A start time after "now" (another boot) is never overdue.
        assert!(!h.is_overdue(10 * hz));
        let none = Holder { timeout: None, ..h };
        assert!(!none.is_overdue(u64::MAX));
        let huge = Holder {
            timeout: Some(Duration::MAX),
            grace: Duration::MAX,
            ..none
        };
        assert!(!huge.is_overdue(u64::MAX));
    }
}
