//! The background thread that writes one run's records, so that disk
//! latency and fsync never delay a start.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use log::warn;

use super::dir::StateDir;
use super::health::{Notice, Settle};
use super::records::{Event, InstanceRecord, RunRecord};

/// How often queued instance updates are merged into `instances.json`.
const INSTANCE_FLUSH: Duration = Duration::from_secs(5);
/// A merge rewrites the whole `instances.json`, which for 10,000 instances
/// takes tens of milliseconds of CPU: the pause before the next one grows
/// with what the last one cost, so merging never takes more than about a
/// thousandth of the run's time. It never waits longer than this.
const INSTANCE_FLUSH_MAX: Duration = Duration::from_secs(60);

/// The pause after a merge that took `took`.
fn merge_pause(took: Duration) -> Duration {
    took.saturating_mul(1000)
        .clamp(INSTANCE_FLUSH, INSTANCE_FLUSH_MAX)
}
/// How often the run record is rewritten while the run progresses.
const RUN_FLUSH: Duration = Duration::from_secs(1);

/// The run record, updated by the supervisor's thread and written by the
/// writer's, at most once a second; and the instances' events, queued by
/// the supervisor's thread and taken by the writer's whenever it wakes
/// (at least once a second), so queueing one never wakes the writer.
#[derive(Debug, Default)]
pub struct Progress {
    record: Mutex<RunRecord>,
    dirty: AtomicBool,
    events: Mutex<Vec<Event>>,
}

impl Progress {
    pub fn new(record: RunRecord) -> Arc<Progress> {
        Arc::new(Progress {
            record: Mutex::new(record),
            dirty: AtomicBool::new(true),
            events: Mutex::new(Vec::new()),
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

    /// Moves the queued events to the end of `into`.
    fn take_events(&self, into: &mut Vec<Event>) {
        into.append(&mut self.events.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

enum Msg {
    Finish {
        /// Encoded ids of every current instance (sorted), after a full run.
        keep: Option<Vec<String>>,
        /// Decides the run's changes in the last merge.
        settle: Option<Settle>,
    },
}

/// What the writer thread leaves behind.
pub struct Written {
    /// The merged instance records after the last write, if it succeeded.
    pub instances: Option<BTreeMap<String, InstanceRecord>>,
    /// Every write that failed (each kind was also logged once, as it
    /// happened).
    pub errors: Vec<String>,
    /// The changes still queued for the `--on-change` hook after the last
    /// merge (empty if it failed).
    pub pending: Vec<Notice>,
}

/// The background writer of one run's records.
pub struct Writer {
    tx: Sender<Msg>,
    handle: JoinHandle<Written>,
    progress: Arc<Progress>,
}

impl Writer {
    /// Starts the writer thread; the run record is written at once. The
    /// thread counts against the user's process limit, so it may fail to
    /// start (EAGAIN); the caller then runs without history.
    pub fn start(dir: StateDir, progress: Arc<Progress>, keep_runs: usize) -> Result<Writer> {
        let (tx, rx) = mpsc::channel();
        let shared = Arc::clone(&progress);
        let handle = std::thread::Builder::new()
            .name("scatter-state".into())
            .spawn(move || {
                // Starts matter more than records: on a busy machine the
                // writer waits, the supervisor does not.
                crate::platform::lower_thread_priority();
                writer_loop(&dir, &rx, &shared, keep_runs)
            })
            .context("cannot start the thread that writes the state files")?;
        Ok(Writer {
            tx,
            handle,
            progress,
        })
    }

    /// Queues an instance's event; the writer thread takes it when it next
    /// wakes, at most a second later.
    pub fn event(&mut self, event: Event) {
        self.progress
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
    }

    /// Writes everything still queued and the final run record (as left in
    /// `progress`), prunes old runs, and waits for the thread.
    pub fn finish(self, keep: Option<Vec<String>>) -> Written {
        self.finish_settled(keep, None)
    }

    /// [`Writer::finish`], with `settle` run on the whole instances file in
    /// the last merge, under its lock.
    pub fn finish_settled(self, keep: Option<Vec<String>>, settle: Option<Settle>) -> Written {
        let _ = self.tx.send(Msg::Finish { keep, settle });
        drop(self.tx);
        self.handle.join().unwrap_or_else(|_| {
            warn!(
                "the state writer thread panicked; scatter status and metrics will be out of date"
            );
            Written {
                instances: None,
                errors: vec!["the state writer thread panicked".into()],
                pending: Vec::new(),
            }
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
    let mut pause = INSTANCE_FLUSH;
    let mut written = Written {
        instances: None,
        errors: Vec::new(),
        pending: Vec::new(),
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
            run_due.min(pause.saturating_sub(last_merge.elapsed()))
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
            let Msg::Finish { keep, settle } = msg;
            finish = Some((keep, settle));
        }
        // After the finish message: every event was queued before it.
        progress.take_events(&mut events);
        let run_due = last_run_write.is_none_or(|at| at.elapsed() >= RUN_FLUSH);
        if (run_due || finish.is_some()) && progress.dirty.swap(false, Ordering::AcqRel) {
            if let Err(err) = dir.write_run(&progress.snapshot()) {
                report("cannot write the run record", err, &mut written.errors);
            }
            last_run_write = Some(Instant::now());
        } else if run_due {
            last_run_write = Some(Instant::now());
        }
        let due_merge = !events.is_empty() && last_merge.elapsed() >= pause;
        if let Some((keep, settle)) = finish.as_mut() {
            match dir.merge_settled(&events, keep.as_deref(), settle.take()) {
                // Kept only from the last merge (for the metrics file):
                // 10,000 records are megabytes the run need not carry.
                Ok(file) => {
                    written.instances = Some(file.instances);
                    written.pending = file.pending;
                }
                Err(err) => report("cannot update instance records", err, &mut written.errors),
            }
            events.clear();
            last_merge = Instant::now();
        } else if due_merge {
            let began = Instant::now();
            if let Err(err) = dir.merge(&events, None) {
                report("cannot update instance records", err, &mut written.errors);
            }
            events.clear();
            last_merge = Instant::now();
            pause = merge_pause(last_merge - began);
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

    #[test]
    fn the_pause_between_merges_grows_with_their_cost() {
        assert_eq!(merge_pause(Duration::from_micros(200)), INSTANCE_FLUSH);
        assert_eq!(
            merge_pause(Duration::from_millis(20)),
            Duration::from_secs(20)
        );
        assert_eq!(merge_pause(Duration::from_secs(3)), INSTANCE_FLUSH_MAX);
        assert_eq!(merge_pause(Duration::MAX), INSTANCE_FLUSH_MAX);
    }
}
