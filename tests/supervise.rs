//! End-to-end tests of supervision: timeouts that kill the whole process
//! group, stop signals, the concurrency cap, output modes, `--detach` and
//! reclaiming a hung task whose scatter died.

use crate::util;

use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::{Fixture, is_locked, run, wait_until};

/// The pid (= process group) recorded in an instance's lock file.
fn holder_pid(lock: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(lock).ok()?;
    text.split(' ')
        .find_map(|w| w.strip_prefix("pid="))?
        .parse()
        .ok()
}

/// Whether any process of the group is still running. Zombies do not
/// count: they have exited and closed their descriptors, and only wait for
/// init to reap them.
fn group_alive(pgid: i32) -> bool {
    util::live_group_members(pgid) > 0
}

fn signal(child: &std::process::Child, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, sig).unwrap();
}

/// Waits for a child with a limit, killing it if it overstays.
fn wait_child(child: &mut std::process::Child, limit: Duration) -> std::process::Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("scatter did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = std::process::Output {
        status: child.wait().unwrap(),
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut out.stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut out.stderr)
        .unwrap();
    out
}

#[test]
fn a_timeout_kills_the_whole_group_including_background_children() {
    let fx = Fixture::with(&["a"]);
    let started = Instant::now();
    let mut cmd = fx.run(&["--only", "a", "--timeout", "1s", "--kill-after", "1s", "--"]);
    cmd.args(["sh", "-c", "sleep 60 & sleep 60"]);
    let ran = run(&mut cmd, fx.tmp.path());
    ran.expect_code(124).expect_stderr("a: timed out after");
    assert!(started.elapsed() < Duration::from_secs(20));
    let pgid = holder_pid(&fx.lock_file("a")).expect("holder record");
    assert!(!group_alive(pgid), "a process of the task's group survived");
    assert!(!is_locked(&fx.lock_file("a")), "the lock is free again");
}

#[test]
fn a_task_that_ignores_sigterm_gets_sigkill_after_the_grace_period() {
    let fx = Fixture::with(&["a", "b"]);
    let started = Instant::now();
    let mut cmd = fx.run(&[
        "--window",
        "200ms",
        "--timeout",
        "1s",
        "--kill-after",
        "1s",
        "--",
    ]);
    cmd.args(["sh", "-c", "trap '' TERM; sleep 60 & sleep 60"]);
    let ran = run(&mut cmd, fx.tmp.path());
    ran.expect_code(1)
        .expect_stderr("a: timed out after")
        .expect_stderr("b: timed out after")
        .expect_stderr("2 of 2 instances failed (2 timed out)");
    assert!(started.elapsed() < Duration::from_secs(20));
    for id in ["a", "b"] {
        let pgid = holder_pid(&fx.lock_file(id)).unwrap();
        assert!(!group_alive(pgid), "{id}: a process survived SIGKILL");
        assert!(!is_locked(&fx.lock_file(id)));
    }
}

#[test]
fn kill_after_zero_kills_at_once() {
    let fx = Fixture::with(&["a"]);
    let started = Instant::now();
    let mut cmd = fx.run(&[
        "--only",
        "a",
        "--timeout",
        "500ms",
        "--kill-after",
        "0s",
        "--",
    ]);
    cmd.args(["sh", "-c", "trap '' TERM; sleep 60"]);
    run(&mut cmd, fx.tmp.path()).expect_code(124);
    assert!(started.elapsed() < Duration::from_secs(10));
}

fn stop_with(sig: rustix::process::Signal, code: i32) {
    let fx = Fixture::with(&["a", "b", "c"]);
    // Slots at 0 s, 4 s and 8 s: the signal arrives after the second start.
    let mut child = util::spawn(
        fx.run_recorded(&["--window", "12s", "--kill-after", "2s"])
            .env("REC_SLEEP", "60"),
    );
    fx.wait_for_records(2, Duration::from_secs(15));
    signal(&child, sig);
    let out = wait_child(&mut child, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    assert!(stderr.contains("1 not started"), "{stderr}");
    assert!(stderr.contains("scatter: stopped by"), "{stderr}");
    let recs = fx.records();
    assert_eq!(recs.len(), 2);
    for rec in recs {
        assert!(!group_alive(rec.pid), "task {:?} survived the stop", rec.id);
    }
}

#[test]
fn sigterm_stops_starting_forwards_and_exits_143() {
    stop_with(rustix::process::Signal::TERM, 143);
}

#[test]
fn sigint_stops_starting_forwards_and_exits_130() {
    stop_with(rustix::process::Signal::INT, 130);
}

#[test]
fn a_second_signal_kills_at_once() {
    let fx = Fixture::with(&["a"]);
    let mut cmd = fx.run(&["--only", "a", "--kill-after", "60s", "--"]);
    cmd.args(["sh", "-c", "trap '' TERM INT; echo started; sleep 60"]);
    let mut child = util::spawn(&mut cmd);
    assert!(wait_until(Duration::from_secs(10), || holder_pid(
        &fx.lock_file("a")
    )
    .is_some()));
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    signal(&child, rustix::process::Signal::TERM);
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, rustix::process::Signal::TERM);
    let out = wait_child(&mut child, Duration::from_secs(15));
    assert_eq!(out.status.code(), Some(143));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the second signal must not wait 60 s"
    );
    assert!(!group_alive(holder_pid(&fx.lock_file("a")).unwrap()));
}

#[test]
fn the_concurrency_cap_is_never_exceeded() {
    let names: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
    let fx = Fixture::with(&names);
    let ran = run(
        fx.run_recorded(&[
            "--window",
            "400ms",
            "--max-concurrent",
            "2",
            "--format",
            "json",
        ])
        .env("REC_SLEEP", "0.4"),
        fx.tmp.path(),
    );
    ran.expect_code(0);
    let recs = fx.records();
    assert_eq!(recs.len(), 8, "every instance still runs");
    let mut events: Vec<(u128, i32)> = Vec::new();
    for r in &recs {
        events.push((r.start_ns.unwrap(), 1));
        events.push((r.end_ns.unwrap(), -1));
    }
    // Ends sort before starts at the same instant.
    events.sort();
    let (mut live, mut peak) = (0, 0);
    for (_, delta) in events {
        live += delta;
        peak = peak.max(live);
    }
    assert!(peak <= 2, "{peak} tasks overlapped with --max-concurrent 2");
    let doc: serde_json::Value = serde_json::from_str(&ran.stdout()).unwrap();
    assert!(doc["delayed_by_cap"].as_u64().unwrap() > 0, "{doc}");
    // Starts still follow the plan order: scatter's own start times (the
    // tasks' clocks may see two near-simultaneous starts swapped).
    let started: Vec<f64> = doc["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["started"].as_f64().unwrap())
        .collect();
    assert!(started.windows(2).all(|w| w[0] <= w[1]), "{started:?}");
}

#[test]
fn tagged_output_keeps_lines_whole_and_labelled() {
    let names = ["alpha", "beta", "gamma", "two words"];
    let fx = Fixture::with(&names);
    let script = r#"i=0
while [ $i -lt 300 ]; do
  printf '%s line ' "$1"; printf '%s\n' "$i"
  i=$((i+1))
done
printf '%s last' "$1""#;
    let mut cmd = fx.run(&["--window", "50ms", "--output", "tag", "--"]);
    cmd.args(["sh", "-c", script, "sh", "{}"]);
    let ran = run(&mut cmd, fx.tmp.path());
    ran.expect_code(0);
    let out = ran.stdout();
    let mut counts = std::collections::HashMap::new();
    for line in out.lines() {
        let (tag, rest) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("untagged line {line:?}"));
        let id = if tag == "$'two words'" {
            "two words"
        } else {
            tag
        };
        assert!(names.contains(&id), "unknown tag in {line:?}");
        assert!(
            rest == format!("{id} last") || rest.starts_with(&format!("{id} line ")),
            "mixed line {line:?}"
        );
        *counts.entry(id).or_insert(0) += 1;
    }
    for id in names {
        assert_eq!(counts.get(id), Some(&301), "lines of {id}");
    }
    assert!(out.ends_with('\n'), "the last line gets a newline");
}

#[test]
fn tagged_output_does_not_wait_for_a_background_child_holding_the_pipe() {
    let fx = Fixture::with(&["a"]);
    let started = Instant::now();
    let mut cmd = fx.run(&["--output", "tag", "--kill-after", "1s", "--"]);
    cmd.args(["sh", "-c", "echo hello; sleep 30 & exit 0"]);
    let ran = run(&mut cmd, fx.tmp.path());
    ran.expect_code(0).expect_stdout("a: hello\n");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "waited for the background child"
    );
    if let Some(pgid) = holder_pid(&fx.lock_file("a")) {
        util::kill_group(pgid);
    }
}

#[test]
fn output_dir_writes_one_log_per_instance() {
    let fx = Fixture::with(&["a", "b c"]);
    let logs = fx.tmp.path().join("logs");
    let mode = format!("dir={}", logs.display());
    let mut cmd = fx.run(&["--window", "100ms", "--output", &mode, "--"]);
    cmd.args(["sh", "-c", "echo out $1; echo err $1 >&2", "sh", "{}"]);
    run(&mut cmd, fx.tmp.path()).expect_code(0).expect_silent();
    assert_eq!(
        std::fs::read_to_string(logs.join("a.log")).unwrap(),
        "out a\nerr a\n"
    );
    assert_eq!(
        std::fs::read_to_string(logs.join("b%20c.log")).unwrap(),
        "out b c\nerr b c\n"
    );
    // The next run replaces the log.
    let mut cmd = fx.run(&["--only", "a", "--output", &mode, "--"]);
    cmd.args(["sh", "-c", "echo again"]);
    run(&mut cmd, fx.tmp.path()).expect_code(0);
    assert_eq!(
        std::fs::read_to_string(logs.join("a.log")).unwrap(),
        "again\n"
    );
}

#[test]
fn output_on_failure_shows_only_failed_tasks() {
    let fx = Fixture::with(&["good", "bad"]);
    let mut cmd = fx.run(&["--window", "100ms", "--output", "on-failure", "--"]);
    cmd.args([
        "sh",
        "-c",
        r#"echo "noise from $1"; [ "$1" = good ]"#,
        "sh",
        "{}",
    ]);
    let ran = run(&mut cmd, fx.tmp.path());
    ran.expect_code(1).expect_stdout("bad: noise from bad\n");
    ran.check(
        !ran.stdout().contains("noise from good"),
        "a successful task's output must be hidden",
    );
}

#[test]
fn output_null_discards() {
    let fx = Fixture::with(&["a"]);
    let mut cmd = fx.run(&["--output", "null", "--"]);
    cmd.args(["sh", "-c", "echo out; echo err >&2"]);
    run(&mut cmd, fx.tmp.path()).expect_code(0).expect_silent();
}

#[test]
fn detach_returns_after_the_last_start_and_tasks_keep_their_locks() {
    let fx = Fixture::with(&["a", "b"]);
    let started = Instant::now();
    let ran = run(
        // Inherited stdout would be held open by the tasks, and the test
        // harness (like cron) reads it to the end.
        fx.run_recorded(&["--window", "200ms", "--detach", "--output", "null"])
            .env("REC_SLEEP", "3"),
        fx.tmp.path(),
    );
    ran.expect_code(0).expect_silent();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "--detach must not wait for the tasks"
    );
    assert!(is_locked(&fx.lock_file("a")) && is_locked(&fx.lock_file("b")));
    assert!(wait_until(Duration::from_secs(15), || !is_locked(
        &fx.lock_file("a")
    ) && !is_locked(
        &fx.lock_file("b")
    )));
}

#[test]
fn detach_cannot_relay_output() {
    let fx = Fixture::with(&["a"]);
    run(
        fx.run(&["--detach", "--output", "tag", "--", "true"]),
        fx.tmp.path(),
    )
    .expect_code(2)
    .expect_stderr("--detach cannot be combined");
}

#[test]
fn a_hung_task_of_a_killed_scatter_is_reclaimed_by_a_later_run() {
    let fx = Fixture::with(&["a"]);
    let lock = fx.lock_file("a");
    let mut first = fx.run(&["--only", "a", "--timeout", "1s", "--kill-after", "1s", "--"]);
    first.args(["sh", "-c", "trap '' TERM; sleep 60 & sleep 60"]);
    let mut first = util::spawn(&mut first);
    assert!(wait_until(Duration::from_secs(10), || holder_pid(&lock).is_some()));
    first.kill().unwrap(); // SIGKILL: nobody enforces the timeout any more
    first.wait().unwrap();
    let pgid = holder_pid(&lock).unwrap();
    assert!(group_alive(pgid) && is_locked(&lock));

    // Within timeout + grace the holder is left alone.
    run(fx.run(&["--only", "a", "--", "true"]), fx.tmp.path()).expect_code(75);
    assert!(group_alive(pgid));

    std::thread::sleep(Duration::from_millis(2500));
    let ran = run(
        fx.run(&["--only", "a", "--kill-after", "1s", "--", "true"]),
        fx.tmp.path(),
    );
    ran.expect_code(75)
        .expect_stderr("past its 1s timeout")
        .expect_stderr("skipped: killed a hung holder");
    assert!(
        wait_until(Duration::from_secs(5), || !group_alive(pgid)),
        "the hung group (ignoring SIGTERM) was SIGKILLed"
    );
    assert!(!is_locked(&lock));
    run(fx.run(&["--only", "a", "--", "true"]), fx.tmp.path()).expect_code(0);
}

#[test]
fn a_hung_group_whose_leader_exited_is_found_through_proc() {
    let fx = Fixture::with(&["a"]);
    let lock = fx.lock_file("a");
    // The leader exits at once; its background child keeps the lock.
    let mut cmd = fx.run(&[
        "--only",
        "a",
        "--timeout",
        "1s",
        "--kill-after",
        "0s",
        "--output",
        "null",
        "--",
    ]);
    cmd.args(["sh", "-c", "sleep 60 & exit 0"]);
    run(&mut cmd, fx.tmp.path()).expect_code(0);
    let pgid = holder_pid(&lock).unwrap();
    assert!(is_locked(&lock) && group_alive(pgid));
    std::thread::sleep(Duration::from_millis(1500));
    run(
        fx.run(&["--only", "a", "--kill-after", "1s", "--", "true"]),
        fx.tmp.path(),
    )
    .expect_code(75)
    .expect_stderr("killed a hung holder");
    assert!(wait_until(Duration::from_secs(5), || !group_alive(pgid)));
    assert!(!is_locked(&lock));
}
