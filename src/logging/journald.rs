//! The systemd journal's native protocol, written directly.
//!
//! Each record is one datagram of `FIELD=value` lines sent to the journal's
//! socket; a value containing a newline uses the binary form (name, newline,
//! 64-bit little-endian length, value, newline). This is small enough to own,
//! and owning it lets the socket path be overridden
//! (`SCATTER_JOURNAL_SOCKET`), which the systemd-journal-logger crate does
//! not allow, so tests can read what scatter sends from a socket of their own,
//! and lets the socket be non-blocking ([`LogSocket`]): a stalled journal
//! costs records, counted, never a blocked supervisor.

use std::io;
use std::path::PathBuf;

use log::kv::{Key, Value, VisitSource};
use log::{Level, Record};

use super::socket::LogSocket;

const DEFAULT_SOCKET: &str = "/run/systemd/journal/socket";
/// syslog's `cron` facility.
const FACILITY_CRON: &str = "9";

pub struct Journal {
    socket: LogSocket,
}

impl Journal {
    pub fn connect() -> io::Result<Journal> {
        let path = std::env::var_os("SCATTER_JOURNAL_SOCKET")
            .map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from);
        Ok(Journal {
            socket: LogSocket::connect(&path)?,
        })
    }

    pub fn send(&self, record: &Record<'_>) {
        self.socket.send(&payload(record));
    }
}

fn payload(record: &Record<'_>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256);
    let priority = match record.level() {
        Level::Error => "3",
        Level::Warn => "4",
        Level::Info => "6",
        Level::Debug | Level::Trace => "7",
    };
    field(&mut buf, "PRIORITY", priority.as_bytes());
    field(&mut buf, "SYSLOG_FACILITY", FACILITY_CRON.as_bytes());
    field(&mut buf, "SYSLOG_IDENTIFIER", b"scatter");
    field(
        &mut buf,
        "SYSLOG_PID",
        std::process::id().to_string().as_bytes(),
    );
    field(&mut buf, "MESSAGE", record.args().to_string().as_bytes());
    let _ = record.key_values().visit(&mut Fields(&mut buf));
    buf
}

/// Structured key-values become `SCATTER_<KEY>` fields.
struct Fields<'a>(&'a mut Vec<u8>);

impl<'kvs> VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        let name: String = key
            .as_str()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        field(
            self.0,
            &format!("SCATTER_{name}"),
            value.to_string().as_bytes(),
        );
        Ok(())
    }
}

fn field(buf: &mut Vec<u8>, name: &str, value: &[u8]) {
    buf.extend_from_slice(name.as_bytes());
    if value.contains(&b'\n') {
        buf.push(b'\n');
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
        buf.extend_from_slice(value);
    } else {
        buf.push(b'=');
        buf.extend_from_slice(value);
    }
    buf.push(b'\n');
}

/// Whether stderr is a stream to the journal, as systemd sets it up for
/// services: `$JOURNAL_STREAM` names its device and inode.
pub fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_with_newlines_use_the_binary_form() {
        let mut buf = Vec::new();
        field(&mut buf, "MESSAGE", b"a\nb");
        let mut want = b"MESSAGE\n".to_vec();
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(b"a\nb\n");
        assert_eq!(buf, want);
        let mut plain = Vec::new();
        field(&mut plain, "PRIORITY", b"6");
        assert_eq!(plain, b"PRIORITY=6\n");
    }

    #[test]
    fn key_values_become_scatter_fields() {
        let record = Record::builder()
            .args(format_args!("hello"))
            .level(Level::Info)
            .key_values(&[("instance", "big co")])
            .build();
        let text = String::from_utf8(payload(&record)).unwrap();
        assert!(text.contains("SCATTER_INSTANCE=big co\n"), "{text}");
        assert!(text.contains("MESSAGE=hello\n"), "{text}");
        assert!(text.contains("SYSLOG_IDENTIFIER=scatter\n"), "{text}");
    }
}
