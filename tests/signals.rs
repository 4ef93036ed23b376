//! Signalling only the process scatter means: pids reused by a later task
//! or an unrelated process, a forged holder record naming init, a wall
//! clock that jumps, a holder whose run is still alive.
//!
//! The pid-reuse tests run in a pid namespace of their own (`unshare -p`),
//! where writing `ns_last_pid` makes the kernel hand out a chosen pid next;
//! so does the `kill(-1)` test, so that a regression cannot take the
//! machine down with it.

use crate::util;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::util::{BIN, Fixture, run, wait_until};

/// Runs `script` with `sh` as pid 1 of a new pid namespace (and a private
/// /proc), with `$S` the scatter binary and `$T` the fixture's directory.
fn in_pid_namespace(fx: &Fixture, script: &str) -> util::Ran {
    let mut cmd = Command::new("unshare");
    cmd.args(["-p", "-f", "--mount-proc", "sh", "-c", script])
        .env("S", BIN)
        .env("T", fx.tmp.path())
        .env("REC_DIR", &fx.rec)
        .env_remove("SCATTER_LOG")
        .env_remove("RUST_LOG");
    run(cmd, fx.tmp.path())
}

fn write_script(fx: &Fixture, name: &str, body: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = fx.tmp.path().join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn a_timeout_never_fires_on_a_later_task_that_reuses_the_pid() {
    if !util::privileged("create a pid namespace and choose its next pid") {
        return;
    }
    let fx = Fixture::with(&["a", "b"]);
    // a makes the kernel hand out its own pid next, then exits at once, so
    // b (started one second later) gets that pid once a is reaped.
    let task = write_script(
        &fx,
        "task.sh",
        r#"echo $$ > "$REC_DIR/$SCATTER_INSTANCE.pid"
if [ "$SCATTER_INSTANCE" = a ]; then
  echo $(($$ - 1)) > /proc/sys/kernel/ns_last_pid
  exit 0
fi
sleep 1.5
"#,
    );
    let script = format!(
        r#"exec "$S" run --instances "$T/instances" --lock-dir "$T/locks" --state-dir "$T/state" \
  --window 2s --timeout 2s --format json -- {} {{}}"#,
        task.display()
    );
    let ran = in_pid_namespace(&fx, &script);
    let pid = |id: &str| std::fs::read_to_string(fx.rec.join(format!("{id}.pid"))).unwrap();
    ran.check(
        pid("a") == pid("b"),
        "the setup must make b reuse a's pid, or this test proves nothing",
    );
    // a's timer (due at 2 s) must not touch b, which ends at 2.5 s, well
    // within its own limit (3 s).
    ran.expect_code(0);
    let doc: serde_json::Value = serde_json::from_str(&ran.stdout()).unwrap();
    let outcomes: Vec<&str> = doc["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["outcome"].as_str().unwrap())
        .collect();
    ran.check(outcomes == ["ok", "ok"], "both tasks ok");
}

#[test]
fn a_pending_sigkill_never_hits_an_unrelated_group_that_took_the_id() {
    if !util::privileged("create a pid namespace and choose its next pid") {
        return;
    }
    let fx = Fixture::with(&["a"]);
    let task = write_script(
        &fx,
        "task.sh",
        r#"echo $$ > "$REC_DIR/a.pid"
exec sleep 30
"#,
    );
    // a dies of its timeout's SIGTERM at 0.5 s; its SIGKILL is due 3 s
    // later. Meanwhile an unrelated `setsid sleep` takes a's pid, which is
    // then also a process-group id.
    let script = format!(
        r#""$S" run --instances "$T/instances" --lock-dir "$T/locks" --state-dir "$T/state" \
  --window 1s --timeout 500ms --kill-after 3s -- {task} {{}} &
scatter=$!
i=0; until [ -s "$REC_DIR/a.pid" ]; do sleep 0.05; i=$((i+1)); [ $i -lt 200 ] || exit 90; done
p=$(cat "$REC_DIR/a.pid")
i=0; while kill -0 "$p" 2>/dev/null; do sleep 0.05; i=$((i+1)); [ $i -lt 200 ] || exit 91; done
echo $((p - 1)) > /proc/sys/kernel/ns_last_pid
setsid sleep 30 &
victim=$!
[ "$victim" = "$p" ] || {{ echo "victim got pid $victim, not $p"; exit 92; }}
wait $scatter
echo "scatter exited $?"
sleep 0.5
if kill -0 "$victim" 2>/dev/null; then echo "victim alive"; kill "$victim"; else echo "victim killed"; fi
"#,
        task = task.display()
    );
    let ran = in_pid_namespace(&fx, &script);
    ran.expect_code(0)
        .expect_stdout("scatter exited 1")
        .expect_stdout("victim alive");
}

#[test]
fn a_holder_record_naming_init_never_signals_every_process() {
    if !util::privileged("create a pid namespace to contain a kill(-1)") {
        return;
    }
    let fx = Fixture::with(&["a"]);
    // The forged record: pid 1 (init of the namespace, with its real start
    // time), past a tiny timeout, of a run that is long gone. The lock is
    // held by `flock`, so scatter finds it busy and reads the record.
    let script = r#"
job="$T/locks/instances"
mkdir -p "$job" && chmod 755 "$T/locks" "$job"
start=$(cut -d')' -f2 /proc/1/stat | awk '{print $20}')
line="scatter-holder/2 pid=1 starttime=$start started=1 timeout=0.000001 grace=0.000000 run=999999 run_start=1"
printf '%-255s\n' "$line" > "$job/a.lock"
sleep 60 &
victim=$!
flock -n "$job/a.lock" sleep 60 &
holder=$!
sleep 0.3
"$S" run --instances "$T/instances" --lock-dir "$T/locks" --state-dir "$T/state" --kill-after 200ms -v -- true
echo "scatter exited $?"
sleep 0.5
for p in $victim $holder; do
  if kill -0 $p 2>/dev/null; then echo "alive $p"; else echo "killed $p"; fi
done
kill $victim $holder
"#;
    let ran = in_pid_namespace(&fx, script);
    ran.expect_code(0).expect_stdout("scatter exited 0");
    let out = ran.stdout();
    ran.check(
        out.matches("alive ").count() == 2 && !out.contains("killed "),
        "nothing in the namespace may be signalled",
    );
}

/// Rewrites fields of the holder record in a lock file, keeping its width.
fn rewrite_record(lock: &Path, edit: &[(&str, String)]) {
    let text = std::fs::read_to_string(lock).unwrap();
    let line = text.lines().next().unwrap().trim_end();
    let words: Vec<String> = line
        .split(' ')
        .map(|w| match w.split_once('=') {
            Some((k, _)) => match edit.iter().find(|(key, _)| *key == k) {
                Some((k, v)) => format!("{k}={v}"),
                None => w.to_string(),
            },
            None => w.to_string(),
        })
        .collect();
    let mut new = words.join(" ");
    while new.len() < text.len() - 1 {
        new.push(' ');
    }
    new.push('\n');
    // Written in place, as scatter does: the file is locked by the task.
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(lock).unwrap();
    file.write_all_at(new.as_bytes(), 0).unwrap();
}

fn holder_pid(lock: &Path) -> i32 {
    let text = std::fs::read_to_string(lock).unwrap();
    text.split(' ')
        .find_map(|w| w.strip_prefix("pid="))
        .unwrap()
        .parse()
        .unwrap()
}

/// Starts `scatter run --only a -- sleep 30` in the background and waits
/// for its holder record; returns scatter and the task's pid.
fn hold_with_a_task(fx: &Fixture, extra: &[&str]) -> (std::process::Child, i32) {
    let mut args = vec!["--only", "a"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sleep", "30"]);
    let mut cmd = fx.run(&args);
    let child = util::spawn(&mut cmd);
    let lock = fx.lock_file("a");
    assert!(
        wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&lock).is_ok_and(|s| s.starts_with("scatter-holder/2"))
        }),
        "no holder record in {lock:?}"
    );
    (child, holder_pid(&lock))
}

#[test]
fn a_wall_clock_step_never_makes_a_task_look_hung() {
    let fx = Fixture::with(&["a"]);
    let (mut first, task) = hold_with_a_task(&fx, &["--timeout", "1h"]);
    // Its scatter dies (the task keeps the lock), and the wall clock of
    // the next run reads two hours later than the record's start.
    first.kill().unwrap();
    first.wait().unwrap();
    let two_hours_ago =
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap() - Duration::from_secs(7200);
    rewrite_record(
        &fx.lock_file("a"),
        &[("started", format!("{}.000000", two_hours_ago.as_secs()))],
    );
    let ran = run(fx.run_recorded(&["-v"]), fx.tmp.path());
    let alive = util::live_group_members(task) > 0;
    util::kill_group(task);
    ran.expect_code(0)
        .expect_stderr("a: skipped: lock is held by");
    ran.check(alive, "the task, 1 s into its 1 h limit, must survive");
}

#[test]
fn a_holder_whose_run_is_alive_is_left_to_that_run() {
    let fx = Fixture::with(&["a"]);
    let (mut first, task) = hold_with_a_task(&fx, &[]);
    // The record claims a tiny timeout, long past; but the run that
    // started the task is alive and supervising it.
    rewrite_record(
        &fx.lock_file("a"),
        &[
            ("timeout", "0.100000".to_string()),
            ("grace", "0.000000".to_string()),
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let ran = run(fx.run_recorded(&["-v"]), fx.tmp.path());
    let alive = util::live_group_members(task) > 0;
    first.kill().unwrap();
    first.wait().unwrap();
    util::kill_group(task);
    ran.expect_code(0)
        .expect_stderr("a: skipped: lock is held by");
    ran.check(alive, "a live run's task must not be killed by another run");
}

#[test]
fn a_hung_task_of_a_dead_run_is_still_reclaimed() {
    let fx = Fixture::with(&["a"]);
    let (mut first, task) = hold_with_a_task(&fx, &["--timeout", "200ms", "--kill-after", "100ms"]);
    // The run dies before it can enforce the timeout.
    first.kill().unwrap();
    first.wait().unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let ran = run(fx.run_recorded(&["--kill-after", "200ms"]), fx.tmp.path());
    let gone = wait_until(Duration::from_secs(5), || {
        util::live_group_members(task) == 0
    });
    util::kill_group(task);
    ran.expect_code(0).expect_stderr("past its");
    ran.check(gone, "the hung task is killed");
}
