//! Linux plumbing for processes: signals, reaping (with each task's resource
//! usage), process groups and their priorities, `/proc`, `poll` and the boot
//! clock.
//!
//! Every process-level call below the level of `std` lives here, so the
//! supervisor reads as policy; the file-system calls that must not follow
//! links or block live in [`crate::safedir`]. Other modules use rustix only
//! for its flag and error-code constants. The signal design follows the
//! self-pipe pattern: handlers only bump counters and write a byte to a
//! non-blocking pipe, and the supervisor's single loop `poll`s that pipe with
//! a timeout at its next absolute deadline. No signal is ever blocked,
//! because children would inherit the blocked mask.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rustix::event::Timespec;
pub use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::pipe::PipeFlags;
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions, WaitOptions};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};

mod net;
mod prio;
mod rusage;

pub use net::{connect_nonblocking, peer_closed};
pub use prio::{io_priority_of, nice_of, set_group_io_priority, set_group_nice};
pub use rusage::{Usage, online_cpus, own_usage, reap_any};

/// Opens a directory only to look things up relative to it (`O_PATH`).
pub fn open_dir_path(dir: &std::path::Path) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    Ok(rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Whether `name` in `dir` is a directory, or a symlink to one.
pub fn is_dir_at(dir: BorrowedFd<'_>, name: &std::ffi::OsStr) -> bool {
    rustix::fs::statat(dir, name, rustix::fs::AtFlags::empty()).is_ok_and(|st| {
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory
    })
}

/// The effective uid scatter runs as.
pub fn euid() -> u32 {
    // Asked for every file opened, and it never changes: scatter does not
    // switch users.
    static EUID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *EUID.get_or_init(|| rustix::process::geteuid().as_raw())
}

/// Our own pid.
pub fn pid() -> i32 {
    rustix::process::getpid().as_raw_nonzero().get()
}

/// The name of user `uid`, from the password database (NSS); `None` if it
/// has none.
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: `passwd` is plain data; getpwuid_r fills it with pointers into
    // `buf`, which outlives every use of them below, and `result` is either
    // null or `&mut pwd`.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        let name = std::ffi::CStr::from_ptr(pwd.pw_name);
        Some(name.to_string_lossy().into_owned())
    }
}

/// What `/proc/<pid>/stat` says about a process that we care about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 5: the process group id.
    pub pgrp: i32,
    /// Field 22: start time in clock ticks since boot. Together with the pid
    /// it identifies a process even after the pid is reused.
    pub starttime: u64,
}

/// Reads `/proc/<pid>/stat`; `None` if the process does not exist.
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let mut buf = Vec::with_capacity(512);
    File::open(format!("/proc/{pid}/stat"))
        .ok()?
        .read_to_end(&mut buf)
        .ok()?;
    parse_stat(&buf)
}

fn parse_stat(buf: &[u8]) -> Option<ProcStat> {
    // The command name (field 2) is in parentheses and may itself contain
    // spaces and parentheses, so fields are counted from the last `)`.
    let close = buf.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&buf[close + 1..]).ok()?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // fields[0] is field 3 (state).
    Some(ProcStat {
        pgrp: fields.get(2)?.parse().ok()?,
        starttime: fields.get(19)?.parse().ok()?,
    })
}

/// A file identified the way the kernel does: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(file: &File) -> io::Result<FileId> {
        use std::os::unix::fs::MetadataExt;
        let meta = file.metadata()?;
        Ok(FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

/// A process group that scatter believes belongs to one of its tasks: the
/// group id, the lock file its members hold, and a start time no member can
/// precede (its leader's), so a later group that reuses the id is told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group {
    pub pgid: i32,
    pub lock: FileId,
    pub not_before: u64,
}

/// For each group, whether some process in it, started no earlier than the
/// group's leader, still holds the group's lock file open. One scan of
/// `/proc` answers for every group, so a stop signal forwarded to thousands
/// of tasks costs one scan, not one per task.
///
/// This is how scatter knows a group id still names its task after the
/// leader was reaped: a process-group id cannot be reused while any member
/// lives, and a member holding the task's lock descriptor is the task's.
pub fn groups_holding(groups: &[Group]) -> Vec<bool> {
    let mut found = vec![false; groups.len()];
    if groups.is_empty() {
        return found;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    let mut by_pgid: std::collections::HashMap<i32, Vec<usize>> = std::collections::HashMap::new();
    for (i, g) in groups.iter().enumerate() {
        if g.pgid > 1 {
            by_pgid.entry(g.pgid).or_default().push(i);
        }
    }
    for pid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        let Some(stat) = proc_stat(pid) else { continue };
        let Some(indexes) = by_pgid.get(&stat.pgrp) else {
            continue;
        };
        for &i in indexes {
            let g = &groups[i];
            if !found[i] && stat.starttime >= g.not_before && has_open(pid, g.lock) {
                found[i] = true;
            }
        }
    }
    found
}

/// Whether process `pid` has this file open. The descriptor links are read
/// first and only links that name a file of the same name are `stat`ed, so
/// a descriptor on a hung network filesystem is never touched.
pub fn has_open(pid: i32, file: FileId) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok).any(|fd| {
        let Ok(target) = std::fs::read_link(fd.path()) else {
            return false;
        };
        // Sockets, pipes and anonymous files read as "socket:[…]" and the
        // like; lock files are plain paths ending in ".lock".
        target.is_absolute()
            && target
                .extension()
                .is_some_and(|e| e == std::ffi::OsStr::new("lock"))
            && std::fs::metadata(fd.path())
                .is_ok_and(|m| m.dev() == file.dev && m.ino() == file.ino)
    })
}

/// Lowers the calling thread's scheduling priority to the lowest (nice 19),
/// so that bookkeeping on a second thread yields the CPU to the supervisor
/// and the tasks on a busy machine. Best effort.
pub fn lower_thread_priority() {
    let tid = rustix::thread::gettid();
    let _ = rustix::process::setpriority_process(Some(tid), 19);
}

/// The files on which some process holds a `flock(2)` lock right now, as
/// (device, inode) pairs, read from `/proc/locks`. Reading it takes no lock,
/// so looking never makes a concurrent run skip an instance.
pub fn held_flocks() -> io::Result<std::collections::HashSet<(u64, u64)>> {
    let text = std::fs::read_to_string("/proc/locks")?;
    Ok(parse_locks(&text))
}

fn parse_locks(text: &str) -> std::collections::HashSet<(u64, u64)> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let _index = words.next()?;
            let kind = words.next()?;
            // "->" marks a process waiting for the lock, not holding it.
            if kind != "FLOCK" {
                return None;
            }
            // FLOCK ADVISORY WRITE <pid> <major:minor:inode> ...
            let id = words.nth(3)?;
            let mut parts = id.split(':');
            let major = u32::from_str_radix(parts.next()?, 16).ok()?;
            let minor = u32::from_str_radix(parts.next()?, 16).ok()?;
            let inode = parts.next()?.parse::<u64>().ok()?;
            Some((rustix::fs::makedev(major, minor), inode))
        })
        .collect()
}

/// Now, in the unit and clock of `/proc/<pid>/stat` field 22: clock ticks
/// of CLOCK_BOOTTIME. A process created between two readings has a start
/// time between them, so a spawner learns its child's start time without
/// reading `/proc` (which also spares the kernel invalidating the child's
/// `/proc` entries when it is reaped).
pub fn boottime_ticks() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    let ns = u128::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000
        + u128::try_from(ts.tv_nsec).unwrap_or(0);
    let hz = u128::from(rustix::param::clock_ticks_per_second());
    u64::try_from(ns * hz / 1_000_000_000).unwrap_or(u64::MAX)
}

/// `t + d`, or the latest representable instant short of it. Durations are
/// bounded when parsed; this keeps deadline arithmetic from ever panicking
/// whatever reaches it.
pub fn later(t: std::time::Instant, d: Duration) -> std::time::Instant {
    let mut d = d;
    loop {
        if let Some(at) = t.checked_add(d) {
            return at;
        }
        d /= 2;
    }
}

/// A duration in clock ticks, the unit of `/proc/<pid>/stat` start times
/// (saturating).
pub fn ticks(d: Duration) -> u64 {
    let hz = u128::from(rustix::param::clock_ticks_per_second());
    u64::try_from(d.as_nanos() * hz / 1_000_000_000).unwrap_or(u64::MAX)
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

/// Whether child `pid` has exited, without reaping it (`WNOWAIT`): until
/// it is reaped its pid, and so the id of the process group it leads,
/// cannot be reused, so that group can still be signalled safely.
pub fn exited(pid: i32) -> io::Result<Option<ExitStatus>> {
    let Some(pid) = Pid::from_raw(pid) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
    match rustix::process::waitid(WaitId::Pid(pid), options)? {
        Some(status) => Ok(match (status.exit_status(), status.terminating_signal()) {
            (Some(code), _) => Some(ExitStatus::Code(code)),
            (None, Some(sig)) => Some(ExitStatus::Signal(sig)),
            _ => None,
        }),
        None => Ok(None),
    }
}

/// Reaps child `pid` if it has exited, without blocking.
pub fn reap(pid: i32) -> io::Result<Option<ExitStatus>> {
    let Some(pid) = Pid::from_raw(pid) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    match rustix::process::waitpid(Some(pid), WaitOptions::NOHANG) {
        Ok(Some((_, status))) => Ok(match (status.exit_status(), status.terminating_signal()) {
            (Some(code), _) => Some(ExitStatus::Code(code)),
            (None, Some(sig)) => Some(ExitStatus::Signal(sig)),
            _ => None,
        }),
        Ok(None) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// A pipe for a task's output: the read end is non-blocking and stays in
/// scatter; the write end is handed to the task. Both are close-on-exec in
/// scatter (std dups the write end onto the task's stdout and stderr).
pub fn output_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC)?;
    let flags = rustix::fs::fcntl_getfl(&read)?;
    rustix::fs::fcntl_setfl(&read, flags | rustix::fs::OFlags::NONBLOCK)?;
    Ok((read, write))
}

/// Sends `sig` to every process in group `pgid`. A group that no longer
/// exists is not an error.
///
/// A group id of 1 or less is refused: `kill(-1)` signals every process the
/// caller may signal, and 0 is the caller's own group. Neither can ever be
/// a task's group (a task leads a group scatter created for it, and its pid
/// is above 1), so such an id can only come from a crafted record.
pub fn kill_group(pgid: i32, sig: i32) -> io::Result<()> {
    if pgid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal process group {pgid}"),
        ));
    }
    let (Some(pid), Some(sig)) = (Pid::from_raw(pgid), Signal::from_named_raw(sig)) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    match rustix::process::kill_process_group(pid, sig) {
        Ok(()) | Err(Errno::SRCH) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Whether any process is still in group `pgid`. This says nothing about
/// who they are: once a group is empty its id can be reused.
pub fn group_alive(pgid: i32) -> bool {
    pgid > 1
        && Pid::from_raw(pgid)
            .is_some_and(|pid| rustix::process::test_kill_process_group(pid).is_ok())
}

/// `SIGTERM`, `SIGKILL`… for messages; the number for anything unusual.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}

/// The self-pipe: wakes the supervisor on SIGCHLD and on the stop signals
/// (SIGTERM, SIGINT, SIGHUP), and remembers which stop signal came last and
/// how many came.
pub struct Signals {
    read: OwnedFd,
    stops: Arc<AtomicUsize>,
    last_stop: Arc<AtomicUsize>,
    /// Set by SIGCHLD, cleared by [`Signals::take_child`]: whether a child
    /// may have exited since the last look.
    child: Arc<AtomicBool>,
    /// Whether the supervisor is in (or about to enter) its `poll`: only
    /// then does a SIGCHLD need to wake it through the pipe. While it works
    /// (starting a burst of overdue tasks, say) the flag alone is enough,
    /// and a write and a read per exiting task are saved.
    sleeping: Arc<AtomicBool>,
    ids: Vec<signal_hook::SigId>,
}

impl Signals {
    pub fn install() -> io::Result<Signals> {
        let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        // One write end for every signal: the spawner's descriptors stay few
        // (so a low `ulimit -n` leaves room for the tasks' locks).
        let write = Arc::new(write);
        let stops = Arc::new(AtomicUsize::new(0));
        let last_stop = Arc::new(AtomicUsize::new(0));
        // True at first: children started before the handler was installed
        // may already have exited.
        let child = Arc::new(AtomicBool::new(true));
        let sleeping = Arc::new(AtomicBool::new(false));
        let mut ids = Vec::new();
        for sig in [SIGCHLD, SIGTERM, SIGINT, SIGHUP] {
            let (stops, last, write, child, sleeping) = (
                Arc::clone(&stops),
                Arc::clone(&last_stop),
                Arc::clone(&write),
                Arc::clone(&child),
                Arc::clone(&sleeping),
            );
            // SAFETY: the action performs only atomic operations and one
            // write(2) to a non-blocking pipe, all async-signal-safe; it
            // allocates nothing and takes no lock (signal-hook saves errno).
            let id = unsafe {
                signal_hook::low_level::register(sig, move || {
                    if sig == SIGCHLD {
                        child.store(true, Ordering::SeqCst);
                        // Not sleeping: the supervisor checks `child` after
                        // it says it will sleep, and before it does (see
                        // `Signals::will_sleep`), so it cannot miss this.
                        if !sleeping.load(Ordering::SeqCst) {
                            return;
                        }
                    } else {
                        last.store(sig as usize, Ordering::SeqCst);
                        stops.fetch_add(1, Ordering::SeqCst);
                    }
                    // A full pipe already guarantees a wake-up.
                    let _ = rustix::io::write(&*write, b"!");
                })
            }?;
            ids.push(id);
        }
        Ok(Signals {
            read,
            stops,
            last_stop,
            child,
            sleeping,
            ids,
        })
    }

    /// Says the supervisor is about to sleep in `poll`, and whether it may:
    /// false when a SIGCHLD has come that it has not handled yet. From here
    /// until [`Signals::woke`], every SIGCHLD also writes to the pipe. (The
    /// handler sets `child` before it reads `sleeping`, and this sets
    /// `sleeping` before it reads `child`, all sequentially consistent: at
    /// least one of the two sees the other, so a SIGCHLD either keeps the
    /// supervisor from sleeping or wakes it.)
    pub fn will_sleep(&self) -> bool {
        self.sleeping.store(true, Ordering::SeqCst);
        !self.child.load(Ordering::SeqCst)
    }

    /// The supervisor is awake again.
    pub fn woke(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
    }

    /// Whether SIGCHLD arrived since the last call: only then is there
    /// anything to reap. (`waitpid(-1)` walks every live child in the
    /// kernel, so calling it blindly would cost O(tasks) per start.)
    pub fn take_child(&self) -> bool {
        self.child.swap(false, Ordering::SeqCst)
    }

    /// How many stop signals arrived so far, and the number of the last one.
    pub fn stops(&self) -> (usize, i32) {
        let count = self.stops.load(Ordering::SeqCst);
        (count, self.last_stop.load(Ordering::SeqCst) as i32)
    }

    /// The pipe's read end, to put first in the supervisor's poll set.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// Empties the pipe after `poll` reported it readable.
    pub fn drain(&self) {
        let mut buf = [0u8; 256];
        while let Ok(n) = rustix::io::read(&self.read, &mut buf) {
            if n < buf.len() {
                break;
            }
        }
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// `poll` with a nanosecond timeout (`None`: wait indefinitely). An
/// interruption by a signal counts as a wake-up with nothing ready.
pub fn poll(fds: &mut [PollFd<'_>], timeout: Option<Duration>) -> io::Result<usize> {
    let ts = timeout.map(|d| {
        Timespec::try_from(d).unwrap_or(Timespec {
            tv_sec: i64::from(i32::MAX),
            tv_nsec: 0,
        })
    });
    match rustix::event::poll(fds, ts.as_ref()) {
        Ok(n) => Ok(n),
        Err(Errno::INTR) => Ok(0),
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_paren() {
        let line = b"4242 (a) (b c) S 1 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10 1\n";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                pgrp: 4242,
                starttime: 987654
            })
        );
    }

    #[test]
    fn own_stat_is_readable() {
        let me = proc_stat(pid()).expect("own /proc stat");
        assert!(me.starttime > 0);
    }

    #[test]
    fn proc_locks_are_parsed() {
        let text = "1: FLOCK  ADVISORY  WRITE 4242 00:2a:1234 0 EOF\n\
                    1: -> FLOCK  ADVISORY  WRITE 4343 00:2a:1234 0 EOF\n\
                    2: POSIX  ADVISORY  WRITE 99 fd:01:77 0 EOF\n\
                    3: FLOCK  ADVISORY  WRITE 7 103:05:88 0 EOF\n";
        let held = parse_locks(text);
        assert_eq!(held.len(), 2);
        assert!(held.contains(&(rustix::fs::makedev(0, 0x2a), 1234)));
        assert!(held.contains(&(rustix::fs::makedev(0x103, 5), 88)));
    }

    #[test]
    fn a_lock_we_hold_shows_in_proc_locks() {
        use std::os::unix::fs::MetadataExt;
        let file = tempfile::tempfile().unwrap();
        file.try_lock().unwrap();
        let meta = file.metadata().unwrap();
        assert!(held_flocks().unwrap().contains(&(meta.dev(), meta.ino())));
    }

    #[test]
    fn boottime_ticks_bracket_a_child_start_time() {
        let before = boottime_ticks();
        let mut child = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .unwrap();
        let after = boottime_ticks();
        let stat = proc_stat(child.id() as i32).unwrap();
        child.wait().unwrap();
        assert!(
            (before..=after).contains(&stat.starttime),
            "{before} <= {} <= {after}",
            stat.starttime
        );
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name(40), "signal 40");
    }
}
