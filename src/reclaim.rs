//! Orphan timeouts: freeing an instance from a hung task whose scatter died.
//!
//! A task keeps its lock when scatter is killed, and then nobody enforces its
//! timeout. A later run that finds the lock busy reads the holder record. The
//! holder is only treated as hung and orphaned when all of these hold:
//!
//! * it is past its timeout plus its run's grace period, counted on the boot
//!   clock from its start time (a wall-clock step cannot age it);
//! * the run that started it is gone (its pid no longer has the recorded
//!   start time), so no live scatter is still supervising it;
//! * the process group to signal is verifiably the task's: either the leader
//!   is alive with the recorded start time and still leads its group, or the
//!   leader is gone and a member of the group, started no earlier than the
//!   leader, holds this very lock file open. A process-group id cannot be
//!   reused while any member lives, so such a member proves the id still
//!   names the task's group.
//!
//! The record is written by the task's run, but anyone who can write the lock
//! file could forge it; the checks above only ever lead to signalling a group
//! that holds this instance's lock, and never a group id of 1 or less.

use crate::lock::{Holder, HolderTask};
use crate::platform::{self, FileId, Group};

/// The task's process group, if the holder is verifiably hung, orphaned and
/// still the task that took this lock file.
pub fn verified_group(holder: &Holder, lock: FileId) -> Option<Group> {
    // A request's holder is scatter itself: its pid leads no task's group,
    // and the lock goes with scatter, so there is nothing to reclaim.
    if holder.task == HolderTask::Request || holder.pid <= 1 || holder.run_may_be_alive() {
        return None;
    }
    let group = Group {
        pgid: holder.pid,
        lock,
        not_before: holder.starttime.lo,
    };
    match holder.leader_stat() {
        // The leader itself, still leading the group it was started in.
        Some(stat) => (stat.pgrp == holder.pid).then_some(group),
        // Gone, or the pid now names another process: only members of the
        // group that hold the lock file vouch for it.
        _ => still_holds(&group).then_some(group),
    }
}

/// Whether a member of the group still holds its lock file: checked again
/// just before a SIGKILL, since the group may have ended meanwhile and its
/// id been reused.
pub fn still_holds(group: &Group) -> bool {
    platform::groups_holding(std::slice::from_ref(group))[0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::StartTime;
    use std::time::{Duration, SystemTime};

    fn holder(pid: i32, starttime: u64, run_pid: i32) -> Holder {
        Holder {
            pid,
            starttime: StartTime::exact(starttime),
            started: SystemTime::now() - Duration::from_secs(100),
            timeout: Some(Duration::from_secs(1)),
            grace: Duration::from_secs(1),
            run_pid,
            run_start: Some(1),
            task: HolderTask::Process,
        }
    }

    fn some_file() -> (tempfile::NamedTempFile, FileId) {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let id = FileId::of(tmp.as_file()).unwrap();
        (tmp, id)
    }

    /// A child in a group of its own, as tasks are.
    fn group_leader() -> std::process::Child {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap()
    }

    #[test]
    fn a_live_group_leader_with_the_recorded_start_time_is_verified() {
        let mut child = group_leader();
        let pid = child.id() as i32;
        let stat = platform::proc_stat(pid).unwrap();
        let (_tmp, file) = some_file();
        let found = verified_group(&holder(pid, stat.starttime, 0), file);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(found.map(|g| g.pgid), Some(pid));
    }

    #[test]
    fn a_process_that_does_not_lead_its_group_is_not_verified() {
        // The test binary itself is not a group leader under cargo test.
        let me = platform::pid();
        let stat = platform::proc_stat(me).unwrap();
        if stat.pgrp == me {
            return;
        }
        let (_tmp, file) = some_file();
        assert_eq!(verified_group(&holder(me, stat.starttime, 0), file), None);
    }

    #[test]
    fn a_reused_pid_is_not_verified() {
        // A live group leader, but with another start time: a pid reused by
        // an unrelated process, and no member of its group holds the file.
        let mut child = group_leader();
        let pid = child.id() as i32;
        let stat = platform::proc_stat(pid).unwrap();
        let (_tmp, file) = some_file();
        let found = verified_group(&holder(pid, stat.starttime + 1, 0), file);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(found, None);
    }

    #[test]
    fn a_holder_whose_run_lives_is_left_to_that_run() {
        let mut child = group_leader();
        let pid = child.id() as i32;
        let stat = platform::proc_stat(pid).unwrap();
        let me = platform::pid();
        let mine = platform::proc_stat(me).unwrap().starttime;
        let (_tmp, file) = some_file();
        let mut h = holder(pid, stat.starttime, me);
        h.run_start = Some(mine);
        let alive = verified_group(&h, file);
        // Version 1 records cannot tell a reused run pid apart: any process
        // with that pid counts as the run.
        h.run_start = None;
        let v1 = verified_group(&h, file);
        // The run's pid with another start time is a reused pid: gone.
        h.run_start = Some(mine + 1);
        let reused = verified_group(&h, file);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(alive, None);
        assert_eq!(v1, None);
        assert_eq!(reused.map(|g| g.pgid), Some(pid));
    }

    #[test]
    fn a_request_holder_is_never_verified() {
        // Even with everything else in place: a live group leader, past its
        // timeout, whose run is gone.
        let mut child = group_leader();
        let pid = child.id() as i32;
        let stat = platform::proc_stat(pid).unwrap();
        let (_tmp, file) = some_file();
        let mut h = holder(pid, stat.starttime, 0);
        let as_process = verified_group(&h, file);
        h.task = HolderTask::Request;
        let as_request = verified_group(&h, file);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(as_process.map(|g| g.pgid), Some(pid));
        assert_eq!(as_request, None);
    }

    #[test]
    fn init_and_group_zero_are_never_verified() {
        let (_tmp, file) = some_file();
        let init = platform::proc_stat(1).map_or(0, |s| s.starttime);
        for pid in [1, 0, -1] {
            assert_eq!(verified_group(&holder(pid, init, 0), file), None);
        }
    }
}
