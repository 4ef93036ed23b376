//! The flags that protect the host (`scatter run`): pacing by pressure
//! (`--max-pressure`, `--pressure-source`, `--max-load`, `--max-defer`,
//! `--max-defer-action`), catching up without a burst (`--catch-up`), and
//! the tasks' priority (`--nice`, `--ionice`). They are flattened into
//! `RunArgs` and shown under a heading of their own.

use std::time::Duration;

use clap::Args;

use super::parse_duration;
use crate::pressure::{self, Limit, Source};
use crate::priority::{self, IoPriority};
use crate::supervise::DeferAction;

#[derive(Args, Debug)]
#[command(next_help_heading = "Protecting the host")]
pub struct ProtectArgs {
    /// Hold due starts while the PSI "some avg10" of RESOURCE (cpu, memory or io) is above
    /// PERCENT (repeatable, or comma-separated).
    #[arg(long, value_name = "RESOURCE=PERCENT", env = "SCATTER_MAX_PRESSURE",
          value_delimiter = ',', value_parser = Limit::parse)]
    pub max_pressure: Vec<Limit>,

    /// Where PSI is read: system (/proc/pressure), cgroup (scatter's own cgroup v2 directory),
    /// or a directory of RESOURCE.pressure files.
    #[arg(long, value_name = "SOURCE", default_value = "system", env = "SCATTER_PRESSURE_SOURCE",
          value_parser = Source::parse)]
    pub pressure_source: Source,

    /// Hold due starts while the 1-minute load average per online CPU is above LOAD.
    #[arg(long, value_name = "LOAD", env = "SCATTER_MAX_LOAD", value_parser = pressure::parse_load)]
    pub max_load: Option<f64>,

    /// How long past its slot a start may wait for pressure to fall [default: half the window].
    #[arg(long, value_name = "DURATION", env = "SCATTER_MAX_DEFER", value_parser = parse_duration)]
    pub max_defer: Option<Duration>,

    /// Past --max-defer: skip the start (outcome deferred, not a failure), or start it anyway
    /// with a warning.
    #[arg(long, value_enum, value_name = "ACTION", default_value_t = DeferAction::Skip,
          env = "SCATTER_MAX_DEFER_ACTION")]
    pub max_defer_action: DeferAction,

    /// Once behind schedule (after a stall, the cap or pressure), start at most FACTOR times the
    /// planned rate until caught up.
    #[arg(long, value_name = "FACTOR", default_value = "4", env = "SCATTER_CATCH_UP",
          value_parser = parse_factor)]
    pub catch_up: f64,

    /// Nice value of each task's process group, -20 to 19 (scatter's own is unchanged).
    #[arg(long, value_name = "N", env = "SCATTER_NICE", allow_negative_numbers = true,
          value_parser = priority::parse_nice)]
    pub nice: Option<i32>,

    /// I/O priority of each task's process group: idle, best-effort[:LEVEL] or
    /// realtime[:LEVEL], LEVEL 0 (highest) to 7, default 4.
    #[arg(long, value_name = "CLASS[:LEVEL]", env = "SCATTER_IONICE", value_parser = IoPriority::parse)]
    pub ionice: Option<IoPriority>,
}

/// The largest `--catch-up` factor: beyond it the rule lets any burst by.
pub const MAX_CATCH_UP: f64 = 1e6;

fn parse_factor(s: &str) -> Result<f64, String> {
    crate::lenient::number_in(s.trim(), 1.0..=MAX_CATCH_UP)
        .ok_or_else(|| format!("{s:?} is not a factor; give a number from 1 to 1000000, such as 4"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    #[test]
    fn factors() {
        assert_eq!(parse_factor("4").unwrap(), 4.0);
        assert_eq!(parse_factor("1.5").unwrap(), 1.5);
        for bad in ["0", "0.5", "-4", "NaN", "inf", "1e3", "2000000", "x"] {
            assert!(parse_factor(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_negative_nice_value_is_a_value() {
        let cli = Cli::try_parse_from([
            "scatter",
            "run",
            "--instances",
            "/i",
            "--nice",
            "-5",
            "--",
            "true",
        ])
        .unwrap();
        let crate::cli::Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.protect.nice, Some(-5));
        assert_eq!(args.protect.catch_up, 4.0);
        assert_eq!(args.protect.pressure_source, Source::System);
        let cli = Cli::try_parse_from([
            "scatter",
            "run",
            "--instances",
            "/i",
            "--max-pressure",
            "cpu=60,io=40",
            "--max-pressure",
            "memory=10",
            "--",
            "true",
        ])
        .unwrap();
        let crate::cli::Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.protect.max_pressure.len(), 3);
    }
}
