//! Every bad input gets a clear message naming it, a hint where one helps,
//! and the documented exit code, before anything runs.

use crate::util;

use crate::util::{Fixture, run, scatter};

fn usage(args: &[&str], needle: &str) {
    let fx = Fixture::with(&["a"]);
    let ran = run(fx.run(args), fx.tmp.path());
    ran.expect_code(2).expect_stderr(needle);
    assert!(fx.records().is_empty());
    assert!(
        !fx.locks.exists(),
        "nothing may be created on a usage error"
    );
}

#[test]
fn bad_windows() {
    usage(&["--window", "0s", "--", "true"], "is zero");
    usage(&["--window", "0", "--", "true"], "--window");
    usage(&["--window=-5s", "--", "true"], "negative");
    usage(&["--window", "1 fortnight", "--", "true"], "fortnight");
    usage(&["--window", "soon", "--", "true"], "such as 60s");
}

#[test]
fn bad_placeholders_and_commands() {
    usage(
        &["--", "task", "{nmae}"],
        "unknown placeholder {nmae} in argument 1",
    );
    usage(
        &["--", "{bogus}"],
        "unknown placeholder {bogus} in the command",
    );
    usage(&["--", ""], "the command to run is empty");
    usage(&[], "COMMAND");
}

#[test]
fn bad_supervision_flags() {
    usage(&["--max-concurrent", "0", "--", "true"], "at least 1");
    usage(&["--max-concurrent", "many", "--", "true"], "whole number");
    usage(&["--timeout", "0s", "--", "true"], "is zero");
    usage(&["--timeout", "1 fortnight", "--", "true"], "fortnight");
    usage(&["--kill-after=-1s", "--", "true"], "negative");
    usage(
        &["--output", "file", "--", "true"],
        "inherit, null, tag, dir=PATH or on-failure",
    );
    usage(
        &["--output", "dir=", "--", "true"],
        "dir= needs a directory",
    );
}

#[test]
fn bad_names_and_orders() {
    usage(&["--name", "a/b", "--", "true"], "single path component");
    usage(&["--name", "..", "--", "true"], "--name");
    usage(&["--order", "random", "--", "true"], "random");
    usage(&["--format", "yaml", "--", "true"], "yaml");
}

#[test]
fn a_missing_instances_dir_exits_66() {
    let fx = Fixture::new();
    let mut cmd = scatter();
    cmd.args(["run", "--instances"])
        .arg(fx.tmp.path().join("nope"))
        .arg("--lock-dir")
        .arg(&fx.locks)
        .args(["--", "true"]);
    run(&mut cmd, fx.tmp.path())
        .expect_code(66)
        .expect_stderr("no such instances directory")
        .expect_stderr("hint:");
}

#[test]
fn an_instances_path_that_is_a_file_exits_66() {
    let fx = Fixture::new();
    let file = fx.tmp.path().join("file");
    std::fs::write(&file, "").unwrap();
    let mut cmd = scatter();
    cmd.args(["run", "--instances"])
        .arg(&file)
        .arg("--lock-dir")
        .arg(&fx.locks)
        .args(["--", "true"]);
    run(&mut cmd, fx.tmp.path())
        .expect_code(66)
        .expect_stderr("is not a directory");
}

#[test]
fn files_and_broken_symlinks_are_skipped_with_a_warning() {
    let fx = Fixture::with(&["a"]);
    std::fs::write(fx.instances.join("notes.txt"), "").unwrap();
    std::os::unix::fs::symlink(fx.tmp.path().join("gone"), fx.instances.join("dangling")).unwrap();
    std::os::unix::fs::symlink(fx.instances.join("loop"), fx.instances.join("loop")).unwrap();
    std::os::unix::fs::symlink(fx.instances.join("a"), fx.instances.join("alias")).unwrap();
    std::fs::create_dir(fx.instances.join(".hidden")).unwrap();
    let ran = run(fx.run_recorded(&["--window", "200ms"]), fx.tmp.path());
    ran.expect_code(0)
        .expect_stderr("ignoring notes.txt in")
        .expect_stderr("ignoring dangling in")
        .expect_stderr("a broken symlink")
        .expect_stderr("a symlink loop");
    let ids: Vec<_> = fx.records().iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids, ["a", "alias"]);
}

#[test]
fn a_command_not_in_path_is_reported_before_anything_runs() {
    let fx = Fixture::with(&["a"]);
    let ran = run(
        fx.run(&["--", "no-such-command-anywhere", "{}"])
            .env("PATH", "/usr/bin:/bin"),
        fx.tmp.path(),
    );
    ran.expect_code(127)
        .expect_stderr("command no-such-command-anywhere not found")
        .expect_stderr("cron's default PATH");
    assert!(!fx.locks.exists());
}

#[test]
fn no_usable_default_lock_dir_suggests_lock_dir() {
    // (An unreadable instances directory is in hostile.rs, under a dropped
    // uid: root can read any directory.)
    let fx = Fixture::with(&["a"]);
    let mut cmd = scatter();
    cmd.args(["run", "--instances"])
        .arg(&fx.instances)
        .args(["--", "true"]);
    if util::is_root() {
        // Root can always use /run/lock/scatter, so the fallback chain is
        // exercised as another user, for whom root's directory is refused
        // and no XDG_RUNTIME_DIR is set.
        use std::os::unix::process::CommandExt;
        let system = std::path::Path::new("/run/lock/scatter");
        if !system.exists() {
            std::fs::create_dir(system).unwrap();
        }
        cmd.uid(61_105).gid(61_105);
    }
    run(&mut cmd, fx.tmp.path())
        .expect_code(2)
        .expect_stderr("--lock-dir");
}

#[test]
fn help_and_version() {
    let fx = Fixture::new();
    let ran = run(scatter().args(["run", "--help"]), fx.tmp.path());
    ran.expect_code(0)
        .expect_stdout("--instances <DIR>")
        .expect_stdout("SCATTER_WINDOW")
        .expect_stdout("Exit status:")
        .expect_stdout("sh -c");
    let ran = run(scatter().arg("--version"), fx.tmp.path());
    ran.expect_code(0).expect_stdout(env!("CARGO_PKG_VERSION"));
}
