//! What the state directory keeps about a job's health, beside the records:
//! pauses, the job's own state (a widespread failure in progress) and the
//! queue of changes whose `--on-change` hook has not run yet.
//!
//! * `pauses.json` holds the pauses, keyed by encoded id, so that a pause
//!   for a tenant not created yet is never pruned with stale records. It is
//!   changed only under `instances.lock`, as the records are, so a run and
//!   `scatter pause` never lose each other's writes.
//! * The queue lives in `instances.json` itself (see
//!   [`super::InstancesFile`]), numbered: a change and the record it
//!   changes are one atomic write, so a crash cannot keep one and lose the
//!   other.
//! * `notified.json` holds the number of the last change whose hook was
//!   started. A hook is taken off the queue by raising it, under the lock,
//!   just before the hook starts: a change is fired at most once, and one
//!   recorded but not yet fired (scatter was killed in between) is still in
//!   the queue for the next run. Merges drop the changes at or below it.
//!
//! Every field is read leniently and every file read is bounded.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use anyhow::{Context, Result};
use log::warn;
use serde::{Deserialize, Serialize};

use crate::display::{hex_unless_utf8, quoted};
use crate::lenient;
use crate::safedir::FileError;
use crate::transition::Transition;

use super::dir::StateDir;
use super::records::InstancesFile;

pub(super) const PAUSES_FILE: &str = "pauses.json";
const NOTIFIED_FILE: &str = "notified.json";
/// The most of `pauses.json` that is read: a pause is well under 1 KiB.
pub const MAX_PAUSES_FILE: u64 = 16 << 20;
const MAX_NOTIFIED_FILE: u64 = 4 << 10;
/// The most changes the queue keeps; older ones are dropped, with a
/// warning (a hook that never gets to run must not grow the file forever).
pub const MAX_PENDING: usize = 1000;
/// The longest text kept of a reason (a pause's, a change's): it ends up in
/// an environment variable and on one line of a report.
pub const MAX_REASON: usize = 1024;

/// The end of a run's merge: decides the changes to report, on the whole
/// file, under the lock (see [`crate::health`]).
pub type Settle = Box<dyn FnOnce(&mut InstancesFile) + Send>;

/// The job's own health, beside its instances'.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobHealth {
    /// A widespread failure in progress.
    #[serde(deserialize_with = "lenient::or_default")]
    pub widespread: Option<Widespread>,
    /// The last cron run had an `--on-change` hook: changes are queued even
    /// by runs without one (a manual run), for the hook to hear of them.
    #[serde(deserialize_with = "lenient::or_default")]
    pub notify: bool,
    /// The number the next queued change gets.
    #[serde(deserialize_with = "lenient::count")]
    pub next_seq: u64,
}

/// A widespread failure: since when, when it was last reported, and how
/// many instances failed of how many attempted in the run that began it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Widespread {
    #[serde(deserialize_with = "lenient::time_or_zero")]
    pub since: f64,
    #[serde(deserialize_with = "lenient::time_or_zero")]
    pub last: f64,
    #[serde(deserialize_with = "lenient::count")]
    pub failed: usize,
    #[serde(deserialize_with = "lenient::count")]
    pub attempted: usize,
}

/// One change, queued for the `--on-change` hook.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Notice {
    #[serde(deserialize_with = "lenient::count")]
    pub seq: u64,
    #[serde(deserialize_with = "lenient::or_default")]
    pub event: Transition,
    /// The instance (lossy if not UTF-8; then `id_hex` has the bytes);
    /// `None` for the widespread events.
    #[serde(deserialize_with = "lenient::or_default")]
    pub id: Option<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::or_default"
    )]
    pub id_hex: Option<String>,
    /// The instance's failures in a row; for the widespread events, the
    /// instances that failed in the run.
    #[serde(deserialize_with = "lenient::count")]
    pub failures: u64,
    #[serde(deserialize_with = "lenient::or_default")]
    pub reason: String,
    /// Since when the state it reports on lasts (unix seconds).
    #[serde(deserialize_with = "lenient::time")]
    pub since: Option<f64>,
    /// When the change was recorded.
    #[serde(deserialize_with = "lenient::time_or_zero")]
    pub at: f64,
}

impl Notice {
    /// A change about the instance `id` (`None`: about the job).
    pub fn new(event: Transition, id: Option<&OsStr>) -> Notice {
        Notice {
            event,
            id: id.map(|id| id.to_string_lossy().into_owned()),
            id_hex: id.and_then(|id| hex_unless_utf8(id.as_bytes())),
            ..Notice::default()
        }
    }

    /// The instance's id, byte for byte; `None` for the job's own changes,
    /// and for an id no directory could have (a crafted record).
    pub fn raw_id(&self) -> Option<OsString> {
        exact_id(self.id.as_deref()?, self.id_hex.as_deref())
    }
}

/// One paused instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Pause {
    #[serde(deserialize_with = "lenient::or_default")]
    pub id: String,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::or_default"
    )]
    pub id_hex: Option<String>,
    /// The user who paused it.
    #[serde(deserialize_with = "lenient::or_default")]
    pub by: String,
    /// `SUDO_USER`, when the pause was made through sudo.
    #[serde(deserialize_with = "lenient::or_default")]
    pub sudo_user: Option<String>,
    #[serde(deserialize_with = "lenient::time_or_zero")]
    pub since: f64,
    /// When it ends by itself (`--for`); `None`: when resumed.
    #[serde(deserialize_with = "lenient::time")]
    pub until: Option<f64>,
    #[serde(deserialize_with = "lenient::or_default")]
    pub reason: Option<String>,
}

impl Pause {
    /// Whether it still holds at `now` (unix seconds).
    pub fn active(&self, now: f64) -> bool {
        self.until.is_none_or(|until| until > now)
    }

    /// The instance's id, byte for byte (as written, if the record's bytes
    /// are not an id a directory could have).
    pub fn raw_id(&self) -> OsString {
        exact_id(&self.id, self.id_hex.as_deref()).unwrap_or_else(|| OsString::from(&self.id))
    }

    /// Who paused it: `root`, or `root (sudo: alice)`.
    pub fn who(&self) -> String {
        let by = if self.by.is_empty() {
            "unknown user"
        } else {
            &self.by
        };
        match &self.sudo_user {
            Some(sudo) => format!("{} (sudo: {})", quoted(by), quoted(sudo)),
            None => quoted(by),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct PausesFile {
    #[serde(deserialize_with = "lenient::or_default")]
    format: String,
    #[serde(deserialize_with = "lenient::records")]
    pauses: BTreeMap<String, Pause>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct NotifiedFile {
    #[serde(deserialize_with = "lenient::or_default")]
    format: String,
    #[serde(deserialize_with = "lenient::count")]
    last: u64,
}

impl StateDir {
    /// Every pause, keyed by encoded id, expired ones included.
    pub fn pauses(&self) -> Result<BTreeMap<String, Pause>> {
        let name = OsStr::new(PAUSES_FILE);
        let bytes = self
            .dir
            .read(name, "pauses file", MAX_PAUSES_FILE)
            .with_context(|| format!("cannot read {}", quoted(self.dir.join(name))))?;
        let Some(bytes) = bytes else {
            return Ok(BTreeMap::new());
        };
        let file: PausesFile = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not a scatter pauses file",
                quoted(self.dir.join(name))
            )
        })?;
        Ok(file.pauses)
    }

    /// Whether a pauses file is there.
    pub fn has_pauses(&self) -> bool {
        self.dir.stat(OsStr::new(PAUSES_FILE)).is_ok()
    }

    /// Changes the pauses under `instances.lock` and writes them back
    /// atomically; pauses that have expired by `now` are dropped first.
    pub fn change_pauses<T>(
        &self,
        now: f64,
        change: impl FnOnce(&mut BTreeMap<String, Pause>) -> T,
    ) -> Result<T> {
        let _lock = self.lock()?;
        let mut pauses = self.pauses()?;
        pauses.retain(|_, p| p.active(now));
        let out = change(&mut pauses);
        let file = PausesFile {
            format: "scatter-pauses/1".into(),
            pauses,
        };
        let bytes = serde_json::to_vec(&file)?;
        self.dir
            .write_atomic(OsStr::new(PAUSES_FILE), 0o644, |f| f.write_all(&bytes))?;
        Ok(out)
    }

    /// The number of the last change whose hook was started (0: none).
    fn notified(&self) -> Result<u64> {
        let name = OsStr::new(NOTIFIED_FILE);
        let path = self.dir.join(name);
        match self.dir.read(name, "state file", MAX_NOTIFIED_FILE) {
            Ok(Some(bytes)) => Ok(serde_json::from_slice::<NotifiedFile>(&bytes)
                .map(|f| f.last)
                .unwrap_or(0)),
            Ok(None) => Ok(0),
            Err(FileError::Refused(why)) => Err(anyhow::anyhow!(why)),
            Err(FileError::Io(err)) => {
                Err(err).with_context(|| format!("cannot read {}", quoted(&path)))
            }
        }
    }

    /// Takes change `seq` off the queue, under the lock: `true` if this
    /// call took it, so its hook may start now; `false` if it was taken
    /// already (by another run). Never gives the same change twice.
    pub fn take_notice(&self, seq: u64) -> Result<bool> {
        let _lock = self.lock()?;
        if self.notified()? >= seq {
            return Ok(false);
        }
        let file = NotifiedFile {
            format: "scatter-notified/1".into(),
            last: seq,
        };
        let bytes = serde_json::to_vec(&file)?;
        self.dir
            .write_atomic(OsStr::new(NOTIFIED_FILE), 0o644, |f| f.write_all(&bytes))?;
        Ok(true)
    }

    /// Drops the changes whose hook was started, and keeps the numbering
    /// ahead of them (a file rewritten by an older release loses its
    /// counter, but never makes a new change look fired). Under the lock.
    pub(super) fn prune_pending(&self, file: &mut InstancesFile) -> Result<()> {
        let last = self.notified()?;
        file.pending.retain(|n| n.seq > last);
        let highest = file.pending.iter().map(|n| n.seq).max().unwrap_or(0);
        file.job.next_seq = file
            .job
            .next_seq
            .max(last.saturating_add(1))
            .max(highest.saturating_add(1));
        Ok(())
    }
}

/// Keeps the queue to [`MAX_PENDING`] changes, dropping the oldest.
pub(super) fn bound_pending(pending: &mut Vec<Notice>) {
    if pending.len() > MAX_PENDING {
        let dropped = pending.len() - MAX_PENDING;
        pending.drain(..dropped);
        warn!(
            "{dropped} changes dropped from the --on-change queue, which keeps at most {MAX_PENDING}; is the hook ever run?"
        );
    }
}

/// Cuts a reason to [`MAX_REASON`] bytes, at a character boundary.
pub fn short_reason(reason: &str) -> String {
    if reason.len() <= MAX_REASON {
        return reason.to_string();
    }
    let mut end = MAX_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &reason[..end])
}

/// An id from a record: the bytes in `hex` when it has them, else the text;
/// `None` unless it could name a directory (not empty, no `/`, no NUL).
fn exact_id(text: &str, hex: Option<&str>) -> Option<OsString> {
    let bytes = hex
        .and_then(unhex)
        .unwrap_or_else(|| text.as_bytes().to_vec());
    let usable = crate::safedir::is_one_component(OsStr::from_bytes(&bytes)) && !bytes.contains(&0);
    usable.then(|| OsString::from_vec(bytes))
}

fn unhex(hex: &str) -> Option<Vec<u8>> {
    let bytes = hex.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(s, 16).ok()
        })
        .collect()
}
