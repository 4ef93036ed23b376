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

use anyhow::{Context, Result};

use crate::display::quoted;
use crate::exit::Fatal;
use crate::idcode::encode_id;
use crate::platform::FileId;
use crate::safedir::{DirKind, FileError, SafeDir, usable_or_creatable};

mod holder;
pub use holder::{Holder, HolderTask, StartTime};

/// The system-wide default lock base, on tmpfs on every modern distribution.
pub const SYSTEM_LOCK_BASE: &str = "/run/lock/scatter";

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
pub fn base_path(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        let dir =
            std::path::absolute(dir).with_context(|| format!("--lock-dir {}", quoted(dir)))?;
        return Ok(dir);
    }
    let system = Path::new(SYSTEM_LOCK_BASE);
    let system_problem = match usable_or_creatable(system, LOCK_DIRS) {
        Ok(()) => return Ok(system.to_path_buf()),
        Err(why) => why,
    };
    let xdg = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let xdg_problem = match &xdg {
        Some(dir) => {
            let candidate = dir.join("scatter");
            match usable_or_creatable(&candidate, LOCK_DIRS) {
                Ok(()) => return Ok(candidate),
                Err(why) => format!("{}: {why}", quoted(&candidate)),
            }
        }
        None => "XDG_RUNTIME_DIR is not set".to_string(),
    };
    Err(Fatal::usage(format!(
        "no usable lock directory: {SYSTEM_LOCK_BASE}: {system_problem}; {xdg_problem}"
    ))
    .hint("pass --lock-dir DIR (or set SCATTER_LOCK_DIR) to a directory on tmpfs owned by this user, for example /run/scatter when running as root")
    .into())
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

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
            task: HolderTask::Process,
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
