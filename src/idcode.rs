//! The id → file-name encoding: lock files, per-instance log files and the
//! keys of instance records all name an instance this way.
//!
//! Any instance id must map to exactly one safe file name, and two different
//! ids must never share one, or two tenants would share a lock. The encoding
//! keeps `[A-Za-z0-9_-]` and a `.` that is not the first byte, and writes every
//! other byte as `%XX`, so it is reversible and therefore injective; names
//! never start with `.` and never contain `/`.
//!
//! An encoding longer than [`MAX_STEM`] (so that `<stem>.lock` still fits in
//! NAME_MAX) keeps a prefix and appends `~` and 128 bits of the SHA-256 of the
//! whole id. `~` never appears in a short encoding, so long and short names
//! cannot collide either. SHA-256 is fixed forever, unlike `DefaultHasher`.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;

use sha2::{Digest, Sha256};

/// The longest file name Linux file systems accept.
pub const NAME_MAX: usize = 255;
/// The longest stem, leaving room for a `.lock` or `.log` suffix.
pub const MAX_STEM: usize = NAME_MAX - ".lock".len();
/// Hex digits of the digest appended to long names (128 bits).
const DIGEST_HEX: usize = 32;

/// Encodes an instance id as a file-name stem.
pub fn encode_id(id: &OsStr) -> String {
    let bytes = id.as_bytes();
    let mut out = String::with_capacity(bytes.len() + 8);
    for (i, &b) in bytes.iter().enumerate() {
        let keep = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if keep {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    if out.len() <= MAX_STEM {
        return out;
    }
    let mut cut = MAX_STEM - 1 - DIGEST_HEX;
    // Do not leave half of a %XX escape before the digest.
    let raw = out.as_bytes();
    if raw[cut - 1] == b'%' {
        cut -= 1;
    } else if raw[cut - 2] == b'%' {
        cut -= 2;
    }
    out.truncate(cut);
    out.push('~');
    for b in &Sha256::digest(bytes)[..DIGEST_HEX / 2] {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The id a stem was encoded from, or `None` for a shortened (digest) stem
/// or anything [`encode_id`] would not have produced.
pub fn decode_stem(stem: &str) -> Option<Vec<u8>> {
    let bytes = stem.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    // Only the canonical encoding decodes: "%2e", "a b" or a digest stem
    // are not names scatter would have written for any id.
    (!out.is_empty() && encode_id(OsStr::from_bytes(&out)) == stem).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(b: &[u8]) -> String {
        encode_id(OsStr::from_bytes(b))
    }

    #[test]
    fn safe_bytes_are_kept() {
        assert_eq!(enc(b"acme-2_b.c"), "acme-2_b.c");
    }

    #[test]
    fn everything_else_is_escaped() {
        assert_eq!(enc(b"a b"), "a%20b");
        assert_eq!(enc(b".hidden"), "%2Ehidden");
        assert_eq!(enc(b".."), "%2E.");
        assert_eq!(enc(b"100%"), "100%25");
        assert_eq!(enc(b"x\ny"), "x%0Ay");
        assert_eq!(enc(b"caf\xe9"), "caf%E9");
        assert_eq!(enc(b"a~b"), "a%7Eb");
    }

    #[test]
    fn escapes_do_not_collide_with_literals() {
        // "%41" as a name must not be confused with "A".
        assert_ne!(enc(b"%41"), enc(b"A"));
        assert_ne!(enc(b"a b"), enc(b"a%20b"));
    }

    #[test]
    fn long_names_fit_and_stay_distinct() {
        let a = vec![b'a'; 255];
        let mut b = a.clone();
        b[254] = b'b';
        let (ea, eb) = (enc(&a), enc(&b));
        assert!(ea.len() <= MAX_STEM && eb.len() <= MAX_STEM);
        assert_ne!(ea, eb);
        assert!(ea.contains('~'));
        // A name of escaped bytes grows threefold and still fits.
        let spaces = vec![b' '; 255];
        let es = enc(&spaces);
        assert!(es.len() <= MAX_STEM, "{}", es.len());
        assert!(!es[..es.find('~').unwrap()].ends_with('%'));
    }

    #[test]
    fn short_stems_decode_back() {
        for id in [&b"acme"[..], b"a b", b".x", b"caf\xe9", b"100%"] {
            assert_eq!(decode_stem(&enc(id)).as_deref(), Some(id));
        }
        assert_eq!(decode_stem(&enc(&[b'x'; 300])), None);
        for not_ours in ["a b", "%2e", ".x", "%4", "%zz", ""] {
            assert_eq!(decode_stem(not_ours), None, "{not_ours:?}");
        }
    }

    #[test]
    fn digest_is_stable_across_releases() {
        // Pinned: a change here would orphan every existing long lock name.
        let e = enc(&[b'x'; 300]);
        assert_eq!(&e[e.len() - 33..], "~0d4e2ca9e9cbced7a7a5380eb29e1a37");
    }
}
