//! `scatter status --sort cpu|rss|duration [--top N]`: the costliest
//! tenants, by what their last task cost.
//!
//! The figures come from the instance records: the last task's user and
//! system CPU time and peak resident memory (from `wait4`, so they cover
//! the task's leader and the descendants it waited for, and the memory
//! figure is never below scatter's own, as a task runs in scatter's memory
//! until its `exec`), its run time, and the weighted averages over runs.
//! Instances without the figure (never ran, or ran under an older release)
//! come last, in id order.

use std::cmp::Ordering;
use std::io::Write;
use std::num::NonZeroUsize;

use super::{InstanceView, Status, column_width, secs};
use crate::cli::SortKey;
use crate::display::{self, quoted};
use crate::state::InstanceRecord;

/// The name of a sort key, as the JSON status gives it.
pub fn key_name(key: SortKey) -> &'static str {
    match key {
        SortKey::Cpu => "cpu",
        SortKey::Rss => "rss",
        SortKey::Duration => "duration",
    }
}

/// The figure an instance is ranked by.
fn figure(record: &InstanceRecord, key: SortKey) -> Option<f64> {
    match key {
        SortKey::Cpu => record.last_cpu_secs(),
        SortKey::Rss => record.last_max_rss_kib.map(|k| k as f64),
        SortKey::Duration => record.last_duration_secs,
    }
    .filter(|x| x.is_finite())
}

/// Orders the instances by `key`, costliest first (without `key`, the
/// order stays failing first), then keeps the first `top`.
pub fn rank(status: &mut Status, key: Option<SortKey>, top: Option<NonZeroUsize>) {
    if let Some(key) = key {
        status.sort = Some(key_name(key));
        status.instances.sort_by(|a, b| {
            let (fa, fb) = (figure(&a.record, key), figure(&b.record, key));
            match (fa, fb) {
                (Some(x), Some(y)) => y.partial_cmp(&x).unwrap_or(Ordering::Equal),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            }
            .then_with(|| a.record.id.cmp(&b.record.id))
        });
    }
    if let Some(top) = top
        && status.instances.len() > top.get()
    {
        status.not_shown = status.instances.len() - top.get();
        status.instances.truncate(top.get());
    }
}

/// The cost view of the instance list.
pub fn write_costs(s: &Status, key: &str, out: &mut impl Write) -> std::io::Result<()> {
    let what = match key {
        "cpu" => "CPU time",
        "rss" => "peak memory",
        _ => "run time",
    };
    let shown = s.instances.len();
    writeln!(
        out,
        "Instances by the {what} of their last task ({shown} of {})",
        shown + s.not_shown
    )?;
    let width = column_width(s.instances.iter().map(|i| i.record.id.as_str()));
    for i in &s.instances {
        writeln!(out, "  {:width$}  {}", quoted(&i.record.id), line(i))?;
    }
    Ok(())
}

/// `cpu 1.52s (user 1.4s, sys 120ms)  rss 64.1 MiB  took 2.1s  average cpu 1.3s, rss 60.2 MiB`
fn line(i: &InstanceView) -> String {
    let r = &i.record;
    let dash = || "-".to_string();
    let cpu = r.last_cpu_secs().map_or_else(dash, |c| {
        format!(
            "{} (user {}, sys {})",
            secs(c),
            secs(r.last_cpu_user_secs.unwrap_or(0.0)),
            secs(r.last_cpu_sys_secs.unwrap_or(0.0))
        )
    });
    let rss = r.last_max_rss_kib.map_or_else(dash, kib);
    let took = r.last_duration_secs.map_or_else(dash, secs);
    let mut text = format!("cpu {cpu}  rss {rss}  took {took}");
    if let (Some(cpu), Some(rss)) = (r.avg_cpu_secs(), r.avg_max_rss_kib) {
        text.push_str(&format!(
            "  average cpu {}, rss {}",
            secs(cpu),
            kib(rss as u64)
        ));
    }
    if i.failing {
        text.push_str("  (failing)");
    }
    text
}

fn kib(k: u64) -> String {
    display::size(k.saturating_mul(1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: &str, cpu: Option<f64>, rss: Option<u64>, took: Option<f64>) -> InstanceView {
        InstanceView {
            failing: false,
            paused: false,
            age_secs: None,
            record: InstanceRecord {
                id: id.into(),
                last_cpu_user_secs: cpu,
                last_max_rss_kib: rss,
                last_duration_secs: took,
                ..InstanceRecord::default()
            },
        }
    }

    fn status(instances: Vec<InstanceView>) -> Status {
        Status {
            format: "scatter-status/1",
            name: "job".into(),
            state_dir: "/s".into(),
            lock_dir: None,
            now: 0.0,
            runs_in_progress: Vec::new(),
            last_finished_run: None,
            running: Vec::new(),
            instances,
            pauses: Vec::new(),
            widespread: None,
            failing: 0,
            exit_code: 0,
            sort: None,
            not_shown: 0,
        }
    }

    fn ids(s: &Status) -> Vec<&str> {
        s.instances.iter().map(|i| i.record.id.as_str()).collect()
    }

    #[test]
    fn the_costliest_come_first_and_unknown_figures_last() {
        let all = || {
            vec![
                view("a", Some(0.5), Some(100), Some(9.0)),
                view("b", None, None, None),
                view("c", Some(2.0), Some(50), Some(1.0)),
                view("d", Some(1.0), Some(300), None),
            ]
        };
        let mut s = status(all());
        rank(&mut s, Some(SortKey::Cpu), None);
        assert_eq!(ids(&s), ["c", "d", "a", "b"]);
        assert_eq!(s.sort, Some("cpu"));
        let mut s = status(all());
        rank(&mut s, Some(SortKey::Rss), NonZeroUsize::new(2));
        assert_eq!(ids(&s), ["d", "a"]);
        assert_eq!(s.not_shown, 2);
        let mut s = status(all());
        rank(&mut s, Some(SortKey::Duration), None);
        assert_eq!(ids(&s), ["a", "c", "b", "d"]);
        // --top alone keeps the usual order.
        let mut s = status(all());
        rank(&mut s, None, NonZeroUsize::new(3));
        assert_eq!(ids(&s), ["a", "b", "c"]);
    }

    #[test]
    fn the_cost_view_shows_the_figures() {
        let mut s = status(vec![
            view("big", Some(1.5), Some(65536), Some(2.0)),
            view("never", None, None, None),
        ]);
        s.instances[0].record.last_cpu_sys_secs = Some(0.25);
        s.instances[0].record.avg_cpu_user_secs = Some(1.0);
        s.instances[0].record.avg_max_rss_kib = Some(32768.0);
        rank(&mut s, Some(SortKey::Rss), None);
        let mut out = Vec::new();
        write_costs(&s, "rss", &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("by the peak memory of their last task (2 of 2)"),
            "{text}"
        );
        assert!(
            text.contains("big    cpu 1.8s (user 1.5s, sys 250ms)  rss 64 MiB  took 2.0s  average cpu 1.0s, rss 32 MiB"),
            "{text}"
        );
        assert!(text.contains("never  cpu -  rss -  took -"), "{text}");
    }
}
