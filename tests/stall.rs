//! Readers that stop reading, and output that never ends: a journal or
//! syslog socket nobody reads, a stdout nobody reads or nobody can read, a
//! failed task that printed 20 MB, a spool filesystem that fills up, and no
//! threads at all. In each, the supervisor keeps its schedule, signals still
//! stop scatter, memory stays small, a failure still sets the exit code, and
//! what was lost is said once.

use crate::util;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::util::Fixture;

use crate::util::NOBODY;

/// Reads `from` to its end on a thread of its own.
fn drain(mut from: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = from.read_to_end(&mut out);
        out
    })
}

/// Waits for scatter to exit; SIGKILLs it and fails the test if it takes
/// longer than `limit`, so that no test can hang the suite.
fn wait_within(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: scatter did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A finished run: status, stdout, stderr, and how long it took.
struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Ran {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tail = |s: &str| s[s.len().saturating_sub(3000)..].to_string();
        write!(
            f,
            "status {:?} after {:?}\n--- stdout (end)\n{}\n--- stderr (end)\n{}",
            self.status,
            self.took,
            tail(&self.stdout),
            tail(&self.stderr)
        )
    }
}

/// Runs `cmd` with piped stdout and stderr, read as they come, and a hard
/// time limit.
fn run_within(cmd: &mut Command, limit: Duration) -> Ran {
    let started = Instant::now();
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn scatter");
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let status = wait_within(&mut child, limit, &format!("{cmd:?}"));
    let took = started.elapsed();
    Ran {
        status,
        stdout: String::from_utf8_lossy(&out.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
        took,
    }
}

fn signal(child: &Child, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, sig).unwrap();
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("t{i:03}")).collect()
}

/// A `-v` run of 300 instances over 1.5 s logging to a socket that is
/// bound but never read: the reader's queue fills after a few records.
fn a_stalled_log_socket_costs_records_not_starts(sink: &str, variable: &str, notice: &str) {
    let fx = Fixture::with(&names(300));
    let path = fx.tmp.path().join("log.sock");
    let _never_read = UnixDatagram::bind(&path).unwrap();
    let mut cmd = fx.run(&["-v", "--log", sink, "--window", "1.5s", "--", "true"]);
    cmd.env(variable, &path);
    let ran = run_within(&mut cmd, Duration::from_secs(60));
    assert_eq!(ran.code(), Some(0), "{ran}");
    // Blocking sends made this take forever; 1.5 s is the plan.
    assert!(ran.took < Duration::from_secs(15), "{ran}");
    assert_eq!(ran.stderr.matches(notice).count(), 1, "said once: {ran}");
    assert!(ran.stderr.contains("log records dropped"), "{ran}");
    assert_eq!(ran.stderr.lines().count(), 1, "and nothing else: {ran}");
}

#[test]
fn a_journal_that_never_reads_costs_records_not_starts() {
    a_stalled_log_socket_costs_records_not_starts(
        "journald",
        "SCATTER_JOURNAL_SOCKET",
        "scatter: warning: the journal is not keeping up;",
    );
}

#[test]
fn a_syslog_that_never_reads_costs_records_not_starts() {
    a_stalled_log_socket_costs_records_not_starts(
        "syslog",
        "SCATTER_SYSLOG_SOCKET",
        "scatter: warning: syslog is not keeping up;",
    );
}

#[test]
fn sigterm_stops_a_run_whose_journal_is_stalled() {
    let fx = Fixture::with(&names(300));
    let path = fx.tmp.path().join("journal.sock");
    let _never_read = UnixDatagram::bind(&path).unwrap();
    let mut cmd = fx.run(&[
        "-v",
        "--log",
        "journald",
        "--window",
        "30s",
        "--kill-after",
        "1s",
        "--",
        "true",
    ]);
    cmd.env("SCATTER_JOURNAL_SOCKET", &path);
    let mut child = util::spawn(&mut cmd);
    let err = drain(child.stderr.take().unwrap());
    std::thread::sleep(Duration::from_secs(2));
    let sent = Instant::now();
    signal(&child, rustix::process::Signal::TERM);
    let status = wait_within(&mut child, Duration::from_secs(30), "SIGTERM");
    let stderr = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
    assert_eq!(status.code(), Some(143), "{stderr}");
    assert!(
        sent.elapsed() < Duration::from_secs(8),
        "{:?}",
        sent.elapsed()
    );
    assert!(stderr.contains("stopped by SIGTERM"), "{stderr}");
}

/// `sh -c` that runs the recorder, then prints `bytes` of lines naming the
/// instance (the last one cut short).
fn record_then_print(fx: &Fixture, cmd: &mut Command, bytes: usize, then: &str) {
    let script = format!(
        r#""$0" "$1" && yes "$1 says: a line of output that fills the pipe" | head -c {bytes}; {then}"#
    );
    cmd.args(["sh", "-c", &script]).arg(&fx.recorder).arg("{}");
}

#[test]
fn a_stalled_stdout_costs_lines_not_punctuality() {
    let count = 16;
    let fx = Fixture::with(&names(count));
    let (read, write) = std::io::pipe().unwrap();
    let mut cmd = fx.run(&["--window", "4s", "--output", "tag", "--"]);
    // 300 kB each, 4.8 MB in all: far more than the pipe's 64 KiB and
    // scatter's 1 MiB together.
    record_then_print(&fx, &mut cmd, 300_000, "true");
    cmd.stdout(write).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // The Command keeps a copy of the write end: without this the reader
    // would never see end of file.
    drop(cmd);
    let err = drain(child.stderr.take().unwrap());
    // Nobody reads stdout while every start is due.
    std::thread::sleep(Duration::from_millis(4500));
    let out = drain(read);
    let status = wait_within(&mut child, Duration::from_secs(60), "stalled stdout");
    let stdout = String::from_utf8_lossy(&out.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
    assert_eq!(status.code(), Some(0), "{stderr}");
    let records = fx.records();
    assert_eq!(records.len(), count, "{stderr}");
    let interval = 4.0 / count as f64;
    for r in &records {
        let late = r.offset() - r.slot as f64 * interval;
        assert!(
            late < 1.0,
            "slot {} started {late:.3} s late: a stalled stdout held the supervisor\n{stderr}",
            r.slot
        );
    }
    assert_eq!(
        stderr.matches("lines of output dropped").count(),
        1,
        "the drop is said once: {stderr}"
    );
    assert!(
        stderr.contains("the reader of stdout was not keeping up"),
        "{stderr}"
    );
    // Whatever was kept is whole, tagged lines of one task each.
    let mut kept = 0;
    for line in stdout.lines() {
        let (tag, rest) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("untagged line {line:?}"));
        let whole = format!("{tag} says: a line of output that fills the pipe");
        assert!(whole.starts_with(rest), "broken or mixed line {line:?}");
        kept += 1;
    }
    assert!(kept > 1000, "only {kept} lines arrived");
}

#[test]
fn sigterm_ends_a_run_blocked_on_a_stalled_stdout() {
    let fx = Fixture::with(&names(8));
    let (read, write) = std::io::pipe().unwrap();
    let mut cmd = fx.run(&[
        "--window",
        "20s",
        "--kill-after",
        "1s",
        "--output",
        "tag",
        "--",
    ]);
    record_then_print(&fx, &mut cmd, 300_000, "sleep 30");
    cmd.stdout(write).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    let err = drain(child.stderr.take().unwrap());
    fx.wait_for_records(1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    let sent = Instant::now();
    signal(&child, rustix::process::Signal::TERM);
    let status = wait_within(&mut child, Duration::from_secs(30), "SIGTERM");
    let took = sent.elapsed();
    let stderr = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
    assert_eq!(status.code(), Some(143), "{stderr}");
    // 1 s of grace for the tasks, at most 2 s for a reader that never reads.
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(stderr.contains("stopped by SIGTERM"), "{stderr}");
    drop(read);
}

#[test]
fn sigterm_ends_the_wait_for_a_stalled_reader_of_the_report() {
    let fx = Fixture::with(&names(3));
    let (read, write) = std::io::pipe().unwrap();
    let mut cmd = fx.run(&[
        "--window", "300ms", "--output", "tag", "--format", "json", "--",
    ]);
    record_then_print(&fx, &mut cmd, 200_000, "true");
    cmd.stdout(write).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    let err = drain(child.stderr.take().unwrap());
    fx.wait_for_records(3, Duration::from_secs(10));
    // Every task is done; the JSON report waits for a reader that is not
    // reading. That wait is the only thing left, and it must stay
    // interruptible.
    let done = util::wait_until(Duration::from_secs(10), || {
        fx.records().iter().all(|r| r.end_ns.is_some())
    });
    assert!(done, "the tasks did not finish");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        child.try_wait().unwrap().is_none(),
        "scatter should still be waiting to deliver its report"
    );
    let sent = Instant::now();
    signal(&child, rustix::process::Signal::TERM);
    let status = wait_within(&mut child, Duration::from_secs(30), "SIGTERM at the end");
    let stderr = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
    assert_eq!(status.code(), Some(143), "{status:?} {stderr}");
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "{:?}",
        sent.elapsed()
    );
    drop(read);
}

/// The peak resident set of a live process, from `/proc/PID/status`.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn twenty_megabytes_without_a_newline_show_their_last_64_kib() {
    let fx = Fixture::with(&["big", "slow"]);
    // "big" starts at once and fails after 20 MB with no newline; "slow"
    // starts 1 s later and keeps scatter alive while its peak memory is
    // read.
    let mut cmd = fx.run(&["--window", "2s", "--output", "on-failure", "--"]);
    cmd.args([
        "sh",
        "-c",
        r#"if [ "$1" = big ]; then head -c 20000000 /dev/zero | tr '\0' x; exit 1; fi; sleep 4"#,
        "sh",
        "{}",
    ]);
    let started = Instant::now();
    let mut child = util::spawn(&mut cmd);
    let pid = child.id();
    let mut stdout = child.stdout.take().unwrap();
    let err = drain(child.stderr.take().unwrap());
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 65536];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            if all.windows(10).any(|w| w == b"output cut") {
                let _ = tx.send(());
            }
        }
        all
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the failed task's output was not shown within 30 s");
    let shown_after = started.elapsed();
    let peak = peak_rss_kib(pid);
    let status = wait_within(&mut child, Duration::from_secs(60), "on-failure");
    let stdout = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        shown_after < Duration::from_secs(10),
        "took {shown_after:?} to show it"
    );
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some("big: [… 19 MiB of output cut; the last 64 KiB follow]"),
        "{}",
        &stdout[..stdout.len().min(300)]
    );
    let body: usize = lines
        .map(|l| {
            let piece = l.strip_prefix("big: ").expect("tagged");
            assert!(piece.bytes().all(|b| b == b'x'), "{l:?}");
            piece.len()
        })
        .sum();
    assert_eq!(body, 64 * 1024, "exactly the last 64 KiB");
    assert!(stdout.len() < 70 * 1024, "{}", stdout.len());
    // Reading 20 MB into memory took 45 MB; the tail needs a few hundred
    // KiB beyond scatter's own few MiB.
    match peak {
        Some(kib) => assert!(kib < 16 * 1024, "peak RSS {kib} KiB"),
        None => panic!("cannot read VmHWM of scatter (pid {pid})"),
    }
    eprintln!("scatter's peak RSS: {peak:?} KiB; output shown after {shown_after:?}");
}

#[test]
fn many_failures_stop_at_the_runs_one_mib() {
    let fx = Fixture::with(&names(20));
    let mut cmd = fx.run(&["--window", "1s", "--output", "on-failure", "--"]);
    cmd.args([
        "sh",
        "-c",
        r#"head -c 100000 /dev/zero | tr '\0' y; exit 1"#,
    ]);
    let ran = run_within(&mut cmd, Duration::from_secs(60));
    assert_eq!(ran.code(), Some(1), "{ran}");
    // 16 × 64 KiB is the run's 1 MiB; the other 4 are counted.
    assert_eq!(
        ran.stdout
            .matches("of output cut; the last 64 KiB follow]")
            .count(),
        16,
        "{ran}"
    );
    assert_eq!(
        ran.stdout
            .matches(
                "scatter: [output of 4 more failed tasks not shown: the run's 1 MiB limit was reached]\n"
            )
            .count(),
        1,
        "{ran}"
    );
    assert!(ran.stdout.len() < 1100 * 1024, "{}", ran.stdout.len());
    assert!(ran.stderr.contains("20 of 20 instances failed"), "{ran}");
}

#[test]
fn a_closed_stdout_is_one_warning_and_failures_still_count() {
    let fx = Fixture::with(&["a", "b", "c", "d"]);
    let (read, write) = std::io::pipe().unwrap();
    drop(read);
    let mut cmd = fx.run(&["--window", "200ms", "--output", "tag", "--"]);
    cmd.args([
        "sh",
        "-c",
        r#"i=0; while [ $i -lt 200 ]; do echo "line $i"; i=$((i+1)); done; [ "$1" != b ] || exit 3"#,
        "sh",
        "{}",
    ]);
    cmd.stdout(write);
    let ran = run_within_keeping_stdout(&mut cmd, Duration::from_secs(60));
    assert_eq!(ran.code(), Some(1), "{ran}");
    assert_eq!(ran.stderr.matches("Broken pipe").count(), 1, "{ran}");
    assert!(
        ran.stderr
            .contains("scatter: warning: cannot write to stdout: Broken pipe;"),
        "{ran}"
    );
    assert!(
        ran.stderr.contains("scatter: b: exited with status 3"),
        "{ran}"
    );
}

#[test]
fn a_json_report_to_a_closed_stdout_still_exits_with_the_tasks_code() {
    let fx = Fixture::with(&["a", "b", "c"]);
    let (read, write) = std::io::pipe().unwrap();
    drop(read);
    let mut cmd = fx.run(&[
        "--window", "100ms", "--format", "json", "--", "sh", "-c", "exit 3",
    ]);
    cmd.stdout(write);
    let ran = run_within_keeping_stdout(&mut cmd, Duration::from_secs(60));
    assert_eq!(ran.code(), Some(1), "three tasks failed: {ran}");
    assert!(
        ran.stderr
            .contains("scatter: warning: cannot write the run report to stdout: Broken pipe"),
        "{ran}"
    );
}

/// Like [`run_within`], for a command whose stdout the test set itself.
fn run_within_keeping_stdout(cmd: &mut Command, limit: Duration) -> Ran {
    let started = Instant::now();
    cmd.stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn scatter");
    let err = drain(child.stderr.take().unwrap());
    let status = wait_within(&mut child, limit, &format!("{cmd:?}"));
    Ran {
        status,
        stdout: String::new(),
        stderr: String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
        took: started.elapsed(),
    }
}

/// Runs scatter in a private mount namespace whose `$TMPDIR` is a tmpfs
/// mounted with `options`; `None` if this machine cannot make one.
fn with_tiny_tmpdir(fx: &Fixture, options: &str, args: &[&str]) -> Option<Ran> {
    let tmpdir = fx.tmp.path().join("tmpdir");
    std::fs::create_dir(&tmpdir).unwrap();
    let script = r#"mount -t tmpfs -o "$1" tmpfs "$TMPDIR" || exit 77
shift
exec "$@""#;
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "sh", "-c", script, "sh", options])
        .arg(util::BIN)
        .args(fx.run_args())
        .args(args)
        .env("TMPDIR", &tmpdir)
        .env("REC_DIR", &fx.rec)
        .stdin(Stdio::null());
    let ran = run_within(&mut cmd, Duration::from_secs(60));
    if matches!(ran.code(), Some(77) | Some(1)) && ran.stderr.contains("unshare") {
        eprintln!(
            "skipped: cannot create a mount namespace here: {}",
            ran.stderr
        );
        return None;
    }
    Some(ran)
}

#[test]
fn a_full_spool_filesystem_is_said_with_the_output() {
    let fx = Fixture::with(&["acme"]);
    let Some(ran) = with_tiny_tmpdir(
        &fx,
        "size=256k",
        &[
            "--output",
            "on-failure",
            "--",
            "sh",
            "-c",
            r#"head -c 1000000 /dev/zero | tr '\0' q; exit 1"#,
        ],
    ) else {
        return;
    };
    assert_eq!(ran.code(), Some(1), "{ran}");
    assert!(
        ran.stdout
            .contains("acme: [output may be incomplete: the spool filesystem ("),
        "{ran}"
    );
    assert!(ran.stdout.contains(") is full]\n"), "{ran}");
    assert!(
        ran.stdout.contains("acme: qqqq"),
        "what fitted is shown: {ran}"
    );
}

#[test]
fn a_spool_file_that_cannot_be_created_leaves_the_output_inherited() {
    let fx = Fixture::with(&["a", "b", "c"]);
    // Two inodes: the tmpfs root and scatter's spool directory; no spool
    // file fits.
    let Some(ran) = with_tiny_tmpdir(
        &fx,
        "size=256k,nr_inodes=2",
        &[
            "--window",
            "200ms",
            "--output",
            "on-failure",
            "--",
            "sh",
            "-c",
            r#"echo "output of $1"; [ "$1" != b ]"#,
            "sh",
            "{}",
        ],
    ) else {
        return;
    };
    assert_eq!(ran.code(), Some(1), "b failed: {ran}");
    for id in ["a", "b", "c"] {
        assert!(
            ran.stdout.contains(&format!("output of {id}\n")),
            "every task ran, its output not lost: {ran}"
        );
    }
    assert_eq!(
        ran.stderr.lines().filter(|l| l.contains("spool")).count(),
        1,
        "one warning: {ran}"
    );
    assert!(
        ran.stderr
            .contains("tasks without a spool file write to scatter's own stdout and stderr"),
        "{ran}"
    );
}

#[test]
fn without_threads_nothing_panics_and_the_report_arrives_whole() {
    if !util::privileged("run scatter as uid nobody with a process limit of 1") {
        return;
    }
    let count = 500;
    let fx = Fixture::with(&names(count));
    std::fs::set_permissions(fx.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for dir in [&fx.locks, &fx.rec] {
        std::fs::create_dir_all(dir).unwrap();
        std::os::unix::fs::chown(dir, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    // No state directory it can write (its writer thread could not start
    // either), and RLIMIT_NPROC = 1: scatter itself is that one, so neither
    // a thread nor a task can start.
    let no_state = fx.tmp.path().join("root-only").join("state");
    let no_state = no_state.to_str().unwrap();
    let mut cmd = fx.run_wrapped(
        &["prlimit", "--nproc=1", "--"],
        &[
            "-v",
            "--state-dir",
            no_state,
            "--window",
            "200ms",
            "--output",
            "tag",
            "--format",
            "json",
            "--",
            "true",
        ],
    );
    cmd.uid(NOBODY).gid(NOBODY);
    let ran = run_within(&mut cmd, Duration::from_secs(60));
    assert!(!ran.stderr.contains("panicked"), "{ran}");
    assert_eq!(ran.code(), Some(1), "{ran}");
    assert!(ran.status.signal().is_none(), "{ran}");
    // Far more than a pipe holds, written without a thread.
    assert!(ran.stdout.len() > 64 * 1024, "{}", ran.stdout.len());
    let doc: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap_or_else(|e| {
        panic!("the JSON report is not whole: {e}\n{ran}");
    });
    assert_eq!(doc["count"], count);
    assert_eq!(doc["counts"]["failed_to_start"], count, "{}", doc["counts"]);
    assert!(
        ran.stderr.matches(": not started: ").count() == count,
        "every start's diagnostic arrived: {ran}"
    );
}

#[test]
fn a_reader_that_goes_away_during_the_last_drain_is_reported() {
    let fx = Fixture::with(&names(4));
    let (read, write) = std::io::pipe().unwrap();
    let mut cmd = fx.run(&["--window", "100ms", "--output", "tag", "--"]);
    // 300 kB each: scatter is left holding its 1 MiB queue for stdout.
    record_then_print(&fx, &mut cmd, 300_000, "true");
    cmd.stdout(write).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    let err = drain(child.stderr.take().unwrap());
    // The tasks are done and scatter waits for its reader; which goes away.
    std::thread::sleep(Duration::from_millis(2000));
    drop(read);
    wait_within(&mut child, Duration::from_secs(30), "closed reader");
    let stderr = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
    assert!(
        stderr.contains("cannot write to stdout") && stderr.contains("of output lost"),
        "the lines lost at the end are said: {stderr}"
    );
}
