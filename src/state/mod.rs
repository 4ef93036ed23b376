//! Run history on disk: one record per instance and one per run.
//!
//! scatter has no daemon, so `scatter status`, monitoring checks and the
//! metrics file answer their questions from files each run leaves in the
//! state directory:
//!
//! * `instances.json`: one record per instance, keyed by its encoded id
//!   (never by position): last start, end and duration, outcome with exit
//!   code or signal, consecutive failures, last skip reason, trigger, and
//!   what its task cost (last and average).
//! * `runs/<run-id>.json`: one record per run: pid, start, planned end of
//!   the spreading, progress, counts per outcome, running/finished/aborted.
//! * `pauses.json` and `notified.json`: pauses, and how far the
//!   `--on-change` queue (kept in `instances.json`) has been fired; see
//!   [`health`].
//!
//! Every file is replaced atomically (temporary file, fsync, rename, fsync
//! of the directory), so a crash never leaves one half-written. Overlapping
//! runs share `instances.json`: each applies its own events to the current
//! file under an exclusive `flock` on `instances.lock`, so neither loses the
//! other's updates; a run record has a single writer.
//!
//! The directory and `runs/` are opened once, by [`crate::safedir`]'s rules
//! (private; `runs/` never a symlink), and every file is reached through
//! their descriptors, so a symlink planted later redirects nothing. Pruning
//! deletes only regular files named as [`run_id`] names run records. Reads
//! are bounded ([`MAX_INSTANCES_FILE`], [`MAX_RUN_RECORD`]) and never follow
//! a symlink or block on a FIFO, and waiting for `instances.lock` is bounded
//! too, so nothing in the directory can hang or exhaust a run or
//! `scatter status`.
//!
//! All of this happens on one background thread fed by a channel, with
//! instance updates batched every few seconds, so disk latency and fsync
//! never delay a start. The thread never spawns anything; the files it opens
//! are close-on-exec, so no task inherits them.

mod dir;
pub mod health;
mod records;
#[cfg(test)]
mod tests;
mod writer;

pub use dir::{
    MAX_INSTANCES_FILE, MAX_RUN_RECORD, STATE_DIRS, SYSTEM_STATE_BASE, StateDir, path_for,
};
pub use health::{JobHealth, Notice, Pause, Settle, Widespread};
pub use records::{
    Alert, EWMA_ALPHA, Event, InstanceRecord, InstancesFile, RunRecord, Trigger, apply, ewma,
    run_id,
};
pub use writer::{Progress, Writer, Written};
