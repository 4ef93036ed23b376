//! Observability end to end: state records, `scatter status`, the metrics
//! file (checked with Prometheus' own Python parser), and the syslog and
//! journald sinks (checked against sockets the tests own).

use crate::util;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

use crate::util::{Fixture, run, scatter, wait_until};

fn state(fx: &Fixture) -> std::path::PathBuf {
    fx.state()
}

/// `scatter run` (the fixture keeps its state directory inside it).
fn run_with_state(fx: &Fixture, args: &[&str]) -> std::process::Command {
    fx.run(args)
}

fn instances_json(fx: &Fixture) -> serde_json::Value {
    let text = std::fs::read_to_string(state(fx).join("instances.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn records_track_outcomes_and_consecutive_failures() {
    let fx = Fixture::with(&["good", "bad", "new\nline"]);
    let task = ["sh", "-c", r#"[ "$1" != bad ]"#, "sh", "{}"];
    for _ in 0..3 {
        let mut cmd = run_with_state(&fx, &["--window", "100ms", "--"]);
        cmd.args(task);
        run(&mut cmd, fx.tmp.path()).expect_code(1);
    }
    let doc = instances_json(&fx);
    assert_eq!(doc["format"], "scatter-instances/1");
    let bad = &doc["instances"]["bad"];
    assert_eq!(bad["outcome"], "failed");
    assert_eq!(bad["exit_code"], 1);
    assert_eq!(bad["consecutive_failures"], 3);
    assert_eq!(bad["trigger"], "cron");
    assert!(bad["last_success"].is_null());
    let good = &doc["instances"]["good"];
    assert_eq!(good["outcome"], "ok");
    assert_eq!(good["consecutive_failures"], 0);
    assert!(good["last_success"].as_f64().unwrap() > 1e9);
    assert!(good["last_duration_secs"].as_f64().is_some());
    // Keyed by the encoded id, with the id itself inside.
    assert_eq!(doc["instances"]["new%0Aline"]["id"], "new\nline");

    // A manual success resets the count and says who triggered it.
    let mut cmd = run_with_state(&fx, &["--only", "bad", "--", "true"]);
    run(&mut cmd, fx.tmp.path()).expect_code(0);
    let bad = &instances_json(&fx)["instances"]["bad"];
    assert_eq!(bad["consecutive_failures"], 0);
    assert_eq!(bad["trigger"], "manual");
}

#[test]
fn run_records_are_written_and_pruned() {
    let fx = Fixture::with(&["a", "b"]);
    for _ in 0..4 {
        let mut cmd = run_with_state(&fx, &["--window", "50ms", "--keep-runs", "2", "--", "true"]);
        run(&mut cmd, fx.tmp.path()).expect_code(0);
        std::thread::sleep(Duration::from_millis(5));
    }
    let runs: Vec<_> = std::fs::read_dir(state(&fx).join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&runs[0]).unwrap()).unwrap();
    assert_eq!(run["format"], "scatter-run/1");
    assert_eq!(run["state"], "finished");
    assert_eq!(run["count"], 2);
    assert_eq!(run["started_count"], 2);
    assert_eq!(run["finished_count"], 2);
    assert_eq!(run["running"], 0);
    assert_eq!(run["counts"]["ok"], 2);
    assert_eq!(run["exit_code"], 0);
    assert!(run["spread_end"].as_f64().unwrap() >= run["started"].as_f64().unwrap());
}

#[test]
fn instances_that_disappear_are_forgotten_after_a_full_run() {
    let fx = Fixture::with(&["a", "b"]);
    run(
        run_with_state(&fx, &["--window", "50ms", "--", "true"]),
        fx.tmp.path(),
    )
    .expect_code(0);
    std::fs::remove_dir(fx.instances.join("b")).unwrap();
    run(
        run_with_state(&fx, &["--window", "50ms", "--", "true"]),
        fx.tmp.path(),
    )
    .expect_code(0);
    let doc = instances_json(&fx);
    let keys: Vec<_> = doc["instances"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys, ["a"]);
}

#[test]
fn overlapping_runs_do_not_lose_each_others_records() {
    let fx = Fixture::with(&["a", "b"]);
    let mut slow = run_with_state(&fx, &["--only", "a", "--"]);
    slow.args(["sleep", "1"]);
    let slow = util::spawn(&mut slow);
    std::thread::sleep(Duration::from_millis(200));
    run(
        run_with_state(&fx, &["--only", "b", "--", "true"]),
        fx.tmp.path(),
    )
    .expect_code(0);
    assert!(slow.wait_with_output().unwrap().status.success());
    let doc = instances_json(&fx);
    assert_eq!(doc["instances"]["a"]["outcome"], "ok");
    assert_eq!(doc["instances"]["b"]["outcome"], "ok");
}

#[test]
fn status_shows_runs_in_progress_running_tasks_and_failures() {
    let fx = Fixture::with(&["a", "b", "c"]);
    let mut first = run_with_state(&fx, &["--window", "100ms", "--"]);
    first.args(["sh", "-c", r#"[ "$1" != c ]"#, "sh", "{}"]);
    run(&mut first, fx.tmp.path()).expect_code(1);

    // A run in progress: three slots over 6 s, tasks that sleep.
    let mut cmd = run_with_state(&fx, &["--window", "6s", "--"]);
    cmd.args(["sleep", "5"]);
    let mut child = util::spawn(&mut cmd);
    let lock = fx.lock_file("a");
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&lock).is_ok_and(|s| s.starts_with("scatter-holder/2"))
    }));
    std::thread::sleep(Duration::from_millis(1500));

    let ran = run(fx.status(&["--format", "json"]), fx.tmp.path());
    ran.expect_code(1);
    let doc: serde_json::Value = serde_json::from_str(&ran.stdout()).expect("status JSON");
    assert_eq!(doc["format"], "scatter-status/1");
    let progress = &doc["runs_in_progress"][0];
    assert_eq!(progress["state"], "running");
    assert_eq!(progress["count"], 3);
    assert!(progress["started_count"].as_u64().unwrap() >= 1);
    assert!(progress["eta_last_start_secs"].as_f64().unwrap() > 0.0);
    let running = doc["running"].as_array().unwrap();
    assert!(
        running
            .iter()
            .any(|t| t["id"] == "a" && t["pid"].as_i64().is_some()),
        "{doc:#}"
    );
    assert_eq!(doc["failing"], 1);
    assert_eq!(doc["instances"][0]["id"], "c", "failing first");
    assert_eq!(doc["instances"][0]["consecutive_failures"], 1);

    let text = run(fx.status(&[]), fx.tmp.path());
    text.expect_code(1)
        .expect_stdout("Runs in progress")
        .expect_stdout("of 3 started")
        .expect_stdout("Running now (locks held)")
        .expect_stdout("Instances (1 of 3 failing)")
        .expect_stdout("c  exited with status 1");
    assert!(
        !text.stdout().contains('\x1b'),
        "no colours when stdout is not a terminal"
    );

    // SIGKILL the run: its record stays "running", and status says it died.
    child.kill().unwrap();
    child.wait().unwrap();
    let ran = run(fx.status(&["--format", "json"]), fx.tmp.path());
    let doc: serde_json::Value = serde_json::from_str(&ran.stdout()).unwrap();
    assert_eq!(doc["runs_in_progress"][0]["state"], "died");
    for t in doc["running"].as_array().unwrap() {
        util::kill_group(t["pid"].as_i64().unwrap() as i32);
    }
}

#[test]
fn status_is_ok_when_nothing_fails_and_needs_a_job() {
    let fx = Fixture::with(&["a"]);
    run(run_with_state(&fx, &["--", "true"]), fx.tmp.path()).expect_code(0);
    run(fx.status(&[]), fx.tmp.path())
        .expect_code(0)
        .expect_stdout("Instances (0 of 1 failing)");
    run(scatter().arg("status"), fx.tmp.path())
        .expect_code(2)
        .expect_stderr("--name NAME or --instances DIR");
    let mut empty = scatter();
    empty
        .args(["status", "--name", "x", "--state-dir"])
        .arg(fx.tmp.path().join("nothing"));
    run(&mut empty, fx.tmp.path())
        .expect_code(66)
        .expect_stderr("no scatter state");
}

#[test]
fn an_unwritable_state_dir_does_not_stop_the_run() {
    let fx = Fixture::with(&["a", "b"]);
    // The last --state-dir wins over the fixture's own.
    let mut cmd = fx.run(&[
        "--state-dir",
        "/proc/no-state-here",
        "--window",
        "100ms",
        "--",
    ]);
    cmd.arg(&fx.recorder).arg("{}");
    let ran = run(&mut cmd, fx.tmp.path());
    ran.expect_code(0)
        .expect_stderr("cannot create state directory");
    assert_eq!(fx.records().len(), 2, "every instance still ran");
}

/// Parses a metrics file with prometheus_client; returns every sample as
/// (name, labels, value).
fn parse_prometheus(path: &Path) -> Vec<(String, std::collections::BTreeMap<String, String>, f64)> {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(open(sys.argv[1]).read()):
    for s in family.samples:
        out.append([s.name, s.labels, float(s.value)])
print(json.dumps(out))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .output()
        .expect("python3 (see .ci/run for prometheus_client)");
    assert!(
        out.status.success(),
        "prometheus_client rejected the file:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_metrics_file_parses_and_carries_every_measure() {
    let fx = Fixture::with(&["ok1", "bad", "quote\"back\\slash", "new\nline"]);
    let metrics = fx.tmp.path().join("scatter.prom");
    let mut cmd = run_with_state(&fx, &["--window", "200ms", "--metrics-file"]);
    cmd.arg(&metrics)
        .args(["--", "sh", "-c", r#"[ "$1" != bad ] || exit 4"#, "sh", "{}"]);
    run(&mut cmd, fx.tmp.path()).expect_code(1);
    let samples = parse_prometheus(&metrics);
    let value = |name: &str, labels: &[(&str, &str)]| -> Option<f64> {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && l.len() == labels.len() + 1
                    && l.get("scatter_name").map(String::as_str) == Some("instances")
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
    };
    assert_eq!(
        value("scatter_run_instances", &[]),
        Some(4.0),
        "{samples:#?}"
    );
    assert_eq!(
        value("scatter_run_outcomes", &[("outcome", "ok")]),
        Some(3.0)
    );
    assert_eq!(
        value("scatter_run_outcomes", &[("outcome", "failed")]),
        Some(1.0)
    );
    assert_eq!(
        value("scatter_run_outcomes", &[("outcome", "timed_out")]),
        Some(0.0)
    );
    assert_eq!(
        value("scatter_instance_last_exit_code", &[("instance_id", "bad")]),
        Some(4.0)
    );
    assert_eq!(
        value(
            "scatter_instance_consecutive_failures",
            &[("instance_id", "bad")]
        ),
        Some(1.0)
    );
    // Label values with quotes, backslashes and newlines survive escaping.
    assert_eq!(
        value(
            "scatter_instance_last_exit_code",
            &[("instance_id", "quote\"back\\slash")]
        ),
        Some(0.0),
        "{samples:#?}"
    );
    assert_eq!(
        value(
            "scatter_instance_last_exit_code",
            &[("instance_id", "new\nline")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            "scatter_instance_last_success_timestamp_seconds",
            &[("instance_id", "bad")]
        ),
        Some(0.0)
    );
    assert!(
        value(
            "scatter_instance_last_success_timestamp_seconds",
            &[("instance_id", "ok1")]
        )
        .unwrap()
            > 1e9
    );
    assert!(
        value(
            "scatter_instance_last_duration_seconds",
            &[("instance_id", "ok1")]
        )
        .unwrap()
            > 0.0
    );
    let duration = value("scatter_run_duration_seconds", &[]).unwrap();
    assert!(duration > 0.0 && duration < 60.0);
    assert!(value("scatter_run_start_lateness_max_seconds", &[]).is_some());
    assert!(value("scatter_run_end_timestamp_seconds", &[]).unwrap() > 1e9);
    // No temporary file is left next to it for the collector to pick up.
    let names: Vec<_> = std::fs::read_dir(fx.tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        !names.iter().any(|n| n.to_string_lossy().ends_with(".tmp")),
        "{names:?}"
    );
}

fn receive_all(socket: &UnixDatagram) -> Vec<Vec<u8>> {
    socket.set_nonblocking(true).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    while let Ok(n) = socket.recv(&mut buf) {
        out.push(buf[..n].to_vec());
    }
    out
}

#[test]
fn syslog_messages_use_facility_cron_and_stay_one_line() {
    let fx = Fixture::with(&["evil\nname", "b"]);
    let path = fx.tmp.path().join("log.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let mut cmd = run_with_state(&fx, &["-v", "--log", "syslog", "--window", "100ms", "--"]);
    cmd.args(["sh", "-c", "exit 2"])
        .env("SCATTER_SYSLOG_SOCKET", &path);
    let ran = run(&mut cmd, fx.tmp.path());
    ran.expect_code(1);
    let messages: Vec<String> = receive_all(&socket)
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    assert!(
        !messages.is_empty(),
        "nothing reached the syslog socket; stderr: {}",
        ran.stderr()
    );
    for m in &messages {
        // <PRI>: cron is facility 9, so PRI is 72 + severity.
        let pri: u32 = m[1..m.find('>').unwrap()].parse().unwrap();
        assert_eq!(pri / 8, 9, "{m}");
        assert!(m.contains("scatter["), "{m}");
        assert!(
            !m.trim_end().contains('\n'),
            "a name broke a syslog line: {m:?}"
        );
    }
    assert!(
        messages
            .iter()
            .any(|m| m.contains("$'evil\\nname': started pid")),
        "{messages:#?}"
    );
    // Debug lines go at severity 7.
    assert!(
        messages.iter().any(|m| m.starts_with("<79>")),
        "{messages:#?}"
    );
}

/// Parses one journal native-protocol datagram into (field, value) pairs.
fn journal_fields(datagram: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut fields = Vec::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        let nl = rest.iter().position(|b| *b == b'\n').unwrap();
        let line = &rest[..nl];
        if let Some(eq) = line.iter().position(|b| *b == b'=') {
            fields.push((
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                line[eq + 1..].to_vec(),
            ));
            rest = &rest[nl + 1..];
        } else {
            let name = String::from_utf8_lossy(line).into_owned();
            let len = u64::from_le_bytes(rest[nl + 1..nl + 9].try_into().unwrap()) as usize;
            let value = rest[nl + 9..nl + 9 + len].to_vec();
            fields.push((name, value));
            rest = &rest[nl + 9 + len + 1..];
        }
    }
    fields
}

#[test]
fn journald_messages_carry_the_instance_as_a_structured_field() {
    let fx = Fixture::with(&["acme", "new\nline"]);
    let path = fx.tmp.path().join("journal.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let mut cmd = run_with_state(
        &fx,
        &["-v", "--log", "journald", "--window", "100ms", "--", "true"],
    );
    cmd.env("SCATTER_JOURNAL_SOCKET", &path);
    let ran = run(&mut cmd, fx.tmp.path());
    ran.expect_code(0);
    assert!(
        ran.stderr().is_empty(),
        "journald logging must not also write stderr: {}",
        ran.stderr()
    );
    let records: Vec<_> = receive_all(&socket)
        .iter()
        .map(|d| journal_fields(d))
        .collect();
    let get = |rec: &[(String, Vec<u8>)], key: &str| {
        rec.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    };
    let started: Vec<_> = records
        .iter()
        .filter(|r| {
            get(r, "MESSAGE").is_some_and(|m| String::from_utf8_lossy(&m).contains("started pid"))
        })
        .collect();
    assert_eq!(started.len(), 2, "{records:?}");
    let instances: Vec<Vec<u8>> = started
        .iter()
        .map(|r| get(r, "SCATTER_INSTANCE").unwrap())
        .collect();
    assert!(instances.contains(&b"acme".to_vec()));
    assert!(
        instances.contains(&b"new\nline".to_vec()),
        "the raw id, binary-encoded"
    );
    for r in &records {
        assert_eq!(
            get(r, "SYSLOG_IDENTIFIER").as_deref(),
            Some(&b"scatter"[..])
        );
        assert_eq!(get(r, "SYSLOG_FACILITY").as_deref(), Some(&b"9"[..]));
        assert!(get(r, "PRIORITY").is_some());
    }
}

#[test]
fn auto_uses_the_journal_when_stderr_is_connected_to_it() {
    use std::os::unix::fs::MetadataExt;
    let fx = Fixture::with(&["a"]);
    let path = fx.tmp.path().join("journal.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let stderr_file = fx.tmp.path().join("stderr");
    let file = std::fs::File::create(&stderr_file).unwrap();
    let meta = file.metadata().unwrap();
    let mut cmd = run_with_state(&fx, &["-v", "--log", "auto", "--", "true"]);
    cmd.env("SCATTER_JOURNAL_SOCKET", &path)
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stderr(file);
    assert!(cmd.status().unwrap().success());
    assert!(
        !receive_all(&socket).is_empty(),
        "auto did not pick the journal"
    );
    assert_eq!(std::fs::read_to_string(&stderr_file).unwrap(), "");
    // Without JOURNAL_STREAM, auto means stderr.
    let mut cmd = run_with_state(&fx, &["-v", "--log", "auto", "--", "true"]);
    cmd.env("SCATTER_JOURNAL_SOCKET", &path);
    run(&mut cmd, fx.tmp.path())
        .expect_code(0)
        .expect_stderr("started pid");
}

#[test]
fn an_unreachable_log_sink_falls_back_to_stderr() {
    let fx = Fixture::with(&["a"]);
    let mut cmd = run_with_state(&fx, &["--log", "syslog", "--", "true"]);
    cmd.env(
        "SCATTER_SYSLOG_SOCKET",
        fx.tmp.path().join("nobody-listens"),
    );
    run(&mut cmd, fx.tmp.path())
        .expect_code(0)
        .expect_stderr("cannot reach syslog");
}

#[test]
fn failures_are_journal_records_of_their_own_too() {
    let fx = Fixture::with(&["good", "bad"]);
    let path = fx.tmp.path().join("journal.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let mut cmd = fx.run(&["--log", "journald", "--window", "100ms", "--"]);
    cmd.args(["sh", "-c", r#"[ "$1" != bad ] || exit 8"#, "sh", "{}"])
        .env("SCATTER_JOURNAL_SOCKET", &path);
    let ran = run(&mut cmd, fx.tmp.path());
    // The report still goes to stderr, for cron's mail.
    ran.expect_code(1)
        .expect_stderr("scatter: bad: exited with status 8");
    let records: Vec<_> = receive_all(&socket)
        .iter()
        .map(|d| journal_fields(d))
        .collect();
    let failure = records
        .iter()
        .find(|r| {
            r.iter().any(|(k, v)| {
                k == "MESSAGE" && String::from_utf8_lossy(v).contains("exited with status 8")
            })
        })
        .unwrap_or_else(|| panic!("no journal record for the failure: {records:?}"));
    assert!(
        failure
            .iter()
            .any(|(k, v)| k == "SCATTER_INSTANCE" && v == b"bad")
    );
    assert!(failure.iter().any(|(k, v)| k == "PRIORITY" && v == b"4"));
}

#[test]
fn a_task_that_ended_reaches_the_records_while_the_run_goes_on() {
    // Two slots 60 s apart: a's outcome must not wait for b's start.
    let fx = Fixture::with(&["a", "b"]);
    let mut cmd = fx.run(&["--window", "120s", "--", "true"]);
    let mut child = util::spawn(&mut cmd);
    let path = fx.state().join("instances.json");
    // The first merge is due 5 s after the start; b starts at 60 s.
    let recorded = wait_until(Duration::from_secs(30), || {
        std::fs::read_to_string(&path).is_ok_and(|text| {
            serde_json::from_str::<serde_json::Value>(&text)
                .is_ok_and(|doc| doc["instances"]["a"]["outcome"] == "ok")
        })
    });
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(
        recorded,
        "a's outcome was not in {} within 30 s",
        path.display()
    );
    assert_eq!(status.code(), Some(143));
}
