//! Records other writers control: the state files and the lock files'
//! holder records. Whatever they hold (extreme numbers, fields of the wrong
//! type, arbitrary bytes), reading them never panics, and `scatter status`
//! renders every one, as text and as JSON; the health decisions (holding
//! instances back, settling a run's changes, the hook's environment) take
//! them as they are.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Value, json};

use std::num::NonZeroUsize;

use scatter::cli::SortKey;
use scatter::health::{self, Backoff, Closing};
use scatter::lock::Holder;
use scatter::metrics;
use scatter::outcome::Kind;
use scatter::plan::Plan;
use scatter::report::Report;
use scatter::state::StateDir;
use scatter::status;

/// Values that break naive readers: the extremes of every numeric type,
/// negatives, NaN and infinities as strings, and values of the wrong shape.
fn nasty() -> impl Strategy<Value = Value> {
    prop_oneof![
        select(vec![
            json!(1e308),
            json!(-1e308),
            json!(-1e300),
            json!(1e300),
            json!(u64::MAX),
            json!(u32::MAX),
            json!(i64::MIN),
            json!(-1),
            json!(0),
            json!(0.5),
            json!("NaN"),
            json!("inf"),
            json!("-Infinity"),
            json!(null),
            json!(true),
            json!([1, 2]),
            json!({"a": 1}),
            json!("ok"),
            json!("timed_out"),
            json!("running"),
            json!(""),
            json!("nul\u{0}byte"),
            json!("a/b"),
        ]),
        any::<f64>().prop_map(|x| json!(x)),
        any::<i64>().prop_map(|x| json!(x)),
        "[ -~]{0,12}".prop_map(|s| json!(s)),
    ]
}

const INSTANCE_FIELDS: &[&str] = &[
    "id",
    "id_hex",
    "outcome",
    "exit_code",
    "signal",
    "reason",
    "last_start",
    "last_end",
    "last_duration_secs",
    "last_success",
    "consecutive_failures",
    "last_skip_reason",
    "last_skip_at",
    "trigger",
    "updated",
    "last_cpu_user_secs",
    "last_cpu_sys_secs",
    "last_max_rss_kib",
    "avg_cpu_user_secs",
    "avg_cpu_sys_secs",
    "avg_max_rss_kib",
    "backoff_level",
    "next_attempt",
    "failing_since",
    "paused_since",
    "alert",
];

const ALERT_FIELDS: &[&str] = &["since", "last", "failures"];

const PAUSE_FIELDS: &[&str] = &[
    "id",
    "id_hex",
    "by",
    "sudo_user",
    "since",
    "until",
    "reason",
];

const NOTICE_FIELDS: &[&str] = &[
    "seq", "event", "id", "id_hex", "failures", "reason", "since", "at",
];

const JOB_FIELDS: &[&str] = &["widespread", "notify", "next_seq"];

const WIDESPREAD_FIELDS: &[&str] = &["since", "last", "failed", "attempted"];

const RUN_FIELDS: &[&str] = &[
    "format",
    "run_id",
    "name",
    "pid",
    "pid_starttime",
    "trigger",
    "instances_dir",
    "lock_dir",
    "started",
    "spread_end",
    "window_secs",
    "shard",
    "count",
    "started_count",
    "running",
    "finished_count",
    "counts",
    "state",
    "stopped_by",
    "ended",
    "exit_code",
    "max_lateness_secs",
    "held_since",
    "delayed_by_pressure",
    "widespread",
];

fn record(fields: &'static [&'static str]) -> impl Strategy<Value = Value> {
    proptest::collection::vec(nasty(), fields.len()).prop_map(move |values| {
        Value::Object(
            fields
                .iter()
                .zip(values)
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    })
}

/// A record whose fields are nasty, or, for the fields that hold objects
/// of their own, such objects with nasty fields.
fn nested(fields: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let alert = prop_oneof![nasty(), record(ALERT_FIELDS)];
    let widespread = prop_oneof![nasty(), record(WIDESPREAD_FIELDS)];
    (record(fields), alert, widespread).prop_map(|(mut r, alert, widespread)| {
        if let Value::Object(map) = &mut r {
            if map.contains_key("alert") {
                map.insert("alert".into(), alert);
            }
            if map.contains_key("widespread") && map.contains_key("next_seq") {
                map.insert("widespread".into(), widespread);
            }
        }
        r
    })
}

/// Writes the files, then renders the status both ways and runs the health
/// decisions over them.
fn render_all(instances: &[u8], run: &[u8], pauses: &[u8], notified: &[u8]) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("runs")).unwrap();
    std::fs::write(tmp.path().join("instances.json"), instances).unwrap();
    std::fs::write(tmp.path().join("runs/20261129T000000.000Z-1.json"), run).unwrap();
    std::fs::write(tmp.path().join("pauses.json"), pauses).unwrap();
    std::fs::write(tmp.path().join("notified.json"), notified).unwrap();
    let dir = StateDir::existing(tmp.path()).unwrap();
    let locks = tmp.path().join("locks");
    let now = SystemTime::now();
    // A file that is not valid JSON is an error to report, not a panic.
    if let Ok(s) = status::gather(&dir, OsStr::new("job"), Some(&locks), now) {
        let mut text = Vec::new();
        status::write_text(&s, true, &mut text).unwrap();
        serde_json::to_vec(&s).unwrap();
    }
    // Every cost view, and the metrics, of the same records.
    for key in [
        None,
        Some(SortKey::Cpu),
        Some(SortKey::Rss),
        Some(SortKey::Duration),
    ] {
        if let Ok(mut s) = status::gather(&dir, OsStr::new("job"), Some(&locks), now) {
            status::cost::rank(&mut s, key, NonZeroUsize::new(2));
            let mut text = Vec::new();
            status::write_text(&s, false, &mut text).unwrap();
            serde_json::to_vec(&s).unwrap();
        }
    }
    if let Ok(records) = dir.instances() {
        let report = Report::default();
        let prom = metrics::render(&metrics::Snapshot {
            name: "job",
            report: &report,
            duration: Duration::ZERO,
            ended: 0.0,
            instances: &records,
        });
        // Every value a sample can take is a number Prometheus reads.
        for line in prom.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok_and(f64::is_finite), "{line}");
        }
    }
    let Ok(mut ledger) = dir.ledger() else {
        return;
    };
    // Holding back: every recorded instance, paused or backing off.
    let ids: Vec<std::ffi::OsString> = ledger.instances.keys().map(Into::into).collect();
    let plan_spec = scatter::plan::Spec {
        instances: tmp.path().to_path_buf(),
        name: "job".into(),
        lock_dir: locks.clone(),
        window: Duration::from_secs(60),
        order: scatter::plan::Order::Name,
        only: Vec::new(),
        shard: None,
        template: scatter::template::Template::parse(&["true".into()]).unwrap(),
        program: None,
        filter: scatter::filter::Filter::default(),
        request: None,
    };
    let mut plan = Plan::build(&plan_spec, ids.clone()).unwrap();
    let spec = health::Spec {
        backoff: Some(Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(31_557_600),
        }),
        failures_before_report: 1,
        remind: Some(Duration::from_secs(1)),
        ..health::Spec::default()
    };
    let dir = StateDir::open(tmp.path()).unwrap();
    let closing = health::prepare(&mut plan, dir.as_ref(), &spec, now);
    for (i, id) in ids.iter().enumerate() {
        if let Some(held) = plan.held(i) {
            let _ = held.describe(None, None);
            assert!(!held.is_failure(), "{id:?}");
        }
    }
    // Settling a run over them: every outcome, then the changes' lines and
    // the hook's environment.
    let kinds = [
        Kind::Ok,
        Kind::Failed,
        Kind::BackedOff,
        Kind::Paused,
        Kind::Skipped,
    ];
    let results: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), kinds[i % kinds.len()]))
        .collect();
    for manual in [false, true] {
        let closing = Closing {
            manual,
            notify: true,
            ..closing.clone()
        };
        for at in [0.0, 1.8e9, 1e11] {
            let changes = health::settle(&mut ledger, &closing, &results, at);
            for change in changes.iter().chain(&ledger.pending) {
                let _ = health::line(change, at);
                let _ = scatter::hook::describe(change);
                // Whatever the queue holds, the hook can be started with it.
                let env = scatter::hook::environment(change, OsStr::new("job"), tmp.path());
                for (key, value) in env.iter().filter_map(|(k, v)| Some((k, v.as_ref()?))) {
                    assert!(!value.as_bytes().contains(&0), "{key}={value:?}");
                }
            }
        }
    }
    serde_json::to_vec(&ledger).unwrap();
}

fn render(instances: &[u8], run: &[u8]) {
    render_all(instances, run, b"{}", b"{}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn status_renders_any_record(
        instances in proptest::collection::btree_map("[a-z%0-9]{1,6}", nested(INSTANCE_FIELDS), 0..4),
        run in record(RUN_FIELDS),
    ) {
        let file = json!({"format": "scatter-instances/1", "instances": instances});
        render(&serde_json::to_vec(&file).unwrap(), &serde_json::to_vec(&run).unwrap());
    }

    #[test]
    fn health_survives_any_pause_queue_and_job_record(
        instances in proptest::collection::btree_map("[a-z%0-9]{1,6}", nested(INSTANCE_FIELDS), 0..4),
        pauses in proptest::collection::btree_map("[a-z%0-9]{1,6}", record(PAUSE_FIELDS), 0..4),
        pending in prop_oneof![
            proptest::collection::vec(record(NOTICE_FIELDS), 0..4).prop_map(Value::from),
            nasty(),
        ],
        job in prop_oneof![nested(JOB_FIELDS), nasty()],
        notified in prop_oneof![record(&["format", "last"]), nasty()],
    ) {
        let file = json!({
            "format": "scatter-instances/1",
            "instances": instances,
            "job": job,
            "pending": pending,
        });
        let pauses = json!({"format": "scatter-pauses/1", "pauses": pauses});
        render_all(
            &serde_json::to_vec(&file).unwrap(),
            b"{}",
            &serde_json::to_vec(&pauses).unwrap(),
            &serde_json::to_vec(&notified).unwrap(),
        );
    }

    #[test]
    fn health_survives_pauses_and_markers_of_arbitrary_bytes(
        pauses in proptest::collection::vec(any::<u8>(), 0..200),
        notified in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let file = json!({"format": "scatter-instances/1", "instances": {"a": {"id": "a"}}});
        render_all(&serde_json::to_vec(&file).unwrap(), b"{}", &pauses, &notified);
    }

    #[test]
    fn status_renders_records_that_are_not_objects(
        instance in nasty(),
        run in nasty(),
    ) {
        let file = json!({"format": "scatter-instances/1", "instances": {"a": instance}});
        render(&serde_json::to_vec(&file).unwrap(), &serde_json::to_vec(&run).unwrap());
        let file = json!({"format": "scatter-instances/1", "instances": instance.clone()});
        render(&serde_json::to_vec(&file).unwrap(), &serde_json::to_vec(&run).unwrap());
    }

    #[test]
    fn status_survives_arbitrary_bytes(
        instances in proptest::collection::vec(any::<u8>(), 0..200),
        run in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        render(&instances, &run);
    }

    #[test]
    fn holder_records_of_any_content_parse_or_are_refused(
        line in proptest::collection::vec(
            prop_oneof![
                Just("scatter-holder/2".to_string()),
                Just("scatter-holder/1".to_string()),
                select(vec!["pid", "starttime", "started", "timeout", "grace", "run", "run_start", "x"])
                    .prop_flat_map(|k| select(vec![
                        "1", "0", "-1", "2", "4294967296", "18446744073709551615",
                        "18446744073709551615.999999999", "1e308", "NaN", "none",
                        "5-3", "3-5", "", "1.5", "99999999999999999999",
                    ]).prop_map(move |v| format!("{k}={v}"))),
                "[ -~]{0,10}",
            ],
            0..10,
        )
    ) {
        let text = line.join(" ");
        if let Some(h) = Holder::parse(&text) {
            // Whatever was accepted is safe to act on.
            prop_assert!(h.pid > 1, "{text}");
            let _ = h.is_overdue(u64::MAX);
            let _ = h.is_overdue(0);
            let _ = h.summary(SystemTime::now());
            let _ = h.summary(SystemTime::UNIX_EPOCH);
            let _ = h.run_may_be_alive();
            prop_assert_eq!(Holder::parse(&h.to_line()).map(|p| p.pid), Some(h.pid));
        }
    }

    #[test]
    fn holder_records_of_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Holder::parse(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn consecutive_failures_at_the_limit_stay_there() {
    use scatter::outcome::{Outcome, TaskResult};
    use scatter::state::{Event, InstanceRecord, Trigger, apply};
    let mut record: InstanceRecord = serde_json::from_value(json!({
        "id": "a", "outcome": "failed", "consecutive_failures": 4294967295u64
    }))
    .unwrap();
    apply(
        &mut record,
        &Event {
            id: "a".into(),
            trigger: Trigger::Cron,
            at: SystemTime::now(),
            result: TaskResult {
                outcome: Outcome::Failed(1),
                started: Some(SystemTime::now()),
                duration: Some(Duration::from_secs(1)),
                lateness: None,
                usage: None,
            },
        },
    );
    assert_eq!(record.consecutive_failures, u32::MAX);
}
