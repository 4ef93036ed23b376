//! The plan: which instances run, in what order, at what offset.
//!
//! The dry run prints a plan and the real run executes the same plan, so what
//! CI checks is what cron runs. Offsets are exact fractions of the window,
//! `k × W / N`, computed in integer nanoseconds from one start instant; the
//! supervisor sleeps to these absolute deadlines, so no error accumulates
//! from one start to the next. `--only` plans start everything at once.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::ValueEnum;

use crate::display::quoted;
use crate::exit::Fatal;
use crate::filter::Filter;
use crate::http::{Expanded, RequestTemplate};
use crate::idhash::hash_key;
use crate::lock;
use crate::outcome::Outcome;
use crate::shard::Shard;
use crate::template::Template;

/// The order of starts within the window.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Bytewise by instance id.
    Name,
    /// By a stable hash of the id, so an instance keeps nearly the same slot
    /// as others come and go.
    Hash,
}

impl Order {
    pub fn as_str(self) -> &'static str {
        match self {
            Order::Name => "name",
            Order::Hash => "hash",
        }
    }
}

/// What decides a plan, apart from the instances found: the validated
/// flags of `scatter run`.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Absolute path of the instances directory (symlinks not resolved).
    pub instances: PathBuf,
    /// Job name: the lock subdirectory.
    pub name: OsString,
    /// `<lock base>/<name>`, holding one lock file per instance.
    pub lock_dir: PathBuf,
    pub window: Duration,
    pub order: Order,
    /// `--only`: run just these, at once.
    pub only: Vec<OsString>,
    /// `--shard` / `JOB_COMPLETION_INDEX` with `--shards`.
    pub shard: Option<Shard>,
    pub template: Template,
    /// The command resolved through PATH once, when it has no placeholder.
    pub program: Option<PathBuf>,
    /// `--url`: each task is this request, made by scatter itself, and
    /// `template` is empty.
    pub request: Option<RequestTemplate>,
    /// `--include` and `--exclude`.
    pub filter: Filter,
}

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
    /// `--url`: the request each task makes instead of a command.
    pub request: Option<RequestTemplate>,
    /// Instances left out by `--include`/`--exclude` (sorted bytewise).
    pub excluded: Vec<OsString>,
    /// `--include`/`--exclude` as given, for the dry run; empty without.
    pub filter: String,
    /// Slots that are not started this run, and the outcome they get at
    /// their slot instead (paused, backed off).
    held: BTreeMap<usize, Outcome>,
    template: Template,
    /// The open job lock directory, once a real run has prepared it.
    locks: Option<lock::JobDir>,
}

impl Plan {
    /// Builds the plan from the discovered ids (sorted bytewise).
    pub fn build(spec: &Spec, ids: Vec<OsString>) -> Result<Plan> {
        let manual = !spec.only.is_empty();
        // `--only` runs exactly what was asked, whatever the shard.
        let shard = if manual { None } else { spec.shard };
        let (ids, excluded): (Vec<OsString>, Vec<OsString>) =
            ids.into_iter().partition(|id| spec.filter.admits(id));
        let ids = if manual {
            select(&spec.instances, ids, &spec.only, &spec.filter, &excluded)?
        } else {
            let mine = match shard {
                Some(shard) => ids.into_iter().filter(|id| shard.owns(id)).collect(),
                None => ids,
            };
            order(mine, spec.order)
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
                    offset(spec.window, slot, n)
                },
                id,
            })
            .collect();
        Ok(Plan {
            instances: spec.instances.clone(),
            name: spec.name.clone(),
            lock_dir: spec.lock_dir.clone(),
            window: spec.window,
            order: spec.order,
            manual,
            shard,
            entries,
            program: spec.program.clone(),
            request: spec.request.clone(),
            excluded,
            filter: spec.filter.describe(),
            held: BTreeMap::new(),
            template: spec.template.clone(),
            locks: None,
        })
    }

    /// Holds the instance of `slot` back this run: at its slot it gets
    /// `outcome` instead of a start.
    pub fn hold(&mut self, slot: usize, outcome: Outcome) {
        if slot < self.entries.len() {
            self.held.insert(slot, outcome);
        }
    }

    /// The outcome an instance held back gets at its slot; `None` if it
    /// starts.
    pub fn held(&self, slot: usize) -> Option<&Outcome> {
        self.held.get(&slot)
    }

    /// A spread plan over `ids` running `true`, for tests of what consumes
    /// plans.
    #[cfg(test)]
    pub fn for_tests(instances: PathBuf, ids: Vec<OsString>, window: Duration) -> Plan {
        let spec = Spec {
            lock_dir: instances.join(".locks"),
            instances,
            name: "test".into(),
            window,
            order: Order::Name,
            only: Vec::new(),
            shard: None,
            template: Template::parse(&["true".into()]).expect("a valid template"),
            program: None,
            request: None,
            filter: Filter::default(),
        };
        Plan::build(&spec, ids).expect("a plan without --only")
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
        self.argv_at(entry, &self.path(entry))
    }

    /// [`Plan::argv`], for a caller that has the instance's path already.
    pub fn argv_at(&self, entry: &Entry, path: &std::path::Path) -> Vec<OsString> {
        self.template.expand(&entry.id, path)
    }

    /// `--url`: the request of one instance.
    pub fn request(&self, entry: &Entry) -> Option<Expanded> {
        self.request.as_ref().map(|r| r.expand(&entry.id))
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

/// The `--only` ids, in the order given, without repeats; each must be one
/// of the discovered instances, and not one `--include`/`--exclude` leaves
/// out.
fn select(
    dir: &std::path::Path,
    ids: Vec<OsString>,
    only: &[OsString],
    filter: &Filter,
    excluded: &[OsString],
) -> Result<Vec<OsString>> {
    let mut chosen: Vec<OsString> = Vec::with_capacity(only.len());
    for want in only {
        if chosen.contains(want) {
            continue;
        }
        if excluded.contains(want)
            && let Some(why) = filter.why_not(want)
        {
            return Err(Fatal::usage(format!(
                "--only {}: this instance is left out by {why}",
                quoted(want)
            ))
            .hint("drop or narrow the --include/--exclude globs (or SCATTER_INCLUDE/SCATTER_EXCLUDE) to run it by hand")
            .into());
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

    fn spec(only: &[&str], order: Order, shard: Option<Shard>) -> Spec {
        Spec {
            instances: PathBuf::from("/srv/instances"),
            name: "job".into(),
            lock_dir: PathBuf::from("/run/scatter/job"),
            window: Duration::from_secs(60),
            order,
            only: ids(only),
            shard,
            template: Template::parse(&["task".into(), "{path}".into()]).unwrap(),
            program: None,
            request: None,
            filter: Filter::default(),
        }
    }

    #[test]
    fn build_spreads_the_ids_of_the_shard_across_the_window() {
        let all = ids(&["a", "b", "c", "d"]);
        let plan = Plan::build(&spec(&[], Order::Name, None), all.clone()).unwrap();
        let got: Vec<_> = plan.entries.iter().map(|e| (e.slot, e.offset)).collect();
        let secs = Duration::from_secs;
        assert_eq!(
            got,
            [(0, secs(0)), (1, secs(15)), (2, secs(30)), (3, secs(45))]
        );
        assert_eq!(plan.interval(), secs(15));
        assert_eq!(
            plan.argv(&plan.entries[2]),
            ids(&["task", "/srv/instances/c"])
        );
        let shard = Shard::new(1, 2).unwrap();
        let half = Plan::build(&spec(&[], Order::Hash, Some(shard)), all.clone()).unwrap();
        assert!(half.entries.iter().all(|e| shard.owns(&e.id)));
        let other = Plan::build(
            &spec(&[], Order::Hash, Some(Shard::new(0, 2).unwrap())),
            all,
        )
        .unwrap();
        assert_eq!(half.entries.len() + other.entries.len(), 4);
    }

    #[test]
    fn build_with_only_starts_those_at_once_and_ignores_the_shard() {
        let shard = Shard::new(0, 3).unwrap();
        let plan = Plan::build(
            &spec(&["c", "a"], Order::Hash, Some(shard)),
            ids(&["a", "b", "c"]),
        )
        .unwrap();
        assert!(plan.manual);
        assert_eq!(plan.shard, None);
        assert_eq!(plan.interval(), Duration::ZERO);
        let got: Vec<_> = plan
            .entries
            .iter()
            .map(|e| (e.id.clone(), e.offset))
            .collect();
        assert_eq!(
            got,
            [("c".into(), Duration::ZERO), ("a".into(), Duration::ZERO)]
        );
        let err = Plan::build(&spec(&["zz"], Order::Name, None), ids(&["a"])).unwrap_err();
        assert!(format!("{err:#}").contains("zz"));
    }

    #[test]
    fn only_keeps_given_order_and_rejects_unknown_ids() {
        let all = ids(&["a", "b", "c"]);
        let dir = std::path::Path::new("/srv");
        let none = Filter::default();
        assert_eq!(
            select(dir, all.clone(), &ids(&["c", "a", "c"]), &none, &[]).unwrap(),
            ids(&["c", "a"])
        );
        let err = select(dir, all, &ids(&["zz"]), &none, &[]).unwrap_err();
        assert!(format!("{err:#}").contains("zz"));
    }

    #[test]
    fn excluded_ids_are_not_planned_and_only_refuses_them() {
        let mut s = spec(&[], Order::Name, None);
        s.filter = Filter::new(&[], &["lost+found".into(), "_*".into()]).unwrap();
        let all = ids(&["_template", "acme", "globex", "lost+found"]);
        let plan = Plan::build(&s, all.clone()).unwrap();
        let planned: Vec<_> = plan.entries.iter().map(|e| e.id.clone()).collect();
        assert_eq!(planned, ids(&["acme", "globex"]));
        assert_eq!(plan.excluded, ids(&["_template", "lost+found"]));
        assert_eq!(plan.entries[1].offset, Duration::from_secs(30));
        s.only = ids(&["_template"]);
        let err = Plan::build(&s, all).unwrap_err();
        assert_eq!(crate::exit::code_of(&err), crate::exit::USAGE);
        let text = format!("{err:#}");
        assert!(
            text.contains("_template") && text.contains("--exclude $'_*'"),
            "{text}"
        );
        assert!(crate::exit::fatal_of(&err).unwrap().hint.is_some());
    }

    #[test]
    fn held_slots_are_kept_for_their_slot() {
        let mut plan = Plan::build(&spec(&[], Order::Name, None), ids(&["a", "b"])).unwrap();
        plan.hold(1, Outcome::Paused("paused".into()));
        plan.hold(7, Outcome::Paused("out of range".into()));
        assert_eq!(plan.held(0), None);
        assert_eq!(plan.held(1), Some(&Outcome::Paused("paused".into())));
        assert_eq!(plan.held(7), None);
    }
}
