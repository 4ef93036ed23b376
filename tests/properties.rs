//! Property tests for the pure parts of scatter: the id → lock-name encoding,
//! placeholder expansion and the plan (offsets and order).
//!
//! Each property is written so that a plausible regression breaks it: an
//! encoding that kept `%` collides with the id spelled as its own escape,
//! one that kept a leading `.` or a high byte makes an unsafe name, one that
//! hashed only part of a long id collides on the rest; a parser that
//! expanded twice, accepted `{ID}` or dropped an empty argument disagrees
//! with the token model; an order that depended on the whole set moves ids
//! when others come and go. (Each of these was checked by breaking a copy of
//! the code.) Case counts are tuned so the whole file runs in a few seconds
//! in a debug build.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::time::Duration;

use proptest::collection::{btree_set, vec};
use proptest::prelude::*;
use proptest::sample::select;
use sha2::{Digest, Sha256};

use scatter::idcode::{MAX_STEM, NAME_MAX, decode_stem, encode_id};
use scatter::idhash::hash_key;
use scatter::plan::{Order, Plan, Spec, offset, order};
use scatter::shard::Shard;
use scatter::template::Template;

// ---------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------

/// Bytes that come up often in ids: ones the encoding keeps, and ones it
/// escapes (`%`, `.`, space, `~`, shell and brace characters, control and
/// high bytes), with ASCII letters so that case differences come up.
const INTERESTING: &[u8] = b"aAzZ09_-.%.~ {}$'\"\\\n\t*?#!:\x7f\x80\xe9\xff";

/// Any byte but `/` and NUL, a quarter of them from [`INTERESTING`]. Built
/// on `any::<u8>()` (cheap to generate and to shrink) rather than a union of
/// strategies, which is slow in a debug build.
fn id_byte() -> impl Strategy<Value = u8> {
    any::<u8>().prop_map(|b| match b {
        // Below 64 are NUL and `/`, among others.
        0..64 => INTERESTING[usize::from(b) % INTERESTING.len()],
        b => b,
    })
}

/// A valid instance id: 1..=`max` bytes, no `/`, no NUL.
fn id_of(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(id_byte(), 1..=max)
}

/// Short and long ids alike (a directory name is at most 255 bytes).
fn any_id() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![3 => id_of(24), 1 => id_of(NAME_MAX)]
}

/// Mostly bytes the encoding keeps, one in 16 from [`INTERESTING`].
fn mostly_kept_byte() -> impl Strategy<Value = u8> {
    const KEPT: &[u8] = b"abcxyzABCXYZ0189_-.";
    any::<u8>().prop_map(|b| match b {
        0..16 => INTERESTING[usize::from(b) % INTERESTING.len()],
        b => KEPT[usize::from(b) % KEPT.len()],
    })
}

/// Ids of 200..=255 bytes: any bytes (escaped length far over the limit,
/// so the digest form), or mostly kept ones (escaped length around the
/// 250-byte limit, so either form, and cuts next to an escape).
fn long_id() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(id_byte(), 200..=NAME_MAX),
        vec(mostly_kept_byte(), 200..=NAME_MAX),
    ]
}

fn is_valid_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= NAME_MAX && !id.contains(&b'/') && !id.contains(&0)
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

fn enc(b: &[u8]) -> String {
    encode_id(os(b))
}

/// Two ids that are close to each other in a way an encoding could get wrong.
fn id_pair() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    prop_oneof![
        // Unrelated.
        (any_id(), any_id()),
        // One byte replaced by another.
        (any_id(), any::<prop::sample::Index>(), id_byte()).prop_map(|(a, i, b)| {
            let mut c = a.clone();
            c[i.index(a.len())] = b;
            (a, c)
        }),
        // One ASCII letter in the other case (a case-insensitive encoding
        // would merge them).
        (
            any_id(),
            any::<prop::sample::Index>(),
            select(b"aAbBxXzZ".to_vec())
        )
            .prop_map(|(mut a, i, l)| {
                let i = i.index(a.len());
                a[i] = l;
                let mut c = a.clone();
                c[i] = l ^ 0x20;
                (a, c)
            }),
        // One byte replaced by the text of its own escape, `%XX`, in upper
        // or lower case (an encoding that kept `%` would merge them).
        (any_id(), any::<prop::sample::Index>(), any::<bool>()).prop_map(|(a, i, lower)| {
            let i = i.index(a.len());
            let esc = if lower {
                format!("%{:02x}", a[i])
            } else {
                format!("%{:02X}", a[i])
            };
            let mut c = a[..i].to_vec();
            c.extend_from_slice(esc.as_bytes());
            c.extend_from_slice(&a[i + 1..]);
            c.truncate(NAME_MAX);
            (a, c)
        }),
        // One byte inserted (pairs are unordered, so this is also removal).
        (any_id(), any::<prop::sample::Index>(), id_byte()).prop_map(|(a, i, b)| {
            let mut c = a.clone();
            c.insert(i.index(a.len() + 1), b);
            c.truncate(NAME_MAX);
            (a, c)
        }),
        // A `.` first or not (an encoding that kept a leading `.` would make
        // a hidden file; one that dropped it would merge the two).
        any_id().prop_map(|a| {
            let mut c = vec![b'.'];
            c.extend_from_slice(&a);
            c.truncate(NAME_MAX);
            (a, c)
        }),
        // Long ids that share a long prefix and differ only near the end, so
        // only the digest can tell them apart.
        (long_id(), id_byte(), 0usize..=40).prop_map(|(a, b, back)| {
            let mut c = a.clone();
            c[a.len() - 1 - back] = b;
            (a, c)
        }),
        // Long ids of different lengths with one a prefix of the other.
        (long_id(), 1usize..=10).prop_map(|(a, cut)| {
            let c = a[..a.len() - cut].to_vec();
            (a, c)
        }),
    ]
    .prop_filter("the two ids differ and are valid", |(a, b)| {
        a != b && is_valid_id(a) && is_valid_id(b)
    })
}

/// The length of the escaped form of an id, before any shortening: the
/// README's rule, written independently of the implementation.
fn escaped_len(id: &[u8]) -> usize {
    id.iter()
        .enumerate()
        .map(|(i, &b)| {
            let kept = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
            if kept { 1 } else { 3 }
        })
        .sum()
}

// ---------------------------------------------------------------------------
// Lock names
// ---------------------------------------------------------------------------

fn assert_valid_stem(id: &[u8], stem: &str) -> Result<(), TestCaseError> {
    let name = format!("{stem}.lock");
    prop_assert!(!stem.is_empty(), "empty stem for {:?}", id);
    prop_assert!(stem != "." && stem != "..", "stem {stem:?}");
    prop_assert!(!stem.starts_with('.'), "hidden stem {stem:?}");
    prop_assert!(
        stem.bytes().all(|b| b.is_ascii_graphic()),
        "stem {stem:?} has a byte that is not printable ASCII"
    );
    // Stricter than the above: only the documented alphabet.
    prop_assert!(
        stem.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.%~".contains(&b)),
        "stem {stem:?} has a byte outside [A-Za-z0-9_.%~-]"
    );
    prop_assert!(stem.len() <= MAX_STEM, "stem of {} bytes", stem.len());
    prop_assert!(name.len() <= NAME_MAX, "{} bytes with .lock", name.len());
    let log = format!("{stem}.log");
    prop_assert!(log.len() <= NAME_MAX, "{} bytes with .log", log.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Two different ids never share a lock file.
    #[test]
    fn lock_names_are_injective((a, b) in id_pair()) {
        let (ea, eb) = (enc(&a), enc(&b));
        prop_assert_ne!(
            &ea, &eb,
            "ids {:?} and {:?} share a lock name",
            String::from_utf8_lossy(&a), String::from_utf8_lossy(&b)
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    /// Every stem is a safe file name that fits NAME_MAX with `.lock`; a
    /// short stem decodes back to the id, and a long one is a clean prefix
    /// of the escaped id plus `~` and 32 hex digits.
    #[test]
    fn lock_names_are_safe_and_reversible(id in any_id()) {
        let stem = enc(&id);
        assert_valid_stem(&id, &stem)?;
        // Deterministic.
        prop_assert_eq!(&stem, &enc(&id));

        let short = escaped_len(&id) <= MAX_STEM;
        prop_assert_eq!(
            !stem.contains('~'), short,
            "escaped length {} but stem {:?}", escaped_len(&id), stem
        );
        if short {
            prop_assert_eq!(stem.len(), escaped_len(&id));
            prop_assert_eq!(decode_stem(&stem), Some(id.clone()));
        } else {
            prop_assert_eq!(decode_stem(&stem), None);
            let (prefix, digest) = stem.split_once('~').unwrap();
            prop_assert_eq!(digest.len(), 32);
            prop_assert!(digest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            prop_assert!(!digest.contains('~'));
            // The prefix holds no half escape: it decodes, to a prefix of the id.
            let head = decode_stem(prefix);
            prop_assert!(head.is_some(), "prefix {:?} ends in half an escape", prefix);
            prop_assert!(id.starts_with(&head.unwrap()));
            prop_assert!(prefix.len() >= MAX_STEM - 1 - 32 - 2);
        }
    }

    /// Only what `encode_id` writes decodes: any other string (a hand-made
    /// file name, a lower-case escape, a space) is not mistaken for an id.
    #[test]
    fn only_canonical_stems_decode(stem in "[ -~]{0,40}") {
        if let Some(id) = decode_stem(&stem) {
            prop_assert_eq!(enc(&id), stem);
        }
    }

    /// The digest form is exercised by ids of 200..=255 bytes, and it stays
    /// valid however many of their bytes need escaping.
    #[test]
    fn long_lock_names_fit(id in long_id()) {
        let stem = enc(&id);
        assert_valid_stem(&id, &stem)?;
        if let Some(decoded) = decode_stem(&stem) {
            prop_assert_eq!(decoded, id);
        }
    }
}

/// The generators reach both forms: a share of `any_id()` and most of
/// `long_id()` values are long enough for the digest form, and some long
/// ids still fit in the short form (so the tests above are not vacuous).
#[test]
fn generators_reach_both_forms() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let mut digest_share = |strategy: BoxedStrategy<Vec<u8>>| {
        let n = 400;
        let long = (0..n)
            .filter(|_| {
                let id = strategy.new_tree(&mut runner).unwrap().current();
                enc(&id).contains('~')
            })
            .count();
        long as f64 / n as f64
    };
    let any = digest_share(any_id().boxed());
    let long = digest_share(long_id().boxed());
    assert!((0.05..0.5).contains(&any), "any_id: {any} in digest form");
    assert!(
        (0.3..0.95).contains(&long),
        "long_id: {long} in digest form"
    );

    // Ids that differ only by the escape text of one byte stay apart.
    assert_ne!(enc(b"a%25"), enc(b"a%"));
    assert_ne!(enc(b"%2E"), enc(b"."));
    assert_ne!(enc(b"%e9"), enc(b"\xe9"));
}

// ---------------------------------------------------------------------------
// Placeholders
// ---------------------------------------------------------------------------

/// One piece of a template argument, with the bytes it is written as and
/// what it stands for.
#[derive(Debug, Clone)]
enum Tok {
    /// Text without braces.
    Lit(Vec<u8>),
    /// `{}` or `{id}`.
    Id(bool),
    /// `{path}`.
    Path,
    /// `{{`
    Open,
    /// `}}`
    Close,
    /// A brace that is not a placeholder (`{print $1}`, `{ id }`...),
    /// taken literally. Each ends in a byte that is not a brace, so two of
    /// them side by side never pair up into `}}`.
    Stray(&'static str),
}

const STRAYS: &[&str] = &[
    "{ ",
    "{-}.",
    "{print $1}!",
    "{ id }.",
    "a{-}b",
    "{x!",
    "}x",
    "{.}x",
    "{id ",
    "{path:",
    "{{ ",
    "{\n",
    "}\u{e9}",
];

impl Tok {
    fn written(&self) -> Vec<u8> {
        match self {
            Tok::Lit(t) => t.clone(),
            Tok::Id(true) => b"{}".to_vec(),
            Tok::Id(false) => b"{id}".to_vec(),
            Tok::Path => b"{path}".to_vec(),
            Tok::Open => b"{{".to_vec(),
            Tok::Close => b"}}".to_vec(),
            Tok::Stray(s) => s.as_bytes().to_vec(),
        }
    }

    fn expanded(&self, id: &[u8], path: &[u8]) -> Vec<u8> {
        match self {
            Tok::Lit(t) => t.clone(),
            Tok::Id(_) => id.to_vec(),
            Tok::Path => path.to_vec(),
            Tok::Open => b"{".to_vec(),
            Tok::Close => b"}".to_vec(),
            // `{{ ` is an escaped brace followed by a space.
            Tok::Stray("{{ ") => b"{ ".to_vec(),
            Tok::Stray(s) => s.as_bytes().to_vec(),
        }
    }
}

/// Argument bytes without braces (NUL cannot be in an argument).
fn plain_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => select(b"abcdipathID_-/.=: $'\"\\\n*".to_vec()),
        1 => (1u8..=0xff).prop_filter("no brace", |b| *b != b'{' && *b != b'}'),
    ]
}

fn plain_arg() -> impl Strategy<Value = Vec<u8>> {
    vec(plain_byte(), 0..12)
}

fn tok() -> impl Strategy<Value = Tok> {
    prop_oneof![
        4 => plain_arg().prop_map(Tok::Lit),
        2 => any::<bool>().prop_map(Tok::Id),
        2 => Just(Tok::Path),
        1 => Just(Tok::Open),
        1 => Just(Tok::Close),
        2 => select(STRAYS).prop_map(Tok::Stray),
    ]
}

/// A template: argv of 1..6 arguments, each a list of tokens; the first
/// argument is never empty (an empty command is refused).
fn template() -> impl Strategy<Value = Vec<Vec<Tok>>> {
    vec(vec(tok(), 0..6), 1..6).prop_filter("non-empty command", |args| {
        args[0].iter().any(|t| !t.written().is_empty())
    })
}

/// Ids and paths that look like template syntax, or are hostile otherwise.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        select(vec![
            &b"{}"[..],
            b"{id}",
            b"{path}",
            b"{{",
            b"}}",
            b"{nmae}",
            b"\n",
            b"\xff\xfe",
            b"\xe9",
            b"$(reboot)",
            b"'",
            b" ",
            b"%",
        ])
        .prop_map(<[u8]>::to_vec),
        vec(1u8..=0xff, 1..4),
    ];
    vec(piece, 1..6).prop_map(|p| p.concat())
}

fn hostile_id() -> impl Strategy<Value = Vec<u8>> {
    hostile_bytes().prop_map(|mut b| {
        b.retain(|c| *c != b'/' && *c != 0);
        if b.is_empty() {
            b.push(b'x');
        }
        b
    })
}

fn hostile_path() -> impl Strategy<Value = Vec<u8>> {
    hostile_bytes().prop_map(|mut b| {
        b.retain(|c| *c != 0);
        let mut p = b"/srv/instances/".to_vec();
        p.extend_from_slice(&b);
        p
    })
}

fn argv_of(args: &[Vec<u8>]) -> Vec<OsString> {
    args.iter().map(|a| OsString::from_vec(a.clone())).collect()
}

fn expand(t: &Template, id: &[u8], path: &[u8]) -> Vec<Vec<u8>> {
    t.expand(os(id), Path::new(os(path)))
        .into_iter()
        .map(OsString::into_vec)
        .collect()
}

/// A `{word}` that is not a placeholder: near misses of the known ones
/// (other case, one character more or less) as well as any word.
fn unknown_word() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec![
            "ID", "Id", "iD", "PATH", "Path", "ids", "i", "d", "pat", "paths", "id_", "_id", "_",
            "0", "id0", "path_", "nmae", "name",
        ])
        .prop_map(String::from),
        "[A-Za-z0-9_]{1,10}",
    ]
    .prop_filter("not a known word", |w| w != "id" && w != "path")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Arguments without braces are passed through unchanged, whatever the
    /// id and path.
    #[test]
    fn args_without_braces_are_unchanged(
        first in vec(plain_byte(), 1..12),
        rest in vec(plain_arg(), 0..6),
        id in hostile_id(),
        path in hostile_path(),
    ) {
        let mut args = vec![first];
        args.extend(rest);
        let t = Template::parse(&argv_of(&args)).expect("no braces, no error");
        prop_assert_eq!(expand(&t, &id, &path), args.clone());
        prop_assert_eq!(t.fixed_program(), Some(OsString::from_vec(args[0].clone())));
    }

    /// Every argument expands to exactly what its tokens stand for: `{}` and
    /// `{id}` to the id's bytes, `{path}` to the path's bytes, `{{`/`}}` to
    /// one brace, stray braces to themselves; in one pass, so an id holding
    /// `{}` or `{path}` is inserted as it is; and argv keeps its length.
    #[test]
    fn expansion_matches_the_token_model(
        args in template(),
        id in hostile_id(),
        path in hostile_path(),
    ) {
        let written: Vec<Vec<u8>> = args
            .iter()
            .map(|toks| toks.iter().flat_map(Tok::written).collect())
            .collect();
        let want: Vec<Vec<u8>> = args
            .iter()
            .map(|toks| toks.iter().flat_map(|t| t.expanded(&id, &path)).collect())
            .collect();
        let t = Template::parse(&argv_of(&written));
        prop_assert!(t.is_ok(), "{:?} refused: {:?}", written, t.err().map(|e| e.message));
        let t = t.unwrap();
        let got = expand(&t, &id, &path);
        prop_assert_eq!(got.len(), written.len(), "argv length changed");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            prop_assert_eq!(
                g, w,
                "argument {} {:?} with id {:?}",
                i, String::from_utf8_lossy(&written[i]), String::from_utf8_lossy(&id)
            );
        }
        // The command is fixed exactly when it has no placeholder.
        let has_placeholder = args[0].iter().any(|t| matches!(t, Tok::Id(_) | Tok::Path));
        prop_assert_eq!(
            t.fixed_program(),
            (!has_placeholder).then(|| OsString::from_vec(want[0].clone()))
        );
    }

    /// Expanding is a pure function of the id and the path: the same
    /// template gives each instance its own argv, and two ids give argvs
    /// that differ wherever the id is used.
    #[test]
    fn ids_never_leak_between_expansions(
        args in template(),
        a in hostile_id(),
        b in hostile_id(),
    ) {
        let written: Vec<Vec<u8>> = args
            .iter()
            .map(|toks| toks.iter().flat_map(Tok::written).collect())
            .collect();
        let t = Template::parse(&argv_of(&written)).unwrap();
        let path = b"/srv/i/p";
        let first = expand(&t, &a, path);
        let _ = expand(&t, &b, path);
        prop_assert_eq!(expand(&t, &a, path), first.clone());
        let uses_id = args.iter().flatten().any(|t| matches!(t, Tok::Id(_)));
        if a != b && uses_id {
            prop_assert_ne!(expand(&t, &b, path), first);
        }
    }

    /// Any `{word}` other than `{}`, `{id}` and `{path}` is refused, and the
    /// message names it; escaped as `{{word}}` it is literal text.
    #[test]
    fn unknown_placeholders_are_refused(
        word in unknown_word(),
        before in vec(plain_arg(), 0..3),
        prefix in plain_arg(),
        suffix in plain_arg(),
        after in vec(plain_arg(), 0..3),
    ) {
        let mut bad = prefix.clone();
        bad.extend_from_slice(format!("{{{word}}}").as_bytes());
        bad.extend_from_slice(&suffix);
        let mut args = vec![b"task".to_vec()];
        args.extend(before.iter().cloned());
        args.push(bad);
        args.extend(after.iter().cloned());
        let err = Template::parse(&argv_of(&args));
        prop_assert!(err.is_err(), "{{{}}} accepted", word);
        let msg = err.err().unwrap().message;
        prop_assert!(msg.contains(&format!("{{{word}}}")), "message {:?}", msg);

        // The same word as the command itself is refused too.
        let err = Template::parse(&argv_of(&[format!("{{{word}}}").into_bytes()]));
        prop_assert!(err.is_err());

        // Escaped, it is literal.
        let mut escaped = prefix.clone();
        escaped.extend_from_slice(format!("{{{{{word}}}}}").as_bytes());
        escaped.extend_from_slice(&suffix);
        let t = Template::parse(&argv_of(&[b"task".to_vec(), escaped])).unwrap();
        let mut want = prefix;
        want.extend_from_slice(format!("{{{word}}}").as_bytes());
        want.extend_from_slice(&suffix);
        prop_assert_eq!(&expand(&t, b"id", b"/p")[1], &want);
    }
}

// ---------------------------------------------------------------------------
// The plan
// ---------------------------------------------------------------------------

/// 1 ms ..= 1 h, in nanoseconds, with the round values and odd ones alike.
fn window() -> impl Strategy<Value = Duration> {
    prop_oneof![
        1_000_000u64..=1_000_000_000,
        1u64..=3_600_000_000_000u64,
        select(vec![
            1_000_000u64,
            1_000_000_000,
            60_000_000_000,
            3_600_000_000_000
        ]),
    ]
    .prop_map(|ns| Duration::from_nanos(ns.max(1_000_000)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Offsets start at 0, never go backwards, stay inside the window, are
    /// exactly k×W/N rounded down, and are evenly spaced (two gaps differ by
    /// at most 1 ns).
    #[test]
    fn offsets_are_even_and_inside_the_window(n in 0usize..2000, w in window()) {
        prop_assert_eq!(offset(w, 0, n), Duration::ZERO);
        if n == 0 {
            return Ok(());
        }
        let wn = w.as_nanos();
        let even = wn / n as u128;
        let mut prev = Duration::ZERO;
        for k in 0..n {
            let o = offset(w, k, n);
            prop_assert!(o >= prev, "offset {k} of {n} went backwards");
            prop_assert!(o < w, "offset {k} of {n} is {o:?}, window {w:?}");
            prop_assert_eq!(o.as_nanos(), k as u128 * wn / n as u128);
            if k > 0 {
                let gap = (o - prev).as_nanos();
                prop_assert!(gap == even || gap == even + 1, "gap {gap} ns, expected ~{even}");
            }
            prev = o;
        }
        // The slot after the last is the end of the window.
        prop_assert_eq!(offset(w, n, n), w);
    }
}

fn id_set(max: usize) -> impl Strategy<Value = BTreeSet<Vec<u8>>> {
    btree_set(id_of(12), 0..max)
}

fn sorted(ids: &BTreeSet<Vec<u8>>) -> Vec<OsString> {
    ids.iter().map(|b| OsString::from_vec(b.clone())).collect()
}

fn bytes_of(ids: &[OsString]) -> Vec<Vec<u8>> {
    ids.iter().map(|i| i.as_bytes().to_vec()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// `--order name` keeps every id once, in bytewise order.
    #[test]
    fn name_order_is_bytewise(ids in id_set(200)) {
        let got = order(sorted(&ids), Order::Name);
        prop_assert_eq!(bytes_of(&got), ids.iter().cloned().collect::<Vec<_>>());
    }

    /// `--order hash` keeps every id once, is deterministic, and sorts by
    /// the first 64 bits of the id's SHA-256.
    #[test]
    fn hash_order_is_a_deterministic_permutation(ids in id_set(200)) {
        let got = order(sorted(&ids), Order::Hash);
        prop_assert_eq!(got.len(), ids.len());
        let as_set: BTreeSet<Vec<u8>> = bytes_of(&got).into_iter().collect();
        prop_assert_eq!(&as_set, &ids);
        prop_assert_eq!(&order(sorted(&ids), Order::Hash), &got);
        for pair in got.windows(2) {
            prop_assert!(hash_key(&pair[0]) <= hash_key(&pair[1]));
        }
        for id in &got {
            let digest = Sha256::digest(id.as_bytes());
            prop_assert_eq!(&hash_key(id).to_be_bytes()[..], &digest[..8]);
        }
    }

    /// With `--order hash`, the relative order of a set of ids does not
    /// change when other ids are added or removed.
    #[test]
    fn hash_order_is_stable_under_add_and_remove(
        kept in id_set(120),
        others in id_set(120),
    ) {
        let all: BTreeSet<Vec<u8>> = kept.union(&others).cloned().collect();
        let full = order(sorted(&all), Order::Hash);
        let part = order(sorted(&kept), Order::Hash);
        let filtered: Vec<OsString> = full
            .iter()
            .filter(|id| kept.contains(id.as_bytes()))
            .cloned()
            .collect();
        prop_assert_eq!(&filtered, &part, "adding ids moved the others");
        // And removing some from the full set leaves the rest in place.
        let rest: BTreeSet<Vec<u8>> = all.difference(&others).cloned().collect();
        let reordered: Vec<OsString> = full
            .into_iter()
            .filter(|id| rest.contains(id.as_bytes()))
            .collect();
        prop_assert_eq!(reordered, order(sorted(&rest), Order::Hash));
    }
}

fn spec(window: Duration, order: Order, only: Vec<OsString>, shard: Option<Shard>) -> Spec {
    Spec {
        instances: "/srv/instances".into(),
        name: "job".into(),
        lock_dir: "/run/scatter/job".into(),
        window,
        order,
        only,
        shard,
        template: Template::parse(&["task".into(), "{}".into()]).unwrap(),
        program: None,
        request: None,
        filter: scatter::filter::Filter::default(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The function that decides what cron runs: every discovered id of the
    /// shard exactly once, at offset slot × W/N, in the chosen order, and
    /// the argv each task gets holds its id whole.
    #[test]
    fn plan_build_runs_each_id_once_at_its_slot(
        ids in id_set(120),
        w in window(),
        hash in any::<bool>(),
        shard in proptest::option::of((1u32..6).prop_flat_map(|n| (0..n, Just(n)))),
    ) {
        let order_by = if hash { Order::Hash } else { Order::Name };
        let shard = shard.map(|(k, n)| Shard::new(k, n).unwrap());
        let plan = Plan::build(&spec(w, order_by, Vec::new(), shard), sorted(&ids)).unwrap();
        let mine: Vec<OsString> = sorted(&ids)
            .into_iter()
            .filter(|id| shard.is_none_or(|s| s.owns(id)))
            .collect();
        let expected = order(mine, order_by);
        let n = expected.len();
        prop_assert_eq!(plan.entries.len(), n);
        for (k, entry) in plan.entries.iter().enumerate() {
            prop_assert_eq!(entry.slot, k);
            prop_assert_eq!(&entry.id, &expected[k]);
            prop_assert_eq!(entry.offset, offset(w, k, n));
            prop_assert!(entry.offset < w);
            prop_assert_eq!(plan.argv(entry), vec![OsString::from("task"), entry.id.clone()]);
        }
        prop_assert!(!plan.manual);
    }

    /// `--only` runs exactly the ids asked for, once each, all at once,
    /// whatever the shard; an id that is not an instance is refused.
    #[test]
    fn plan_build_with_only_starts_the_chosen_ids_at_once(
        ids in id_set(60).prop_filter("some ids", |s| !s.is_empty()),
        picks in vec(any::<prop::sample::Index>(), 1..6),
        stranger in id_of(12),
    ) {
        let all = sorted(&ids);
        let only: Vec<OsString> = picks.iter().map(|i| i.get(&all).clone()).collect();
        let shard = Some(Shard::new(0, 7).unwrap());
        let plan = Plan::build(&spec(Duration::from_secs(60), Order::Hash, only.clone(), shard), all.clone()).unwrap();
        let mut want: Vec<OsString> = Vec::new();
        for id in only {
            if !want.contains(&id) {
                want.push(id);
            }
        }
        prop_assert_eq!(plan.entries.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), want);
        prop_assert!(plan.entries.iter().all(|e| e.offset == Duration::ZERO));
        prop_assert!(plan.manual);
        prop_assert_eq!(plan.shard, None);
        if !ids.contains(&stranger) && is_valid_id(&stranger) {
            let bad = spec(Duration::from_secs(60), Order::Name, vec![OsString::from_vec(stranger)], None);
            prop_assert!(Plan::build(&bad, all).is_err());
        }
    }
}

/// Percent-decodes `%XX` escapes; any other byte is itself.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap(), 16).unwrap(),
            );
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// --url: whatever its bytes, an id is one path segment and one query
    /// value, decodes back to itself, and leaves the host alone; in a header
    /// value it holds no byte that could end the line.
    #[test]
    fn url_ids_are_one_segment_and_decode_back(id in any_id()) {
        let template = scatter::http::RequestTemplate::parse(
            "http://127.0.0.1:8080/{}/check.php?t={id}&x=1",
            None,
            &["X-Tenant: {}".to_string()],
            None,
        )
        .unwrap();
        let req = template.expand(OsStr::from_bytes(&id));
        let rest = req.url.strip_prefix("http://127.0.0.1:8080/").unwrap();
        prop_assert!(rest.bytes().all(|b| b.is_ascii_graphic()), "{}", rest);
        let (path, query) = rest.split_once('?').unwrap();
        let segments: Vec<&str> = path.split('/').collect();
        prop_assert_eq!(segments.len(), 2);
        prop_assert_eq!(segments[1], "check.php");
        prop_assert_eq!(percent_decode(segments[0]), id.clone());
        let values: Vec<&str> = query.split('&').collect();
        prop_assert_eq!(values.len(), 2);
        prop_assert_eq!(percent_decode(values[0].strip_prefix("t=").unwrap()), id.clone());
        let header = &req.headers[0].1;
        prop_assert!(!header.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)));
        prop_assert_eq!(percent_decode(std::str::from_utf8(header).unwrap()), id);
    }
}
