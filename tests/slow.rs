//! Longer supervision checks with wide timing margins. They are ignored by
//! default; run them with `cargo test --release --test slow -- --ignored`.

// Shared with the fast suite, of which these use only a part.
#[allow(dead_code)]
mod util;

use std::time::Duration;

use util::{Fixture, run};

#[test]
#[ignore = "slow: a few hundred tasks"]
fn cap_holds_and_every_instance_is_accounted_for_under_load() {
    let names: Vec<String> = (0..300).map(|i| format!("t{i:03}")).collect();
    let fx = Fixture::with(&names);
    let mut cmd = fx.run(&[
        "--window",
        "2s",
        "--max-concurrent",
        "16",
        "--format",
        "json",
        "--",
    ]);
    cmd.arg(&fx.recorder).arg("{}").env("REC_SLEEP", "0.2");
    let ran = run(&mut cmd, fx.tmp.path());
    ran.expect_code(0);
    let recs = fx.records();
    assert_eq!(recs.len(), 300);
    let mut events: Vec<(u128, i32)> = recs
        .iter()
        .flat_map(|r| [(r.start_ns.unwrap(), 1), (r.end_ns.unwrap(), -1)])
        .collect();
    events.sort();
    let mut live = 0;
    for (_, d) in events {
        live += d;
        assert!(
            live <= 16,
            "{live} tasks overlapped with --max-concurrent 16"
        );
    }
    let doc: serde_json::Value = serde_json::from_str(&ran.stdout()).unwrap();
    assert_eq!(doc["counts"]["ok"], 300);
}

#[test]
#[ignore = "slow: repeated runs stopped at random moments"]
fn stopped_runs_account_for_every_instance_and_leave_nothing_behind() {
    let names: Vec<String> = (0..60).map(|i| format!("t{i:02}")).collect();
    let fx = Fixture::with(&names);
    for round in 0..10u64 {
        let mut cmd = fx.run(&[
            "--window",
            "1s",
            "--kill-after",
            "500ms",
            "--format",
            "json",
            "--",
        ]);
        cmd.args(["sh", "-c", "trap '' TERM; sleep 5"]);
        let child = util::spawn(&mut cmd);
        std::thread::sleep(Duration::from_millis(100 + round * 80));
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(143), "round {round}");
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let counts = &doc["counts"];
        let total: u64 = counts
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(total, 60, "round {round}: {counts}");
        assert!(
            counts["not_started"].as_u64().unwrap() > 0,
            "round {round}: {counts}"
        );
        for lock in std::fs::read_dir(fx.locks.join("instances")).unwrap() {
            assert!(
                !util::is_locked(&lock.unwrap().path()),
                "round {round}: a task survived"
            );
        }
    }
}
