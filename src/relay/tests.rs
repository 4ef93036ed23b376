use super::channel::*;
use super::*;
use std::os::fd::{AsRawFd, OwnedFd};

fn never() -> Option<i32> {
    None
}

/// A pipe whose write end is non-blocking only as far as the test
/// needs: `fill` stuffs it until it is full.
fn pipe() -> (OwnedFd, OwnedFd) {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap()
}

fn fill(write: &OwnedFd) {
    let flags = rustix::fs::fcntl_getfl(write).unwrap();
    rustix::fs::fcntl_setfl(write, flags | rustix::fs::OFlags::NONBLOCK).unwrap();
    let block = [b'.'; 4096];
    while rustix::io::write(write, &block).is_ok() {}
    rustix::fs::fcntl_setfl(write, flags).unwrap();
}

fn read_all(read: &OwnedFd) -> Vec<u8> {
    let flags = rustix::fs::fcntl_getfl(read).unwrap();
    rustix::fs::fcntl_setfl(read, flags | rustix::fs::OFlags::NONBLOCK).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while let Ok(n) = rustix::io::read(read, &mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    rustix::fs::fcntl_setfl(read, flags).unwrap();
    out
}

#[test]
fn whole_lines_are_kept_or_dropped() {
    assert_eq!(whole_lines_within(b"ab\ncd\nef\n", 100), 9);
    assert_eq!(whole_lines_within(b"ab\ncd\nef\n", 7), 6);
    assert_eq!(whole_lines_within(b"ab\ncd\nef\n", 2), 0);
    assert_eq!(count_lines(b"a\nb\n"), 2);
    assert_eq!(count_lines(b"a\nb"), 2);
    assert_eq!(count_lines(b""), 0);
}

#[test]
fn a_full_queue_drops_whole_lines_and_counts_them() {
    let (read, write) = pipe();
    fill(&write);
    let channel = Channel::new("test", 10, false);
    channel.push(write.as_raw_fd(), b"1234\n".to_vec(), true);
    // 5 bytes of room left: "ab\n" fits, "cdef\n" does not.
    channel.push(write.as_raw_fd(), b"ab\ncdef\n".to_vec(), true);
    channel.push(write.as_raw_fd(), b"more\nlines\n".to_vec(), true);
    assert_eq!(
        channel.lock().dropped,
        Tally {
            lines: 3,
            bytes: 16
        }
    );
    // Bytes that must arrive ignore the bound.
    channel.push(write.as_raw_fd(), vec![b'r'; 100], false);
    let notices = channel.take_notices();
    assert!(
        notices.contains("3 lines of output dropped (16 bytes)"),
        "{notices}"
    );
    assert_eq!(channel.take_notices(), "", "said once");
    // Once the reader catches up, everything queued arrives, in order.
    let mut seen = read_all(&read);
    channel.wait(None, &never).unwrap();
    seen.extend(read_all(&read));
    let text = String::from_utf8(seen).unwrap();
    let tail = text.trim_start_matches('.');
    assert_eq!(tail, format!("1234\nab\n{}", "r".repeat(100)));
}

#[test]
fn without_a_thread_pushes_write_only_what_fits() {
    let (read, write) = pipe();
    let channel = Channel::new("test", 1 << 20, false);
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    channel.push(write.as_raw_fd(), big.clone(), false);
    {
        // The push returned with the pipe full and the rest queued.
        let st = channel.lock();
        assert_eq!(st.mode, Mode::Inline);
        assert_eq!(st.queue.len(), 1);
        assert!(st.front_written > 0 && st.front_written < big.len());
    }
    let want = big.len();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        while got.len() < want {
            let n = rustix::io::read(&read, &mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        got
    });
    // The end-of-run wait writes the rest as the reader makes room.
    channel.wait(None, &never).unwrap();
    assert_eq!(reader.join().unwrap(), big);
}

#[test]
fn a_broken_pipe_is_reported_once_and_fails_delivery() {
    let (read, write) = pipe();
    drop(read);
    let channel = Channel::new("test", 1 << 20, false);
    for _ in 0..100 {
        channel.push(write.as_raw_fd(), b"line\n".to_vec(), true);
    }
    let seq = channel.push(write.as_raw_fd(), b"report\n".to_vec(), false);
    assert_eq!(
        channel.wait(Some(seq), &never),
        Err(Undelivered::Failed("Broken pipe".into()))
    );
    let notices = channel.take_notices();
    assert_eq!(notices.lines().count(), 1, "{notices}");
    assert!(notices.contains("cannot write to test: Broken pipe; 100 lines of output lost"));
}

#[test]
fn the_writer_thread_delivers_in_order() {
    let (read, write) = pipe();
    let channel = Channel::new("test", 1 << 20, true);
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = rustix::io::read(&read, &mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if out.ends_with(b"end\n") {
                break;
            }
        }
        out
    });
    let mut want = Vec::new();
    for i in 0..1000 {
        let line = format!("line {i}\n").into_bytes();
        want.extend_from_slice(&line);
        channel.push(write.as_raw_fd(), line, true);
    }
    let seq = channel.push(write.as_raw_fd(), b"end\n".to_vec(), false);
    want.extend_from_slice(b"end\n");
    channel.wait(Some(seq), &never).unwrap();
    assert_eq!(channel.lock().mode, Mode::Thread);
    assert_eq!(reader.join().unwrap(), want);
    // The thread sleeps on the channel from now on and never writes to
    // the descriptor again; keep its number from being reused anyway.
    std::mem::forget(write);
}

#[test]
fn a_stop_signal_ends_the_wait_for_a_stalled_reader() {
    let (_read, write) = pipe();
    fill(&write);
    let channel = Channel::new("test", 1 << 20, false);
    let seq = channel.push(write.as_raw_fd(), b"report\n".to_vec(), false);
    assert_eq!(
        channel.wait(Some(seq), &|| Some(15)),
        Err(Undelivered::Stopped(15))
    );
}
