//! Pressure-aware pacing, end to end: starts wait while a pressure file the
//! test rewrites is above the limit, `--max-defer` sheds or forces them,
//! `--only` never waits, the cgroup source resolves on this machine, a
//! kernel without PSI is a usage error, and `--max-load` reads
//! `/proc/loadavg`.

use crate::util;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::util::{Fixture, run, wait_until};

/// Writes a PSI file as the kernel does, atomically (scatter may read it at
/// any moment).
fn set_pressure(dir: &Path, resource: &str, avg10: f64) {
    let text = format!(
        "some avg10={avg10:.2} avg60=0.00 avg300=0.00 total=12345\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
    );
    let tmp = dir.join(format!(".{resource}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{resource}.pressure"))).unwrap();
}

fn pressure_dir(fx: &Fixture, cpu: f64) -> PathBuf {
    let dir = fx.tmp.path().join("psi");
    std::fs::create_dir(&dir).unwrap();
    set_pressure(&dir, "cpu", cpu);
    dir
}

fn json(out: &[u8]) -> serde_json::Value {
    serde_json::from_slice(out).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(out)))
}

#[test]
fn starts_wait_while_cpu_pressure_is_above_the_limit_and_go_on_when_it_falls() {
    let fx = Fixture::with(&["a", "b", "c"]);
    let psi = pressure_dir(&fx, 90.0);
    let mut cmd = fx.run(&[
        "--window",
        "1s",
        "--max-pressure",
        "cpu=60",
        "--pressure-source",
        psi.to_str().unwrap(),
        "--max-defer",
        "1m",
        "--format",
        "json",
        "-v",
        "--",
    ]);
    cmd.arg(&fx.recorder).arg("{}");
    let child = util::spawn(&mut cmd);
    let spawned = std::time::Instant::now();
    // The whole window and more at 90 %: nothing starts, and the run's
    // record says it is waiting for pressure.
    let mut status = fx.status(&[]);
    let waiting = wait_until(Duration::from_secs(10), || {
        String::from_utf8_lossy(&status.output().unwrap().stdout).contains("waiting for pressure")
    });
    let past_window = Duration::from_millis(1500);
    std::thread::sleep(past_window.saturating_sub(spawned.elapsed()));
    let none_started = fx.records().is_empty();
    set_pressure(&psi, "cpu", 5.0);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(waiting, "scatter status never showed the wait; {stderr}");
    assert!(none_started, "a task started at 90 % cpu pressure");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(fx.records().len(), 3, "{stderr}");
    let doc = json(&out.stdout);
    assert_eq!(doc["counts"]["ok"], 3);
    assert_eq!(doc["delayed_by_pressure"], 3);
    assert_eq!(doc["deferred"], 0);
    assert!(
        doc["max_pressure_delay_secs"].as_f64().unwrap() > 1.5,
        "{doc}"
    );
    // -v says why starts wait, and when they resume.
    assert!(
        stderr.contains(
            "holding starts: cpu pressure (some avg10) is 90.00%, above --max-pressure cpu=60"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("starts resume"), "{stderr}");
    assert!(stderr.contains("late; pressure held it"), "{stderr}");
}

#[test]
fn past_max_defer_starts_are_deferred_and_that_is_not_a_failure() {
    let fx = Fixture::with(&["a", "b", "c"]);
    let psi = pressure_dir(&fx, 90.0);
    let mut cmd = fx.run(&[
        "--window",
        "600ms",
        "--max-pressure",
        "cpu=60",
        "--pressure-source",
        psi.to_str().unwrap(),
        "--max-defer",
        "300ms",
        "--format",
        "json",
        "--",
    ]);
    cmd.arg(&fx.recorder).arg("{}");
    let ran = run(&mut cmd, fx.tmp.path());
    ran.expect_code(0);
    let doc = json(&ran.out.stdout);
    assert_eq!(doc["counts"]["deferred"], 3, "{doc}");
    assert_eq!(doc["deferred"], 3);
    assert_eq!(doc["instances"][0]["outcome"], "deferred");
    assert!(
        doc["instances"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("--max-defer")
    );
    assert!(fx.records().is_empty());
    // The records keep it as a skip, not as a failure.
    let shown = run(fx.status(&[]), fx.tmp.path());
    shown.expect_code(0).expect_stdout("--max-defer");
}

#[test]
fn max_defer_action_start_starts_them_anyway_with_a_warning() {
    let fx = Fixture::with(&["a", "b", "c"]);
    let psi = pressure_dir(&fx, 90.0);
    let mut cmd = fx.run(&[
        "--window",
        "600ms",
        "--max-pressure",
        "cpu=60",
        "--pressure-source",
        psi.to_str().unwrap(),
        "--max-defer",
        "300ms",
        "--max-defer-action",
        "start",
        "--format",
        "json",
        "--",
    ]);
    cmd.arg(&fx.recorder).arg("{}");
    let ran = run(&mut cmd, fx.tmp.path());
    ran.expect_code(0)
        .expect_stderr("a: starting despite pressure");
    let doc = json(&ran.out.stdout);
    assert_eq!(doc["counts"]["ok"], 3, "{doc}");
    assert_eq!(doc["delayed_by_pressure"], 3);
    let recs = fx.records();
    assert_eq!(recs.len(), 3);
    // Each waited its 300 ms past its slot (0, 200 and 400 ms), no more
    // than a generous margin beyond.
    for r in &recs {
        let late = r.offset() - 0.2 * r.slot as f64;
        assert!((0.25..3.0).contains(&late), "slot {} {late}s late", r.slot);
    }
}

#[test]
fn only_never_waits_for_pressure() {
    let fx = Fixture::with(&["a", "b"]);
    let psi = pressure_dir(&fx, 99.0);
    let started = std::time::Instant::now();
    let mut cmd = fx.run(&[
        "--only",
        "a",
        "--only",
        "b",
        "--max-pressure",
        "cpu=10",
        "--pressure-source",
        psi.to_str().unwrap(),
        "--",
    ]);
    cmd.arg(&fx.recorder).arg("{}");
    run(&mut cmd, fx.tmp.path()).expect_code(0).expect_silent();
    assert_eq!(fx.records().len(), 2);
    assert!(started.elapsed() < Duration::from_secs(5));
    // Its pressure flags are not even checked: a manual run does what it
    // is told, on any kernel.
    let mut cmd = fx.run(&[
        "--only",
        "a",
        "--max-pressure",
        "cpu=10",
        "--pressure-source",
        "/nonexistent/psi",
        "--",
    ]);
    cmd.arg(&fx.recorder).arg("{}");
    run(&mut cmd, fx.tmp.path()).expect_code(0).expect_silent();
}

/// scatter's cgroup v2 directory, worked out here independently: the
/// `0::` line of /proc/self/cgroup under the cgroup2 mount (the test and
/// scatter share the cgroup).
fn expected_cgroup_dir() -> PathBuf {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let path = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("this machine has cgroup v2 (a 0:: line in /proc/self/cgroup)");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let point = mountinfo
        .lines()
        .filter(|l| l.contains(" - cgroup2 "))
        .map(|l| l.split(' ').nth(4).unwrap().to_string())
        .next()
        .expect("a cgroup2 mount");
    match path.trim_start_matches('/') {
        "" => PathBuf::from(point),
        rest => Path::new(&point).join(rest),
    }
}

#[test]
fn the_cgroup_source_resolves_on_this_machine() {
    let fx = Fixture::with(&["a", "b"]);
    let dir = expected_cgroup_dir();
    let mut cmd = fx.run(&[
        "--window",
        "200ms",
        "--max-pressure",
        "cpu=100,memory=100,io=100",
        "--pressure-source",
        "cgroup",
        "-v",
        "--",
    ]);
    cmd.arg(&fx.recorder).arg("{}");
    let ran = run(&mut cmd, fx.tmp.path());
    ran.expect_code(0)
        .expect_stderr(&format!("pressure is read from {}", dir.display()));
    assert!(dir.join("cpu.pressure").is_file(), "{dir:?}");
    assert_eq!(fx.records().len(), 2);
}

#[test]
fn max_pressure_without_psi_files_is_a_usage_error_pointing_to_max_load() {
    let fx = Fixture::with(&["a"]);
    let empty = fx.tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let mut cmd = fx.run(&[
        "--max-pressure",
        "io=50",
        "--pressure-source",
        empty.to_str().unwrap(),
        "--",
    ]);
    cmd.arg(&fx.recorder).arg("{}");
    let ran = run(&mut cmd, fx.tmp.path());
    ran.expect_code(2)
        .expect_stderr("--max-pressure io=50: ")
        .expect_stderr("io.pressure does not exist")
        .expect_stderr("hint: ")
        .expect_stderr("--max-load");
    assert!(fx.records().is_empty());
    assert!(!fx.state().exists(), "nothing was recorded");
}

/// Runs scatter in a private mount namespace after `setup` (a shell
/// snippet; `$D` is the fixture's directory). `None` where no mount
/// namespace can be made.
fn in_mount_namespace(fx: &Fixture, setup: &str, args: &[&str]) -> Option<util::Ran> {
    let script = format!("{setup} || exit 77\nexec \"$@\"");
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "sh", "-c", &script, "sh"])
        .arg(util::BIN)
        .args(fx.run_args())
        .args(args)
        .arg("--")
        .arg(&fx.recorder)
        .arg("{}")
        .env("D", fx.tmp.path())
        .env("REC_DIR", &fx.rec)
        .env_remove("RUST_LOG")
        .env_remove("SCATTER_LOG");
    let ran = run(cmd, fx.tmp.path());
    if matches!(ran.code(), Some(77) | Some(1)) && ran.stderr().contains("unshare") {
        return None;
    }
    Some(ran)
}

#[test]
fn a_kernel_without_psi_is_a_usage_error_and_max_load_still_works() {
    if !util::privileged("mount over /proc/pressure in a mount namespace") {
        return;
    }
    let fx = Fixture::with(&["a"]);
    // /proc/pressure as on a kernel built without PSI: no files.
    let Some(ran) = in_mount_namespace(
        &fx,
        "mount -t tmpfs tmpfs /proc/pressure",
        &["--window", "100ms", "--max-pressure", "cpu=80"],
    ) else {
        eprintln!("skipped: cannot create a mount namespace here");
        return;
    };
    ran.expect_code(2)
        .expect_stderr("/proc/pressure/cpu does not exist")
        .expect_stderr("hint: pressure stall information needs Linux 4.20")
        .expect_stderr("use --max-load LOAD");
    assert!(fx.records().is_empty());
    let ran = in_mount_namespace(
        &fx,
        "mount -t tmpfs tmpfs /proc/pressure",
        &["--window", "100ms", "--max-load", "1000"],
    )
    .unwrap();
    ran.expect_code(0).expect_silent();
    assert_eq!(fx.records().len(), 1);
}

#[test]
fn max_load_holds_starts_while_the_load_per_cpu_is_above_it() {
    if !util::privileged("bind-mount a load average over /proc/loadavg") {
        return;
    }
    let fx = Fixture::with(&["a", "b"]);
    let cpus = scatter::platform::online_cpus() as f64;
    let busy = fx.tmp.path().join("busy");
    std::fs::write(&busy, format!("{:.2} 1.00 1.00 3/100 999\n", 3.0 * cpus)).unwrap();
    let idle = fx.tmp.path().join("idle");
    std::fs::write(&idle, format!("{:.2} 1.00 1.00 3/100 999\n", 0.5 * cpus)).unwrap();
    let args = [
        "--window",
        "400ms",
        "--max-load",
        "2",
        "--max-defer",
        "200ms",
        "--format",
        "json",
    ];
    let Some(ran) = in_mount_namespace(&fx, "mount --bind \"$D/busy\" /proc/loadavg", &args) else {
        eprintln!("skipped: cannot create a mount namespace here");
        return;
    };
    ran.expect_code(0);
    let doc = json(&ran.out.stdout);
    assert_eq!(doc["counts"]["deferred"], 2, "{doc}");
    assert!(fx.records().is_empty());
    let ran = in_mount_namespace(&fx, "mount --bind \"$D/idle\" /proc/loadavg", &args).unwrap();
    ran.expect_code(0);
    let doc = json(&ran.out.stdout);
    assert_eq!(doc["counts"]["ok"], 2, "{doc}");
    assert_eq!(doc["delayed_by_pressure"], 0);
}

#[test]
fn url_requests_wait_for_pressure_too() {
    // Nothing listens on this port: a request that were made would fail
    // (exit 1). Held past --max-defer, none is made, and none fails.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let fx = Fixture::with(&["a", "b"]);
    let psi = pressure_dir(&fx, 90.0);
    let url = format!("http://127.0.0.1:{port}/{{}}");
    let mut cmd = util::scatter();
    cmd.args(fx.run_args()).args([
        "--window",
        "400ms",
        "--max-pressure",
        "cpu=60",
        "--pressure-source",
        psi.to_str().unwrap(),
        "--max-defer",
        "200ms",
        "--format",
        "json",
        "--url",
        &url,
    ]);
    let ran = run(cmd, fx.tmp.path());
    ran.expect_code(0);
    let doc = json(&ran.out.stdout);
    assert_eq!(doc["counts"]["deferred"], 2, "{doc}");
}
