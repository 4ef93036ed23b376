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
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::display::quoted;
use crate::exit::Fatal;

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
        if let Some(why) = own_file_problem(&meta, euid()) {
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

/// The walk behind [`SafeDir::create`] and [`SafeDir::existing`].
fn walk(path: &Path, kind: DirKind, create: bool) -> Result<Option<SafeDir>> {
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

/// Refuses a name that is not one plain path component.
fn component(name: &OsStr) -> io::Result<&OsStr> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a file name", quoted(name)),
        ));
    }
    Ok(name)
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn is(st: &Stat, t: FileType) -> bool {
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
    let Some(why) = link_problem(link_uid, dir.st_uid, dir.st_mode, euid()) else {
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
fn link_problem(link_uid: u32, dir_uid: u32, dir_mode: u32, me: u32) -> Option<String> {
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
fn dir_problem(uid: u32, mode: u32, me: u32) -> Option<DirProblem> {
    if uid != me {
        Some(DirProblem::Owner(uid))
    } else if mode & 0o022 != 0 {
        Some(DirProblem::Writable(mode & 0o7777))
    } else {
        None
    }
}

#[derive(Debug, PartialEq, Eq)]
enum DirProblem {
    Owner(u32),
    Writable(u32),
}

fn check_dir(kind: DirKind, path: &Path, uid: u32, mode: u32) -> Result<()> {
    if kind.shared {
        return Ok(());
    }
    let me = euid();
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

fn cannot_create(kind: DirKind, path: &Path, here: &Path, err: Errno) -> anyhow::Error {
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

fn keeps_changing(kind: DirKind, here: &Path) -> anyhow::Error {
    Fatal::usage(format!(
        "{} {} keeps changing while scatter opens it",
        kind.what,
        quoted(here)
    ))
    .into()
}

fn vanished(path: &Path, kind: DirKind) -> anyhow::Error {
    Fatal::usage(format!(
        "{} {} vanished while scatter created it",
        kind.what,
        quoted(path)
    ))
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    const PRIVATE: DirKind = DirKind {
        what: "test directory",
        flag: "--test-dir ",
        mode: 0o755,
        shared: false,
    };
    const SHARED: DirKind = DirKind {
        shared: true,
        ..PRIVATE
    };

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn err_text(err: anyhow::Error) -> String {
        let hint = crate::exit::fatal_of(&err)
            .and_then(|f| f.hint.clone())
            .unwrap_or_default();
        format!("{err:#} / hint: {hint}")
    }

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    #[test]
    fn the_symlink_rule_trusts_only_root_and_the_running_user() {
        let me = 1000;
        // Own or root's link, in an own or root's directory nobody else writes.
        assert_eq!(link_problem(me, me, 0o755, me), None);
        assert_eq!(link_problem(0, 0, 0o755, me), None);
        assert_eq!(link_problem(0, me, 0o700, me), None);
        // /var/lock -> /run/lock for root.
        assert_eq!(link_problem(0, 0, 0o40755, 0), None);
        // Another user's link, wherever it is.
        assert!(
            link_problem(65534, 0, 0o755, me)
                .unwrap()
                .contains("owned by uid 65534")
        );
        // A trusted link in another user's directory: they can replace it.
        assert!(
            link_problem(me, 65534, 0o755, me)
                .unwrap()
                .contains("uid 65534")
        );
        // A trusted link in a directory others can write to, sticky or not.
        for mode in [0o1777, 0o777, 0o775, 0o757] {
            let why = link_problem(0, 0, mode, me).unwrap();
            assert!(why.contains("other users can write"), "{mode:o}: {why}");
        }
    }

    #[test]
    fn the_private_rule_wants_our_own_directory_that_nobody_else_writes() {
        assert_eq!(dir_problem(1000, 0o755, 1000), None);
        assert_eq!(dir_problem(0, 0o700, 0), None);
        // Root's directory is not a non-root user's own.
        assert_eq!(dir_problem(0, 0o755, 1000), Some(DirProblem::Owner(0)));
        assert_eq!(dir_problem(65534, 0o700, 0), Some(DirProblem::Owner(65534)));
        assert_eq!(
            dir_problem(0, 0o41777, 0),
            Some(DirProblem::Writable(0o1777))
        );
        assert_eq!(dir_problem(0, 0o775, 0), Some(DirProblem::Writable(0o775)));
    }

    #[test]
    fn a_walk_creates_missing_components_with_the_mode_given() {
        let t = tmp();
        let path = t.path().join("a/b/c");
        let dir = SafeDir::create(
            &path,
            DirKind {
                mode: 0o750,
                ..PRIVATE
            },
        )
        .unwrap();
        assert_eq!(dir.path(), path);
        for p in [t.path().join("a"), path.clone()] {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & !0o750, 0, "{p:?}: {mode:o}");
        }
        // It is the directory: a file written through it lands there.
        dir.write_atomic(OsStr::new("x"), 0o644, |f| {
            use std::io::Write;
            f.write_all(b"hi")
        })
        .unwrap();
        assert_eq!(std::fs::read(path.join("x")).unwrap(), b"hi");
    }

    #[test]
    fn a_walk_creates_a_deep_path() {
        let t = tmp();
        let deep: PathBuf = (0..2 * MAX_RETRIES).map(|i| i.to_string()).collect();
        let path = t.path().join(deep);
        assert_eq!(SafeDir::create(&path, PRIVATE).unwrap().path(), path);
        assert!(path.is_dir());
    }

    #[test]
    fn existing_creates_nothing() {
        let t = tmp();
        let path = t.path().join("a/b");
        assert!(SafeDir::existing(&path, PRIVATE).unwrap().is_none());
        assert!(!t.path().join("a").exists());
        std::fs::create_dir_all(&path).unwrap();
        assert!(SafeDir::existing(&path, PRIVATE).unwrap().is_some());
        let d = SafeDir::existing(t.path(), PRIVATE).unwrap().unwrap();
        assert!(d.child(OsStr::new("nope")).unwrap().is_none());
        assert!(!t.path().join("nope").exists());
    }

    #[test]
    fn a_directory_others_can_write_is_refused_unless_shared() {
        let t = tmp();
        let path = t.path().join("w");
        std::fs::create_dir(&path).unwrap();
        chmod(&path, 0o1777);
        let err = err_text(SafeDir::create(&path, PRIVATE).unwrap_err());
        assert!(
            err.contains("is group- or world-writable (mode 1777)"),
            "{err}"
        );
        assert!(err.contains("private subdirectory"), "{err}");
        assert!(SafeDir::create(&path, SHARED).is_ok());
        // The dry run's check refuses it the same way.
        assert!(SafeDir::existing(&path, PRIVATE).is_err());
    }

    #[test]
    fn a_trusted_symlink_is_followed_relative_or_absolute() {
        let t = tmp();
        let real = t.path().join("real");
        std::fs::create_dir_all(real.join("inner")).unwrap();
        symlink("real", t.path().join("rel")).unwrap();
        symlink(&real, t.path().join("abs")).unwrap();
        symlink("../real/./inner", real.join("up")).unwrap();
        for via in ["rel/inner", "abs/inner", "real/up", "rel/up/../inner"] {
            let dir = SafeDir::create(&t.path().join(via), PRIVATE)
                .unwrap_or_else(|e| panic!("{via}: {}", err_text(e)));
            dir.write_atomic(
                OsStr::new(via.replace('/', "_").as_str()),
                0o644,
                |_| Ok(()),
            )
            .unwrap();
            assert!(
                real.join("inner").join(via.replace('/', "_")).exists(),
                "{via} did not lead to real/inner"
            );
        }
    }

    #[test]
    fn a_symlink_in_a_directory_others_can_write_is_refused() {
        let t = tmp();
        let sticky = t.path().join("sticky");
        std::fs::create_dir(&sticky).unwrap();
        chmod(&sticky, 0o1777);
        let target = t.path().join("target");
        std::fs::create_dir(&target).unwrap();
        symlink(&target, sticky.join("link")).unwrap();
        let path = sticky.join("link/sub");
        let err = err_text(SafeDir::create(&path, PRIVATE).unwrap_err());
        assert!(
            err.contains("other users can write to (mode 1777)"),
            "{err}"
        );
        assert!(
            err.contains(&sticky.join("link").display().to_string()),
            "{err}"
        );
        assert!(!target.join("sub").exists(), "nothing created through it");
        // Shared directories are reached by the same rule.
        assert!(SafeDir::existing(&sticky.join("link"), SHARED).is_err());
    }

    #[test]
    fn a_symlink_of_another_user_is_refused() {
        if !is_root() {
            eprintln!("skipped: needs root to give a symlink to another user");
            return;
        }
        let t = tmp();
        let target = t.path().join("target");
        std::fs::create_dir(&target).unwrap();
        let link = t.path().join("link");
        symlink(&target, &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
        let err = err_text(SafeDir::existing(&link, PRIVATE).unwrap_err());
        assert!(err.contains("is a symlink owned by uid 65534"), "{err}");
        // And a directory of another user is not ours.
        std::os::unix::fs::chown(&target, Some(65534), Some(65534)).unwrap();
        let err = err_text(SafeDir::existing(&target, PRIVATE).unwrap_err());
        assert!(err.contains("is owned by uid 65534, not by uid 0"), "{err}");
        assert!(SafeDir::existing(&target, SHARED).unwrap().is_some());
    }

    #[test]
    fn symlink_loops_and_files_end_the_walk() {
        let t = tmp();
        symlink("b", t.path().join("a")).unwrap();
        symlink("a", t.path().join("b")).unwrap();
        let err = err_text(SafeDir::create(&t.path().join("a/x"), PRIVATE).unwrap_err());
        assert!(err.contains("more than 40 symlinks"), "{err}");
        std::fs::write(t.path().join("f"), "").unwrap();
        let err = err_text(SafeDir::create(&t.path().join("f/x"), PRIVATE).unwrap_err());
        assert!(err.contains("is not a directory (a regular file)"), "{err}");
        let err = err_text(SafeDir::create(Path::new("relative"), PRIVATE).unwrap_err());
        assert!(err.contains("not an absolute path"), "{err}");
    }

    #[test]
    fn a_child_is_never_a_symlink() {
        let t = tmp();
        let elsewhere = t.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let base = t.path().join("base");
        std::fs::create_dir(&base).unwrap();
        symlink(&elsewhere, base.join("runs")).unwrap();
        let dir = SafeDir::create(&base, PRIVATE).unwrap();
        let err = err_text(dir.create_child(OsStr::new("runs")).unwrap_err());
        assert!(
            err.contains("runs is a symlink; refusing to follow it"),
            "{err}"
        );
        let err = err_text(dir.child(OsStr::new("runs")).unwrap_err());
        assert!(err.contains("is a symlink"), "{err}");
        let job = dir.create_child(OsStr::new("job")).unwrap();
        assert_eq!(job.path(), base.join("job"));
        assert!(dir.create_child(OsStr::new("../x")).is_err());
    }

    #[test]
    fn files_scatter_writes_must_be_its_own_regular_files() {
        let t = tmp();
        let dir = SafeDir::create(t.path(), PRIVATE).unwrap();
        let victim = t.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        symlink(&victim, t.path().join("link")).unwrap();
        std::fs::hard_link(&victim, t.path().join("hard")).unwrap();
        std::fs::create_dir(t.path().join("dir")).unwrap();
        rustix::fs::mknodat(
            &dir.fd,
            "fifo",
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let open = |name: &str, access| {
            dir.open_own(OsStr::new(name), "test file", access, 0o644)
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        assert!(open("link", OFlags::RDWR).contains("is a symlink; refusing to follow it"));
        assert!(open("dir", OFlags::RDWR).contains("is a directory"));
        // Neither blocks: with a reader missing (ENXIO) or not.
        assert!(open("fifo", OFlags::WRONLY | OFlags::APPEND).contains("(a FIFO)"));
        assert!(open("fifo", OFlags::RDWR).contains("(a FIFO)"));
        assert!(open("hard", OFlags::RDWR).contains("has 2 hard links"));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let (_, meta) = dir
            .open_own(OsStr::new("new"), "test file", OFlags::RDWR, 0o600)
            .unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.mode() & 0o077, 0);
    }

    #[test]
    fn reads_are_bounded_and_refuse_what_is_not_a_regular_file() {
        let t = tmp();
        let dir = SafeDir::for_reading(t.path(), PRIVATE).unwrap().unwrap();
        std::fs::write(t.path().join("small"), "12345").unwrap();
        assert_eq!(
            dir.read(OsStr::new("small"), "f", 5).unwrap().unwrap(),
            b"12345"
        );
        let err = dir
            .read(OsStr::new("small"), "f", 4)
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than the 4 bytes scatter reads"), "{err}");
        assert!(dir.read(OsStr::new("missing"), "f", 9).unwrap().is_none());
        rustix::fs::mknodat(
            &dir.fd,
            "fifo",
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let err = dir
            .read(OsStr::new("fifo"), "f", 9)
            .unwrap_err()
            .to_string();
        assert!(err.contains("(a FIFO)"), "{err}");
        symlink(t.path().join("small"), t.path().join("link")).unwrap();
        let err = dir
            .read(OsStr::new("link"), "f", 9)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is a symlink"), "{err}");
        assert!(
            SafeDir::for_reading(&t.path().join("nope"), PRIVATE)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn an_atomic_write_replaces_a_symlink_and_leaves_no_temporary_file() {
        let t = tmp();
        let dir = SafeDir::create(t.path(), PRIVATE).unwrap();
        let victim = t.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        symlink(&victim, t.path().join("x.json")).unwrap();
        dir.write_atomic(OsStr::new("x.json"), 0o644, |f| {
            use std::io::Write;
            f.write_all(b"one")
        })
        .unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let meta = std::fs::symlink_metadata(t.path().join("x.json")).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        assert_eq!(std::fs::read(t.path().join("x.json")).unwrap(), b"one");
        // A failed fill leaves nothing behind and the old file in place.
        let err = dir
            .write_atomic(OsStr::new("x.json"), 0o644, |_| {
                Err(io::Error::other("boom"))
            })
            .unwrap_err();
        assert!(format!("{err:#}").contains("boom"));
        assert_eq!(std::fs::read(t.path().join("x.json")).unwrap(), b"one");
        let names: Vec<_> = dir.entries().unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(
            dir.write_atomic(OsStr::new("../escape"), 0o644, |_| Ok(()))
                .is_err()
        );
    }

    #[test]
    fn removal_deletes_regular_files_only() {
        let t = tmp();
        let dir = SafeDir::create(t.path(), PRIVATE).unwrap();
        let victim = t.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        symlink(&victim, t.path().join("link")).unwrap();
        std::fs::create_dir(t.path().join("d")).unwrap();
        std::fs::write(t.path().join("f"), "").unwrap();
        assert!(!dir.remove_file(OsStr::new("link")).unwrap());
        assert!(!dir.remove_file(OsStr::new("d")).unwrap());
        assert!(!dir.remove_file(OsStr::new("gone")).unwrap());
        assert!(dir.remove_file(OsStr::new("f")).unwrap());
        assert!(std::fs::symlink_metadata(t.path().join("link")).is_ok());
        assert!(victim.exists());
        assert!(!t.path().join("f").exists());
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(size(300), "300 bytes");
        assert_eq!(size(256 << 20), "256 MiB");
        assert_eq!(size(3 << 19), "1.5 MiB");
    }
}
