//! End-to-end tests of the per-instance locks: skips, `--only` on a busy
//! lock, the lock outliving a killed scatter, and lock files or directories
//! that someone tampered with.

use crate::util;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::util::{Fixture, is_locked, run, wait_until};

/// Holds the lock of `id` from the test process, as another run would.
fn hold(fx: &Fixture, id: &str) -> std::fs::File {
    std::fs::create_dir_all(fx.locks.join("instances")).unwrap();
    let file = std::fs::File::create(fx.lock_file(id)).unwrap();
    file.try_lock().unwrap();
    file
}

#[test]
fn a_busy_instance_is_skipped_quietly_and_the_others_run() {
    let fx = Fixture::with(&["a", "b", "c"]);
    std::fs::create_dir_all(fx.locks.join("instances")).unwrap();
    let _held = hold(&fx, "b");
    let ran = run(fx.run_recorded(&["--window", "300ms"]), fx.tmp.path());
    ran.expect_code(0).expect_silent();
    let ids: Vec<_> = fx.records().iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids, ["a", "c"]);
}

#[test]
fn a_skip_is_logged_at_info_with_the_holder() {
    let fx = Fixture::with(&["a"]);
    // First run holds the lock for a while; its holder record names it.
    let mut first = fx.run(&["--only", "a", "--"]);
    first.args(["sleep", "5"]);
    let mut first = util::spawn(&mut first);
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(fx.lock_file("a")).is_ok_and(|s| s.starts_with("scatter-holder/2"))
    }));
    let record = std::fs::read_to_string(fx.lock_file("a")).unwrap();
    let pid: i32 = record
        .split(' ')
        .find_map(|w| w.strip_prefix("pid="))
        .unwrap()
        .parse()
        .unwrap();

    let ran = run(fx.run_recorded(&["-v"]), fx.tmp.path());
    ran.expect_code(0)
        .expect_stderr("a: skipped: lock is held by pid ")
        .expect_stderr(&format!("pid {pid} since "));
    assert!(fx.records().is_empty());
    first.kill().unwrap();
    first.wait().unwrap();
    util::kill_group(pid);
}

#[test]
fn only_on_a_busy_instance_exits_75() {
    let fx = Fixture::with(&["a"]);
    let _held = hold(&fx, "a");
    let ran = run(fx.run_recorded(&["--only", "a"]), fx.tmp.path());
    ran.expect_code(75).expect_stderr("a: skipped: locked by");
    assert!(fx.records().is_empty());
}

#[test]
fn the_lock_outlives_a_sigkill_of_scatter_and_is_released_with_the_task() {
    let fx = Fixture::with(&["a"]);
    let mut child = util::spawn(fx.run_recorded(&["--only", "a"]).env("REC_SLEEP", "2"));
    fx.wait_for_records(1, Duration::from_secs(10));
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    let lock = fx.lock_file("a");
    assert!(
        is_locked(&lock),
        "the task still holds the lock after scatter died"
    );
    // A run now skips the instance instead of running it twice.
    let ran = run(fx.run(&["--only", "a", "--", "true"]), fx.tmp.path());
    ran.expect_code(75);
    assert!(
        wait_until(Duration::from_secs(10), || !is_locked(&lock)),
        "the lock is released when the task ends"
    );
    run(fx.run(&["--only", "a", "--", "true"]), fx.tmp.path()).expect_code(0);
}

#[test]
fn a_planted_symlink_fails_only_that_instance_and_is_not_followed() {
    let fx = Fixture::with(&["a", "b"]);
    std::fs::create_dir_all(fx.locks.join("instances")).unwrap();
    let victim = fx.tmp.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, fx.lock_file("a")).unwrap();
    let ran = run(fx.run_recorded(&["--window", "200ms"]), fx.tmp.path());
    ran.expect_code(1)
        .expect_stderr("a: failed to start: lock file")
        .expect_stderr("is a symlink; refusing to follow it");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    let ids: Vec<_> = fx.records().iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids, ["b"]);
}

#[test]
fn a_planted_fifo_does_not_hang_the_run() {
    let fx = Fixture::with(&["a", "b"]);
    std::fs::create_dir_all(fx.locks.join("instances")).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(fx.lock_file("a"))
        .status()
        .unwrap();
    assert!(status.success());
    let ran = run(fx.run_recorded(&["--window", "200ms"]), fx.tmp.path());
    ran.expect_code(1)
        .expect_stderr("is not a regular file (a FIFO)");
    assert_eq!(fx.records().len(), 1);
}

#[test]
fn a_lock_file_owned_by_another_user_fails_that_instance() {
    if !util::privileged("create a file owned by another user") {
        return;
    }
    let fx = Fixture::with(&["a", "b"]);
    std::fs::create_dir_all(fx.locks.join("instances")).unwrap();
    let lock = fx.lock_file("a");
    std::fs::write(&lock, "").unwrap();
    std::os::unix::fs::chown(&lock, Some(65534), Some(65534)).unwrap();
    let ran = run(fx.run_recorded(&["--window", "200ms"]), fx.tmp.path());
    ran.expect_code(1).expect_stderr("is owned by uid 65534");
    assert_eq!(fx.records().len(), 1);
}

#[test]
fn a_world_writable_lock_dir_is_refused_before_anything_runs() {
    let fx = Fixture::with(&["a"]);
    std::fs::create_dir(&fx.locks).unwrap();
    std::fs::set_permissions(&fx.locks, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let ran = run(fx.run_recorded(&[]), fx.tmp.path());
    ran.expect_code(2)
        .expect_stderr("is group- or world-writable (mode 1777)")
        .expect_stderr("hint:");
    assert!(fx.records().is_empty());
}

#[test]
fn a_lock_dir_owned_by_another_user_is_refused() {
    if !util::privileged("create a directory owned by another user") {
        return;
    }
    let fx = Fixture::with(&["a"]);
    std::fs::create_dir(&fx.locks).unwrap();
    std::os::unix::fs::chown(&fx.locks, Some(65534), Some(65534)).unwrap();
    let ran = run(fx.run_recorded(&[]), fx.tmp.path());
    ran.expect_code(2).expect_stderr("is owned by uid 65534");
    assert!(fx.records().is_empty());
}

#[test]
fn a_lock_dir_that_cannot_be_created_is_a_clear_error() {
    let fx = Fixture::with(&["a"]);
    let mut cmd = util::scatter();
    cmd.args(["run", "--instances"]).arg(&fx.instances).args([
        "--lock-dir",
        "/proc/scatter-cannot-be-here",
        "--",
        "true",
    ]);
    run(&mut cmd, fx.tmp.path())
        .expect_code(2)
        .expect_stderr("cannot create lock directory")
        .expect_stderr("hint:");
}

#[test]
fn lock_files_are_private_and_reused() {
    let fx = Fixture::with(&["a"]);
    run(fx.run(&["--", "true"]), fx.tmp.path()).expect_code(0);
    let meta = std::fs::metadata(fx.lock_file("a")).unwrap();
    // flock needs only read access: a lock file others could open is a
    // lock they could hold.
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let dir = std::fs::metadata(fx.locks.join("instances")).unwrap();
    assert_eq!(dir.permissions().mode() & 0o022, 0);
    // A second run reuses the same file (never unlinked).
    use std::os::unix::fs::MetadataExt;
    run(fx.run(&["--", "true"]), fx.tmp.path()).expect_code(0);
    assert_eq!(
        std::fs::metadata(fx.lock_file("a")).unwrap().ino(),
        meta.ino()
    );
}
