//! Per-instance locks: where they live, how they are opened, who holds them.
//!
//! Each instance has one lock file, `<lock-dir>/<name>/<encoded-id>.lock`,
//! locked with a non-blocking exclusive `flock(2)` (`File::try_lock`). The
//! locked descriptor is inherited by the task, so the lock lives exactly as
//! long as the task and its children, even if scatter itself is killed.
//!
//! The directories are private to the user running scatter (owned by them,
//! not group- or world-writable), because anyone who can write there can
//! plant a symlink or FIFO or hold a lock forever. They are opened once per
//! run by [`crate::safedir`], which refuses a symlink on the way that another
//! user could change (the job directory itself is never a symlink); lock
//! files are then opened relative to the job directory's descriptor, so
//! nothing done to the path afterwards redirects them. A lock file is opened
//! with `O_NOFOLLOW|O_NONBLOCK` (one `openat`), checked with one `fstat`,
//! never unlinked and never created with `O_EXCL`, so a stale file is simply
//! reused. Lock files are readable by their owner only: `flock` needs no
//! more than read access, so a file others can open is a lock they can hold.
//!
//! While a task runs, its lock file holds a one-line [`Holder`] record, so a
//! skipped run can say who holds the lock and since when, and `/proc` can
//! tell a live holder from a reused pid.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::display::{self, quoted};
use crate::exit::Fatal;
use crate::lockname::encode_id;
use crate::platform::{self, FileId};
use crate::safedir::{DirKind, FileError, SafeDir};

/// The system-wide default lock base, on tmpfs on every modern distribution.
pub const SYSTEM_BASE: &str = "/run/lock/scatter";

/// The lock base and job directories: private, created with mode 0755.
pub const LOCK_DIRS: DirKind = DirKind {
    what: "lock directory",
    flag: "--lock-dir ",
    mode: 0o755,
    shared: false,
};

/// Lock files: `flock` needs only read access, so nobody else may open one.
const FILE_MODE: u32 = 0o600;

/// Chooses the lock base directory without creating anything, so the dry
/// run and the real run agree on it.
pub fn resolve_base(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        let dir =
            std::path::absolute(dir).with_context(|| format!("--lock-dir {}", quoted(dir)))?;
        return Ok(dir);
    }
    let system = Path::new(SYSTEM_BASE);
    let system_problem = match usable_or_creatable(system) {
        Ok(()) => return Ok(system.to_path_buf()),
        Err(why) => why,
    };
    let xdg = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let xdg_problem = match &xdg {
        Some(dir) => {
            let candidate = dir.join("scatter");
            match usable_or_creatable(&candidate) {
                Ok(()) => return Ok(candidate),
                Err(why) => format!("{}: {why}", quoted(&candidate)),
            }
        }
        None => "XDG_RUNTIME_DIR is not set".to_string(),
    };
    Err(Fatal::usage(format!(
        "no usable lock directory: {SYSTEM_BASE}: {system_problem}; {xdg_problem}"
    ))
    .hint("pass --lock-dir DIR (or set SCATTER_LOCK_DIR) to a directory on tmpfs owned by this user, for example /run/scatter when running as root")
    .into())
}

/// Whether `dir` is a private directory we own, or could be created as one.
fn usable_or_creatable(dir: &Path) -> std::result::Result<(), String> {
    match SafeDir::existing(dir, LOCK_DIRS) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => {
            let parent = dir.parent().unwrap_or(Path::new("/"));
            rustix::fs::access(
                parent,
                rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
            )
            .map_err(|e| format!("cannot create it in {}: {e}", quoted(parent)))
        }
        Err(err) => Err(format!("{err:#}")),
    }
}

/// The directory holding one job's lock files: `<base>/<name>`.
pub fn job_dir(base: &Path, name: &OsStr) -> PathBuf {
    base.join(name)
}

/// Checks the lock directories without creating anything (dry run): those
/// that exist must pass the same checks as in a real run.
pub fn check_dirs(base: &Path, name: &OsStr) -> Result<()> {
    if let Some(base) = SafeDir::existing(base, LOCK_DIRS)? {
        base.child(name)?;
    }
    Ok(())
}

/// Opens the lock directories, creating them (mode 0755) where missing;
/// both must be private, and the job directory a real directory.
pub fn prepare_dirs(base: &Path, name: &OsStr) -> Result<JobDir> {
    let base = SafeDir::create(base, LOCK_DIRS)?;
    Ok(JobDir {
        dir: base.create_child(name)?,
    })
}

/// The lock file of one instance.
pub fn lock_path(job_dir: &Path, id: &OsStr) -> PathBuf {
    job_dir.join(lock_name(id))
}

fn lock_name(id: &OsStr) -> String {
    let mut name = encode_id(id);
    name.push_str(".lock");
    name
}

/// One job's lock directory, open: lock files are opened relative to it.
#[derive(Debug)]
pub struct JobDir {
    dir: SafeDir,
}

impl JobDir {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Opens (creating if needed) and tries to lock an instance's lock
    /// file: one `openat` and one `fstat`.
    pub fn try_acquire(&self, id: &OsStr) -> std::result::Result<Attempt, LockError> {
        let name = lock_name(id);
        let (file, meta) = self.dir.open_own(
            OsStr::new(&name),
            "lock file",
            rustix::fs::OFlags::RDWR,
            FILE_MODE,
        )?;
        if meta.mode() & 0o077 != 0 {
            // Left by an older scatter, or changed by hand: anyone who can
            // open it can hold it.
            let _ = rustix::fs::fchmod(&file, rustix::fs::Mode::from_raw_mode(FILE_MODE));
        }
        let id = FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        match file.try_lock() {
            Ok(()) => Ok(Attempt::Acquired(Locked {
                file,
                len: meta.len(),
                id,
            })),
            Err(fs::TryLockError::WouldBlock) => Ok(Attempt::Busy {
                holder: Holder::read_from(&file),
                lock: id,
            }),
            Err(fs::TryLockError::Error(err)) => Err(LockError::Io(io::Error::new(
                err.kind(),
                format!("cannot lock {}: {err}", quoted(self.dir.join(&name))),
            ))),
        }
    }
}

/// The result of trying to lock an instance.
#[derive(Debug)]
pub enum Attempt {
    /// We hold the lock on this descriptor.
    Acquired(Locked),
    /// Someone else holds it: their record, if readable, and the lock
    /// file's identity, to recognise the processes that hold it.
    Busy {
        holder: Option<Holder>,
        lock: FileId,
    },
}

/// A lock file we hold, its size when we took it, and its identity.
#[derive(Debug)]
pub struct Locked {
    pub file: File,
    len: u64,
    pub id: FileId,
}

impl Locked {
    /// Writes the holder record. Records are padded to a fixed width, so
    /// after the first one a rewrite never needs to shorten the file.
    pub fn record(&self, holder: &Holder) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let mut line = holder.to_line().into_bytes();
        if line.len() < RECORD_WIDTH {
            line.pop();
            line.resize(RECORD_WIDTH - 1, b' ');
            line.push(b'\n');
        }
        self.file.write_all_at(&line, 0)?;
        if self.len > line.len() as u64 {
            self.file.set_len(line.len() as u64)?;
        }
        Ok(())
    }
}

/// Holder records are padded with spaces to this many bytes.
const RECORD_WIDTH: usize = 256;

/// Why an instance's lock could not even be tried. Only that instance fails.
#[derive(Debug)]
pub enum LockError {
    /// The path holds something we refuse to use (symlink, FIFO, foreign file).
    Unsafe(String),
    /// An I/O error such as EMFILE or EROFS.
    Io(io::Error),
}

impl From<FileError> for LockError {
    fn from(err: FileError) -> LockError {
        match err {
            FileError::Refused(why) => LockError::Unsafe(why),
            FileError::Io(err) => LockError::Io(err),
        }
    }
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Unsafe(why) => f.write_str(why),
            LockError::Io(err) => write!(f, "{err}"),
        }
    }
}

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
        format!(
            "{RECORD_TAG} pid={} starttime={} started={started} timeout={timeout} grace={} run={} run_start={run_start}\n",
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
        let (mut grace, mut run_start) = (Duration::ZERO, None);
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
        let hz = u128::from(rustix::param::clock_ticks_per_second());
        let limit_ticks = u64::try_from(limit.as_nanos() * hz / 1_000_000_000).unwrap_or(u64::MAX);
        // The later bound of the start: never older than it really is.
        now.saturating_sub(self.starttime.hi) > limit_ticks
    }

    /// Whether the recorded process is still the one that took the lock.
    pub fn is_alive(&self) -> bool {
        platform::proc_stat(self.pid).is_some_and(|s| self.starttime.contains(s.starttime))
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
    pub fn describe(&self, now: SystemTime) -> String {
        let age = now.duration_since(self.started).unwrap_or_default();
        let since = humantime::format_rfc3339_seconds(self.started);
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
        };
        assert_eq!(Holder::parse(&h.to_line()), Some(h.clone()));
        let none = Holder { timeout: None, ..h };
        assert_eq!(Holder::parse(&none.to_line()), Some(none));
        assert_eq!(Holder::parse("garbage"), None);
        assert_eq!(Holder::parse(""), None);
    }

    fn job(tmp: &tempfile::TempDir) -> JobDir {
        prepare_dirs(tmp.path(), OsStr::new("job")).unwrap()
    }

    fn acquired(dir: &JobDir, id: &str) -> Locked {
        match dir.try_acquire(OsStr::new(id)).unwrap() {
            Attempt::Acquired(locked) => locked,
            other => panic!("not acquired: {other:?}"),
        }
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

    #[test]
    fn records_replace_longer_old_content_and_keep_a_fixed_width() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = job(&tmp);
        let path = dir.path().join("x.lock");
        std::fs::write(&path, "x".repeat(600)).unwrap();
        let locked = acquired(&dir, "x");
        let h = Holder {
            pid: 7,
            starttime: StartTime::exact(8),
            started: UNIX_EPOCH + Duration::from_secs(9),
            timeout: None,
            grace: Duration::ZERO,
            run_pid: 1,
            run_start: None,
        };
        locked.record(&h).unwrap();
        assert_eq!(Holder::read_from(&locked.file), Some(h.clone()));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), RECORD_WIDTH as u64);
        let longer = Holder {
            pid: 1_234_567,
            ..h
        };
        locked.record(&longer).unwrap();
        assert_eq!(Holder::read_from(&locked.file), Some(longer));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), RECORD_WIDTH as u64);
    }

    #[test]
    fn second_lock_attempt_is_busy() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = job(&tmp);
        let first = acquired(&dir, "a");
        assert!(matches!(
            dir.try_acquire(OsStr::new("a")).unwrap(),
            Attempt::Busy { holder: None, .. }
        ));
        drop(first);
        acquired(&dir, "a");
    }

    #[test]
    fn lock_files_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = job(&tmp);
        drop(acquired(&dir, "new"));
        let old = dir.path().join("old.lock");
        std::fs::write(&old, "").unwrap();
        std::fs::set_permissions(&old, fs::Permissions::from_mode(0o644)).unwrap();
        drop(acquired(&dir, "old"));
        for name in ["new.lock", "old.lock"] {
            let mode = fs::metadata(dir.path().join(name)).unwrap().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name}");
        }
    }

    #[test]
    fn planted_symlink_fifo_and_hard_link_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = job(&tmp);
        let target = tmp.path().join("target");
        std::fs::write(&target, "precious").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("l.lock")).unwrap();
        let err = dir.try_acquire(OsStr::new("l")).unwrap_err();
        assert!(
            matches!(err, LockError::Unsafe(ref m) if m.contains("symlink")),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");

        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.path().join("f.lock"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from(0o644),
            0,
        )
        .unwrap();
        let err = dir.try_acquire(OsStr::new("f")).unwrap_err();
        assert!(
            matches!(err, LockError::Unsafe(ref m) if m.contains("FIFO")),
            "{err}"
        );

        std::fs::hard_link(&target, dir.path().join("h.lock")).unwrap();
        let err = dir.try_acquire(OsStr::new("h")).unwrap_err();
        assert!(
            matches!(err, LockError::Unsafe(ref m) if m.contains("hard links")),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
    }

    #[test]
    fn world_writable_dir_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("locks");
        std::fs::create_dir(&base).unwrap();
        std::fs::set_permissions(&base, fs::Permissions::from_mode(0o777)).unwrap();
        let job = OsStr::new("job");
        let err = prepare_dirs(&base, job).unwrap_err();
        assert!(format!("{err:#}").contains("world-writable"), "{err:#}");
        assert!(
            check_dirs(&base, job).is_err(),
            "the dry run refuses it too"
        );
        std::fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).unwrap();
        check_dirs(&base, job).unwrap();
        assert!(!base.join("job").exists(), "the dry run creates nothing");
        prepare_dirs(&base, job).unwrap();
        let mode = fs::metadata(base.join("job")).unwrap().mode() & 0o777;
        assert_eq!(mode & 0o022, 0);
    }

    #[test]
    fn a_job_dir_that_is_a_symlink_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let base = tmp.path().join("locks");
        std::fs::create_dir(&base).unwrap();
        std::os::unix::fs::symlink(&elsewhere, base.join("job")).unwrap();
        let err = prepare_dirs(&base, OsStr::new("job")).unwrap_err();
        assert!(format!("{err:#}").contains("is a symlink"), "{err:#}");
    }

    #[test]
    fn lock_paths_use_the_encoding() {
        let p = lock_path(Path::new("/run/lock/scatter/job"), OsStr::new("a b"));
        assert_eq!(p, Path::new("/run/lock/scatter/job/a%20b.lock"));
    }
}
