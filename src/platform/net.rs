//! Sockets for requests scatter makes itself (`--url`): connecting without
//! waiting, and telling whether an idle connection is still usable.

use std::io;

use rustix::io::Errno;

/// Starts a TCP connection without waiting for it: a non-blocking,
/// close-on-exec socket whose `connect` is under way (or done, on
/// loopback). Whether it succeeded shows at the first write, which returns
/// the connection's error (or `EAGAIN` while it is still being made). Small
/// writes go out at once (`TCP_NODELAY`): a request is written whole, and a
/// TLS handshake must not wait for Nagle's delayed acknowledgements.
pub fn connect_nonblocking(addr: &std::net::SocketAddr) -> io::Result<std::net::TcpStream> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    match rustix::net::connect(&fd, addr) {
        Ok(()) | Err(Errno::INPROGRESS) => {}
        Err(err) => return Err(err.into()),
    }
    let _ = rustix::net::sockopt::set_tcp_nodelay(&fd, true);
    Ok(std::net::TcpStream::from(fd))
}

/// Whether an idle connection was closed by its peer (or has bytes nobody
/// asked for, which makes it as unusable): one non-blocking peek.
pub fn peer_closed(sock: &std::net::TcpStream) -> bool {
    use rustix::net::RecvFlags;
    let mut byte = [0u8; 1];
    !matches!(
        rustix::net::recv(sock, &mut byte[..], RecvFlags::PEEK | RecvFlags::DONTWAIT),
        Err(Errno::AGAIN)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_connection_is_made_without_waiting_and_its_closing_is_seen() {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut sock = connect_nonblocking(&addr).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        assert!(!peer_closed(&sock), "open and quiet");
        peer.write_all(b"x").unwrap();
        assert!(wait_for(|| peer_closed(&sock)), "unasked-for bytes");
        drop(peer);
        let refused = {
            drop(listener);
            let mut s = connect_nonblocking(&addr).unwrap();
            wait_for(
                || matches!(s.write(b"x"), Err(e) if e.kind() == io::ErrorKind::ConnectionRefused),
            )
        };
        assert!(refused, "a refused connection shows at the first write");
        let _ = sock.write(b"y");
    }

    fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
        for _ in 0..200 {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}
