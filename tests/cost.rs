//! What each tenant costs, end to end: CPU time and peak memory from
//! `wait4` in the JSON report, the instance records, the metrics and
//! `scatter status --sort`.

use crate::util;

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
    let mut status = util::scatter();
    status
        .args([
            "status",
            "--name",
            "instances",
            "--sort",
            "cpu",
            "--top",
            "1",
            "--state-dir",
        ])
        .arg(fx.state());
    let shown = run(status, fx.tmp.path());
    shown
        .expect_code(0)
        .expect_stdout("Instances by the CPU time of their last task (1 of 2)")
        .expect_stdout("burn  cpu ");
    assert!(!shown.stdout().contains("idle"), "{}", shown.stdout());
    let mut status = util::scatter();
    status
        .args([
            "status",
            "--name",
            "instances",
            "--sort",
            "rss",
            "--format",
            "json",
            "--state-dir",
        ])
        .arg(fx.state());
    let shown = run(status, fx.tmp.path());
    let doc = json(&shown.out.stdout);
    assert_eq!(doc["sort"], "rss");
    assert_eq!(doc["instances"][0]["id"], "burn");
    assert_eq!(doc["instances"][0]["last_max_rss_kib"].as_u64(), Some(rss));
}
