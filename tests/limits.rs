//! Limits scatter must live within without failing a tenant it could have
//! run or panicking: a per-user process limit while it catches up after a
//! stall, a process limit of one, every duration flag at its largest, and
//! state files with numbers no run would write.
//!
//! Tests under a process limit run as a uid of their own (no passwd entry
//! needed), because RLIMIT_NPROC counts every process of the uid: two tests
//! sharing `nobody` while running in parallel would eat each other's budget.

use crate::util;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::{Fixture, run};

fn counts(doc: &serde_json::Value, kind: &str) -> u64 {
    doc["counts"][kind].as_u64().unwrap_or(0)
}

#[test]
fn catching_up_after_a_stall_reaps_between_starts() {
    if !util::privileged("run scatter as a uid of its own under a process limit") {
        return;
    }
    const UID: u32 = 61_101;
    let names: Vec<String> = (0..150).map(|i| format!("t{i:03}")).collect();
    let fx = Fixture::with(&names);
    util::hand_to(&fx, UID);
    // 150 starts over 3 s, but scatter is stopped from 0.3 s to 2.3 s: about
    // 100 starts are then overdue and go out back to back. Each task ends
    // at once; unreaped, their zombies would count against the limit of 60
    // processes and most of the catch-up would fail with EAGAIN.
    let mut cmd = fx.run_wrapped(
        &["prlimit", "--nproc=60", "--"],
        &["--window", "3s", "--format", "json", "--", "true"],
    );
    cmd.uid(UID).gid(UID);
    let child = util::spawn(&mut cmd);
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); stderr:\n{stderr}"));
    assert_eq!(
        (counts(&doc, "ok"), counts(&doc, "failed_to_start")),
        (150, 0),
        "every start succeeds: {}\n{stderr}",
        doc["counts"]
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

#[test]
fn a_process_limit_of_one_fails_every_start_without_a_panic() {
    if !util::privileged("run scatter as a uid of its own under a process limit") {
        return;
    }
    const UID: u32 = 61_102;
    let fx = Fixture::with(&["a", "b", "c"]);
    util::hand_to(&fx, UID);
    // scatter itself is the one process: no thread (state writer) and no
    // task can start.
    let mut cmd = fx.run_wrapped(
        &["prlimit", "--nproc=1", "--"],
        &["--window", "300ms", "--format", "json", "--", "true"],
    );
    cmd.uid(UID).gid(UID);
    let ran = run(&mut cmd, fx.tmp.path());
    ran.expect_code(1).expect_stderr("records no history");
    let doc: serde_json::Value = serde_json::from_str(&ran.stdout()).unwrap();
    ran.check(
        counts(&doc, "failed_to_start") == 3,
        "every instance failed to start",
    );
    let reasons: Vec<&str> = doc["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["reason"].as_str())
        .collect();
    ran.check(
        reasons
            .iter()
            .all(|r| r.contains("Resource temporarily unavailable")),
        "each names EAGAIN",
    );
}

#[test]
fn durations_beyond_a_year_are_refused_with_the_flag_named() {
    let fx = Fixture::with(&["a"]);
    for flag in ["--window", "--timeout", "--kill-after"] {
        let ran = run(
            fx.run(&[flag, "300000000000y", "--", "true"]),
            fx.tmp.path(),
        );
        ran.expect_code(2)
            .expect_stderr(flag)
            .expect_stderr("longest accepted duration");
    }
}

#[test]
fn every_duration_flag_at_its_largest_still_runs_and_stops() {
    let fx = Fixture::with(&["a"]);
    let mut cmd = fx.run(&[
        "--window",
        "1y",
        "--timeout",
        "1y",
        "--kill-after",
        "1y",
        "--",
        "sleep",
        "30",
    ]);
    let mut child = util::spawn(&mut cmd);
    let lock = fx.lock_file("a");
    assert!(util::wait_until(Duration::from_secs(10), || lock.exists()
        && util::is_locked(&lock)));
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    let sent = Instant::now();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    // The task dies of the forwarded SIGTERM; a year's grace never starts.
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(20),
            "scatter did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(143));
}

fn crafted_state(dir: &Path) {
    std::fs::create_dir_all(dir.join("runs")).unwrap();
    std::fs::write(
        dir.join("instances.json"),
        r#"{"format":"scatter-instances/1","instances":{
            "a":{"id":"a","outcome":"failed","exit_code":1,"last_start":-1e300,"last_end":-1e300,
                 "last_duration_secs":1e308,"consecutive_failures":4294967295,"updated":"NaN"},
            "b":{"id":"b","outcome":"ok","last_end":1e300,"last_skip_at":-1,"last_skip_reason":"x"},
            "c":17}}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("runs/20261129T000000.000Z-1.json"),
        r#"{"format":"scatter-run/1","run_id":"r","pid":-1,"started":-1e300,"spread_end":1e300,
            "window_secs":-5,"count":18446744073709551615,"started_count":-3,"state":"running",
            "ended":1e308,"counts":{"ok":-1,"failed":1e300}}"#,
    )
    .unwrap();
}

#[test]
fn status_renders_crafted_state_files_without_a_panic() {
    let fx = Fixture::with(&["a"]);
    crafted_state(&fx.state());
    for format in ["text", "json"] {
        let mut cmd = util::scatter();
        cmd.args(["status", "--name", "instances", "--state-dir"])
            .arg(fx.state())
            .arg("--lock-dir")
            .arg(&fx.locks)
            .args(["--format", format]);
        let ran = run(&mut cmd, fx.tmp.path());
        // a is failing: 1, as a Nagios check would read it.
        ran.expect_code(1).expect_stdout("a");
    }
}

#[test]
fn a_run_merges_into_crafted_state_files_without_a_panic() {
    let fx = Fixture::with(&["a", "b"]);
    crafted_state(&fx.state());
    let ran = run(fx.run(&["--window", "200ms", "--", "false"]), fx.tmp.path());
    ran.expect_code(1);
    let text = std::fs::read_to_string(fx.state().join("instances.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    // The saturated count stays at its limit instead of wrapping to 0.
    assert_eq!(
        doc["instances"]["a"]["consecutive_failures"],
        u32::MAX,
        "{text}"
    );
    assert_eq!(doc["instances"]["b"]["consecutive_failures"], 1, "{text}");
}
