//! CPU and I/O priority of a process group: `setpriority(PRIO_PGRP)` and
//! `ioprio_set(IOPRIO_WHO_PGRP)`, which reach every process in the group,
//! and the readings a test or a diagnostic needs.

use std::io;

use rustix::process::Pid;

/// `IOPRIO_WHO_PROCESS` and `IOPRIO_WHO_PGRP` of `<linux/ioprio.h>`.
const IOPRIO_WHO_PROCESS: libc::c_int = 1;
const IOPRIO_WHO_PGRP: libc::c_int = 2;

fn group(pgid: i32) -> io::Result<Pid> {
    // 0 would be the caller's own group, and 1 or less is never a task's.
    match (pgid > 1).then(|| Pid::from_raw(pgid)).flatten() {
        Some(pid) => Ok(pid),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to change the priority of process group {pgid}"),
        )),
    }
}

/// Sets the nice value of every process in group `pgid`. `ESRCH` (the
/// group is gone) is returned as it is: the caller decides it is no error.
pub fn set_group_nice(pgid: i32, nice: i32) -> io::Result<()> {
    rustix::process::setpriority_pgrp(Some(group(pgid)?), nice)?;
    Ok(())
}

/// Sets the I/O priority (`class << 13 | level`, as `ioprio_set(2)` takes
/// it) of every process in group `pgid`.
pub fn set_group_io_priority(pgid: i32, ioprio: u16) -> io::Result<()> {
    let pgid = group(pgid)?.as_raw_nonzero().get();
    // SAFETY: ioprio_set takes three integers and touches no memory of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PGRP,
            pgid,
            libc::c_int::from(ioprio),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The I/O priority of process `pid` (0: itself), as `ioprio_get(2)`
/// returns it.
pub fn io_priority_of(pid: i32) -> io::Result<i32> {
    // SAFETY: ioprio_get takes two integers and touches no memory of ours.
    let rc = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, pid) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    i32::try_from(rc).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

/// The nice value of process `pid` (0: itself).
pub fn nice_of(pid: i32) -> io::Result<i32> {
    if pid < 0 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    Ok(rustix::process::getpriority_process(Pid::from_raw(pid))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_of_one_or_less_are_refused() {
        for pgid in [-1, 0, 1] {
            assert!(set_group_nice(pgid, 5).is_err());
            assert!(set_group_io_priority(pgid, 3 << 13).is_err());
        }
    }

    #[test]
    fn a_childs_group_gets_both_priorities_and_we_keep_ours() {
        use std::os::unix::process::CommandExt;
        let before = (nice_of(0).unwrap(), io_priority_of(0).unwrap());
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        set_group_nice(pid, 7).unwrap();
        // Idle class: allowed for any user.
        set_group_io_priority(pid, 3 << 13).unwrap();
        let seen = (nice_of(pid).unwrap(), io_priority_of(pid).unwrap());
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(seen, (7, 3 << 13));
        assert_eq!((nice_of(0).unwrap(), io_priority_of(0).unwrap()), before);
    }

    #[test]
    fn a_group_that_is_gone_is_esrch() {
        // A pid far above pid_max names no group.
        let err = set_group_nice(i32::MAX, 5).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH));
        let err = set_group_io_priority(i32::MAX, 3 << 13).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH));
    }
}
