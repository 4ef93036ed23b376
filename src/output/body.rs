//! `--url`: what becomes of a response body under each output mode. The
//! body is read and discarded under `inherit` and `null`; under `dir=PATH`
//! it is written to the instance's log file; under `on-failure` and `tag`
//! its first few KiB are shown, tagged, when the request failed, within the
//! same per-run limit as a failed task's output.

use std::ffi::OsStr;
use std::fs::File;
use std::io;

use super::*;

impl Outputs {
    /// `dir=PATH`: the instance's log file for this run, empty; `None`
    /// under the other modes.
    pub fn body_log(&self, id: &OsStr) -> io::Result<Option<File>> {
        match self.mode {
            OutputMode::Dir(_) => self.open_dir_log(id).map(Some),
            _ => Ok(None),
        }
    }

    /// Whether the start of a body is kept, to show if the request fails.
    pub fn shows_failed_bodies(&self) -> bool {
        matches!(self.mode, OutputMode::OnFailure | OutputMode::Tag)
    }

    /// Shows the start of a failed request's body as tagged lines, within
    /// the run's [`SHOWN_PER_RUN`].
    pub fn show_failed_body(&self, tag: &str, body: &[u8]) {
        if body.is_empty() || !self.shows_failed_bodies() {
            return;
        }
        let left = SHOWN_PER_RUN.saturating_sub(self.shown.get());
        if left == 0 {
            self.not_shown.set(self.not_shown.get() + 1);
            return;
        }
        let shown = body.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let mut out = TaggedLines::new(tag);
        let mut lines = Lines::default();
        let mut emit = |piece: &[u8]| out.push(piece);
        lines.feed(&body[..shown], &mut emit);
        lines.flush(&mut emit);
        self.shown.set(self.shown.get() + shown as u64);
        out.relay();
    }
}
