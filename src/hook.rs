//! `--on-change PROGRAM`: one run of a program per change in health, after
//! the run's last task has ended.
//!
//! * **Exactly once.** The changes wait in the state directory's queue
//!   ([`crate::state::health`]). Each is taken off it, under the lock, just
//!   before its hook starts, so a change is never fired twice, even by two
//!   runs at once; one recorded but not fired (scatter was killed in
//!   between) is fired by the next run with a hook, before its own. A hook
//!   that ran and failed is not retried.
//! * **No shell.** The program is executed directly, with no arguments;
//!   everything it needs is in its environment, the instance's id byte for
//!   byte in `SCATTER_INSTANCE`. Its stdin is `/dev/null`.
//! * **Bounded.** Hooks run one after the other, each the leader of its own
//!   process group, which is SIGKILLed `--hook-timeout` after the start if
//!   anything in it still runs with the hook's output open, or if the hook
//!   itself has not exited. The leader is reaped only after that, so the
//!   group id cannot have been reused when it is signalled. A stop signal
//!   kills the running hook and leaves the rest queued.
//! * **Output** (stdout and stderr, one pipe) goes to scatter's stderr
//!   through the relay, each line tagged `scatter: on-change EVENT ID:`,
//!   at most [`SHOWN`] per hook; a line is cut at [`crate::output::MAX_LINE`].
//! * **Failure** (a non-zero exit, a signal, the timeout, a program that
//!   cannot start) is logged as a warning and never changes the run's exit
//!   code.
//!
//! This runs after the supervisor has returned, on the main thread: the
//! supervisor reaps every child with `wait4(-1)` and would take a hook's
//! exit status from under it.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use log::{debug, warn};
use signal_hook::consts::SIGKILL;

use crate::display::{self, quoted};
use crate::output::{Lines, tagged};
use crate::platform::{self, ExitStatus, PollFd, PollFlags};
use crate::relay::{self, Stream};
use crate::state::health::short_reason;
use crate::state::{Notice, StateDir};
use crate::transition::Transition;

/// The most of one hook's output shown; the rest is counted.
pub const SHOWN: usize = 64 * 1024;
/// How often a hook's wait looks for a stop signal.
const TICK: Duration = Duration::from_millis(50);

/// How hooks run for one job.
pub struct Hooks<'a> {
    pub program: &'a Path,
    pub timeout: Duration,
    /// The job name: `SCATTER_NAME`.
    pub name: &'a OsStr,
    /// The job's state directory: `SCATTER_STATE_DIR`.
    pub state_dir: std::path::PathBuf,
}

/// How one hook ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Exited(ExitStatus),
    /// Killed at `--hook-timeout`; the leader's status, if it had exited.
    TimedOut(Option<ExitStatus>),
    /// A stop signal arrived: the hook was killed, the rest left queued.
    Stopped(i32),
    /// It could not be started.
    Failed(String),
}

impl Hooks<'_> {
    /// Fires the queued changes, oldest first, one after the other. Returns
    /// the stop signal that ended the firing early, if one did.
    pub fn fire(&self, state: &StateDir, pending: &[Notice]) -> Option<i32> {
        let mut queue: Vec<&Notice> = pending
            .iter()
            .filter(|n| n.event != Transition::Unknown && n.seq > 0)
            .collect();
        queue.sort_by_key(|n| n.seq);
        for notice in queue {
            if let Some(sig) = relay::stop_received() {
                return Some(sig);
            }
            match state.take_notice(notice.seq) {
                Ok(true) => {}
                // Another run took it.
                Ok(false) => continue,
                Err(err) => {
                    warn!("{err:#}; the --on-change hooks still queued run after a later run");
                    return None;
                }
            }
            let what = describe(notice);
            match self.run(notice, &what) {
                Ended::Exited(ExitStatus::Code(0)) => debug!("on-change {what}: done"),
                Ended::Exited(ExitStatus::Code(code)) => {
                    warn!("on-change {what}: the hook exited with status {code}")
                }
                Ended::Exited(ExitStatus::Signal(sig)) => warn!(
                    "on-change {what}: the hook was killed by {}",
                    platform::signal_name(sig)
                ),
                Ended::TimedOut(leader) => warn!(
                    "on-change {what}: {} after {} (--hook-timeout); its process group was killed",
                    if leader.is_some() {
                        "processes the hook left were still running"
                    } else {
                        "the hook was still running"
                    },
                    display::duration(self.timeout)
                ),
                Ended::Failed(why) => warn!("on-change {what}: cannot run the hook: {why}"),
                Ended::Stopped(sig) => return Some(sig),
            }
        }
        None
    }

    /// Runs the hook for one change and waits for it, within the timeout.
    pub fn run(&self, notice: &Notice, what: &str) -> Ended {
        let (read, write) = match platform::output_pipe() {
            Ok(pipe) => pipe,
            Err(err) => return Ended::Failed(err.to_string()),
        };
        let stdout = match write.try_clone() {
            Ok(fd) => fd,
            Err(err) => return Ended::Failed(err.to_string()),
        };
        let mut cmd = Command::new(self.program);
        for (key, value) in environment(notice, self.name, &self.state_dir) {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(write))
            .process_group(0);
        let started = Instant::now();
        let pid = match cmd.spawn() {
            // Dropping the Child neither waits nor kills; the pid is reaped
            // below, after the last signal to its group.
            Ok(child) => child.id() as i32,
            Err(err) => return Ended::Failed(display::error_text(&err)),
        };
        // Our copies of the write end went with `cmd`: the pipe ends when
        // the hook and whatever it left holding its output are gone.
        drop(cmd);
        let deadline = platform::later(started, self.timeout);
        let mut output = Shown::new(format!("scatter: on-change {what}"));
        let mut pipe = Some(std::fs::File::from(read));
        let mut leader = None;
        let ended = loop {
            if let Some(sig) = relay::stop_received() {
                let _ = platform::kill_group(pid, SIGKILL);
                break Ended::Stopped(sig);
            }
            let now = Instant::now();
            if now >= deadline {
                let _ = platform::kill_group(pid, SIGKILL);
                break Ended::TimedOut(leader);
            }
            let wait = (deadline - now).min(TICK);
            match &mut pipe {
                Some(file) => {
                    let mut fds = [PollFd::new(file, PollFlags::IN)];
                    let _ = platform::poll(&mut fds, Some(wait));
                    if !output.read(file) {
                        pipe = None;
                    }
                }
                None => std::thread::sleep(wait),
            }
            if leader.is_none() {
                leader = platform::exited(pid).ok().flatten();
            }
            if let (Some(status), None) = (leader, &pipe) {
                break Ended::Exited(status);
            }
        };
        output.finish();
        // After the last signal to its group.
        reap(pid);
        ended
    }
}

/// Reaps the hook's leader, waiting a little for it after a SIGKILL.
fn reap(pid: i32) -> Option<ExitStatus> {
    let until = Instant::now() + Duration::from_secs(2);
    loop {
        match platform::reap(pid) {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(10)),
            _ => return None,
        }
    }
}

/// `failing acme`, `widespread`: the change, for tags and messages.
pub fn describe(notice: &Notice) -> String {
    match notice.raw_id() {
        Some(id) => format!("{} {}", notice.event, quoted(id)),
        None => notice.event.to_string(),
    }
}

/// The hook's environment: each variable with its value, or `None` to
/// remove it (an instance variable scatter itself may have inherited).
/// `SCATTER_NAME` and `SCATTER_STATE_DIR` are what `--name` and
/// `--state-dir` read, so the hook's own `scatter status` or `scatter
/// pause` finds the same job.
pub fn environment(
    notice: &Notice,
    name: &OsStr,
    state_dir: &Path,
) -> Vec<(&'static str, Option<std::ffi::OsString>)> {
    let since = notice
        .since
        .map(|s| (s.max(0.0).floor() as u64).to_string());
    vec![
        ("SCATTER_EVENT", Some(notice.event.name().into())),
        ("SCATTER_INSTANCE", notice.raw_id()),
        ("SCATTER_FAILURES", Some(notice.failures.to_string().into())),
        // From a file: one exec would refuse with a NUL in it, or too long.
        (
            "SCATTER_REASON",
            Some(short_reason(&notice.reason.replace('\0', "")).into()),
        ),
        ("SCATTER_SINCE", since.map(Into::into)),
        ("SCATTER_NAME", Some(name.to_os_string())),
        (
            "SCATTER_STATE_DIR",
            Some(state_dir.as_os_str().to_os_string()),
        ),
        // These name a task, never a hook.
        ("SCATTER_INSTANCE_DIR", None),
        ("SCATTER_SLOT", None),
        ("SCATTER_LOCK_FD", None),
    ]
}

/// A hook's output on its way to stderr: whole tagged lines, at most
/// [`SHOWN`] bytes, the rest counted.
struct Shown {
    tag: String,
    lines: Lines,
    shown: usize,
    cut: usize,
}

impl Shown {
    fn new(tag: String) -> Shown {
        Shown {
            tag,
            lines: Lines::default(),
            shown: 0,
            cut: 0,
        }
    }

    /// Reads what is there; `false` at end of file (or on an error).
    fn read(&mut self, file: &mut std::fs::File) -> bool {
        let mut buf = [0u8; 8192];
        // A bounded number of reads per wake, so a hook that writes
        // without pause still lets the wait see its timeout.
        for _ in 0..16 {
            match file.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => self.feed(&buf[..n]),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return true,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }

    fn feed(&mut self, data: &[u8]) {
        let (tag, shown, cut) = (&self.tag, &mut self.shown, &mut self.cut);
        self.lines
            .feed(data, &mut |piece| show(tag, shown, cut, piece));
    }

    fn finish(&mut self) {
        let (tag, shown, cut) = (&self.tag, &mut self.shown, &mut self.cut);
        self.lines.flush(&mut |piece| show(tag, shown, cut, piece));
        if self.cut > 0 {
            relay::lines(
                Stream::Stderr,
                format!(
                    "{}: [{} more of the hook's output not shown]\n",
                    self.tag,
                    display::size(self.cut as u64)
                )
                .into_bytes(),
            );
        }
    }
}

/// Relays one piece of a hook's output, tagged, while the hook's share
/// lasts; past it, only counts it.
fn show(tag: &str, shown: &mut usize, cut: &mut usize, piece: &[u8]) {
    if *shown + piece.len() > SHOWN {
        *cut += piece.len();
        return;
    }
    *shown += piece.len();
    let mut out = Vec::new();
    tagged(&mut out, tag, piece);
    relay::lines(Stream::Stderr, out);
}
