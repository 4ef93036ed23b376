//! RFC 3164 records over the local syslog socket.
//!
//! Each record is one datagram, `<PRI>Mmm dd hh:mm:ss scatter[PID]: message`,
//! with facility `cron` and the timestamp in local time, as syslog(3) sends
//! it. Written here rather than through a crate because the record must go
//! out on a socket that never blocks ([`LogSocket`]), with drops counted.

use std::io;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, Record};

use super::socket::LogSocket;

const DEFAULT_SOCKET: &str = "/dev/log";
/// syslog's `cron` facility.
const FACILITY_CRON: u8 = 9;
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The syslog socket; `SCATTER_SYSLOG_SOCKET` overrides it (for chroots,
/// and for tests that own a socket).
pub fn socket_path() -> PathBuf {
    std::env::var_os("SCATTER_SYSLOG_SOCKET")
        .map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from)
}

pub struct Syslog {
    socket: LogSocket,
    pid: u32,
}

impl Syslog {
    pub fn connect() -> io::Result<Syslog> {
        Ok(Syslog {
            socket: LogSocket::connect(&socket_path())?,
            pid: std::process::id(),
        })
    }

    pub fn send(&self, record: &Record<'_>) {
        let stamp = timestamp(SystemTime::now());
        let message = record.args().to_string();
        self.socket
            .send(&payload(record.level(), &stamp, self.pid, &message));
    }
}

fn payload(level: Level, stamp: &str, pid: u32, message: &str) -> Vec<u8> {
    let severity = match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    };
    let pri = FACILITY_CRON * 8 + severity;
    format!("<{pri}>{stamp} scatter[{pid}]: {message}").into_bytes()
}

/// `Mmm dd hh:mm:ss` in local time, the day padded with a space.
fn timestamp(now: SystemTime) -> String {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let secs = libc::time_t::try_from(secs).unwrap_or(libc::time_t::MAX);
    // SAFETY: `tm` is plain data, for which all-zero bytes (a null zone
    // pointer included) are a valid value; localtime_r only writes into it
    // and is thread-safe.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&secs, &mut tm) }.is_null() {
        return "Jan  1 00:00:00".into();
    }
    format!(
        "{} {:>2} {:02}:{:02}:{:02}",
        MONTHS[tm.tm_mon.rem_euclid(12) as usize],
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_follow_rfc_3164() {
        let text = payload(Level::Debug, "Nov  3 04:05:06", 42, "hello");
        assert_eq!(text, b"<79>Nov  3 04:05:06 scatter[42]: hello");
        let text = payload(Level::Error, "Nov  3 04:05:06", 42, "bad");
        assert!(text.starts_with(b"<75>"));
    }

    #[test]
    fn timestamps_have_the_bsd_shape() {
        let stamp = timestamp(SystemTime::now());
        assert_eq!(stamp.len(), 15, "{stamp:?}");
        assert!(MONTHS.contains(&&stamp[..3]), "{stamp:?}");
        assert_eq!(&stamp[9..10], ":", "{stamp:?}");
    }
}
