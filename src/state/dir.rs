//! The state directory on disk: opening it by [`crate::safedir`]'s rules,
//! bounded reads, atomic writes, merging `instances.json` under its lock,
//! and pruning run records.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use log::{debug, warn};

use crate::display::quoted;
use crate::exit::Fatal;
use crate::idcode::encode_id;
use crate::safedir::{DirKind, FileError, SafeDir, usable_or_creatable};

use super::health::Settle;
use super::records::{Event, InstanceRecord, InstancesFile, RunRecord, apply};

/// Where records go when nothing else is said: for root, and anyone who
/// may write there.
pub const SYSTEM_STATE_BASE: &str = "/var/lib/scatter";

pub(super) const INSTANCES_FILE: &str = "instances.json";
pub(super) const INSTANCES_LOCK: &str = "instances.lock";
const RUNS_DIR: &str = "runs";
/// The most of `instances.json` that is read: 10,000 instances make a few
/// megabytes, so this is far beyond any real file and still fits in memory.
pub const MAX_INSTANCES_FILE: u64 = 256 << 20;
/// The most of one run record that is read; a real one is under 1 KiB.
pub const MAX_RUN_RECORD: u64 = 1 << 20;
/// How long a merge waits for another run to release `instances.lock`; a
/// merge takes well under a second, so a holder this slow is stuck.
const MERGE_LOCK_WAIT: Duration = Duration::from_secs(30);

/// The state directory and `runs/`: private, created with mode 0755.
pub const STATE_DIRS: DirKind = DirKind {
    what: "state directory",
    flag: "--state-dir ",
    mode: 0o755,
    shared: false,
};

/// The state directory of job `name`: `--state-dir`, or
/// `/var/lib/scatter/<name>` when it can serve (it passes the state
/// directory's rules, or could be created), or
/// `$XDG_STATE_HOME/scatter/<name>` (`~/.local/state/scatter/<name>`).
pub fn path_for(explicit: Option<&Path>, name: &OsStr) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        return std::path::absolute(dir).with_context(|| format!("--state-dir {}", quoted(dir)));
    }
    let system = Path::new(SYSTEM_STATE_BASE).join(name);
    let system_problem = match usable_or_creatable(&system, STATE_DIRS) {
        Ok(()) => return Ok(system),
        Err(why) => why,
    };
    let xdg = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/state")))
        .filter(|p| p.is_absolute());
    match xdg {
        Some(base) => Ok(base.join("scatter").join(name)),
        None => Err(Fatal::usage(format!(
            "no usable state directory: {}: {system_problem}; neither XDG_STATE_HOME nor HOME is set",
            quoted(&system)
        ))
        .hint("pass --state-dir DIR (or set SCATTER_STATE_DIR)")
        .into()),
    }
}

/// The state directory of one job, open.
#[derive(Debug, Clone)]
pub struct StateDir {
    pub path: PathBuf,
    pub(super) dir: Arc<SafeDir>,
    /// `runs/`; `None` when reading a state directory that has none.
    pub(super) runs: Option<Arc<SafeDir>>,
}

impl StateDir {
    /// Opens the directory and `runs/` for writing, creating them (mode
    /// 0755) if needed; both must be private, and `runs/` a real directory.
    pub fn create(path: &Path) -> Result<StateDir> {
        let dir = SafeDir::create(path, STATE_DIRS)?;
        let runs = dir.create_child(OsStr::new(RUNS_DIR))?;
        Ok(StateDir {
            path: path.to_path_buf(),
            dir: Arc::new(dir),
            runs: Some(Arc::new(runs)),
        })
    }

    /// Opens an existing directory for reading (`scatter status`). It may
    /// belong to another user (a monitoring user reads root's state), but
    /// nothing in it is followed through a symlink.
    pub fn existing(path: &Path) -> Result<StateDir> {
        let none = || {
            Fatal::no_input(format!("no scatter state in {}", quoted(path)))
                .hint("scatter run writes it; check --name, --instances or --state-dir, and that a run has happened")
        };
        let dir = SafeDir::for_reading(path, STATE_DIRS)?.ok_or_else(none)?;
        let runs = dir.child(OsStr::new(RUNS_DIR))?;
        if runs.is_none() && dir.stat(OsStr::new(INSTANCES_FILE)).is_err() {
            return Err(none().into());
        }
        Ok(StateDir {
            path: path.to_path_buf(),
            dir: Arc::new(dir),
            runs: runs.map(Arc::new),
        })
    }

    /// Opens an existing directory by the same rules as [`StateDir::create`]
    /// (private, reached only through symlinks nobody else can change),
    /// creating nothing: `None` if it does not exist. For a run's decisions
    /// and for `scatter pause`, which must not trust a directory the run
    /// itself would refuse.
    pub fn open(path: &Path) -> Result<Option<StateDir>> {
        let Some(dir) = SafeDir::existing(path, STATE_DIRS)? else {
            return Ok(None);
        };
        let runs = dir.child(OsStr::new(RUNS_DIR))?;
        Ok(Some(StateDir {
            path: path.to_path_buf(),
            dir: Arc::new(dir),
            runs: runs.map(Arc::new),
        }))
    }

    /// Whether a run has ever written here: a run record or instance
    /// records exist.
    pub fn used_by_a_run(&self) -> bool {
        self.dir.stat(OsStr::new(INSTANCES_FILE)).is_ok()
            || self
                .runs
                .as_ref()
                .is_some_and(|runs| run_record_names(runs).is_ok_and(|n| !n.is_empty()))
    }

    /// Every instance record, keyed by encoded id.
    pub fn instances(&self) -> Result<BTreeMap<String, InstanceRecord>> {
        Ok(self.ledger()?.instances)
    }

    /// The whole of `instances.json`: the records, the job's health and the
    /// pending changes. Empty if there is none yet.
    pub fn ledger(&self) -> Result<InstancesFile> {
        let name = OsStr::new(INSTANCES_FILE);
        let path = self.dir.join(name);
        let Some((file, _)) = self
            .dir
            .open_read(name, "state file", MAX_INSTANCES_FILE)
            .with_context(|| format!("cannot read {}", quoted(&path)))?
        else {
            return Ok(InstancesFile::default());
        };
        let reader = io::BufReader::with_capacity(64 * 1024, file);
        serde_json::from_reader(reader)
            .with_context(|| format!("{} is not a scatter state file", quoted(&path)))
    }

    /// Every run record, oldest first.
    pub fn runs(&self) -> Result<Vec<RunRecord>> {
        let Some(dir) = &self.runs else {
            return Ok(Vec::new());
        };
        let mut runs = Vec::new();
        for name in run_record_names(dir)? {
            let path = dir.join(&name);
            match dir.read(&name, "run record", MAX_RUN_RECORD) {
                Ok(Some(bytes)) => match serde_json::from_slice::<RunRecord>(&bytes) {
                    Ok(run) if run_file_name(&run.run_id) == name => runs.push(run),
                    Ok(_) => debug!("ignoring {}: not the run its name says", quoted(&path)),
                    Err(err) => debug!("ignoring {}: {err}", quoted(&path)),
                },
                // Removed by pruning since the listing.
                Ok(None) => {}
                Err(FileError::Refused(why)) => warn!("ignoring a run record: {why}"),
                Err(FileError::Io(err)) => debug!("ignoring {}: {err}", quoted(&path)),
            }
        }
        Ok(runs)
    }

    pub(super) fn write_run(&self, run: &RunRecord) -> Result<()> {
        let dir = self
            .runs
            .as_ref()
            .context("the state directory was opened for reading")?;
        anyhow::ensure!(
            is_run_id(run.run_id.as_bytes()),
            "{} is not a run id",
            quoted(&run.run_id)
        );
        let bytes = serde_json::to_vec(run)?;
        dir.write_atomic(&run_file_name(&run.run_id), 0o644, |out| {
            out.write_all(&bytes)
        })
    }

    /// Takes `instances.lock`, the lock every change to the records, the
    /// pauses and the pending queue is made under; released when the
    /// returned file is dropped.
    pub(super) fn lock(&self) -> Result<File> {
        let lock_name = OsStr::new(INSTANCES_LOCK);
        let lock_path = self.dir.join(lock_name);
        // Readable by its owner only: anyone who can open it could hold it.
        let (lock, meta) = self.dir.open_own(
            lock_name,
            "state lock file",
            rustix::fs::OFlags::RDWR,
            0o600,
        )?;
        if meta.mode() & 0o077 != 0 {
            let _ = rustix::fs::fchmod(&lock, rustix::fs::Mode::from_raw_mode(0o600));
        }
        lock_within(&lock, &lock_path, MERGE_LOCK_WAIT)?;
        Ok(lock)
    }

    /// Applies events to `instances.json` under its lock, and forgets
    /// instances not in `keep` (when given). Returns the merged records.
    pub(super) fn merge(
        &self,
        events: &[Event],
        keep: Option<&[String]>,
    ) -> Result<BTreeMap<String, InstanceRecord>> {
        Ok(self.merge_settled(events, keep, None)?.instances)
    }

    /// [`StateDir::merge`], then `settle` on the whole file before it is
    /// written: the end of a run, which decides the changes to report.
    /// Changes whose hook has run are dropped from the queue first.
    pub(super) fn merge_settled(
        &self,
        events: &[Event],
        keep: Option<&[String]>,
        settle: Option<Settle>,
    ) -> Result<InstancesFile> {
        let _lock = self.lock()?;
        let mut file = self.ledger()?;
        let records = &mut file.instances;
        for event in events {
            let key = encode_id(&event.id);
            let record = records.entry(key).or_default();
            apply(record, event);
        }
        if let Some(keep) = keep {
            records.retain(|key, _| keep.binary_search(key).is_ok());
        }
        file.format = "scatter-instances/1".into();
        self.prune_pending(&mut file)?;
        if let Some(settle) = settle {
            settle(&mut file);
        }
        super::health::bound_pending(&mut file.pending);
        // Streamed: 10,000 records make a file of a few megabytes, not worth
        // holding twice in memory.
        self.dir
            .write_atomic(OsStr::new(INSTANCES_FILE), 0o644, |out| {
                let mut out = io::BufWriter::with_capacity(64 * 1024, out);
                serde_json::to_writer(&mut out, &file)?;
                out.flush()
            })?;
        Ok(file)
    }

    /// Deletes all but the newest `keep` run records (never `current`).
    /// Only regular files named as run records count, and only they are
    /// deleted, by name relative to `runs/`.
    pub(super) fn prune_runs(&self, keep: usize, current: &str) -> Result<()> {
        let Some(dir) = &self.runs else {
            return Ok(());
        };
        let names = run_record_names(dir)?;
        let excess = names.len().saturating_sub(keep);
        let current = run_file_name(current);
        for name in names.into_iter().take(excess) {
            if name == current {
                continue;
            }
            dir.remove_file(&name)
                .with_context(|| format!("cannot prune {}", quoted(dir.join(&name))))?;
        }
        Ok(())
    }
}

/// Takes the exclusive lock on `file`, waiting at most `wait` for another
/// holder: a stuck holder costs this merge, not the run.
pub(super) fn lock_within(file: &File, path: &Path, wait: Duration) -> Result<()> {
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_millis(5);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                anyhow::bail!(
                    "{} is still locked by another process after {}; not waiting longer",
                    quoted(path),
                    humantime::format_duration(wait)
                )
            }
            Err(std::fs::TryLockError::Error(err)) => {
                return Err(err).with_context(|| format!("cannot lock {}", quoted(path)));
            }
        }
    }
}

/// `<run-id>.json`.
pub(super) fn run_file_name(run_id: &str) -> OsString {
    OsString::from(format!("{run_id}.json"))
}

/// Whether `id` is shaped as [`run_id`] makes them:
/// `YYYYMMDDTHHMMSS.mmmZ-PID`.
pub(super) fn is_run_id(id: &[u8]) -> bool {
    let digits =
        |r: std::ops::Range<usize>| id.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let at = |i: usize, b: u8| id.get(i) == Some(&b);
    id.len() > 21
        && id.len() <= 31
        && digits(0..8)
        && at(8, b'T')
        && digits(9..15)
        && at(15, b'.')
        && digits(16..19)
        && at(19, b'Z')
        && at(20, b'-')
        && digits(21..id.len())
}

/// The run records in `runs/`, oldest first: regular files named
/// `<run-id>.json`. Anything else there is neither read nor deleted.
fn run_record_names(dir: &SafeDir) -> Result<Vec<OsString>> {
    let mut names: Vec<OsString> = dir
        .entries()?
        .into_iter()
        .filter(|(name, _)| {
            name.as_bytes()
                .strip_suffix(b".json")
                .is_some_and(is_run_id)
        })
        .filter(|(name, kind)| match kind {
            rustix::fs::FileType::RegularFile => true,
            rustix::fs::FileType::Unknown => dir.is_regular(name),
            _ => false,
        })
        .map(|(name, _)| name)
        .collect();
    names.sort();
    Ok(names)
}
