//! Orphan timeouts: freeing an instance from a hung task whose scatter died.
//!
//! A task keeps its lock when scatter is killed, and then nobody enforces its
//! timeout. A later run that finds the lock busy reads the holder record; if
//! the task is past its timeout plus its run's grace period, that run would
//! have killed it by now had it been alive, so the task is hung. Before
//! signalling anything, the holder is verified through `/proc`, so that a
//! reused pid is never hit: either the leader is still the process that was
//! recorded (same start time), or the leader is gone and a member of its
//! process group still has this very lock file open.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::lock::Holder;
use crate::platform;

/// The process group to kill for an overdue holder, if one can be verified.
pub fn verified_group(holder: &Holder, lock_path: &Path) -> Option<i32> {
    if platform::proc_stat(holder.pid).is_some_and(|s| holder.starttime.contains(s.starttime)) {
        return Some(holder.pid);
    }
    let meta = std::fs::symlink_metadata(lock_path).ok()?;
    platform::group_members(holder.pid)
        .into_iter()
        .any(|member| platform::has_open(member, meta.dev(), meta.ino()))
        .then_some(holder.pid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::StartTime;
    use std::time::{Duration, SystemTime};

    fn holder(pid: i32, starttime: u64) -> Holder {
        Holder {
            pid,
            starttime: StartTime::exact(starttime),
            started: SystemTime::now() - Duration::from_secs(100),
            timeout: Some(Duration::from_secs(1)),
            grace: Duration::from_secs(1),
            run_pid: 1,
        }
    }

    #[test]
    fn a_live_leader_with_the_recorded_start_time_is_verified() {
        let me = platform::pid();
        let stat = platform::proc_stat(me).unwrap();
        assert_eq!(
            verified_group(&holder(me, stat.starttime), Path::new("/nonexistent")),
            Some(me)
        );
    }

    #[test]
    fn a_reused_pid_is_not_verified() {
        // Our own pid, but a different start time: a pid reused by an
        // unrelated process, and no member of its group holds the file.
        let me = platform::pid();
        let stat = platform::proc_stat(me).unwrap();
        let tmp = tempfile::NamedTempFile::new().unwrap();
        assert_eq!(
            verified_group(&holder(me, stat.starttime + 1), tmp.path()),
            None
        );
    }
}
