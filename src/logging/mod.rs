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
//! No sink ever blocks the thread that logs, which is the supervisor's:
//! stderr lines go through the bounded relay ([`crate::relay`]), and the
//! syslog and journal sockets are non-blocking, so a record that finds the
//! reader's queue full is dropped and counted. [`finish`] then says once on
//! stderr how many records were dropped.
//!
//! Every message about an instance names it through `display::quoted`, so a
//! newline in a name cannot forge a second log line, and carries the raw id
//! as the `instance` key-value for sinks that keep structure.

mod journald;
mod socket;
mod syslog;

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use clap::ValueEnum;
use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::relay::{self, Stream};

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

enum Backend {
    Stderr,
    Syslog(syslog::Syslog),
    Journald(journald::Journal),
}

impl Backend {
    /// How notices name the sink.
    fn label(&self) -> &'static str {
        match self {
            Backend::Stderr => "stderr",
            Backend::Syslog(_) => "syslog",
            Backend::Journald(_) => "the journal",
        }
    }
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
            Backend::Syslog(syslog) => syslog.send(record),
            Backend::Journald(journal) => journal.send(record),
        }
    }

    fn flush(&self) {
        self.env.flush();
    }
}

/// Records the socket sinks dropped because their reader was not keeping
/// up, and those they could not send at all (with the first error).
static DROPPED: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);
static FIRST_ERROR: OnceLock<String> = OnceLock::new();
/// The sink in use, as notices name it.
static LABEL: OnceLock<&'static str> = OnceLock::new();

fn note_dropped() {
    DROPPED.fetch_add(1, Ordering::Relaxed);
}

fn note_failed(err: &std::io::Error) {
    FAILED.fetch_add(1, Ordering::Relaxed);
    FIRST_ERROR.get_or_init(|| crate::display::error_text(err));
}

/// Says once, on stderr, how many records the log sink dropped or could
/// not send. Not through the logger: that sink is the one in trouble.
pub fn finish() {
    let label = LABEL.get().copied().unwrap_or("the log sink");
    let mut text = String::new();
    let dropped = DROPPED.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        text.push_str(&format!(
            "scatter: warning: {label} is not keeping up; {} dropped\n",
            crate::display::plural(dropped, "log record")
        ));
    }
    let failed = FAILED.swap(0, Ordering::Relaxed);
    if failed > 0 {
        text.push_str(&format!(
            "scatter: warning: {} could not be sent to {label}: {}\n",
            crate::display::plural(failed, "log record"),
            FIRST_ERROR.get().map_or("unknown error", String::as_str)
        ));
    }
    relay::report(Stream::Stderr, text.into_bytes());
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
pub fn init(level: LevelFilter, sink: Sink) {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level);
    // The HTTP and TLS libraries of --url log every state change at debug
    // level: too much for -v, still there for RUST_LOG.
    builder
        .filter_module("ureq_proto", LevelFilter::Warn.min(level))
        .filter_module("rustls", LevelFilter::Warn.min(level));
    builder.parse_env("RUST_LOG");
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
    // Through the relay: a stalled stderr must not block the logging thread.
    builder.target(env_logger::Target::Pipe(Box::new(relay::Writer(
        Stream::Stderr,
    ))));
    let env = builder.build();
    let sink = match sink {
        Sink::Auto if journald::stderr_is_journal() => Sink::Journald,
        Sink::Auto => Sink::Stderr,
        other => other,
    };
    let (backend, problem) = match sink {
        Sink::Syslog => match syslog::Syslog::connect() {
            Ok(syslog) => (Backend::Syslog(syslog), None),
            Err(err) => (
                Backend::Stderr,
                Some(format!(
                    "cannot reach syslog at {}: {err}; logging to stderr",
                    syslog::socket_path().display()
                )),
            ),
        },
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
    let _ = LABEL.set(backend.label());
    log::set_max_level(env.filter());
    if log::set_boxed_logger(Box::new(Logger { env, backend })).is_err() {
        return;
    }
    if let Some(problem) = problem {
        log::warn!("{problem}");
    }
}
