//! Whether the host is too busy for another start: Linux pressure stall
//! information (PSI) and the load average, read for `--max-pressure` and
//! `--max-load`.
//!
//! PSI's `some avg10` is the share of the last ten seconds in which at least
//! one task was stalled waiting for the resource (CPU, memory, I/O). It is
//! read from `/proc/pressure/RESOURCE` (`--pressure-source system`), from
//! scatter's own cgroup v2 directory's `RESOURCE.pressure` (`cgroup`: found
//! through `/proc/self/cgroup` and the cgroup2 mount in
//! `/proc/self/mountinfo`, which may be `/sys/fs/cgroup` or, on hybrid
//! hosts, `/sys/fs/cgroup/unified`), or from any directory holding
//! `RESOURCE.pressure` files. `--max-load` divides the 1-minute load
//! average of `/proc/loadavg` by the number of online CPUs.
//!
//! Everything is checked once before the run starts (a kernel without PSI
//! is a usage error that points to `--max-load`), then re-read at most
//! every [`REREAD`], never once per start. Files are opened through the
//! directory's descriptor without following a symlink or blocking on a
//! FIFO, at most [`MAX_FILE`] bytes are read, and every number must be a
//! plain decimal in range, so a file someone else writes cannot stall or
//! fool the supervisor. A file that cannot be read during the run costs one
//! warning and holds nothing back: shedding every tenant because a file
//! went away would be worse than not gating.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use log::{debug, trace, warn};

use crate::display::{self, quoted};
use crate::exit::Fatal;
use crate::lenient;
use crate::platform::{self, later};
use crate::safedir::{DirKind, SafeDir};

mod cgroup;
#[cfg(test)]
mod tests;

use cgroup::own_cgroup_dir;

/// How often the files are read while starts are due: often enough to
/// follow `avg10`, which moves over seconds, and never once per start.
pub const REREAD: Duration = Duration::from_millis(500);

/// The most of one pressure or `/proc` file that is read: a PSI file is two
/// short lines.
pub const MAX_FILE: u64 = 4096;

/// The largest `--max-load` accepted (per CPU).
pub const MAX_LOAD: f64 = 1e6;

/// Where PSI files are read from: only read, so only the symlink rule of
/// the walk applies (and `for_reading` opens the path as given).
const PRESSURE_DIRS: DirKind = DirKind {
    what: "pressure directory",
    flag: "--pressure-source ",
    mode: 0o755,
    shared: true,
};

const PSI_HINT: &str = "pressure stall information needs Linux 4.20 or later built with CONFIG_PSI (and psi=1 on the kernel command line if it is built with CONFIG_PSI_DEFAULT_DISABLED); use --max-load LOAD to gate on the load average instead";

const CGROUP_PSI_HINT: &str = "scatter reads its own cgroup's pressure files; where the kernel has none (PSI off, or the root cgroup of an older kernel), use --pressure-source system, or --max-load LOAD";

/// A resource PSI reports on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Cpu,
    Memory,
    Io,
}

impl Resource {
    pub fn name(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
            Resource::Io => "io",
        }
    }
}

/// `--max-pressure RESOURCE=PERCENT`: starts wait while the resource's
/// `some avg10` is above `percent`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub resource: Resource,
    pub percent: f64,
}

impl Limit {
    /// Parses `cpu=60`, `memory=12.5`, `io=40`.
    pub fn parse(s: &str) -> Result<Limit, String> {
        let (name, value) = s.split_once('=').ok_or_else(|| {
            format!("{s:?} is not RESOURCE=PERCENT; write it as cpu=60, memory=20 or io=40")
        })?;
        let resource = match name.trim() {
            "cpu" => Resource::Cpu,
            "memory" => Resource::Memory,
            "io" => Resource::Io,
            other => {
                return Err(format!(
                    "{other:?} is not a resource PSI reports on; use cpu, memory or io"
                ));
            }
        };
        let value = value.trim();
        let percent = lenient::number_in(value.trim_end_matches('%'), 0.0..=100.0)
            .ok_or_else(|| format!("{value:?} is not a percentage from 0 to 100"))?;
        Ok(Limit { resource, percent })
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.resource.name(), self.percent)
    }
}

/// `--max-load LOAD`: a positive number, per online CPU.
pub fn parse_load(s: &str) -> Result<f64, String> {
    lenient::number_in(s.trim(), 0.0..=MAX_LOAD)
        .filter(|x| *x > 0.0)
        .ok_or_else(|| format!("{s:?} is not a load per CPU; give a positive number such as 1.5"))
}

/// `--pressure-source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `/proc/pressure`: the whole host.
    System,
    /// scatter's own cgroup v2 directory.
    Cgroup,
    /// A directory holding `RESOURCE.pressure` files.
    Dir(PathBuf),
}

impl Source {
    /// `system`, `cgroup`, or a directory (`./system` for one named so).
    pub fn parse(s: &str) -> Result<Source, String> {
        match s {
            "system" => Ok(Source::System),
            "cgroup" => Ok(Source::Cgroup),
            "" => Err("give system, cgroup or a directory".into()),
            dir => Ok(Source::Dir(PathBuf::from(dir))),
        }
    }
}

/// What a run gates its starts on, checked: where each limit's file is.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// The directory the PSI files are in (`None`: no `--max-pressure`).
    pub dir: Option<PathBuf>,
    /// Each limit with the name of its file in `dir`.
    pub limits: Vec<(Limit, String)>,
    /// `--max-load`, per CPU.
    pub max_load: Option<f64>,
}

impl Spec {
    /// Resolves the source and reads every file once. `None` when nothing
    /// is to be gated. Anything unusable is a usage error (exit 2) naming
    /// the file, before anything starts.
    pub fn resolve(
        limits: &[Limit],
        source: &Source,
        max_load: Option<f64>,
    ) -> Result<Option<Spec>> {
        let mut seen: Vec<Resource> = Vec::new();
        for limit in limits {
            if seen.contains(&limit.resource) {
                return Err(Fatal::usage(format!(
                    "--max-pressure names {} twice",
                    limit.resource.name()
                ))
                .hint("give each resource once, such as --max-pressure cpu=60 --max-pressure io=40")
                .into());
            }
            seen.push(limit.resource);
        }
        if limits.is_empty() && max_load.is_none() {
            return Ok(None);
        }
        let (dir, suffix) = if limits.is_empty() {
            (None, false)
        } else {
            match source {
                Source::System => (Some(PathBuf::from("/proc/pressure")), false),
                Source::Cgroup => (Some(own_cgroup_dir()?), true),
                Source::Dir(dir) => (
                    Some(
                        std::path::absolute(dir)
                            .with_context(|| format!("--pressure-source {}", quoted(dir)))?,
                    ),
                    true,
                ),
            }
        };
        let spec = Spec {
            limits: limits
                .iter()
                .map(|l| {
                    let name = if suffix {
                        format!("{}.pressure", l.resource.name())
                    } else {
                        l.resource.name().to_string()
                    };
                    (*l, name)
                })
                .collect(),
            dir,
            max_load,
        };
        // Read once now, so a kernel without PSI stops the run here.
        let gauge = Gauge::open(&spec)?;
        for (limit, name) in &spec.limits {
            gauge.read_psi(name).map_err(|why| {
                let what = format!("--max-pressure {limit}: {why}");
                let hint = match source {
                    Source::Cgroup => CGROUP_PSI_HINT,
                    _ => PSI_HINT,
                };
                Fatal::usage(what).hint(hint)
            })?;
        }
        if let Some(dir) = &spec.dir {
            debug!("pressure is read from {}", quoted(dir));
        }
        if spec.max_load.is_some() {
            gauge
                .read_load()
                .map_err(|why| Fatal::usage(format!("--max-load: {why}")))?;
        }
        Ok(Some(spec))
    }
}

/// The gate itself, for one run: the open directories and what was last
/// read.
pub struct Gauge {
    limits: Vec<(Limit, String)>,
    psi: Option<SafeDir>,
    proc_dir: Option<SafeDir>,
    max_load: Option<f64>,
    cpus: usize,
    /// When the files were last read.
    checked: Option<Instant>,
    /// Why starts are held (`None`: they are not), since when.
    over: Option<(String, Instant)>,
    /// A read failed during the run and was reported.
    warned: bool,
}

impl Gauge {
    /// Opens the directories of a resolved spec.
    pub fn open(spec: &Spec) -> Result<Gauge> {
        let psi = match &spec.dir {
            Some(dir) => Some(SafeDir::for_reading(dir, PRESSURE_DIRS)?.ok_or_else(|| {
                let message = format!("pressure directory {} does not exist", quoted(dir));
                let fatal = Fatal::usage(message);
                if dir == Path::new("/proc/pressure") {
                    fatal.hint(format!("this kernel has no PSI: {PSI_HINT}"))
                } else {
                    fatal.hint("give --pressure-source a directory holding cpu.pressure, memory.pressure or io.pressure")
                }
            })?),
            None => None,
        };
        let proc_dir = match spec.max_load {
            Some(_) => SafeDir::for_reading(Path::new("/proc"), PRESSURE_DIRS)?,
            None => None,
        };
        Ok(Gauge {
            limits: spec.limits.clone(),
            psi,
            proc_dir,
            max_load: spec.max_load,
            cpus: platform::online_cpus(),
            checked: None,
            over: None,
            warned: false,
        })
    }

    /// Whether due starts must wait, and until when at the latest: the next
    /// time the files may be read again. Reads them only if [`REREAD`] has
    /// passed since the last time.
    pub fn hold(&mut self, now: Instant) -> Option<Instant> {
        let due = self
            .checked
            .is_none_or(|at| now.saturating_duration_since(at) >= REREAD);
        if due {
            self.checked = Some(now);
            let verdict = self.verdict();
            match (&self.over, verdict) {
                (None, Some(why)) => {
                    debug!("holding starts: {why}");
                    self.over = Some((why, now));
                }
                (Some((_, since)), None) => {
                    debug!(
                        "pressure is under the limits again after {}; starts resume",
                        display::duration(now.saturating_duration_since(*since))
                    );
                    self.over = None;
                }
                (Some((_, since)), Some(why)) => {
                    trace!("still holding starts: {why}");
                    self.over = Some((why, *since));
                }
                (None, None) => {}
            }
        }
        self.over.as_ref()?;
        Some(later(self.checked.unwrap_or(now), REREAD))
    }

    /// Why starts must wait now, if they must.
    fn verdict(&mut self) -> Option<String> {
        for i in 0..self.limits.len() {
            let (limit, name) = self.limits[i].clone();
            match self.read_psi(&name) {
                Ok(value) if value > limit.percent => {
                    return Some(format!(
                        "{} pressure (some avg10) is {value:.2}%, above --max-pressure {limit}",
                        limit.resource.name()
                    ));
                }
                Ok(_) => {}
                Err(why) => self.warn_once(&why),
            }
        }
        if let Some(max) = self.max_load {
            match self.read_load() {
                Ok(load) if load > max => {
                    return Some(format!(
                        "the load average per CPU is {load:.2}, above --max-load {max}"
                    ));
                }
                Ok(_) => {}
                Err(why) => self.warn_once(&why),
            }
        }
        None
    }

    fn warn_once(&mut self, why: &str) {
        if !self.warned {
            self.warned = true;
            warn!("{why}; starts are not held back for it during this run");
        }
    }

    /// `some avg10` of one PSI file, in percent.
    fn read_psi(&self, name: &str) -> Result<f64, String> {
        let dir = self.psi.as_ref().ok_or("no pressure directory")?;
        let shown = quoted(dir.join(name));
        let bytes = dir
            .read(OsStr::new(name), "pressure file", MAX_FILE)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{shown} does not exist"))?;
        parse_psi(&bytes).ok_or_else(|| {
            format!("{shown} has no valid \"some avg10=\" line (a percentage from 0 to 100)")
        })
    }

    /// The 1-minute load average per online CPU.
    fn read_load(&self) -> Result<f64, String> {
        let dir = self.proc_dir.as_ref().ok_or("/proc is not mounted")?;
        let bytes = dir
            .read(OsStr::new("loadavg"), "load average file", MAX_FILE)
            .map_err(|e| e.to_string())?
            .ok_or("/proc/loadavg does not exist")?;
        let load =
            parse_loadavg(&bytes).ok_or("/proc/loadavg does not start with a load average")?;
        Ok(load / self.cpus as f64)
    }
}

/// `some avg10` from the text of a PSI file.
pub fn parse_psi(bytes: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(bytes).ok()?;
    let line = text.lines().find(|l| l.starts_with("some "))?;
    let value = line
        .split_ascii_whitespace()
        .find_map(|w| w.strip_prefix("avg10="))?;
    lenient::number_in(value, 0.0..=100.0)
}

/// The 1-minute load average from the text of `/proc/loadavg`.
pub fn parse_loadavg(bytes: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(bytes).ok()?;
    lenient::number_in(text.split_ascii_whitespace().next()?, 0.0..=MAX_LOAD * 1e3)
}
