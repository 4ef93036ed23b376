//! The gate's decisions on the fake clock: no burst after a stall, under
//! the cap or after pressure falls; no added delay on a saturated machine;
//! `--max-defer` with both actions; `--only` never paced.

use std::collections::HashMap;
use std::ffi::OsString;
use std::num::NonZeroUsize;
use std::path::PathBuf;

use super::fake::*;
use super::tests::{kinds, plan, run, starts};
use super::{DeferAction, Options};
use crate::plan::{Order, Plan, Spec};
use crate::template::Template;

/// Start offsets in seconds, exactly.
fn start_times(fake: &Fake) -> Vec<f64> {
    fake.calls
        .iter()
        .filter(|(_, c)| matches!(c, Call::Start(_)))
        .map(|(at, _)| at.as_secs_f64())
        .collect()
}

/// The most starts in any closed window of `width` seconds.
fn densest(times: &[f64], width: f64) -> usize {
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| **t - times[i] <= width + 1e-9)
                .count()
        })
        .max()
        .unwrap_or(0)
}

fn catch_up(factor: f64) -> Options {
    Options {
        catch_up: factor,
        ..Options::default()
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

#[test]
fn after_a_stall_the_overdue_starts_go_out_at_the_catch_up_rate() {
    // The README's example: 200 instances over 10 s (W/N = 50 ms), scatter
    // stopped for 5 s. At the resume 100 starts are overdue; at 4 times the
    // planned rate they go out 12.5 ms apart, over about 1.25 s, and the
    // schedule is caught up about 1.7 s after the resume.
    let plan = plan(200, secs(10.0));
    let mut fake = Fake::new(HashMap::new());
    fake.stall = Some((secs(2.01), secs(7.01)));
    let (report, _) = run(&plan, &mut fake, &catch_up(4.0));
    assert_eq!(kinds(&report), ["ok"; 200]);
    let t = start_times(&fake);
    // Slots 0-40 before the stall; 41-140 overdue at 7.01.
    assert!(close(t[40], 2.0));
    for j in 0..=132 {
        assert!(
            close(t[41 + j], 7.01 + 0.0125 * j as f64),
            "slot {}",
            41 + j
        );
    }
    assert!(close(t[140] - 7.01, 1.2375), "the 100th overdue start");
    // From slot 174 (due 8.70, 1.69 s after the resume) on, on schedule.
    for (slot, at) in t.iter().enumerate().skip(174) {
        assert!(close(*at, 0.05 * slot as f64), "slot {slot} at {at}");
    }
    // The bound the end-to-end tests check: FACTOR × 100 ms ÷ W/N + 2.
    assert_eq!(densest(&t, 0.1), 9);

    // Without the rule (a factor no burst reaches), the same stall sends
    // every overdue start at once: the check above can fail.
    let mut fake = Fake::new(HashMap::new());
    fake.stall = Some((secs(2.01), secs(7.01)));
    run(&plan, &mut fake, &catch_up(1e6));
    assert!(densest(&start_times(&fake), 0.1) > 100);
}

#[test]
fn a_machine_too_slow_for_the_plan_gets_no_added_delay() {
    // Each start takes 1.5 × W/N: every start is late, by more each time,
    // and the pacing never adds to it.
    let plan = plan(20, secs(2.0));
    let mut slow = Fake::new(HashMap::new());
    slow.start_cost = secs(0.15);
    run(&plan, &mut slow, &catch_up(4.0));
    let mut unpaced = Fake::new(HashMap::new());
    unpaced.start_cost = secs(0.15);
    run(&plan, &mut unpaced, &catch_up(1e6));
    let (paced, free) = (start_times(&slow), start_times(&unpaced));
    assert_eq!(paced.len(), 20);
    for (slot, (a, b)) in paced.iter().zip(&free).enumerate() {
        assert!(close(*a, *b), "slot {slot}: {a} paced, {b} without");
        assert!(close(*a, 0.15 * slot as f64), "slot {slot}: {a}");
    }
}

#[test]
fn when_the_cap_lets_go_the_backlog_is_paced() {
    // 20 instances over 2 s (W/N = 100 ms), one at a time; the first runs
    // 2 s and holds the cap, the others take 10 ms.
    let plan = plan(20, secs(2.0));
    let long = Script {
        runs_for: Some(secs(2.0)),
        ..Script::default()
    };
    let short = Script {
        runs_for: Some(secs(0.01)),
        ..Script::default()
    };
    let scripts: HashMap<usize, Script> = (0..20)
        .map(|slot| {
            (
                slot,
                if slot == 0 {
                    long.clone()
                } else {
                    short.clone()
                },
            )
        })
        .collect();
    let opts = |factor| Options {
        max_concurrent: NonZeroUsize::new(1),
        catch_up: factor,
        ..Options::default()
    };
    let mut fake = Fake::new(scripts.clone());
    let (report, _) = run(&plan, &mut fake, &opts(4.0));
    assert_eq!(kinds(&report), ["ok"; 20]);
    let t = start_times(&fake);
    // At 2.0 the 19 others are overdue: 25 ms apart, not 10 ms.
    for (j, at) in t.iter().enumerate().skip(1) {
        assert!(close(*at, 2.0 + 0.025 * (j - 1) as f64), "slot {j} at {at}");
    }
    assert_eq!(report.cap_delayed, 19);
    // Without the rule they follow each other as fast as the cap frees.
    let mut fake = Fake::new(scripts);
    run(&plan, &mut fake, &opts(1e6));
    let t = start_times(&fake);
    assert!(close(t[19], 2.0 + 0.01 * 18.0), "{t:?}");
}

#[test]
fn after_pressure_falls_the_backlog_is_paced_and_counted() {
    // 8 instances over 4 s (W/N = 500 ms); the host holds starts until 3 s.
    let plan = plan(8, secs(4.0));
    let mut fake = Fake::new(HashMap::new());
    fake.hold_until = Some(secs(3.0));
    let (report, seen) = run(&plan, &mut fake, &Options::default());
    assert_eq!(kinds(&report), ["ok"; 8]);
    let t = start_times(&fake);
    for (slot, at) in t.iter().enumerate() {
        assert!(close(*at, 3.0 + 0.125 * slot as f64), "slot {slot} at {at}");
    }
    // Slots 0-5 were due during the hold; slot 6, due as it lifted, waited
    // only for the pacing.
    assert_eq!(report.pressure.delayed, 6);
    assert_eq!(report.pressure.longest, Some(secs(3.0)));
    assert_eq!(seen.held, [true, false]);
}

#[test]
fn pressure_that_comes_back_holds_the_catch_up_again() {
    let plan = plan(8, secs(4.0));
    let mut fake = Fake::new(HashMap::new());
    fake.holds = vec![(secs(0.0), secs(2.0)), (secs(2.2), secs(3.0))];
    let (report, seen) = run(&plan, &mut fake, &Options::default());
    let t = start_times(&fake);
    // 2.0 and 2.125 go out; 2.25 is inside the second hold, so the rest
    // waits for 3.0 and is paced again.
    assert!(close(t[0], 2.0) && close(t[1], 2.125), "{t:?}");
    assert!(close(t[2], 3.0) && close(t[3], 3.125), "{t:?}");
    assert_eq!(seen.held, [true, false, true, false]);
    assert_eq!(report.pressure.delayed, 6);
}

#[test]
fn a_start_held_past_max_defer_is_deferred_and_not_a_failure() {
    let plan = plan(4, secs(4.0));
    let mut fake = Fake::new(HashMap::new());
    fake.hold_until = Some(secs(100.0));
    let opts = Options {
        max_defer: Some(secs(2.5)),
        ..Options::default()
    };
    let (report, seen) = run(&plan, &mut fake, &opts);
    assert_eq!(kinds(&report), ["deferred"; 4]);
    assert!(starts(&fake).is_empty());
    // Each went when it reached 2.5 s past its slot; the last at 5.5 s.
    assert_eq!(fake.now - fake.base, secs(5.5));
    assert_eq!(report.exit_code(&plan), crate::exit::OK);
    assert_eq!(seen.ended.len(), 4);
    assert_eq!(report.pressure.delayed, 0);
    // Nothing is left waiting once the last slot is shed.
    assert_eq!(seen.held, [true, false]);
}

#[test]
fn only_the_starts_past_max_defer_are_shed() {
    // The hold lifts at 3.0 s: slot 0 (due 0, deferred at 2.5) is shed,
    // slot 1 (due 1, deferred at 3.5) still starts.
    let plan = plan(4, secs(4.0));
    let mut fake = Fake::new(HashMap::new());
    fake.hold_until = Some(secs(3.0));
    let opts = Options {
        max_defer: Some(secs(2.5)),
        ..Options::default()
    };
    let (report, _) = run(&plan, &mut fake, &opts);
    assert_eq!(kinds(&report), ["deferred", "ok", "ok", "ok"]);
    assert_eq!(
        start_times(&fake),
        [3.0, 3.25, 3.5],
        "paced at W/N ÷ 4 once the hold lifts"
    );
}

#[test]
fn max_defer_action_start_starts_anyway_and_keeps_the_spacing() {
    // 8 instances over 2 s (W/N = 250 ms), pressure for good, scatter
    // stopped from 0.1 s to 3 s: at the resume every start is past its
    // --max-defer of 0.5 s, and they are forced out 62.5 ms apart.
    let plan = plan(8, secs(2.0));
    let mut fake = Fake::new(HashMap::new());
    fake.hold_until = Some(secs(100.0));
    fake.stall = Some((secs(0.1), secs(3.0)));
    let opts = Options {
        max_defer: Some(secs(0.5)),
        defer_action: DeferAction::Start,
        ..Options::default()
    };
    let (report, _) = run(&plan, &mut fake, &opts);
    assert_eq!(kinds(&report), ["ok"; 8]);
    let t = start_times(&fake);
    for (slot, at) in t.iter().enumerate() {
        assert!(
            close(*at, 3.0 + 0.0625 * slot as f64),
            "slot {slot} at {at}"
        );
    }
    assert_eq!(report.pressure.delayed, 8);
    assert_eq!(report.pressure.longest, Some(secs(3.0)));
}

#[test]
fn only_plans_start_everything_at_once_after_a_stall() {
    let ids: Vec<OsString> = (0..30).map(|i| format!("t{i:02}").into()).collect();
    let spec = Spec {
        instances: PathBuf::from("/srv/instances"),
        name: "test".into(),
        lock_dir: PathBuf::from("/srv/instances/.locks"),
        window: secs(10.0),
        order: Order::Name,
        only: ids.clone(),
        shard: None,
        template: Template::parse(&["true".into()]).unwrap(),
        program: None,
        filter: crate::filter::Filter::default(),
        request: None,
    };
    let plan = Plan::build(&spec, ids).unwrap();
    assert!(plan.manual);
    let mut fake = Fake::new(HashMap::new());
    let (report, _) = run(&plan, &mut fake, &Options::default());
    assert_eq!(kinds(&report), ["ok"; 30]);
    assert!(start_times(&fake).iter().all(|t| *t == 0.0));
}
