//! A loopback HTTP/1.1 server for the `--url` tests, on a free port: it
//! answers as the test says, keeps connections alive, counts them, and
//! records every request it received with its target percent-decoded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the server does with a request.
#[derive(Clone, Debug)]
pub enum Answer {
    /// This status, with this body.
    Status(u16, Vec<u8>),
    /// Nothing: keep the connection open and never answer.
    Hang,
    /// This status, then the connection is closed without saying so (no
    /// `connection: close`), as a server whose keep-alive timeout is short.
    StatusThenClose(u16),
}

#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// The request target as sent.
    pub target: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The `n`th path segment (from 0), percent-decoded.
    pub fn segment(&self, n: usize) -> Vec<u8> {
        let path = self.target.split('?').next().unwrap_or("");
        decode(path.split('/').nth(n + 1).unwrap_or(""))
    }

    /// A query value, percent-decoded.
    pub fn query(&self, key: &str) -> Option<Vec<u8>> {
        let query = self.target.split_once('?')?.1;
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .map(decode)
    }

    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

pub fn decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

type Rule = dyn Fn(&Request) -> Answer + Send + Sync;

pub struct Server {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

/// What wraps an accepted connection (TLS for the https test).
pub type Wrap = dyn Fn(TcpStream) -> Option<Box<dyn ReadWrite>> + Send + Sync;

pub trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

impl Server {
    /// A plain HTTP server answering by `rule`.
    pub fn start(rule: impl Fn(&Request) -> Answer + Send + Sync + 'static) -> Server {
        Server::start_wrapped(rule, |s| Some(Box::new(s)))
    }

    pub fn start_wrapped(
        rule: impl Fn(&Request) -> Answer + Send + Sync + 'static,
        wrap: impl Fn(TcpStream) -> Option<Box<dyn ReadWrite>> + Send + Sync + 'static,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let rule: Arc<Rule> = Arc::new(rule);
        let wrap: Arc<Wrap> = Arc::new(wrap);
        {
            let (connections, requests, stop) =
                (connections.clone(), requests.clone(), stop.clone());
            std::thread::spawn(move || {
                // Bounded: no test needs its server for a minute.
                let until = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                    match listener.accept() {
                        Ok((sock, _)) => {
                            sock.set_nonblocking(false).unwrap();
                            connections.fetch_add(1, Ordering::SeqCst);
                            let (rule, wrap, requests, stop) =
                                (rule.clone(), wrap.clone(), requests.clone(), stop.clone());
                            std::thread::spawn(move || {
                                sock.set_read_timeout(Some(Duration::from_secs(20))).ok();
                                if let Some(stream) = wrap(sock) {
                                    serve(stream, &*rule, &requests, &stop);
                                }
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            });
        }
        Server {
            addr,
            connections,
            requests,
            stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    stream: Box<dyn ReadWrite>,
    rule: &Rule,
    requests: &Mutex<Vec<Request>>,
    stop: &AtomicBool,
) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut parts = line.trim_end().splitn(3, ' ');
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = Vec::new();
            if reader.read_until(b'\n', &mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.strip_suffix(b"\r\n").unwrap_or(&h).to_vec();
            if h.is_empty() {
                break;
            }
            let colon = h.iter().position(|b| *b == b':').unwrap();
            let name = String::from_utf8_lossy(&h[..colon]).to_string();
            let value = h[colon + 1..].trim_ascii_start().to_vec();
            headers.push((name, value));
        }
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| std::str::from_utf8(v).unwrap().parse().unwrap());
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let request = Request {
            method,
            target,
            headers,
            body,
        };
        requests.lock().unwrap().push(request.clone());
        match rule(&request) {
            Answer::Hang => {
                let until = Instant::now() + Duration::from_secs(30);
                while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return;
            }
            Answer::StatusThenClose(status) => {
                let stream = reader.get_mut();
                let head = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.flush();
                return;
            }
            Answer::Status(status, body) => {
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\n{}\r\n",
                    body.len(),
                    if status / 100 == 3 {
                        "location: /elsewhere\r\n"
                    } else {
                        ""
                    }
                );
                let stream = reader.get_mut();
                let mut out = head.into_bytes();
                if request.method != "HEAD" {
                    out.extend_from_slice(&body);
                }
                if stream
                    .write_all(&out)
                    .and_then(|()| stream.flush())
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}
