//! Tenant health end to end: `--include`/`--exclude`, pause and resume,
//! back-off across runs, widespread failures, `--report changes`, and the
//! `--on-change` hook (exactly once per change, even when scatter is
//! SIGKILLed; hooks that fail or hang; hostile ids byte for byte).

use crate::util;

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use crate::util::{Fixture, NOBODY, run, scatter};

/// A task that fails (exit 1) when its instance directory holds `fail`.
const TASK: &[&str] = &["sh", "-c", r#"[ ! -e "$1/fail" ]"#, "sh", "{path}"];

/// The hook: appends its event, whether `SCATTER_INSTANCE` is set, the
/// instance, failures, reason, since, name and state directory,
/// NUL-separated, to
/// `$HOOK_LOG`. `HOOK_SAY` makes it print a line; `HOOK_KILL_ONCE` (a
/// path) makes the first call SIGKILL scatter; `HOOK_EXIT` is its status;
/// `HOOK_HANG` makes it leave a child and hang, both writing their pids.
const HOOK: &str = r#"#!/bin/sh
printf '%s\0' "$SCATTER_EVENT" "${SCATTER_INSTANCE+set}" "$SCATTER_INSTANCE" "$SCATTER_FAILURES" "$SCATTER_REASON" "$SCATTER_SINCE" "$SCATTER_NAME" "$SCATTER_STATE_DIR" >> "$HOOK_LOG"
if [ -n "$HOOK_SAY" ]; then echo "hook says $SCATTER_EVENT"; fi
if [ -n "$HOOK_KILL_ONCE" ] && [ ! -e "$HOOK_KILL_ONCE" ]; then
    : > "$HOOK_KILL_ONCE"
    kill -KILL "$PPID"
    sleep 1
fi
if [ -n "$HOOK_HANG" ]; then
    echo $$ > "$HOOK_HANG"
    sleep 60 &
    sleep 60
fi
exit "${HOOK_EXIT:-0}"
"#;

#[derive(Debug, Clone, PartialEq)]
struct Call {
    event: String,
    instance: Option<OsString>,
    failures: u64,
    reason: String,
    since: u64,
    name: String,
    state_dir: String,
}

struct Health {
    fx: Fixture,
    hook: PathBuf,
    log: PathBuf,
}

impl Health {
    fn new<S: AsRef<OsStr>>(names: &[S]) -> Health {
        let fx = Fixture::with(names);
        let hook = fx.tmp.path().join("notify");
        std::fs::write(&hook, HOOK).unwrap();
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        let log = fx.tmp.path().join("hook.log");
        Health { fx, hook, log }
    }

    fn fail(&self, id: impl AsRef<OsStr>, failing: bool) {
        let marker = self.fx.instances.join(id.as_ref()).join("fail");
        if failing {
            std::fs::write(marker, "").unwrap();
        } else {
            let _ = std::fs::remove_file(marker);
        }
    }

    /// `scatter run` of the fixture with `args`, then the failing task.
    fn run(&self, args: &[&str]) -> Command {
        let mut cmd = self.fx.run(&["--window", "100ms"]);
        cmd.args(args)
            .arg("--")
            .args(TASK)
            .env("HOOK_LOG", &self.log);
        cmd
    }

    /// The same, with the hook.
    fn hooked(&self, args: &[&str]) -> Command {
        let mut cmd = self.fx.run(&["--window", "100ms", "--on-change"]);
        cmd.arg(&self.hook)
            .args(args)
            .arg("--")
            .args(TASK)
            .env("HOOK_LOG", &self.log);
        cmd
    }

    /// `scatter pause|resume --instances … --state-dir …` and `args`.
    fn pause(&self, verb: &str, args: &[&str]) -> Command {
        let mut cmd = scatter();
        cmd.arg(verb)
            .arg("--instances")
            .arg(&self.fx.instances)
            .arg("--state-dir")
            .arg(self.fx.state())
            .args(args);
        cmd
    }

    fn status(&self) -> serde_json::Value {
        let ran = run(self.fx.status(&["--format", "json"]), self.fx.tmp.path());
        serde_json::from_slice(&ran.out.stdout).unwrap()
    }

    fn calls(&self) -> Vec<Call> {
        let Ok(bytes) = std::fs::read(&self.log) else {
            return Vec::new();
        };
        let mut fields: Vec<Vec<u8>> = bytes.split(|b| *b == 0).map(<[u8]>::to_vec).collect();
        fields.pop();
        assert_eq!(fields.len() % 8, 0, "{:?}", String::from_utf8_lossy(&bytes));
        fields
            .chunks(8)
            .map(|f| {
                let text = |i: usize| String::from_utf8_lossy(&f[i]).into_owned();
                Call {
                    event: text(0),
                    instance: (f[1] == b"set").then(|| OsString::from_vec(f[2].clone())),
                    failures: text(3).parse().unwrap(),
                    reason: text(4),
                    since: text(5).parse().unwrap_or(0),
                    name: text(6),
                    state_dir: text(7),
                }
            })
            .collect()
    }

    fn events(&self) -> Vec<(String, Option<String>)> {
        self.calls()
            .into_iter()
            .map(|c| {
                (
                    c.event,
                    c.instance.map(|i| i.to_string_lossy().into_owned()),
                )
            })
            .collect()
    }

    fn clear_records(&self) {
        std::fs::remove_dir_all(&self.fx.rec).unwrap();
        std::fs::create_dir(&self.fx.rec).unwrap();
    }

    fn recorded_ids(&self) -> Vec<String> {
        self.fx
            .records()
            .iter()
            .map(|r| r.id.to_string_lossy().into_owned())
            .collect()
    }
}

fn json(ran: &util::Ran) -> serde_json::Value {
    serde_json::from_slice(&ran.out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", ran.stdout(), ran.stderr()))
}

fn instance<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {report}"))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn include_and_exclude_choose_the_instances() {
    let h = Health::new(&["acme", "globex", "lost+found", "_template"]);
    let fx = &h.fx;
    // Before any filter, every directory has a record.
    run(fx.run_recorded(&["--window", "100ms"]), fx.tmp.path()).expect_code(0);
    h.clear_records();
    let exclude = [
        "--window",
        "100ms",
        "--exclude",
        "lost+found",
        "--exclude",
        "_*",
    ];
    run(fx.run_recorded(&exclude), fx.tmp.path())
        .expect_code(0)
        .expect_silent();
    assert_eq!(h.recorded_ids(), ["acme", "globex"]);
    // Those left out still exist: their records are not pruned.
    let state = std::fs::read_to_string(fx.state().join("instances.json")).unwrap();
    assert!(
        state.contains("lost+found") && state.contains("_template"),
        "{state}"
    );
    h.clear_records();
    let include = ["--window", "100ms", "--include", "a*", "--include", "z?"];
    run(fx.run_recorded(&include), fx.tmp.path()).expect_code(0);
    assert_eq!(h.recorded_ids(), ["acme"]);

    // The dry run counts them, and -v lists them.
    let mut dry = exclude.to_vec();
    dry.push("--dry-run");
    let ran = run(fx.run_recorded(&dry), fx.tmp.path());
    ran.expect_code(0)
        .expect_stdout("# filter    --exclude lost+found --exclude $'_*': 2 instances left out\n");
    assert!(!ran.stdout().contains("# excluded"), "{}", ran.stdout());
    let mut verbose = vec!["-v"];
    verbose.extend(&dry);
    run(fx.run_recorded(&verbose), fx.tmp.path())
        .expect_code(0)
        .expect_stdout("# excluded  _template\n# excluded  lost+found\n");
    dry.extend(["--format", "json"]);
    let plan = json(&run(fx.run_recorded(&dry), fx.tmp.path()));
    assert_eq!(
        plan["excluded"],
        serde_json::json!(["_template", "lost+found"])
    );
    assert_eq!(plan["count"], 2);

    // --only with an excluded id, and a glob that does not parse, stop
    // everything before it starts.
    let mut only = exclude.to_vec();
    only.extend(["--only", "_template"]);
    run(fx.run_recorded(&only), fx.tmp.path())
        .expect_code(2)
        .expect_stderr("--only _template: this instance is left out by --exclude $'_*'")
        .expect_stderr("scatter: hint:");
    let h2 = Health::new(&["acme"]);
    run(h2.fx.run_recorded(&["--include", "[a-"]), h2.fx.tmp.path())
        .expect_code(2)
        .expect_stderr("--include $'[a-'");
    assert!(!h2.fx.locks.exists() && h2.fx.records().is_empty());
}

#[test]
fn a_paused_instance_is_held_back_until_resumed_or_its_time_is_up() {
    let h = Health::new(&["acme", "globex"]);
    let fx = &h.fx;
    let recorded = |args: &[&str]| {
        let mut cmd = fx.run_recorded(args);
        cmd.env("REC_FAIL_ID", "acme");
        run(cmd, fx.tmp.path())
    };
    recorded(&["--window", "100ms"]).expect_code(1);
    let ran = run(
        h.pause("pause", &["--reason", "moving mailboxes", "acme"]),
        fx.tmp.path(),
    );
    ran.expect_code(0)
        .expect_stdout(&format!("acme: paused by {} since ", user()))
        .expect_stdout(": moving mailboxes\n");

    h.clear_records();
    let ran = recorded(&["--window", "100ms", "--format", "json"]);
    ran.expect_code(0);
    let report = json(&ran);
    assert_eq!(instance(&report, "acme")["outcome"], "paused");
    assert!(
        instance(&report, "acme")["reason"]
            .as_str()
            .unwrap()
            .ends_with(": moving mailboxes")
    );
    assert_eq!(report["counts"]["paused"], 1);
    assert_eq!(h.recorded_ids(), ["globex"]);

    // Failing, but paused: scatter status is content.
    let status = h.status();
    assert_eq!(status["exit_code"], 0);
    assert_eq!(status["pauses"][0]["id"], "acme");
    assert_eq!(status["pauses"][0]["reason"], "moving mailboxes");
    assert_eq!(status["pauses"][0]["by"], user());
    assert_eq!(status["pauses"][0]["until"], serde_json::Value::Null);
    let acme = status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == "acme")
        .unwrap();
    assert_eq!(
        (acme["paused"].as_bool(), acme["failing"].as_bool()),
        (Some(true), Some(false))
    );
    run(fx.status(&[]), fx.tmp.path())
        .expect_code(0)
        .expect_stdout("Paused\n  acme  by ")
        .expect_stdout(", until resumed: moving mailboxes\n");

    // By hand it runs anyway, and says so.
    h.clear_records();
    recorded(&["--only", "acme"])
        .expect_code(3)
        .expect_stderr("acme is paused by ")
        .expect_stderr("running it anyway, as --only says");
    assert_eq!(h.recorded_ids(), ["acme"]);

    run(h.pause("resume", &["acme"]), fx.tmp.path())
        .expect_code(0)
        .expect_stdout("acme: resumed\n");
    h.clear_records();
    recorded(&["--window", "100ms"]).expect_code(1);
    assert_eq!(h.recorded_ids(), ["acme", "globex"]);

    // A pause given --for ends by itself.
    run(h.pause("pause", &["--for", "1s", "globex"]), fx.tmp.path())
        .expect_code(0)
        .expect_stdout("globex: paused by ")
        .expect_stdout(" until ");
    h.clear_records();
    recorded(&["--window", "100ms"]).expect_code(1);
    assert_eq!(h.recorded_ids(), ["acme"]);
    std::thread::sleep(Duration::from_millis(1300));
    h.clear_records();
    recorded(&["--window", "100ms"]).expect_code(1);
    assert_eq!(h.recorded_ids(), ["acme", "globex"]);
    assert!(h.status()["pauses"].as_array().unwrap().is_empty());

    // --all ends every pause.
    run(h.pause("pause", &["acme", "globex"]), fx.tmp.path()).expect_code(0);
    run(h.pause("resume", &["--all"]), fx.tmp.path())
        .expect_code(0)
        .expect_stdout("resumed 2 instances\n");
    run(h.pause("resume", &["acme"]), fx.tmp.path())
        .expect_code(0)
        .expect_stderr("acme was not paused");
}

#[test]
fn pause_refuses_what_no_run_would_read_unless_forced() {
    let h = Health::new(&["acme"]);
    let fx = &h.fx;
    // No run has used the state directory yet.
    let state = fx.state().to_string_lossy().into_owned();
    run(h.pause("pause", &["acme"]), fx.tmp.path())
        .expect_code(2)
        .expect_stderr(&format!(
            "no scatter run has used the state directory {state}"
        ))
        .expect_stderr("scatter: hint:");
    assert!(!fx.state().join("pauses.json").exists());
    run(h.pause("pause", &["--force", "acme"]), fx.tmp.path()).expect_code(0);
    run(h.pause("resume", &["acme"]), fx.tmp.path()).expect_code(0);

    run(fx.run_recorded(&["--window", "100ms"]), fx.tmp.path()).expect_code(0);
    run(h.pause("pause", &["ghost"]), fx.tmp.path())
        .expect_code(2)
        .expect_stderr("ghost is not an instance in ")
        .expect_stderr("--force pauses it anyway");
    run(h.pause("pause", &["a/b"]), fx.tmp.path())
        .expect_code(2)
        .expect_stderr("not an instance id");
    run(h.pause("pause", &[".."]), fx.tmp.path()).expect_code(2);
    // A tenant not created yet: paused before it exists, and the pause
    // survives full runs that prune stale records.
    run(h.pause("pause", &["--force", "ghost"]), fx.tmp.path()).expect_code(0);
    run(fx.run_recorded(&["--window", "100ms"]), fx.tmp.path()).expect_code(0);
    fx.instance("ghost");
    h.clear_records();
    let report = json(&run(
        fx.run_recorded(&["--window", "100ms", "--format", "json"]),
        fx.tmp.path(),
    ));
    assert_eq!(instance(&report, "ghost")["outcome"], "paused");
    assert_eq!(h.recorded_ids(), ["acme"]);

    if !util::privileged("running scatter pause as another user") {
        return;
    }
    // Another user cannot write pauses into root's state directory, nor
    // silently into one of its own that root's runs never read.
    let home = fx.tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(fx.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = h.pause("pause", &["acme"]);
    cmd.uid(NOBODY).gid(NOBODY);
    run(cmd, fx.tmp.path())
        .expect_code(2)
        .expect_stderr("owned by");
    let mut cmd = scatter();
    cmd.args(["pause", "--name", "instances", "acme"])
        .env("HOME", &home)
        .env_remove("XDG_STATE_HOME")
        .uid(NOBODY)
        .gid(NOBODY);
    let mine = home.join(".local/state/scatter/instances");
    run(cmd, fx.tmp.path())
        .expect_code(2)
        .expect_stderr(&format!(
            "no scatter run has used the state directory {}",
            mine.display()
        ));
    let pauses = std::fs::read_to_string(fx.state().join("pauses.json")).unwrap();
    assert!(!pauses.contains("\"acme\""), "{pauses}");
}

#[test]
fn a_failing_instance_backs_off_across_runs() {
    let h = Health::new(&["acme", "globex"]);
    let fx = &h.fx;
    h.fail("acme", true);
    let metrics = fx.tmp.path().join("scatter.prom");
    let metrics_arg = metrics.to_str().unwrap();
    let args = [
        "--backoff",
        "1s,4s",
        "--format",
        "json",
        "--metrics-file",
        metrics_arg,
    ];
    // Runs back to back: acme is attempted after 1 s, 2 s, 4 s, 4 s.
    let begun = Instant::now();
    let mut attempts: Vec<f64> = Vec::new();
    let mut held = 0;
    while attempts.len() < 5 {
        assert!(begun.elapsed() < Duration::from_secs(40), "{attempts:?}");
        let ran = run(h.run(&args), fx.tmp.path());
        let report = json(&ran);
        let acme = instance(&report, "acme");
        match acme["outcome"].as_str().unwrap() {
            "failed" => {
                ran.expect_code(1);
                attempts.push(acme["started"].as_f64().unwrap());
            }
            "backed_off" => {
                // Not a failure of this run, and it says when.
                ran.expect_code(0);
                held += 1;
                let next = acme["next_attempt"].as_f64().unwrap();
                assert!(acme["reason"].as_str().unwrap().contains("next attempt at"));
                assert!(next > *attempts.last().unwrap(), "{acme}");
            }
            other => panic!("acme {other}: {report}"),
        }
        assert_eq!(instance(&report, "globex")["outcome"], "ok");
        std::thread::sleep(Duration::from_millis(100));
    }
    let gaps: Vec<f64> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    for (gap, delay) in gaps.iter().zip([1.0, 2.0, 4.0, 4.0]) {
        // Never earlier than a tenth of the delay ahead; a little late, as
        // the loop goes.
        assert!(*gap >= delay * 0.9 - 0.01, "{gaps:?}");
        assert!(*gap < delay + 1.5, "{gaps:?}");
    }
    assert!(held >= 5, "{held} runs held acme back");

    let status = h.status();
    let acme = status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == "acme")
        .unwrap();
    assert_eq!(status["exit_code"], 1, "backing off is still failing");
    assert_eq!(acme["consecutive_failures"], 5);
    assert_eq!(acme["backoff_level"], 5);
    let next = acme["next_attempt"].as_f64().unwrap();
    assert!((next - (attempts[4] + 4.0)).abs() < 0.5, "{acme}");
    let prom = std::fs::read_to_string(&metrics).unwrap();
    for line in [
        "scatter_instance_backoff_level{scatter_name=\"instances\",instance_id=\"acme\"} 5\n",
        "scatter_instance_consecutive_failures{scatter_name=\"instances\",instance_id=\"acme\"} 5\n",
        "scatter_instance_paused{scatter_name=\"instances\",instance_id=\"acme\"} 0\n",
        "scatter_instance_next_attempt_timestamp_seconds{scatter_name=\"instances\",instance_id=\"acme\"} ",
        "scatter_run_widespread_failure{scatter_name=\"instances\"} 0\n",
    ] {
        assert!(prom.contains(line), "{line} in {prom}");
    }

    // One success resets it: attempted in the very next run after.
    h.fail("acme", false);
    let until = Duration::from_secs(6);
    assert!(util::wait_until(until, || {
        let report = json(&run(h.run(&args), fx.tmp.path()));
        instance(&report, "acme")["outcome"] == "ok"
    }));
    h.fail("acme", true);
    let report = json(&run(h.run(&args), fx.tmp.path()));
    assert_eq!(instance(&report, "acme")["outcome"], "failed");
    let report = json(&run(h.run(&args), fx.tmp.path()));
    assert_eq!(instance(&report, "acme")["outcome"], "backed_off");
    // --only ignores back-off.
    let mut only = h.run(&["--backoff", "1s,4s", "--only", "acme"]);
    let ran = run(&mut only, fx.tmp.path());
    ran.expect_code(1);
}

#[test]
fn a_widespread_failure_is_one_line_and_one_event_and_advances_no_back_off() {
    let ids: Vec<String> = (0..10).map(|i| format!("t{i}")).collect();
    let h = Health::new(&ids);
    for id in &ids {
        h.fail(id, true);
    }
    let args = ["--report", "changes", "--backoff", "1s,4s"];
    let ran = run(h.hooked(&args), h.fx.tmp.path());
    ran.expect_code(1);
    assert_eq!(
        ran.stderr(),
        "scatter: 10 of 10 instances failed: widespread failure\n\
         scatter: 10 of 10 instances failed (10 failed)\n"
    );
    assert_eq!(h.events(), [("widespread".to_string(), None)]);
    let call = &h.calls()[0];
    assert_eq!(call.failures, 10);
    assert_eq!(call.reason, "10 of 10 instances failed");
    assert!(call.since.abs_diff(now()) < 60);
    // While it lasts: nothing, and nobody backs off.
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(1100));
        let ran = run(h.hooked(&args), h.fx.tmp.path());
        ran.expect_code(1).expect_silent();
    }
    assert_eq!(h.calls().len(), 1);
    let status = h.status();
    assert!(status["widespread"]["since"].as_f64().is_some(), "{status}");
    for i in status["instances"].as_array().unwrap() {
        assert_eq!(i["consecutive_failures"], 3, "{i}");
        assert_eq!(i["backoff_level"], 0, "{i}");
    }
    // The first healthy run ends it, once.
    for id in &ids {
        h.fail(id, false);
    }
    let ran = run(h.hooked(&args), h.fx.tmp.path());
    ran.expect_code(0);
    let err = ran.stderr();
    assert!(
        err.starts_with("scatter: widespread failure over after ")
            && err.contains(": 0 of 10 instances failed\nscatter: 10 instances (10 ok)\n"),
        "{err}"
    );
    assert_eq!(
        h.events(),
        [
            ("widespread".to_string(), None),
            ("widespread-recovered".to_string(), None)
        ]
    );
    run(h.hooked(&args), h.fx.tmp.path())
        .expect_code(0)
        .expect_silent();
    assert_eq!(h.calls().len(), 2);
}

#[test]
fn report_changes_is_silent_on_repeats() {
    let h = Health::new(&["acme", "globex", "initech"]);
    h.fail("acme", true);
    let changes = ["--report", "changes"];
    let ran = run(h.run(&changes), h.fx.tmp.path());
    ran.expect_code(1);
    let err = ran.stderr();
    assert!(
        err.starts_with("scatter: acme: failing: exited with status 1 after ")
            && err.ends_with("\nscatter: 1 of 3 instances failed (2 ok, 1 failed)\n")
            && err.lines().count() == 2,
        "{err}"
    );
    // The repeats: not a byte on stderr, the same exit code.
    for _ in 0..2 {
        run(h.run(&changes), h.fx.tmp.path())
            .expect_code(1)
            .expect_silent();
    }
    let ran = run(
        h.run(&["--report", "changes", "--format", "json"]),
        h.fx.tmp.path(),
    );
    ran.expect_code(1);
    assert!(ran.out.stderr.is_empty(), "{}", ran.stderr());
    let report = json(&ran);
    assert_eq!(instance(&report, "acme")["outcome"], "failed");
    assert_eq!(report["changes"], serde_json::json!([]));
    h.fail("acme", false);
    let ran = run(
        h.run(&["--report", "changes", "--format", "json"]),
        h.fx.tmp.path(),
    );
    ran.expect_code(0);
    assert!(
        ran.stderr()
            .starts_with("scatter: acme: recovered after 4 failures in "),
        "{}",
        ran.stderr()
    );
    assert_eq!(ran.stderr().lines().count(), 1, "no summary with JSON");
    assert_eq!(json(&ran)["changes"][0]["event"], "recovered");
    run(h.run(&changes), h.fx.tmp.path())
        .expect_code(0)
        .expect_silent();

    // Flapping is filtered; a reminder comes after --remind.
    let args = [
        "--report",
        "changes",
        "--failures-before-report",
        "2",
        "--remind",
        "1s",
    ];
    h.fail("globex", true);
    run(h.run(&args), h.fx.tmp.path())
        .expect_code(1)
        .expect_silent();
    run(h.run(&args), h.fx.tmp.path())
        .expect_code(1)
        .expect_stderr("scatter: globex: failing, 2 failures in a row: exited with status 1");
    run(h.run(&args), h.fx.tmp.path())
        .expect_code(1)
        .expect_silent();
    std::thread::sleep(Duration::from_millis(1100));
    run(h.run(&args), h.fx.tmp.path())
        .expect_code(1)
        .expect_stderr("scatter: globex: still failing after 4 failures in ");
}

#[test]
fn the_hook_fires_once_per_change_even_when_scatter_is_killed() {
    let h = Health::new(&["a", "b", "c"]);
    h.fail("a", true);
    h.fail("b", true);
    let marker = h.fx.tmp.path().join("killed");
    // Two changes recorded; the first hook SIGKILLs scatter before the
    // second runs.
    let mut cmd = h.hooked(&[]);
    cmd.env("HOOK_KILL_ONCE", &marker);
    let ran = run(cmd, h.fx.tmp.path());
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(ran.out.status.signal(), Some(9), "{}", ran.stderr());
    assert_eq!(h.events(), [("failing".to_string(), Some("a".to_string()))]);
    // The next run fires what is left, and nothing twice.
    let mut cmd = h.hooked(&[]);
    cmd.env("HOOK_KILL_ONCE", &marker);
    run(cmd, h.fx.tmp.path()).expect_code(1);
    let failing = |id: &str| ("failing".to_string(), Some(id.to_string()));
    assert_eq!(h.events(), [failing("a"), failing("b")]);
    run(h.hooked(&[]), h.fx.tmp.path()).expect_code(1);
    assert_eq!(h.calls().len(), 2);
    let call = &h.calls()[1];
    assert_eq!((call.failures, call.name.as_str()), (1, "instances"));
    assert_eq!(call.state_dir, h.fx.state().to_str().unwrap());
    assert!(
        call.reason.starts_with("exited with status 1 after "),
        "{call:?}"
    );
    assert!(call.since.abs_diff(now()) < 60, "{call:?}");
    h.fail("a", false);
    run(h.hooked(&[]), h.fx.tmp.path()).expect_code(1);
    let calls = h.calls();
    assert_eq!(calls.len(), 3);
    assert_eq!(
        (calls[2].event.as_str(), calls[2].failures),
        ("recovered", 3)
    );
    // A run without the hook (by hand) still queues its changes for the
    // job's next run with one.
    h.fail("b", false);
    run(h.run(&["--only", "b"]), h.fx.tmp.path()).expect_code(0);
    assert_eq!(h.calls().len(), 3);
    run(h.hooked(&[]), h.fx.tmp.path()).expect_code(0);
    assert_eq!(
        h.events()[3],
        ("recovered".to_string(), Some("b".to_string()))
    );
}

#[test]
fn a_hook_that_fails_or_hangs_never_changes_the_run() {
    let h = Health::new(&["a"]);
    h.fail("a", true);
    let mut cmd = h.hooked(&[]);
    cmd.env("HOOK_EXIT", "1").env("HOOK_SAY", "1");
    run(cmd, h.fx.tmp.path())
        .expect_code(1)
        .expect_stderr("scatter: on-change failing a: hook says failing\n")
        .expect_stderr("on-change failing a: the hook exited with status 1");
    // Not retried.
    run(h.hooked(&[]), h.fx.tmp.path()).expect_code(1);
    assert_eq!(h.calls().len(), 1);

    let h = Health::new(&["a"]);
    let pid_file = h.fx.tmp.path().join("hook.pid");
    let mut cmd = h.hooked(&["--hook-timeout", "1s"]);
    cmd.env("HOOK_HANG", &pid_file);
    h.fail("a", true);
    let begun = Instant::now();
    let ran = run(cmd, h.fx.tmp.path());
    ran.expect_code(1).expect_stderr(
        "the hook was still running after 1.0s (--hook-timeout); its process group was killed",
    );
    assert!(
        begun.elapsed() < Duration::from_secs(15),
        "{:?}",
        begun.elapsed()
    );
    let pgid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The hook and the child it left are gone with their group.
    assert!(util::wait_until(
        Duration::from_secs(5),
        || util::live_group_members(pgid) == 0
    ));
}

#[test]
fn hostile_ids_reach_the_hook_and_pause_byte_for_byte() {
    let ids: Vec<OsString> = vec![
        "new\nline".into(),
        "quo'te $(reboot)".into(),
        OsString::from_vec(b"caf\xe9".to_vec()),
        "-dash".into(),
    ];
    let h = Health::new(&ids);
    for id in &ids {
        h.fail(id, true);
    }
    run(h.hooked(&[]), h.fx.tmp.path()).expect_code(1);
    let mut got: Vec<OsString> = h.calls().into_iter().filter_map(|c| c.instance).collect();
    got.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got, want);

    let mut cmd = h.pause("pause", &["--reason", "two\nlines"]);
    cmd.arg("--").args(&ids);
    let ran = run(cmd, h.fx.tmp.path());
    ran.expect_code(0)
        .expect_stdout("$'new\\nline': paused by ")
        .expect_stdout("$'caf\\xE9': paused by ")
        .expect_stdout(": $'two\\nlines'\n");
    assert_eq!(ran.stdout().lines().count(), 4, "{}", ran.stdout());
    let report = json(&run(h.hooked(&["--format", "json"]), h.fx.tmp.path()));
    assert_eq!(report["counts"]["paused"], 4, "{report}");
    let status = h.status();
    let hex: Vec<&str> = status["pauses"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["id_hex"].as_str())
        .collect();
    assert_eq!(hex, ["636166e9"]);
    let mut cmd = h.pause("resume", &["--"]);
    cmd.args(&ids);
    run(cmd, h.fx.tmp.path()).expect_code(0);
    run(h.hooked(&[]), h.fx.tmp.path()).expect_code(1);
    let mut unpaused: Vec<OsString> = h
        .calls()
        .into_iter()
        .filter(|c| c.event == "unpaused")
        .filter_map(|c| c.instance)
        .collect();
    unpaused.sort();
    assert_eq!(unpaused, want);
    let ids_path: PathBuf = h.fx.instances.join(OsStr::from_bytes(b"caf\xe9"));
    assert!(ids_path.exists());
}

#[test]
fn the_dry_run_shows_holds_only_when_asked() {
    let h = Health::new(&["acme", "globex", "initech"]);
    let fx = &h.fx;
    let dry = |extra: &[&str]| {
        let mut cmd = fx.run(&["--dry-run", "--backoff", "1m,1h"]);
        cmd.args(extra).arg("--").args(TASK);
        let ran = run(cmd, fx.tmp.path());
        ran.expect_code(0);
        ran.stdout()
    };
    let before = dry(&[]);
    h.fail("acme", true);
    run(h.run(&["--backoff", "1m,1h"]), fx.tmp.path()).expect_code(1);
    run(
        h.pause("pause", &["--reason", "moving", "globex"]),
        fx.tmp.path(),
    )
    .expect_code(0);
    // A function of the directory and the flags, whatever the state.
    assert_eq!(dry(&[]), before);
    let now = dry(&["--with-state"]);
    let line = |id: &str| {
        now.lines()
            .find(|l| l.contains(&format!("  {id}  ")))
            .unwrap()
            .to_string()
    };
    assert!(
        line("acme").contains("  # backed off: failing; next attempt at "),
        "{now}"
    );
    assert!(
        line("globex").contains("  # paused by ") && line("globex").ends_with(": moving"),
        "{now}"
    );
    assert!(!line("initech").contains('#'), "{now}");
    let plan: serde_json::Value =
        serde_json::from_str(&dry(&["--with-state", "--format", "json"])).unwrap();
    let entries = plan["instances"].as_array().unwrap();
    assert_eq!(entries[0]["held"], "backed_off");
    assert!(entries[0]["next_attempt"].as_f64().unwrap() > 0.0);
    assert_eq!(entries[1]["held"], "paused");
    assert!(entries[2].get("held").is_none());
    // --with-state belongs to the dry run.
    let mut cmd = fx.run(&["--with-state", "--"]);
    cmd.args(TASK);
    run(cmd, fx.tmp.path())
        .expect_code(2)
        .expect_stderr("--dry-run");
}

#[test]
fn a_stop_signal_ends_a_running_hook_and_scatter() {
    let h = Health::new(&["a"]);
    h.fail("a", true);
    let pid_file = h.fx.tmp.path().join("hook.pid");
    let mut cmd = h.hooked(&["--hook-timeout", "60s"]);
    cmd.env("HOOK_HANG", &pid_file);
    let mut child = util::spawn(&mut cmd);
    assert!(util::wait_until(Duration::from_secs(20), || pid_file.exists()));
    let pgid: i32 = loop {
        if let Ok(Ok(pid)) = std::fs::read_to_string(&pid_file).map(|s| s.trim().parse()) {
            break pid;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let begun = Instant::now();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    assert!(
        begun.elapsed() < Duration::from_secs(10),
        "{:?}",
        begun.elapsed()
    );
    assert!(util::wait_until(
        Duration::from_secs(5),
        || util::live_group_members(pgid) == 0
    ));
}

#[test]
fn report_changes_logs_only_changes_to_syslog() {
    use std::os::unix::net::UnixDatagram;
    let h = Health::new(&["acme", "globex"]);
    h.fail("acme", true);
    let path = h.fx.tmp.path().join("log.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_nonblocking(true).unwrap();
    let received = || {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = socket.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    };
    let logged = |h: &Health| {
        let mut cmd = h.run(&["--report", "changes", "--log", "syslog"]);
        cmd.env("SCATTER_SYSLOG_SOCKET", &path);
        run(cmd, h.fx.tmp.path()).expect_code(1);
    };
    logged(&h);
    let first = received();
    assert!(
        first
            .iter()
            .any(|m| m.contains("acme: failing: exited with status 1")),
        "{first:#?}"
    );
    logged(&h);
    assert_eq!(received(), Vec::<String>::new(), "a repeat logs nothing");
}
