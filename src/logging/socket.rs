//! The socket a log record is sent to, without ever blocking.
//!
//! syslog and the journal both read datagrams from a Unix socket. A reader
//! that stalls (a hung journald, a syslog daemon busy on a full disk) must
//! not stall scatter's supervisor, which logs from its only thread: the
//! socket is non-blocking, and a record that finds the reader's queue full
//! is dropped and counted (see [`super::finish`]). The descriptors
//! scatter shares with others (stdout, stderr) are a different matter; this
//! socket is scatter's own, so `O_NONBLOCK` on it affects nobody else.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

pub struct LogSocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl LogSocket {
    pub fn connect(path: &Path) -> io::Result<LogSocket> {
        let socket = UnixDatagram::unbound()?;
        // Fail now, not silently on every record, if nothing listens.
        socket.connect(path)?;
        socket.set_nonblocking(true)?;
        Ok(LogSocket {
            socket,
            path: path.to_path_buf(),
        })
    }

    /// Sends one record, or counts it as dropped.
    pub fn send(&self, payload: &[u8]) {
        let sent = match self.socket.send(payload) {
            // The reader may have restarted on a fresh socket: one retry.
            Err(err) if err.kind() != io::ErrorKind::WouldBlock => {
                self.socket.send_to(payload, &self.path)
            }
            sent => sent,
        };
        match sent {
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => super::note_dropped(),
            Err(err) => super::note_failed(&err),
        }
    }
}
