//! `--nice` and `--ionice`: the CPU and I/O priority of each task, never of
//! scatter itself.
//!
//! Both are applied to the task's process group right after it is spawned
//! (`setpriority(PRIO_PGRP)`, `ioprio_set(IOPRIO_WHO_PGRP)`), which keeps
//! the `posix_spawn` path: a `pre_exec` hook would force a `fork` of
//! scatter's whole address space for every start. The price is a gap of
//! microseconds between the `exec` and the call, in which the task runs at
//! scatter's own priority; children it forks after the call inherit the
//! new one. scatter's own priority never changes, so its punctuality does
//! not suffer.
//!
//! A permission error (a negative nice value, or the realtime I/O class,
//! without the privilege) is reported once and the option is dropped for
//! the rest of the run; a task that already exited is no error.

use std::fmt;

use log::warn;
use rustix::io::Errno;

use crate::platform;

/// An I/O scheduling class, as `ionice(1)` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoClass {
    Realtime,
    BestEffort,
    Idle,
}

/// `--ionice CLASS[:LEVEL]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoPriority {
    pub class: IoClass,
    /// 0 (highest) to 7; none for `idle`.
    pub level: u8,
}

impl IoPriority {
    /// Parses `idle`, `best-effort`, `best-effort:LEVEL`, `realtime`,
    /// `realtime:LEVEL` (LEVEL 0 to 7, default 4).
    pub fn parse(s: &str) -> Result<IoPriority, String> {
        let (name, level) = match s.split_once(':') {
            Some((name, level)) => (name, Some(level)),
            None => (s, None),
        };
        let class = match name {
            "idle" => IoClass::Idle,
            "best-effort" => IoClass::BestEffort,
            "realtime" => IoClass::Realtime,
            other => {
                return Err(format!(
                    "{other:?} is not an I/O class; use idle, best-effort[:LEVEL] or realtime[:LEVEL]"
                ));
            }
        };
        let level = match (class, level) {
            (IoClass::Idle, Some(_)) => {
                return Err("the idle class has no level; write just idle".into());
            }
            (IoClass::Idle, None) => 0,
            (_, None) => 4,
            (_, Some(level)) => match level.parse::<u8>() {
                Ok(n) if n <= 7 => n,
                _ => {
                    return Err(format!(
                        "{level:?} is not a level; give 0 (highest) to 7 (lowest)"
                    ));
                }
            },
        };
        Ok(IoPriority { class, level })
    }

    /// The value `ioprio_set(2)` takes: the class in the top bits.
    pub fn raw(self) -> u16 {
        let class: u16 = match self.class {
            IoClass::Realtime => 1,
            IoClass::BestEffort => 2,
            IoClass::Idle => 3,
        };
        class << 13 | u16::from(self.level)
    }
}

impl fmt::Display for IoPriority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.class {
            IoClass::Idle => f.write_str("idle"),
            IoClass::BestEffort => write!(f, "best-effort:{}", self.level),
            IoClass::Realtime => write!(f, "realtime:{}", self.level),
        }
    }
}

/// `--nice N`: -20 (most favourable) to 19.
pub fn parse_nice(s: &str) -> Result<i32, String> {
    match s.trim().parse::<i32>() {
        Ok(n) if (-20..=19).contains(&n) => Ok(n),
        _ => Err(format!(
            "{s:?} is not a nice value; give a whole number from -20 to 19, such as 10"
        )),
    }
}

/// The priorities every task of a run gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Priority {
    pub nice: Option<i32>,
    pub io: Option<IoPriority>,
}

/// Applies a run's [`Priority`] to each task's group, dropping an option
/// for the rest of the run after it fails once.
#[derive(Debug)]
pub struct Prioritizer {
    wanted: Priority,
}

impl Prioritizer {
    pub fn new(wanted: Priority) -> Prioritizer {
        Prioritizer { wanted }
    }

    /// Applies the priorities to group `pgid` (a task's, just spawned).
    pub fn apply(&mut self, pgid: i32) {
        if let Some(nice) = self.wanted.nice
            && let Err(err) = platform::set_group_nice(pgid, nice)
            && !gone(&err)
        {
            warn!(
                "cannot apply --nice {nice} to the tasks: {}; the tasks of this run keep scatter's own priority",
                explain(&err, "a negative nice value needs root (CAP_SYS_NICE)")
            );
            self.wanted.nice = None;
        }
        if let Some(io) = self.wanted.io
            && let Err(err) = platform::set_group_io_priority(pgid, io.raw())
            && !gone(&err)
        {
            warn!(
                "cannot apply --ionice {io} to the tasks: {}; the tasks of this run keep scatter's own I/O priority",
                explain(&err, "the realtime class needs root (CAP_SYS_ADMIN)")
            );
            self.wanted.io = None;
        }
    }

    /// What is still applied (options that failed are dropped).
    pub fn wanted(&self) -> Priority {
        self.wanted
    }
}

/// The task already exited and was reaped, or its group is empty.
fn gone(err: &std::io::Error) -> bool {
    err.raw_os_error() == Some(Errno::SRCH.raw_os_error())
}

fn explain(err: &std::io::Error, permission: &str) -> String {
    let text = crate::display::error_text(err);
    match err.raw_os_error() {
        Some(code)
            if code == Errno::PERM.raw_os_error() || code == Errno::ACCESS.raw_os_error() =>
        {
            format!("{text} ({permission})")
        }
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_priorities_parse_as_ionice_names_them() {
        let be = IoPriority::parse("best-effort").unwrap();
        assert_eq!((be.class, be.level), (IoClass::BestEffort, 4));
        assert_eq!(be.raw(), 2 << 13 | 4);
        assert_eq!(IoPriority::parse("realtime:0").unwrap().raw(), 1 << 13);
        assert_eq!(IoPriority::parse("idle").unwrap().raw(), 3 << 13);
        assert_eq!(
            IoPriority::parse("best-effort:7").unwrap().to_string(),
            "best-effort:7"
        );
        for bad in [
            "",
            "idle:3",
            "best-effort:8",
            "best-effort:-1",
            "realtime:x",
            "rt",
            "none",
            "best-effort:",
        ] {
            assert!(IoPriority::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nice_values_are_bounded() {
        assert_eq!(parse_nice("10").unwrap(), 10);
        assert_eq!(parse_nice("-20").unwrap(), -20);
        for bad in ["20", "-21", "1.5", "x", ""] {
            assert!(parse_nice(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_task_that_is_gone_keeps_the_options() {
        let mut p = Prioritizer::new(Priority {
            nice: Some(5),
            io: Some(IoPriority::parse("idle").unwrap()),
        });
        // No such group: as a task that exited and was reaped.
        p.apply(i32::MAX);
        assert_eq!(p.wanted().nice, Some(5));
        assert!(p.wanted().io.is_some());
    }

    #[test]
    fn a_refused_option_is_dropped_for_the_run() {
        let mut p = Prioritizer::new(Priority {
            nice: Some(5),
            io: Some(IoPriority::parse("idle").unwrap()),
        });
        // Group 1 is refused by scatter itself, as a permission error is by
        // the kernel: both options go.
        p.apply(1);
        assert_eq!(p.wanted(), Priority::default());
    }
}
