//! The plan: which instances run, in what order, at what offset.
//!
//! The dry run prints a plan and the real run executes the same plan, so what
//! CI checks is what cron runs. Offsets are exact fractions of the window,
//! `k × W / N`, computed in integer nanoseconds from one start instant; the
//! supervisor sleeps to these absolute deadlines, so no error accumulates
//! from one start to the next. `--only` plans start everything at once.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use sha2::{Digest, Sha256};

use crate::cli::Order;
use crate::config::RunConfig;
use crate::display::quoted;
use crate::exit::Fatal;
use crate::lock;
use crate::shard::Shard;
use crate::template::Template;

/// One planned start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 0-based position in the plan (`SCATTER_SLOT`).
    pub slot: usize,
    /// When to start, counted from the run's start instant.
    pub offset: Duration,
    pub id: OsString,
}

/// A validated, ordered plan, shared by the dry run and the real run.
#[derive(Debug)]
pub struct Plan {
    pub instances: PathBuf,
    pub name: OsString,
    pub lock_dir: PathBuf,
    pub window: Duration,
    pub order: Order,
    /// `--only`: started at once, as a manual run.
    pub manual: bool,
    /// The shard this run covers (`None`: every instance).
    pub shard: Option<Shard>,
    pub entries: Vec<Entry>,
    /// The command resolved through PATH, when it is the same for everyone.
    pub program: Option<PathBuf>,
    template: Template,
    /// The open job lock directory, once a real run has prepared it.
    locks: Option<lock::JobDir>,
}

impl Plan {
    /// Builds the plan from the discovered ids (sorted bytewise).
    pub fn build(cfg: &RunConfig, ids: Vec<OsString>) -> Result<Plan> {
        let manual = !cfg.only.is_empty();
        // `--only` runs exactly what was asked, whatever the shard.
        let shard = if manual { None } else { cfg.shard };
        let ids = if manual {
            select(&cfg.instances, ids, &cfg.only)?
        } else {
            let mine = match shard {
                Some(shard) => ids.into_iter().filter(|id| shard.owns(id)).collect(),
                None => ids,
            };
            order(mine, cfg.order)
        };
        let n = ids.len();
        let entries = ids
            .into_iter()
            .enumerate()
            .map(|(slot, id)| Entry {
                slot,
                offset: if manual {
                    Duration::ZERO
                } else {
                    offset(cfg.window, slot, n)
                },
                id,
            })
            .collect();
        Ok(Plan {
            instances: cfg.instances.clone(),
            name: cfg.name.clone(),
            lock_dir: cfg.lock_dir.clone(),
            window: cfg.window,
            order: cfg.order,
            manual,
            shard,
            entries,
            program: cfg.program.clone(),
            template: cfg.template.clone(),
            locks: None,
        })
    }

    /// A spread plan over `ids`, for tests of what consumes plans.
    #[cfg(test)]
    pub fn for_tests(instances: PathBuf, ids: Vec<OsString>, window: Duration) -> Plan {
        let n = ids.len();
        let entries = ids
            .into_iter()
            .enumerate()
            .map(|(slot, id)| Entry {
                slot,
                offset: offset(window, slot, n),
                id,
            })
            .collect();
        Plan {
            lock_dir: instances.join(".locks"),
            instances,
            name: "test".into(),
            window,
            order: Order::Name,
            manual: false,
            shard: None,
            entries,
            program: None,
            template: Template::parse(&["true".into()]).expect("a valid template"),
            locks: None,
        }
    }

    /// The gap between two starts, W/N (zero for manual runs).
    pub fn interval(&self) -> Duration {
        match self.entries.len() {
            0 => Duration::ZERO,
            _ if self.manual => Duration::ZERO,
            n => offset(self.window, 1, n),
        }
    }

    pub fn path(&self, entry: &Entry) -> PathBuf {
        self.instances.join(&entry.id)
    }

    pub fn lock_path(&self, entry: &Entry) -> PathBuf {
        lock::lock_path(&self.lock_dir, &entry.id)
    }

    /// Gives a real run its open lock directory ([`lock::prepare_dirs`]).
    pub fn attach_locks(&mut self, locks: lock::JobDir) {
        self.locks = Some(locks);
    }

    /// Tries to take an instance's lock, in the attached lock directory.
    pub fn try_lock(&self, entry: &Entry) -> Result<lock::Attempt, lock::LockError> {
        match &self.locks {
            Some(locks) => locks.try_acquire(&entry.id),
            None => Err(lock::LockError::Io(std::io::Error::other(
                "the lock directory was not opened",
            ))),
        }
    }

    pub fn argv(&self, entry: &Entry) -> Vec<OsString> {
        self.template.expand(&entry.id, &self.path(entry))
    }
}

/// `k × W / N`, exact to the nanosecond.
pub fn offset(window: Duration, k: usize, n: usize) -> Duration {
    let nanos = window.as_nanos() * k as u128 / n.max(1) as u128;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Orders ids (given sorted bytewise) by name or by hash.
pub fn order(mut ids: Vec<OsString>, order: Order) -> Vec<OsString> {
    if order == Order::Hash {
        ids.sort_by_cached_key(|id| (hash_key(id), id.as_bytes().to_vec()));
    }
    ids
}

/// The first 64 bits of SHA-256: stable across releases and machines.
pub fn hash_key(id: &OsStr) -> u64 {
    let digest = Sha256::digest(id.as_bytes());
    u64::from_be_bytes(
        digest[..8]
            .try_into()
            .expect("a SHA-256 digest has 32 bytes"),
    )
}

/// The `--only` ids, in the order given, without repeats; each must be one
/// of the discovered instances.
fn select(dir: &std::path::Path, ids: Vec<OsString>, only: &[OsString]) -> Result<Vec<OsString>> {
    let mut chosen: Vec<OsString> = Vec::with_capacity(only.len());
    for want in only {
        if chosen.contains(want) {
            continue;
        }
        let found = ids
            .binary_search_by(|id| id.as_bytes().cmp(want.as_bytes()))
            .map(|_| ())
            .map_err(|_| {
                Fatal::usage(format!(
                    "--only {}: no such instance in {}",
                    quoted(want),
                    quoted(dir)
                ))
                .hint(
                    "an id is the name of a subdirectory of --instances; --dry-run lists them all",
                )
            });
        found?;
        chosen.push(want.clone());
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<OsString> {
        names.iter().map(OsString::from).collect()
    }

    #[test]
    fn offsets_are_exact_and_inside_the_window() {
        let w = Duration::from_secs(60);
        assert_eq!(offset(w, 0, 3), Duration::ZERO);
        assert_eq!(offset(w, 1, 3), Duration::from_secs(20));
        assert_eq!(offset(w, 2, 3), Duration::from_secs(40));
        assert!(offset(w, 999, 1000) < w);
        assert_eq!(
            offset(Duration::from_secs(10), 1, 1000),
            Duration::from_millis(10)
        );
    }

    #[test]
    fn hash_order_keeps_relative_order_when_others_come_and_go() {
        let all = ids(&["a", "b", "c", "d", "e", "f", "g"]);
        let fewer = ids(&["a", "c", "d", "g"]);
        let full = order(all, Order::Hash);
        let part = order(fewer.clone(), Order::Hash);
        let filtered: Vec<_> = full.into_iter().filter(|id| fewer.contains(id)).collect();
        assert_eq!(filtered, part);
    }

    #[test]
    fn hash_key_is_pinned() {
        // SHA-256("acme") starts with these bytes; a change would reshuffle
        // every deployment's schedule.
        assert_eq!(hash_key(OsStr::new("acme")), 0x822b_33ad_87c1_48a0);
    }

    #[test]
    fn only_keeps_given_order_and_rejects_unknown_ids() {
        let all = ids(&["a", "b", "c"]);
        let dir = std::path::Path::new("/srv");
        assert_eq!(
            select(dir, all.clone(), &ids(&["c", "a", "c"])).unwrap(),
            ids(&["c", "a"])
        );
        let err = select(dir, all, &ids(&["zz"])).unwrap_err();
        assert!(format!("{err:#}").contains("zz"));
    }
}
