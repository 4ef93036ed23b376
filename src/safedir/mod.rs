//! Directories scatter writes into, and the files in them, opened so that no
//! other local user can redirect, swap or block them.
//!
//! scatter runs as root over trees that tenants control, so every path it
//! writes through is a target: a symlink planted where a directory should be
//! sends root's writes (and `--keep-runs` deletions) anywhere, a FIFO planted
//! where a file should be blocks `open` forever, and a directory swapped
//! between a check and its use defeats the check. This module owns the
//! defence. A [`SafeDir`] is a directory descriptor (`O_DIRECTORY|O_CLOEXEC`)
//! plus its path for messages, obtained by walking the absolute path one
//! component at a time from `/` with `openat(O_NOFOLLOW)`. A symlink met on
//! the way is followed (at most [`MAX_SYMLINKS`] of them) only if nobody but
//! root and the running user can change it: the link belongs to one of them,
//! and so does the directory holding it, which no group or other may write
//! (so a link in sticky `/tmp` or `/run/lock` is refused, while root's
//! `/var/lock` → `/run/lock` is fine). Missing components are created on
//! request with the caller's mode, and the directory reached is checked with
//! `fstat` on the descriptor: owned by the running user and not writable by
//! group or others, unless the caller says it is shared (node_exporter's
//! textfile directory). scatter's own subdirectories (`runs/`, a job's lock
//! directory) are never followed through a symlink at all.
//!
//! Everything afterwards goes through the descriptor, so renaming or
//! re-pointing anything in the path after the walk changes nothing: files are
//! opened with `openat(O_NOFOLLOW|O_NONBLOCK)` and checked with `fstat`
//! (a regular file of ours with one link) before anything destructive;
//! replacing a file is a temporary file created `O_EXCL|O_NOFOLLOW`, fsync,
//! `renameat` over the target (a symlink there is replaced, never followed)
//! and an fsync of the directory; listing reads the descriptor and deleting
//! is `unlinkat` of a name just seen to be a regular file.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::display::quoted;
use crate::exit::Fatal;

#[cfg(test)]
mod tests;
mod walk;

pub use walk::is_one_component;
use walk::*;

/// How many symlinks one walk follows, as the kernel's own limit.
pub const MAX_SYMLINKS: usize = 40;

/// How often a walk tries again when a component changes under it (created
/// or removed by someone else at the same moment).
const MAX_RETRIES: usize = 8;

/// How many directories one walk may create: far more than any real path
/// has, and a bound should someone remove each one as it appears.
const MAX_CREATED: usize = 256;

/// What a directory is for: names it in messages and hints, and sets the
/// mode of what is created and whether others may own or write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirKind {
    /// How messages name it: `"lock directory"`.
    pub what: &'static str,
    /// The flag that chooses it, as written before a path in a hint:
    /// `"--lock-dir "`, `"--output dir="`.
    pub flag: &'static str,
    /// Mode of the components a walk creates (the umask applies).
    pub mode: u32,
    /// Another user may own it or write to it (node_exporter's textfile
    /// directory): only the symlink rule applies.
    pub shared: bool,
}

/// An open directory: every later operation is relative to its descriptor.
#[derive(Debug)]
pub struct SafeDir {
    fd: OwnedFd,
    path: PathBuf,
    kind: DirKind,
    /// Opened by [`SafeDir::for_reading`]: its children are not checked
    /// for ownership either.
    reading: bool,
}

/// Why a file in a [`SafeDir`] was not opened. Only what needed the file
/// fails; the caller decides what that is.
#[derive(Debug)]
pub enum FileError {
    /// Something scatter refuses to use is there (a symlink, FIFO,
    /// directory, a file of another user, a hard link, an oversized file);
    /// the message names it.
    Refused(String),
    /// The system call failed; the message names the file.
    Io(io::Error),
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::Refused(why) => f.write_str(why),
            FileError::Io(err) => write!(f, "{err}"),
        }
    }
}

impl std::error::Error for FileError {}

impl From<FileError> for io::Error {
    fn from(err: FileError) -> io::Error {
        match err {
            FileError::Refused(why) => io::Error::other(why),
            FileError::Io(err) => err,
        }
    }
}

const PATH_FLAGS: OFlags = OFlags::PATH
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NONBLOCK);
const FILE_FLAGS: OFlags = OFlags::NOFOLLOW
    .union(OFlags::NONBLOCK)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOCTTY);

/// Whether `dir` can serve as a directory of this kind: it exists and
/// passes the rules, or it does not exist yet and its nearest existing
/// ancestor would let us create it. Nothing is created; the reason it
/// cannot serve is returned for messages. Used to choose between a system
/// directory and a per-user fallback, so the dry run and the real run
/// choose the same.
pub fn usable_or_creatable(dir: &Path, kind: DirKind) -> std::result::Result<(), String> {
    match SafeDir::existing(dir, kind) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => {
            let mut probe = dir;
            while let Some(parent) = probe.parent() {
                probe = parent;
                if probe.exists() {
                    break;
                }
            }
            rustix::fs::access(
                probe,
                rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
            )
            .map_err(|e| format!("cannot create it in {}: {e}", quoted(probe)))
        }
        Err(err) => Err(format!("{err:#}")),
    }
}

impl SafeDir {
    /// Walks to `path` (absolute) from `/`, creating missing components with
    /// `kind.mode`, and checks the directory reached. A refusal is a
    /// [`Fatal`] usage error naming the path, with a hint.
    pub fn create(path: &Path, kind: DirKind) -> Result<SafeDir> {
        walk(path, kind, true)?.ok_or_else(|| vanished(path, kind))
    }

    /// Like [`SafeDir::create`], creating nothing: `None` if `path` or a
    /// component of it does not exist (the dry run, and directories scatter
    /// does not create).
    pub fn existing(path: &Path, kind: DirKind) -> Result<Option<SafeDir>> {
        walk(path, kind, false)
    }

    /// Opens `path` only to read from it (`scatter status`), following it as
    /// given and checking no owner: the caller chose it, and reads from it
    /// are bounded and never block. `None` if it does not exist.
    pub fn for_reading(path: &Path, kind: DirKind) -> Result<Option<SafeDir>> {
        match rustix::fs::openat(CWD, path, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => Ok(Some(SafeDir {
                fd,
                path: path.to_path_buf(),
                kind,
                reading: true,
            })),
            Err(Errno::NOENT) => Ok(None),
            Err(Errno::NOTDIR) => {
                Err(
                    Fatal::usage(format!("{} {} is not a directory", kind.what, quoted(path)))
                        .into(),
                )
            }
            Err(err) => Err(io::Error::from(err))
                .with_context(|| format!("cannot open {} {}", kind.what, quoted(path))),
        }
    }

    /// The path it was opened by, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of an entry, for messages.
    pub fn join(&self, name: impl AsRef<OsStr>) -> PathBuf {
        self.path.join(name.as_ref())
    }

    /// The subdirectory `name`, created (with the kind's mode) if missing.
    /// scatter's own subdirectories are never symlinks: one is refused,
    /// whoever owns it.
    pub fn create_child(&self, name: &OsStr) -> Result<SafeDir> {
        self.open_child(name, true)?
            .ok_or_else(|| vanished(&self.join(name), self.kind))
    }

    /// The subdirectory `name` if it exists, checked as [`create_child`]
    /// would; `None` if it does not exist.
    ///
    /// [`create_child`]: SafeDir::create_child
    pub fn child(&self, name: &OsStr) -> Result<Option<SafeDir>> {
        self.open_child(name, false)
    }

    fn open_child(&self, name: &OsStr, create: bool) -> Result<Option<SafeDir>> {
        let kind = self.kind;
        let path = self.join(name);
        let name = component(name)
            .map_err(|e| Fatal::usage(format!("{} {}: {e}", kind.what, quoted(&path))))?;
        for _ in 0..MAX_RETRIES {
            match rustix::fs::openat(&self.fd, name, PATH_FLAGS, Mode::empty()) {
                Ok(fd) => {
                    let context = || format!("cannot open {} {}", kind.what, quoted(&path));
                    if !self.reading {
                        let st = rustix::fs::fstat(&fd)
                            .map_err(io::Error::from)
                            .with_context(context)?;
                        check_dir(kind, &path, st.st_uid, st.st_mode)?;
                    }
                    let fd = rustix::fs::openat(&fd, ".", DIR_FLAGS, Mode::empty())
                        .map_err(io::Error::from)
                        .with_context(context)?;
                    return Ok(Some(SafeDir {
                        fd,
                        path,
                        kind,
                        reading: self.reading,
                    }));
                }
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(kind.mode)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(err) => return Err(cannot_create(kind, &path, &path, err)),
                    }
                }
                Err(Errno::NOENT) => return Ok(None),
                Err(Errno::NOTDIR | Errno::LOOP) => {
                    match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(st) if is(&st, FileType::Symlink) => {
                            return Err(Fatal::usage(format!(
                                "{} {} is a symlink; refusing to follow it",
                                kind.what,
                                quoted(&path)
                            ))
                            .hint(format!(
                                "scatter creates this directory itself; remove the link, and scatter makes a real directory there{}",
                                if self.reading { " on its next run" } else { "" }
                            ))
                            .into());
                        }
                        Ok(st) if !is(&st, FileType::Directory) => {
                            return Err(Fatal::usage(format!(
                                "{} {} is not a directory ({})",
                                kind.what,
                                quoted(&path),
                                type_name(FileType::from_raw_mode(st.st_mode))
                            ))
                            .into());
                        }
                        // Replaced under us: look again.
                        _ => {}
                    }
                }
                Err(err) => {
                    return Err(io::Error::from(err))
                        .with_context(|| format!("cannot open {} {}", kind.what, quoted(&path)));
                }
            }
        }
        Err(keeps_changing(kind, &path))
    }

    /// Opens a file scatter writes, creating it with `mode` if missing:
    /// `access` is the access mode (`O_RDWR`, `O_WRONLY|O_APPEND`). A symlink
    /// is not followed and a FIFO does not block; anything but a regular file
    /// of the running user with a single link is refused. Nothing is
    /// truncated: the caller does that, after this check.
    pub fn open_own(
        &self,
        name: &OsStr,
        what: &str,
        access: OFlags,
        mode: u32,
    ) -> std::result::Result<(File, Metadata), FileError> {
        let shown = quoted(self.join(name));
        let name = component(name).map_err(|e| FileError::Io(io::Error::other(e)))?;
        let flags = access | OFlags::CREATE | FILE_FLAGS;
        let file = match rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(mode)) {
            Ok(fd) => File::from(fd),
            Err(err) => return Err(self.open_error(name, what, &shown, err)),
        };
        let meta = stat_file(&file, what, &shown)?;
        if let Some(why) = own_file_problem(&meta, crate::platform::euid()) {
            return Err(FileError::Refused(format!("{what} {shown} {why}")));
        }
        Ok((file, meta))
    }

    /// Opens a file to read, if it is there: a symlink is not followed, a
    /// FIFO does not block, and anything but a regular file of at most
    /// `limit` bytes is refused. The result reads at most `limit` bytes
    /// even if the file grows.
    pub fn open_read(
        &self,
        name: &OsStr,
        what: &str,
        limit: u64,
    ) -> std::result::Result<Option<(io::Take<File>, Metadata)>, FileError> {
        let shown = quoted(self.join(name));
        let name = component(name).map_err(|e| FileError::Io(io::Error::other(e)))?;
        let file =
            match rustix::fs::openat(&self.fd, name, OFlags::RDONLY | FILE_FLAGS, Mode::empty()) {
                Ok(fd) => File::from(fd),
                Err(Errno::NOENT) => return Ok(None),
                Err(err) => return Err(self.open_error(name, what, &shown, err)),
            };
        let meta = stat_file(&file, what, &shown)?;
        if !meta.file_type().is_file() {
            return Err(not_regular(what, &shown, &meta));
        }
        if meta.len() > limit {
            return Err(FileError::Refused(format!(
                "{what} {shown} is {}, more than the {} scatter reads; refusing to read it",
                size(meta.len()),
                size(limit)
            )));
        }
        Ok(Some((file.take(limit), meta)))
    }

    /// Reads a whole file of at most `limit` bytes, as [`open_read`] opens
    /// it; `None` if it is not there.
    ///
    /// [`open_read`]: SafeDir::open_read
    pub fn read(
        &self,
        name: &OsStr,
        what: &str,
        limit: u64,
    ) -> std::result::Result<Option<Vec<u8>>, FileError> {
        let Some((mut file, meta)) = self.open_read(name, what, limit)? else {
            return Ok(None);
        };
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        file.read_to_end(&mut bytes).map_err(|e| {
            FileError::Io(io::Error::new(
                e.kind(),
                format!("cannot read {what} {}: {e}", quoted(self.join(name))),
            ))
        })?;
        Ok(Some(bytes))
    }

    /// Replaces `name` atomically with what `fill` writes: a new temporary
    /// file (`O_CREAT|O_EXCL|O_NOFOLLOW`, never an existing one), `mode`,
    /// fsync, `renameat` over `name` (replacing a symlink there, never
    /// following it), fsync of the directory.
    pub fn write_atomic(
        &self,
        name: &OsStr,
        mode: u32,
        fill: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> Result<()> {
        let target = self.join(name);
        let name = component(name).with_context(|| format!("cannot write {}", quoted(&target)))?;
        let (tmp, mut file) = self
            .create_temp(mode)
            .with_context(|| format!("cannot create a temporary file in {}", quoted(&self.path)))?;
        // The exact mode, whatever the umask.
        let written = rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))
            .map_err(io::Error::from)
            .and_then(|()| fill(&mut file))
            .and_then(|()| file.sync_all());
        drop(file);
        if let Err(err) = written {
            self.discard(&tmp);
            return Err(err).with_context(|| format!("cannot write {}", quoted(self.join(&tmp))));
        }
        if let Err(err) = rustix::fs::renameat(&self.fd, &tmp, &self.fd, name) {
            self.discard(&tmp);
            return Err(io::Error::from(err))
                .with_context(|| format!("cannot replace {}", quoted(&target)));
        }
        // Make the rename itself durable; the file is in place either way.
        let _ = rustix::fs::fsync(&self.fd);
        Ok(())
    }

    fn create_temp(&self, mode: u32) -> io::Result<(OsString, File)> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | FILE_FLAGS;
        let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
        for _ in 0..16 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .subsec_nanos();
            let name = OsString::from(format!(
                ".scatter-{}-{}-{nanos:08x}.tmp",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            match rustix::fs::openat(&self.fd, &name, flags, Mode::from_raw_mode(mode & 0o700)) {
                Ok(fd) => return Ok((name, File::from(fd))),
                // Someone else's file, or a planted link: pick another name.
                Err(Errno::EXIST) => last = io::Error::from(Errno::EXIST),
                Err(err) => return Err(err.into()),
            }
        }
        Err(last)
    }

    fn discard(&self, tmp: &OsStr) {
        let _ = rustix::fs::unlinkat(&self.fd, tmp, AtFlags::empty());
    }

    /// Every name in the directory but `.` and `..`, with the type the
    /// directory entry gives (which may be [`FileType::Unknown`]).
    pub fn entries(&self) -> Result<Vec<(OsString, FileType)>> {
        let context = || format!("cannot list {}", quoted(&self.path));
        let mut dir = rustix::fs::Dir::read_from(&self.fd)
            .map_err(io::Error::from)
            .with_context(context)?;
        let mut out = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(io::Error::from).with_context(context)?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                out.push((OsString::from_vec(name.to_vec()), entry.file_type()));
            }
        }
        Ok(out)
    }

    /// `lstat` of an entry: a symlink is described, never followed.
    pub fn stat(&self, name: &OsStr) -> io::Result<Stat> {
        let name = component(name)?;
        Ok(rustix::fs::statat(
            &self.fd,
            name,
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }

    /// Whether the entry is a regular file (not following a symlink).
    pub fn is_regular(&self, name: &OsStr) -> bool {
        self.stat(name)
            .is_ok_and(|st| is(&st, FileType::RegularFile))
    }

    /// Deletes `name` with `unlinkat` if it is a regular file; anything else
    /// is left alone. Returns whether it deleted.
    pub fn remove_file(&self, name: &OsStr) -> io::Result<bool> {
        let name = component(name)?;
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if is(&st, FileType::RegularFile) => {}
            Ok(_) | Err(Errno::NOENT) => return Ok(false),
            Err(err) => return Err(err.into()),
        }
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    /// Turns a failed `openat` of a file into a message saying what is
    /// there, if it is something scatter refuses.
    fn open_error(&self, name: &OsStr, what: &str, shown: &str, err: Errno) -> FileError {
        // ELOOP: a symlink under O_NOFOLLOW; EISDIR: a directory; ENXIO: a
        // FIFO without a reader (O_WRONLY|O_NONBLOCK) or a socket.
        if matches!(err, Errno::LOOP | Errno::ISDIR | Errno::NXIO)
            && let Ok(st) = rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)
        {
            return match FileType::from_raw_mode(st.st_mode) {
                FileType::Symlink => FileError::Refused(format!(
                    "{what} {shown} is a symlink; refusing to follow it"
                )),
                FileType::Directory => FileError::Refused(format!("{what} {shown} is a directory")),
                t => FileError::Refused(format!(
                    "{what} {shown} is not a regular file ({}); refusing to use it",
                    type_name(t)
                )),
            };
        }
        let err = io::Error::from(err);
        FileError::Io(io::Error::new(
            err.kind(),
            format!("cannot open {what} {shown}: {err}"),
        ))
    }
}

/// What is wrong with writing to a file, by its `fstat`; `None` if nothing.
fn own_file_problem(meta: &Metadata, me: u32) -> Option<String> {
    if !meta.file_type().is_file() {
        Some(format!(
            "is not a regular file ({}); refusing to use it",
            kind_of(meta)
        ))
    } else if meta.uid() != me {
        Some(format!(
            "is owned by uid {}, not by uid {me} running scatter",
            meta.uid()
        ))
    } else if meta.nlink() > 1 {
        Some(format!(
            "has {} hard links; refusing to write to a file with another name elsewhere",
            meta.nlink()
        ))
    } else {
        None
    }
}

fn stat_file(file: &File, what: &str, shown: &str) -> std::result::Result<Metadata, FileError> {
    file.metadata().map_err(|e| {
        FileError::Io(io::Error::new(
            e.kind(),
            format!("cannot stat {what} {shown}: {e}"),
        ))
    })
}

fn not_regular(what: &str, shown: &str, meta: &Metadata) -> FileError {
    FileError::Refused(format!(
        "{what} {shown} is not a regular file ({}); refusing to use it",
        kind_of(meta)
    ))
}

fn kind_of(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symlink"
    } else {
        "not a regular file"
    }
}

fn type_name(t: FileType) -> &'static str {
    match t {
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice | FileType::BlockDevice => "a device",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symlink",
        FileType::RegularFile => "a regular file",
        FileType::Unknown => "an unknown kind of file",
    }
}

/// `1.5 MiB`, `256 MiB`, `300 bytes`.
fn size(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    if bytes < MIB {
        format!("{bytes} bytes")
    } else if bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    }
}
