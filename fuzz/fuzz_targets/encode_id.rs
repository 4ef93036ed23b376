//! Fuzzes the id → lock-name encoding (`scatter::idcode`).
//!
//! The input is split on NUL (which no id can contain) into ids; `/` is
//! dropped from each and empty ones are skipped. For every id the stem must
//! be a safe file name that fits NAME_MAX with `.lock`, decode back to the id
//! when it is short, and be a clean prefix plus `~` and a digest when it is
//! long. Different ids must give different stems: the ids split from the
//! input, and each id against variants an encoding could confuse it with
//! (one byte written as its own `%XX` text, one ASCII letter in the other
//! case, a `.` in front).

#![no_main]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use libfuzzer_sys::fuzz_target;
use scatter::idcode::{MAX_STEM, NAME_MAX, decode_stem, encode_id};

fn enc(id: &[u8]) -> String {
    encode_id(OsStr::from_bytes(id))
}

/// The documented rule, written independently: `[A-Za-z0-9_-]` and a `.`
/// that is not first are kept (1 byte), everything else is `%XX` (3 bytes).
fn escaped_len(id: &[u8]) -> usize {
    id.iter()
        .enumerate()
        .map(|(i, &b)| {
            let kept = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
            if kept { 1 } else { 3 }
        })
        .sum()
}

fn check_one(id: &[u8]) -> String {
    let stem = enc(id);
    assert!(!stem.is_empty(), "empty stem");
    assert!(stem != "." && stem != "..", "stem {stem:?}");
    assert!(!stem.starts_with('.'), "hidden stem {stem:?}");
    assert!(
        stem.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.%~".contains(&b)),
        "stem {stem:?} has a byte outside [A-Za-z0-9_.%~-]"
    );
    assert!(stem.len() <= MAX_STEM, "stem of {} bytes", stem.len());
    assert!(stem.len() + ".lock".len() <= NAME_MAX);

    if escaped_len(id) <= MAX_STEM {
        assert!(!stem.contains('~'), "short id got a digest: {stem:?}");
        assert_eq!(stem.len(), escaped_len(id));
        assert_eq!(decode_stem(&stem).as_deref(), Some(id), "stem {stem:?}");
    } else {
        assert_eq!(decode_stem(&stem), None, "long stem decoded: {stem:?}");
        let (prefix, digest) = stem.split_once('~').expect("long stem without ~");
        assert_eq!(digest.len(), 32, "stem {stem:?}");
        assert!(
            digest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "stem {stem:?}"
        );
        let head = decode_stem(prefix).expect("prefix ends in half an escape");
        assert!(id.starts_with(&head), "prefix {prefix:?} is not the id's");
        assert!(
            prefix.len() >= MAX_STEM - 1 - 32 - 2,
            "prefix cut too short"
        );
    }
    stem
}

fn assert_distinct(a: &[u8], stem_a: &str, b: &[u8], stem_b: &str) {
    if a != b {
        assert_ne!(
            stem_a,
            stem_b,
            "{:?} and {:?} share a lock name",
            String::from_utf8_lossy(a),
            String::from_utf8_lossy(b)
        );
    }
}

/// Ids an encoding could confuse with `id`, chosen by `sel`.
fn variants(id: &[u8], sel: usize) -> Vec<Vec<u8>> {
    let i = sel % id.len();
    let mut out = Vec::new();
    // One byte as its own escape text, in either case of hex.
    for esc in [format!("%{:02X}", id[i]), format!("%{:02x}", id[i])] {
        let mut v = id[..i].to_vec();
        v.extend_from_slice(esc.as_bytes());
        v.extend_from_slice(&id[i + 1..]);
        out.push(v);
    }
    // One letter in the other case.
    if id[i].is_ascii_alphabetic() {
        let mut v = id.to_vec();
        v[i] ^= 0x20;
        out.push(v);
    }
    // A leading `.`, and the id without its first byte.
    let mut v = vec![b'.'];
    v.extend_from_slice(id);
    out.push(v);
    out.push(id[1..].to_vec());
    out
}

fuzz_target!(|data: &[u8]| {
    let ids: Vec<Vec<u8>> = data
        .split(|b| *b == 0)
        .map(|part| part.iter().copied().filter(|b| *b != b'/').collect())
        .filter(|id: &Vec<u8>| !id.is_empty())
        .take(4)
        .collect();
    let stems: Vec<String> = ids.iter().map(|id| check_one(id)).collect();
    for (k, (a, stem_a)) in ids.iter().zip(&stems).enumerate() {
        for v in variants(a, data.iter().map(|&b| usize::from(b)).sum()) {
            if !v.is_empty() {
                assert_distinct(a, stem_a, &v, &check_one(&v));
            }
        }
        for (b, stem_b) in ids[k + 1..].iter().zip(&stems[k + 1..]) {
            assert_distinct(a, stem_a, b, stem_b);
        }
    }
});
