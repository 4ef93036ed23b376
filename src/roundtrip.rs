//! Every outcome, through every place that names it: the end-of-run report
//! (text and JSON), the instance records, `scatter status` and the metrics.
//! A new outcome that one of them forgets fails here.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::metrics;
use crate::outcome::{Kind, Outcome, Skip, TaskResult};
use crate::plan::Plan;
use crate::platform::Usage;
use crate::report::{Held, Report};
use crate::state::{self, Event, InstanceRecord, StateDir, Trigger};
use crate::status;

const USAGE: Usage = Usage {
    user: Duration::from_millis(1500),
    system: Duration::from_millis(250),
    max_rss_kib: 4096,
};

/// Whether the engine reaped the task of this outcome, and so knows what it
/// cost (a request is no process: it has no such figures).
fn reaped(outcome: &Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Ok | Outcome::Failed(_) | Outcome::Killed(_) | Outcome::TimedOut
    )
}

/// Outcomes whose kind another one already shows (a request's failures
/// are `failed`), checked through every place all the same.
fn more_outcomes() -> Vec<Outcome> {
    vec![
        Outcome::HttpStatus(503),
        Outcome::RequestFailed("connection refused".into()),
    ]
}

fn every_outcome() -> Vec<Outcome> {
    let all = vec![
        Outcome::Ok,
        Outcome::Failed(3),
        Outcome::Killed(9),
        Outcome::TimedOut,
        Outcome::FailedToStart {
            reason: "cannot open lock file".into(),
            code: 1,
        },
        Outcome::Skipped(Skip::Locked("pid 7".into())),
        Outcome::NotStarted,
        Outcome::Detached,
        Outcome::Paused("paused by root since 2027-01-15T08:00:00Z: moving".into()),
        Outcome::BackedOff(Some(next_attempt())),
        Outcome::Deferred,
    ];
    // The list covers every kind, in summary order.
    assert_eq!(all.iter().map(Outcome::kind).collect::<Vec<_>>(), Kind::ALL);
    all
}

/// When the backed-off instance is next attempted.
fn next_attempt() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_600)
}

#[test]
fn every_outcome_reads_the_same_everywhere() {
    check_everywhere(every_outcome(), |o| o.kind().name().to_string());
}

#[test]
fn request_outcomes_read_the_same_everywhere() {
    let named = |o: &Outcome| match o {
        Outcome::HttpStatus(_) => "http_status".to_string(),
        _ => "request_failed".to_string(),
    };
    check_everywhere(more_outcomes(), named);
}

fn check_everywhere(outcomes: Vec<Outcome>, name_of: impl Fn(&Outcome) -> String) {
    let ids: Vec<OsString> = outcomes.iter().map(|o| name_of(o).into()).collect();
    let plan = Plan::for_tests(PathBuf::from("/srv/i"), ids, Duration::from_secs(8));
    let now = SystemTime::now();
    let results: Vec<TaskResult> = outcomes
        .iter()
        .map(|o| TaskResult {
            outcome: o.clone(),
            started: Some(now),
            duration: Some(Duration::from_secs(2)),
            lateness: Some(Duration::ZERO),
            usage: reaped(o).then_some(USAGE),
        })
        .collect();
    let report = Report {
        results,
        stopped_by: None,
        timeout: Some(Duration::from_secs(5)),
        detached: false,
        cap_delayed: 0,
        pressure: Held {
            delayed: 3,
            longest: Some(Duration::from_millis(2500)),
        },
        ..Report::default()
    };

    // The JSON report.
    let mut json = Vec::new();
    report.write_json(&plan, &mut json).unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let count = |kind: &str| outcomes.iter().filter(|o| o.kind().name() == kind).count();
    assert_eq!(doc["delayed_by_pressure"], 3);
    assert_eq!(doc["max_pressure_delay_secs"], 2.5);
    assert_eq!(doc["deferred"], count("deferred"));
    for (i, outcome) in outcomes.iter().enumerate() {
        let inst = &doc["instances"][i];
        let kind = outcome.kind().name();
        assert_eq!(inst["outcome"], kind);
        assert_eq!(doc["counts"][kind], count(kind));
        let cost = reaped(outcome);
        assert_eq!(inst["cpu_user_secs"].as_f64(), cost.then_some(1.5));
        assert_eq!(inst["cpu_sys_secs"].as_f64(), cost.then_some(0.25));
        assert_eq!(inst["max_rss_kib"].as_u64(), cost.then_some(4096));
        assert_eq!(
            inst["http_status"].as_u64(),
            outcome.http_status().map(u64::from)
        );
        assert_eq!(
            inst["exit_code"].as_i64(),
            outcome.exit_code().map(i64::from)
        );
        assert_eq!(inst["signal"].as_i64(), outcome.signal().map(i64::from));
        assert_eq!(inst["reason"].as_str(), outcome.reason().as_deref());
        if let Outcome::BackedOff(_) = outcome {
            assert_eq!(inst["next_attempt"], 1_800_000_600.0);
            assert!(
                inst["reason"]
                    .as_str()
                    .unwrap()
                    .contains("2027-01-15T08:10:00Z")
            );
        } else {
            assert!(inst.get("next_attempt").is_none());
        }
    }
    assert_eq!(doc["widespread"], false);
    assert!(doc["changes"].as_array().unwrap().is_empty());

    // The text report: a line for each outcome worth one.
    let mut text = Vec::new();
    report.write_text(&plan, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    for (result, outcome) in report.results.iter().zip(&outcomes) {
        if let Some(line) = result.report_line(report.timeout) {
            assert!(text.contains(&line), "{line} in {text}");
        } else {
            assert!(matches!(
                outcome,
                Outcome::Ok | Outcome::NotStarted | Outcome::Detached | Outcome::Paused(_)
            ));
        }
    }

    // The instance records, written and read back.
    let mut records = std::collections::BTreeMap::new();
    for (entry, result) in plan.entries.iter().zip(&report.results) {
        let mut record = InstanceRecord::default();
        state::apply(
            &mut record,
            &Event {
                id: entry.id.clone(),
                trigger: Trigger::Cron,
                at: now,
                result: result.clone(),
            },
        );
        records.insert(entry.id.to_string_lossy().into_owned(), record);
    }
    let file = serde_json::json!({"format": "scatter-instances/1", "instances": records});
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("instances.json"),
        serde_json::to_vec(&file).unwrap(),
    )
    .unwrap();
    let dir = StateDir::existing(tmp.path()).unwrap();
    let read = dir.instances().unwrap();
    for outcome in &outcomes {
        let record = &read[&name_of(outcome)];
        match outcome {
            // Skips and deferrals are kept apart from the last outcome;
            // not-started leaves the record alone.
            Outcome::Skipped(_) | Outcome::Deferred => {
                assert_eq!(record.outcome, None);
                assert_eq!(record.last_skip_reason, outcome.reason());
            }
            Outcome::NotStarted => assert_eq!(record.outcome, None),
            // Holds are kept apart too: the last attempt's outcome stays
            // (so a backed-off instance still counts as failing).
            Outcome::Paused(_) => assert_eq!(record.outcome, None),
            Outcome::BackedOff(_) => {
                assert_eq!(record.outcome, None);
                assert_eq!(record.next_attempt, Some(1_800_000_600.0));
            }
            _ => {
                assert_eq!(record.outcome, Some(outcome.kind()));
                let back = record.last_outcome().unwrap();
                assert_eq!(back.describe(None, None), outcome.describe(None, None));
                assert_eq!(record.http_status, outcome.http_status());
                assert_eq!(record.failing(), outcome.is_failure());
                let reaped = reaped(outcome);
                assert_eq!(record.last_cpu_secs(), reaped.then_some(1.75));
                assert_eq!(record.last_max_rss_kib, reaped.then_some(4096));
                assert_eq!(record.avg_max_rss_kib, reaped.then_some(4096.0));
            }
        }
    }

    // scatter status, both forms.
    let status = status::gather(&dir, "job".as_ref(), Some(tmp.path()), now).unwrap();
    let mut text = Vec::new();
    status::write_text(&status, false, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    let json = serde_json::to_value(&status).unwrap();
    for outcome in &outcomes {
        let name = name_of(outcome);
        let kind = outcome.kind().name();
        let view = json["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == name.as_str())
            .unwrap();
        match outcome {
            Outcome::Skipped(_)
            | Outcome::NotStarted
            | Outcome::Paused(_)
            | Outcome::BackedOff(_)
            | Outcome::Deferred => {
                assert!(view["outcome"].is_null())
            }
            _ => {
                assert_eq!(view["outcome"], kind);
                assert_eq!(
                    view["http_status"].as_u64(),
                    outcome.http_status().map(u64::from)
                );
                assert!(
                    text.contains(&outcome.describe(None, None)),
                    "{name} in {text}"
                );
            }
        }
    }
    let failing = outcomes.iter().filter(|o| o.is_failure()).count();
    assert_eq!(status.failing, failing);
    // The cost view: every task that was reaped shows its figures.
    let mut costly = status::gather(&dir, "job".as_ref(), Some(tmp.path()), now).unwrap();
    status::cost::rank(&mut costly, Some(crate::cli::SortKey::Cpu), None);
    let mut text = Vec::new();
    status::write_text(&costly, false, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    for outcome in &outcomes {
        let name = name_of(outcome);
        let figures = "cpu 1.8s (user 1.5s, sys 250ms)  rss 4 MiB";
        let shown = text
            .lines()
            .any(|l| l.split_whitespace().next() == Some(name.as_str()) && l.contains(figures));
        assert_eq!(shown, reaped(outcome), "{name}: {figures} in {text}");
    }

    // The metrics.
    let snapshot = metrics::Snapshot {
        name: "job",
        report: &report,
        duration: Duration::from_secs(8),
        ended: 1.0,
        instances: &read,
    };
    let prom = metrics::render(&snapshot);
    for outcome in &outcomes {
        let name = name_of(outcome);
        let kind = outcome.kind().name();
        assert!(
            prom.contains(&format!(
                "scatter_run_outcomes{{scatter_name=\"job\",outcome=\"{kind}\"}} {}\n",
                count(kind)
            )),
            "{kind} in {prom}"
        );
        if let Some(status) = outcome.http_status() {
            assert!(
                prom.contains(&format!(
                    "scatter_instance_last_http_status{{scatter_name=\"job\",instance_id=\"{name}\"}} {status}\n"
                )),
                "{name} status {status} in {prom}"
            );
        }
        if let Outcome::BackedOff(_) = outcome {
            assert!(
                prom.contains(&format!(
                    "scatter_instance_next_attempt_timestamp_seconds{{scatter_name=\"job\",instance_id=\"{name}\"}} 1800000600\n"
                )),
                "{name} next attempt in {prom}"
            );
        }
        let reaped = reaped(outcome);
        let cpu = format!(
            "scatter_instance_last_cpu_seconds{{scatter_name=\"job\",instance_id=\"{name}\",mode=\"user\"}} 1.5\n"
        );
        assert_eq!(prom.contains(&cpu), reaped, "{cpu} in {prom}");
        let rss = format!(
            "scatter_instance_last_max_rss_bytes{{scatter_name=\"job\",instance_id=\"{name}\"}} 4194304\n"
        );
        assert_eq!(prom.contains(&rss), reaped, "{rss} in {prom}");
        if let Some(code) = read[&name].last_outcome().and_then(|o| o.shell_status()) {
            assert!(
                prom.contains(&format!(
                    "scatter_instance_last_exit_code{{scatter_name=\"job\",instance_id=\"{name}\"}} {code}\n"
                )),
                "{name} exit {code} in {prom}"
            );
        }
    }
}

#[test]
fn a_record_with_an_outcome_from_a_newer_release_costs_only_that_record() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("instances.json"),
        r#"{"format":"scatter-instances/1","instances":{
            "a":{"id":"a","outcome":"quarantined","consecutive_failures":4},
            "b":{"id":"b","outcome":"failed","exit_code":2,"consecutive_failures":1}}}"#,
    )
    .unwrap();
    let dir = StateDir::existing(tmp.path()).unwrap();
    let records = dir.instances().unwrap();
    assert_eq!(records["a"].outcome, Some(Kind::Unknown));
    assert_eq!(records["a"].last_outcome(), None);
    assert_eq!(records["b"].last_outcome(), Some(Outcome::Failed(2)));
    let status = status::gather(&dir, "job".as_ref(), Some(tmp.path()), SystemTime::now()).unwrap();
    let mut text = Vec::new();
    status::write_text(&status, false, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("does not know"), "{text}");
    assert!(text.contains("exited with status 2"), "{text}");
}
