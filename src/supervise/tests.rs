//! The engine's decisions, driven through a fake host on a fake clock: no
//! processes, no sleeping, exact instants.

use std::collections::HashMap;
use std::ffi::OsString;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use super::engine::Engine;
use super::fake::*;
use super::{Observer, Options};
use crate::outcome::{Outcome, TaskResult};
use crate::plan::Plan;
use crate::platform::ExitStatus;
use crate::report::Report;

#[derive(Default)]
pub(super) struct Seen {
    pub(super) started: Vec<usize>,
    pub(super) ended: Vec<(usize, String)>,
    /// Every change of the host's hold, in order.
    pub(super) held: Vec<bool>,
}

impl Observer for Seen {
    fn started(&mut self, slot: usize) {
        self.started.push(slot);
    }
    fn ended(&mut self, slot: usize, result: &TaskResult) {
        self.ended
            .push((slot, result.outcome.kind().name().to_string()));
    }
    fn held(&mut self, held: bool) {
        self.held.push(held);
    }
}

pub(super) fn plan(n: usize, window: Duration) -> Plan {
    let ids: Vec<OsString> = (0..n).map(|i| format!("t{i}").into()).collect();
    Plan::for_tests(PathBuf::from("/srv/instances"), ids, window)
}

pub(super) fn run(plan: &Plan, fake: &mut Fake, opts: &Options) -> (Report, Seen) {
    let mut seen = Seen::default();
    let start = fake.base;
    let report = Engine::new(fake, plan, start, opts, &mut seen).run();
    (report, seen)
}

pub(super) fn kinds(report: &Report) -> Vec<&'static str> {
    report
        .results
        .iter()
        .map(|r| r.outcome.kind().name())
        .collect()
}

fn calls_of(fake: &Fake, pick: impl Fn(&Call) -> bool) -> Vec<(f64, Call)> {
    fake.calls
        .iter()
        .filter(|(_, c)| pick(c))
        .map(|(at, c)| ((at.as_secs_f64() * 1000.0).round() / 1000.0, c.clone()))
        .collect()
}

pub(super) fn starts(fake: &Fake) -> Vec<(f64, Call)> {
    calls_of(fake, |c| matches!(c, Call::Start(_)))
}

fn signals(fake: &Fake) -> Vec<(f64, Call)> {
    calls_of(fake, |c| matches!(c, Call::Signal(..)))
}

#[test]
fn starts_go_out_at_their_slots_in_plan_order() {
    let plan = plan(4, secs(4.0));
    let mut fake = Fake::new(HashMap::new());
    let (report, seen) = run(&plan, &mut fake, &Options::default());
    assert_eq!(
        starts(&fake),
        [
            (0.0, Call::Start(0)),
            (1.0, Call::Start(1)),
            (2.0, Call::Start(2)),
            (3.0, Call::Start(3))
        ]
    );
    assert_eq!(kinds(&report), ["ok"; 4]);
    assert_eq!(seen.started, [0, 1, 2, 3]);
    assert_eq!(report.max_lateness().map(|(_, l)| l), Some(Duration::ZERO));
}

#[test]
fn the_cap_holds_starts_back_and_the_schedule_then_resumes() {
    let plan = plan(4, secs(4.0));
    let long = Script::runs(2.5);
    let scripts = HashMap::from([(0, long.clone()), (1, long)]);
    let mut fake = Fake::new(scripts);
    let opts = Options {
        max_concurrent: NonZeroUsize::new(1),
        ..Options::default()
    };
    let (report, _) = run(&plan, &mut fake, &opts);
    // Slot 1 waits for slot 0 (ends at 2.5), slot 2 for slot 1 (ends at
    // 5.0); slot 3's own deadline (3.0) has passed by then, so it follows
    // once slot 2 (0.1 s) is done and W/N ÷ 4 after slot 2's start.
    assert_eq!(
        starts(&fake),
        [
            (0.0, Call::Start(0)),
            (2.5, Call::Start(1)),
            (5.0, Call::Start(2)),
            (5.25, Call::Start(3))
        ]
    );
    assert_eq!(report.cap_delayed, 3);
    assert_eq!(kinds(&report), ["ok"; 4]);
}

#[test]
fn a_timeout_sends_sigterm_then_sigkill_to_the_group_after_the_grace_period() {
    // A leader that ignores SIGTERM, and one that exits on it: children
    // left in the group would keep the lock, so the SIGKILL goes out either
    // way (the host checks the group is still the task's).
    for (script, ends) in [(Script::stubborn(), 7.0), (Script::forever(), 5.0)] {
        let plan = plan(1, secs(1.0));
        let mut fake = Fake::new(HashMap::from([(0, script)]));
        let opts = Options {
            timeout: Some(secs(5.0)),
            kill_after: secs(2.0),
            ..Options::default()
        };
        let (report, _) = run(&plan, &mut fake, &opts);
        assert_eq!(
            signals(&fake),
            [
                (5.0, Call::Signal(0, SIGTERM)),
                (7.0, Call::Signal(0, SIGKILL))
            ]
        );
        assert_eq!(kinds(&report), ["timed_out"]);
        assert_eq!(report.results[0].duration, Some(secs(ends)));
    }
}

#[test]
fn kill_after_zero_kills_at_once() {
    let plan = plan(1, secs(1.0));
    let script = Script::stubborn();
    let mut fake = Fake::new(HashMap::from([(0, script)]));
    let opts = Options {
        timeout: Some(secs(3.0)),
        kill_after: Duration::ZERO,
        ..Options::default()
    };
    let (report, _) = run(&plan, &mut fake, &opts);
    assert_eq!(signals(&fake), [(3.0, Call::Signal(0, SIGKILL))]);
    assert_eq!(kinds(&report), ["timed_out"]);
}

#[test]
fn a_timer_never_reaches_a_task_other_than_its_own() {
    // Slot 0 ends long before its timeout; slot 1 runs past slot 0's
    // timeout but not its own. Nothing is signalled.
    let plan = plan(2, secs(2.0));
    let scripts = HashMap::from([(0, Script::runs(0.5)), (1, Script::runs(2.5))]);
    let mut fake = Fake::new(scripts);
    let opts = Options {
        timeout: Some(secs(3.0)),
        ..Options::default()
    };
    let (report, _) = run(&plan, &mut fake, &opts);
    assert_eq!(signals(&fake), []);
    assert_eq!(kinds(&report), ["ok", "ok"]);
}

#[test]
fn a_stop_signal_is_forwarded_then_escalated_and_the_rest_is_not_started() {
    let plan = plan(4, secs(4.0));
    let stubborn = Script::stubborn();
    let scripts = HashMap::from([(0, stubborn.clone()), (1, stubborn)]);
    let mut fake = Fake::new(scripts);
    fake.stops.push((secs(1.5), SIGTERM));
    let opts = Options {
        kill_after: secs(2.0),
        ..Options::default()
    };
    let (report, seen) = run(&plan, &mut fake, &opts);
    assert_eq!(
        starts(&fake),
        [(0.0, Call::Start(0)), (1.0, Call::Start(1))]
    );
    assert_eq!(
        signals(&fake),
        [
            (1.5, Call::Signal(0, SIGTERM)),
            (1.5, Call::Signal(1, SIGTERM)),
            (3.5, Call::Signal(0, SIGKILL)),
            (3.5, Call::Signal(1, SIGKILL)),
        ]
    );
    assert_eq!(
        kinds(&report),
        ["killed", "killed", "not_started", "not_started"]
    );
    assert_eq!(report.stopped_by, Some(SIGTERM));
    assert_eq!(seen.ended.len(), 4, "every instance accounted for");
}

#[test]
fn a_second_stop_signal_kills_at_once() {
    let plan = plan(1, secs(1.0));
    let stubborn = Script::stubborn();
    let mut fake = Fake::new(HashMap::from([(0, stubborn)]));
    fake.stops.push((secs(1.0), SIGTERM));
    fake.stops.push((secs(1.2), SIGINT));
    let opts = Options {
        kill_after: secs(10.0),
        ..Options::default()
    };
    let (report, _) = run(&plan, &mut fake, &opts);
    assert_eq!(
        signals(&fake),
        [
            (1.0, Call::Signal(0, SIGTERM)),
            (1.2, Call::Signal(0, SIGKILL))
        ]
    );
    assert_eq!(kinds(&report), ["killed"]);
    // The first signal decides the exit code.
    assert_eq!(report.stopped_by, Some(SIGTERM));
}

const SIGINT: i32 = 2;

#[test]
fn a_busy_lock_is_a_skip_and_a_failed_spawn_a_failed_start() {
    let plan = plan(3, secs(3.0));
    let scripts = HashMap::from([
        (0, Script::starting(vec![FakeStart::Busy])),
        (1, Script::starting(vec![FakeStart::Fail { again: false }])),
    ]);
    let mut fake = Fake::new(scripts);
    let (report, seen) = run(&plan, &mut fake, &Options::default());
    assert_eq!(kinds(&report), ["skipped", "failed_to_start", "ok"]);
    assert_eq!(
        starts(&fake).len(),
        3,
        "a plain failure is not retried: {:?}",
        fake.calls
    );
    assert_eq!(seen.started, [2]);
    assert!(matches!(
        report.results[1].outcome,
        Outcome::FailedToStart { code: 126, .. }
    ));
}

#[test]
fn a_start_that_hits_a_process_limit_is_retried_once() {
    let plan = plan(2, secs(2.0));
    let scripts = HashMap::from([
        (
            0,
            Script::starting(vec![FakeStart::Fail { again: true }, FakeStart::Run]),
        ),
        (1, Script::starting(vec![FakeStart::Fail { again: true }])),
    ]);
    let mut fake = Fake::new(scripts);
    let (report, _) = run(&plan, &mut fake, &Options::default());
    assert_eq!(kinds(&report), ["ok", "failed_to_start"]);
    assert_eq!(
        starts(&fake),
        [
            (0.0, Call::Start(0)),
            (0.0, Call::Start(0)),
            (1.0, Call::Start(1)),
            (1.0, Call::Start(1))
        ]
    );
}

#[test]
fn retries_are_bounded_per_run() {
    let n = 400;
    let plan = plan(n, secs(1.0));
    let never = Script::starting(vec![FakeStart::Fail { again: true }]);
    let scripts = (0..n).map(|slot| (slot, never.clone())).collect();
    let mut fake = Fake::new(scripts);
    let (report, _) = run(&plan, &mut fake, &Options::default());
    assert!(kinds(&report).iter().all(|k| *k == "failed_to_start"));
    assert_eq!(starts(&fake).len(), n + super::engine::RETRY_BUDGET);
}

#[test]
fn output_is_read_after_the_leader_exits_but_only_for_the_grace_period() {
    let plan = plan(2, secs(2.0));
    let scripts = HashMap::from([
        (
            0,
            Script {
                runs_for: Some(secs(0.5)),
                output_lingers: Some(secs(0.2)),
                ..Script::default()
            },
        ),
        (
            1,
            Script {
                runs_for: Some(secs(0.5)),
                // A background child keeps the pipe open for good.
                output_lingers: Some(secs(1000.0)),
                ..Script::default()
            },
        ),
    ]);
    let mut fake = Fake::new(scripts);
    let opts = Options {
        kill_after: secs(3.0),
        ..Options::default()
    };
    let (report, _) = run(&plan, &mut fake, &opts);
    assert_eq!(kinds(&report), ["ok", "ok"]);
    assert_eq!(
        calls_of(&fake, |c| matches!(c, Call::CloseOutput(_))),
        [(4.5, Call::CloseOutput(1))]
    );
    assert!(fake.now - fake.base < secs(5.0));
}

#[test]
fn failed_tasks_are_reported_to_the_host_as_failed() {
    let plan = plan(2, secs(2.0));
    let scripts = HashMap::from([(
        1,
        Script {
            status: ExitStatus::Code(3),
            ..Script::default()
        },
    )]);
    let mut fake = Fake::new(scripts);
    let (report, _) = run(&plan, &mut fake, &Options::default());
    assert_eq!(kinds(&report), ["ok", "failed"]);
    assert_eq!(
        calls_of(&fake, |c| matches!(c, Call::Ended(..))),
        [(0.1, Call::Ended(0, false)), (1.1, Call::Ended(1, true))]
    );
}

#[test]
fn detach_returns_after_the_last_start() {
    let plan = plan(2, secs(2.0));
    let forever = Script::forever();
    let mut fake = Fake::new(HashMap::from([(0, forever.clone()), (1, forever)]));
    let opts = Options {
        detach: true,
        ..Options::default()
    };
    let (report, _) = run(&plan, &mut fake, &opts);
    assert_eq!(kinds(&report), ["detached", "detached"]);
    assert_eq!(signals(&fake), []);
    assert_eq!(fake.now - fake.base, secs(1.0));
}

#[test]
fn durations_at_their_largest_never_overflow() {
    let plan = plan(2, crate::cli::MAX_DURATION);
    let forever = Script::stubborn();
    let mut fake = Fake::new(HashMap::from([(0, forever)]));
    fake.stops.push((secs(1.0), SIGTERM));
    let opts = Options {
        timeout: Some(Duration::MAX),
        kill_after: Duration::MAX,
        ..Options::default()
    };
    let (report, _) = run(&plan, &mut fake, &{
        let mut o = opts.clone();
        o.kill_after = crate::cli::MAX_DURATION;
        o
    });
    assert_eq!(report.stopped_by, Some(SIGTERM));
    // And with no limit on the arithmetic at all, nothing panics either.
    let mut fake = Fake::new(HashMap::new());
    let (report, _) = run(&plan, &mut fake, &opts);
    assert_eq!(kinds(&report)[0], "ok");
}

#[test]
fn a_host_that_holds_starts_delays_them_and_the_schedule_goes_on() {
    let plan = plan(4, secs(4.0));
    let mut fake = Fake::new(HashMap::new());
    fake.hold_until = Some(secs(2.5));
    let (report, _) = run(&plan, &mut fake, &Options::default());
    // Slots 0-2 were due before 2.5 s and go out when the hold ends, not
    // at once but W/N ÷ 4 apart; slot 3, due at 3.0, follows them.
    assert_eq!(
        starts(&fake),
        [
            (2.5, Call::Start(0)),
            (2.75, Call::Start(1)),
            (3.0, Call::Start(2)),
            (3.25, Call::Start(3))
        ]
    );
    assert_eq!(kinds(&report), ["ok"; 4]);
    assert_eq!(report.max_lateness().map(|(slot, _)| slot), Some(0));
}

#[test]
fn what_a_task_cost_reaches_its_result() {
    let plan = plan(2, secs(2.0));
    let usage = crate::platform::Usage {
        user: secs(1.25),
        system: secs(0.5),
        max_rss_kib: 65536,
    };
    let scripts = HashMap::from([(
        1,
        Script {
            usage: Some(usage),
            ..Script::default()
        },
    )]);
    let mut fake = Fake::new(scripts);
    let (report, _) = run(&plan, &mut fake, &Options::default());
    assert_eq!(report.results[0].usage, None);
    assert_eq!(report.results[1].usage, Some(usage));
}

#[test]
fn a_request_ends_with_its_own_outcome_and_a_timeout_ends_it_at_once() {
    // --url: kill_after is zero, so a timed-out request is aborted at its
    // timeout and the run does not wait out a grace period.
    let plan = plan(3, secs(3.0));
    let request = |outcome: Outcome, runs_for: Option<f64>| Script {
        runs_for: runs_for.map(secs),
        request: Some(outcome),
        ..Script::default()
    };
    let mut fake = Fake::new(HashMap::from([
        (0, request(Outcome::Ok, Some(0.1))),
        (1, request(Outcome::HttpStatus(503), Some(0.1))),
        (2, request(Outcome::Ok, None)),
    ]));
    let opts = Options {
        timeout: Some(secs(2.0)),
        kill_after: Duration::ZERO,
        max_concurrent: NonZeroUsize::new(64),
        ..Options::default()
    };
    let (report, seen) = run(&plan, &mut fake, &opts);
    assert_eq!(kinds(&report), ["ok", "failed", "timed_out"]);
    assert_eq!(report.results[1].outcome, Outcome::HttpStatus(503));
    assert_eq!(signals(&fake), [(4.0, Call::Signal(2, SIGKILL))]);
    assert_eq!(fake.now - fake.base, secs(4.0), "no grace period after it");
    assert_eq!(seen.ended.len(), 3);
    let ended = calls_of(&fake, |c| matches!(c, Call::Ended(..)));
    assert_eq!(
        ended,
        [
            (0.1, Call::Ended(0, false)),
            (1.1, Call::Ended(1, true)),
            (4.0, Call::Ended(2, true))
        ]
    );
}

#[test]
fn a_stop_signal_aborts_requests_in_flight() {
    let plan = plan(2, secs(2.0));
    let script = Script {
        runs_for: None,
        request: Some(Outcome::Ok),
        ..Script::default()
    };
    let mut fake = Fake::new(HashMap::from([(0, script)]));
    fake.stops = vec![(secs(0.5), SIGTERM)];
    let opts = Options {
        kill_after: Duration::ZERO,
        ..Options::default()
    };
    let (report, _) = run(&plan, &mut fake, &opts);
    assert_eq!(kinds(&report), ["killed", "not_started"]);
    assert_eq!(report.stopped_by, Some(SIGTERM));
    assert_eq!(fake.now - fake.base, secs(0.5));
}

#[test]
fn held_slots_get_their_outcome_at_their_slot_without_a_start_or_the_cap() {
    let mut plan = plan(4, secs(4.0));
    plan.hold(1, Outcome::Paused("paused by root".into()));
    let long = Script {
        runs_for: Some(secs(2.5)),
        ..Script::default()
    };
    let mut fake = Fake::new(HashMap::from([(0, long)]));
    let opts = Options {
        max_concurrent: NonZeroUsize::new(1),
        ..Options::default()
    };
    let (report, seen) = run(&plan, &mut fake, &opts);
    // Slot 1 is passed over at its deadline (1.0) although the cap is
    // full; slot 2 waits for slot 0, and slot 3 keeps its own deadline.
    assert_eq!(
        starts(&fake),
        [
            (0.0, Call::Start(0)),
            (2.5, Call::Start(2)),
            (3.0, Call::Start(3))
        ]
    );
    assert_eq!(kinds(&report), ["ok", "paused", "ok", "ok"]);
    assert_eq!(seen.started, [0, 2, 3]);
    assert_eq!(seen.ended[0], (1, "paused".to_string()));
    assert_eq!(report.cap_delayed, 1);
    assert!(!report.results[1].outcome.is_failure());
    assert_eq!(report.results[1].started, None);
}

#[test]
fn a_held_slot_not_reached_before_a_stop_is_not_started() {
    let mut plan = plan(3, secs(3.0));
    plan.hold(0, Outcome::BackedOff(None));
    plan.hold(2, Outcome::BackedOff(None));
    let mut fake = Fake::new(HashMap::new());
    fake.stops = vec![(secs(1.5), SIGTERM)];
    let (report, _) = run(&plan, &mut fake, &Options::default());
    assert_eq!(kinds(&report), ["backed_off", "ok", "not_started"]);
    assert_eq!(starts(&fake), [(1.0, Call::Start(1))]);
}
