//! What a task cost: reaping with `wait4`, which hands over the resource
//! usage of the child and of the descendants it waited for, and the number
//! of online CPUs (for `--max-load`).

use std::io;
use std::time::Duration;

use rustix::io::Errno;

use super::ExitStatus;

/// The resource usage `wait4` reports for one reaped task: its leader and
/// every descendant the leader (or they) waited for. Grandchildren nobody
/// waited for are not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// CPU time in user mode.
    pub user: Duration,
    /// CPU time in the kernel on the task's behalf.
    pub system: Duration,
    /// The largest resident set size among them, in KiB. A task spawned
    /// with `posix_spawn` runs in scatter's memory until its `exec`, so
    /// this is never below scatter's own peak.
    pub max_rss_kib: u64,
}

impl Usage {
    /// User and system CPU time together.
    pub fn cpu(&self) -> Duration {
        self.user.saturating_add(self.system)
    }

    fn from_rusage(ru: &libc::rusage) -> Usage {
        let time = |tv: libc::timeval| {
            let secs = u64::try_from(tv.tv_sec).unwrap_or(0);
            let micros = u32::try_from(tv.tv_usec.clamp(0, 999_999)).unwrap_or(0);
            Duration::new(secs, micros * 1000)
        };
        Usage {
            user: time(ru.ru_utime),
            system: time(ru.ru_stime),
            max_rss_kib: u64::try_from(ru.ru_maxrss).unwrap_or(0),
        }
    }
}

/// What scatter itself has used so far: every thread of this process, none
/// of its children (`getrusage(RUSAGE_SELF)`).
pub fn own_usage() -> Usage {
    // SAFETY: an all-zero `rusage` is a valid value of the plain C struct,
    // and getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF is valid and `ru` is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Usage::default();
    }
    Usage::from_rusage(&ru)
}

/// Reaps one terminated child of any process group without blocking, with
/// its resource usage. `None` when no child has terminated (or there are
/// no children).
pub fn reap_any() -> io::Result<Option<(i32, ExitStatus, Usage)>> {
    // -1: any child, whatever its process group (each task leads its own).
    reap_with_usage(-1)
}

fn reap_with_usage(which: libc::pid_t) -> io::Result<Option<(i32, ExitStatus, Usage)>> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: an all-zero `rusage` is a valid value of the plain C
        // struct, which wait4 overwrites.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: both pointers are to live locals of the right types;
        // wait4 with WNOHANG never blocks and keeps neither pointer.
        let pid = unsafe { libc::wait4(which, &mut status, libc::WNOHANG, &mut ru) };
        if pid < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(code) if code == Errno::CHILD.raw_os_error() => Ok(None),
                Some(code) if code == Errno::INTR.raw_os_error() => continue,
                _ => Err(err),
            };
        }
        if pid == 0 {
            return Ok(None);
        }
        let exit = if libc::WIFEXITED(status) {
            ExitStatus::Code(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            ExitStatus::Signal(libc::WTERMSIG(status))
        } else {
            // Stopped or continued: not an exit, and not requested.
            return Ok(None);
        };
        return Ok(Some((pid, exit, Usage::from_rusage(&ru))));
    }
}

/// The number of CPUs online now (at least 1).
pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no memory effects.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reaped_child_brings_its_cpu_time() {
        // A child of this test that burns some CPU, reaped by its pid (with
        // -1 this could reap the children of other tests in this process).
        let child = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        std::mem::forget(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((reaped, status, usage)) = reap_with_usage(pid).unwrap() {
                assert_eq!(reaped, pid);
                assert_eq!(status, ExitStatus::Code(0));
                assert!(usage.cpu() > Duration::from_millis(5), "{usage:?}");
                assert!(usage.max_rss_kib > 0, "{usage:?}");
                return;
            }
            assert!(std::time::Instant::now() < deadline, "never reaped");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn there_is_at_least_one_cpu() {
        assert!(online_cpus() >= 1);
    }
}
