//! `--metrics-file`: the Prometheus text format for node_exporter's textfile
//! collector, written atomically at the end of every run.
//!
//! Run-level gauges come from the report of the run that just ended;
//! per-instance gauges come from the merged instance records, so a manual
//! `--only` run does not make the other instances disappear. Instances are
//! labelled `instance_id` (Prometheus sets `instance` itself, to the scrape
//! target) and jobs `scatter_name`; label values are escaped as the format
//! requires, so no id can break a line or a label.
//!
//! The collector's directory may be shared with other users, so it is not
//! required to be private: it is reached by [`crate::safedir`]'s symlink
//! rule, and the file is replaced by a new temporary file (`O_EXCL`,
//! `O_NOFOLLOW`) renamed over it, which replaces a symlink planted at the
//! path instead of writing through it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::display::quoted;
use crate::report::Report;
use crate::safedir::{DirKind, SafeDir};
use crate::state::InstanceRecord;

/// The metrics file's directory: may be shared (node_exporter's textfile
/// directory), so only the symlink rule applies; never created.
pub const METRICS_DIRS: DirKind = DirKind {
    what: "metrics directory",
    flag: "--metrics-file ",
    mode: 0o755,
    shared: true,
};

/// Everything one metrics file says.
pub struct Snapshot<'a> {
    pub name: &'a str,
    pub report: &'a Report,
    pub duration: Duration,
    /// End of the run, unix seconds.
    pub ended: f64,
    pub instances: &'a BTreeMap<String, InstanceRecord>,
}

/// One gauge: its help, its type, and a sample per label set.
fn gauge(out: &mut String, name: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{{{labels}}} {}", number(*value));
    }
}

/// Renders the metrics in the Prometheus text exposition format.
pub fn render(s: &Snapshot<'_>) -> String {
    let mut out = String::new();
    let job = format!("scatter_name=\"{}\"", escape(s.name));
    gauge(
        &mut out,
        "scatter_run_duration_seconds",
        "Wall-clock duration of the last run.",
        &[(job.clone(), s.duration.as_secs_f64())],
    );
    gauge(
        &mut out,
        "scatter_run_end_timestamp_seconds",
        "When the last run ended, in unix seconds.",
        &[(job.clone(), s.ended)],
    );
    gauge(
        &mut out,
        "scatter_run_instances",
        "Instances in the last run's plan.",
        &[(job.clone(), s.report.results.len() as f64)],
    );
    let counts = s.report.counts();
    let per_outcome: Vec<(String, f64)> = counts
        .iter()
        .map(|(kind, n)| (format!("{job},outcome=\"{kind}\""), *n as f64))
        .collect();
    gauge(
        &mut out,
        "scatter_run_outcomes",
        "Instances of the last run, by outcome.",
        &per_outcome,
    );
    gauge(
        &mut out,
        "scatter_run_start_lateness_max_seconds",
        "The worst start lateness against its slot in the last run.",
        &[(
            job.clone(),
            s.report
                .max_lateness()
                .map_or(0.0, |(_, l)| l.as_secs_f64()),
        )],
    );
    gauge(
        &mut out,
        "scatter_run_widespread_failure",
        "1 if most of the last run's attempts failed (likely a shared service), else 0.",
        &[(job.clone(), f64::from(u8::from(s.report.widespread)))],
    );
    let label = |key: &str| format!("{job},instance_id=\"{}\"", escape(key_id(s.instances, key)));
    let per_instance = |f: &dyn Fn(&InstanceRecord) -> Option<f64>| -> Vec<(String, f64)> {
        s.instances
            .iter()
            .filter_map(|(key, r)| f(r).map(|v| (label(key), v)))
            .collect()
    };
    gauge(
        &mut out,
        "scatter_instance_last_exit_code",
        "Exit status of the instance's last task: 124 for a timeout, 128+N for a signal.",
        &per_instance(&|r| {
            r.last_outcome()
                .and_then(|o| o.shell_status())
                .map(f64::from)
        }),
    );
    gauge(
        &mut out,
        "scatter_instance_last_http_status",
        "HTTP status of the instance's last request, when it failed with one (--url).",
        &per_instance(&|r| {
            r.last_outcome()
                .and_then(|o| o.http_status())
                .map(f64::from)
        }),
    );
    gauge(
        &mut out,
        "scatter_instance_last_duration_seconds",
        "Run time of the instance's last task.",
        &per_instance(&|r| r.last_duration_secs),
    );
    gauge(
        &mut out,
        "scatter_instance_last_success_timestamp_seconds",
        "When the instance's task last succeeded, in unix seconds (0: never seen to succeed).",
        &per_instance(&|r| Some(r.last_success.unwrap_or(0.0))),
    );
    gauge(
        &mut out,
        "scatter_instance_consecutive_failures",
        "Failures of the instance in a row.",
        &per_instance(&|r| Some(f64::from(r.consecutive_failures))),
    );
    gauge(
        &mut out,
        "scatter_instance_backoff_level",
        "Failures of the instance in a row outside widespread failures: its --backoff level.",
        &per_instance(&|r| Some(f64::from(r.backoff_level))),
    );
    gauge(
        &mut out,
        "scatter_instance_next_attempt_timestamp_seconds",
        "When --backoff next lets the failing instance be attempted, in unix seconds.",
        &per_instance(&|r| r.next_attempt),
    );
    gauge(
        &mut out,
        "scatter_instance_paused",
        "1 if the instance was paused when the last run reached it, else 0.",
        &per_instance(&|r| Some(f64::from(u8::from(r.paused_since.is_some())))),
    );
    render_costs(&mut out, s, &job, &label);
    out
}

/// What held the run back, and what each instance's task cost.
fn render_costs(out: &mut String, s: &Snapshot<'_>, job: &str, label: &dyn Fn(&str) -> String) {
    gauge(
        out,
        "scatter_run_delayed_by_pressure",
        "Starts of the last run that waited for pressure to fall (--max-pressure, --max-load).",
        &[(job.to_string(), s.report.pressure.delayed as f64)],
    );
    gauge(
        out,
        "scatter_run_pressure_delay_max_seconds",
        "The longest a start of the last run waited for pressure, from its slot.",
        &[(
            job.to_string(),
            s.report.pressure.longest.map_or(0.0, |d| d.as_secs_f64()),
        )],
    );
    let per_instance = |f: &dyn Fn(&InstanceRecord) -> Vec<(&'static str, f64)>| {
        s.instances
            .iter()
            .flat_map(|(key, r)| {
                f(r).into_iter()
                    .map(move |(extra, v)| (format!("{}{extra}", label(key)), v))
            })
            .collect::<Vec<_>>()
    };
    gauge(
        out,
        "scatter_instance_last_cpu_seconds",
        "CPU time of the instance's last task and the descendants it waited for, by mode.",
        &per_instance(&|r| {
            [
                (",mode=\"user\"", r.last_cpu_user_secs),
                (",mode=\"system\"", r.last_cpu_sys_secs),
            ]
            .into_iter()
            .filter_map(|(l, v)| v.map(|v| (l, v)))
            .collect()
        }),
    );
    gauge(
        out,
        "scatter_instance_last_max_rss_bytes",
        "Peak resident memory of the instance's last task (at least scatter's own, see the README).",
        &per_instance(&|r| {
            r.last_max_rss_kib
                .map(|k| ("", k as f64 * 1024.0))
                .into_iter()
                .collect()
        }),
    );
    gauge(
        out,
        "scatter_instance_cpu_seconds_average",
        "CPU time of the instance's task, user and system, as a weighted average over runs (alpha 0.3).",
        &per_instance(&|r| r.avg_cpu_secs().map(|v| ("", v)).into_iter().collect()),
    );
    gauge(
        out,
        "scatter_instance_max_rss_bytes_average",
        "Peak resident memory of the instance's task, as a weighted average over runs (alpha 0.3).",
        &per_instance(&|r| {
            r.avg_max_rss_kib
                .map(|k| ("", k * 1024.0))
                .into_iter()
                .collect()
        }),
    );
}

/// The id shown for a record: its lossy id, or the key if none was stored.
fn key_id<'a>(instances: &'a BTreeMap<String, InstanceRecord>, key: &'a str) -> &'a str {
    instances
        .get(key)
        .map_or(key, |r| if r.id.is_empty() { key } else { &r.id })
}

/// Writes the file atomically, readable by node_exporter's user.
pub fn write(path: &Path, s: &Snapshot<'_>) -> Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        anyhow::bail!("--metrics-file {} does not name a file", quoted(path));
    };
    let dir = SafeDir::existing(dir, METRICS_DIRS)?
        .with_context(|| format!("{} does not exist", quoted(dir)))?;
    let text = render(s);
    dir.write_atomic(name, 0o644, |out| out.write_all(text.as_bytes()))
}

/// Escapes a label value: backslash, double quote and newline.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("new\nline"), "new\\nline");
    }

    #[test]
    fn numbers_are_plain() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(1.7634e9), "1763400000");
    }
}
