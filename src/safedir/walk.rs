//! Reaching a directory one component at a time, and the rules a symlink
//! and the directory reached must meet.

use std::ffi::{OsStr, OsString};
use std::io::{self};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};
use rustix::fs::{AtFlags, CWD, FileType, Mode, Stat};
use rustix::io::Errno;

use crate::display::quoted;
use crate::exit::Fatal;

use super::*;

/// The walk behind [`SafeDir::create`] and [`SafeDir::existing`].
pub(super) fn walk(path: &Path, kind: DirKind, create: bool) -> Result<Option<SafeDir>> {
    if !path.is_absolute() {
        return Err(Fatal::usage(format!(
            "{} {} is not an absolute path",
            kind.what,
            quoted(path)
        ))
        .into());
    }
    let mut pending = Vec::new();
    push_components(&mut pending, path);
    let mut fd = open_root(kind, path)?;
    // Where the walk is, for messages: the path as resolved so far.
    let mut at = PathBuf::from("/");
    let (mut links, mut retries, mut created) = (0, 0, 0);
    while let Some(name) = pending.pop() {
        if name == ".." {
            fd = rustix::fs::openat(&fd, "..", PATH_FLAGS, Mode::empty())
                .map_err(io::Error::from)
                .with_context(|| format!("cannot open {}", quoted(at.join(".."))))?;
            at.pop();
            continue;
        }
        let here = at.join(&name);
        match rustix::fs::openat(&fd, &name, PATH_FLAGS, Mode::empty()) {
            Ok(next) => {
                fd = next;
                at = here;
                continue;
            }
            Err(Errno::NOENT) if create => {
                match rustix::fs::mkdirat(&fd, &name, Mode::from_raw_mode(kind.mode)) {
                    Ok(()) if created < MAX_CREATED => {
                        // Open what was just made, by the same rules.
                        created += 1;
                        pending.push(name);
                        continue;
                    }
                    // Made by someone else meanwhile: a change, as below.
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(err) => return Err(cannot_create(kind, path, &here, err)),
                }
            }
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::NOTDIR | Errno::LOOP) => {
                let st = match rustix::fs::statat(&fd, &name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => Some(st),
                    Err(Errno::NOENT) => None,
                    Err(err) => {
                        return Err(io::Error::from(err))
                            .with_context(|| open_failed(kind, path, &here));
                    }
                };
                match st.map(|st| (FileType::from_raw_mode(st.st_mode), st)) {
                    Some((FileType::Symlink, st)) => {
                        links += 1;
                        if links > MAX_SYMLINKS {
                            return Err(refusal(
                                kind,
                                path,
                                &here,
                                &format!("leads through more than {MAX_SYMLINKS} symlinks"),
                            ));
                        }
                        check_link(&fd, st.st_uid, kind, path, &here)?;
                        let target = rustix::fs::readlinkat(&fd, &name, Vec::new())
                            .map_err(io::Error::from)
                            .with_context(|| open_failed(kind, path, &here))?;
                        let target = PathBuf::from(OsString::from_vec(target.into_bytes()));
                        if target.as_os_str().is_empty() {
                            return Err(refusal(kind, path, &here, "is an empty symlink"));
                        }
                        if target.is_absolute() {
                            fd = open_root(kind, path)?;
                            at = PathBuf::from("/");
                        }
                        push_components(&mut pending, &target);
                        continue;
                    }
                    Some((FileType::Directory, _)) | None => {}
                    Some((other, _)) => {
                        return Err(refusal(
                            kind,
                            path,
                            &here,
                            &format!("is not a directory ({})", type_name(other)),
                        ));
                    }
                }
            }
            Err(err) => {
                return Err(io::Error::from(err)).with_context(|| open_failed(kind, path, &here));
            }
        }
        // Changed under us: look at the same name again, a few times.
        retries += 1;
        if retries > MAX_RETRIES {
            return Err(keeps_changing(kind, &here));
        }
        pending.push(name);
    }
    // Checked on the descriptor the walk ended on, so before anything is
    // asked of the directory itself (a user facing root's 0750 directory
    // learns whose it is, not just EACCES).
    let st = rustix::fs::fstat(&fd)
        .map_err(io::Error::from)
        .with_context(|| open_failed(kind, path, path))?;
    check_dir(kind, path, st.st_uid, st.st_mode)?;
    // O_PATH descriptors carried the walk through directories we may only
    // search; the handle itself must list and fsync. "." of the checked
    // descriptor is the same directory, whatever happened to its path.
    let dir = rustix::fs::openat(&fd, ".", DIR_FLAGS, Mode::empty())
        .map_err(io::Error::from)
        .with_context(|| open_failed(kind, path, path))?;
    Ok(Some(SafeDir {
        fd: dir,
        path: path.to_path_buf(),
        kind,
        reading: false,
    }))
}

fn open_root(kind: DirKind, path: &Path) -> Result<OwnedFd> {
    rustix::fs::openat(CWD, "/", PATH_FLAGS, Mode::empty())
        .map_err(io::Error::from)
        .with_context(|| open_failed(kind, path, Path::new("/")))
}

/// Pushes the components of `path` onto `pending`, the first one last (so
/// it is popped first). `/` and `.` are dropped: the caller restarts from
/// the root for an absolute path.
fn push_components(pending: &mut Vec<OsString>, path: &Path) {
    for c in path.components().rev() {
        match c {
            Component::Normal(name) => pending.push(name.to_os_string()),
            Component::ParentDir => pending.push(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
}

/// Whether `name` is one plain path component: not empty, not `.` or `..`,
/// and without a `/`. Every instance id and every file name scatter makes
/// inside a directory is one.
pub fn is_one_component(name: &OsStr) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty() && !bytes.contains(&b'/') && bytes != b"." && bytes != b".."
}

/// Refuses a name that is not one plain path component.
pub(super) fn component(name: &OsStr) -> io::Result<&OsStr> {
    if !is_one_component(name) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a file name", quoted(name)),
        ));
    }
    Ok(name)
}

pub(super) fn is(st: &Stat, t: FileType) -> bool {
    FileType::from_raw_mode(st.st_mode) == t
}

/// Refuses to follow a symlink that anyone but root and the running user
/// could change, or replace, because of who owns it or the directory
/// holding it.
fn check_link(
    holder: &OwnedFd,
    link_uid: u32,
    kind: DirKind,
    path: &Path,
    link: &Path,
) -> Result<()> {
    let dir = rustix::fs::fstat(holder)
        .map_err(io::Error::from)
        .with_context(|| open_failed(kind, path, link.parent().unwrap_or(link)))?;
    let Some(why) = link_problem(link_uid, dir.st_uid, dir.st_mode, crate::platform::euid()) else {
        return Ok(());
    };
    let msg = format!("{why}; refusing to follow it");
    Err(Fatal::usage(subject(kind, path, link) + " " + &msg)
        .hint(format!(
            "a symlink that another user can change or replace could send scatter's files anywhere; use the directory it leads to ({}DIR), or a path whose links only root or this user can change",
            kind.flag
        ))
        .into())
}

/// What is wrong with following a symlink owned by `link_uid` in a
/// directory owned by `dir_uid` with `dir_mode`, for user `me`; `None` if
/// only root and `me` can change it.
pub(super) fn link_problem(link_uid: u32, dir_uid: u32, dir_mode: u32, me: u32) -> Option<String> {
    let trusted = |uid: u32| uid == me || uid == 0;
    if !trusted(link_uid) {
        return Some(format!("is a symlink owned by uid {link_uid}"));
    }
    if !trusted(dir_uid) {
        return Some(format!(
            "is a symlink in a directory owned by uid {dir_uid}, who can replace it"
        ));
    }
    if dir_mode & 0o022 != 0 {
        return Some(format!(
            "is a symlink in a directory that other users can write to (mode {:o})",
            dir_mode & 0o7777
        ));
    }
    None
}

/// What is wrong with a directory owned by `uid` with `mode` for user
/// `me`, by the private rule; `None` if nothing.
pub(super) fn dir_problem(uid: u32, mode: u32, me: u32) -> Option<DirProblem> {
    if uid != me {
        Some(DirProblem::Owner(uid))
    } else if mode & 0o022 != 0 {
        Some(DirProblem::Writable(mode & 0o7777))
    } else {
        None
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum DirProblem {
    Owner(u32),
    Writable(u32),
}

pub(super) fn check_dir(kind: DirKind, path: &Path, uid: u32, mode: u32) -> Result<()> {
    if kind.shared {
        return Ok(());
    }
    let me = crate::platform::euid();
    let shown = quoted(path);
    let sub = quoted(path.join("scatter"));
    let flag = kind.flag;
    match dir_problem(uid, mode, me) {
        None => Ok(()),
        Some(DirProblem::Owner(uid)) => Err(Fatal::usage(format!(
            "{} {shown} is owned by uid {uid}, not by uid {me} running scatter",
            kind.what
        ))
        .hint(format!(
            "another user could plant, hold or move files there; use a directory this user owns, via {flag}DIR"
        ))
        .into()),
        Some(DirProblem::Writable(mode)) => {
            // A sticky world-writable directory such as /tmp or /run/lock is
            // shared on purpose; suggest a private subdirectory, not a chmod.
            let hint = if mode & 0o1000 != 0 {
                format!("anyone can write there; use a private subdirectory, such as {flag}{sub}")
            } else {
                format!(
                    "anyone who can write there can plant files; use a private subdirectory, such as {flag}{sub} (scatter creates it), or run `chmod go-w {shown}`"
                )
            };
            Err(Fatal::usage(format!(
                "{} {shown} is group- or world-writable (mode {mode:o})",
                kind.what
            ))
            .hint(hint)
            .into())
        }
    }
}

/// "lock directory /a/b" when the problem is the path itself, or
/// "lock directory /a/b/c: /a/b" when it is a component of it.
fn subject(kind: DirKind, path: &Path, here: &Path) -> String {
    if here == path {
        format!("{} {}", kind.what, quoted(path))
    } else {
        format!("{} {}: {}", kind.what, quoted(path), quoted(here))
    }
}

fn refusal(kind: DirKind, path: &Path, here: &Path, why: &str) -> anyhow::Error {
    Fatal::usage(format!("{} {why}", subject(kind, path, here)))
        .hint(format!("use a real directory, with {}DIR", kind.flag))
        .into()
}

fn open_failed(kind: DirKind, path: &Path, here: &Path) -> Fatal {
    let detail = if here == path {
        String::new()
    } else {
        format!(" (at {})", quoted(here))
    };
    Fatal::usage(format!(
        "cannot open {} {}{detail}",
        kind.what,
        quoted(path)
    ))
}

pub(super) fn cannot_create(kind: DirKind, path: &Path, here: &Path, err: Errno) -> anyhow::Error {
    let detail = if here == path {
        String::new()
    } else {
        format!(" (at {})", quoted(here))
    };
    anyhow::Error::from(io::Error::from(err)).context(
        Fatal::usage(format!(
            "cannot create {} {}{detail}",
            kind.what,
            quoted(path)
        ))
        .hint(format!(
            "choose a directory this user can create, with {}DIR",
            kind.flag
        )),
    )
}

pub(super) fn keeps_changing(kind: DirKind, here: &Path) -> anyhow::Error {
    Fatal::usage(format!(
        "{} {} keeps changing while scatter opens it",
        kind.what,
        quoted(here)
    ))
    .into()
}

pub(super) fn vanished(path: &Path, kind: DirKind) -> anyhow::Error {
    Fatal::usage(format!(
        "{} {} vanished while scatter created it",
        kind.what,
        quoted(path)
    ))
    .into()
}
