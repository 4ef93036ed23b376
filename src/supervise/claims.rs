//! Claiming an instance for its task: the lock, what a busy lock means, and
//! the holder record. Every host claims the same way, whatever its tasks
//! are (processes, requests).
//!
//! A claim checks that the instance directory still exists, takes the lock
//! (`O_NOFOLLOW|O_NONBLOCK` open, `LOCK_NB`), and when the lock is busy
//! reads its holder record: another run's live task is a skip; a task of a
//! dead run past its timeout and grace, whose group is verifiably still the
//! one holding the lock ([`crate::reclaim`]), is sent SIGTERM (SIGKILL
//! `--kill-after` later, from [`Claims::fire_hung`]) and the instance
//! skipped for this window. Once the task runs, its host writes the holder
//! record naming it ([`Claims::record`]).

use std::ffi::OsStr;
use std::time::{Instant, SystemTime};

use log::{info, warn};
use signal_hook::consts::{SIGKILL, SIGTERM};

use super::Options;
use super::engine::first_signal;
use super::host::Started;
use crate::display::quoted;
use crate::exit;
use crate::lock::{self, Attempt, Holder, HolderTask, StartTime};
use crate::outcome::Skip;
use crate::plan::{Entry, Plan};
use crate::platform::{self, FileId, Group, later};
use crate::reclaim;

/// A hung task of another, dead run, sent SIGTERM; SIGKILL is due.
struct Hung {
    kill_at: Instant,
    group: Group,
    tag: String,
}

pub struct Claims<'a> {
    plan: &'a Plan,
    opts: &'a Options,
    /// This run's own pid and start time, for holder records.
    run_pid: i32,
    run_start: Option<u64>,
    hung: Vec<Hung>,
    /// The instances directory, open for the run: an instance is checked
    /// relative to it, one name to look up instead of a whole path.
    instances: Option<std::os::fd::OwnedFd>,
}

impl<'a> Claims<'a> {
    pub fn new(plan: &'a Plan, opts: &'a Options) -> Self {
        let run_pid = platform::pid();
        Claims {
            plan,
            opts,
            run_pid,
            run_start: platform::proc_stat(run_pid).map(|s| s.starttime),
            hung: Vec::new(),
            instances: platform::open_dir_path(&plan.instances).ok(),
        }
    }

    /// This run's pid and its start time in clock ticks since boot.
    pub fn run(&self) -> (i32, Option<u64>) {
        (self.run_pid, self.run_start)
    }

    /// Takes the instance's lock, or says why its task cannot start: a
    /// skip (busy, vanished) or a failure (the lock file is unusable).
    pub fn claim(&mut self, entry: &Entry) -> Result<lock::Locked, Started> {
        let exists = match &self.instances {
            Some(dir) => platform::is_dir_at(std::os::fd::AsFd::as_fd(dir), &entry.id),
            None => self.plan.path(entry).is_dir(),
        };
        if !exists {
            // Removed (a tenant deleted) since the plan was made.
            let tag = quoted(&entry.id);
            info!(instance = &*entry.id.to_string_lossy(); "{tag}: skipped: its directory no longer exists");
            return Err(Started::Skipped(Skip::Vanished));
        }
        match self.plan.try_lock(entry) {
            Ok(Attempt::Acquired(locked)) => Ok(locked),
            Ok(Attempt::Busy { holder, lock }) => {
                let tag = quoted(&entry.id);
                Err(Started::Skipped(self.busy(&tag, &entry.id, holder, lock)))
            }
            Err(err) => Err(Started::Failed {
                reason: err.to_string(),
                code: exit::FAILURE,
                again: false,
            }),
        }
    }

    /// Decides what a busy lock means: another run's task, or a hung one
    /// whose run died, which is then killed.
    fn busy(&mut self, tag: &str, id: &OsStr, holder: Option<Holder>, lock: FileId) -> Skip {
        let raw = id.to_string_lossy();
        let Some(holder) = holder else {
            let who = "another process (no holder record in the lock file)".to_string();
            info!(instance = &*raw; "{tag}: skipped: lock is held by {who}");
            return Skip::Locked(who);
        };
        let who = holder.summary(SystemTime::now());
        if !holder.is_overdue(platform::boottime_ticks()) {
            info!(instance = &*raw; "{tag}: skipped: lock is held by {who}");
            return Skip::Locked(who);
        }
        let Some(group) = reclaim::verified_group(&holder, lock) else {
            info!(
                instance = &*raw;
                "{tag}: skipped: lock is held by {who}, past its timeout, but its run may still be alive or no process of its group holds the lock"
            );
            return Skip::Locked(who);
        };
        let limit = holder.timeout.unwrap_or_default();
        let first = first_signal(self.opts.kill_after);
        warn!(
            instance = &*raw;
            "{tag}: lock holder {who} is past its {} timeout and its run is gone; sending {} to its process group {}",
            humantime::format_duration(limit),
            platform::signal_name(first),
            group.pgid
        );
        signal_group(group.pgid, first, tag);
        if first == SIGTERM {
            self.hung.push(Hung {
                kill_at: later(Instant::now(), self.opts.kill_after),
                group,
                tag: tag.to_string(),
            });
        }
        Skip::KilledHungHolder(who)
    }

    /// Writes the holder record into the lock file we hold: the task's pid
    /// and start time (for a request, scatter's own), and this run.
    pub fn record(
        &self,
        file: &lock::Locked,
        pid: i32,
        starttime: StartTime,
        task: HolderTask,
        id: &std::ffi::OsStr,
    ) {
        let holder = Holder {
            pid,
            starttime,
            started: SystemTime::now(),
            timeout: self.opts.timeout,
            grace: self.opts.kill_after,
            run_pid: self.run_pid,
            run_start: self.run_start,
            task,
        };
        if let Err(err) = file.record(&holder) {
            warn!(
                "{}: cannot write the holder record into its lock file: {err}",
                quoted(id)
            );
        }
    }

    /// Sends the due SIGKILLs to hung holders that survived SIGTERM.
    pub fn fire_hung(&mut self) {
        if self.hung.is_empty() {
            return;
        }
        let now = Instant::now();
        let (due, waiting): (Vec<Hung>, Vec<Hung>) =
            self.hung.drain(..).partition(|h| h.kill_at <= now);
        self.hung = waiting;
        for hung in due {
            if reclaim::still_holds(&hung.group) {
                info!(
                    "{}: hung process group {} survived SIGTERM; sending SIGKILL",
                    hung.tag, hung.group.pgid
                );
                signal_group(hung.group.pgid, SIGKILL, &hung.tag);
            }
        }
    }

    /// When the next SIGKILL of a hung holder is due.
    pub fn pending(&self) -> Option<Instant> {
        self.hung.iter().map(|h| h.kill_at).min()
    }
}

pub(super) fn signal_group(pgid: i32, sig: i32, tag: &str) {
    if let Err(err) = platform::kill_group(pgid, sig) {
        warn!(
            "{tag}: cannot send {} to process group {pgid}: {err}",
            platform::signal_name(sig)
        );
    }
}
