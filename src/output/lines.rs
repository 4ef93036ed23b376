//! Cutting a stream of bytes into whole, tagged lines in one pass, with a
//! bound on how long a line may grow.

use super::*;

/// A stream cut into lines of at most [`MAX_LINE`] bytes, in one pass: each
/// byte is looked at once however long the line, and only the unfinished
/// end is kept.
#[derive(Default)]
pub(crate) struct Lines {
    pub(super) partial: Vec<u8>,
}

impl Lines {
    /// Calls `emit` with each complete piece of the stream so far (a line
    /// with its newline, or [`MAX_LINE`] bytes of a longer one) and keeps
    /// the unfinished rest.
    pub(crate) fn feed(&mut self, mut data: &[u8], emit: &mut impl FnMut(&[u8])) {
        while !data.is_empty() {
            let room = MAX_LINE - self.partial.len();
            let window = &data[..data.len().min(room)];
            let end = match memchr::memchr(b'\n', window) {
                Some(i) => i + 1,
                None if window.len() == room => room,
                None => {
                    self.partial.extend_from_slice(window);
                    return;
                }
            };
            if self.partial.is_empty() {
                emit(&data[..end]);
            } else {
                self.partial.extend_from_slice(&data[..end]);
                emit(&self.partial);
                // Hand the memory back: most tasks are between lines most
                // of the time, and thousands may be running.
                self.partial = Vec::new();
            }
            data = &data[end..];
        }
    }

    /// Emits the unfinished rest, if any.
    pub(crate) fn flush(&mut self, emit: &mut impl FnMut(&[u8])) {
        if !self.partial.is_empty() {
            emit(&self.partial);
            self.partial = Vec::new();
        }
    }

    /// Memory held for the unfinished rest.
    pub(super) fn held(&self) -> usize {
        self.partial.capacity()
    }
}

/// Tagged lines built into one buffer for the relay, of at most the relay's
/// queue size: what does not fit would be dropped there anyway. A tag is a
/// quoted id of up to about a kilobyte, so 64 KiB of empty lines would
/// otherwise be built into 64 MiB; the lines past the bound are only
/// counted, and the relay reports them with the ones it drops.
pub(super) struct TaggedLines<'a> {
    tag: &'a str,
    pub(super) out: Vec<u8>,
    over_lines: u64,
    over_bytes: u64,
}

impl<'a> TaggedLines<'a> {
    pub(super) fn new(tag: &'a str) -> TaggedLines<'a> {
        TaggedLines {
            tag,
            out: Vec::new(),
            over_lines: 0,
            over_bytes: 0,
        }
    }

    /// Appends `tag: piece` (see [`tagged`]) if it fits, or counts it.
    pub(super) fn push(&mut self, piece: &[u8]) {
        let len = self.tag.len() + 2 + piece.len() + usize::from(!piece.ends_with(b"\n"));
        if self.out.len() + len > relay::QUEUE_LIMIT {
            self.over_lines += 1;
            self.over_bytes += len as u64;
        } else {
            tagged(&mut self.out, self.tag, piece);
        }
    }

    /// Lines that did not fit.
    #[cfg(test)]
    pub(super) fn over(&self) -> u64 {
        self.over_lines
    }

    /// Hands the lines to the relay, and the count of those left out.
    pub(super) fn relay(self) {
        relay::lines(Stream::Stdout, self.out);
        relay::dropped(Stream::Stdout, self.over_lines, self.over_bytes);
    }
}

/// Appends `tag: piece` to `out`, with a newline if the piece has none.
pub(crate) fn tagged(out: &mut Vec<u8>, tag: &str, piece: &[u8]) {
    out.reserve(tag.len() + 2 + piece.len() + 1);
    out.extend_from_slice(tag.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(piece);
    if !piece.ends_with(b"\n") {
        out.push(b'\n');
    }
}
