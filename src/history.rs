//! One run's history: feeds the supervisor's events to the state writer and,
//! at the end, writes the final run record and the metrics file.
//!
//! The supervisor only calls [`Observer`] methods, which update the shared
//! run record and queue events; all file I/O happens on the state writer's
//! thread, so it never delays a start.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use log::warn;

use crate::display::unix_secs;
use crate::health::{self, Closing, Verdict};
use crate::idcode::encode_id;
use crate::metrics;
use crate::outcome::{Kind, Outcome, RunState, TaskResult};
use crate::plan::Plan;
use crate::platform;
use crate::report::Report;
use crate::state::{
    self, Event, InstanceRecord, Notice, Progress, RunRecord, StateDir, Trigger, Writer,
};
use crate::supervise::{Observer, RunStart};

/// Where a run's history goes.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Where run and instance records go; `None` if no directory is usable.
    pub state_dir: Option<std::path::PathBuf>,
    /// Run records to keep.
    pub keep_runs: usize,
    /// `--metrics-file`.
    pub metrics_file: Option<std::path::PathBuf>,
}

/// What the end of a run decided about health, when it has a state
/// directory to remember it in.
pub struct Settled {
    /// Every change still queued for the `--on-change` hook, oldest first
    /// (this run's and any an earlier run left).
    pub pending: Vec<Notice>,
    /// Where the queue is, to take changes off it.
    pub state: StateDir,
}

pub struct History<'a> {
    plan: &'a Plan,
    trigger: Trigger,
    writer: Option<Writer>,
    /// The state directory the writer writes to.
    state: Option<StateDir>,
    /// The run record, shared with the writer thread.
    run: Arc<Progress>,
    /// This run's records, kept in memory for the metrics file only when
    /// there is no state directory to merge them into.
    local: Option<BTreeMap<String, InstanceRecord>>,
    metrics_file: Option<std::path::PathBuf>,
    clock: RunStart,
}

impl<'a> History<'a> {
    /// Starts recording in `dir` (the state directory as made for the run,
    /// or why it could not be) and writes the run record. Without a usable
    /// state directory, the run goes ahead and only the metrics file (if
    /// asked for) is written.
    pub fn start(
        cfg: &Spec,
        dir: Option<anyhow::Result<StateDir>>,
        plan: &'a Plan,
        clock: &RunStart,
    ) -> History<'a> {
        let trigger = if plan.manual {
            Trigger::Manual
        } else {
            Trigger::Cron
        };
        let pid = platform::pid();
        let spread_end = plan.entries.last().map_or(Duration::ZERO, |e| e.offset);
        let run = Progress::new(RunRecord {
            format: "scatter-run/1".into(),
            run_id: state::run_id(clock.start_wall, pid),
            name: plan.name.to_string_lossy().into_owned(),
            pid,
            pid_starttime: platform::proc_stat(pid).map_or(0, |s| s.starttime),
            trigger: Some(trigger),
            instances_dir: plan.instances.to_string_lossy().into_owned(),
            lock_dir: plan.lock_dir.to_string_lossy().into_owned(),
            started: unix_secs(clock.start_wall),
            spread_end: unix_secs(clock.start_wall + spread_end),
            window_secs: plan.window.as_secs_f64(),
            shard: plan.shard.map(|s| s.to_string()),
            count: plan.entries.len(),
            state: RunState::Running,
            ..RunRecord::default()
        });
        let started = dir.and_then(|made| {
            match made.and_then(|dir| {
                Writer::start(dir.clone(), Arc::clone(&run), cfg.keep_runs).map(|w| (w, dir))
            }) {
                Ok(started) => Some(started),
                Err(err) => {
                    // One line: the reason, what it costs, and what to do.
                    let hint = crate::exit::fatal_of(&err)
                        .and_then(|f| f.hint.as_deref())
                        .map_or(String::new(), |h| format!(" (hint: {h})"));
                    warn!("{err:#}; this run records no history, and scatter status will be out of date{hint}");
                    None
                }
            }
        });
        let (writer, state) = started.map_or((None, None), |(w, d)| (Some(w), Some(d)));
        let local = (writer.is_none() && cfg.metrics_file.is_some()).then(BTreeMap::new);
        History {
            plan,
            trigger,
            writer,
            state,
            run,
            local,
            metrics_file: cfg.metrics_file.clone(),
            clock: *clock,
        }
    }

    /// Writes the final run record and the metrics file. Problems are
    /// logged as warnings as they happen (one per kind); they cost the
    /// history, never the run's outcome.
    ///
    /// With `closing`, the last merge of the instance records also settles
    /// the run's health ([`health::settle`]): `report` learns whether the
    /// run was a widespread failure and the changes it recorded, which are
    /// returned with the hook's queue. `None` when there is no state
    /// directory to remember them in, or it could not be written.
    pub fn finish(
        mut self,
        report: &mut Report,
        exit_code: u8,
        closing: Option<Closing>,
    ) -> Option<Settled> {
        let ended = SystemTime::now();
        report.widespread = !self.plan.manual && Verdict::of(&report.results).widespread();
        let widespread = report.widespread;
        self.run.update(|run| {
            run.widespread = widespread;
            run.state = if report.stopped_by.is_some() {
                RunState::Aborted
            } else {
                RunState::Finished
            };
            run.stopped_by = report.stopped_by;
            run.ended = Some(unix_secs(ended));
            run.exit_code = Some(exit_code);
            run.max_lateness_secs = report.max_lateness().map(|(_, l)| l.as_secs_f64());
            run.running = 0;
            run.held_since = None;
            run.delayed_by_pressure = report.pressure.delayed;
        });
        // After a full run, records of instances that no longer exist go
        // (those --include/--exclude leave out still exist). A shard sees
        // only part of the instances, so it never prunes.
        let keep = (!self.plan.manual && self.plan.shard.is_none()).then(|| {
            let planned = self.plan.entries.iter().map(|e| &e.id);
            let mut keys: Vec<String> = planned
                .chain(&self.plan.excluded)
                .map(|id| encode_id(id))
                .collect();
            keys.sort();
            keys
        });
        let changes = Arc::new(Mutex::new(None));
        let settle = closing.map(|closing| {
            let results: Vec<(OsString, Kind)> = (self.plan.entries.iter())
                .zip(&report.results)
                .map(|(e, r)| (e.id.clone(), r.outcome.kind()))
                .collect();
            let out = Arc::clone(&changes);
            let now = unix_secs(ended);
            Box::new(move |file: &mut state::InstancesFile| {
                let settled = health::settle(file, &closing, &results, now);
                if let Ok(mut out) = out.lock() {
                    *out = Some(settled);
                }
            }) as state::Settle
        });
        let written = self
            .writer
            .take()
            .map(|writer| writer.finish_settled(keep, settle));
        // The changes go to the report; that they were decided is what
        // makes the run settled.
        let changes = changes.lock().ok().and_then(|mut c| c.take());
        let decided = changes.is_some();
        if let Some(changes) = changes {
            report.changes = changes;
        }
        let (merged, pending) = written.map_or((None, Vec::new()), |w| (w.instances, w.pending));
        let empty = BTreeMap::new();
        if let Some(path) = &self.metrics_file {
            let name = self.plan.name.to_string_lossy();
            let snapshot = metrics::Snapshot {
                name: &name,
                report,
                duration: self.clock.start.elapsed(),
                ended: unix_secs(ended),
                instances: merged.as_ref().or(self.local.as_ref()).unwrap_or(&empty),
            };
            if let Err(err) = metrics::write(path, &snapshot) {
                warn!("cannot write the metrics file: {err:#}");
            }
        }
        if !decided {
            return None;
        }
        Some(Settled {
            pending,
            state: self.state.take()?,
        })
    }
}

impl Observer for History<'_> {
    fn started(&mut self, _slot: usize) {
        self.run.update(|run| {
            run.started_count += 1;
            run.running += 1;
        });
    }

    fn ended(&mut self, slot: usize, result: &TaskResult) {
        let entry = &self.plan.entries[slot];
        self.run.update(|run| {
            if result.started.is_some() && !matches!(result.outcome, Outcome::Detached) {
                run.running = run.running.saturating_sub(1);
            }
            if !matches!(result.outcome, Outcome::NotStarted | Outcome::Detached) {
                run.finished_count += 1;
            }
            *run.counts
                .entry(result.outcome.kind().name().to_string())
                .or_default() += 1;
        });
        let event = Event {
            id: entry.id.clone(),
            trigger: self.trigger,
            at: SystemTime::now(),
            result: result.clone(),
        };
        if let Some(local) = &mut self.local {
            state::apply(local.entry(encode_id(&entry.id)).or_default(), &event);
        }
        if let Some(writer) = &mut self.writer {
            writer.event(event);
        }
    }

    fn held(&mut self, held: bool) {
        let since = held.then(|| unix_secs(SystemTime::now()));
        self.run.update(|run| run.held_since = since);
    }
}
