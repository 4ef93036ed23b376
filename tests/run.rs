//! End-to-end tests of `scatter run`: spreading, silence, failure reports,
//! the task's environment and `--only`.

use crate::util;

use std::time::Duration;

use crate::util::{Fixture, run};

#[test]
fn starts_are_spread_in_order_across_the_window() {
    let fx = Fixture::with(&["a", "b", "c", "d", "e"]);
    let ran = run(fx.run_recorded(&["--window", "1s"]), fx.tmp.path());
    ran.expect_code(0).expect_silent();
    let recs = fx.records();
    assert_eq!(recs.len(), 5, "{}", util::listing(fx.tmp.path()));
    for (k, rec) in recs.iter().enumerate() {
        let slot = k as f64 * 0.2;
        let offset = rec.offset();
        // Never early (deadlines are absolute), and not much late even on a
        // loaded machine: the recorder's own start-up is included here.
        assert!(
            offset >= slot - 0.005,
            "slot {k} started early: {offset:.4}s < {slot}s"
        );
        assert!(
            offset < slot + 0.4,
            "slot {k} started late: {offset:.4}s vs {slot}s"
        );
        assert_eq!(rec.argv[0], rec.id);
    }
    let ids: Vec<_> = recs
        .iter()
        .map(|r| r.id.to_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["a", "b", "c", "d", "e"]);
}

#[test]
fn the_task_gets_its_environment() {
    let fx = Fixture::with(&["acme"]);
    run(fx.run_recorded(&["--window", "1s"]), fx.tmp.path()).expect_code(0);
    let rec = &fx.records()[0];
    assert_eq!(rec.id, "acme");
    assert_eq!(rec.dir, fx.instances.join("acme").as_os_str());
    assert_eq!(rec.slot, 0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    assert!((now.as_secs_f64() - rec.window_start).abs() < 60.0);
    // The lock descriptor number is exported and was open in the task.
    assert!(rec.lock_fd.parse::<i32>().unwrap() > 2, "{}", rec.lock_fd);
}

#[test]
fn the_lock_descriptor_is_the_locked_file() {
    let fx = Fixture::with(&["acme"]);
    let mut cmd = fx.run(&["--window", "1s", "--"]);
    cmd.args(["sh", "-c", r#"readlink "/proc/self/fd/$SCATTER_LOCK_FD""#]);
    let ran = run(&mut cmd, fx.tmp.path());
    ran.expect_code(0);
    assert_eq!(ran.stdout().trim(), fx.lock_file("acme").to_str().unwrap());
}

#[test]
fn path_placeholder_and_literal_braces() {
    let fx = Fixture::with(&["acme"]);
    let mut cmd = fx.run(&["--"]);
    cmd.arg(&fx.recorder)
        .args(["{path}", "{{}}", "{print $1}", "x{id}y"]);
    run(&mut cmd, fx.tmp.path()).expect_code(0);
    let rec = &fx.records()[0];
    let want: Vec<std::ffi::OsString> = vec![
        fx.instances.join("acme").into_os_string(),
        "{}".into(),
        "{print $1}".into(),
        "xacmey".into(),
    ];
    assert_eq!(rec.argv, want);
}

#[test]
fn a_failure_is_reported_and_sets_the_exit_code_but_others_run() {
    let fx = Fixture::with(&["a", "b", "c"]);
    let ran = run(
        fx.run_recorded(&["--window", "300ms"])
            .env("REC_FAIL_ID", "b"),
        fx.tmp.path(),
    );
    ran.expect_code(1)
        .expect_stderr("scatter: b: exited with status 3 after")
        .expect_stderr("1 of 3 instances failed (2 ok, 1 failed)");
    assert_eq!(fx.records().len(), 3);
    // One line per failed instance plus the summary: no noise.
    ran.check(
        ran.stderr().lines().count() == 2,
        "exactly two lines on stderr",
    );
}

#[test]
fn a_task_killed_by_a_signal_is_a_failure() {
    let fx = Fixture::with(&["a"]);
    let mut cmd = fx.run(&["--"]);
    cmd.args(["sh", "-c", "kill -9 $$"]);
    run(&mut cmd, fx.tmp.path())
        .expect_code(1)
        .expect_stderr("a: killed by SIGKILL");
}

#[test]
fn an_empty_instances_dir_does_nothing_quietly() {
    let fx = Fixture::new();
    run(fx.run_recorded(&[]), fx.tmp.path())
        .expect_code(0)
        .expect_silent();
}

#[test]
fn options_can_come_from_the_environment() {
    let fx = Fixture::with(&["a", "b"]);
    let mut cmd = util::scatter();
    cmd.args(["run", "--dry-run", "--", "true"])
        .env("SCATTER_INSTANCES", &fx.instances)
        .env("SCATTER_LOCK_DIR", &fx.locks)
        .env("SCATTER_WINDOW", "10s")
        .env("SCATTER_NAME", "job")
        .env("SCATTER_FORMAT", "json");
    let ran = run(&mut cmd, fx.tmp.path());
    ran.expect_code(0)
        .expect_stdout("\"window_secs\":10.0")
        .expect_stdout("\"name\":\"job\"");
}

#[test]
fn only_runs_the_named_instances_at_once() {
    let fx = Fixture::with(&["a", "b", "c"]);
    // A 60 s window would spread these 20 s apart; --only starts both now.
    let started = std::time::Instant::now();
    let ran = run(
        fx.run_recorded(&["--window", "60s", "--only", "c", "--only", "a"]),
        fx.tmp.path(),
    );
    ran.expect_code(0);
    assert!(started.elapsed() < Duration::from_secs(10));
    let ids: Vec<_> = fx.records().iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids, ["c", "a"]);
}

#[test]
fn only_with_one_id_passes_the_task_exit_code_through() {
    let fx = Fixture::with(&["a"]);
    let mut cmd = fx.run(&["--only", "a", "--"]);
    cmd.args(["sh", "-c", "echo out; echo err >&2; exit 42"]);
    let ran = run(&mut cmd, fx.tmp.path());
    ran.expect_code(42)
        .expect_stdout("out")
        .expect_stderr("err");
}

#[test]
fn only_with_several_ids_uses_the_summary_code() {
    let fx = Fixture::with(&["a", "b"]);
    let mut cmd = fx.run(&["--only", "a", "--only", "b", "--"]);
    cmd.args(["sh", "-c", "exit 42"]);
    run(&mut cmd, fx.tmp.path()).expect_code(1);
}

#[test]
fn only_rejects_an_unknown_id_before_running_anything() {
    let fx = Fixture::with(&["a"]);
    let ran = run(
        fx.run_recorded(&["--only", "a", "--only", "nope"]),
        fx.tmp.path(),
    );
    ran.expect_code(2)
        .expect_stderr("nope")
        .expect_stderr("hint:");
    assert!(fx.records().is_empty(), "nothing may run");
}

#[test]
fn only_with_a_missing_command_path_exits_127() {
    let fx = Fixture::with(&["a"]);
    let mut cmd = fx.run(&["--only", "a", "--"]);
    cmd.args(["{path}/no-such-program"]);
    run(&mut cmd, fx.tmp.path())
        .expect_code(127)
        .expect_stderr("failed to start");
}

#[test]
fn json_report_accounts_for_every_instance() {
    let fx = Fixture::with(&["a", "b", "c"]);
    let ran = run(
        fx.run_recorded(&["--window", "300ms", "--format", "json"])
            .env("REC_FAIL_ID", "c"),
        fx.tmp.path(),
    );
    ran.expect_code(1);
    let doc: serde_json::Value = serde_json::from_str(&ran.stdout()).expect("JSON report");
    assert_eq!(doc["count"], 3);
    assert_eq!(doc["counts"]["ok"], 2);
    assert_eq!(doc["counts"]["failed"], 1);
    let outcomes: Vec<_> = doc["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_string(),
                i["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("a".into(), "ok".into()),
            ("b".into(), "ok".into()),
            ("c".into(), "failed".into())
        ]
    );
    assert_eq!(doc["instances"][2]["exit_code"], 3);
}

#[test]
fn the_report_says_what_scatter_itself_cost() {
    let fx = Fixture::with(&["a", "b", "c"]);
    let ran = run(
        fx.run(&["--window", "300ms", "--format", "json", "-v", "--", "true"]),
        fx.tmp.path(),
    );
    ran.expect_code(0)
        .expect_stderr("scatter's own CPU: ")
        .expect_stderr(" per start");
    let doc: serde_json::Value = serde_json::from_str(&ran.stdout()).unwrap();
    let user = doc["own_cpu_user_secs"].as_f64();
    let sys = doc["own_cpu_sys_secs"].as_f64();
    ran.check(
        user.is_some_and(|u| (0.0..5.0).contains(&u))
            && sys.is_some_and(|s| (0.0..5.0).contains(&s)),
        "own CPU figures in the JSON report",
    );
    // Its own, not its tasks': a task burning CPU does not show in it.
    let ran = run(
        fx.run(&[
            "--window",
            "100ms",
            "--format",
            "json",
            "--only",
            "a",
            "--",
            "sh",
            "-c",
            "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done",
        ]),
        fx.tmp.path(),
    );
    ran.expect_code(0);
    let doc: serde_json::Value = serde_json::from_str(&ran.stdout()).unwrap();
    let own = util::own_cpu(&doc);
    let task = doc["instances"][0]["cpu_user_secs"].as_f64().unwrap()
        + doc["instances"][0]["cpu_sys_secs"].as_f64().unwrap();
    ran.check(
        task > 0.05 && own < task,
        "scatter's own CPU excludes the task's",
    );
}

#[test]
fn scatter_sleeps_between_starts() {
    let fx = Fixture::with(&["a", "b", "c", "d"]);
    let ran = run(
        fx.run(&["--window", "2s", "--format", "json", "--", "true"]),
        fx.tmp.path(),
    );
    ran.expect_code(0);
    let doc: serde_json::Value = serde_json::from_str(&ran.stdout()).unwrap();
    let own = util::own_cpu(&doc);
    // Sleeping, it needs a few milliseconds; polling in a loop, most of the
    // 2 s.
    ran.check(
        own < 0.4,
        &format!("scatter's own CPU {own:.3} s over a 2 s window"),
    );
}
