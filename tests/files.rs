//! Files and directories that other users can write to: every directory
//! scatter writes (lock, state, `runs/`, `--output dir=`, the metrics
//! file's) and every file in them. A symlink another user could change is
//! never followed, a FIFO never blocks, a file scatter did not name is never
//! deleted, and each refusal costs exactly what the README says: a lock or
//! log directory stops the run before anything starts (exit 2), a state
//! directory costs the history, a file costs its instance. Each test plants
//! the hostile case first, then checks that the ordinary one still works.

use crate::util;

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, chown, lchown, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{Fixture, Ran, run};

use crate::util::NOBODY;

/// How long a run over a planted FIFO may take before it counts as blocked.
const HARD_LIMIT: Duration = Duration::from_secs(20);

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {path:?}: {e}"));
}

fn mkdir(path: &Path, mode: u32) -> PathBuf {
    std::fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir {path:?}: {e}"));
    chmod(path, mode);
    path.to_path_buf()
}

/// A directory anyone may write to and only owners may delete from, as
/// `/tmp`, `/run/lock` and many a textfile collector directory.
fn sticky(fx: &Fixture, name: &str) -> PathBuf {
    mkdir(&fx.tmp.path().join(name), 0o1777)
}

fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from(0o644),
        0,
    )
    .unwrap_or_else(|e| panic!("mkfifo {path:?}: {e}"));
}

/// Sorted names in `dir`.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {dir:?}: {e}"))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn ids(fx: &Fixture) -> Vec<String> {
    fx.records()
        .iter()
        .map(|r| r.id.to_string_lossy().into_owned())
        .collect()
}

/// The path as scatter's messages show it (no quoting needed in tests).
fn shown(path: &Path) -> String {
    path.display().to_string()
}

fn report(ran: &Ran) -> serde_json::Value {
    serde_json::from_str(&ran.stdout())
        .unwrap_or_else(|e| panic!("not a JSON report ({e}): {}", ran.stdout()))
}

/// Outcome and reason of `id` in a JSON report.
fn outcome(doc: &serde_json::Value, id: &str) -> (String, String) {
    let item = doc["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {doc}"));
    (
        item["outcome"].as_str().unwrap().to_string(),
        item["reason"].as_str().unwrap_or("").to_string(),
    )
}

fn warnings(ran: &Ran) -> Vec<String> {
    ran.stderr()
        .lines()
        .filter(|l| l.starts_with("scatter: warning:"))
        .map(str::to_string)
        .collect()
}

/// Runs `cmd`, killing it and failing the test if it is still running
/// after `limit`: a blocked `open` must never hang a run.
fn run_within(cmd: &mut Command, limit: Duration, tree: &Path) -> Ran {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{shown}\nstill running after {limit:?}, so it blocked; killed it\n--- stderr\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ran {
        shown,
        out: child.wait_with_output().unwrap(),
        listing: util::listing(tree),
    }
}

fn status(fx: &Fixture) -> Command {
    let mut cmd = util::scatter();
    cmd.args([
        "status",
        "--name",
        "instances",
        "--format",
        "json",
        "--state-dir",
    ])
    .arg(fx.state())
    .arg("--lock-dir")
    .arg(&fx.locks);
    cmd
}

/// A run record file name as `state::run_id` makes them, `i` days after
/// 2000-01-01 (so older than any real run).
fn old_run_name(i: u32) -> String {
    format!("200001{:02}T000000.000Z-1.json", i + 1)
}

// ---------------------------------------------------------------------------
// The state directory: a refusal costs the history, not the run.

#[test]
fn a_state_dir_anyone_can_write_costs_the_history_not_the_run() {
    let fx = Fixture::with(&["a", "b"]);
    let state = mkdir(&fx.state(), 0o777);
    let ran = run(fx.run_recorded(&["--window", "100ms"]), fx.tmp.path());
    ran.expect_code(0)
        .expect_stderr(&format!(
            "state directory {} is group- or world-writable (mode 777)",
            shown(&state)
        ))
        .expect_stderr("this run records no history");
    assert_eq!(warnings(&ran).len(), 1, "one warning: {}", ran.stderr());
    assert_eq!(ids(&fx), ["a", "b"], "the tasks ran as usual");
    assert!(names(&state).is_empty(), "nothing written through it");

    chmod(&state, 0o755);
    run(fx.run_recorded(&["--window", "100ms"]), fx.tmp.path())
        .expect_code(0)
        .expect_silent();
    assert_eq!(names(&state), ["instances.json", "instances.lock", "runs"]);
    assert_eq!(names(&state.join("runs")).len(), 1);
}

#[test]
fn a_state_dir_owned_by_another_user_costs_the_history_not_the_run() {
    if !util::privileged("give the state directory to another user") {
        return;
    }
    let fx = Fixture::with(&["a", "b"]);
    let state = mkdir(&fx.state(), 0o755);
    chown(&state, Some(NOBODY), Some(NOBODY)).unwrap();
    let ran = run(fx.run_recorded(&["--window", "100ms"]), fx.tmp.path());
    ran.expect_code(0)
        .expect_stderr("is owned by uid 65534, not by uid 0 running scatter")
        .expect_stderr("this run records no history");
    assert_eq!(warnings(&ran).len(), 1, "one warning: {}", ran.stderr());
    assert_eq!(ids(&fx), ["a", "b"]);
    assert!(names(&state).is_empty(), "nothing written through it");
}

#[test]
fn a_runs_symlink_in_a_private_state_dir_is_neither_written_nor_pruned() {
    let fx = Fixture::with(&["a"]);
    let state = mkdir(&fx.state(), 0o755);
    // Twenty files named as run records, somewhere else entirely: followed,
    // --keep-runs 3 would delete seventeen of them.
    let victim = mkdir(&fx.tmp.path().join("victim"), 0o755);
    for i in 0..20 {
        std::fs::write(victim.join(old_run_name(i)), format!("precious {i}")).unwrap();
    }
    let before = names(&victim);
    // Even a link the running user owns, in a directory nobody else can
    // write: runs/ is scatter's own and never a symlink.
    symlink(&victim, state.join("runs")).unwrap();
    let ran = run(
        fx.run_recorded(&["--window", "100ms", "--keep-runs", "3"]),
        fx.tmp.path(),
    );
    ran.expect_code(0)
        .expect_stderr(&format!(
            "state directory {} is a symlink; refusing to follow it",
            shown(&state.join("runs"))
        ))
        .expect_stderr("this run records no history");
    assert_eq!(warnings(&ran).len(), 1, "one warning: {}", ran.stderr());
    assert_eq!(ids(&fx), ["a"]);
    assert_eq!(names(&victim), before, "all 20 files survive, none added");
    for i in 0..20 {
        assert_eq!(
            std::fs::read_to_string(victim.join(old_run_name(i))).unwrap(),
            format!("precious {i}")
        );
    }
    assert_eq!(names(&state), ["runs"], "nothing written beside it either");

    std::fs::remove_file(state.join("runs")).unwrap();
    run(fx.run_recorded(&["--window", "100ms"]), fx.tmp.path())
        .expect_code(0)
        .expect_silent();
    assert!(
        std::fs::symlink_metadata(state.join("runs"))
            .unwrap()
            .is_dir()
    );
    assert_eq!(names(&state.join("runs")).len(), 1);
}

#[test]
fn a_planted_instances_lock_symlink_is_not_followed() {
    let fx = Fixture::with(&["a"]);
    let state = mkdir(&fx.state(), 0o755);
    let target = fx.tmp.path().join("created-by-root");
    symlink(&target, state.join("instances.lock")).unwrap();
    let ran = run(fx.run_recorded(&["--window", "100ms"]), fx.tmp.path());
    ran.expect_code(0)
        .expect_stderr("cannot update instance records")
        .expect_stderr(&format!(
            "{} is a symlink; refusing to follow it",
            shown(&state.join("instances.lock"))
        ));
    assert_eq!(ids(&fx), ["a"]);
    assert!(
        std::fs::symlink_metadata(&target).is_err(),
        "its target was not created"
    );
    assert!(!state.join("instances.json").exists());

    std::fs::remove_file(state.join("instances.lock")).unwrap();
    run(fx.run_recorded(&["--window", "100ms"]), fx.tmp.path())
        .expect_code(0)
        .expect_silent();
    assert!(state.join("instances.json").is_file());
    let lock = std::fs::symlink_metadata(state.join("instances.lock")).unwrap();
    assert!(lock.is_file());
    assert_eq!(lock.permissions().mode() & 0o777, 0o600);
}

#[test]
fn pruning_deletes_old_run_records_and_nothing_else() {
    let fx = Fixture::with(&["a"]);
    let runs = mkdir(&fx.state().join("runs"), 0o755);
    chmod(&fx.state(), 0o755);
    let victim = fx.tmp.path().join("victim.json");
    std::fs::write(&victim, "precious").unwrap();
    // Named like the oldest run record, but a symlink; and files scatter
    // never names so.
    symlink(&victim, runs.join(old_run_name(0))).unwrap();
    std::fs::write(runs.join("notes.json"), "mine").unwrap();
    std::fs::write(runs.join("README"), "mine").unwrap();
    std::fs::write(runs.join("2000.json"), "mine").unwrap();
    for i in 1..=5 {
        let name = old_run_name(i);
        let id = name.trim_end_matches(".json");
        std::fs::write(
            runs.join(&name),
            format!(r#"{{"format":"scatter-run/1","run_id":"{id}","state":"finished"}}"#),
        )
        .unwrap();
    }
    run(
        fx.run_recorded(&["--window", "100ms", "--keep-runs", "3"]),
        fx.tmp.path(),
    )
    .expect_code(0)
    .expect_silent();
    let left = names(&runs);
    // Six real records (five old, this run's): the three oldest go.
    for i in 1..=3 {
        assert!(!left.contains(&old_run_name(i)), "{left:?}");
    }
    for kept in [
        old_run_name(0),
        old_run_name(4),
        old_run_name(5),
        "notes.json".into(),
        "README".into(),
        "2000.json".into(),
    ] {
        assert!(left.contains(&kept), "{kept} was deleted: {left:?}");
    }
    assert_eq!(left.len(), 7, "{left:?}");
    assert!(
        std::fs::symlink_metadata(runs.join(old_run_name(0)))
            .unwrap()
            .is_symlink()
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");

    // scatter status reads the real records only.
    let ran = run(status(&fx), fx.tmp.path());
    ran.expect_code(0);
    let doc = report(&ran);
    assert_eq!(doc["last_finished_run"]["state"], "finished");
    assert_ne!(doc["last_finished_run"]["run_id"], "20000106T000000.000Z-1");
}

// ---------------------------------------------------------------------------
// --output dir=: a refused directory stops the run; a refused file fails
// its instance.

#[test]
fn an_output_dir_through_another_users_symlink_is_refused() {
    if !util::privileged("give a symlink to another user") {
        return;
    }
    let fx = Fixture::with(&["a"]);
    let real = mkdir(&fx.tmp.path().join("root-only"), 0o755);
    std::fs::write(real.join("a.log"), "precious").unwrap();
    let logs = fx.tmp.path().join("logs");
    symlink(&real, &logs).unwrap();
    lchown(&logs, Some(NOBODY), Some(NOBODY)).unwrap();
    let mode = format!("dir={}", logs.display());
    let ran = run(
        fx.run_recorded(&["--window", "100ms", "--output", &mode]),
        fx.tmp.path(),
    );
    ran.expect_code(2)
        .expect_stderr(&format!("log directory {}", shown(&logs)))
        .expect_stderr("is a symlink owned by uid 65534; refusing to follow it")
        .expect_stderr("hint:");
    assert_eq!(
        std::fs::read_to_string(real.join("a.log")).unwrap(),
        "precious",
        "not truncated, not written"
    );
    assert!(fx.records().is_empty(), "nothing started");
    assert!(!fx.state().join("runs").exists(), "nothing recorded");

    // The same link, owned by root in root's own directory, is fine.
    lchown(&logs, Some(0), Some(0)).unwrap();
    let mut cmd = fx.run(&["--window", "100ms", "--output", &mode, "--"]);
    cmd.args(["sh", "-c", "echo fresh"]);
    run(&mut cmd, fx.tmp.path()).expect_code(0).expect_silent();
    assert_eq!(
        std::fs::read_to_string(real.join("a.log")).unwrap(),
        "fresh\n"
    );
}

#[test]
fn an_output_dir_through_a_symlink_in_a_sticky_directory_is_refused() {
    let fx = Fixture::with(&["a"]);
    let shared = sticky(&fx, "tmp");
    let real = mkdir(&fx.tmp.path().join("real"), 0o750);
    std::fs::write(real.join("a.log"), "precious").unwrap();
    let logs = shared.join("logs");
    // Owned by the running user, but anyone could have put it there first.
    symlink(&real, &logs).unwrap();
    let mode = format!("dir={}", logs.display());
    for extra in [&[][..], &["--dry-run"][..]] {
        let mut args = vec!["--window", "100ms", "--output", mode.as_str()];
        args.extend_from_slice(extra);
        let ran = run(fx.run_recorded(&args), fx.tmp.path());
        ran.expect_code(2)
            .expect_stderr(&format!("log directory {}", shown(&logs)))
            .expect_stderr("is a symlink in a directory that other users can write to (mode 1777)");
    }
    assert_eq!(
        std::fs::read_to_string(real.join("a.log")).unwrap(),
        "precious"
    );
    assert!(fx.records().is_empty());

    // The directory itself is fine.
    let mode = format!("dir={}", real.display());
    run(
        fx.run_recorded(&["--window", "100ms", "--output", &mode]),
        fx.tmp.path(),
    )
    .expect_code(0)
    .expect_silent();
    assert_eq!(ids(&fx), ["a"]);
    assert_eq!(std::fs::read_to_string(real.join("a.log")).unwrap(), "");
}

#[test]
fn a_log_dir_anyone_can_write_is_refused_before_anything_runs() {
    let fx = Fixture::with(&["a"]);
    let logs = mkdir(&fx.tmp.path().join("logs"), 0o777);
    let mode = format!("dir={}", logs.display());
    run(
        fx.run_recorded(&["--window", "100ms", "--output", &mode]),
        fx.tmp.path(),
    )
    .expect_code(2)
    .expect_stderr(&format!(
        "log directory {} is group- or world-writable (mode 777)",
        shown(&logs)
    ))
    .expect_stderr("hint:");
    assert!(fx.records().is_empty());
    assert!(!fx.state().join("runs").exists(), "nothing recorded");
}

#[test]
fn a_fifo_or_symlink_planted_as_a_log_file_fails_only_that_instance() {
    let fx = Fixture::with(&["a", "b", "c", "d"]);
    let logs = mkdir(&fx.tmp.path().join("logs"), 0o750);
    let victim = fx.tmp.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    // a: a FIFO nobody reads (open for writing would wait for a reader);
    // b: a symlink to a file of ours; d: a FIFO with a reader attached, so
    // opening it succeeds and only the check after the open can catch it.
    mkfifo(&logs.join("a.log"));
    symlink(&victim, logs.join("b.log")).unwrap();
    mkfifo(&logs.join("d.log"));
    let _reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(logs.join("d.log"))
        .unwrap();
    let mode = format!("dir={}", logs.display());
    let mut cmd = fx.run(&[
        "--window", "200ms", "--format", "json", "--output", &mode, "--",
    ]);
    cmd.args(["sh", "-c", "echo out $1", "sh", "{}"]);
    let started = Instant::now();
    let ran = run_within(&mut cmd, HARD_LIMIT, fx.tmp.path());
    ran.expect_code(1);
    assert!(started.elapsed() < Duration::from_secs(10), "not prompt");
    let doc = report(&ran);
    for (id, what) in [
        ("a", "is not a regular file (a FIFO)"),
        ("b", "is a symlink; refusing to follow it"),
        ("d", "is not a regular file (a FIFO)"),
    ] {
        let (got, reason) = outcome(&doc, id);
        assert_eq!(got, "failed_to_start", "{id}: {reason}");
        let file = shown(&logs.join(format!("{id}.log")));
        assert!(
            reason.contains(&format!("log file {file} {what}")),
            "{id}: {reason}"
        );
    }
    assert_eq!(outcome(&doc, "c").0, "ok");
    assert_eq!(
        std::fs::read_to_string(logs.join("c.log")).unwrap(),
        "out c\n"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(
        std::fs::symlink_metadata(logs.join("b.log"))
            .unwrap()
            .is_symlink()
    );
}

#[test]
fn a_log_file_with_a_second_name_is_not_truncated() {
    let fx = Fixture::with(&["a"]);
    let logs = mkdir(&fx.tmp.path().join("logs"), 0o750);
    let victim = fx.tmp.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    std::fs::hard_link(&victim, logs.join("a.log")).unwrap();
    let mode = format!("dir={}", logs.display());
    run(
        fx.run_recorded(&["--window", "100ms", "--output", &mode]),
        fx.tmp.path(),
    )
    .expect_code(1)
    .expect_stderr("has 2 hard links");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
}

// ---------------------------------------------------------------------------
// Lock directories.

#[test]
fn a_lock_base_symlink_planted_by_another_user_in_a_sticky_dir_is_refused() {
    if !util::privileged("plant a symlink as another user") {
        return;
    }
    let fx = Fixture::with(&["a"]);
    // As /run/lock/scatter, created by another user before root's first run.
    let run_lock = sticky(&fx, "run-lock");
    let theirs = mkdir(&fx.tmp.path().join("theirs"), 0o755);
    let base = run_lock.join("scatter");
    symlink(&theirs, &base).unwrap();
    lchown(&base, Some(NOBODY), Some(NOBODY)).unwrap();
    let lock_dir = base.display().to_string();
    for extra in [&[][..], &["--dry-run"][..]] {
        let mut args = vec!["--lock-dir", lock_dir.as_str()];
        args.extend_from_slice(extra);
        run(fx.run_recorded(&args), fx.tmp.path())
            .expect_code(2)
            .expect_stderr(&format!(
                "lock directory {} is a symlink owned by uid 65534; refusing to follow it",
                shown(&base)
            ))
            .expect_stderr("hint:");
    }
    assert!(names(&theirs).is_empty(), "nothing created through it");
    assert!(fx.records().is_empty());
}

#[test]
fn a_lock_base_symlink_in_a_sticky_dir_is_refused_whoever_owns_it() {
    let fx = Fixture::with(&["a"]);
    let run_lock = sticky(&fx, "run-lock");
    let mine = mkdir(&fx.tmp.path().join("mine"), 0o755);
    let base = run_lock.join("scatter");
    // Ours today; another user could have made it point elsewhere first,
    // and swap it between two runs.
    symlink(&mine, &base).unwrap();
    let ran = run(
        fx.run_recorded(&["--lock-dir", base.to_str().unwrap()]),
        fx.tmp.path(),
    );
    ran.expect_code(2).expect_stderr(&format!(
        "lock directory {} is a symlink in a directory that other users can write to (mode 1777)",
        shown(&base)
    ));
    assert!(names(&mine).is_empty());

    // A real private directory in the same sticky directory is fine.
    std::fs::remove_file(&base).unwrap();
    run(
        fx.run_recorded(&["--window", "100ms", "--lock-dir", base.to_str().unwrap()]),
        fx.tmp.path(),
    )
    .expect_code(0)
    .expect_silent();
    assert!(base.join("instances/a.lock").is_file());
}

#[test]
fn a_system_link_like_var_lock_is_followed() {
    let fx = Fixture::with(&["a", "b"]);
    // /var (root's, 0755) holding lock -> /run/lock (sticky 1777).
    let run_lock = sticky(&fx, "run/lock");
    chmod(&fx.tmp.path().join("run"), 0o755);
    let var = mkdir(&fx.tmp.path().join("var"), 0o755);
    symlink(&run_lock, var.join("lock")).unwrap();
    let base = var.join("lock/scatter");
    run(
        fx.run_recorded(&["--window", "100ms", "--lock-dir", base.to_str().unwrap()]),
        fx.tmp.path(),
    )
    .expect_code(0)
    .expect_silent();
    assert_eq!(ids(&fx), ["a", "b"]);
    let job = run_lock.join("scatter/instances");
    assert_eq!(names(&job), ["a.lock", "b.lock"]);
    // Reached through the link by the dry run too, and by a relative link.
    std::fs::remove_file(var.join("lock")).unwrap();
    symlink("../run/lock", var.join("lock")).unwrap();
    let ran = run(
        fx.run_recorded(&["--dry-run", "--lock-dir", base.to_str().unwrap()]),
        fx.tmp.path(),
    );
    ran.expect_code(0);
    run(
        fx.run_recorded(&["--window", "100ms", "--lock-dir", base.to_str().unwrap()]),
        fx.tmp.path(),
    )
    .expect_code(0)
    .expect_silent();
    assert_eq!(fx.records().len(), 4);
}

#[test]
fn a_job_lock_dir_that_is_a_symlink_is_refused() {
    let fx = Fixture::with(&["a"]);
    let elsewhere = mkdir(&fx.tmp.path().join("elsewhere"), 0o755);
    mkdir(&fx.locks, 0o755);
    symlink(&elsewhere, fx.locks.join("instances")).unwrap();
    run(fx.run_recorded(&[]), fx.tmp.path())
        .expect_code(2)
        .expect_stderr(&format!(
            "lock directory {} is a symlink; refusing to follow it",
            shown(&fx.locks.join("instances"))
        ));
    assert!(names(&elsewhere).is_empty());
}

// ---------------------------------------------------------------------------
// The metrics file: its directory may be shared.

#[test]
fn a_symlink_planted_at_the_metrics_path_is_replaced_not_followed() {
    let fx = Fixture::with(&["a"]);
    let textfile = sticky(&fx, "textfile");
    let victim = fx.tmp.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let metrics = textfile.join("scatter.prom");
    symlink(&victim, &metrics).unwrap();
    if util::is_root() {
        // The real attack: another user's link in the shared directory.
        lchown(&metrics, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let mut cmd = fx.run(&["--window", "100ms", "--metrics-file"]);
    cmd.arg(&metrics).arg("--").arg(&fx.recorder).arg("{}");
    run(&mut cmd, fx.tmp.path()).expect_code(0).expect_silent();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    let meta = std::fs::symlink_metadata(&metrics).unwrap();
    assert!(meta.is_file(), "replaced by a regular file");
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);
    assert!(
        std::fs::read_to_string(&metrics)
            .unwrap()
            .contains("scatter_run_duration_seconds")
    );
    let leftovers: Vec<_> = names(&textfile)
        .into_iter()
        .filter(|n| n != "scatter.prom")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_metrics_dir_reached_through_a_symlink_in_a_sticky_dir_is_not_written() {
    let fx = Fixture::with(&["a"]);
    let shared = sticky(&fx, "tmp");
    let real = mkdir(&fx.tmp.path().join("real"), 0o755);
    symlink(&real, shared.join("textfile")).unwrap();
    let metrics = shared.join("textfile/scatter.prom");
    let mut cmd = fx.run(&["--window", "100ms", "--metrics-file"]);
    cmd.arg(&metrics).arg("--").arg(&fx.recorder).arg("{}");
    let ran = run(&mut cmd, fx.tmp.path());
    ran.expect_code(0)
        .expect_stderr("cannot write the metrics file")
        .expect_stderr("is a symlink in a directory that other users can write to");
    assert_eq!(ids(&fx), ["a"], "the task ran");
    assert!(names(&real).is_empty());
}

// ---------------------------------------------------------------------------
// An unprivileged scatter facing directories of root.

/// Makes the fixture usable by uid nobody: the tree readable, the recorder's
/// directory theirs.
fn open_to_nobody(fx: &Fixture) {
    chmod(fx.tmp.path(), 0o755);
    mkdir(&fx.rec, 0o755);
    chown(&fx.rec, Some(NOBODY), Some(NOBODY)).unwrap();
}

fn as_nobody(cmd: &mut Command) -> &mut Command {
    cmd.uid(NOBODY).gid(NOBODY)
}

#[test]
fn scatter_as_nobody_refuses_directories_of_root() {
    if !util::privileged("run scatter as uid nobody facing directories of root") {
        return;
    }
    let fx = Fixture::with(&["a", "b"]);
    open_to_nobody(&fx);
    // Root's, mode 0755: nobody could not write there anyway, but scatter
    // says so plainly instead of failing file by file.
    let locks = mkdir(&fx.locks, 0o755);
    let ran = run(
        as_nobody(&mut fx.run_recorded(&["--window", "100ms"])),
        fx.tmp.path(),
    );
    ran.expect_code(2).expect_stderr(&format!(
        "lock directory {} is owned by uid 0, not by uid 65534 running scatter",
        shown(&locks)
    ));
    assert!(fx.records().is_empty());

    // Its own lock directory, root's state directory: the run goes ahead
    // without history.
    chown(&locks, Some(NOBODY), Some(NOBODY)).unwrap();
    let state = mkdir(&fx.state(), 0o755);
    let ran = run(
        as_nobody(&mut fx.run_recorded(&["--window", "100ms"])),
        fx.tmp.path(),
    );
    ran.expect_code(0).expect_stderr(&format!(
        "state directory {} is owned by uid 0, not by uid 65534 running scatter",
        shown(&state)
    ));
    assert_eq!(warnings(&ran).len(), 1, "{}", ran.stderr());
    assert_eq!(ids(&fx), ["a", "b"]);
    assert!(names(&state).is_empty());

    // Root's log directory stops the run.
    let logs = mkdir(&fx.tmp.path().join("logs"), 0o750);
    let mode = format!("dir={}", logs.display());
    run(
        as_nobody(&mut fx.run_recorded(&["--window", "100ms", "--output", &mode])),
        fx.tmp.path(),
    )
    .expect_code(2)
    .expect_stderr(&format!(
        "log directory {} is owned by uid 0, not by uid 65534 running scatter",
        shown(&logs)
    ));

    // With directories of its own, everything works.
    chown(&state, Some(NOBODY), Some(NOBODY)).unwrap();
    chown(&logs, Some(NOBODY), Some(NOBODY)).unwrap();
    run(
        as_nobody(&mut fx.run_recorded(&["--window", "100ms", "--output", &mode])),
        fx.tmp.path(),
    )
    .expect_code(0)
    .expect_silent();
    assert_eq!(names(&logs), ["a.log", "b.log"]);
    assert_eq!(names(&state.join("runs")).len(), 1);
}

// ---------------------------------------------------------------------------
// scatter status: reads are bounded and never block.

#[test]
fn status_neither_blocks_nor_reads_without_bound() {
    let fx = Fixture::with(&["a"]);
    run(fx.run_recorded(&["--window", "100ms"]), fx.tmp.path()).expect_code(0);
    let state = fx.state();
    let runs = state.join("runs");
    // A FIFO and an endless record named as run records.
    mkfifo(&runs.join(old_run_name(0)));
    let big = std::fs::File::create(runs.join(old_run_name(1))).unwrap();
    big.set_len(100 << 20).unwrap();
    // A FIFO among the lock files.
    mkfifo(&fx.locks.join("instances/z.lock"));
    let ran = run_within(&mut status(&fx), HARD_LIMIT, fx.tmp.path());
    ran.expect_code(0).expect_stderr(&format!(
        "run record {} is 100 MiB, more than the 1 MiB scatter reads",
        shown(&runs.join(old_run_name(1)))
    ));
    assert_eq!(report(&ran)["last_finished_run"]["state"], "finished");

    // instances.json as a FIFO, then larger than scatter reads.
    let instances = state.join("instances.json");
    std::fs::rename(&instances, state.join("saved.json")).unwrap();
    mkfifo(&instances);
    run_within(&mut status(&fx), HARD_LIMIT, fx.tmp.path())
        .expect_code(2)
        .expect_stderr("is not a regular file (a FIFO)");
    std::fs::remove_file(&instances).unwrap();
    let huge = std::fs::File::create(&instances).unwrap();
    huge.set_len(300 << 20).unwrap();
    run_within(&mut status(&fx), HARD_LIMIT, fx.tmp.path())
        .expect_code(2)
        .expect_stderr("is 300 MiB, more than the 256 MiB scatter reads");

    std::fs::rename(state.join("saved.json"), &instances).unwrap();
    run_within(&mut status(&fx), HARD_LIMIT, fx.tmp.path()).expect_code(0);
}
