//! Diagnostics through `log`, to stderr, syslog or the systemd journal.
//!
//! The default level is `warn`, so a healthy run prints nothing and cron
//! mails nothing. `-v` shows debug (every start, exit and skip), `-vv` trace,
//! `-q` only errors; `RUST_LOG` overrides all of them. The same filter, built
//! by env_logger, applies to every sink.
//!
//! * stderr: `scatter: warning: …`; at debug level and above lines also
//!   carry a timestamp, which matters when reading how punctual starts were.
//! * syslog (`--log syslog`): RFC 3164 over `/dev/log`, facility `cron`,
//!   identifier `scatter`.
//! * journald (`--log journald`): the journal's native protocol, with the
//!   instance id in a structured `SCATTER_INSTANCE` field.
//! * `--log auto`: journald when stderr is connected to the journal (as
//!   under a systemd service), stderr otherwise.
//!
//! Every message about an instance names it through `display::quoted`, so a
//! newline in a name cannot forge a second log line, and carries the raw id
//! as the `instance` key-value for sinks that keep structure.

mod journald;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::ValueEnum;
use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::cli::Verbosity;

/// Where diagnostics go.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sink {
    #[default]
    Stderr,
    Syslog,
    Journald,
    /// journald when stderr is connected to the journal, else stderr.
    Auto,
}

/// The syslog socket; `SCATTER_SYSLOG_SOCKET` overrides it (for chroots,
/// and for tests that own a socket).
fn syslog_socket() -> PathBuf {
    std::env::var_os("SCATTER_SYSLOG_SOCKET")
        .map_or_else(|| PathBuf::from("/dev/log"), PathBuf::from)
}

enum Backend {
    Stderr,
    Syslog(Mutex<syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>>),
    Journald(journald::Journal),
}

struct Logger {
    /// Filtering for every sink, and the stderr sink itself.
    env: env_logger::Logger,
    backend: Backend,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.env.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.env.matches(record) {
            return;
        }
        match &self.backend {
            Backend::Stderr => self.env.log(record),
            Backend::Syslog(logger) => {
                let message = record.args().to_string();
                let Ok(mut logger) = logger.lock() else {
                    return;
                };
                // A logger cannot report its own failure anywhere useful.
                let _ = match record.level() {
                    Level::Error => logger.err(message),
                    Level::Warn => logger.warning(message),
                    Level::Info => logger.info(message),
                    Level::Debug | Level::Trace => logger.debug(message),
                };
            }
            Backend::Journald(journal) => journal.send(record),
        }
    }

    fn flush(&self) {
        self.env.flush();
    }
}

/// Whether diagnostics go to syslog or the journal rather than stderr.
static STRUCTURED: AtomicBool = AtomicBool::new(false);

/// True when the log sink is syslog or the journal. The end-of-run report
/// always goes to stderr; with such a sink, each failure is also logged as
/// a record of its own, so `journalctl SCATTER_INSTANCE=…` finds it.
pub fn structured() -> bool {
    STRUCTURED.load(Ordering::Relaxed)
}

/// Installs the logger. A sink that cannot be reached falls back to stderr
/// with a warning there, so nothing is lost silently.
pub fn init(v: Verbosity, sink: Sink) {
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
    let env = builder.build();
    let sink = match sink {
        Sink::Auto if journald::stderr_is_journal() => Sink::Journald,
        Sink::Auto => Sink::Stderr,
        other => other,
    };
    let (backend, problem) = match sink {
        Sink::Syslog => {
            let socket = syslog_socket();
            let formatter = syslog::Formatter3164 {
                facility: syslog::Facility::LOG_CRON,
                hostname: None,
                process: "scatter".into(),
                pid: std::process::id(),
            };
            match syslog::unix_custom(formatter, &socket) {
                Ok(logger) => (Backend::Syslog(Mutex::new(logger)), None),
                Err(err) => (
                    Backend::Stderr,
                    Some(format!(
                        "cannot reach syslog at {}: {err}; logging to stderr",
                        socket.display()
                    )),
                ),
            }
        }
        Sink::Journald => match journald::Journal::connect() {
            Ok(journal) => (Backend::Journald(journal), None),
            Err(err) => (
                Backend::Stderr,
                Some(format!(
                    "cannot reach the journal: {err}; logging to stderr"
                )),
            ),
        },
        Sink::Stderr | Sink::Auto => (Backend::Stderr, None),
    };
    STRUCTURED.store(!matches!(backend, Backend::Stderr), Ordering::Relaxed);
    log::set_max_level(env.filter());
    if log::set_boxed_logger(Box::new(Logger { env, backend })).is_err() {
        return;
    }
    if let Some(problem) = problem {
        log::warn!("{problem}");
    }
}
