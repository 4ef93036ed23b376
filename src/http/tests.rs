//! One exchange against a loopback peer that answers with raw bytes, badly
//! on purpose: bounds, truncation, framing, and when a connection may be
//! reused.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use super::exchange::{BODY_HEAD, Conn, Exchange, MAX_HEAD, READS_PER_STEP, Step};
use super::url::{Method, RequestTemplate};

/// A peer that reads the request head, writes `answer` in `pieces` (a
/// pause after each), then closes the connection if `close`, or else keeps
/// it open a while.
fn peer(pieces: Vec<Vec<u8>>, close: bool) -> (TcpStream, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if sock.read(&mut byte).unwrap_or(0) == 0 {
                return;
            }
            head.push(byte[0]);
        }
        for piece in pieces {
            let _ = sock.write_all(&piece);
            std::thread::sleep(Duration::from_millis(20));
        }
        if !close {
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    let sock = crate::platform::connect_nonblocking(&addr).unwrap();
    (sock, handle)
}

enum Ended {
    Done {
        status: u16,
        head: Vec<u8>,
        reusable: bool,
    },
    Failed {
        reason: String,
        unanswered: bool,
    },
}

/// Drives one GET through to its end, polling with short sleeps.
fn exchange(answer: &[u8], close: bool) -> Ended {
    exchange_in_pieces(&[answer], close)
}

/// [`exchange`], the answer written in pieces.
fn exchange_in_pieces(pieces: &[&[u8]], close: bool) -> Ended {
    let (sock, peer) = peer(pieces.iter().map(|p| p.to_vec()).collect(), close);
    let request = RequestTemplate::parse("http://127.0.0.1/{}", None, &[], None)
        .unwrap()
        .expand(OsStr::new("x"));
    let mut ex = Exchange::new(
        Conn::new(sock, None),
        "peer".into(),
        Method::Get,
        &request,
        true,
        None,
    )
    .unwrap();
    let ended = match drive(&mut ex) {
        Ok(r) => Ended::Done {
            status: r.status,
            head: r.head,
            reusable: r.conn.is_some(),
        },
        Err(f) => Ended::Failed {
            reason: f.reason,
            unanswered: f.unanswered,
        },
    };
    peer.join().unwrap();
    ended
}

fn done(answer: &[u8], close: bool) -> (u16, Vec<u8>, bool) {
    match exchange(answer, close) {
        Ended::Done {
            status,
            head,
            reusable,
        } => (status, head, reusable),
        Ended::Failed { reason, .. } => panic!("failed: {reason}"),
    }
}

fn failed(answer: &[u8], close: bool) -> (String, bool) {
    match exchange(answer, close) {
        Ended::Failed { reason, unanswered } => (reason, unanswered),
        Ended::Done { status, .. } => panic!("done with {status}"),
    }
}

#[test]
fn a_chunked_body_cut_anywhere_by_the_reads_is_read_whole() {
    let answer: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
        5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let start = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    // Every cut in the body: in a size line, between its CR and LF, in the
    // data, in the last chunk.
    for cut in start + 1..answer.len() {
        let ended = exchange_in_pieces(&[&answer[..cut], &answer[cut..]], true);
        match ended {
            Ended::Done {
                status,
                head,
                reusable,
            } => {
                assert_eq!(status, 200, "cut at {cut}");
                assert_eq!(head, b"hello world", "cut at {cut}");
                assert!(reusable, "cut at {cut}");
            }
            Ended::Failed { reason, .. } => panic!("cut at {cut}: {reason}"),
        }
    }
}

#[test]
fn a_chunk_header_without_end_fails_at_the_bound() {
    let mut answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;".to_vec();
    answer.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
    let (reason, _) = failed(&answer, true);
    assert!(reason.contains("invalid response body"), "{reason}");
}

#[test]
fn a_server_that_sends_faster_than_it_is_read_gets_a_few_reads_per_step() {
    const BODY: usize = 4 << 20;
    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {BODY}\r\n\r\n");
    let (sock, peer) = peer(vec![head.into_bytes(), vec![b'b'; BODY]], true);
    rustix::net::sockopt::set_socket_recv_buffer_size(&sock, 1 << 20).unwrap();
    let request = RequestTemplate::parse("http://127.0.0.1/{}", None, &[], None)
        .unwrap()
        .expand(OsStr::new("x"));
    let log = tempfile::tempfile().unwrap();
    let mut ex = Exchange::new(
        Conn::new(sock, None),
        "peer".into(),
        Method::Get,
        &request,
        false,
        Some(log.try_clone().unwrap()),
    )
    .unwrap();
    let (mut buf, mut body) = (vec![0; 16 * 1024], vec![0; 16 * 1024]);
    // Sends the request.
    assert!(matches!(ex.step(&mut buf, &mut body), Step::Wait { .. }));
    // Let the answer fill the socket's buffer, far beyond a step's reads.
    std::thread::sleep(Duration::from_millis(300));
    assert!(matches!(ex.step(&mut buf, &mut body), Step::Wait { .. }));
    let taken = log.metadata().unwrap().len();
    assert!(
        taken > 0 && taken <= (READS_PER_STEP * buf.len()) as u64,
        "{taken} bytes in one step"
    );
    // The rest comes with the following steps.
    match drive(&mut ex) {
        Ok(r) => assert_eq!(r.status, 200),
        Err(f) => panic!("failed: {}", f.reason),
    }
    assert_eq!(log.metadata().unwrap().len(), BODY as u64);
    peer.join().unwrap();
}

#[test]
fn headers_larger_than_the_bound_fail_without_growing_further() {
    let mut answer = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
    answer.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
    answer.extend_from_slice(b"\r\n\r\n");
    let (reason, unanswered) = failed(&answer, true);
    assert!(reason.contains("larger than"), "{reason}");
    assert!(!unanswered);
}

#[test]
fn a_body_cut_short_is_a_failure_and_a_close_delimited_one_is_not() {
    let (reason, _) = failed(
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten..",
        true,
    );
    assert!(reason.contains("before the end"), "{reason}");
    let (status, head, reusable) = done(b"HTTP/1.0 503 Busy\r\n\r\nuntil the end", true);
    assert_eq!(
        (status, head.as_slice(), reusable),
        (503, &b"until the end"[..], false)
    );
}

#[test]
fn a_complete_response_leaves_the_connection_reusable() {
    let (status, head, reusable) = done(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        false,
    );
    assert_eq!(
        (status, head.as_slice(), reusable),
        (404, &b"hello"[..], true)
    );
    // Bytes after the end of the response: out of step, never reused.
    let (_, _, reusable) = done(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA",
        false,
    );
    assert!(!reusable);
    let (_, _, reusable) = done(
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
        false,
    );
    assert!(!reusable, "the server said it closes");
}

#[test]
fn only_the_start_of_a_body_is_kept() {
    let body = vec![b'z'; 100_000];
    let mut answer =
        format!("HTTP/1.1 500 X\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
    answer.extend_from_slice(&body);
    let (status, head, _) = done(&answer, true);
    assert_eq!(status, 500);
    assert_eq!(head.len(), BODY_HEAD);
}

#[test]
fn a_close_before_any_answer_is_unanswered_and_garbage_is_a_protocol_error() {
    let (reason, unanswered) = failed(b"", true);
    assert!(reason.contains("without answering"), "{reason}");
    assert!(unanswered);
    let (reason, _) = failed(b"SSH-2.0-OpenSSH\r\n\r\n", true);
    assert!(reason.contains("invalid HTTP response"), "{reason}");
}

/// Drives an exchange to its end, polling with short sleeps.
fn drive(ex: &mut Exchange) -> Result<super::exchange::Response, super::exchange::Failure> {
    let (mut buf, mut body) = (vec![0; 16 * 1024], vec![0; 16 * 1024]);
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        match ex.step(&mut buf, &mut body) {
            Step::Wait { .. } => {
                assert!(Instant::now() < until, "the exchange never ended");
                std::thread::sleep(Duration::from_millis(1));
            }
            Step::Done(r) => return Ok(r),
            Step::Failed(f) => return Err(f),
        }
    }
}

/// Reads one request (head and `content-length` body) from `from`, with
/// `got` holding what was read already; returns its body and leaves the
/// bytes past it in `got`.
fn read_request(from: &mut impl Read, got: &mut Vec<u8>) -> Vec<u8> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..at]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            if got.len() >= at + 4 + length {
                let rest = got.split_off(at + 4 + length);
                let body = got.split_off(at + 4);
                *got = rest;
                return body;
            }
        }
        let n = from.read(&mut buf).unwrap();
        assert!(n > 0, "the request ended early");
        got.extend_from_slice(&buf[..n]);
    }
}

/// A large request over a kept-alive TLS connection to a peer that takes
/// its time reading: the socket fills while rustls holds the request, and
/// every byte must reach the peer once.
#[test]
fn a_large_request_over_tls_to_a_slow_reader_arrives_once_and_whole() {
    tls_request_arrives_once_and_whole(true);
}

/// The same on a new connection: 600 KiB is past the 64 KiB of plaintext
/// rustls holds before the handshake by default, which must not stop it.
#[test]
fn a_large_request_on_a_new_tls_connection_is_not_stopped_by_the_handshake() {
    tls_request_arrives_once_and_whole(false);
}

fn tls_request_arrives_once_and_whole(reused: bool) {
    use std::sync::Arc;
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, key.cert.pem()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![key.cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(key.signing_key.serialize_der())
                    .unwrap(),
            )
            .unwrap(),
    );
    // A body in which any repeated or missing stretch shows.
    let data: String = (0..600 * 1024 / 8).map(|i| format!("{i:08}")).collect();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    rustix::net::sockopt::set_socket_recv_buffer_size(&listener, 4096).unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        let mut tls =
            rustls::StreamOwned::new(rustls::ServerConnection::new(server).unwrap(), sock);
        let mut got = Vec::new();
        if reused {
            read_request(&mut tls, &mut got);
            tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .unwrap();
            tls.flush().unwrap();
        }
        // Let the client's socket fill up.
        std::thread::sleep(Duration::from_millis(300));
        let body = read_request(&mut tls, &mut got);
        tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .unwrap();
        tls.flush().unwrap();
        // Anything past the body was sent twice.
        tls.sock
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut more = [0u8; 1024];
        let extra = got.len() + tls.read(&mut more).unwrap_or(0);
        (body, extra)
    });
    let sock = crate::platform::connect_nonblocking(&addr).unwrap();
    rustix::net::sockopt::set_socket_send_buffer_size(&sock, 4096).unwrap();
    let config = super::tls::config(Some(&ca)).unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = Conn::new(
        sock,
        Some(rustls::ClientConnection::new(config, name).unwrap()),
    );
    if reused {
        let first = RequestTemplate::parse("https://127.0.0.1/x", None, &[], None)
            .unwrap()
            .expand(OsStr::new("x"));
        let mut ex = Exchange::new(conn, "peer".into(), Method::Get, &first, false, None).unwrap();
        let first = drive(&mut ex).unwrap_or_else(|f| panic!("failed: {}", f.reason));
        conn = first.conn.expect("a reusable connection");
    }
    let request =
        RequestTemplate::parse("https://127.0.0.1/x", Some(Method::Post), &[], Some(&data))
            .unwrap()
            .expand(OsStr::new("x"));
    let mut ex = Exchange::new(conn, "peer".into(), Method::Post, &request, false, None).unwrap();
    let done = drive(&mut ex).unwrap_or_else(|f| panic!("failed: {}", f.reason));
    assert_eq!(done.status, 200);
    let (body, extra) = peer.join().unwrap();
    assert_eq!(extra, 0, "bytes past the request: some were sent twice");
    assert_eq!(
        body.len(),
        data.len(),
        "the body arrived with another length"
    );
    assert!(body == data.as_bytes(), "the body arrived altered");
}
