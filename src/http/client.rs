//! Connections to the run's one origin: made without waiting, wrapped in
//! TLS for `https://`, and kept for reuse (keep-alive) in a bounded pool.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::ServerName;

use super::exchange::Conn;
use super::{Origin, Tls};

pub struct Client {
    /// The origin's addresses, or why there are none.
    addrs: Result<Vec<SocketAddr>, String>,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    /// Why TLS cannot be set up for this host, if it cannot.
    tls_problem: Option<String>,
    /// Idle connections, the most recently used last.
    idle: Vec<Conn>,
    max_idle: usize,
    /// `host:port`, for messages.
    peer: String,
    /// Connections opened so far.
    pub opened: u64,
}

impl Client {
    /// `addrs`: the origin's addresses ([`super::resolve`]); `tls` for
    /// `https://`; at most `max_idle` idle connections are kept.
    pub fn new(
        origin: &Origin,
        addrs: Result<Vec<SocketAddr>, String>,
        tls: Option<&Tls>,
        max_idle: usize,
    ) -> Client {
        let (tls, tls_problem) = match tls {
            None => (None, None),
            Some(Tls(config)) => match ServerName::try_from(origin.host.clone()) {
                Ok(name) => (Some((Arc::clone(config), name)), None),
                Err(err) => (
                    None,
                    Some(format!("TLS: {} as a server name: {err}", origin.host)),
                ),
            },
        };
        let peer = if origin.host.contains(':') {
            format!("[{}]:{}", origin.host, origin.port)
        } else {
            format!("{}:{}", origin.host, origin.port)
        };
        Client {
            addrs,
            tls,
            tls_problem,
            idle: Vec::new(),
            max_idle,
            peer,
            opened: 0,
        }
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// How many addresses a new connection may try.
    pub fn addresses(&self) -> usize {
        self.addrs.as_ref().map_or(0, Vec::len)
    }

    /// An idle connection that is still open, if there is one.
    pub fn reuse(&mut self) -> Option<Conn> {
        while let Some(conn) = self.idle.pop() {
            if !conn.is_stale() {
                return Some(conn);
            }
        }
        None
    }

    /// A new connection to the `nth` address, under way.
    pub fn connect(&mut self, nth: usize) -> Result<Conn, String> {
        if let Some(problem) = &self.tls_problem {
            return Err(problem.clone());
        }
        let addrs = self.addrs.as_ref().map_err(Clone::clone)?;
        let Some(addr) = addrs.get(nth).or_else(|| addrs.first()) else {
            return Err(format!("no address for {}", self.peer));
        };
        let sock = crate::platform::connect_nonblocking(addr).map_err(|e| {
            format!(
                "cannot connect to {}: {}",
                self.peer,
                crate::display::error_text(&e)
            )
        })?;
        let tls = match &self.tls {
            None => None,
            Some((config, name)) => Some(
                rustls::ClientConnection::new(Arc::clone(config), name.clone())
                    .map_err(|e| format!("TLS: {e}"))?,
            ),
        };
        self.opened += 1;
        Ok(Conn::new(sock, tls))
    }

    /// Keeps a connection that may carry another request; beyond the
    /// pool's size it is closed.
    pub fn give_back(&mut self, conn: Conn) {
        if self.idle.len() < self.max_idle {
            self.idle.push(conn);
        }
    }
}
