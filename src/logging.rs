//! Diagnostics on stderr through `log` and `env_logger`.
//!
//! The default level is `warn`, so a healthy run prints nothing and cron
//! mails nothing. `-v` shows debug (every start, exit and skip), `-vv` trace,
//! `-q` only errors; `RUST_LOG` overrides all of them. Lines look like
//! `scatter: warning: …`; at debug level and above they also carry a
//! timestamp, which matters when reading how punctual the starts were.
//! Every message about an instance names it through `display::quoted`, so a
//! newline in a name cannot forge a second log line.

use std::io::Write;

use log::{Level, LevelFilter};

use crate::cli::Verbosity;

pub fn init(v: Verbosity) {
    let level = match (v.quiet, v.verbose) {
        (true, _) => LevelFilter::Error,
        (false, 0) => LevelFilter::Warn,
        (false, 1) => LevelFilter::Debug,
        (false, _) => LevelFilter::Trace,
    };
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level).parse_env("RUST_LOG");
    let stamped = level >= LevelFilter::Debug || std::env::var_os("RUST_LOG").is_some();
    builder.format(move |buf, record| {
        let level = match record.level() {
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        };
        if stamped {
            let ts = buf.timestamp_millis();
            writeln!(buf, "scatter: {ts} {level}: {}", record.args())
        } else {
            writeln!(buf, "scatter: {level}: {}", record.args())
        }
    });
    builder.init();
}
