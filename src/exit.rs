//! Exit codes and the fatal-error type that carries one.
//!
//! Every code scatter can return is a named constant here, documented once.
//! `--help` and the README list the same table ([`HELP_TABLE`]); a test keeps
//! them in sync. Errors that end the whole run before any task starts are
//! [`Fatal`] values, so `main` can map them to a code without guessing from
//! message text.

use std::fmt;

/// Every instance ran and succeeded, or was skipped because its lock was
/// busy, or was paused, backed off or deferred by pressure.
pub const OK: u8 = 0;
/// At least one task failed, was killed by a signal, timed out or could not
/// be started.
pub const FAILURE: u8 = 1;
/// Usage or configuration error: a bad flag or placeholder, an unusable lock
/// directory. Nothing was started.
pub const USAGE: u8 = 2;
/// The instances directory does not exist, is not a directory or cannot be
/// read (`EX_NOINPUT`). Nothing was started.
pub const NO_INPUT: u8 = 66;
/// `--only` with one id: the instance's lock is held by another process
/// (`EX_TEMPFAIL`, as run-one and lckdo use).
pub const LOCKED: u8 = 75;
/// `--only` with one id: the task was stopped by `--timeout`, as `timeout(1)`.
pub const TIMED_OUT: u8 = 124;
/// `--only` with one id: the command exists but could not be executed.
pub const CANNOT_EXECUTE: u8 = 126;
/// The command was not found (checked before anything runs when it has no
/// placeholder), or, with `--only` and one id, the task's command was not
/// found at its start.
pub const NOT_FOUND: u8 = 127;
/// Scatter was stopped by a signal, or (`--only` with one id) the task was
/// killed by one: 128 plus the signal number.
pub const SIGNAL_BASE: u8 = 128;

/// The exit-code table shown by `--help` and copied into the README.
pub const HELP_TABLE: &str = "\
Exit status:
    0    every instance succeeded (--url: answered below 400), or was skipped (locked), paused, backed off or deferred
    1    a task failed (--url: answered 400+ or not at all), was killed, timed out or could not start
    2    usage or configuration error; nothing was started
   66    the instances directory is missing or unreadable; nothing was started
   75    --only ID: the instance is locked by another process
  124    --only ID: the task or request timed out
  126    --only ID: the command could not be executed
  127    the command was not found
  128+N  scatter was stopped by signal N (--only ID: the task was killed by it)
  other  --only ID: the task's own exit status";

/// An error that ends the run before anything starts, with its exit code and
/// an optional hint telling the user what to do about it.
#[derive(Debug)]
pub struct Fatal {
    pub code: u8,
    pub message: String,
    pub hint: Option<String>,
}

impl Fatal {
    /// A usage or configuration error (exit code [`USAGE`]).
    pub fn usage(message: impl Into<String>) -> Self {
        Fatal {
            code: USAGE,
            message: message.into(),
            hint: None,
        }
    }

    /// The instances directory cannot be used (exit code [`NO_INPUT`]).
    pub fn no_input(message: impl Into<String>) -> Self {
        Fatal {
            code: NO_INPUT,
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Fatal {}

/// Finds the [`Fatal`] in an error's chain, whether it is the error itself or
/// context attached to a lower-level cause.
pub fn fatal_of(err: &anyhow::Error) -> Option<&Fatal> {
    err.downcast_ref::<Fatal>()
        .or_else(|| err.chain().find_map(|e| e.downcast_ref::<Fatal>()))
}

/// The exit code for an error that ended the run.
pub fn code_of(err: &anyhow::Error) -> u8 {
    fatal_of(err).map_or(USAGE, |f| f.code)
}

/// Whether the error is a write to a closed pipe, such as `| head` exiting.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn fatal_is_found_through_context() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let err = Err::<(), _>(io)
            .with_context(|| Fatal::no_input("no such instances directory").hint("check it"))
            .unwrap_err();
        assert_eq!(code_of(&err), NO_INPUT);
        assert_eq!(fatal_of(&err).unwrap().hint.as_deref(), Some("check it"));
        let plain = anyhow::anyhow!("something else");
        assert_eq!(code_of(&plain), USAGE);
    }
}
