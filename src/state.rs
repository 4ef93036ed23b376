//! Run history on disk: one record per instance and one per run.
//!
//! scatter has no daemon, so `scatter status`, monitoring checks and the
//! metrics file answer their questions from files each run leaves in the
//! state directory:
//!
//! * `instances.json`: one record per instance, keyed by its encoded id
//!   (never by position): last start, end and duration, outcome with exit
//!   code or signal, consecutive failures, last skip reason, trigger.
//! * `runs/<run-id>.json`: one record per run: pid, start, planned end of
//!   the spreading, progress, counts per outcome, running/finished/aborted.
//!
//! Every file is replaced atomically (temporary file, fsync, rename, fsync
//! of the directory), so a crash never leaves one half-written. Overlapping
//! runs share `instances.json`: each applies its own events to the current
//! file under an exclusive `flock` on `instances.lock`, so neither loses the
//! other's updates; a run record has a single writer.
//!
//! The directory and `runs/` are opened once, by [`crate::safedir`]'s rules
//! (private; `runs/` never a symlink), and every file is reached through
//! their descriptors, so a symlink planted later redirects nothing. Pruning
//! deletes only regular files named as [`run_id`] names run records. Reads
//! are bounded ([`MAX_INSTANCES_FILE`], [`MAX_RUN_RECORD`]) and never follow
//! a symlink or block on a FIFO, and waiting for `instances.lock` is bounded
//! too, so nothing in the directory can hang or exhaust a run or
//! `scatter status`.
//!
//! All of this happens on one background thread fed by a channel, with
//! instance updates batched every few seconds, so disk latency and fsync
//! never delay a start. The thread never spawns anything; the files it opens
//! are close-on-exec, so no task inherits them.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use log::{debug, warn};
use serde::{Deserialize, Serialize};

use crate::display::quoted;
use crate::display::unix_secs;
use crate::exit::Fatal;
use crate::lenient;
use crate::lockname::encode_id;
use crate::outcome::{Kind, Outcome, RunState, TaskResult};
use crate::safedir::{DirKind, FileError, SafeDir};

/// Where records go when nothing else is said: for root, and anyone who
/// may write there.
pub const SYSTEM_BASE: &str = "/var/lib/scatter";

const INSTANCES_FILE: &str = "instances.json";
const INSTANCES_LOCK: &str = "instances.lock";
const RUNS_DIR: &str = "runs";
/// How often queued instance updates are merged into `instances.json`.
const INSTANCE_FLUSH: Duration = Duration::from_secs(5);
/// How often the run record is rewritten while the run progresses.
const RUN_FLUSH: Duration = Duration::from_secs(1);
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

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// A normal run, normally from cron or a timer.
    Cron,
    /// `--only`: a run by hand.
    Manual,
}

/// The last known state of one instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InstanceRecord {
    /// The id (lossy if it is not UTF-8; then `id_hex` has the bytes).
    #[serde(deserialize_with = "lenient::or_default")]
    pub id: String,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::or_default"
    )]
    pub id_hex: Option<String>,
    /// The last outcome of a run that tried to start it: `ok`, `failed`,
    /// `killed`, `timed_out`, `failed_to_start` or `detached`. Skips are
    /// kept apart, in `last_skip_*`.
    #[serde(deserialize_with = "lenient::or_default")]
    pub outcome: Option<Kind>,
    #[serde(deserialize_with = "lenient::or_default")]
    pub exit_code: Option<i32>,
    #[serde(deserialize_with = "lenient::or_default")]
    pub signal: Option<i32>,
    #[serde(deserialize_with = "lenient::or_default")]
    pub reason: Option<String>,
    #[serde(deserialize_with = "lenient::time")]
    pub last_start: Option<f64>,
    #[serde(deserialize_with = "lenient::time")]
    pub last_end: Option<f64>,
    #[serde(deserialize_with = "lenient::secs")]
    pub last_duration_secs: Option<f64>,
    #[serde(deserialize_with = "lenient::time")]
    pub last_success: Option<f64>,
    #[serde(deserialize_with = "lenient::count")]
    pub consecutive_failures: u32,
    #[serde(deserialize_with = "lenient::or_default")]
    pub last_skip_reason: Option<String>,
    #[serde(deserialize_with = "lenient::time")]
    pub last_skip_at: Option<f64>,
    #[serde(deserialize_with = "lenient::or_default")]
    pub trigger: Option<Trigger>,
    /// When this record last changed (unix seconds).
    #[serde(deserialize_with = "lenient::time_or_zero")]
    pub updated: f64,
}

impl InstanceRecord {
    /// Whether the last outcome is a failure.
    pub fn failing(&self) -> bool {
        self.outcome.is_some_and(Kind::is_failure)
    }

    /// The last outcome, rebuilt from what the record keeps of it; `None`
    /// if it never ran or its outcome is one this build does not know.
    pub fn last_outcome(&self) -> Option<Outcome> {
        Outcome::from_parts(
            self.outcome?,
            self.exit_code,
            self.signal,
            self.reason.as_deref(),
        )
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct InstancesFile {
    #[serde(deserialize_with = "lenient::or_default")]
    format: String,
    #[serde(deserialize_with = "lenient::records")]
    instances: BTreeMap<String, InstanceRecord>,
}

/// One run, as `scatter status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunRecord {
    #[serde(deserialize_with = "lenient::or_default")]
    pub format: String,
    #[serde(deserialize_with = "lenient::or_default")]
    pub run_id: String,
    #[serde(deserialize_with = "lenient::or_default")]
    pub name: String,
    #[serde(deserialize_with = "lenient::or_default")]
    pub pid: i32,
    /// The run's start time in clock ticks (`/proc/<pid>/stat` field 22),
    /// to tell a live run from a reused pid.
    #[serde(deserialize_with = "lenient::count")]
    pub pid_starttime: u64,
    #[serde(deserialize_with = "lenient::or_default")]
    pub trigger: Option<Trigger>,
    #[serde(deserialize_with = "lenient::or_default")]
    pub instances_dir: String,
    #[serde(deserialize_with = "lenient::or_default")]
    pub lock_dir: String,
    #[serde(deserialize_with = "lenient::time_or_zero")]
    pub started: f64,
    /// When the last start is planned (unix seconds).
    #[serde(deserialize_with = "lenient::time_or_zero")]
    pub spread_end: f64,
    #[serde(deserialize_with = "lenient::secs_or_zero")]
    pub window_secs: f64,
    /// `K/N` when the run covered one shard.
    #[serde(deserialize_with = "lenient::or_default")]
    pub shard: Option<String>,
    #[serde(deserialize_with = "lenient::count")]
    pub count: usize,
    #[serde(deserialize_with = "lenient::count")]
    pub started_count: usize,
    #[serde(deserialize_with = "lenient::count")]
    pub running: usize,
    #[serde(deserialize_with = "lenient::count")]
    pub finished_count: usize,
    #[serde(deserialize_with = "lenient::counts")]
    pub counts: BTreeMap<String, usize>,
    /// `running`, `finished` or `aborted` (stopped by a signal).
    #[serde(deserialize_with = "lenient::or_default")]
    pub state: RunState,
    #[serde(deserialize_with = "lenient::or_default")]
    pub stopped_by: Option<i32>,
    #[serde(deserialize_with = "lenient::time")]
    pub ended: Option<f64>,
    #[serde(deserialize_with = "lenient::or_default")]
    pub exit_code: Option<u8>,
    #[serde(deserialize_with = "lenient::secs")]
    pub max_lateness_secs: Option<f64>,
}

/// Something that happened to an instance, to be merged into its record.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: OsString,
    pub trigger: Trigger,
    /// When it happened.
    pub at: SystemTime,
    pub result: TaskResult,
}

/// The state directory of one job, open.
#[derive(Debug, Clone)]
pub struct StateDir {
    pub path: PathBuf,
    dir: Arc<SafeDir>,
    /// `runs/`; `None` when reading a state directory that has none.
    runs: Option<Arc<SafeDir>>,
}

impl StateDir {
    /// `--state-dir`, or `/var/lib/scatter/<name>` when usable, or
    /// `$XDG_STATE_HOME/scatter/<name>` (`~/.local/state/scatter/<name>`).
    pub fn resolve(explicit: Option<&Path>, name: &OsStr) -> Result<PathBuf> {
        if let Some(dir) = explicit {
            return std::path::absolute(dir)
                .with_context(|| format!("--state-dir {}", quoted(dir)));
        }
        let system = Path::new(SYSTEM_BASE).join(name);
        if writable_or_creatable(&system) {
            return Ok(system);
        }
        let xdg = std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/state")))
            .filter(|p| p.is_absolute());
        match xdg {
            Some(base) => Ok(base.join("scatter").join(name)),
            None => Err(Fatal::usage(format!(
                "no usable state directory: {} is not writable and neither XDG_STATE_HOME nor HOME is set",
                quoted(&system)
            ))
            .hint("pass --state-dir DIR (or set SCATTER_STATE_DIR)")
            .into()),
        }
    }

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

    /// Every instance record, keyed by encoded id.
    pub fn instances(&self) -> Result<BTreeMap<String, InstanceRecord>> {
        let name = OsStr::new(INSTANCES_FILE);
        let path = self.dir.join(name);
        let Some((file, _)) = self
            .dir
            .open_read(name, "state file", MAX_INSTANCES_FILE)
            .with_context(|| format!("cannot read {}", quoted(&path)))?
        else {
            return Ok(BTreeMap::new());
        };
        let reader = io::BufReader::with_capacity(64 * 1024, file);
        let file: InstancesFile = serde_json::from_reader(reader)
            .with_context(|| format!("{} is not a scatter state file", quoted(&path)))?;
        Ok(file.instances)
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

    fn write_run(&self, run: &RunRecord) -> Result<()> {
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

    /// Applies events to `instances.json` under its lock, and forgets
    /// instances not in `keep` (when given). Returns the merged records.
    fn merge(
        &self,
        events: &[Event],
        keep: Option<&[String]>,
    ) -> Result<BTreeMap<String, InstanceRecord>> {
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
        let mut records = self.instances()?;
        for event in events {
            let key = encode_id(&event.id);
            let record = records.entry(key).or_default();
            apply(record, event);
        }
        if let Some(keep) = keep {
            records.retain(|key, _| keep.binary_search(key).is_ok());
        }
        let file = InstancesFile {
            format: "scatter-instances/1".into(),
            instances: records,
        };
        // Streamed: 10,000 records make a file of a few megabytes, not worth
        // holding twice in memory.
        self.dir
            .write_atomic(OsStr::new(INSTANCES_FILE), 0o644, |out| {
                let mut out = io::BufWriter::with_capacity(64 * 1024, out);
                serde_json::to_writer(&mut out, &file)?;
                out.flush()
            })?;
        Ok(file.instances)
    }

    /// Deletes all but the newest `keep` run records (never `current`).
    /// Only regular files named as run records count, and only they are
    /// deleted, by name relative to `runs/`.
    fn prune_runs(&self, keep: usize, current: &str) -> Result<()> {
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
fn lock_within(file: &File, path: &Path, wait: Duration) -> Result<()> {
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
fn run_file_name(run_id: &str) -> OsString {
    OsString::from(format!("{run_id}.json"))
}

/// Whether `id` is shaped as [`run_id`] makes them:
/// `YYYYMMDDTHHMMSS.mmmZ-PID`.
fn is_run_id(id: &[u8]) -> bool {
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

fn writable_or_creatable(dir: &Path) -> bool {
    use rustix::fs::{Access, access};
    let mut probe = dir;
    // The nearest existing ancestor must let us write (and so create).
    loop {
        if probe.exists() {
            return access(probe, Access::WRITE_OK | Access::EXEC_OK).is_ok();
        }
        match probe.parent() {
            Some(parent) => probe = parent,
            None => return false,
        }
    }
}

/// Merges one event into an instance's record.
pub fn apply(record: &mut InstanceRecord, event: &Event) {
    let at = unix_secs(event.at);
    let bytes = event.id.as_bytes();
    record.id = event.id.to_string_lossy().into_owned();
    record.id_hex = std::str::from_utf8(bytes)
        .is_err()
        .then(|| bytes.iter().map(|b| format!("{b:02x}")).collect());
    record.updated = at;
    let r = &event.result;
    match &r.outcome {
        Outcome::NotStarted => {}
        Outcome::Skipped(skip) => {
            record.last_skip_reason = Some(skip.reason());
            record.last_skip_at = Some(at);
        }
        outcome => {
            record.outcome = Some(outcome.kind());
            record.trigger = Some(event.trigger);
            record.exit_code = outcome.exit_code();
            record.signal = outcome.signal();
            record.reason = outcome.reason();
            record.last_start = Some(r.started.map_or(at, unix_secs));
            record.last_end = (!matches!(outcome, Outcome::Detached)).then_some(at);
            record.last_duration_secs = r.duration.map(|d| d.as_secs_f64());
            if outcome.is_failure() {
                record.consecutive_failures = record.consecutive_failures.saturating_add(1);
            } else if *outcome == Outcome::Ok {
                record.consecutive_failures = 0;
                record.last_success = Some(at);
            }
        }
    }
}

/// The id of a run: its UTC start and pid, sortable by time.
pub fn run_id(start: SystemTime, pid: i32) -> String {
    let stamp = humantime::format_rfc3339_millis(start).to_string();
    let compact: String = stamp.chars().filter(|c| *c != '-' && *c != ':').collect();
    format!("{compact}-{pid}")
}

/// The run record, updated by the supervisor's thread and written by the
/// writer's, at most once a second.
#[derive(Debug, Default)]
pub struct Progress {
    record: Mutex<RunRecord>,
    dirty: AtomicBool,
}

impl Progress {
    pub fn new(record: RunRecord) -> Arc<Progress> {
        Arc::new(Progress {
            record: Mutex::new(record),
            dirty: AtomicBool::new(true),
        })
    }

    /// Changes the record; the writer picks the change up.
    pub fn update(&self, f: impl FnOnce(&mut RunRecord)) {
        if let Ok(mut record) = self.record.lock() {
            f(&mut record);
        }
        self.dirty.store(true, Ordering::Release);
    }

    pub fn snapshot(&self) -> RunRecord {
        self.record.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

enum Msg {
    Event(Event),
    Finish {
        /// Encoded ids of every current instance (sorted), after a full run.
        keep: Option<Vec<String>>,
    },
}

/// What the writer thread leaves behind.
pub struct Written {
    /// The merged instance records after the last write, if it succeeded.
    pub instances: Option<BTreeMap<String, InstanceRecord>>,
    /// Every write that failed, for the end-of-run report.
    pub errors: Vec<String>,
}

/// The background writer of one run's records.
pub struct Writer {
    tx: Sender<Msg>,
    handle: JoinHandle<Written>,
}

impl Writer {
    /// Starts the writer thread; the run record is written at once. The
    /// thread counts against the user's process limit, so it may fail to
    /// start (EAGAIN); the caller then runs without history.
    pub fn start(dir: StateDir, progress: Arc<Progress>, keep_runs: usize) -> Result<Writer> {
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("scatter-state".into())
            .spawn(move || {
                // Starts matter more than records: on a busy machine the
                // writer waits, the supervisor does not.
                crate::platform::lower_thread_priority();
                writer_loop(&dir, &rx, &progress, keep_runs)
            })
            .context("cannot start the thread that writes the state files")?;
        Ok(Writer { tx, handle })
    }

    pub fn event(&self, event: Event) {
        let _ = self.tx.send(Msg::Event(event));
    }

    /// Writes everything still queued and the final run record (as left in
    /// `progress`), prunes old runs, and waits for the thread.
    pub fn finish(self, keep: Option<Vec<String>>) -> Written {
        let _ = self.tx.send(Msg::Finish { keep });
        drop(self.tx);
        self.handle.join().unwrap_or_else(|_| Written {
            instances: None,
            errors: vec!["the state writer thread panicked".into()],
        })
    }
}

fn writer_loop(
    dir: &StateDir,
    rx: &Receiver<Msg>,
    progress: &Progress,
    keep_runs: usize,
) -> Written {
    let mut events: Vec<Event> = Vec::new();
    let mut last_run_write: Option<Instant> = None;
    let mut last_merge = Instant::now();
    let mut written = Written {
        instances: None,
        errors: Vec::new(),
    };
    let report = |what: &str, err: anyhow::Error, errors: &mut Vec<String>| {
        let line = format!("{what}: {err:#}");
        // One warning per kind of failure, not one per flush.
        if !errors.iter().any(|e| e.starts_with(what)) {
            warn!("{line}; scatter status and metrics will be out of date");
        }
        errors.push(line);
    };
    loop {
        let run_due =
            last_run_write.map_or(Duration::ZERO, |at| RUN_FLUSH.saturating_sub(at.elapsed()));
        let wait = if events.is_empty() {
            run_due
        } else {
            run_due.min(INSTANCE_FLUSH.saturating_sub(last_merge.elapsed()))
        };
        let msg = match rx.recv_timeout(wait) {
            Ok(msg) => Some(msg),
            Err(RecvTimeoutError::Timeout) => None,
            // The run ended without finish(): it is unwinding from an error.
            Err(RecvTimeoutError::Disconnected) => return written,
        };
        let mut finish = None;
        for msg in msg
            .into_iter()
            .chain(std::iter::from_fn(|| rx.try_recv().ok()))
        {
            match msg {
                Msg::Event(e) => events.push(e),
                Msg::Finish { keep } => finish = Some(keep),
            }
        }
        let run_due = last_run_write.is_none_or(|at| at.elapsed() >= RUN_FLUSH);
        if (run_due || finish.is_some()) && progress.dirty.swap(false, Ordering::AcqRel) {
            if let Err(err) = dir.write_run(&progress.snapshot()) {
                report("cannot write the run record", err, &mut written.errors);
            }
            last_run_write = Some(Instant::now());
        } else if run_due {
            last_run_write = Some(Instant::now());
        }
        let due_merge = !events.is_empty() && last_merge.elapsed() >= INSTANCE_FLUSH;
        if due_merge || finish.is_some() {
            let keep = finish.as_ref().and_then(|k| k.as_deref());
            match dir.merge(&events, keep) {
                // Kept only from the last merge (for the metrics file):
                // 10,000 records are megabytes the run need not carry.
                Ok(records) if finish.is_some() => written.instances = Some(records),
                Ok(_) => {}
                Err(err) => report("cannot update instance records", err, &mut written.errors),
            }
            events.clear();
            last_merge = Instant::now();
        }
        if finish.is_some() {
            let run_id = progress.snapshot().run_id;
            if let Err(err) = dir.prune_runs(keep_runs, &run_id) {
                report("cannot prune old run records", err, &mut written.errors);
            }
            return written;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Skip;

    fn event(id: &str, outcome: Outcome) -> Event {
        Event {
            id: id.into(),
            trigger: Trigger::Cron,
            at: SystemTime::now(),
            result: TaskResult {
                outcome,
                started: Some(SystemTime::now()),
                duration: Some(Duration::from_millis(1500)),
                lateness: None,
            },
        }
    }

    #[test]
    fn consecutive_failures_count_up_and_reset() {
        let mut r = InstanceRecord::default();
        apply(&mut r, &event("a", Outcome::Failed(3)));
        apply(&mut r, &event("a", Outcome::TimedOut));
        assert_eq!(r.consecutive_failures, 2);
        assert!(r.failing());
        // A skip is remembered apart and does not hide the failure.
        apply(
            &mut r,
            &event("a", Outcome::Skipped(Skip::Locked("pid 1".into()))),
        );
        assert_eq!(r.outcome, Some(Kind::TimedOut));
        assert_eq!(r.last_skip_reason.as_deref(), Some("locked by pid 1"));
        apply(&mut r, &event("a", Outcome::Ok));
        assert_eq!(r.consecutive_failures, 0);
        assert!(r.last_success.is_some());
        assert_eq!(r.exit_code, Some(0));
    }

    #[test]
    fn merge_keeps_concurrent_updates_and_prunes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::create(tmp.path()).unwrap();
        dir.merge(&[event("a", Outcome::Ok)], None).unwrap();
        dir.merge(&[event("b", Outcome::Failed(1))], None).unwrap();
        let all = dir.instances().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all["b"].exit_code, Some(1));
        let kept = dir.merge(&[], Some(&["b".to_string()])).unwrap();
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["b"]);
    }

    fn record(i: u64, state: RunState) -> RunRecord {
        RunRecord {
            run_id: run_id(
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000 + i),
                42,
            ),
            state,
            ..Default::default()
        }
    }

    #[test]
    fn writer_writes_runs_and_prunes_old_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::create(tmp.path()).unwrap();
        let old: Vec<RunRecord> = (0..5).map(|i| record(i, RunState::Finished)).collect();
        for run in &old {
            dir.write_run(run).unwrap();
        }
        let progress = Progress::new(record(99, RunState::Running));
        let writer = Writer::start(dir.clone(), Arc::clone(&progress), 3).unwrap();
        writer.event(event("x", Outcome::Ok));
        progress.update(|r| r.state = RunState::Finished);
        let done = writer.finish(None);
        assert!(done.errors.is_empty(), "{:?}", done.errors);
        assert!(done.instances.unwrap().contains_key("x"));
        let runs = dir.runs().unwrap();
        let ids: Vec<_> = runs.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                &old[3].run_id,
                &old[4].run_id,
                &record(99, RunState::Running).run_id
            ]
        );
        assert_eq!(runs[2].state, RunState::Finished);
    }

    #[test]
    fn pruning_deletes_only_regular_files_named_as_run_records() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::create(tmp.path()).unwrap();
        let runs = tmp.path().join("runs");
        let victim = tmp.path().join("victim.json");
        std::fs::write(&victim, "{}").unwrap();
        // Named like the oldest record, but a symlink; and files scatter
        // never names so.
        let link = runs.join(format!("{}.json", record(0, RunState::Finished).run_id));
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        for name in ["notes.json", "20261123.json", ".hidden.json", "x"] {
            std::fs::write(runs.join(name), "{}").unwrap();
        }
        for i in 1..6 {
            dir.write_run(&record(i, RunState::Finished)).unwrap();
        }
        dir.prune_runs(2, &record(5, RunState::Finished).run_id)
            .unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&runs)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut want = vec![
            ".hidden.json".to_string(),
            "20261123.json".into(),
            format!("{}.json", record(0, RunState::Finished).run_id),
            format!("{}.json", record(4, RunState::Finished).run_id),
            format!("{}.json", record(5, RunState::Finished).run_id),
            "notes.json".into(),
            "x".into(),
        ];
        want.sort();
        assert_eq!(left, want);
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "{}");
        // status reads only the real records.
        assert_eq!(dir.runs().unwrap().len(), 2);
    }

    #[test]
    fn run_ids_are_recognised_exactly() {
        let id = run_id(SystemTime::now(), 4_194_304);
        assert!(is_run_id(id.as_bytes()), "{id}");
        assert!(is_run_id(b"20261123T152254.123Z-42"));
        for bad in [
            "",
            "20261123T152254.123Z-",
            "20261123T152254.123Z-4x",
            "20261123X152254.123Z-42",
            "2026112T152254.123Z-42",
            "../20261123T152254.123Z-42",
            "20261123T152254.123Z-42/x",
        ] {
            assert!(!is_run_id(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn a_planted_instances_lock_symlink_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::create(tmp.path()).unwrap();
        let target = tmp.path().join("elsewhere");
        std::os::unix::fs::symlink(&target, tmp.path().join(INSTANCES_LOCK)).unwrap();
        let err = dir.merge(&[event("a", Outcome::Ok)], None).unwrap_err();
        assert!(format!("{err:#}").contains("is a symlink"), "{err:#}");
        assert!(!target.exists());
        assert!(!tmp.path().join(INSTANCES_FILE).exists());
    }

    #[test]
    fn a_merge_waits_for_the_instances_lock_a_bounded_time() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::create(tmp.path()).unwrap();
        dir.merge(&[], None).unwrap();
        let path = tmp.path().join(INSTANCES_LOCK);
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let holder = File::open(&path).unwrap();
        holder.lock().unwrap();
        let mine = File::open(&path).unwrap();
        let started = Instant::now();
        let err = lock_within(&mine, &path, Duration::from_millis(300)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(format!("{err:#}").contains("still locked"), "{err:#}");
        drop(holder);
        lock_within(&mine, &path, Duration::from_millis(300)).unwrap();
    }

    #[test]
    fn oversized_state_files_are_refused_not_read() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::create(tmp.path()).unwrap();
        let big = File::create(tmp.path().join(INSTANCES_FILE)).unwrap();
        big.set_len(MAX_INSTANCES_FILE + 1).unwrap();
        let err = dir.instances().unwrap_err();
        assert!(
            format!("{err:#}").contains("more than the 256 MiB"),
            "{err:#}"
        );
    }

    #[test]
    fn run_ids_sort_by_time() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_447_374_123);
        assert_eq!(run_id(t, 42), "20261123T152254.123Z-42");
    }
}
