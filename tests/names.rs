//! Hostile instance names: each reaches the task as exactly one argument,
//! byte for byte, gets its own lock, and never breaks a line of output.

use crate::util;

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use crate::util::{Fixture, run};

fn hostile() -> Vec<OsString> {
    let mut names: Vec<OsString> = [
        "with space",
        "tab\there",
        "new\nline",
        "single'quote",
        "double\"quote",
        "back\\slash",
        "$(reboot)",
        "`id`",
        "x'; rm -rf ~; '",
        "semi;colon",
        "pi|pe",
        "star*",
        "-leading-dash",
        "--",
        "{}",
        "{id}",
        "{path}",
        "100%",
        "Case",
        "case",
        "a%20b",
        "a b",
        "ünïcödé",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    names.push(OsString::from_vec(b"bytes\xff\xfe".to_vec()));
    names.push(OsString::from_vec(vec![b'L'; 255]));
    let mut long_spaces = vec![b' '; 254];
    long_spaces.push(b'x');
    names.push(OsString::from_vec(long_spaces));
    names
}

#[test]
fn every_hostile_name_reaches_the_task_as_one_exact_argument() {
    let names = hostile();
    let fx = Fixture::with(&names);
    let ran = run(fx.run_recorded(&["--window", "500ms"]), fx.tmp.path());
    ran.expect_code(0).expect_silent();
    let recs = fx.records();
    assert_eq!(recs.len(), names.len(), "{}", util::listing(fx.tmp.path()));
    let got: HashSet<Vec<u8>> = recs.iter().map(|r| r.id.as_bytes().to_vec()).collect();
    let want: HashSet<Vec<u8>> = names.iter().map(|n| n.as_bytes().to_vec()).collect();
    assert_eq!(got, want);
    for rec in &recs {
        assert_eq!(rec.argv.len(), 1, "one argument for {:?}", rec.id);
        assert_eq!(rec.argv[0], rec.id, "argv must be the exact id");
        assert_eq!(rec.dir, fx.instances.join(&rec.id).as_os_str());
    }
}

#[test]
fn lock_names_never_collide_and_fit_name_max() {
    let names = hostile();
    let fx = Fixture::with(&names);
    run(fx.run(&["--window", "300ms", "--", "true"]), fx.tmp.path()).expect_code(0);
    let locks: Vec<_> = std::fs::read_dir(fx.locks.join("instances"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        locks.len(),
        names.len(),
        "one lock file per instance: {locks:?}"
    );
    for lock in &locks {
        assert!(lock.len() <= 255);
        assert!(!lock.as_bytes().starts_with(b"."));
        assert!(
            lock.as_bytes().iter().all(|b| b.is_ascii_graphic()),
            "{lock:?}"
        );
    }
}

#[test]
fn dry_run_keeps_one_line_per_hostile_name() {
    let names = hostile();
    let fx = Fixture::with(&names);
    let ran = run(fx.run(&["--dry-run", "--", "echo", "{}"]), fx.tmp.path());
    ran.expect_code(0);
    let lines: Vec<_> = ran
        .stdout()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), names.len(), "{}", ran.stdout());
}

#[test]
fn log_lines_about_hostile_names_stay_one_line() {
    let fx = Fixture::with(&["new\nline", "fine"]);
    let mut cmd = fx.run(&["-v", "--window", "200ms", "--"]);
    cmd.args(["sh", "-c", "exit 1"]);
    let ran = run(&mut cmd, fx.tmp.path());
    ran.expect_code(1);
    for line in ran.stderr().lines() {
        assert!(
            line.starts_with("scatter: "),
            "forged or broken line: {line:?}\n{}",
            ran.stderr()
        );
    }
    ran.expect_stderr("$'new\\nline': exited with status 1");
}

#[test]
fn a_name_is_never_run_as_shell_code() {
    let fx = Fixture::with(&["$(touch pwned)", "`touch pwned2`", "x; touch pwned3"]);
    let mut cmd = fx.run(&["--window", "300ms", "--"]);
    cmd.args(["echo", "{}"]).current_dir(fx.tmp.path());
    let ran = run(&mut cmd, fx.tmp.path());
    ran.expect_code(0);
    for f in ["pwned", "pwned2", "pwned3"] {
        assert!(
            !fx.tmp.path().join(f).exists(),
            "{f} was created: a name was executed"
        );
    }
    ran.expect_stdout("$(touch pwned)\n");
}
