//! The health decisions on their own: back-off delays and schedules, the
//! widespread verdict, and the changes a run settles, on records built in
//! memory and a clock given by hand.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::*;
use crate::idcode::encode_id;
use crate::outcome::{Kind, Outcome, TaskResult};
use crate::state::{Event, InstancesFile, Notice, Trigger, apply};
use crate::transition::Transition;

const MIN: f64 = 60.0;
const T0: f64 = 1_800_000_000.0;

fn backoff(base: u64, max: u64) -> Backoff {
    Backoff {
        base: Duration::from_secs(base),
        max: Duration::from_secs(max),
    }
}

fn wall(secs: f64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs)
}

/// Merges one outcome of `id`, started at `at`, as the state writer does.
fn outcome(file: &mut InstancesFile, id: &str, o: Outcome, at: f64) {
    let record = file.instances.entry(encode_id(id.as_ref())).or_default();
    apply(
        record,
        &Event {
            id: id.into(),
            trigger: Trigger::Cron,
            at: wall(at),
            result: TaskResult {
                outcome: o,
                started: Some(wall(at)),
                duration: Some(Duration::from_millis(1200)),
                lateness: None,
                usage: None,
            },
        },
    );
}

/// One run: every id gets its outcome, then the run settles.
fn run(
    file: &mut InstancesFile,
    closing: &Closing,
    results: &[(&str, Outcome)],
    at: f64,
) -> Vec<Notice> {
    for (id, o) in results {
        outcome(file, id, o.clone(), at);
    }
    let kinds: Vec<(OsString, Kind)> = results
        .iter()
        .map(|(id, o)| (OsString::from(id), o.kind()))
        .collect();
    settle(file, closing, &kinds, at)
}

fn events(changes: &[Notice]) -> Vec<(Transition, Option<String>)> {
    changes.iter().map(|c| (c.event, c.id.clone())).collect()
}

fn closing(n: u32, remind: Option<u64>) -> Closing {
    Closing {
        failures_before_report: n,
        remind: remind.map(Duration::from_secs),
        backoff: Some(backoff(60, 3600)),
        notify: true,
        ..Closing::default()
    }
}

fn record<'a>(file: &'a InstancesFile, id: &str) -> &'a InstanceRecord {
    &file.instances[&encode_id(id.as_ref())]
}

#[test]
fn delays_double_up_to_the_maximum_and_never_overflow() {
    let b = backoff(60, 3600);
    let delays: Vec<u64> = (0..9).map(|k| b.delay(k).as_secs()).collect();
    assert_eq!(delays, [0, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
    for level in [31, 32, 33, 64, u32::MAX] {
        assert_eq!(b.delay(level), Duration::from_secs(3600), "{level}");
    }
    let huge = backoff(31_557_600, 31_557_600);
    assert_eq!(huge.delay(u32::MAX), Duration::from_secs(31_557_600));
}

/// `--backoff 1m,1h` with cron every minute, each run up to a second
/// early or late: one failure retries the next minute, two skip one run,
/// three skip three, and so on, up to about once an hour. (A slot up to a
/// tenth of the delay early is on time, so the 16 min delay retries after
/// 15 min, and the hourly one after 55.)
#[test]
fn a_failing_instance_backs_off_on_the_cron_schedule() {
    let b = backoff(60, 3600);
    let mut file = InstancesFile::default();
    let mut attempts = Vec::new();
    for minute in 0..250u32 {
        // Cron's jitter, and the instance's slot in the window.
        let jitter = [0.0, -0.9, 0.8, -0.3, 0.5][minute as usize % 5];
        let at = T0 + f64::from(minute) * MIN + 17.0 + jitter;
        let held = file
            .instances
            .get(&encode_id("acme".as_ref()))
            .and_then(|r| b.held_until(r, at));
        if held.is_some() {
            continue;
        }
        attempts.push(minute);
        run(
            &mut file,
            &closing(1, None),
            &[("acme", Outcome::Failed(1))],
            at,
        );
    }
    assert_eq!(attempts, [0, 1, 3, 7, 15, 30, 59, 114, 169, 224]);
    let r = record(&file, "acme");
    assert_eq!(r.backoff_level, 10);
    assert_eq!(r.consecutive_failures, 10);
    let next = r.next_attempt.unwrap();
    assert!((next - (r.last_start.unwrap() + 3600.0)).abs() < 1e-6);
}

#[test]
fn a_slot_a_tenth_of_the_delay_early_is_on_time() {
    let b = backoff(60, 3600);
    let mut file = InstancesFile::default();
    run(
        &mut file,
        &closing(1, None),
        &[("a", Outcome::Failed(1))],
        T0,
    );
    let r = record(&file, "a");
    assert_eq!(b.held_until(r, T0 + 53.9), Some(T0 + 60.0));
    assert_eq!(b.held_until(r, T0 + 54.0), None);
    // Not failing, or level 0 (widespread failures only): never held.
    let mut ok = r.clone();
    ok.outcome = Some(Kind::Ok);
    assert_eq!(b.held_until(&ok, T0), None);
    let mut level0 = r.clone();
    level0.backoff_level = 0;
    assert_eq!(b.held_until(&level0, T0), None);
}

#[test]
fn one_success_resets_the_back_off() {
    let mut file = InstancesFile::default();
    let c = closing(1, None);
    run(&mut file, &c, &[("a", Outcome::Failed(1))], T0);
    run(&mut file, &c, &[("a", Outcome::TimedOut)], T0 + MIN);
    assert_eq!(record(&file, "a").backoff_level, 2);
    run(&mut file, &c, &[("a", Outcome::Ok)], T0 + 3.0 * MIN);
    let r = record(&file, "a");
    assert_eq!((r.backoff_level, r.consecutive_failures), (0, 0));
    assert_eq!((r.next_attempt, r.failing_since), (None, None));
}

#[test]
fn widespread_means_at_least_five_attempts_and_most_failed() {
    let v = |attempted, failed| Verdict { attempted, failed };
    assert!(!v(4, 4).widespread());
    assert!(v(5, 3).widespread());
    assert!(!v(6, 3).widespread());
    assert!(v(500, 412).widespread());
    assert!(v(6, 3).healthy() && !v(5, 3).healthy() && !v(0, 0).healthy());
    let results = [
        TaskResult::new(Outcome::Failed(1)),
        TaskResult::new(Outcome::Skipped(crate::outcome::Skip::Vanished)),
        TaskResult::new(Outcome::Paused("p".into())),
        TaskResult::new(Outcome::BackedOff(None)),
        TaskResult::new(Outcome::Detached),
        TaskResult::new(Outcome::NotStarted),
        TaskResult::new(Outcome::Ok),
    ];
    assert_eq!(Verdict::of(&results), v(2, 1));
}

#[test]
fn failing_after_n_then_reminders_then_one_recovery() {
    let mut file = InstancesFile::default();
    let c = closing(3, Some(600));
    let fail = |file: &mut InstancesFile, at| run(file, &c, &[("acme", Outcome::Failed(3))], at);
    assert!(fail(&mut file, T0).is_empty());
    assert!(fail(&mut file, T0 + MIN).is_empty());
    let third = fail(&mut file, T0 + 2.0 * MIN);
    assert_eq!(events(&third), [(Transition::Failing, Some("acme".into()))]);
    assert_eq!(third[0].failures, 3);
    assert_eq!(third[0].since, Some(T0));
    assert_eq!(third[0].reason, "exited with status 3 after 1.2s");
    // Repeats are silent until --remind has passed since the last word.
    assert!(fail(&mut file, T0 + 3.0 * MIN).is_empty());
    assert!(fail(&mut file, T0 + 11.0 * MIN).is_empty());
    let reminder = fail(&mut file, T0 + 12.0 * MIN);
    assert_eq!(
        events(&reminder),
        [(Transition::Reminder, Some("acme".into()))]
    );
    assert_eq!(reminder[0].failures, 6);
    assert!(fail(&mut file, T0 + 13.0 * MIN).is_empty());
    let back = run(&mut file, &c, &[("acme", Outcome::Ok)], T0 + 14.0 * MIN);
    assert_eq!(
        events(&back),
        [(Transition::Recovered, Some("acme".into()))]
    );
    assert_eq!((back[0].failures, back[0].since), (7, Some(T0)));
    assert_eq!(
        line(&back[0], T0 + 14.0 * MIN).unwrap(),
        "scatter: acme: recovered after 7 failures in 14m"
    );
    assert!(run(&mut file, &c, &[("acme", Outcome::Ok)], T0 + 15.0 * MIN).is_empty());
    // Numbered in order, and queued for the hook.
    let seqs: Vec<u64> = file.pending.iter().map(|n| n.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
}

#[test]
fn flapping_below_the_threshold_is_never_reported() {
    let mut file = InstancesFile::default();
    let c = closing(2, None);
    for i in 0..10 {
        let o = if i % 2 == 0 {
            Outcome::Failed(1)
        } else {
            Outcome::Ok
        };
        assert!(run(&mut file, &c, &[("a", o)], T0 + f64::from(i) * MIN).is_empty());
    }
}

#[test]
fn a_widespread_failure_is_one_change_and_holds_levels_and_instances() {
    let ids: Vec<String> = (0..10).map(|i| format!("t{i}")).collect();
    let all = |o: Outcome| -> Vec<(&str, Outcome)> {
        ids.iter().map(|id| (id.as_str(), o.clone())).collect()
    };
    let mut file = InstancesFile::default();
    let c = closing(1, Some(1800));
    let first = run(&mut file, &c, &all(Outcome::Failed(1)), T0);
    assert_eq!(events(&first), [(Transition::Widespread, None)]);
    assert_eq!(
        line(&first[0], T0).unwrap(),
        "scatter: 10 of 10 instances failed: widespread failure"
    );
    for minute in 1..30 {
        let at = T0 + f64::from(minute) * MIN;
        assert!(run(&mut file, &c, &all(Outcome::Failed(1)), at).is_empty());
    }
    // No level advanced, so nobody backs off, though all fail.
    for id in &ids {
        let r = record(&file, id);
        assert_eq!((r.consecutive_failures, r.backoff_level), (30, 0));
        assert_eq!(r.next_attempt, None);
    }
    let remind = run(&mut file, &c, &all(Outcome::Failed(1)), T0 + 30.0 * MIN);
    assert_eq!(events(&remind), [(Transition::Reminder, None)]);
    assert_eq!(
        line(&remind[0], T0 + 30.0 * MIN).unwrap(),
        "scatter: widespread failure for 30m: 10 of 10 instances failed"
    );
    // The first healthy run ends it; an instance that still fails is
    // reported now, on its own.
    let mut mixed = all(Outcome::Ok);
    mixed[3].1 = Outcome::Failed(2);
    let over = run(&mut file, &c, &mixed, T0 + 31.0 * MIN);
    assert_eq!(
        events(&over),
        [
            (Transition::WidespreadRecovered, None),
            (Transition::Failing, Some("t3".into()))
        ]
    );
    assert_eq!(over[0].since, Some(T0));
    assert_eq!(record(&file, "t3").backoff_level, 1);
    assert_eq!(file.job.widespread, None);
}

#[test]
fn a_failure_reported_before_an_outage_recovers_after_it() {
    let ids: Vec<String> = (0..6).map(|i| format!("t{i}")).collect();
    let mut file = InstancesFile::default();
    let c = closing(1, None);
    let one = run(&mut file, &c, &[("t0", Outcome::Failed(1))], T0);
    assert_eq!(events(&one), [(Transition::Failing, Some("t0".into()))]);
    let down: Vec<(&str, Outcome)> = ids
        .iter()
        .map(|i| (i.as_str(), Outcome::Failed(1)))
        .collect();
    assert_eq!(
        events(&run(&mut file, &c, &down, T0 + MIN)),
        [(Transition::Widespread, None)]
    );
    // t0 recovers during the outage: not reported while it lasts.
    let mut partly = down.clone();
    partly[0].1 = Outcome::Ok;
    assert!(run(&mut file, &c, &partly, T0 + 2.0 * MIN).is_empty());
    let up: Vec<(&str, Outcome)> = ids.iter().map(|i| (i.as_str(), Outcome::Ok)).collect();
    let over = run(&mut file, &c, &up, T0 + 3.0 * MIN);
    assert_eq!(
        events(&over),
        [
            (Transition::WidespreadRecovered, None),
            (Transition::Recovered, Some("t0".into()))
        ]
    );
}

#[test]
fn a_manual_run_neither_begins_nor_ends_a_widespread_failure() {
    let ids: Vec<String> = (0..5).map(|i| format!("t{i}")).collect();
    let down: Vec<(&str, Outcome)> = ids
        .iter()
        .map(|i| (i.as_str(), Outcome::Failed(1)))
        .collect();
    let mut file = InstancesFile::default();
    let manual = Closing {
        manual: true,
        ..closing(1, None)
    };
    let changes = run(&mut file, &manual, &down, T0);
    assert_eq!(changes.len(), 5, "{changes:?}");
    assert!(changes.iter().all(|c| c.event == Transition::Failing));
    assert_eq!(file.job.widespread, None);
}

#[test]
fn a_pause_ending_is_reported_once() {
    let mut file = InstancesFile::default();
    let mut c = closing(1, None);
    c.paused.insert(encode_id("a".as_ref()), T0 - 100.0);
    let paused = Outcome::Paused("paused by root".into());
    assert!(run(&mut file, &c, &[("a", paused.clone())], T0).is_empty());
    assert!(run(&mut file, &c, &[("a", paused)], T0 + MIN).is_empty());
    assert_eq!(record(&file, "a").paused_since, Some(T0 - 100.0));
    c.paused.clear();
    let resumed = run(&mut file, &c, &[("a", Outcome::Ok)], T0 + 2.0 * MIN);
    assert_eq!(events(&resumed), [(Transition::Unpaused, Some("a".into()))]);
    assert_eq!(resumed[0].since, Some(T0 - 100.0));
    assert_eq!(line(&resumed[0], T0), None, "the hook's alone");
    assert!(run(&mut file, &c, &[("a", Outcome::Ok)], T0 + 3.0 * MIN).is_empty());
}

#[test]
fn a_resumed_instance_that_fails_is_unpaused_and_failing_in_the_same_run() {
    let mut file = InstancesFile::default();
    let mut c = closing(1, None);
    c.paused.insert(encode_id("a".as_ref()), T0 - 100.0);
    let paused = Outcome::Paused("paused by root".into());
    assert!(run(&mut file, &c, &[("a", paused)], T0).is_empty());
    c.paused.clear();
    let resumed = run(&mut file, &c, &[("a", Outcome::Failed(1))], T0 + MIN);
    assert_eq!(
        events(&resumed),
        [
            (Transition::Unpaused, Some("a".into())),
            (Transition::Failing, Some("a".into()))
        ]
    );
    // Its failure counts towards back-off as any other.
    let a = record(&file, "a");
    assert_eq!(a.backoff_level, 1);
    assert!(a.next_attempt.is_some());
    assert_eq!(a.paused_since, None);
}

#[test]
fn changes_are_queued_only_for_a_job_with_a_hook() {
    let mut file = InstancesFile::default();
    let quiet = Closing {
        notify: false,
        ..closing(1, None)
    };
    let changes = run(&mut file, &quiet, &[("a", Outcome::Failed(1))], T0);
    assert_eq!(changes.len(), 1);
    assert!(file.pending.is_empty() && !file.job.notify);
    // A cron run with a hook marks the job; a manual run without one then
    // still queues, for the hook to hear of it.
    run(
        &mut file,
        &closing(1, None),
        &[("b", Outcome::Failed(1))],
        T0,
    );
    assert!(file.job.notify);
    let manual = Closing {
        manual: true,
        ..quiet
    };
    run(&mut file, &manual, &[("a", Outcome::Ok)], T0 + MIN);
    let queued: Vec<_> = file.pending.iter().map(|n| (n.seq, n.event)).collect();
    assert_eq!(
        queued,
        [(1, Transition::Failing), (2, Transition::Recovered)]
    );
}

#[test]
fn lines_quote_hostile_ids_and_keep_to_one_line() {
    let id = OsString::from("x\n'; rm -rf ~");
    let change = Notice {
        failures: 2,
        reason: "exited with status 1\nforged line".into(),
        since: Some(T0),
        ..Notice::new(Transition::Failing, Some(&id))
    };
    let text = line(&change, T0 + 5.0).unwrap();
    assert!(!text.contains('\n'), "{text}");
    assert!(
        text.starts_with("scatter: $'x\\n\\'; rm -rf ~': failing, 2 failures in a row"),
        "{text}"
    );
    assert_eq!(change.raw_id().unwrap(), id);
}

fn plan_of(ids: &[&str], manual: bool) -> Plan {
    let mut plan = Plan::for_tests(
        PathBuf::from("/srv/i"),
        ids.iter().map(OsString::from).collect(),
        Duration::from_secs(60),
    );
    plan.manual = manual;
    plan
}

/// Writes records and pauses into a fresh state directory, as a run and
/// `scatter pause` would.
fn state_with(file: InstancesFile, pauses: &[(&str, Option<f64>)]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::create(tmp.path()).unwrap();
    std::fs::write(
        tmp.path().join("instances.json"),
        serde_json::to_vec(&file).unwrap(),
    )
    .unwrap();
    dir.change_pauses(0.0, |p| {
        for (id, until) in pauses {
            p.insert(
                encode_id(id.as_ref()),
                Pause {
                    id: id.to_string(),
                    by: "root".into(),
                    since: T0 - 10.0,
                    until: *until,
                    reason: Some("moving".into()),
                    ..Pause::default()
                },
            );
        }
    })
    .unwrap();
    tmp
}

#[test]
fn prepare_holds_paused_and_backed_off_instances_at_their_slots() {
    let mut file = InstancesFile::default();
    run(
        &mut file,
        &closing(1, None),
        &[("b", Outcome::Failed(1))],
        T0,
    );
    let tmp = state_with(file, &[("a", None), ("c", Some(T0 + 30.0))]);
    let spec = Spec {
        backoff: Some(backoff(60, 3600)),
        failures_before_report: 1,
        ..Spec::default()
    };
    // Slots at +0 s, +15 s, +30 s, +45 s: c's pause ends at +30 s.
    let mut plan = plan_of(&["a", "b", "c", "d"], false);
    let dir = StateDir::open(tmp.path()).unwrap();
    let closing = prepare(&mut plan, dir.as_ref(), &spec, wall(T0 + 5.0));
    let held: Vec<Option<Kind>> = (0..4).map(|s| plan.held(s).map(Outcome::kind)).collect();
    assert_eq!(
        held,
        [Some(Kind::Paused), Some(Kind::BackedOff), None, None]
    );
    assert_eq!(plan.held(1).unwrap().next_attempt(), Some(wall(T0 + 60.0)));
    assert!(
        plan.held(0)
            .unwrap()
            .describe(None, None)
            .contains("moving")
    );
    assert_eq!(closing.paused.keys().collect::<Vec<_>>(), ["a"]);
    // --only runs them anyway; a missing state directory holds nothing.
    let mut manual = plan_of(&["a", "b"], true);
    prepare(&mut manual, dir.as_ref(), &spec, wall(T0 + 5.0));
    assert_eq!((manual.held(0), manual.held(1)), (None, None));
    let mut none = plan_of(&["a"], false);
    let gone = tmp.path().join("nothing");
    let missing = StateDir::open(&gone).unwrap();
    assert!(missing.is_none());
    let closing = prepare(&mut none, missing.as_ref(), &spec, wall(T0));
    assert!(none.held(0).is_none() && closing.paused.is_empty());
}
