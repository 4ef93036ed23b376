//! Finding the instances: the direct subdirectories of `--instances`.
//!
//! A symlink to a directory counts as an instance; hidden entries (a leading
//! `.`) are ignored; plain files, broken symlinks and symlink loops are
//! skipped with a warning naming them. Names are kept as raw bytes so that
//! spaces, newlines, a leading `-` or invalid UTF-8 survive exactly. The
//! result is sorted bytewise, which makes every later step deterministic.
//!
//! The listing is one `readdir` of the instances directory, using the entry
//! types it returns; only symlinks cost a `stat`. (`walkdir` with
//! `max_depth(1)` opens every subdirectory it yields before checking the
//! depth: three wasted system calls per instance, and a warning for every
//! tenant directory scatter may not read.)

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context, Result};
use log::{debug, warn};

use crate::display::quoted;
use crate::exit::Fatal;

/// Lists the instance ids under `dir`, sorted bytewise.
pub fn discover(dir: &Path) -> Result<Vec<OsString>> {
    check_dir(dir)?;
    let entries = std::fs::read_dir(dir).with_context(|| {
        Fatal::no_input(format!("cannot read instances directory {}", quoted(dir)))
            .hint("check its permissions, or run scatter as the user that owns it")
    })?;
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| {
            Fatal::no_input(format!("cannot read instances directory {}", quoted(dir)))
        })?;
        let name = entry.file_name();
        if name.as_bytes().starts_with(b".") {
            debug!("ignoring hidden entry {}", quoted(&name));
            continue;
        }
        let file_type = match entry.file_type() {
            Ok(t) => t,
            Err(err) => {
                skip(dir, &name, &err.to_string());
                continue;
            }
        };
        if file_type.is_dir() {
            ids.push(name);
        } else if file_type.is_symlink() {
            match std::fs::metadata(entry.path()) {
                Ok(meta) if meta.is_dir() => ids.push(name),
                Ok(_) => skip(dir, &name, "a symlink to something that is not a directory"),
                Err(err) => skip(
                    dir,
                    &name,
                    &format!("a broken symlink ({})", link_error(&err)),
                ),
            }
        } else {
            skip(dir, &name, "not a directory");
        }
    }
    ids.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(ids)
}

fn skip(dir: &Path, name: &OsStr, why: &str) {
    warn!("ignoring {} in {}: {why}", quoted(name), quoted(dir));
}

fn link_error(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(code) if code == rustix::io::Errno::LOOP.raw_os_error() => "a symlink loop".into(),
        _ => err.to_string(),
    }
}

fn check_dir(dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(
            Fatal::no_input(format!("instances path {} is not a directory", quoted(dir)))
                .hint(
                    "--instances must name the directory that holds one subdirectory per instance",
                )
                .into(),
        ),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Err(Fatal::no_input(format!(
            "no such instances directory: {}",
            quoted(dir)
        ))
        .hint("check --instances (or SCATTER_INSTANCES); it must exist before scatter runs")
        .into()),
        Err(err) => Err(err).with_context(|| {
            Fatal::no_input(format!("cannot access instances directory {}", quoted(dir)))
                .hint("check the permissions of the directory and its parents")
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn finds_dirs_and_dir_symlinks_sorted() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        for name in ["b", "a", "-dash", "with space", ".hidden"] {
            std::fs::create_dir(d.join(name)).unwrap();
        }
        std::fs::write(d.join("file"), "").unwrap();
        symlink(d.join("a"), d.join("link-to-dir")).unwrap();
        symlink(d.join("file"), d.join("link-to-file")).unwrap();
        symlink(d.join("missing"), d.join("broken")).unwrap();
        symlink(d.join("loop"), d.join("loop")).unwrap();
        let ids = discover(d).unwrap();
        let names: Vec<_> = ids.iter().map(|s| s.to_str().unwrap()).collect();
        assert_eq!(names, ["-dash", "a", "b", "link-to-dir", "with space"]);
    }

    #[test]
    fn missing_dir_is_no_input() {
        let tmp = tempfile::tempdir().unwrap();
        let err = discover(&tmp.path().join("nope")).unwrap_err();
        assert_eq!(crate::exit::code_of(&err), crate::exit::NO_INPUT);
        let file = tmp.path().join("f");
        std::fs::write(&file, "").unwrap();
        let err = discover(&file).unwrap_err();
        assert_eq!(crate::exit::code_of(&err), crate::exit::NO_INPUT);
    }

    #[test]
    fn empty_dir_is_fine() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(discover(tmp.path()).unwrap().is_empty());
    }
}
