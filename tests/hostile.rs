//! Faults and hostile environments: low descriptor and process limits, a
//! dropped uid facing files of another user, a full state directory, a
//! vanished instance, and 100,000 instances. Each fault affects only what
//! it touches, gets a clear message, and every instance is accounted for.

use crate::util;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

use crate::util::{Fixture, run};

use crate::util::NOBODY;

fn counts_total(doc: &serde_json::Value) -> u64 {
    doc["counts"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum()
}

fn hand_to_nobody(fx: &Fixture) {
    util::hand_to(fx, NOBODY);
}

#[test]
fn too_few_descriptors_fail_only_the_tasks_that_need_one() {
    let names: Vec<String> = (0..12).map(|i| format!("t{i:02}")).collect();
    let fx = Fixture::with(&names);
    // --output tag needs a pipe per running task; with 16 descriptors and
    // tasks that overlap, some starts hit EMFILE.
    let mut cmd = fx.run_wrapped(
        &["prlimit", "--nofile=16", "--"],
        &[
            "--window", "100ms", "--output", "tag", "--format", "json", "--", "sleep", "1",
        ],
    );
    let ran = run(&mut cmd, fx.tmp.path());
    ran.expect_code(1);
    let doc: serde_json::Value =
        serde_json::from_str(&ran.stdout()).expect("a JSON report despite EMFILE");
    assert_eq!(
        counts_total(&doc),
        12,
        "every instance accounted for: {doc}"
    );
    let failed = doc["counts"]["failed_to_start"].as_u64().unwrap();
    let ok = doc["counts"]["ok"].as_u64().unwrap();
    assert!(
        failed > 0 && ok > 0,
        "some ran, some hit the limit: {}",
        doc["counts"]
    );
    let reasons: Vec<&str> = doc["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["reason"].as_str())
        .collect();
    assert!(
        reasons.iter().all(|r| r.contains("Too many open files")),
        "{reasons:?}"
    );
}

#[test]
fn too_few_processes_fail_only_the_starts_that_hit_eagain() {
    if !util::privileged("run scatter under a dedicated uid with its own process limit") {
        return;
    }
    // A uid of its own: RLIMIT_NPROC counts every process of the uid, and
    // other tests run as nobody in parallel.
    const UID: u32 = 61_106;
    let names: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
    let fx = Fixture::with(&names);
    util::hand_to(&fx, UID);
    // RLIMIT_NPROC counts every process and thread of the uid: scatter, its
    // state writer and two sleeps fit, later starts get EAGAIN.
    let mut cmd = fx.run_wrapped(
        &["prlimit", "--nproc=4", "--"],
        &["--window", "200ms", "--format", "json", "--", "sleep", "2"],
    );
    cmd.uid(UID).gid(UID);
    let ran = run(&mut cmd, fx.tmp.path());
    ran.expect_code(1);
    let doc: serde_json::Value = serde_json::from_str(&ran.stdout()).expect("JSON report");
    assert_eq!(counts_total(&doc), 8, "{doc}");
    assert!(
        doc["counts"]["ok"].as_u64().unwrap() > 0,
        "{}",
        doc["counts"]
    );
    let eagain = doc["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| {
            i["reason"]
                .as_str()
                .is_some_and(|r| r.contains("Resource temporarily unavailable"))
        })
        .count();
    assert!(eagain > 0, "no start hit EAGAIN: {doc}");
}

#[test]
fn a_lock_file_of_another_user_fails_that_instance_under_a_dropped_uid() {
    if !util::privileged("plant a file of another user and drop to uid nobody") {
        return;
    }
    let fx = Fixture::with(&["a", "b"]);
    hand_to_nobody(&fx);
    let job = fx.locks.join("instances");
    std::fs::create_dir(&job).unwrap();
    std::os::unix::fs::chown(&job, Some(NOBODY), Some(NOBODY)).unwrap();
    // Planted by root, who could hold it forever; mode 0644.
    std::fs::write(fx.lock_file("a"), "").unwrap();
    let mut cmd = fx.run(&["--window", "100ms", "--"]);
    cmd.arg(&fx.recorder).arg("{}").uid(NOBODY).gid(NOBODY);
    let ran = run(&mut cmd, fx.tmp.path());
    ran.expect_code(1)
        .expect_stderr("a: failed to start: cannot open lock file");
    let ids: Vec<_> = fx.records().iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids, ["b"], "the other instance still ran");
    assert_eq!(
        std::fs::read(fx.lock_file("a")).unwrap(),
        b"",
        "not clobbered"
    );
}

#[test]
fn an_unreadable_instances_dir_exits_66_under_a_dropped_uid() {
    if !util::privileged("drop to uid nobody") {
        return;
    }
    let fx = Fixture::with(&["a"]);
    hand_to_nobody(&fx);
    std::fs::set_permissions(&fx.instances, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut cmd = fx.run(&["--", "true"]);
    cmd.uid(NOBODY).gid(NOBODY);
    run(&mut cmd, fx.tmp.path())
        .expect_code(66)
        .expect_stderr("cannot read instances directory")
        .expect_stderr("hint:");
}

#[test]
fn an_instance_removed_before_its_slot_is_skipped_with_a_reason() {
    let fx = Fixture::with(&["a", "b"]);
    let mut cmd = fx.run(&["--window", "3s", "--format", "json", "--"]);
    cmd.arg(&fx.recorder).arg("{}");
    let child = util::spawn(&mut cmd);
    fx.wait_for_records(1, Duration::from_secs(10));
    std::fs::remove_dir(fx.instances.join("b")).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["instances"][1]["outcome"], "skipped");
    assert_eq!(
        doc["instances"][1]["reason"],
        "its directory no longer exists"
    );
    assert_eq!(fx.records().len(), 1);
}

#[test]
fn a_full_state_directory_does_not_stop_the_run() {
    let fx = Fixture::with(&["a", "b"]);
    let full = fx.tmp.path().join("full");
    std::fs::create_dir(&full).unwrap();
    // A private mount namespace with a tiny tmpfs, filled up.
    let script = r#"mount -t tmpfs -o size=32k tmpfs "$1" || exit 77
head -c 100000 /dev/zero > "$1/filler" 2>/dev/null
shift
exec "$@""#;
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["-m", "sh", "-c", script, "sh"])
        .arg(&full)
        .arg(util::BIN)
        .args(["run", "--instances"])
        .arg(&fx.instances)
        .arg("--lock-dir")
        .arg(&fx.locks)
        .arg("--state-dir")
        .arg(full.join("state"))
        .arg("--metrics-file")
        .arg(full.join("scatter.prom"))
        .args(["--window", "100ms", "--"])
        .arg(&fx.recorder)
        .arg("{}")
        .env("REC_DIR", &fx.rec);
    let ran = run(&mut cmd, fx.tmp.path());
    if matches!(ran.code(), Some(77) | Some(1)) && ran.stderr().contains("unshare") {
        eprintln!(
            "skipped: cannot create a mount namespace here: {}",
            ran.stderr()
        );
        return;
    }
    ran.expect_code(0).expect_stderr("No space left on device");
    assert_eq!(fx.records().len(), 2, "every task still ran");
}

fn fast_tempdir() -> tempfile::TempDir {
    // 100,000 directories take seconds on tmpfs and minutes on some disks.
    if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

#[test]
fn a_hundred_thousand_instances_are_all_planned() {
    let tmp = fast_tempdir();
    let instances = tmp.path().join("instances");
    std::fs::create_dir(&instances).unwrap();
    for i in 0..100_000 {
        std::fs::create_dir(instances.join(format!("t{i:06}"))).unwrap();
    }
    let mut cmd = util::scatter();
    cmd.args(["run", "--dry-run", "--format", "json", "--instances"])
        .arg(&instances)
        .arg("--lock-dir")
        .arg(tmp.path().join("locks"))
        .args(["--", "task", "{}"]);
    let ran = run(&mut cmd, Path::new("/nonexistent"));
    ran.expect_code(0);
    let doc: serde_json::Value = serde_json::from_str(&ran.stdout()).unwrap();
    assert_eq!(doc["count"], 100_000);
    let items = doc["instances"].as_array().unwrap();
    assert_eq!(items.len(), 100_000);
    assert_eq!(items[99_999]["id"], "t099999");
    assert!(items[99_999]["offset_secs"].as_f64().unwrap() < 60.0);
}
