//! Requests scatter makes itself (`--url`): one HTTP request per instance,
//! instead of one client process per instance.
//!
//! # Design
//!
//! A run of 10,000 tenants a minute that starts `wget` or `curl` for each
//! spends 2.6 to 7 ms of CPU per request on starting the client; the
//! request itself costs tens of microseconds. So scatter makes the request
//! itself, from the same single supervisor thread that starts processes in
//! the other mode, with the same engine (schedule, cap, timeouts, stop
//! signals, outcomes) driving a second host,
//! `supervise::requests::Requests`.
//!
//! * **No async runtime, no thread per request.** The protocol is
//!   ureq-proto, ureq's sans-IO HTTP/1.1 core: it turns a request into
//!   bytes and parses a response from bytes, and never touches a socket.
//!   The sockets are non-blocking and are watched by the supervisor's own
//!   `poll`, next to its signal pipe, so a request in flight costs a
//!   descriptor and a few KiB, never a thread, and nothing can block the
//!   loop. (ureq itself, on worker threads, measured about 330 µs per
//!   request warm and starts a thread per name lookup once a timeout is
//!   set; ureq-proto on the loop measured 180 to 330 µs, most of it
//!   scatter's own per-instance work.)
//! * **TLS** is rustls with the `ring` provider, over the same non-blocking
//!   sockets ([`tls`]): the system's CA store, or `--cacert FILE` instead.
//! * **Keep-alive.** Every request of a run goes to one origin (a
//!   placeholder can never be in the scheme, host or port, see [`url`]), so
//!   the pool is one list of idle connections, at most `--max-concurrent`
//!   of them; an idle connection is checked with one non-blocking peek
//!   before reuse, and a GET or HEAD whose reused connection turns out to
//!   be closed before any answer is sent again once on a new one.
//! * **Names** are resolved once, before the first start, on a thread of
//!   their own that the run waits for at most [`RESOLVE_TIMEOUT`]; an IP
//!   literal needs no lookup. If the name cannot be resolved, every request
//!   fails with that reason.
//! * **Redirects are not followed**, as with curl without `-L`: a 3xx is a
//!   status below 400, so the request succeeded.
//! * **Bounds**: requests in flight by `--max-concurrent` (64 by default
//!   with `--url`); a response's headers by [`exchange::MAX_HEAD`]; the
//!   body is read and discarded in fixed buffers, keeping only its first
//!   [`exchange::BODY_HEAD`] bytes for a failure message; a request by
//!   `--timeout` (30 s by default with `--url`), which ends it wherever it
//!   is.

pub mod client;
pub mod exchange;
pub mod tls;
pub mod url;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

pub use url::{Expanded, Method, Origin, RequestTemplate, Scheme};

/// How long a run waits for its one name lookup.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS configuration of a run with an `https://` URL.
#[derive(Clone)]
pub struct Tls(pub Arc<rustls::ClientConfig>);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

/// The addresses of the origin's host: parsed when it is an IP literal,
/// otherwise looked up on a thread of its own, waited for at most
/// [`RESOLVE_TIMEOUT`]. The error says why there are none.
pub fn resolve(origin: &Origin) -> Result<Vec<std::net::SocketAddr>, String> {
    use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
    if let Ok(ip) = origin.host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, origin.port)]);
    }
    let target = (origin.host.clone(), origin.port);
    let (send, recv) = std::sync::mpsc::channel();
    let lookup = move || {
        let found = target
            .to_socket_addrs()
            .map(|a| a.collect::<Vec<_>>())
            .map_err(|e| e.to_string());
        let _ = send.send(found);
    };
    let answer = match std::thread::Builder::new()
        .name("scatter-resolve".into())
        .spawn(lookup)
    {
        Ok(_) => recv.recv_timeout(RESOLVE_TIMEOUT).map_err(|_| {
            format!(
                "no answer within {}",
                humantime::format_duration(RESOLVE_TIMEOUT)
            )
        }),
        // No thread to spare (a process limit): look it up here, before
        // anything has started.
        Err(_) => {
            let found = (origin.host.as_str(), origin.port)
                .to_socket_addrs()
                .map(|a| a.collect::<Vec<_>>())
                .map_err(|e| e.to_string());
            Ok(found)
        }
    };
    match answer.and_then(|found| found) {
        Ok(addrs) if !addrs.is_empty() => Ok(addrs),
        Ok(_) => Err(format!("cannot resolve {}: no address", origin.host)),
        Err(why) => Err(format!("cannot resolve {}: {why}", origin.host)),
    }
}
