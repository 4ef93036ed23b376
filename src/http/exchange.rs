//! One request and its response over one connection, driven step by step
//! from the supervisor's `poll` loop: nothing here ever waits.
//!
//! The request is serialised whole before the first write by ureq-proto's
//! sans-IO client (`Call`), so sending is writing one buffer; receiving
//! feeds what a non-blocking read returns to the same `Call`, which parses
//! the status line and headers and then the body (length-delimited,
//! chunked or delimited by the connection's close). Every step returns
//! what it waits for next (readable, writable), the response, or why it
//! failed.
//!
//! Bounds: the response's headers may take at most [`MAX_HEAD`] (a larger
//! head is a failure, not a bigger buffer); the body is read in the
//! caller's fixed buffers and discarded as it goes, except its first
//! [`BODY_HEAD`] bytes when the caller keeps them for a failure message, and
//! what the caller's log file takes.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};

use log::warn;
use ureq_proto::client::state::{RecvBody, RecvResponse};
use ureq_proto::client::{Call, RecvBodyResult, RecvResponseResult, SendRequestResult};
use ureq_proto::http;

use super::url::{Expanded, Method};

/// The most a response's status line and headers may take.
pub const MAX_HEAD: usize = 64 * 1024;
/// The start of a body kept for a failure message.
pub const BODY_HEAD: usize = 4 * 1024;
/// Reads from the socket in one step at most (of the caller's buffer, 16
/// KiB in the supervisor), as for a task's output pipe.
pub const READS_PER_STEP: usize = 4;
/// The most a serialised request (line, headers, body) may take.
const MAX_REQUEST: usize = 1 << 20;

/// A connection to the run's origin: a non-blocking socket, with TLS on it
/// for `https://`.
pub struct Conn {
    sock: TcpStream,
    tls: Option<Box<rustls::ClientConnection>>,
    /// The peer's end of file was seen on the TLS layer.
    eof: bool,
}

impl Conn {
    pub fn new(sock: TcpStream, tls: Option<rustls::ClientConnection>) -> Conn {
        let tls = tls.map(|mut tls| {
            // rustls holds at most 64 KiB of plaintext until the handshake
            // is done, then takes no more (`Ok(0)`): a larger request would
            // never be sent. The request is whole in memory already, at
            // most MAX_REQUEST, so the copy is bounded by it.
            tls.set_buffer_limit(None);
            Box::new(tls)
        });
        Conn {
            sock,
            tls,
            eof: false,
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// Whether the peer closed it or sent what nobody asked for.
    pub fn is_stale(&self) -> bool {
        crate::platform::peer_closed(&self.sock)
    }

    /// Whether TLS has records to send (a handshake message, our request).
    fn wants_write(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Writes what the socket takes now.
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match &mut self.tls {
            None => (&self.sock).write(data),
            Some(tls) => {
                // Buffered by rustls until the handshake is done.
                let n = tls.writer().write(data)?;
                // Taken: the bytes are rustls's now, whether or not the
                // socket takes their records yet (the caller's loop flushes
                // what is left). Reporting WouldBlock here would have the
                // caller hand them over again, and the server see them twice.
                match self.flush() {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(n),
                    Err(e) => Err(e),
                    Ok(()) => Ok(n),
                }
            }
        }
    }

    /// Sends pending TLS records; `WouldBlock` if the socket is full.
    fn flush(&mut self) -> io::Result<()> {
        if let Some(tls) = &mut self.tls {
            while tls.wants_write() {
                tls.write_tls(&mut &self.sock)?;
            }
        }
        Ok(())
    }

    /// Reads what has arrived; `Ok(0)` at the end of the connection. With
    /// `from_socket` false, only what TLS has already decrypted (which
    /// `poll` cannot see), else `WouldBlock`.
    fn read(&mut self, buf: &mut [u8], from_socket: bool) -> io::Result<usize> {
        let Some(tls) = &mut self.tls else {
            if !from_socket {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            return (&self.sock).read(buf);
        };
        loop {
            match tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // Closed without close_notify: many servers do, and the
                // framing of the response says whether anything is missing.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if self.eof {
                return Ok(0);
            }
            if !from_socket {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            match tls.read_tls(&mut &self.sock)? {
                0 => self.eof = true,
                _ => {
                    tls.process_new_packets()
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, TlsError(e)))?;
                    // Handshake replies, alerts.
                    while tls.wants_write() {
                        match tls.write_tls(&mut &self.sock) {
                            Ok(_) => {}
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
        }
    }
}

/// A TLS failure, told apart from the socket's own errors.
#[derive(Debug)]
struct TlsError(rustls::Error);

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TLS: {}", self.0)
    }
}

impl std::error::Error for TlsError {}

/// What a step came to.
pub enum Step {
    /// Call again when the socket is readable (`write`: or writable).
    Wait {
        write: bool,
    },
    Done(Response),
    Failed(Failure),
}

/// A complete response.
pub struct Response {
    pub status: u16,
    /// The start of the body, when kept.
    pub head: Vec<u8>,
    /// The connection, if it may carry another request.
    pub conn: Option<Conn>,
}

/// Why a request failed, and whether sending it again may work.
#[derive(Debug)]
pub struct Failure {
    pub reason: String,
    /// Nothing was received: the connection was stale (an idle one the
    /// server had closed) or never made, so the server saw no request.
    pub unanswered: bool,
    /// Nothing was even sent: the connection itself failed.
    pub unsent: bool,
}

enum Recv {
    Head(Call<RecvResponse>),
    Body(Call<RecvBody>),
    Gone,
}

pub struct Exchange {
    conn: Option<Conn>,
    out: Vec<u8>,
    sent: usize,
    recv: Recv,
    /// Response bytes not yet parsed (status line and headers).
    input: Vec<u8>,
    status: u16,
    received: bool,
    keep_head: bool,
    head: Vec<u8>,
    log: Option<File>,
    /// Where the connection goes, for messages.
    peer: String,
}

impl Exchange {
    /// Serialises the request; fails only on a request ureq-proto refuses
    /// (which the template's checks should make impossible).
    pub fn new(
        conn: Conn,
        peer: String,
        method: Method,
        request: &Expanded,
        keep_head: bool,
        log: Option<File>,
    ) -> Result<Exchange, String> {
        let (out, recv) = serialise(method, request).map_err(|e| format!("cannot send: {e}"))?;
        Ok(Exchange {
            conn: Some(conn),
            out,
            sent: 0,
            recv: Recv::Head(recv),
            input: Vec::new(),
            status: 0,
            received: false,
            keep_head,
            head: Vec::new(),
            log,
            peer,
        })
    }

    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.conn.as_ref().map(Conn::fd)
    }

    /// Takes the log file back (for a retry on another connection).
    pub fn take_log(&mut self) -> Option<File> {
        self.log.take()
    }

    fn fail(&self, reason: String) -> Step {
        Step::Failed(Failure {
            reason,
            unanswered: !self.received,
            unsent: self.sent == 0,
        })
    }

    fn io_failure(&self, err: &io::Error) -> Step {
        let text = match err.get_ref().and_then(|e| e.downcast_ref::<TlsError>()) {
            Some(tls) => tls.to_string(),
            None => crate::display::error_text(err),
        };
        if self.sent == 0 {
            self.fail(format!("cannot connect to {}: {text}", self.peer))
        } else {
            self.fail(text)
        }
    }

    /// Does everything the socket allows now, without waiting.
    pub fn step(&mut self, buf: &mut [u8], body: &mut [u8]) -> Step {
        let Some(conn) = self.conn.as_mut() else {
            return self.fail("the connection is gone".into());
        };
        while self.sent < self.out.len() || conn.wants_write() {
            let done = if self.sent < self.out.len() {
                conn.write(&self.out[self.sent..]).map(|n| self.sent += n)
            } else {
                conn.flush()
            };
            match done {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // TLS may need the server's handshake reply first.
                    return Step::Wait { write: true };
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.io_failure(&e),
            }
        }
        // A server that sends faster than this reads must not hold the
        // supervisor: after READS_PER_STEP reads from the socket, the rest
        // waits for the next wake.
        let mut reads = 0;
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return self.fail("the connection is gone".into());
            };
            reads += 1;
            let n = match conn.read(buf, reads <= READS_PER_STEP) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Step::Wait {
                        write: conn.wants_write(),
                    };
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.io_failure(&e),
            };
            if n == 0 {
                return self.end_of_connection();
            }
            self.received = true;
            if let Some(step) = self.feed(&buf[..n], body) {
                return step;
            }
        }
    }

    /// The server closed the connection.
    fn end_of_connection(&mut self) -> Step {
        match std::mem::replace(&mut self.recv, Recv::Gone) {
            Recv::Body(call) if call.body_mode() == ureq_proto::BodyMode::CloseDelimited => {
                self.conn = None;
                self.done(None)
            }
            Recv::Body(_) => self.fail(format!(
                "the connection closed before the end of the response (HTTP status {})",
                self.status
            )),
            _ => self.fail("the server closed the connection without answering".into()),
        }
    }

    /// Feeds received bytes; `Some` once the exchange is over.
    fn feed(&mut self, data: &[u8], body: &mut [u8]) -> Option<Step> {
        match std::mem::replace(&mut self.recv, Recv::Gone) {
            Recv::Head(mut call) => {
                self.input.extend_from_slice(data);
                let too_large = || {
                    format!(
                        "the response's status line and headers are larger than {}",
                        crate::display::size(MAX_HEAD as u64)
                    )
                };
                loop {
                    let (used, response) = match call.try_response(&self.input, false) {
                        Ok(r) => r,
                        Err(e) => return Some(self.fail(format!("invalid HTTP response: {e}"))),
                    };
                    if used > MAX_HEAD {
                        return Some(self.fail(too_large()));
                    }
                    self.input.drain(..used);
                    if let Some(response) = response {
                        self.status = response.status().as_u16();
                        break;
                    }
                    if used == 0 {
                        if self.input.len() > MAX_HEAD {
                            return Some(self.fail(too_large()));
                        }
                        self.recv = Recv::Head(call);
                        return None;
                    }
                }
                let rest = std::mem::take(&mut self.input);
                match call.proceed() {
                    Some(RecvResponseResult::RecvBody(call)) => {
                        self.recv = Recv::Body(call);
                        if rest.is_empty() {
                            None
                        } else {
                            self.feed(&rest, body)
                        }
                    }
                    Some(RecvResponseResult::Redirect(call)) => {
                        // Not followed, as curl without -L.
                        let cleanup = call.proceed();
                        Some(self.finish(cleanup.must_close_connection() || !rest.is_empty()))
                    }
                    Some(RecvResponseResult::Cleanup(cleanup)) => {
                        Some(self.finish(cleanup.must_close_connection() || !rest.is_empty()))
                    }
                    None => Some(self.fail("invalid HTTP response".into())),
                }
            }
            Recv::Body(mut call) => {
                // What the last read left unparsed comes first.
                let joined;
                let mut data = if self.input.is_empty() {
                    data
                } else {
                    self.input.extend_from_slice(data);
                    joined = std::mem::take(&mut self.input);
                    &joined[..]
                };
                while !data.is_empty() {
                    let (used, produced) = match call.read(data, body) {
                        Ok(r) => r,
                        Err(e) => {
                            return Some(self.fail(format!("invalid response body: {e}")));
                        }
                    };
                    self.keep(&body[..produced]);
                    data = &data[used..];
                    if used == 0 && produced == 0 {
                        break;
                    }
                }
                let close_delimited = call.body_mode() == ureq_proto::BodyMode::CloseDelimited;
                if close_delimited || !call.can_proceed() {
                    // A chunk's size line or its end, cut by the read: the
                    // decoder takes it only whole, with the next read.
                    if data.len() > MAX_HEAD {
                        return Some(self.fail(format!(
                            "invalid response body: a chunk header larger than {}",
                            crate::display::size(MAX_HEAD as u64)
                        )));
                    }
                    self.input = data.to_vec();
                    self.recv = Recv::Body(call);
                    return None;
                }
                let close = match call.proceed() {
                    Some(RecvBodyResult::Cleanup(c)) => c.must_close_connection(),
                    Some(RecvBodyResult::Redirect(r)) => r.proceed().must_close_connection(),
                    None => true,
                };
                // Bytes past the end of the response: the connection is
                // out of step, never reused.
                Some(self.finish(close || !data.is_empty()))
            }
            Recv::Gone => Some(self.fail("the response was already complete".into())),
        }
    }

    fn keep(&mut self, bytes: &[u8]) {
        if self.keep_head && self.head.len() < BODY_HEAD {
            let room = BODY_HEAD - self.head.len();
            self.head.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
        if let Some(log) = &mut self.log
            && let Err(err) = log.write_all(bytes)
        {
            warn!("cannot write a response body into its log file: {err}");
            self.log = None;
        }
    }

    fn finish(&mut self, close: bool) -> Step {
        let conn = self.conn.take().filter(|_| !close);
        self.done(conn)
    }

    fn done(&mut self, conn: Option<Conn>) -> Step {
        Step::Done(Response {
            status: self.status,
            head: std::mem::take(&mut self.head),
            conn,
        })
    }
}

/// The request's bytes, and the call that reads its response.
fn serialise(method: Method, request: &Expanded) -> Result<(Vec<u8>, Call<RecvResponse>), String> {
    let mut builder = http::Request::builder()
        .method(method.as_str())
        .uri(request.url.as_str());
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_slice());
    }
    if let Some(body) = &request.body {
        builder = builder.header("content-length", body.len());
        if !request
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        {
            // What curl sends with --data.
            builder = builder.header("content-type", "application/x-www-form-urlencoded");
        }
    }
    let req = builder.body(()).map_err(|e| e.to_string())?;
    let mut call = Call::new(req).map_err(|e| e.to_string())?.proceed();
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 4096];
    while !call.can_proceed() {
        match call.write(&mut chunk) {
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(ureq_proto::Error::OutputOverflow) if chunk.len() < MAX_REQUEST => {
                chunk.resize(chunk.len() * 2, 0);
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    let recv = match call.proceed().map_err(|e| e.to_string())? {
        Some(SendRequestResult::RecvResponse(recv)) => recv,
        Some(SendRequestResult::SendBody(mut send)) => {
            let mut data = request.body.as_deref().unwrap_or_default();
            loop {
                let (used, n) = send.write(data, &mut chunk).map_err(|e| e.to_string())?;
                out.extend_from_slice(&chunk[..n]);
                data = &data[used..];
                if data.is_empty() && send.can_proceed() {
                    break;
                }
                if used == 0 && n == 0 {
                    if !data.is_empty() {
                        return Err("the request body was not taken".into());
                    }
                    // The end of the body.
                    let (_, n) = send.write(&[], &mut chunk).map_err(|e| e.to_string())?;
                    out.extend_from_slice(&chunk[..n]);
                    if !send.can_proceed() {
                        return Err("the request body did not end".into());
                    }
                    break;
                }
            }
            send.proceed().ok_or("the request body did not end")?
        }
        Some(SendRequestResult::Await100(_)) | None => {
            return Err("unexpected state after the request's headers".into());
        }
    };
    if out.len() > MAX_REQUEST {
        return Err(format!(
            "the request is larger than {}",
            crate::display::size(MAX_REQUEST as u64)
        ));
    }
    Ok((out, recv))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    use crate::http::url::RequestTemplate;

    fn request(url: &str, method: Option<Method>, data: Option<&str>, id: &str) -> Expanded {
        RequestTemplate::parse(url, method, &["X-Id: {}".into()], data)
            .unwrap()
            .expand(OsStr::new(id))
    }

    #[test]
    fn requests_serialise_with_the_encoded_target_and_headers() {
        let (out, _) = serialise(
            Method::Head,
            &request(
                "http://127.0.0.1:8080/{}/c.php?t={}",
                Some(Method::Head),
                None,
                "a b",
            ),
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HEAD /a%20b/c.php?t=a%20b HTTP/1.1\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nhost: 127.0.0.1:8080\r\n"), "{text}");
        assert!(text.contains("\r\nx-id: a%20b\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n"), "{text}");
    }

    #[test]
    fn a_post_carries_its_body_with_its_length() {
        let (out, _) = serialise(
            Method::Post,
            &request("http://h/x", None, Some("id={}"), "a&b"),
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("POST /x HTTP/1.1\r\n"), "{text}");
        assert!(text.contains("content-length: 8\r\n"), "{text}");
        assert!(
            text.contains("content-type: application/x-www-form-urlencoded\r\n"),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\nid=a%26b"), "{text}");
    }
}
