//! The gate's parsing and reading, on files the tests write.

use std::path::Path;
use std::time::Instant;

use super::*;

#[test]
fn limits_parse_and_refuse_what_is_not_a_percentage() {
    assert_eq!(
        Limit::parse("cpu=60").unwrap(),
        Limit {
            resource: Resource::Cpu,
            percent: 60.0
        }
    );
    assert_eq!(Limit::parse("io=12.5%").unwrap().percent, 12.5);
    assert_eq!(Limit::parse("memory=0").unwrap().resource, Resource::Memory);
    for bad in [
        "cpu", "cpu=", "cpu=-1", "cpu=101", "cpu=NaN", "cpu=inf", "cpu=1e2", "gpu=5", "=5",
        "cpu=5=6",
    ] {
        assert!(Limit::parse(bad).is_err(), "{bad}");
    }
    assert_eq!(Limit::parse("cpu=60").unwrap().to_string(), "cpu=60");
}

#[test]
fn loads_are_positive_and_bounded() {
    assert_eq!(parse_load("1.5").unwrap(), 1.5);
    for bad in ["0", "-1", "NaN", "inf", "1e9", "2000000", "x", ""] {
        assert!(parse_load(bad).is_err(), "{bad}");
    }
}

#[test]
fn sources() {
    assert_eq!(Source::parse("system").unwrap(), Source::System);
    assert_eq!(Source::parse("cgroup").unwrap(), Source::Cgroup);
    assert_eq!(
        Source::parse("./system").unwrap(),
        Source::Dir("./system".into())
    );
    assert!(Source::parse("").is_err());
}

#[test]
fn psi_files_are_read_strictly() {
    let real = b"some avg10=12.34 avg60=1.00 avg300=0.50 total=297006206\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
    assert_eq!(parse_psi(real), Some(12.34));
    // The "full" line never stands in for "some".
    assert_eq!(
        parse_psi(b"full avg10=50.00 avg60=0 avg300=0 total=0\n"),
        None
    );
    for bad in [
        &b"some avg10=NaN avg60=0"[..],
        b"some avg10=inf",
        b"some avg10=-3",
        b"some avg10=100.5",
        b"some avg10=1e2",
        b"some avg60=3.00",
        b"some avg10=",
        b"",
        b"\xff\xfe some avg10=3",
        b"avg10=3",
    ] {
        assert_eq!(parse_psi(bad), None, "{}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn loadavg_is_read_strictly() {
    assert_eq!(parse_loadavg(b"0.21 0.54 0.64 3/109 14086\n"), Some(0.21));
    for bad in [&b"NaN 1 1"[..], b"-1 0 0", b"", b"1e999 1 1", b"x"] {
        assert_eq!(parse_loadavg(bad), None);
    }
}

fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(tmp.path().join(name), text).unwrap();
    }
    tmp
}

fn psi(avg10: &str) -> String {
    format!(
        "some avg10={avg10} avg60=0.00 avg300=0.00 total=1\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
    )
}

fn cpu(percent: f64) -> Limit {
    Limit {
        resource: Resource::Cpu,
        percent,
    }
}

#[test]
fn the_gauge_holds_above_the_limit_and_rereads_at_most_twice_a_second() {
    let tmp = dir_with(&[("cpu.pressure", &psi("90.00"))]);
    let source = Source::Dir(tmp.path().into());
    let spec = Spec::resolve(&[cpu(60.0)], &source, None).unwrap().unwrap();
    let mut gauge = Gauge::open(&spec).unwrap();
    let t0 = Instant::now();
    assert_eq!(gauge.hold(t0), Some(t0 + REREAD));
    // Pressure falls, but the files are not read again before REREAD.
    std::fs::write(tmp.path().join("cpu.pressure"), psi("5.00")).unwrap();
    assert_eq!(gauge.hold(t0 + REREAD / 2), Some(t0 + REREAD));
    assert_eq!(gauge.hold(t0 + REREAD), None);
    // At the limit is not above it.
    std::fs::write(tmp.path().join("cpu.pressure"), psi("60.00")).unwrap();
    assert_eq!(gauge.hold(t0 + REREAD * 2), None);
}

#[test]
fn a_file_that_goes_bad_during_the_run_holds_nothing() {
    let tmp = dir_with(&[("cpu.pressure", &psi("90.00"))]);
    let spec = Spec::resolve(&[cpu(60.0)], &Source::Dir(tmp.path().into()), None)
        .unwrap()
        .unwrap();
    let mut gauge = Gauge::open(&spec).unwrap();
    let t0 = Instant::now();
    assert!(gauge.hold(t0).is_some());
    for bad in ["some avg10=NaN", "garbage", ""] {
        std::fs::write(tmp.path().join("cpu.pressure"), bad).unwrap();
        assert_eq!(gauge.hold(t0 + REREAD * 4), None, "{bad}");
    }
    std::fs::remove_file(tmp.path().join("cpu.pressure")).unwrap();
    std::os::unix::fs::symlink("/proc/pressure/cpu", tmp.path().join("cpu.pressure")).unwrap();
    assert_eq!(
        gauge.hold(t0 + REREAD * 8),
        None,
        "a symlink is not followed"
    );
}

#[test]
fn unusable_sources_are_usage_errors_naming_the_file() {
    let cases: Vec<(tempfile::TempDir, &str)> = vec![
        (dir_with(&[]), "does not exist"),
        (
            dir_with(&[("cpu.pressure", "some avg10=NaN")]),
            "some avg10",
        ),
        (
            dir_with(&[("cpu.pressure", &"x".repeat(5000))]),
            "more than",
        ),
    ];
    for (tmp, needle) in cases {
        let err = Spec::resolve(&[cpu(60.0)], &Source::Dir(tmp.path().into()), None).unwrap_err();
        let fatal = crate::exit::fatal_of(&err).expect("a usage error");
        assert_eq!(fatal.code, crate::exit::USAGE);
        assert!(fatal.message.contains(needle), "{}", fatal.message);
        assert!(fatal.message.contains("cpu.pressure"), "{}", fatal.message);
        assert!(fatal.hint.as_deref().unwrap().contains("--max-load"));
    }
    // A FIFO does not block the check.
    let tmp = dir_with(&[]);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        tmp.path().join("cpu.pressure"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let err = Spec::resolve(&[cpu(60.0)], &Source::Dir(tmp.path().into()), None).unwrap_err();
    assert!(format!("{err:#}").contains("FIFO"), "{err:#}");
    let missing = Spec::resolve(
        &[cpu(60.0)],
        &Source::Dir("/nonexistent/pressure".into()),
        None,
    )
    .unwrap_err();
    assert_eq!(crate::exit::code_of(&missing), crate::exit::USAGE);
    let twice = Spec::resolve(&[cpu(60.0), cpu(70.0)], &Source::System, None).unwrap_err();
    assert!(format!("{twice:#}").contains("twice"));
}

#[test]
fn system_files_have_no_suffix_and_cgroup_ones_do() {
    if !Path::new("/proc/pressure/cpu").exists() {
        eprintln!("skipped: no PSI here");
        return;
    }
    let spec = Spec::resolve(&[cpu(100.0)], &Source::System, None)
        .unwrap()
        .unwrap();
    assert_eq!(spec.dir.as_deref(), Some(Path::new("/proc/pressure")));
    assert_eq!(spec.limits[0].1, "cpu");
    // 100 % can never be exceeded: nothing is held.
    assert_eq!(Gauge::open(&spec).unwrap().hold(Instant::now()), None);
    let tmp = dir_with(&[("io.pressure", &psi("1.00"))]);
    let io = Limit {
        resource: Resource::Io,
        percent: 50.0,
    };
    let spec = Spec::resolve(&[io], &Source::Dir(tmp.path().into()), None)
        .unwrap()
        .unwrap();
    assert_eq!(spec.limits[0].1, "io.pressure");
}

#[test]
fn the_load_gate_reads_proc_loadavg() {
    let spec = Spec::resolve(&[], &Source::System, Some(MAX_LOAD))
        .unwrap()
        .unwrap();
    assert_eq!(spec.dir, None);
    let mut gauge = Gauge::open(&spec).unwrap();
    assert_eq!(gauge.hold(Instant::now()), None);
    assert!(gauge.read_load().unwrap() >= 0.0);
    assert_eq!(Spec::resolve(&[], &Source::Cgroup, None).unwrap(), None);
}
