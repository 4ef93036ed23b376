//! `--dry-run`: the plan in text and JSON, deterministic, touching nothing.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use crate::util::{Fixture, run};

#[test]
fn text_plan_has_one_line_per_instance_with_offset_id_lock_and_argv() {
    let fx = Fixture::with(&["b", "a", "big co"]);
    let ran = run(
        fx.run(&[
            "--dry-run",
            "--window",
            "3s",
            "--",
            "curl",
            "http://127.0.0.1/{}/x",
        ]),
        fx.tmp.path(),
    );
    ran.expect_code(0);
    let out = ran.stdout();
    let lock = fx.locks.join("instances");
    let body: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        body,
        [
            format!(
                "+0.000s  a  {}/a.lock  curl http://127.0.0.1/a/x",
                lock.display()
            ),
            format!(
                "+1.000s  b  {}/b.lock  curl http://127.0.0.1/b/x",
                lock.display()
            ),
            format!(
                "+2.000s  $'big co'  $'{}/big%20co.lock'  curl $'http://127.0.0.1/big co/x'",
                lock.display()
            ),
        ]
    );
    assert!(
        out.starts_with(
            "# scatter plan instances: 3 instances over 3s, one every 1s, order name\n"
        ),
        "{out}"
    );
}

#[test]
fn dry_run_touches_nothing_and_does_not_wait() {
    let fx = Fixture::with(&["a", "b"]);
    let started = std::time::Instant::now();
    let ran = run(
        fx.run_recorded(&["--dry-run", "--window", "60s"]),
        fx.tmp.path(),
    );
    ran.expect_code(0);
    assert!(started.elapsed().as_secs() < 10, "a dry run must not sleep");
    assert!(!fx.locks.exists(), "a dry run must not create the lock dir");
    assert!(fx.records().is_empty(), "a dry run must not run tasks");
}

#[test]
fn dry_run_is_deterministic() {
    let fx = Fixture::with(&["c", "a", "b", "d"]);
    let once = run(
        fx.run(&["--dry-run", "--order", "hash", "--", "t", "{}"]),
        fx.tmp.path(),
    );
    let twice = run(
        fx.run(&["--dry-run", "--order", "hash", "--", "t", "{}"]),
        fx.tmp.path(),
    );
    assert_eq!(once.stdout(), twice.stdout());
    let json1 = run(
        fx.run(&["--dry-run", "--format", "json", "--", "t", "{}"]),
        fx.tmp.path(),
    );
    let json2 = run(
        fx.run(&["--dry-run", "--format", "json", "--", "t", "{}"]),
        fx.tmp.path(),
    );
    assert_eq!(json1.stdout(), json2.stdout());
}

#[test]
fn json_plan_is_machine_readable() {
    let fx = Fixture::with(&["a", "new\nline"]);
    fx.instance(OsString::from_vec(b"raw\xff".to_vec()));
    let ran = run(
        fx.run(&[
            "--dry-run",
            "--format",
            "json",
            "--window",
            "2s",
            "--name",
            "job",
            "--",
            "task",
            "{}",
            "{path}",
        ]),
        fx.tmp.path(),
    );
    ran.expect_code(0);
    let doc: serde_json::Value = serde_json::from_str(&ran.stdout()).expect("valid JSON");
    assert_eq!(doc["format"], "scatter-plan/1");
    assert_eq!(doc["name"], "job");
    assert_eq!(doc["count"], 3);
    assert_eq!(doc["window_secs"], 2.0);
    assert_eq!(doc["order"], "name");
    assert_eq!(doc["manual"], false);
    let items = doc["instances"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["id"], "a");
    assert_eq!(items[0]["slot"], 0);
    assert_eq!(items[0]["offset_secs"], 0.0);
    assert_eq!(items[1]["id"], "new\nline");
    assert_eq!(items[1]["argv"][1], "new\nline");
    assert_eq!(
        items[1]["lock"],
        fx.locks.join("job/new%0Aline.lock").to_str().unwrap()
    );
    assert_eq!(items[2]["id_hex"], "726177ff");
    assert!(items[0].get("id_hex").is_none());
    let path = fx.instances.join("a");
    assert_eq!(
        items[0]["argv"],
        serde_json::json!(["task", "a", path.to_str().unwrap()])
    );
    let offsets: Vec<f64> = items
        .iter()
        .map(|i| i["offset_secs"].as_f64().unwrap())
        .collect();
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]) && offsets.iter().all(|o| *o < 2.0));
}

#[test]
fn dry_run_with_only_shows_a_manual_plan() {
    let fx = Fixture::with(&["a", "b"]);
    let ran = run(
        fx.run(&["--dry-run", "--only", "b", "--", "t"]),
        fx.tmp.path(),
    );
    ran.expect_code(0).expect_stdout("started at once (--only)");
    assert_eq!(
        ran.stdout().lines().filter(|l| !l.starts_with('#')).count(),
        1
    );
}

#[test]
fn dry_run_still_rejects_a_world_writable_lock_dir() {
    use std::os::unix::fs::PermissionsExt;
    let fx = Fixture::with(&["a"]);
    std::fs::create_dir(&fx.locks).unwrap();
    std::fs::set_permissions(&fx.locks, std::fs::Permissions::from_mode(0o777)).unwrap();
    run(fx.run(&["--dry-run", "--", "t"]), fx.tmp.path())
        .expect_code(2)
        .expect_stderr("world-writable");
}

#[test]
fn hash_order_differs_from_name_order_but_keeps_every_instance() {
    let names: Vec<String> = (0..20).map(|i| format!("tenant{i:02}")).collect();
    let fx = Fixture::with(&names);
    let by_hash = run(
        fx.run(&[
            "--dry-run",
            "--format",
            "json",
            "--order",
            "hash",
            "--",
            "t",
        ]),
        fx.tmp.path(),
    );
    let doc: serde_json::Value = serde_json::from_str(&by_hash.stdout()).unwrap();
    let mut ids: Vec<String> = doc["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert_ne!(ids, names, "hash order should not be name order for 20 ids");
    ids.sort();
    assert_eq!(ids, names);
}
