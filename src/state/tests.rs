use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::dir::*;
use super::records::*;
use super::writer::*;
use crate::outcome::Skip;
use crate::outcome::{Kind, Outcome, RunState, TaskResult};

fn event(id: &str, outcome: Outcome) -> Event {
    Event {
        id: id.into(),
        trigger: Trigger::Cron,
        at: SystemTime::now(),
        result: TaskResult {
            outcome,
            started: Some(SystemTime::now()),
            duration: Some(Duration::from_millis(1500)),
            lateness: None,
            usage: None,
        },
    }
}

#[test]
fn a_tasks_cost_is_kept_as_last_value_and_weighted_average() {
    use crate::platform::Usage;
    let costing = |user_ms: u64, rss: u64| {
        let mut e = event("a", Outcome::Ok);
        e.result.usage = Some(Usage {
            user: Duration::from_millis(user_ms),
            system: Duration::from_millis(100),
            max_rss_kib: rss,
        });
        e
    };
    let mut r = InstanceRecord::default();
    apply(&mut r, &costing(1000, 2000));
    assert_eq!(r.last_cpu_user_secs, Some(1.0));
    assert_eq!(r.avg_cpu_user_secs, Some(1.0), "the first sample starts it");
    assert_eq!(r.avg_max_rss_kib, Some(2000.0));
    apply(&mut r, &costing(2000, 1000));
    assert_eq!(r.last_cpu_user_secs, Some(2.0));
    assert_eq!(r.last_max_rss_kib, Some(1000));
    assert!((r.avg_cpu_user_secs.unwrap() - 1.3).abs() < 1e-9);
    assert!((r.avg_max_rss_kib.unwrap() - 1700.0).abs() < 1e-9);
    assert!((r.last_cpu_secs().unwrap() - 2.1).abs() < 1e-9);
    // A skip, a deferral or a failure to start changes none of it.
    apply(&mut r, &event("a", Outcome::Deferred));
    apply(
        &mut r,
        &event(
            "a",
            Outcome::FailedToStart {
                reason: "x".into(),
                code: 1,
            },
        ),
    );
    assert_eq!(r.last_cpu_user_secs, Some(2.0));
    assert!((r.avg_cpu_user_secs.unwrap() - 1.3).abs() < 1e-9);
    assert_eq!(
        r.last_skip_reason.as_deref(),
        Some(crate::outcome::DEFERRED_REASON)
    );
}

#[test]
fn consecutive_failures_count_up_and_reset() {
    let mut r = InstanceRecord::default();
    apply(&mut r, &event("a", Outcome::Failed(3)));
    apply(&mut r, &event("a", Outcome::TimedOut));
    assert_eq!(r.consecutive_failures, 2);
    assert!(r.failing());
    // A skip is remembered apart and does not hide the failure.
    apply(
        &mut r,
        &event("a", Outcome::Skipped(Skip::Locked("pid 1".into()))),
    );
    assert_eq!(r.outcome, Some(Kind::TimedOut));
    assert_eq!(r.last_skip_reason.as_deref(), Some("locked by pid 1"));
    apply(&mut r, &event("a", Outcome::Ok));
    assert_eq!(r.consecutive_failures, 0);
    assert!(r.last_success.is_some());
    assert_eq!(r.exit_code, Some(0));
}

#[test]
fn merge_keeps_concurrent_updates_and_prunes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::create(tmp.path()).unwrap();
    dir.merge(&[event("a", Outcome::Ok)], None).unwrap();
    dir.merge(&[event("b", Outcome::Failed(1))], None).unwrap();
    let all = dir.instances().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all["b"].exit_code, Some(1));
    let kept = dir.merge(&[], Some(&["b".to_string()])).unwrap();
    assert_eq!(kept.keys().collect::<Vec<_>>(), ["b"]);
}

fn record(i: u64, state: RunState) -> RunRecord {
    RunRecord {
        run_id: run_id(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000 + i),
            42,
        ),
        state,
        ..Default::default()
    }
}

#[test]
fn writer_writes_runs_and_prunes_old_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::create(tmp.path()).unwrap();
    let old: Vec<RunRecord> = (0..5).map(|i| record(i, RunState::Finished)).collect();
    for run in &old {
        dir.write_run(run).unwrap();
    }
    let progress = Progress::new(record(99, RunState::Running));
    let mut writer = Writer::start(dir.clone(), Arc::clone(&progress), 3).unwrap();
    writer.event(event("x", Outcome::Ok));
    progress.update(|r| r.state = RunState::Finished);
    let done = writer.finish(None);
    assert!(done.errors.is_empty(), "{:?}", done.errors);
    assert!(done.instances.unwrap().contains_key("x"));
    let runs = dir.runs().unwrap();
    let ids: Vec<_> = runs.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            &old[3].run_id,
            &old[4].run_id,
            &record(99, RunState::Running).run_id
        ]
    );
    assert_eq!(runs[2].state, RunState::Finished);
}

#[test]
fn pruning_deletes_only_regular_files_named_as_run_records() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::create(tmp.path()).unwrap();
    let runs = tmp.path().join("runs");
    let victim = tmp.path().join("victim.json");
    std::fs::write(&victim, "{}").unwrap();
    // Named like the oldest record, but a symlink; and files scatter
    // never names so.
    let link = runs.join(format!("{}.json", record(0, RunState::Finished).run_id));
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    for name in ["notes.json", "20261123.json", ".hidden.json", "x"] {
        std::fs::write(runs.join(name), "{}").unwrap();
    }
    for i in 1..6 {
        dir.write_run(&record(i, RunState::Finished)).unwrap();
    }
    dir.prune_runs(2, &record(5, RunState::Finished).run_id)
        .unwrap();
    let mut left: Vec<String> = std::fs::read_dir(&runs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let mut want = vec![
        ".hidden.json".to_string(),
        "20261123.json".into(),
        format!("{}.json", record(0, RunState::Finished).run_id),
        format!("{}.json", record(4, RunState::Finished).run_id),
        format!("{}.json", record(5, RunState::Finished).run_id),
        "notes.json".into(),
        "x".into(),
    ];
    want.sort();
    assert_eq!(left, want);
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "{}");
    // status reads only the real records.
    assert_eq!(dir.runs().unwrap().len(), 2);
}

#[test]
fn run_ids_are_recognised_exactly() {
    let id = run_id(SystemTime::now(), 4_194_304);
    assert!(is_run_id(id.as_bytes()), "{id}");
    assert!(is_run_id(b"20261123T152254.123Z-42"));
    for bad in [
        "",
        "20261123T152254.123Z-",
        "20261123T152254.123Z-4x",
        "20261123X152254.123Z-42",
        "2026112T152254.123Z-42",
        "../20261123T152254.123Z-42",
        "20261123T152254.123Z-42/x",
    ] {
        assert!(!is_run_id(bad.as_bytes()), "{bad}");
    }
}

#[test]
fn a_planted_instances_lock_symlink_is_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::create(tmp.path()).unwrap();
    let target = tmp.path().join("elsewhere");
    std::os::unix::fs::symlink(&target, tmp.path().join(INSTANCES_LOCK)).unwrap();
    let err = dir.merge(&[event("a", Outcome::Ok)], None).unwrap_err();
    assert!(format!("{err:#}").contains("is a symlink"), "{err:#}");
    assert!(!target.exists());
    assert!(!tmp.path().join(INSTANCES_FILE).exists());
}

#[test]
fn a_merge_waits_for_the_instances_lock_a_bounded_time() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::create(tmp.path()).unwrap();
    dir.merge(&[], None).unwrap();
    let path = tmp.path().join(INSTANCES_LOCK);
    let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let holder = File::open(&path).unwrap();
    holder.lock().unwrap();
    let mine = File::open(&path).unwrap();
    let started = Instant::now();
    let err = lock_within(&mine, &path, Duration::from_millis(300)).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(format!("{err:#}").contains("still locked"), "{err:#}");
    drop(holder);
    lock_within(&mine, &path, Duration::from_millis(300)).unwrap();
}

#[test]
fn oversized_state_files_are_refused_not_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::create(tmp.path()).unwrap();
    let big = File::create(tmp.path().join(INSTANCES_FILE)).unwrap();
    big.set_len(MAX_INSTANCES_FILE + 1).unwrap();
    let err = dir.instances().unwrap_err();
    assert!(
        format!("{err:#}").contains("more than the 256 MiB"),
        "{err:#}"
    );
}

#[test]
fn run_ids_sort_by_time() {
    let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_447_374_123);
    assert_eq!(run_id(t, 42), "20261123T152254.123Z-42");
}
