//! How untrusted names are shown to humans.
//!
//! Instance ids are file names and may hold anything but `/` and NUL:
//! newlines, quotes, control characters, bytes that are not UTF-8. Every
//! message, log line and dry-run line shows them through [`quoted`], which
//! gives plain text for ordinary names and Bash ANSI-C quoting (`$'…'`)
//! otherwise. The result is always one line and can be pasted back into a
//! shell, for example after `--only`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shell_quote::Bash;

/// One-line, shell-pasteable form of an id, path or argument.
pub fn quoted(s: impl AsRef<OsStr>) -> String {
    let bytes = s.as_ref().as_bytes();
    let out = match std::str::from_utf8(bytes) {
        Ok(text) => Bash::quote_vec(text),
        Err(_) => Bash::quote_vec(bytes),
    };
    // Bash quoting escapes every control byte and invalid sequence, so the
    // output is valid UTF-8; the fallback only guards against a future change.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// An argv shown as one shell-quoted line.
pub fn argv_line<S: AsRef<OsStr>>(argv: &[S]) -> String {
    argv.iter().map(quoted).collect::<Vec<_>>().join(" ")
}

/// A short human duration: `250ms`, `12.3s`, `3m 2s`.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
    }
}

/// A duration with millisecond precision for sub-minute values: `600ms`,
/// `1.5s`, `20s`; longer ones as humantime (`2m 30s`).
pub fn duration_precise(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        let ms = d.as_secs_f64() * 1000.0;
        format!("{}ms", trim_float(ms))
    } else if d < Duration::from_secs(60) {
        format!("{}s", trim_float(d.as_secs_f64()))
    } else {
        humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
    }
}

fn trim_float(x: f64) -> String {
    let s = format!("{x:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Seconds since the epoch, with fraction.
pub fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// The bytes of a name in hex, when they are not valid UTF-8: JSON strings
/// must be Unicode, so such a name is shown lossily and given exactly here.
pub fn hex_unless_utf8(bytes: &[u8]) -> Option<String> {
    std::str::from_utf8(bytes)
        .is_err()
        .then(|| bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `1 line`, `2 lines`: a count with its word, plural unless one.
pub fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// A byte count for humans, in binary units: `812 bytes`, `64 KiB`,
/// `79.9 MiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return if bytes == 1 {
            "1 byte".to_string()
        } else {
            format!("{bytes} bytes")
        };
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let text = format!("{value:.1}");
    format!("{} {}", text.trim_end_matches(".0"), UNITS[unit])
}

/// An I/O error without the "(os error N)" suffix.
pub fn error_text(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn plain_names_stay_plain() {
        assert_eq!(quoted("acme"), "acme");
        assert_eq!(
            quoted("/srv/instances/acme-2.b_c"),
            "/srv/instances/acme-2.b_c"
        );
    }

    #[test]
    fn hostile_names_stay_on_one_line_and_are_quoted() {
        for name in [
            "a b",
            "line\nbreak",
            "x'; rm -rf /; '",
            "$(reboot)",
            "`id`",
            "a\tb",
        ] {
            let q = quoted(name);
            assert!(!q.contains('\n'), "{q}");
            assert!(q.starts_with("$'"), "{q}");
        }
        assert_eq!(quoted("line\nbreak"), "$'line\\nbreak'");
        assert_eq!(quoted(""), "''");
    }

    #[test]
    fn non_utf8_bytes_are_escaped() {
        let q = quoted(OsStr::from_bytes(b"caf\xe9"));
        assert_eq!(q, "$'caf\\xE9'");
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(duration(Duration::from_millis(250)), "250ms");
        assert_eq!(duration(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(duration(Duration::from_millis(182_900)), "3m 2s");
        assert_eq!(duration_precise(Duration::from_millis(600)), "600ms");
        assert_eq!(
            duration_precise(Duration::from_micros(333_333)),
            "333.333ms"
        );
        assert_eq!(duration_precise(Duration::from_millis(1500)), "1.5s");
        assert_eq!(duration_precise(Duration::from_secs(20)), "20s");
        assert_eq!(duration_precise(Duration::from_secs(150)), "2m 30s");
    }

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(size(1), "1 byte");
        assert_eq!(size(812), "812 bytes");
        assert_eq!(size(64 * 1024), "64 KiB");
        assert_eq!(size(83_886_080 - 65_536), "79.9 MiB");
        assert_eq!(size(1 << 20), "1 MiB");
    }
}
