//! `--output on-failure`: the spool files, and showing the tail of a failed
//! task's output within the per-task and per-run limits.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use log::warn;

use crate::display::{self, quoted};
use crate::platform;

use super::*;

impl Outputs {
    /// A new spool file for the task of `slot`, or `None` (with one
    /// warning per run) when the spool cannot hold one.
    pub(super) fn spool_file(&self, slot: usize) -> Option<(File, PathBuf)> {
        let path = self.spool.as_ref()?.path().join(format!("{slot}.out"));
        match open_spool(&path) {
            Ok(file) => Some((file, path)),
            Err(err) => {
                if !self.spool_warned.replace(true) {
                    warn!("{}; {UNSPOOLED}", crate::display::error_text(&err));
                }
                None
            }
        }
    }

    /// `on-failure`: shows the end of a failed task's output, tagged; then,
    /// failed or not, deletes the spool file.
    pub fn settle_spool(&self, tag: &str, path: &Path, failed: bool) {
        if failed {
            match self.spool_tail(tag, path) {
                Ok(out) => out.relay(),
                Err(err) => warn!(
                    "{tag}: cannot read its captured output {}: {err}",
                    quoted(path)
                ),
            }
        }
        let _ = std::fs::remove_file(path);
    }

    /// The end of a spool file as tagged lines, within the task's and the
    /// run's limits.
    pub(super) fn spool_tail<'a>(&self, tag: &'a str, path: &Path) -> io::Result<TaggedLines<'a>> {
        let mut file = File::open(path)?;
        let size = file.metadata()?.len();
        let full = spool_full(&file);
        let left = SHOWN_PER_RUN.saturating_sub(self.shown.get());
        if size > 0 && left == 0 {
            self.not_shown.set(self.not_shown.get() + 1);
            return Ok(TaggedLines::new(tag));
        }
        let shown = size.min(SHOWN_PER_TASK).min(left);
        let mut out = TaggedLines::new(tag);
        if shown < size {
            let line = format!(
                "[… {} of output cut; the last {} follow]",
                display::size(size - shown),
                display::size(shown)
            );
            out.push(line.as_bytes());
            file.seek(SeekFrom::Start(size - shown))?;
        }
        // Only what was there when the task ended: a child it left behind
        // may still be appending.
        let mut rest = file.take(shown);
        let mut lines = Lines::default();
        let mut emit = |piece: &[u8]| out.push(piece);
        let mut buf = [0u8; READ_SIZE];
        loop {
            match rest.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => lines.feed(&buf[..n], &mut emit),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        lines.flush(&mut emit);
        if full {
            let tmp = path.parent().and_then(Path::parent).unwrap_or(path);
            let line = format!(
                "[output may be incomplete: the spool filesystem ({}) is full]",
                quoted(tmp)
            );
            out.push(line.as_bytes());
        }
        self.shown.set(self.shown.get() + shown);
        Ok(out)
    }
}

/// What the spool warnings add: where such a task's output goes instead.
pub(super) const UNSPOOLED: &str = "tasks without a spool file write to scatter's own stdout and stderr, \
    whether they fail or not";

/// Whether the filesystem holding `file` has (next to) no room left.
fn spool_full(file: &File) -> bool {
    let Ok(fs) = rustix::fs::fstatvfs(file) else {
        return false;
    };
    // The tasks run as scatter's user; root may also fill the blocks the
    // filesystem reserves for it.
    let free = if platform::euid() == 0 {
        fs.f_bfree
    } else {
        fs.f_bavail
    };
    let block = if fs.f_frsize > 0 {
        fs.f_frsize
    } else {
        fs.f_bsize
    };
    free.saturating_mul(block) < SPOOL_FULL_BELOW
}

/// Creates a task's spool file, in scatter's own private spool directory.
fn open_spool(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open spool file {}: {e}", quoted(path)),
            )
        })
}
