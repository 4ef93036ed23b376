//! What each tenant costs, end to end: CPU time and peak memory from
//! `wait4` in the JSON report, the instance records, the metrics and
//! `scatter status --sort`; and `--nice`/`--ionice`, which reach each task
//! and never scatter.

use crate::util;

use std::os::unix::process::CommandExt;
use std::time::Duration;

use crate::util::{Fixture, run};

/// Burns 0.6 s of CPU time in user mode and holds 64 MiB it has written.
const BURN: &str = r#"
import time
block = b"x" * (64 << 20)
start = time.process_time()
while time.process_time() - start < 0.6:
    for _ in range(100000):
        pass
"#;

fn json(out: &[u8]) -> serde_json::Value {
    serde_json::from_slice(out).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(out)))
}

#[test]
fn a_tasks_cpu_time_and_peak_memory_are_reported_recorded_and_ranked() {
    let fx = Fixture::with(&["burn", "idle"]);
    let metrics = fx.tmp.path().join("scatter.prom");
    let mut cmd = fx.run(&[
        "--window",
        "200ms",
        "--format",
        "json",
        "--metrics-file",
        metrics.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        r#"if [ "$1" = burn ]; then exec python3 -c "$2"; fi"#,
        "sh",
        "{}",
        BURN,
    ]);
    let ran = run(&mut cmd, fx.tmp.path());
    ran.expect_code(0);
    let doc = json(&ran.out.stdout);
    let burn = &doc["instances"][0];
    let idle = &doc["instances"][1];
    let user = burn["cpu_user_secs"].as_f64().unwrap();
    let sys = burn["cpu_sys_secs"].as_f64().unwrap();
    let rss = burn["max_rss_kib"].as_u64().unwrap();
    assert!(user + sys >= 0.6, "{burn}");
    // Mostly in user mode: the clock is read once per 100,000 rounds.
    assert!(user >= 0.45 && user + sys < 5.0, "{burn}");
    assert!(
        (64 << 10..=(64 << 10) + (200 << 10)).contains(&rss),
        "{burn}"
    );
    assert!(idle["cpu_user_secs"].as_f64().unwrap() < 0.3, "{idle}");
    assert!(idle["max_rss_kib"].as_u64().unwrap() < 64 << 10, "{idle}");

    // The instance records keep the last value and the average; with one
    // run, they are the same.
    let records: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fx.state().join("instances.json")).unwrap()).unwrap();
    let rec = &records["instances"]["burn"];
    assert_eq!(rec["last_max_rss_kib"].as_u64(), Some(rss), "{rec}");
    assert_eq!(rec["avg_max_rss_kib"].as_f64(), Some(rss as f64), "{rec}");
    assert_eq!(rec["last_cpu_user_secs"].as_f64(), Some(user), "{rec}");

    // The metrics, in bytes and seconds.
    let prom = std::fs::read_to_string(&metrics).unwrap();
    let line = format!(
        "scatter_instance_last_max_rss_bytes{{scatter_name=\"instances\",instance_id=\"burn\"}} {}\n",
        rss * 1024
    );
    assert!(prom.contains(&line), "{line} in {prom}");
    assert!(
        prom.contains("scatter_instance_last_cpu_seconds{scatter_name=\"instances\",instance_id=\"burn\",mode=\"user\"}"),
        "{prom}"
    );

    // scatter status --sort cpu --top 1: the costly tenant, with figures.
    let shown = run(fx.status(&["--sort", "cpu", "--top", "1"]), fx.tmp.path());
    shown
        .expect_code(0)
        .expect_stdout("Instances by the CPU time of their last task (1 of 2)")
        .expect_stdout("burn  cpu ");
    assert!(!shown.stdout().contains("idle"), "{}", shown.stdout());
    let shown = run(
        fx.status(&["--sort", "rss", "--format", "json"]),
        fx.tmp.path(),
    );
    let doc = json(&shown.out.stdout);
    assert_eq!(doc["sort"], "rss");
    assert_eq!(doc["instances"][0]["id"], "burn");
    assert_eq!(doc["instances"][0]["last_max_rss_kib"].as_u64(), Some(rss));
}

/// A task that polls its own nice value and I/O priority for up to 1 s,
/// until both are what the test asked for, and writes what it saw last.
const POLL: &str = r#"
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
ioprio_get, want_nice, want_io = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
seen = None
deadline = time.monotonic() + 1.0
while time.monotonic() < deadline:
    seen = (os.getpriority(os.PRIO_PROCESS, 0), libc.syscall(ioprio_get, 1, 0))
    if seen == (want_nice, want_io):
        break
    time.sleep(0.005)
with open(os.path.join(os.environ["REC_DIR"], os.environ["SCATTER_INSTANCE"] + ".prio"), "w") as f:
    f.write("%d %d" % seen)
time.sleep(0.5)
"#;

#[test]
fn nice_and_ionice_reach_each_task_and_never_scatter() {
    let fx = Fixture::with(&["a", "b"]);
    let idle = 3 << 13;
    let mut cmd = fx.run(&[
        "--window", "600ms", "--nice", "7", "--ionice", "idle", "--", "python3", "-c", POLL,
    ]);
    cmd.args([
        libc::SYS_ioprio_get.to_string(),
        "7".into(),
        idle.to_string(),
    ]);
    let child = util::spawn(&mut cmd);
    let scatter_pid = child.id() as i32;
    // scatter inherits the test's own priorities, and must keep them.
    let ours = (
        scatter::platform::nice_of(0).unwrap(),
        scatter::platform::io_priority_of(0).unwrap(),
    );
    let mut theirs = Vec::new();
    util::wait_until(Duration::from_secs(10), || {
        if let (Ok(nice), Ok(io)) = (
            scatter::platform::nice_of(scatter_pid),
            scatter::platform::io_priority_of(scatter_pid),
        ) {
            theirs.push((nice, io));
        }
        fx.rec.join("b.prio").exists()
    });
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    for id in ["a", "b"] {
        let seen = std::fs::read_to_string(fx.rec.join(format!("{id}.prio"))).unwrap();
        assert_eq!(seen, format!("7 {idle}"), "task {id}");
    }
    assert!(!theirs.is_empty());
    assert!(
        theirs.iter().all(|p| *p == ours),
        "scatter's own priority changed: {theirs:?}, was {ours:?}"
    );
}

#[test]
fn a_refused_priority_is_reported_once_and_the_tasks_still_run() {
    if !util::privileged("run scatter as another user") {
        return;
    }
    let fx = Fixture::with(&["a", "b", "c"]);
    util::hand_to(&fx, util::NOBODY);
    let mut cmd = fx.run(&[
        "--window",
        "300ms",
        "--nice",
        "-5",
        "--ionice",
        "realtime:0",
        "--",
    ]);
    cmd.arg(&fx.recorder)
        .arg("{}")
        .uid(util::NOBODY)
        .gid(util::NOBODY);
    let ran = run(&mut cmd, fx.tmp.path());
    ran.expect_code(0)
        .expect_stderr("cannot apply --nice -5 to the tasks: ")
        .expect_stderr("needs root")
        .expect_stderr("cannot apply --ionice realtime:0 to the tasks: ");
    assert_eq!(ran.stderr().matches("cannot apply --nice").count(), 1);
    assert_eq!(ran.stderr().matches("cannot apply --ionice").count(), 1);
    assert_eq!(fx.records().len(), 3);
}

#[test]
fn tasks_that_exit_before_their_priority_is_set_are_no_error() {
    let names: Vec<String> = (0..30).map(|i| format!("t{i:02}")).collect();
    let fx = Fixture::with(&names);
    let cmd = fx.run(&[
        "--window",
        "150ms",
        "--nice",
        "5",
        "--ionice",
        "best-effort:7",
        "--",
        "true",
    ]);
    run(cmd, fx.tmp.path()).expect_code(0).expect_silent();
}

#[test]
fn priorities_are_refused_with_url() {
    let fx = Fixture::with(&["a"]);
    for flag in [["--nice", "5"], ["--ionice", "idle"]] {
        let mut cmd = util::scatter();
        cmd.args(fx.run_args())
            .args(flag)
            .args(["--url", "http://127.0.0.1:9/{}"]);
        run(cmd, fx.tmp.path())
            .expect_code(2)
            .expect_stderr(&format!("{} cannot be combined with --url", flag[0]))
            .expect_stderr("hint: ");
    }
}
