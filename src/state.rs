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
//! All of this happens on one background thread fed by a channel, with
//! instance updates batched every few seconds, so disk latency and fsync
//! never delay a start. The thread never spawns anything; the files it opens
//! are close-on-exec, so no task inherits them.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
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
use crate::exit::Fatal;
use crate::lenient;
use crate::lockname::encode_id;
use crate::outcome::{Kind, Outcome, RunState, TaskResult};
use crate::report::unix_secs;

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

/// The state directory of one job.
#[derive(Debug, Clone)]
pub struct StateDir {
    pub path: PathBuf,
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

    /// Opens the directory for writing, creating it (mode 0755) if needed.
    pub fn create(path: &Path) -> Result<StateDir> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(path.join(RUNS_DIR))
            .with_context(|| format!("cannot create state directory {}", quoted(path)))?;
        Ok(StateDir {
            path: path.to_path_buf(),
        })
    }

    /// Opens an existing directory for reading.
    pub fn existing(path: &Path) -> Result<StateDir> {
        if !path.join(INSTANCES_FILE).exists() && !path.join(RUNS_DIR).exists() {
            return Err(Fatal::no_input(format!("no scatter state in {}", quoted(path)))
                .hint("scatter run writes it; check --name, --instances or --state-dir, and that a run has happened")
                .into());
        }
        Ok(StateDir {
            path: path.to_path_buf(),
        })
    }

    /// Every instance record, keyed by encoded id.
    pub fn instances(&self) -> Result<BTreeMap<String, InstanceRecord>> {
        let path = self.path.join(INSTANCES_FILE);
        match File::open(&path) {
            Ok(file) => {
                let reader = io::BufReader::with_capacity(64 * 1024, file);
                let file: InstancesFile = serde_json::from_reader(reader)
                    .with_context(|| format!("{} is not a scatter state file", quoted(&path)))?;
                Ok(file.instances)
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(err) => Err(err).with_context(|| format!("cannot read {}", quoted(&path))),
        }
    }

    /// Every run record, oldest first.
    pub fn runs(&self) -> Result<Vec<RunRecord>> {
        let dir = self.path.join(RUNS_DIR);
        let mut runs = Vec::new();
        for name in sorted_names(&dir)? {
            let path = dir.join(&name);
            match fs::read(&path).map(|b| serde_json::from_slice::<RunRecord>(&b)) {
                Ok(Ok(run)) => runs.push(run),
                // Removed by pruning, or not ours: not worth failing over.
                Ok(Err(err)) => debug!("ignoring {}: {err}", quoted(&path)),
                Err(err) => debug!("ignoring {}: {err}", quoted(&path)),
            }
        }
        Ok(runs)
    }

    fn write_run(&self, run: &RunRecord) -> Result<()> {
        let path = self
            .path
            .join(RUNS_DIR)
            .join(format!("{}.json", run.run_id));
        write_atomic(&path, &serde_json::to_vec(run)?, 0o644)
    }

    /// Applies events to `instances.json` under its lock, and forgets
    /// instances not in `keep` (when given). Returns the merged records.
    fn merge(
        &self,
        events: &[Event],
        keep: Option<&[String]>,
    ) -> Result<BTreeMap<String, InstanceRecord>> {
        let lock_path = self.path.join(INSTANCES_LOCK);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&lock_path)
            .with_context(|| format!("cannot open {}", quoted(&lock_path)))?;
        lock.lock()
            .with_context(|| format!("cannot lock {}", quoted(&lock_path)))?;
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
        write_atomic_with(&self.path.join(INSTANCES_FILE), 0o644, |out| {
            let mut out = io::BufWriter::with_capacity(64 * 1024, out);
            serde_json::to_writer(&mut out, &file)?;
            out.flush()
        })?;
        Ok(file.instances)
    }

    /// Deletes all but the newest `keep` run records (never `current`).
    fn prune_runs(&self, keep: usize, current: &str) -> Result<()> {
        let dir = self.path.join(RUNS_DIR);
        let names = sorted_names(&dir)?;
        let excess = names.len().saturating_sub(keep);
        for name in names.into_iter().take(excess) {
            if name.as_bytes().strip_suffix(b".json") == Some(current.as_bytes()) {
                continue;
            }
            if let Err(err) = fs::remove_file(dir.join(&name))
                && err.kind() != io::ErrorKind::NotFound
            {
                return Err(err)
                    .with_context(|| format!("cannot prune {}", quoted(dir.join(&name))));
            }
        }
        Ok(())
    }
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

fn sorted_names(dir: &Path) -> Result<Vec<OsString>> {
    let mut names: Vec<OsString> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .filter(|n| n.as_bytes().ends_with(b".json") && !n.as_bytes().starts_with(b"."))
            .collect(),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(err) => return Err(err).with_context(|| format!("cannot list {}", quoted(dir))),
    };
    names.sort();
    Ok(names)
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

/// Replaces `path` atomically: a temporary file in the same directory,
/// fsync, rename over `path`, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    write_atomic_with(path, mode, |out| out.write_all(bytes))
}

/// [`write_atomic`], with the contents written by `fill`.
pub fn write_atomic_with(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".scatter-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", quoted(dir)))?;
    let file = tmp.as_file_mut();
    file.set_permissions(fs::Permissions::from_mode(mode))
        .and_then(|()| fill(file))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", quoted(tmp.path())))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot replace {}", quoted(path)))?;
    // Make the rename itself durable.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
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

    #[test]
    fn writer_writes_runs_and_prunes_old_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::create(tmp.path()).unwrap();
        for i in 0..5 {
            let run = RunRecord {
                run_id: format!("2026{i:02}"),
                state: RunState::Finished,
                ..Default::default()
            };
            dir.write_run(&run).unwrap();
        }
        let progress = Progress::new(RunRecord {
            run_id: "202699".into(),
            state: RunState::Running,
            ..Default::default()
        });
        let writer = Writer::start(dir.clone(), Arc::clone(&progress), 3).unwrap();
        writer.event(event("x", Outcome::Ok));
        progress.update(|r| r.state = RunState::Finished);
        let done = writer.finish(None);
        assert!(done.errors.is_empty(), "{:?}", done.errors);
        assert!(done.instances.unwrap().contains_key("x"));
        let runs = dir.runs().unwrap();
        let ids: Vec<_> = runs.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(ids, ["202603", "202604", "202699"]);
        assert_eq!(runs[2].state, RunState::Finished);
    }

    #[test]
    fn run_ids_sort_by_time() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_447_374_123);
        assert_eq!(run_id(t, 42), "20261123T152254.123Z-42");
    }

    #[test]
    fn atomic_write_leaves_no_temporary_files() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("x.json");
        write_atomic(&path, b"one", 0o644).unwrap();
        write_atomic(&path, b"two", 0o644).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
    }
}
