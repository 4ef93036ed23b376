//! `--include GLOB` and `--exclude GLOB`: which instance directories are
//! tenants at all.
//!
//! An instance runs if it matches some include (when any are given) and no
//! exclude. Globs are shell-style, through `globset`: `*`, `?`, `[a-z]`,
//! `{a,b}`, with `\` escaping. They match the id's raw bytes, so an id that
//! is not UTF-8 can still be matched (by `*` or `?`), and a `*` matches a
//! leading `.`, though hidden entries never become instances anyway. A glob
//! that does not parse is a usage error before anything starts.

use std::ffi::OsStr;
use std::path::Path;

use anyhow::Result;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::display::quoted;
use crate::exit::Fatal;

/// The compiled `--include` and `--exclude` globs.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
    /// The globs as given, for messages: (`--include` or `--exclude`, glob).
    given: Vec<(&'static str, String)>,
}

impl Filter {
    /// Compiles the globs; one that does not parse is a usage error naming
    /// it.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Filter> {
        let mut given = Vec::new();
        let include = compile("--include", include, &mut given)?;
        let exclude = compile("--exclude", exclude, &mut given)?;
        Ok(Filter {
            include,
            exclude,
            given,
        })
    }

    /// Whether `id` is an instance to run: [`Filter::why_not`]'s answer,
    /// without finding every matching glob and naming one.
    pub fn admits(&self, id: &OsStr) -> bool {
        let path = Path::new(id);
        !self.exclude.as_ref().is_some_and(|e| e.is_match(path))
            && self.include.as_ref().is_none_or(|i| i.is_match(path))
    }

    /// Why `id` is left out, in words naming the flag (`--exclude 'lost+found'`
    /// or `no --include matches it`); `None` if it is admitted.
    pub fn why_not(&self, id: &OsStr) -> Option<String> {
        let path = Path::new(id);
        if let Some(exclude) = &self.exclude {
            let hits = exclude.matches(path);
            if let Some(first) = hits.first() {
                let glob = self
                    .given
                    .iter()
                    .filter(|(flag, _)| *flag == "--exclude")
                    .nth(*first)
                    .map_or(String::new(), |(_, g)| g.clone());
                return Some(format!("--exclude {}", quoted(glob)));
            }
        }
        match &self.include {
            Some(include) if !include.is_match(path) => Some("no --include matches it".into()),
            _ => None,
        }
    }

    /// The globs as given, for the dry run: `--include 'a*' --exclude x`.
    pub fn describe(&self) -> String {
        self.given
            .iter()
            .map(|(flag, glob)| format!("{flag} {}", quoted(glob)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn compile(
    flag: &'static str,
    globs: &[String],
    given: &mut Vec<(&'static str, String)>,
) -> Result<Option<GlobSet>> {
    if globs.is_empty() {
        return Ok(None);
    }
    let mut set = GlobSetBuilder::new();
    for glob in globs {
        let compiled = GlobBuilder::new(glob)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|err| {
                Fatal::usage(format!("{flag} {}: {}", quoted(glob), err.kind()))
                    .hint("a glob is shell-style: *, ?, [abc], {a,b}; quote it so the shell does not expand it first")
            })?;
        set.add(compiled);
        given.push((flag, glob.clone()));
    }
    let set = set
        .build()
        .map_err(|err| Fatal::usage(format!("{flag}: {err}")))?;
    Ok(Some(set))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    fn f(include: &[&str], exclude: &[&str]) -> Filter {
        let s = |v: &[&str]| v.iter().map(|g| g.to_string()).collect::<Vec<_>>();
        Filter::new(&s(include), &s(exclude)).unwrap()
    }

    #[test]
    fn include_then_exclude() {
        let none = f(&[], &[]);
        assert!(none.admits(OsStr::new("anything")));
        let ex = f(&[], &["lost+found", "_*"]);
        assert!(!ex.admits(OsStr::new("lost+found")));
        assert!(!ex.admits(OsStr::new("_template")));
        assert!(ex.admits(OsStr::new("acme")));
        assert_eq!(
            ex.why_not(OsStr::new("_template")).unwrap(),
            "--exclude $'_*'"
        );
        let both = f(&["a*", "b?"], &["ab*"]);
        assert!(both.admits(OsStr::new("acme")));
        assert!(both.admits(OsStr::new("bc")));
        assert!(!both.admits(OsStr::new("bcd")));
        assert!(!both.admits(OsStr::new("abba")));
        assert_eq!(
            both.why_not(OsStr::new("zeta")).unwrap(),
            "no --include matches it"
        );
    }

    #[test]
    fn hostile_ids_are_matched_by_their_bytes() {
        let star = f(&["*"], &["*\n*"]);
        assert!(star.admits(OsStr::from_bytes(b"caf\xe9")));
        assert!(!star.admits(OsStr::new("new\nline")));
        assert!(f(&["x'*"], &[]).admits(OsStr::new("x'; rm -rf ~")));
        assert!(f(&["caf?"], &[]).admits(OsStr::from_bytes(b"caf\xe9")));
    }

    #[test]
    fn admits_agrees_with_why_not() {
        let filters = [
            f(&[], &[]),
            f(&["a*"], &[]),
            f(&[], &["lost+found", "_*"]),
            f(&["a*", "b?"], &["ab*", "*x"]),
        ];
        let ids = ["a", "ab", "abx", "b1", "b12", "lost+found", "_t", "x", ""];
        for filter in &filters {
            for id in ids {
                let id = OsStr::new(id);
                assert_eq!(filter.admits(id), filter.why_not(id).is_none(), "{id:?}");
            }
        }
    }

    #[test]
    fn a_bad_glob_is_a_usage_error_naming_it() {
        let err = Filter::new(&["a[".to_string()], &[]).unwrap_err();
        assert_eq!(crate::exit::code_of(&err), crate::exit::USAGE);
        assert!(format!("{err:#}").contains("--include $'a['"), "{err:#}");
    }
}
