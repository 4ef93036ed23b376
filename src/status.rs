//! `scatter status`: what is running and what failed, from the files runs
//! leave behind and from the locks held right now.
//!
//! * Runs in progress come from run records whose state is `running`; a run
//!   whose process is gone (checked by pid and start time) is shown as
//!   `died`.
//! * Tasks running now come from the locks actually held (`/proc/locks`),
//!   not from the state files, with the pid and start from each lock's
//!   holder record. Looking takes no lock, so it never disturbs a run.
//! * Every instance's last outcome comes from `instances.json`, failing
//!   instances first, with its back-off; pauses come from `pauses.json`.
//!
//! The exit code is 1 when any instance's last outcome is a failure (a
//! paused instance excepted), so the command works as a Nagios-style check.
//! `--sort` and `--top` turn the instance list into a list of the costliest
//! tenants ([`cost`]).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{IsTerminal, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use rustix::fs::FileType;
use serde::Serialize;

use crate::cli::{Format, StatusArgs};
use crate::config::default_name;
use crate::display::unix_secs;
use crate::display::{self, quoted};
use crate::exit::{self, Fatal};
use crate::health::text;
use crate::idcode::decode_stem;
use crate::lock::{self, Holder};
use crate::outcome::RunState;
use crate::platform;
use crate::safedir::SafeDir;
use crate::state::health::short_reason;
use crate::state::{InstanceRecord, Pause, RunRecord, StateDir, Widespread};

pub mod cost;

/// Runs `scatter status` and returns its exit code.
pub fn run(args: StatusArgs) -> Result<u8> {
    let name = match (&args.name, &args.instances) {
        (Some(name), _) => name.clone(),
        (None, Some(dir)) => default_name(
            &std::path::absolute(dir).with_context(|| format!("--instances {}", quoted(dir)))?,
        )?,
        (None, None) => {
            return Err(Fatal::usage(
                "scatter status needs the job: --name NAME or --instances DIR",
            )
            .hint("use the same --name or --instances as the scatter run it should report on")
            .into());
        }
    };
    let state_path = crate::state::path_for(args.state_dir.as_deref(), &name)?;
    let dir = StateDir::existing(&state_path)?;
    let mut status = gather(&dir, &name, args.lock_dir.as_deref(), SystemTime::now())?;
    cost::rank(&mut status, args.sort, args.top);
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &status)?;
            writeln!(out)?;
        }
        Format::Text => {
            let color =
                out.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            write_text(&status, color, &mut out)?;
        }
    }
    out.flush()?;
    Ok(status.exit_code)
}

/// The whole status, as `--format json` prints it (`scatter-status/1`).
#[derive(Debug, Serialize)]
pub struct Status {
    pub format: &'static str,
    pub name: String,
    pub state_dir: String,
    pub lock_dir: Option<String>,
    /// When this status was taken, unix seconds.
    pub now: f64,
    /// Runs whose record says `running`: in progress, or `died`.
    pub runs_in_progress: Vec<RunView>,
    pub last_finished_run: Option<RunView>,
    /// Tasks holding their instance's lock right now.
    pub running: Vec<RunningTask>,
    /// Every instance, failing ones first.
    pub instances: Vec<InstanceView>,
    /// Pauses in force, by id (an id need not be an instance yet).
    pub pauses: Vec<Pause>,
    /// A widespread failure in progress, as the last run left it.
    pub widespread: Option<Widespread>,
    /// Failing instances, paused ones excepted.
    pub failing: usize,
    pub exit_code: u8,
    /// `--sort`: what `instances` are ordered by (`None`: failing first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sort: Option<&'static str>,
    /// Instances left out by `--top`.
    #[serde(skip_serializing_if = "is_zero")]
    pub not_shown: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Debug, Serialize)]
pub struct RunView {
    pub run_id: String,
    pub pid: i32,
    /// `running`, `died` (its process is gone), `finished` or `aborted`.
    pub state: RunState,
    pub trigger: Option<crate::state::Trigger>,
    pub started: f64,
    pub elapsed_secs: f64,
    pub count: usize,
    pub started_count: usize,
    pub running: usize,
    pub finished_count: usize,
    /// Seconds until the last planned start (0 once it is past).
    pub eta_last_start_secs: f64,
    pub counts: BTreeMap<String, usize>,
    pub ended: Option<f64>,
    pub exit_code: Option<u8>,
    /// How long due starts have been waiting for pressure to fall, if they
    /// are (a live run only).
    pub waiting_for_pressure_secs: Option<f64>,
    /// Starts that waited for pressure.
    pub delayed_by_pressure: usize,
}

#[derive(Debug, Serialize)]
pub struct RunningTask {
    pub id: String,
    pub lock: String,
    pub pid: Option<i32>,
    pub started: Option<f64>,
    pub running_secs: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct InstanceView {
    /// Its last outcome is a failure (even while it backs off), and it is
    /// not paused.
    pub failing: bool,
    /// A pause holds it now.
    pub paused: bool,
    /// Seconds since the last outcome (end, or start if it never ended).
    pub age_secs: Option<f64>,
    #[serde(flatten)]
    pub record: InstanceRecord,
}

/// Collects the status of one job.
pub fn gather(
    dir: &StateDir,
    name: &OsStr,
    lock_base: Option<&Path>,
    now: SystemTime,
) -> Result<Status> {
    let now_secs = unix_secs(now);
    let ledger = dir.ledger()?;
    let records = ledger.instances;
    let mut pauses = dir.pauses()?;
    pauses.retain(|_, p| p.active(now_secs));
    let runs = dir.runs()?;
    let lock_dir = match lock_base {
        Some(base) => Some(lock::job_dir(&lock::base_path(Some(base))?, name)),
        None => runs
            .iter()
            .rev()
            .find(|r| !r.lock_dir.is_empty())
            .map(|r| PathBuf::from(&r.lock_dir))
            .or_else(|| lock::base_path(None).ok().map(|b| lock::job_dir(&b, name))),
    };
    let runs_in_progress = runs
        .iter()
        .filter(|r| r.state == RunState::Running)
        .map(|r| run_view(r, now_secs))
        .collect();
    let last_finished_run = runs
        .iter()
        .rev()
        .find(|r| r.state != RunState::Running)
        .map(|r| run_view(r, now_secs));
    let running = match &lock_dir {
        Some(dir) => running_tasks(dir, &records, now)?,
        None => Vec::new(),
    };
    let mut instances: Vec<InstanceView> = records
        .into_iter()
        .map(|(key, mut record)| {
            let when = record
                .last_end
                .or(record.last_start)
                .or(record.last_skip_at);
            let paused = pauses.contains_key(&key);
            if record.id.is_empty() {
                record.id = key;
            }
            InstanceView {
                failing: record.failing() && !paused,
                paused,
                age_secs: when.map(|t| (now_secs - t).max(0.0)),
                record,
            }
        })
        .collect();
    instances.sort_by(|a, b| {
        b.failing
            .cmp(&a.failing)
            .then(
                b.record
                    .consecutive_failures
                    .cmp(&a.record.consecutive_failures),
            )
            .then(a.record.id.cmp(&b.record.id))
    });
    let failing = instances.iter().filter(|i| i.failing).count();
    Ok(Status {
        format: "scatter-status/1",
        name: name.to_string_lossy().into_owned(),
        state_dir: dir.path.to_string_lossy().into_owned(),
        lock_dir: lock_dir.map(|d| d.to_string_lossy().into_owned()),
        now: now_secs,
        runs_in_progress,
        last_finished_run,
        running,
        instances,
        pauses: pauses.into_values().collect(),
        widespread: ledger.job.widespread,
        failing,
        exit_code: if failing > 0 { exit::FAILURE } else { exit::OK },
        sort: None,
        not_shown: 0,
    })
}

fn run_view(r: &RunRecord, now: f64) -> RunView {
    let alive = r.state == RunState::Running
        && platform::proc_stat(r.pid).is_some_and(|s| s.starttime == r.pid_starttime);
    let state = if r.state == RunState::Running && !alive {
        RunState::Died
    } else {
        r.state
    };
    RunView {
        run_id: r.run_id.clone(),
        pid: r.pid,
        state,
        trigger: r.trigger,
        started: r.started,
        elapsed_secs: (r.ended.unwrap_or(now) - r.started).max(0.0),
        count: r.count,
        started_count: r.started_count,
        running: r.running,
        finished_count: r.finished_count,
        eta_last_start_secs: if alive {
            (r.spread_end - now).max(0.0)
        } else {
            0.0
        },
        counts: r.counts.clone(),
        ended: r.ended,
        exit_code: r.exit_code,
        waiting_for_pressure_secs: r
            .held_since
            .filter(|_| alive)
            .map(|since| (now - since).max(0.0)),
        delayed_by_pressure: r.delayed_by_pressure,
    }
}

/// The lock files in `lock_dir` that some process holds right now. Entries
/// are examined with `lstat`, and a held one is opened without following a
/// symlink or blocking, so nothing planted there can hang the status.
fn running_tasks(
    lock_dir: &Path,
    records: &BTreeMap<String, InstanceRecord>,
    now: SystemTime,
) -> Result<Vec<RunningTask>> {
    let held = platform::held_flocks().context("cannot read /proc/locks")?;
    let Some(dir) = SafeDir::for_reading(lock_dir, lock::LOCK_DIRS)? else {
        return Ok(Vec::new());
    };
    let mut running = Vec::new();
    for (name, _) in dir.entries()? {
        let Some(stem) = name.as_bytes().strip_suffix(b".lock") else {
            continue;
        };
        let Ok(st) = dir.stat(&name) else {
            continue;
        };
        let key = (wide(st.st_dev), wide(st.st_ino));
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile || !held.contains(&key) {
            continue;
        }
        let stem = String::from_utf8_lossy(stem).into_owned();
        let id =
            records
                .get(&stem)
                .map(|r| r.id.clone())
                .unwrap_or_else(|| match decode_stem(&stem) {
                    Some(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                    None => stem.clone(),
                });
        // Holder records are one short line; read_from reads 512 bytes.
        let holder = match dir.open_read(&name, "lock file", u64::MAX) {
            Ok(Some((file, meta))) if (meta.dev(), meta.ino()) == key => {
                Holder::read_from(file.get_ref())
            }
            _ => None,
        };
        running.push(RunningTask {
            id,
            lock: dir.join(&name).to_string_lossy().into_owned(),
            pid: holder.as_ref().map(|h| h.pid),
            started: holder.as_ref().map(|h| unix_secs(h.started)),
            running_secs: holder.as_ref().map(|h| {
                now.duration_since(h.started)
                    .unwrap_or_default()
                    .as_secs_f64()
            }),
        });
    }
    running.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(running)
}

/// A device or inode number as `u64`, whatever width `struct stat` gives.
fn wide<T: Into<u64>>(n: T) -> u64 {
    n.into()
}

const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// Seconds for humans. Records are validated when read, but this is the
/// last line of defence: NaN, negative and huge values cannot panic here.
pub(crate) fn secs(s: f64) -> String {
    let d = Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX);
    display::duration(d)
}

/// The terminal form: a header, then runs, running tasks and instances.
pub fn write_text(s: &Status, color: bool, out: &mut impl Write) -> std::io::Result<()> {
    let paint = Paint(color);
    writeln!(
        out,
        "{}",
        paint.on(BOLD, format!("scatter status {}", quoted(&s.name)))
    )?;
    writeln!(out, "  state {}", quoted(&s.state_dir))?;
    if let Some(dir) = &s.lock_dir {
        writeln!(out, "  locks {}", quoted(dir))?;
    }
    writeln!(out)?;
    write_runs(s, paint, out)?;
    writeln!(out)?;
    write_running(s, paint, out)?;
    writeln!(out)?;
    if !s.pauses.is_empty() {
        write_pauses(s, out)?;
        writeln!(out)?;
    }
    match s.sort {
        Some(key) => cost::write_costs(s, key, out),
        None => write_instances(s, paint, out),
    }
}

fn write_pauses(s: &Status, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "Paused")?;
    let ids: Vec<String> = s.pauses.iter().map(|p| quoted(p.raw_id())).collect();
    let width = ids
        .iter()
        .map(|id| id.chars().count())
        .max()
        .unwrap_or(0)
        .min(32);
    for (pause, id) in s.pauses.iter().zip(&ids) {
        let until = match pause.until {
            Some(until) => format!(", for {} more", secs(until - s.now)),
            None => ", until resumed".to_string(),
        };
        let reason = pause
            .reason
            .as_deref()
            .map_or(String::new(), |r| format!(": {}", short_reason(&text(r))));
        writeln!(
            out,
            "  {id:width$}  by {}, {} ago{until}{reason}",
            pause.who(),
            secs(s.now - pause.since)
        )?;
    }
    Ok(())
}

/// Colours text only when asked (a terminal, and no `NO_COLOR`).
#[derive(Clone, Copy)]
struct Paint(bool);

impl Paint {
    fn on(self, code: &str, text: String) -> String {
        if self.0 {
            format!("{code}{text}{RESET}")
        } else {
            text
        }
    }
}

fn write_runs(s: &Status, paint: Paint, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "{}", paint.on(BOLD, "Runs in progress".into()))?;
    if s.runs_in_progress.is_empty() {
        writeln!(out, "  none")?;
    }
    for r in &s.runs_in_progress {
        let trigger = r.trigger.map_or("", |t| match t {
            crate::state::Trigger::Cron => "cron",
            crate::state::Trigger::Manual => "manual",
        });
        if r.state == RunState::Died {
            let line = format!(
                "  {}  pid {} ({trigger}) started {} ago: died, {} of {} slots reached, {} finished",
                r.run_id,
                r.pid,
                secs(r.elapsed_secs),
                r.started_count.max(r.finished_count),
                r.count,
                r.finished_count
            );
            writeln!(out, "{}", paint.on(YELLOW, line))?;
            continue;
        }
        let mut eta = if r.eta_last_start_secs > 0.0 {
            format!("last start in {}", secs(r.eta_last_start_secs))
        } else {
            "all started".to_string()
        };
        if let Some(waiting) = r.waiting_for_pressure_secs {
            eta.push_str(&format!("; waiting for pressure for {}", secs(waiting)));
        }
        writeln!(
            out,
            "  {}  pid {} ({trigger}) running for {}: {} of {} started, {} running, {} finished; {eta}",
            r.run_id,
            r.pid,
            secs(r.elapsed_secs),
            r.started_count,
            r.count,
            r.running,
            r.finished_count
        )?;
    }
    if let Some(w) = &s.widespread {
        let line = format!(
            "  widespread failure for {}: {} of {} instances failed in the run that began it",
            secs(s.now - w.since),
            w.failed,
            w.attempted
        );
        writeln!(out, "{}", paint.on(RED, line))?;
    }
    if let Some(r) = &s.last_finished_run {
        let counts: Vec<String> = r
            .counts
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{n} {}", k.replace('_', " ")))
            .collect();
        let ago = r.ended.map_or(String::new(), |e| {
            format!("ended {} ago, ", secs(s.now - e))
        });
        writeln!(
            out,
            "  last: {} {ago}{} after {}: {} (exit {})",
            r.run_id,
            r.state,
            secs(r.elapsed_secs),
            if counts.is_empty() {
                "no instances".to_string()
            } else {
                counts.join(", ")
            },
            r.exit_code.map_or("?".to_string(), |c| c.to_string())
        )?;
    }
    Ok(())
}

fn write_running(s: &Status, paint: Paint, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "{}", paint.on(BOLD, "Running now (locks held)".into()))?;
    if s.running.is_empty() {
        writeln!(out, "  none")?;
    }
    let width = column_width(s.running.iter().map(|t| t.id.as_str()));
    for t in &s.running {
        let who = match (t.pid, t.running_secs) {
            (Some(pid), Some(run)) => format!("pid {pid}, for {}", secs(run)),
            _ => "holder unknown (no holder record)".to_string(),
        };
        writeln!(out, "  {:width$}  {who}", quoted(&t.id))?;
    }
    Ok(())
}

fn write_instances(s: &Status, paint: Paint, out: &mut impl Write) -> std::io::Result<()> {
    let head = format!(
        "Instances ({} of {} failing)",
        s.failing,
        s.instances.len() + s.not_shown
    );
    writeln!(out, "{}", paint.on(BOLD, head))?;
    let width = column_width(s.instances.iter().map(|i| i.record.id.as_str()));
    for i in &s.instances {
        let r = &i.record;
        // The same words the end-of-run report uses.
        let outcome = match (r.outcome, r.last_outcome()) {
            (None, _) => "never ran".to_string(),
            (Some(_), Some(outcome)) => outcome.describe(None, None),
            (Some(_), None) => "an outcome this version of scatter does not know".to_string(),
        };
        let age = i
            .age_secs
            .map_or(String::new(), |a| format!(", {} ago", secs(a)));
        let after = r
            .last_duration_secs
            .map_or(String::new(), |d| format!(" after {}", secs(d)));
        let fails = match r.consecutive_failures {
            0 => String::new(),
            1 => ", 1 failure in a row".to_string(),
            n => format!(", {n} failures in a row"),
        };
        let skip = match (&r.last_skip_reason, r.last_skip_at) {
            (Some(why), Some(at)) => format!("; skipped {} ago: {why}", secs(s.now - at)),
            _ => String::new(),
        };
        let held = match (i.paused, r.next_attempt) {
            (true, _) => "; paused".to_string(),
            (false, Some(next)) if next > s.now => format!(
                "; backing off (level {}), next attempt in {}",
                r.backoff_level,
                secs(next - s.now)
            ),
            (false, Some(_)) => format!(
                "; backing off (level {}), next attempt due",
                r.backoff_level
            ),
            (false, None) => String::new(),
        };
        let line = format!(
            "  {:width$}  {outcome}{after}{age}{fails}{skip}{held}",
            quoted(&r.id)
        );
        if i.failing {
            writeln!(out, "{}", paint.on(RED, line))?;
        } else {
            writeln!(out, "{line}")?;
        }
    }
    if s.not_shown > 0 {
        writeln!(out, "  and {} more (--top)", s.not_shown)?;
    }
    Ok(())
}

/// Aligns a column of ids, unless one very long id would push the next
/// column far right.
pub(crate) fn column_width<'a>(ids: impl Iterator<Item = &'a str>) -> usize {
    ids.map(|id| quoted(id).chars().count())
        .max()
        .unwrap_or(0)
        .min(32)
}
