//! Starting one task: argv, environment, process group, inherited lock.
//!
//! The task is executed directly from its argv (never through a shell), in a
//! process group of its own so that signals and timeouts reach its whole
//! tree. Its stdin is `/dev/null`. It inherits the locked lock-file
//! descriptor, so the lock is held exactly as long as the task (and anything
//! it forks) keeps that descriptor open, whatever happens to scatter.
//!
//! Tasks are started with `posix_spawn` itself, called through libc, because
//! the start is scatter's hot path and std's `Command` rebuilds the whole
//! environment and queries resource limits at every spawn. What is the same
//! for every task is prepared once per run: the spawn attributes (a process
//! group of its own, SIGPIPE back to its default, an empty signal mask) and
//! the environment but for the three variables that name the task. Every
//! descriptor the task needs is set up by file actions, which run in the
//! child between its creation and its `exec`: `dup2` of stdin, stdout and
//! stderr, and a `dup2` of the lock descriptor onto itself, which clears its
//! close-on-exec flag in the child only, as POSIX.1-2024 requires of
//! `adddup2(fd, fd)`. So the spawner makes no system call of its own per
//! task beyond what `posix_spawn` needs (a `clone` with `CLONE_VFORK`, its
//! stack, the signal mask), no other thread or child can ever inherit the
//! lock, and no `pre_exec` hook forces the slow `fork` path. glibc does this
//! from 2.29 on; with an older glibc (RHEL 8, Debian 10) or another C
//! library, whose `dup2` onto itself would leave the flag and start the task
//! without its lock, the flag is cleared in scatter around the spawn
//! instead: two `fcntl` calls more per task, and safe because only the
//! supervisor thread starts processes.

use std::ffi::{CString, OsStr, OsString, c_char};
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::exit;

/// What a task learns about itself through its environment.
pub struct TaskEnv<'a> {
    pub id: &'a OsStr,
    pub path: &'a Path,
    pub slot: usize,
}

/// Where one of a task's standard streams goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redirect {
    /// scatter's own.
    Inherit,
    /// This descriptor, which stays open at least until the spawn returns.
    Fd(RawFd),
}

/// A task's standard descriptors. `stdin` and any `Redirect::Fd` must stay
/// open until [`Spawner::spawn`] returns; `keep` holds what was opened for
/// this task alone (a log file, a pipe's write end), closed once the task
/// has its own copies.
pub struct Output {
    pub stdin: RawFd,
    pub stdout: Redirect,
    pub stderr: Redirect,
    pub keep: Option<OwnedFd>,
}

/// Variables every task gets from scatter; the caller's own values of them
/// are not passed on.
const OWN: [&str; 5] = [
    "SCATTER_INSTANCE",
    "SCATTER_INSTANCE_DIR",
    "SCATTER_SLOT",
    "SCATTER_WINDOW_START",
    "SCATTER_LOCK_FD",
];

/// Starts tasks: the parts of every spawn that do not change within a run.
pub struct Spawner {
    attr: Attr,
    /// The environment but for the per-task variables, `KEY=VALUE` each.
    env: Vec<CString>,
    /// The file actions of the last spawn, and the descriptors they name.
    /// Descriptors are reused (a lock file's number is usually the same at
    /// every start), and building the actions asks the kernel for the
    /// descriptor limit twice per action, so they are kept while they fit.
    actions: std::cell::RefCell<Option<([RawFd; 4], Actions)>>,
    /// The C library clears close-on-exec for a `dup2` file action of a
    /// descriptor onto itself, so the lock reaches the task through the
    /// file actions alone. Otherwise the flag is cleared around the spawn.
    lock_by_action: bool,
}

/// Whether `posix_spawn` clears close-on-exec for a `dup2` of a descriptor
/// onto itself, as POSIX.1-2024 asks: glibc does from 2.29 on. An older
/// one leaves the flag, and the task would start without its lock, which
/// scatter then releases while the task runs. Other C libraries are not
/// trusted with it.
fn dup2_onto_itself_clears_cloexec() -> bool {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: glibc returns a pointer to a static NUL-terminated string.
        let version = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
        glibc_at_least(version.to_bytes(), (2, 29))
    }
    #[cfg(not(target_env = "gnu"))]
    {
        false
    }
}

/// Whether a glibc version string (`2.36`, `2.28.9000`) is at least `want`;
/// false for one that does not parse.
fn glibc_at_least(version: &[u8], want: (u32, u32)) -> bool {
    let text = String::from_utf8_lossy(version);
    let mut parts = text.split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= want,
        _ => false,
    }
}

/// Owned spawn attributes, destroyed on drop.
struct Attr(libc::posix_spawnattr_t);

impl Drop for Attr {
    fn drop(&mut self) {
        // SAFETY: initialised in `Spawner::new`, destroyed once.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

/// Owned file actions, destroyed on drop.
struct Actions(libc::posix_spawn_file_actions_t);

impl Actions {
    fn new() -> io::Result<Actions> {
        // SAFETY: an all-zero value is a valid argument to `_init`, which
        // overwrites it.
        let mut fa: libc::posix_spawn_file_actions_t = unsafe { std::mem::zeroed() };
        // SAFETY: `fa` is writable; on success it must be destroyed, which
        // Drop does.
        check(unsafe { libc::posix_spawn_file_actions_init(&mut fa) })?;
        Ok(Actions(fa))
    }

    fn dup2(&mut self, fd: RawFd, to: RawFd) -> io::Result<()> {
        // SAFETY: `self.0` was initialised by `new`.
        check(unsafe { libc::posix_spawn_file_actions_adddup2(&mut self.0, fd, to) })
    }
}

impl Drop for Actions {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, destroyed once.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

/// A `posix_spawn*` result (an error number, not -1 and errno).
fn check(ret: libc::c_int) -> io::Result<()> {
    match ret {
        0 => Ok(()),
        err => Err(io::Error::from_raw_os_error(err)),
    }
}

/// Bytes as a C string; a NUL byte cannot be passed to `exec` at all.
fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "an argument or variable holds a NUL byte",
        )
    })
}

/// `KEY=VALUE` as a C string.
fn variable(key: impl AsRef<[u8]>, value: &[u8]) -> io::Result<CString> {
    let key = key.as_ref();
    let mut kv = Vec::with_capacity(key.len() + 1 + value.len());
    kv.extend_from_slice(key);
    kv.push(b'=');
    kv.extend_from_slice(value);
    c_string(&kv)
}

impl Spawner {
    /// Prepares the run's spawns; `window_start` is `SCATTER_WINDOW_START`
    /// (unix seconds with fraction), the same for every task.
    pub fn new(window_start: &str) -> io::Result<Spawner> {
        // SAFETY: as for file actions: zeroed, then initialised.
        let mut raw: libc::posix_spawnattr_t = unsafe { std::mem::zeroed() };
        // SAFETY: `raw` is writable; `Attr` destroys it on drop.
        check(unsafe { libc::posix_spawnattr_init(&mut raw) })?;
        let mut attr = Attr(raw);
        // SAFETY: sigset_t is a plain C value; sigemptyset initialises it.
        let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
        let mut pipe: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: both sets are valid and writable; the attribute calls
        // only copy them into `attr`, which was initialised above.
        unsafe {
            libc::sigemptyset(&mut empty);
            libc::sigemptyset(&mut pipe);
            // The Rust runtime ignores SIGPIPE, and an ignored signal stays
            // ignored across exec: a task must see its default.
            libc::sigaddset(&mut pipe, libc::SIGPIPE);
            check(libc::posix_spawnattr_setsigdefault(&mut attr.0, &pipe))?;
            check(libc::posix_spawnattr_setsigmask(&mut attr.0, &empty))?;
            check(libc::posix_spawnattr_setpgroup(&mut attr.0, 0))?;
            let flags = libc::POSIX_SPAWN_SETPGROUP
                | libc::POSIX_SPAWN_SETSIGDEF
                | libc::POSIX_SPAWN_SETSIGMASK;
            check(libc::posix_spawnattr_setflags(
                &mut attr.0,
                flags as libc::c_short,
            ))?;
        }
        let mut env = Vec::new();
        for (key, value) in std::env::vars_os() {
            if OWN.iter().any(|own| key.as_bytes() == own.as_bytes()) {
                continue;
            }
            // A variable that cannot be passed on is left out, as a shell
            // would never have received it.
            if let Ok(kv) = variable(key.as_bytes(), value.as_bytes()) {
                env.push(kv);
            }
        }
        env.push(variable("SCATTER_WINDOW_START", window_start.as_bytes())?);
        Ok(Spawner {
            attr,
            env,
            actions: std::cell::RefCell::new(None),
            lock_by_action: dup2_onto_itself_clears_cloexec(),
        })
    }

    /// Spawns the task with `lock` inherited; returns its pid (= its
    /// pgid). `program` is the command already looked up in PATH, if it
    /// was; the task still sees `argv[0]` as written.
    pub fn spawn(
        &self,
        program: Option<&Path>,
        argv: &[OsString],
        env: &TaskEnv<'_>,
        lock: BorrowedFd<'_>,
        output: &Output,
    ) -> io::Result<i32> {
        use std::os::fd::AsRawFd;
        let arg0 = argv
            .first()
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let args = argv
            .iter()
            .map(|a| c_string(a.as_bytes()))
            .collect::<io::Result<Vec<CString>>>()?;
        let lock_fd = lock.as_raw_fd();
        let own = [
            variable("SCATTER_INSTANCE", env.id.as_bytes())?,
            variable("SCATTER_INSTANCE_DIR", env.path.as_os_str().as_bytes())?,
            variable("SCATTER_SLOT", env.slot.to_string().as_bytes())?,
            variable("SCATTER_LOCK_FD", lock_fd.to_string().as_bytes())?,
        ];
        let mut arg_ptrs: Vec<*const c_char> = args.iter().map(|a| a.as_ptr()).collect();
        arg_ptrs.push(std::ptr::null());
        let mut env_ptrs: Vec<*const c_char> = Vec::with_capacity(self.env.len() + own.len() + 1);
        env_ptrs.extend(self.env.iter().map(|v| v.as_ptr()));
        env_ptrs.extend(own.iter().map(|v| v.as_ptr()));
        env_ptrs.push(std::ptr::null());

        let fd_of = |r: Redirect| match r {
            Redirect::Inherit => -1,
            Redirect::Fd(fd) => fd,
        };
        let key = [
            output.stdin,
            fd_of(output.stdout),
            fd_of(output.stderr),
            lock_fd,
        ];
        let mut cached = self.actions.borrow_mut();
        if cached.as_ref().is_none_or(|(k, _)| *k != key) {
            let mut actions = Actions::new()?;
            actions.dup2(output.stdin, 0)?;
            if let Redirect::Fd(fd) = output.stdout {
                actions.dup2(fd, 1)?;
            }
            if let Redirect::Fd(fd) = output.stderr {
                actions.dup2(fd, 2)?;
            }
            if self.lock_by_action {
                // Onto itself: clears close-on-exec in the child alone.
                actions.dup2(lock_fd, lock_fd)?;
            }
            *cached = Some((key, actions));
        }
        let Some((_, actions)) = cached.as_ref() else {
            return Err(io::Error::other("no file actions"));
        };

        let path = match program {
            Some(path) => c_string(path.as_os_str().as_bytes())?,
            None => c_string(arg0.as_bytes())?,
        };
        // Without a slash and not looked up already (a command built from a
        // placeholder): search PATH, as execvp does.
        let search = program.is_none() && !arg0.as_bytes().contains(&b'/');
        let mut pid: libc::pid_t = 0;
        // The two differ only in searching PATH; their signatures are one.
        let spawn = if search {
            libc::posix_spawnp
        } else {
            libc::posix_spawn
        };
        // SAFETY: every pointer is valid for the call: `path`, the C strings
        // behind `arg_ptrs` and `env_ptrs` (both null-terminated arrays),
        // the initialised file actions and attributes. posix_spawn does not
        // keep any of them after it returns.
        // Without the file action, the flag is cleared for the spawn only.
        // Only the supervisor thread starts processes, so no other exec can
        // inherit the lock meanwhile.
        if !self.lock_by_action {
            rustix::io::fcntl_setfd(lock, rustix::io::FdFlags::empty())?;
        }
        let ret = unsafe {
            spawn(
                &mut pid,
                path.as_ptr(),
                &actions.0,
                &self.attr.0,
                arg_ptrs.as_ptr().cast(),
                env_ptrs.as_ptr().cast(),
            )
        };
        if !self.lock_by_action {
            // Failing to restore it costs nothing the caller relies on: the
            // lock is closed right after the spawn.
            let _ = rustix::io::fcntl_setfd(lock, rustix::io::FdFlags::CLOEXEC);
        }
        check(ret)?;
        Ok(pid)
    }
}

/// The `--only` exit code for a task that could not be started, as a shell
/// and timeout(1) report it.
pub fn start_failure_code(err: &io::Error) -> u8 {
    match err.kind() {
        io::ErrorKind::NotFound => exit::NOT_FOUND,
        _ => exit::CANNOT_EXECUTE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// A task's stdin from /dev/null and its stdout and stderr into a file.
    struct Captured {
        tmp: tempfile::TempDir,
        _files: (std::fs::File, std::fs::File),
        output: Output,
    }

    impl Captured {
        fn new() -> Captured {
            use std::os::fd::AsRawFd;
            let tmp = tempfile::tempdir().unwrap();
            let out = std::fs::File::create(tmp.path().join("out")).unwrap();
            let null = std::fs::File::open("/dev/null").unwrap();
            let output = Output {
                stdin: null.as_raw_fd(),
                stdout: Redirect::Fd(out.as_raw_fd()),
                stderr: Redirect::Fd(out.as_raw_fd()),
                keep: None,
            };
            Captured {
                tmp,
                _files: (out, null),
                output,
            }
        }

        fn text(&self) -> String {
            std::fs::read_to_string(self.tmp.path().join("out")).unwrap()
        }
    }

    fn spawn_and_wait(argv: &[&str], output: &Output, lock: &std::fs::File) -> i32 {
        spawn_and_wait_with(Spawner::new("123.5").unwrap(), argv, output, lock)
    }

    fn spawn_and_wait_with(
        spawner: Spawner,
        argv: &[&str],
        output: &Output,
        lock: &std::fs::File,
    ) -> i32 {
        let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
        let env = TaskEnv {
            id: OsStr::new("a b"),
            path: Path::new("/srv/i/a b"),
            slot: 7,
        };
        let pid = spawner
            .spawn(None, &argv, &env, lock.as_fd(), output)
            .unwrap();
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        status
    }

    #[test]
    fn a_task_gets_its_environment_group_stdin_and_the_lock_only() {
        use std::os::fd::AsRawFd;
        let cap = Captured::new();
        let lock = tempfile::tempfile().unwrap();
        // Close-on-exec, like every descriptor scatter opens; another one
        // that must not reach the task.
        let other = tempfile::tempfile().unwrap();
        let script = format!(
            "printf '%s|%s|%s|%s|%s\\n' \"$SCATTER_INSTANCE\" \"$SCATTER_INSTANCE_DIR\" \"$SCATTER_SLOT\" \"$SCATTER_WINDOW_START\" \"$SCATTER_LOCK_FD\"; \
             [ -e /proc/self/fd/$SCATTER_LOCK_FD ] && echo lock; [ -e /proc/self/fd/{} ] && echo other; \
             [ \"$(ps -o pgid= -p $$ | tr -d ' ')\" = \"$$\" ] && echo leader; read x || echo eof; kill -s PIPE $$; echo survived",
            other.as_raw_fd()
        );
        let status = spawn_and_wait(&["sh", "-c", &script], &cap.output, &lock);
        let text = cap.text();
        // SIGPIPE is back at its default: the shell dies of it.
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGPIPE,
            "{status}: {text}"
        );
        let first = text.lines().next().unwrap();
        assert_eq!(
            first,
            format!("a b|/srv/i/a b|7|123.5|{}", lock.as_raw_fd())
        );
        assert!(text.contains("lock\n"), "{text}");
        assert!(!text.contains("other\n"), "{text}");
        assert!(text.contains("leader\n"), "{text}");
        assert!(text.contains("eof\n"), "{text}");
        assert!(!text.contains("survived"), "{text}");
    }

    #[test]
    fn the_lock_reaches_the_task_without_the_file_action_too() {
        let cap = Captured::new();
        let lock = tempfile::tempfile().unwrap();
        // As on a C library whose dup2 onto itself keeps close-on-exec.
        let mut spawner = Spawner::new("1").unwrap();
        spawner.lock_by_action = false;
        let script = "[ -e /proc/self/fd/$SCATTER_LOCK_FD ] && echo lock";
        spawn_and_wait_with(spawner, &["sh", "-c", script], &cap.output, &lock);
        let text = cap.text();
        assert_eq!(text, "lock\n");
        // scatter's own descriptor is close-on-exec again.
        let flags = rustix::io::fcntl_getfd(&lock).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
    }

    #[test]
    fn glibc_versions_from_2_29_clear_close_on_exec() {
        assert!(glibc_at_least(b"2.29", (2, 29)));
        assert!(glibc_at_least(b"2.36", (2, 29)));
        assert!(glibc_at_least(b"3.0", (2, 29)));
        assert!(!glibc_at_least(b"2.28", (2, 29)));
        assert!(!glibc_at_least(b"2.28.9000", (2, 29)));
        assert!(!glibc_at_least(b"", (2, 29)));
        assert!(!glibc_at_least(b"x.y", (2, 29)));
        assert!(!glibc_at_least(b"99999999999.1", (2, 29)));
        // This machine's glibc is new enough for the file action alone.
        #[cfg(target_env = "gnu")]
        assert!(dup2_onto_itself_clears_cloexec());
    }

    #[test]
    fn a_missing_command_is_not_found_and_a_nul_is_refused() {
        let lock = tempfile::tempfile().unwrap();
        let spawner = Spawner::new("1").unwrap();
        let env = TaskEnv {
            id: OsStr::new("a"),
            path: Path::new("/srv/i/a"),
            slot: 0,
        };
        let output = Output {
            stdin: 0,
            stdout: Redirect::Inherit,
            stderr: Redirect::Inherit,
            keep: None,
        };
        let err = spawner
            .spawn(
                None,
                &[OsString::from("no-such-command-anywhere")],
                &env,
                lock.as_fd(),
                &output,
            )
            .unwrap_err();
        assert_eq!(start_failure_code(&err), exit::NOT_FOUND);
        let err = spawner
            .spawn(None, &[OsString::from("a\0b")], &env, lock.as_fd(), &output)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
