//! Fuzzes placeholder parsing and expansion (`scatter::template`).
//!
//! The input is split on NUL (which neither an argument, an id nor a path can
//! contain): the first part is the id (`/` dropped), the second the path, the
//! rest the argv (at most 16 arguments). Then:
//!
//! * parsing never panics, and agrees with a reference model of the README's
//!   rules on whether the argv is accepted;
//! * when it is accepted, expanding keeps argv's length and gives exactly
//!   the model's bytes for the fuzzed id and path (which may contain `{}`,
//!   `{path}`, newlines, invalid UTF-8: single pass, no re-expansion);
//! * expanding with sentinel id and path (they contain NUL, so they cannot
//!   come from the template) yields one sentinel per `{}`/`{id}`/`{path}`
//!   the model found in the template, no more, no fewer;
//! * `fixed_program` is set exactly when the command has no placeholder;
//! * when it is refused, the argv is empty or starts with an empty command,
//!   or the message names a `{word}` that occurs in the argv, the same one
//!   the model stops at.

#![no_main]

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use scatter::template::Template;

const ID_SENTINEL: &[u8] = b"\0<ID>\0";
const PATH_SENTINEL: &[u8] = b"\0<PATH>\0";

/// The model's reading of one argument.
struct Model {
    /// The expansion with the sentinels.
    expanded: Vec<u8>,
    ids: usize,
    paths: usize,
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The README's rules, written as a slice-pattern scanner: `{{` and `}}` are
/// braces; `{` + word + `}` is `{}`/`{id}`/`{path}` or an error naming the
/// word; every other byte is itself. Err carries the unknown word.
fn model(arg: &[u8]) -> Result<Model, Vec<u8>> {
    let mut m = Model {
        expanded: Vec::new(),
        ids: 0,
        paths: 0,
    };
    let mut rest = arg;
    while !rest.is_empty() {
        rest = match rest {
            [b'{', b'{', tail @ ..] => {
                m.expanded.push(b'{');
                tail
            }
            [b'}', b'}', tail @ ..] => {
                m.expanded.push(b'}');
                tail
            }
            [b'{', tail @ ..] => {
                let end = tail.iter().position(|&c| !is_word(c));
                match end {
                    Some(end) if tail[end] == b'}' => {
                        match &tail[..end] {
                            b"" | b"id" => {
                                m.expanded.extend_from_slice(ID_SENTINEL);
                                m.ids += 1;
                            }
                            b"path" => {
                                m.expanded.extend_from_slice(PATH_SENTINEL);
                                m.paths += 1;
                            }
                            word => return Err(word.to_vec()),
                        }
                        &tail[end + 1..]
                    }
                    _ => {
                        m.expanded.push(b'{');
                        tail
                    }
                }
            }
            [c, tail @ ..] => {
                m.expanded.push(*c);
                tail
            }
            [] => unreachable!(),
        };
    }
    Ok(m)
}

/// Replaces the sentinels in the model's expansion by the real id and path.
fn substitute(expanded: &[u8], id: &[u8], path: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = expanded;
    while !rest.is_empty() {
        if let Some(tail) = rest.strip_prefix(ID_SENTINEL) {
            out.extend_from_slice(id);
            rest = tail;
        } else if let Some(tail) = rest.strip_prefix(PATH_SENTINEL) {
            out.extend_from_slice(path);
            rest = tail;
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    count(haystack, needle) > 0
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|b| *b == 0);
    let id: Vec<u8> = parts
        .next()
        .unwrap_or_default()
        .iter()
        .copied()
        .filter(|b| *b != b'/')
        .collect();
    let path = parts.next().unwrap_or_default().to_vec();
    let args: Vec<Vec<u8>> = parts.take(16).map(<[u8]>::to_vec).collect();
    let argv: Vec<OsString> = args.iter().cloned().map(OsString::from_vec).collect();

    let models: Vec<Result<Model, Vec<u8>>> = args.iter().map(|a| model(a)).collect();
    let first_error = models.iter().find_map(|m| m.as_ref().err());
    let empty_command = args.first().is_none_or(Vec::is_empty);

    match Template::parse(&argv) {
        Ok(t) => {
            assert!(!empty_command, "empty command accepted");
            assert!(
                first_error.is_none(),
                "accepted, but the model refuses {{{}}}",
                String::from_utf8_lossy(first_error.unwrap())
            );
            let models: Vec<Model> = models.into_iter().map(Result::unwrap).collect();

            // The fuzzed id and path, inserted verbatim.
            let got = t.expand(OsStr::from_bytes(&id), Path::new(OsStr::from_bytes(&path)));
            assert_eq!(got.len(), args.len(), "argv length changed");
            for (g, m) in got.iter().zip(&models) {
                assert_eq!(g.as_bytes(), substitute(&m.expanded, &id, &path));
            }

            // Every placeholder of the template, accounted for.
            let marked = t.expand(
                OsStr::from_bytes(ID_SENTINEL),
                Path::new(OsStr::from_bytes(PATH_SENTINEL)),
            );
            for (g, m) in marked.iter().zip(&models) {
                let g = g.as_bytes();
                assert_eq!(count(g, ID_SENTINEL), m.ids, "id placeholders");
                assert_eq!(count(g, PATH_SENTINEL), m.paths, "path placeholders");
                assert_eq!(g, m.expanded);
            }

            let fixed = models[0].ids + models[0].paths == 0;
            assert_eq!(
                t.fixed_program(),
                fixed.then(|| OsString::from_vec(models[0].expanded.clone()))
            );
        }
        Err(e) => {
            if empty_command {
                return;
            }
            let want = first_error.expect("refused, but the model accepts it");
            let named = format!("{{{}}}", String::from_utf8_lossy(want));
            assert!(
                e.message.contains(&named),
                "message {:?} should name {named}",
                e.message
            );
            assert!(
                args.iter().any(|a| contains(a, named.as_bytes())),
                "{named} is not in the argv"
            );
            assert!(!want.is_empty() && want.iter().all(|&c| is_word(c)));
            assert!(want != b"id" && want != b"path");
        }
    }
});
