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

/// Kills a process group, led by the child it holds, when dropped, so a
/// failing check leaves no busy loop behind.
struct Group(std::process::Child);

impl Drop for Group {
    fn drop(&mut self) {
        util::kill_group(self.0.id() as i32);
        let _ = self.0.wait();
    }
}

/// `some avg10` of /proc/pressure/cpu.
fn cpu_pressure() -> f64 {
    let text = std::fs::read_to_string("/proc/pressure/cpu").expect("PSI in /proc/pressure");
    scatter::pressure::parse_psi(text.as_bytes()).expect("a some avg10 line")
}

#[test]
#[ignore = "slow: real CPU pressure from busy loops"]
fn real_cpu_pressure_holds_starts_until_it_falls() {
    use std::os::unix::process::CommandExt;
    use std::time::Instant;
    const LIMIT: f64 = 40.0;
    let loops = 2 * scatter::platform::online_cpus();
    let busy = std::process::Command::new("sh")
        .args([
            "-c",
            "i=0; while [ $i -lt $1 ]; do (while :; do :; done) & i=$((i+1)); done; wait",
            "sh",
            &loops.to_string(),
        ])
        .process_group(0)
        .spawn()
        .unwrap();
    let busy = Group(busy);
    let began = Instant::now();
    while cpu_pressure() < LIMIT + 20.0 {
        assert!(
            began.elapsed() < Duration::from_secs(90),
            "{loops} busy loops did not raise cpu pressure above {}: {}",
            LIMIT + 20.0,
            cpu_pressure()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!(
        "{loops} busy loops: cpu some avg10 {:.1} % after {:.1}s",
        cpu_pressure(),
        began.elapsed().as_secs_f64()
    );
    let fx = Fixture::with(&["a", "b", "c", "d"]);
    let mut cmd = fx.run(&[
        "--window",
        "2s",
        "--max-pressure",
        &format!("cpu={LIMIT}"),
        "--max-defer",
        "5m",
        "--format",
        "json",
        "--",
    ]);
    cmd.arg(&fx.recorder).arg("{}");
    let child = util::spawn(&mut cmd);
    std::thread::sleep(Duration::from_secs(5));
    assert!(fx.records().is_empty(), "a task started under pressure");
    drop(busy);
    let released = scatter::display::unix_secs(std::time::SystemTime::now());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["counts"]["ok"], 4, "{doc}");
    assert_eq!(doc["delayed_by_pressure"], 4, "{doc}");
    let longest = doc["max_pressure_delay_secs"].as_f64().unwrap();
    assert!(longest > 5.0, "{doc}");
    let starts: Vec<f64> = doc["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["started"].as_f64().unwrap() - released)
        .collect();
    eprintln!(
        "busy loops stopped; the 4 starts followed {:.1}s to {:.1}s later (cpu some avg10 now {:.1} %); longest delay from a slot {longest:.1}s",
        starts.iter().copied().fold(f64::INFINITY, f64::min),
        starts.iter().copied().fold(0.0, f64::max),
        cpu_pressure()
    );
}
