//! No burst after a stall, end to end: after SIGSTOP/SIGCONT, when the cap
//! lets go and when pressure falls, no 100 ms hold more than
//! FACTOR × 100 ms ÷ (W/N) + 2 starts. Each scenario also runs with
//! `--catch-up 1000`, which must break that bound: proof that the check
//! can fail. The six runs go side by side, to keep the suite fast.
//!
//! Start times come from scatter's own JSON report (taken as the spawn
//! returns), so the tasks' start-up does not blur them.

use crate::util;

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use crate::util::Fixture;

/// 15 instances over 3 s: W/N = 200 ms, so with FACTOR 4 the bound is
/// 4 × 100 ms ÷ 200 ms + 2 = 4 starts in any 100 ms, and the paced starts
/// are 50 ms apart (at most 3 in a closed 100 ms window).
const N: usize = 15;
const WINDOW: &str = "3s";
const BOUND: usize = 4;

fn fixture() -> Fixture {
    let names: Vec<String> = (0..N).map(|i| format!("t{i:02}")).collect();
    Fixture::with(&names)
}

fn scatter(fx: &Fixture, factor: &str, extra: &[&str], task: &[&str]) -> Command {
    let mut args = vec!["--window", WINDOW, "--catch-up", factor, "--format", "json"];
    args.extend_from_slice(extra);
    args.push("--");
    let mut cmd = fx.run(&args);
    cmd.args(task);
    cmd
}

/// The sorted start times of a finished run, from its JSON report.
fn start_times(child: Child) -> Vec<f64> {
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["counts"]["ok"], N, "{doc}");
    let mut times: Vec<f64> = doc["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["started"].as_f64().unwrap())
        .collect();
    times.sort_by(f64::total_cmp);
    times
}

/// The most starts in any closed 100 ms window.
fn densest(times: &[f64]) -> usize {
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| **t - times[i] <= 0.1)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// A way of falling behind: given the `--catch-up` factor, runs scatter
/// and returns its start times.
type Scenario = fn(&str) -> Vec<f64>;

#[test]
fn no_burst_after_a_stop_when_the_cap_lets_go_or_after_pressure_falls() {
    let scenarios: [(&str, Scenario); 3] =
        [("stopped", stopped), ("cap", cap), ("pressure", pressure)];
    let runs: Vec<(&str, &str, Vec<f64>)> = std::thread::scope(|s| {
        let handles: Vec<_> = scenarios
            .iter()
            .flat_map(|(name, scenario)| {
                ["4", "1000"].map(|factor| (*name, factor, s.spawn(move || scenario(factor))))
            })
            .collect();
        handles
            .into_iter()
            .map(|(name, factor, h)| (name, factor, h.join().unwrap()))
            .collect()
    });
    let gaps = |t: &[f64]| -> Vec<u64> {
        t.windows(2)
            .map(|w| ((w[1] - w[0]) * 1000.0).round() as u64)
            .collect()
    };
    for (name, factor, times) in &runs {
        let most = densest(times);
        eprintln!("{name}, --catch-up {factor}: at most {most} starts in 100 ms (bound {BOUND})");
        if *factor == "4" {
            assert!(
                most <= BOUND,
                "{name}, --catch-up 4: {most} starts in 100 ms (gaps in ms: {:?})",
                gaps(times)
            );
        } else {
            assert!(
                most > BOUND,
                "{name}, --catch-up 1000 should burst: {most} starts in 100 ms (gaps in ms: {:?})",
                gaps(times)
            );
        }
    }
}

fn signal(child: &Child, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, sig).unwrap();
}

fn stopped(factor: &str) -> Vec<f64> {
    let fx = fixture();
    let child = util::spawn(&mut scatter(&fx, factor, &[], &["true"]));
    // Stopped from 0.5 s to 1.7 s: 6 starts fall due meanwhile.
    std::thread::sleep(Duration::from_millis(500));
    signal(&child, rustix::process::Signal::STOP);
    std::thread::sleep(Duration::from_millis(1200));
    signal(&child, rustix::process::Signal::CONT);
    start_times(child)
}

fn cap(factor: &str) -> Vec<f64> {
    let fx = fixture();
    // The first task holds the only slot for 1.4 s; the others end at
    // once, so without the rule they follow each other as fast as the
    // cap frees.
    let task = [
        "sh",
        "-c",
        r#"case "$1" in t00) sleep 1.4;; esac"#,
        "sh",
        "{}",
    ];
    let mut cmd = scatter(&fx, factor, &["--max-concurrent", "1"], &task);
    start_times(util::spawn(&mut cmd))
}

fn set_cpu_pressure(dir: &Path, avg10: f64) {
    let tmp = dir.join(".cpu.tmp");
    std::fs::write(
        &tmp,
        format!("some avg10={avg10:.2} avg60=0.00 avg300=0.00 total=1\n"),
    )
    .unwrap();
    std::fs::rename(&tmp, dir.join("cpu.pressure")).unwrap();
}

fn pressure(factor: &str) -> Vec<f64> {
    let fx = fixture();
    let psi = fx.tmp.path().join("psi");
    std::fs::create_dir(&psi).unwrap();
    set_cpu_pressure(&psi, 90.0);
    let extra = [
        "--max-pressure",
        "cpu=60",
        "--pressure-source",
        psi.to_str().unwrap(),
        "--max-defer",
        "1m",
    ];
    let child = util::spawn(&mut scatter(&fx, factor, &extra, &["true"]));
    std::thread::sleep(Duration::from_millis(1200));
    set_cpu_pressure(&psi, 5.0);
    start_times(child)
}
