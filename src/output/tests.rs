use super::lines::*;
use super::*;

fn cut(chunks: &[&[u8]]) -> (Vec<Vec<u8>>, Vec<u8>) {
    let mut lines = Lines::default();
    let mut pieces = Vec::new();
    for chunk in chunks {
        lines.feed(chunk, &mut |p: &[u8]| pieces.push(p.to_vec()));
    }
    (pieces, lines.partial.clone())
}

#[test]
fn partial_lines_wait_for_their_newline() {
    let (pieces, rest) = cut(&[b"one\ntw", b"o\nthr"]);
    assert_eq!(pieces, [b"one\n".to_vec(), b"two\n".to_vec()]);
    assert_eq!(rest, b"thr");
}

#[test]
fn flush_writes_the_rest() {
    let mut lines = Lines::default();
    let mut out = Vec::new();
    lines.feed(b"no newline", &mut |p: &[u8]| tagged(&mut out, "t", p));
    assert!(out.is_empty());
    lines.flush(&mut |p: &[u8]| tagged(&mut out, "t", p));
    assert_eq!(out, b"t: no newline\n");
    assert_eq!(lines.held(), 0, "memory handed back");
}

#[test]
fn endless_lines_are_cut_at_max_line() {
    let data = vec![b'x'; 3 * MAX_LINE + 10];
    let (pieces, rest) = cut(&[&data[..1000], &data[1000..]]);
    assert_eq!(pieces.len(), 3);
    assert!(pieces.iter().all(|p| p.len() == MAX_LINE));
    assert_eq!(rest.len(), 10);
}

#[test]
fn cutting_is_linear() {
    // 64 MiB without a newline, fed in pipe-sized reads: quadratic
    // rescanning would take minutes; one pass takes milliseconds.
    let chunk = vec![b'x'; READ_SIZE];
    let mut lines = Lines::default();
    let mut total = 0usize;
    let started = std::time::Instant::now();
    for _ in 0..(64 << 20) / READ_SIZE {
        lines.feed(&chunk, &mut |p: &[u8]| total += p.len());
    }
    assert_eq!(total, 64 << 20);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

fn on_failure() -> Outputs {
    Outputs::new(&OutputMode::OnFailure).unwrap()
}

fn spool(outputs: &Outputs, slot: usize, content: &[u8]) -> PathBuf {
    let (mut file, path) = outputs.spool_file(slot).unwrap();
    std::io::Write::write_all(&mut file, content).unwrap();
    path
}

#[test]
fn a_long_spool_shows_its_last_64_kib_after_a_cut_line() {
    let outputs = on_failure();
    let mut content = vec![b'a'; 1_000_000];
    content.extend_from_slice(b"\nthe end\n");
    let path = spool(&outputs, 0, &content);
    let out = outputs.spool_tail("t", &path).unwrap().out;
    let text = String::from_utf8(out).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "t: [… 912.6 KiB of output cut; the last 64 KiB follow]"
    );
    // The rest: 64 KiB of the task's own bytes (two of them the
    // newlines `lines()` strips), cut into tagged pieces.
    let body: usize = lines.clone().map(|l| l.len() - "t: ".len()).sum();
    assert_eq!(body + 2, SHOWN_PER_TASK as usize);
    assert_eq!(lines.count(), 5, "4 pieces of 16 KiB, the last line");
    assert!(text.ends_with("t: the end\n"));
    assert_eq!(outputs.shown.get(), SHOWN_PER_TASK);
}

#[test]
fn a_long_tag_on_empty_lines_is_bounded_by_the_relay_queue() {
    let outputs = on_failure();
    let path = spool(&outputs, 0, &[b'\n'; 64 * 1024]);
    // As a quoted id of 255 bytes that all need escaping.
    let tag = "x".repeat(1020);
    let tail = outputs.spool_tail(&tag, &path).unwrap();
    assert!(
        tail.out.len() <= crate::relay::QUEUE_LIMIT,
        "{}",
        tail.out.len()
    );
    let shown = tail.out.len() / (tag.len() + 3);
    assert_eq!(shown as u64 + tail.over(), 64 * 1024);
    assert!(tail.over() > 60_000);
}

#[test]
fn a_short_spool_is_shown_whole() {
    let outputs = on_failure();
    let path = spool(&outputs, 0, b"one\ntwo");
    let out = outputs.spool_tail("t", &path).unwrap().out;
    assert_eq!(out, b"t: one\nt: two\n");
}

#[test]
fn the_run_limit_holds_back_later_failures() {
    let outputs = on_failure();
    let content = vec![b'z'; 200_000];
    let whole = (SHOWN_PER_RUN / SHOWN_PER_TASK) as usize;
    for slot in 0..whole + 3 {
        let path = spool(&outputs, slot, &content);
        let out = outputs.spool_tail("t", &path).unwrap().out;
        assert_eq!(out.is_empty(), slot >= whole, "slot {slot}");
    }
    assert_eq!(outputs.shown.get(), SHOWN_PER_RUN);
    // Empty output of a failed task is not "held back".
    let path = spool(&outputs, 99, b"");
    outputs.spool_tail("t", &path).unwrap();
    assert_eq!(
        outputs.held_back().unwrap(),
        "scatter: [output of 3 more failed tasks not shown: the run's 1 MiB limit was reached]\n"
    );
    outputs.not_shown.set(0);
}

#[test]
fn output_modes() {
    assert_eq!(OutputMode::parse("tag").unwrap(), OutputMode::Tag);
    assert_eq!(
        OutputMode::parse("dir=/x").unwrap(),
        OutputMode::Dir("/x".into())
    );
    assert!(OutputMode::parse("dir=").is_err());
    assert!(
        OutputMode::parse("file")
            .unwrap_err()
            .contains("on-failure")
    );
}
