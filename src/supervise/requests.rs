//! The [`Host`] of a `--url` run: each task is one HTTP request made by
//! scatter itself ([`crate::http`]), under its instance's lock.
//!
//! Starting claims the lock as for a process ([`super::claims`]) and writes
//! a holder record that names scatter itself (`task=request`), then sends
//! the request on a pooled or new connection. The lock is scatter's, held
//! for the request alone: it is released as soon as the response has been
//! read (or the request failed or was ended), and goes with scatter if
//! scatter dies. The request's socket is one more descriptor in the
//! supervisor's `poll`; each wake-up moves every ready request on as far as
//! its socket allows, without waiting.
//!
//! The engine's decisions map as follows: a timeout or a stop signal ends
//! the request at once (there is no process to ask to stop, so the run uses
//! no grace period), an answer below 400 is `ok`, 400 and above fails with
//! its status, and a connection, TLS or protocol error fails with its
//! reason. Ends that happen outside `wait` (a request that could not even
//! be sent, one ended by a signal) are queued and reported at the next
//! `reap` or `wait`, which then does not sleep.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use log::{debug, warn};

use super::Options;
use super::claims::Claims;
use super::host::{Event, Host, Started};
use crate::display::quoted;
use crate::exit;
use crate::http::client::Client;
use crate::http::exchange::{Exchange, Failure, Step};
use crate::http::{self, Expanded, RequestTemplate};
use crate::lock::{self, HolderTask, StartTime};
use crate::outcome::Outcome;
use crate::output::Outputs;
use crate::plan::{Entry, Plan};
use crate::platform::{PollFd, PollFlags, Signals};
use crate::pressure::Gauge;

/// One read from a socket, and one buffer of decoded body.
const BUF: usize = 16 * 1024;

/// A request on its way.
struct Flight {
    exchange: Exchange,
    /// Held until the request ends; dropping it releases the lock.
    _lock: lock::Locked,
    /// For a second attempt on another connection.
    request: Expanded,
    reused: bool,
    /// The address a new connection went to.
    addr: usize,
    /// Attempts after the first.
    retries: usize,
    write: bool,
}

pub struct Requests<'a> {
    plan: &'a Plan,
    template: &'a RequestTemplate,
    signals: Signals,
    outputs: Outputs,
    claims: Claims<'a>,
    client: Client,
    /// Scatter's own pid and start time: the holder of every lock.
    holder: (i32, StartTime),
    flights: HashMap<usize, Flight>,
    /// Requests that ended outside `wait`, for the next `reap` or `wait`.
    ended: Vec<Event>,
    /// The start of a body, until the engine says whether its request
    /// failed.
    heads: HashMap<usize, Vec<u8>>,
    requests: u64,
    buf: Vec<u8>,
    body: Vec<u8>,
    /// `--max-pressure`, `--max-load`: the requests load the host too.
    gauge: Option<Gauge>,
}

impl<'a> Requests<'a> {
    /// Sets up the run's requests; resolves the host's name (an IP literal
    /// needs no lookup) before the first start.
    pub fn new(plan: &'a Plan, opts: &'a Options) -> Result<Self> {
        let template = plan
            .request
            .as_ref()
            .context("a run without --url has no request to make")?;
        let signals = Signals::install().context("cannot install signal handlers")?;
        let outputs = Outputs::new(&opts.output)?;
        let addrs = http::resolve(&template.origin);
        if let Err(why) = &addrs {
            warn!("{why}; every request of this run fails");
        }
        let cap = opts.max_concurrent.map_or(usize::MAX, |c| c.get());
        let client = Client::new(&template.origin, addrs, opts.tls.as_ref(), cap);
        let claims = Claims::new(plan, opts);
        let (pid, start) = claims.run();
        let gauge = opts.pressure.as_ref().map(Gauge::open).transpose()?;
        Ok(Requests {
            plan,
            template,
            signals,
            outputs,
            claims,
            client,
            holder: (pid, StartTime::exact(start.unwrap_or(0))),
            flights: HashMap::new(),
            ended: Vec::new(),
            heads: HashMap::new(),
            requests: 0,
            buf: vec![0; BUF],
            body: vec![0; BUF],
            gauge,
        })
    }

    fn tag(&self, slot: usize) -> String {
        quoted(&self.plan.entries[slot].id)
    }

    /// An exchange on a pooled connection, or on a new one to the `addr`th
    /// address.
    fn exchange(
        &mut self,
        request: &Expanded,
        log: Option<std::fs::File>,
        fresh: bool,
        addr: usize,
    ) -> Result<(Exchange, bool), String> {
        let reused = if fresh { None } else { self.client.reuse() };
        let was_reused = reused.is_some();
        let conn = match reused {
            Some(conn) => conn,
            None => self.client.connect(addr)?,
        };
        let keep = self.outputs.shows_failed_bodies();
        let peer = self.client.peer().to_string();
        let exchange = Exchange::new(conn, peer, self.template.method, request, keep, log)?;
        Ok((exchange, was_reused))
    }

    /// Moves a request on as far as its socket allows.
    fn advance(&mut self, slot: usize) {
        loop {
            let Some(flight) = self.flights.get_mut(&slot) else {
                return;
            };
            match flight.exchange.step(&mut self.buf, &mut self.body) {
                Step::Wait { write } => {
                    flight.write = write;
                    return;
                }
                Step::Done(response) => {
                    if let Some(conn) = response.conn {
                        self.client.give_back(conn);
                    }
                    let outcome = if response.status < 400 {
                        Outcome::Ok
                    } else {
                        if !response.head.is_empty() {
                            self.heads.insert(slot, response.head);
                        }
                        Outcome::HttpStatus(response.status)
                    };
                    debug!("{}: HTTP status {}", self.tag(slot), response.status);
                    self.end(slot, outcome);
                    return;
                }
                Step::Failed(failure) => {
                    let again = retry(
                        &failure,
                        flight,
                        self.template.method.idempotent(),
                        self.client.addresses(),
                    );
                    if let Some(Retry { addr, stale }) = again {
                        // A closed idle connection, or an address that
                        // refused: the server saw nothing, so try again.
                        let request = flight.request.clone();
                        let log = flight.exchange.take_log();
                        debug!(
                            "{}: {} ({}); trying again on a new connection",
                            self.tag(slot),
                            failure.reason,
                            if stale {
                                "a kept-alive connection the server had closed"
                            } else {
                                "the next address"
                            }
                        );
                        match self.exchange(&request, log, true, addr) {
                            Ok((exchange, _)) => {
                                if let Some(flight) = self.flights.get_mut(&slot) {
                                    flight.exchange = exchange;
                                    flight.reused = false;
                                    flight.addr = addr;
                                    flight.retries += 1;
                                }
                                continue;
                            }
                            Err(reason) => {
                                self.end(slot, Outcome::RequestFailed(reason));
                                return;
                            }
                        }
                    }
                    self.end(slot, Outcome::RequestFailed(failure.reason));
                    return;
                }
            }
        }
    }

    /// The request is over: releases its lock and queues its outcome.
    fn end(&mut self, slot: usize, outcome: Outcome) {
        self.flights.remove(&slot);
        self.ended.push(Event::Done { slot, outcome });
    }
}

/// Another attempt: on a new connection to the `addr`th address; `stale`
/// when the last one was a reused connection the server had closed.
#[derive(Debug, PartialEq, Eq)]
struct Retry {
    addr: usize,
    stale: bool,
}

/// Whether a failed attempt is tried again: a GET or HEAD on a reused
/// connection that got no answer at all (the server had closed it while
/// idle), once; or a new connection that failed before anything was sent,
/// on the host's next address, if it has one.
fn retry(failure: &Failure, flight: &Flight, idempotent: bool, addresses: usize) -> Option<Retry> {
    let stale = flight.reused && failure.unanswered && idempotent && flight.retries == 0;
    let next = !flight.reused && failure.unsent && flight.addr + 1 < addresses;
    if stale {
        Some(Retry {
            addr: 0,
            stale: true,
        })
    } else if next {
        Some(Retry {
            addr: flight.addr + 1,
            stale: false,
        })
    } else {
        None
    }
}

impl Host for Requests<'_> {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn stops(&self) -> (usize, i32) {
        self.signals.stops()
    }

    fn start(&mut self, entry: &Entry) -> Started {
        let file = match self.claims.claim(entry) {
            Ok(locked) => locked,
            Err(refused) => return refused,
        };
        let (pid, starttime) = self.holder;
        self.claims
            .record(&file, pid, starttime, HolderTask::Request, &entry.id);
        let log = match self.outputs.body_log(&entry.id) {
            Ok(log) => log,
            Err(err) => {
                return Started::Failed {
                    reason: err.to_string(),
                    code: exit::FAILURE,
                    again: false,
                };
            }
        };
        self.requests += 1;
        let request = self.template.expand(&entry.id);
        match self.exchange(&request, log, false, 0) {
            Ok((exchange, reused)) => {
                self.flights.insert(
                    entry.slot,
                    Flight {
                        exchange,
                        _lock: file,
                        request,
                        reused,
                        addr: 0,
                        retries: 0,
                        write: true,
                    },
                );
                self.advance(entry.slot);
            }
            Err(reason) => {
                drop(file);
                self.ended.push(Event::Done {
                    slot: entry.slot,
                    outcome: Outcome::RequestFailed(reason),
                });
            }
        }
        Started::Running {
            pid: None,
            wall: SystemTime::now(),
            output: false,
        }
    }

    fn hold_starts(&mut self) -> Option<Instant> {
        self.gauge.as_mut()?.hold(Instant::now())
    }

    fn signal(&mut self, slots: &[usize], sig: i32) {
        for &slot in slots {
            if self.flights.contains_key(&slot) {
                debug!("{}: ending the request", self.tag(slot));
                self.end(slot, Outcome::Killed(sig));
            }
        }
    }

    fn reap(&mut self, events: &mut Vec<Event>) {
        // No task here is a process, so a SIGCHLD (and the flag's initial
        // "maybe") means nothing to reap; left set, it would keep every
        // `poll` from sleeping.
        self.signals.take_child();
        events.append(&mut self.ended);
        self.claims.fire_hung();
    }

    fn wait(&mut self, deadline: Option<Instant>, events: &mut Vec<Event>) {
        let timeout = if self.ended.is_empty() {
            deadline.map(|t| t.saturating_duration_since(Instant::now()))
        } else {
            Some(Duration::ZERO)
        };
        let mut slots = Vec::with_capacity(self.flights.len());
        let mut fds = Vec::with_capacity(self.flights.len() + 1);
        fds.push(PollFd::from_borrowed_fd(self.signals.fd(), PollFlags::IN));
        for (slot, flight) in &self.flights {
            if let Some(fd) = flight.exchange.fd() {
                let flags = if flight.write {
                    PollFlags::IN | PollFlags::OUT
                } else {
                    PollFlags::IN
                };
                fds.push(PollFd::from_borrowed_fd(fd, flags));
                slots.push(*slot);
            }
        }
        let ready = super::poll_ready(&self.signals, fds, &slots, timeout);
        for slot in ready {
            self.advance(slot);
        }
        self.reap(events);
    }

    fn ended(&mut self, slot: usize, failed: bool) {
        if let Some(head) = self.heads.remove(&slot)
            && failed
        {
            let tag = self.tag(slot);
            self.outputs.show_failed_body(&tag, &head);
        }
    }

    fn close_output(&mut self, _slot: usize) {}

    fn forget(&mut self, slot: usize) {
        self.heads.remove(&slot);
        self.flights.remove(&slot);
    }

    fn pending(&self) -> Option<Instant> {
        self.claims.pending()
    }
}

impl Drop for Requests<'_> {
    fn drop(&mut self) {
        debug!(
            "{} requests over {} connections to {}",
            self.requests,
            self.client.opened,
            self.client.peer()
        );
        // As for processes: the relay's stop handlers take over first.
        crate::relay::arm();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::exchange::Conn;

    /// A flight on a connection to the `addr`th address (its socket is
    /// never used here).
    fn flight(reused: bool, addr: usize, retries: usize) -> Flight {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let sock = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let request = RequestTemplate::parse("http://127.0.0.1/{}", None, &[], None)
            .unwrap()
            .expand(std::ffi::OsStr::new("x"));
        let exchange = Exchange::new(
            Conn::new(sock, None),
            "peer".into(),
            http::Method::Get,
            &request,
            false,
            None,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let locks = lock::prepare_dirs(dir.path(), std::ffi::OsStr::new("j")).unwrap();
        let lock::Attempt::Acquired(lock) = locks.try_acquire(std::ffi::OsStr::new("x")).unwrap()
        else {
            panic!("not acquired");
        };
        Flight {
            exchange,
            _lock: lock,
            request,
            reused,
            addr,
            retries,
            write: false,
        }
    }

    fn failure(unanswered: bool, unsent: bool) -> Failure {
        Failure {
            reason: "r".into(),
            unanswered,
            unsent,
        }
    }

    #[test]
    fn a_stale_reused_connection_is_retried_once_and_only_for_get_or_head() {
        let unanswered = failure(true, false);
        let stale = Some(Retry {
            addr: 0,
            stale: true,
        });
        assert_eq!(retry(&unanswered, &flight(true, 0, 0), true, 1), stale);
        assert_eq!(retry(&unanswered, &flight(true, 0, 1), true, 1), None);
        assert_eq!(
            retry(&unanswered, &flight(true, 0, 0), false, 1),
            None,
            "POST"
        );
        let answered = failure(false, false);
        assert_eq!(retry(&answered, &flight(true, 0, 0), true, 1), None);
        assert_eq!(retry(&unanswered, &flight(false, 0, 0), true, 1), None);
    }

    #[test]
    fn a_refused_address_leads_to_the_next_one_and_the_last_gives_up() {
        let refused = failure(true, true);
        assert_eq!(
            retry(&refused, &flight(false, 0, 0), false, 3),
            Some(Retry {
                addr: 1,
                stale: false
            })
        );
        assert_eq!(
            retry(&refused, &flight(false, 1, 1), true, 3),
            Some(Retry {
                addr: 2,
                stale: false
            })
        );
        assert_eq!(retry(&refused, &flight(false, 2, 2), true, 3), None);
        assert_eq!(
            retry(&failure(true, false), &flight(false, 0, 0), true, 3),
            None
        );
    }
}
