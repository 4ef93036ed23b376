//! One exchange against a loopback peer that answers with raw bytes, badly
//! on purpose: bounds, truncation, framing, and when a connection may be
//! reused.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use super::exchange::{BODY_HEAD, Conn, Exchange, MAX_HEAD, Step};
use super::url::{Method, RequestTemplate};

/// A peer that reads the request head, writes `answer`, then closes the
/// connection if `close`, or else keeps it open a while.
fn peer(answer: Vec<u8>, close: bool) -> (TcpStream, std::thread::JoinHandle<()>) {
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
        let _ = sock.write_all(&answer);
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
    let (sock, peer) = peer(answer.to_vec(), close);
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
    let (mut buf, mut body) = (vec![0; 16 * 1024], vec![0; 16 * 1024]);
    let until = Instant::now() + Duration::from_secs(10);
    let ended = loop {
        match ex.step(&mut buf, &mut body) {
            Step::Wait { .. } => {
                assert!(Instant::now() < until, "the exchange never ended");
                std::thread::sleep(Duration::from_millis(2));
            }
            Step::Done(r) => {
                break Ended::Done {
                    status: r.status,
                    head: r.head,
                    reusable: r.conn.is_some(),
                };
            }
            Step::Failed(f) => {
                break Ended::Failed {
                    reason: f.reason,
                    unanswered: f.unanswered,
                };
            }
        }
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
