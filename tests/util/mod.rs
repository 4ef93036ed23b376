//! Helpers shared by the end-to-end tests: a temporary instances tree, a
//! recorder task that writes down exactly what it received, and assertions
//! that print the command, its output and the directory tree on failure.

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_scatter");

/// Environment variables that would change scatter's behaviour if the
/// developer's shell happened to set them.
const SCRUB: &[&str] = &[
    "SCATTER_INSTANCES",
    "SCATTER_WINDOW",
    "SCATTER_LOCK_DIR",
    "SCATTER_NAME",
    "SCATTER_ORDER",
    "SCATTER_ONLY",
    "SCATTER_DRY_RUN",
    "SCATTER_FORMAT",
    "SCATTER_QUIET",
    "SCATTER_VERBOSE",
    "SCATTER_MAX_CONCURRENT",
    "SCATTER_TIMEOUT",
    "SCATTER_KILL_AFTER",
    "SCATTER_DETACH",
    "SCATTER_OUTPUT",
    "SCATTER_STATE_DIR",
    "SCATTER_KEEP_RUNS",
    "SCATTER_METRICS_FILE",
    "SCATTER_LOG",
    "SCATTER_SHARD",
    "SCATTER_SHARDS",
    "SCATTER_URL",
    "SCATTER_METHOD",
    "SCATTER_DATA",
    "SCATTER_CACERT",
    "SCATTER_INCLUDE",
    "SCATTER_EXCLUDE",
    "SCATTER_BACKOFF",
    "SCATTER_REPORT",
    "SCATTER_FAILURES_BEFORE_REPORT",
    "SCATTER_REMIND",
    "SCATTER_ON_CHANGE",
    "SCATTER_HOOK_TIMEOUT",
    "SCATTER_WITH_STATE",
    "SUDO_USER",
    "SCATTER_MAX_PRESSURE",
    "SCATTER_PRESSURE_SOURCE",
    "SCATTER_MAX_LOAD",
    "SCATTER_MAX_DEFER",
    "SCATTER_MAX_DEFER_ACTION",
    "SCATTER_CATCH_UP",
    "SCATTER_NICE",
    "SCATTER_IONICE",
    "JOB_COMPLETION_INDEX",
    "SCATTER_SYSLOG_SOCKET",
    "SCATTER_JOURNAL_SOCKET",
    "JOURNAL_STREAM",
    "RUST_LOG",
];

/// The recorder: writes its argv and SCATTER_* environment NUL-separated,
/// and its start and end times in nanoseconds, into `$REC_DIR/<pid>.*`.
/// `REC_SLEEP` makes it sleep; `REC_FAIL_ID` makes that instance exit 3.
const RECORDER: &str = r#"#!/bin/sh
t=$(date +%s%N)
f="$REC_DIR/$$"
printf '%s\0' "$@" > "$f.argv.tmp"
printf '%s\0' "$SCATTER_INSTANCE" "$SCATTER_INSTANCE_DIR" "$SCATTER_SLOT" "$SCATTER_WINDOW_START" "$SCATTER_LOCK_FD" > "$f.env.tmp"
mv "$f.argv.tmp" "$f.argv"
mv "$f.env.tmp" "$f.env"
echo "$t" > "$f.start"
if [ -n "$REC_SLEEP" ]; then sleep "$REC_SLEEP"; fi
date +%s%N > "$f.end"
if [ -n "$REC_FAIL_ID" ] && [ "$SCATTER_INSTANCE" = "$REC_FAIL_ID" ]; then exit 3; fi
exit 0
"#;

pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub instances: PathBuf,
    pub locks: PathBuf,
    pub rec: PathBuf,
    pub recorder: PathBuf,
}

impl Fixture {
    pub fn new() -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_path_buf();
        let instances = root.join("instances");
        let locks = root.join("locks");
        let rec = root.join("rec");
        std::fs::create_dir(&instances).unwrap();
        std::fs::create_dir(&rec).unwrap();
        let recorder = root.join("recorder.sh");
        std::fs::write(&recorder, RECORDER).unwrap();
        std::fs::set_permissions(&recorder, std::fs::Permissions::from_mode(0o755)).unwrap();
        Fixture {
            tmp,
            instances,
            locks,
            rec,
            recorder,
        }
    }

    /// A fixture with instance directories named `names`.
    pub fn with<S: AsRef<OsStr>>(names: &[S]) -> Fixture {
        let fx = Fixture::new();
        for name in names {
            fx.instance(name);
        }
        fx
    }

    pub fn instance(&self, name: impl AsRef<OsStr>) -> PathBuf {
        let path = self.instances.join(name.as_ref());
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {path:?}: {e}"));
        path
    }

    /// `run --instances … --lock-dir … --state-dir …`: the arguments that
    /// keep a run inside the fixture, for wrappers such as `prlimit`.
    pub fn run_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "run".into(),
            "--instances".into(),
            self.instances.clone().into(),
        ];
        args.extend(["--lock-dir".into(), self.locks.clone().into()]);
        args.extend(["--state-dir".into(), self.state().into()]);
        args
    }

    /// `scatter run --instances … --lock-dir … --state-dir …` plus `args`,
    /// ready for `--`. Everything stays inside the fixture.
    pub fn run(&self, args: &[&str]) -> Command {
        let mut cmd = scatter();
        cmd.args(self.run_args())
            .args(args)
            .env("REC_DIR", &self.rec);
        cmd
    }

    /// The fixture's run, through a wrapper command (such as `prlimit
    /// --nproc=4 --`), with the environment scrubbed as for [`scatter`].
    pub fn run_wrapped(&self, wrapper: &[&str], args: &[&str]) -> Command {
        let mut cmd = Command::new(wrapper[0]);
        cmd.args(&wrapper[1..])
            .arg(BIN)
            .args(self.run_args())
            .args(args);
        for var in SCRUB {
            cmd.env_remove(var);
        }
        cmd.env("REC_DIR", &self.rec).stdin(Stdio::null());
        cmd
    }

    /// Like [`Fixture::run`], with `-- <recorder>` appended.
    pub fn run_recorded(&self, args: &[&str]) -> Command {
        let mut cmd = self.run(args);
        cmd.arg("--").arg(&self.recorder).arg("{}");
        cmd
    }

    /// `scatter status` for the fixture's instances and state directory,
    /// plus `args`.
    pub fn status(&self, args: &[&str]) -> Command {
        let mut cmd = scatter();
        cmd.args(["status", "--instances"])
            .arg(&self.instances)
            .arg("--state-dir")
            .arg(self.state())
            .args(args);
        cmd
    }

    /// The state directory the fixture's runs write to.
    pub fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    /// The lock file scatter uses for `id` (job name = "instances").
    pub fn lock_file(&self, encoded: &str) -> PathBuf {
        self.locks.join("instances").join(format!("{encoded}.lock"))
    }

    /// Everything the recorder wrote, ordered by slot.
    pub fn records(&self) -> Vec<Record> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.rec).unwrap() {
            let path = entry.unwrap().path();
            if path.extension() != Some(OsStr::new("env")) {
                continue;
            }
            let stem = path.with_extension("");
            let env = split_nul(&std::fs::read(&path).unwrap());
            let argv = split_nul(&std::fs::read(stem.with_extension("argv")).unwrap());
            let read_ns = |ext: &str| {
                std::fs::read_to_string(stem.with_extension(ext))
                    .ok()
                    .and_then(|s| s.trim().parse::<u128>().ok())
            };
            out.push(Record {
                pid: stem.file_name().unwrap().to_str().unwrap().parse().unwrap(),
                argv,
                id: env[0].clone(),
                dir: env[1].clone(),
                slot: env[2].to_str().unwrap().parse().unwrap(),
                window_start: env[3].to_str().unwrap().parse().unwrap(),
                lock_fd: env[4].to_str().unwrap().to_string(),
                start_ns: read_ns("start"),
                end_ns: read_ns("end"),
            });
        }
        out.sort_by_key(|r| r.slot);
        out
    }

    /// Waits until the recorder has started `n` tasks.
    pub fn wait_for_records(&self, n: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let started = std::fs::read_dir(&self.rec)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().path().extension() == Some(OsStr::new("start")))
                .count();
            if started >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "recorder did not start {n} tasks within {limit:?}\n{}",
            listing(self.tmp.path())
        );
    }
}

#[derive(Debug, Clone)]
pub struct Record {
    pub pid: i32,
    pub argv: Vec<OsString>,
    pub id: OsString,
    pub dir: OsString,
    pub slot: usize,
    pub window_start: f64,
    pub lock_fd: String,
    pub start_ns: Option<u128>,
    pub end_ns: Option<u128>,
}

impl Record {
    /// Seconds between the run's window start and this task's start.
    pub fn offset(&self) -> f64 {
        self.start_ns.expect("start time") as f64 / 1e9 - self.window_start
    }
}

fn split_nul(bytes: &[u8]) -> Vec<OsString> {
    let mut parts: Vec<OsString> = bytes
        .split(|b| *b == 0)
        .map(|p| OsString::from_vec(p.to_vec()))
        .collect();
    parts.pop(); // after the last NUL
    parts
}

/// A scatter command with a scrubbed environment.
pub fn scatter() -> Command {
    let mut cmd = Command::new(BIN);
    for var in SCRUB {
        cmd.env_remove(var);
    }
    cmd.env_remove("XDG_RUNTIME_DIR");
    cmd.stdin(Stdio::null());
    cmd
}

/// A finished scatter run with everything needed to explain a failure.
pub struct Ran {
    pub shown: String,
    pub out: Output,
    pub listing: String,
}

pub fn run(mut cmd: impl std::borrow::BorrowMut<Command>, tree: &Path) -> Ran {
    let cmd = cmd.borrow_mut();
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    Ran {
        shown,
        out,
        listing: listing(tree),
    }
}

impl Ran {
    pub fn code(&self) -> Option<i32> {
        self.out.status.code()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }

    fn explain(&self, what: &str) -> String {
        format!(
            "{what}\n--- command\n{}\n--- status: {:?}\n--- stdout\n{}\n--- stderr\n{}\n--- tree\n{}",
            self.shown,
            self.out.status,
            self.stdout(),
            self.stderr(),
            self.listing
        )
    }

    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Ran {
        if self.code() != Some(code) {
            panic!("{}", self.explain(&format!("expected exit code {code}")));
        }
        self
    }

    #[track_caller]
    pub fn expect_silent(&self) -> &Ran {
        if !self.out.stdout.is_empty() || !self.out.stderr.is_empty() {
            panic!("{}", self.explain("expected no output"));
        }
        self
    }

    #[track_caller]
    pub fn expect_stderr(&self, needle: &str) -> &Ran {
        if !self.stderr().contains(needle) {
            panic!(
                "{}",
                self.explain(&format!("expected stderr to contain {needle:?}"))
            );
        }
        self
    }

    #[track_caller]
    pub fn expect_stdout(&self, needle: &str) -> &Ran {
        if !self.stdout().contains(needle) {
            panic!(
                "{}",
                self.explain(&format!("expected stdout to contain {needle:?}"))
            );
        }
        self
    }

    #[track_caller]
    pub fn check(&self, ok: bool, what: &str) -> &Ran {
        if !ok {
            panic!("{}", self.explain(what));
        }
        self
    }
}

/// scatter's own CPU (user + system, seconds) from its JSON report.
pub fn own_cpu(doc: &serde_json::Value) -> f64 {
    let field = |name: &str| {
        doc[name]
            .as_f64()
            .unwrap_or_else(|| panic!("no {name} in the JSON report: {doc}"))
    };
    field("own_cpu_user_secs") + field("own_cpu_sys_secs")
}

/// `ls -lR`-like listing, with names escaped.
pub fn listing(root: &Path) -> String {
    let mut out = String::new();
    for entry in walkdir::WalkDir::new(root).sort_by_file_name() {
        match entry {
            Ok(e) => {
                let meta = std::fs::symlink_metadata(e.path()).ok();
                let mode = meta.map(|m| m.permissions().mode()).unwrap_or(0);
                let _ = writeln!(
                    out,
                    "{mode:o} {:?}",
                    e.path().strip_prefix(root).unwrap_or(e.path())
                );
            }
            Err(err) => {
                let _ = writeln!(out, "error: {err}");
            }
        }
    }
    out
}

/// Starts scatter in the background.
pub fn spawn(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.spawn().expect("spawn scatter")
}

/// The unprivileged uid most tests drop to. Tests that run under a process
/// limit use uids of their own instead: RLIMIT_NPROC counts every process
/// of the uid, and tests run in parallel.
pub const NOBODY: u32 = 65534;

/// Makes the fixture usable by `uid`: the directories scatter writes to
/// belong to it, the rest is world-readable.
pub fn hand_to(fx: &Fixture, uid: u32) {
    std::fs::set_permissions(fx.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for dir in [&fx.locks, &fx.state(), &fx.rec] {
        std::fs::create_dir_all(dir).unwrap();
        std::os::unix::fs::chown(dir, Some(uid), Some(uid)).unwrap();
    }
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Whether a test that needs root may go on. Outside CI a test without root
/// is skipped with a note; under CI (`CI` set, as `.ci/run` does) a skipped
/// privileged test would hide a regression, so it fails instead.
#[track_caller]
pub fn privileged(why: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("this test needs root ({why}), and CI is set: run the suite as root");
    }
    eprintln!("skipped: needs root ({why})");
    false
}

/// Whether the lock file is currently locked by anyone (tries and releases).
pub fn is_locked(path: &Path) -> bool {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {path:?}: {e}"));
    match file.try_lock() {
        Ok(()) => false,
        Err(std::fs::TryLockError::WouldBlock) => true,
        Err(std::fs::TryLockError::Error(e)) => panic!("lock {path:?}: {e}"),
    }
}

/// Waits until `cond` holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILLs a process group, ignoring errors (cleanup in tests).
pub fn kill_group(pgid: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pgid) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// Processes of group `pgid` that have not exited (zombies excluded).
pub fn live_group_members(pgid: i32) -> usize {
    let mut live = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z" {
            live += 1;
        }
    }
    live
}
