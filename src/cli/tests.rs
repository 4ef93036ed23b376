//! The command line's own checks: clap's consistency, and each parser.

use super::*;
use clap::CommandFactory;

#[test]
fn cli_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn durations() {
    assert_eq!(parse_window("1.5s").unwrap(), Duration::from_millis(1500));
    assert_eq!(parse_window("1m 30s").unwrap(), Duration::from_secs(90));
    assert_eq!(parse_window("500ms").unwrap(), Duration::from_millis(500));
    assert!(parse_window("0s").unwrap_err().contains("zero"));
    assert!(parse_window("-5s").unwrap_err().contains("negative"));
    assert!(
        parse_window("1 fortnight")
            .unwrap_err()
            .contains("fortnight")
    );
    assert!(parse_window("60").is_err());
    assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
    assert_eq!(parse_duration("1y").unwrap(), MAX_DURATION);
    for huge in ["1y 1s", "300000000000y", "18446744073709551615s"] {
        let err = parse_duration(huge).unwrap_err();
        assert!(err.contains(huge), "{err}");
    }
}

#[test]
fn caps() {
    assert_eq!(parse_cap("3").unwrap().get(), 3);
    assert!(parse_cap("0").unwrap_err().contains("at least 1"));
    assert!(parse_cap("-1").is_err());
}

#[test]
fn tops() {
    assert!(parse_top("0").is_err());
    assert!(parse_top("-1").is_err());
    assert_eq!(parse_top("3").unwrap().get(), 3);
}

#[test]
fn backoffs() {
    let b = parse_backoff("1m,1h").unwrap();
    assert_eq!(
        (b.base, b.max),
        (Duration::from_secs(60), Duration::from_secs(3600))
    );
    assert_eq!(parse_backoff("10s").unwrap().max, DEFAULT_BACKOFF_MAX);
    assert_eq!(parse_backoff("2h").unwrap().max, Duration::from_secs(7200));
    assert!(parse_backoff("1h,1m").unwrap_err().contains("shorter"));
    assert!(parse_backoff("0s").unwrap_err().contains("zero"));
    assert!(parse_backoff("1m,").is_err());
    assert!(parse_backoff("1m,2y").unwrap_err().contains("1 year"));
    assert!(parse_failures("0").unwrap_err().contains("at least 1"));
    assert_eq!(parse_failures("3").unwrap().get(), 3);
}

#[test]
fn names() {
    assert!(parse_name("checkmail".into()).is_ok());
    assert!(parse_name("a/b".into()).unwrap_err().contains('/'));
    assert!(parse_name("..".into()).is_err());
    assert!(parse_name("".into()).is_err());
}

#[test]
fn help_lists_exit_codes() {
    let help = Cli::command().render_long_help().to_string();
    assert!(help.contains("Exit status:"), "{help}");
}
