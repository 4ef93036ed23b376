//! Starting one task: argv, environment, process group, inherited lock.
//!
//! The task is executed directly from its argv (never through a shell), in a
//! process group of its own so that signals and timeouts reach its whole
//! tree. Its stdin is `/dev/null`. It inherits the locked lock-file
//! descriptor, so the lock is held exactly as long as the task (and anything
//! it forks) keeps that descriptor open, whatever happens to scatter.
//!
//! `FD_CLOEXEC` is cleared on the lock descriptor only for the duration of
//! the `spawn` call. That keeps std's fast `posix_spawn` path (a `pre_exec`
//! hook would force fork, which slows down as the parent grows), and it is
//! safe because scatter spawns from a single thread, so no other child can
//! inherit the descriptor in between.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::exit;
use crate::platform;

/// What a task learns about itself through its environment.
pub struct TaskEnv<'a> {
    pub id: &'a OsStr,
    pub path: &'a Path,
    pub slot: usize,
    /// `SCATTER_WINDOW_START`: unix seconds with fraction.
    pub window_start: &'a str,
}

/// A task's standard descriptors.
pub struct Output {
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
}

/// Spawns the task with `lock` inherited; returns its pid (= its pgid).
/// `program` is the command already looked up in PATH, if it was; the task
/// still sees `argv[0]` as written.
pub fn spawn(
    program: Option<&Path>,
    argv: &[OsString],
    env: &TaskEnv<'_>,
    lock: &File,
    output: Output,
) -> io::Result<i32> {
    let (arg0, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut cmd = Command::new(program.map_or(arg0.as_os_str(), Path::as_os_str));
    cmd.arg0(arg0)
        .args(args)
        .env("SCATTER_INSTANCE", env.id)
        .env("SCATTER_INSTANCE_DIR", env.path)
        .env("SCATTER_SLOT", env.slot.to_string())
        .env("SCATTER_WINDOW_START", env.window_start)
        .env("SCATTER_LOCK_FD", lock.as_raw_fd().to_string())
        .stdin(output.stdin)
        .stdout(output.stdout)
        .stderr(output.stderr)
        .process_group(0);
    platform::set_inheritable(lock.as_fd(), true)?;
    let spawned = cmd.spawn();
    // The descriptor is closed right after this anyway; restoring the flag
    // only matters if the caller keeps it, so a failure here is harmless.
    let _ = platform::set_inheritable(lock.as_fd(), false);
    // Dropping the Child neither waits nor kills: the supervisor reaps every
    // child itself with wait4(-1).
    Ok(spawned?.id() as i32)
}

/// The `--only` exit code for a task that could not be started, as a shell
/// and timeout(1) report it.
pub fn start_failure_code(err: &io::Error) -> u8 {
    match err.kind() {
        io::ErrorKind::NotFound => exit::NOT_FOUND,
        _ => exit::CANNOT_EXECUTE,
    }
}
