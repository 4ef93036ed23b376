//! The soak test: many overlapping runs over the same instances, with
//! scatter killed (SIGKILL) or stopped (SIGTERM) at random moments, for at
//! least five minutes. Then, from the tasks' own log:
//!
//! * no instance ever had two tasks running at once;
//! * every run that lived to report accounted for every instance;
//! * no task process is left once the last one could have finished.
//!
//! It is slow, so it is ignored by default. Run it with:
//!
//! ```sh
//! cargo test --release --test soak -- --ignored --nocapture
//! ```
//!
//! `SCATTER_SOAK_SECS` sets the duration (default 300).

// Shared with the fast suite, of which these use only a part.
#[allow(dead_code)]
mod util;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A task that logs its start and end with its pid, sleeps 0-3 s, and on
/// SIGTERM logs its end before leaving. Each line is one small O_APPEND
/// write; times are bash's EPOCHREALTIME in nanoseconds.
const TASK: &str = r#"#!/bin/bash
# No subprocess but the sleep: a forwarded SIGTERM reaches the whole process
# group, and would kill a `date` mid-line.
log=$SOAK_LOG
trap 't=${EPOCHREALTIME/./}; echo "end $1 $$ ${t}000 term" >> "$log"; exit 143' TERM
t=${EPOCHREALTIME/./}
echo "start $1 $$ ${t}000" >> "$log"
sleep "$((RANDOM % 3)).$((RANDOM % 1000))" &
wait $!
# From here a SIGTERM is ignored: the shell is about to end anyway, and
# this way every task writes exactly one end line.
trap '' TERM
t=${EPOCHREALTIME/./}
echo "end $1 $$ ${t}000" >> "$log"
"#;

const INSTANCES: usize = 50;

/// A small deterministic generator; the seed is printed for replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

enum Fate {
    Finish,
    Kill(Instant),
    Term(Instant),
}

struct Launched {
    child: Child,
    fate: Fate,
    signalled: bool,
}

fn signal(child: &Child, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    let _ = rustix::process::kill_process(pid, sig);
}

#[test]
#[ignore = "slow: five minutes of overlapping, killed and stopped runs"]
fn overlapping_killed_runs_never_run_an_instance_twice() {
    let secs: u64 = std::env::var("SCATTER_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("soak: {secs} s, seed {seed}");
    let mut rng = Rng(seed);
    let names: Vec<String> = (0..INSTANCES).map(|i| format!("tenant{i:02}")).collect();
    let fx = util::Fixture::with(&names);
    let task = fx.tmp.path().join("task.sh");
    std::fs::write(&task, TASK).unwrap();
    std::fs::set_permissions(&task, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = fx.tmp.path().join("tasks.log");

    let mut live: Vec<Launched> = Vec::new();
    let (mut runs, mut kills, mut terms, mut reports, mut skips) = (0, 0, 0, 0, 0u64);
    let mut unaccounted = Vec::new();
    let end = Instant::now() + Duration::from_secs(secs);
    let collect =
        |launched: Launched, reports: &mut u64, skips: &mut u64, unaccounted: &mut Vec<String>| {
            let out = launched.child.wait_with_output().unwrap();
            if matches!(launched.fate, Fate::Kill(_)) && launched.signalled {
                return; // SIGKILL: no report to check.
            }
            match serde_json::from_slice::<serde_json::Value>(&out.stdout) {
            Ok(doc) => {
                *reports += 1;
                let counts = doc["counts"].as_object().unwrap();
                let total: u64 = counts.values().map(|v| v.as_u64().unwrap()).sum();
                *skips += counts["skipped"].as_u64().unwrap();
                if total != INSTANCES as u64 {
                    unaccounted.push(format!("a run reported {total} of {INSTANCES}: {doc}"));
                }
            }
            Err(err) => unaccounted.push(format!(
                "a run that was not SIGKILLed printed no report ({err}); status {:?}, stderr {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )),
        }
        };
    while Instant::now() < end {
        let mut cmd = fx.run(&[
            "--window",
            "1s",
            "--timeout",
            "5s",
            "--kill-after",
            "1s",
            "--format",
            "json",
            "--",
        ]);
        cmd.arg(&task)
            .arg("{}")
            .env("SOAK_LOG", &log)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().unwrap();
        runs += 1;
        let at = Instant::now() + Duration::from_millis(rng.below(2500));
        let fate = match rng.below(10) {
            0..=1 => Fate::Kill(at),
            2 => Fate::Term(at),
            _ => Fate::Finish,
        };
        live.push(Launched {
            child,
            fate,
            signalled: false,
        });
        // Launch the next run 0.2-1.2 s later, while earlier ones still wait
        // for their tasks: runs overlap all the time.
        let next = Instant::now() + Duration::from_millis(200 + rng.below(1000));
        while Instant::now() < next {
            for l in &mut live {
                match l.fate {
                    Fate::Kill(at) if !l.signalled && Instant::now() >= at => {
                        signal(&l.child, rustix::process::Signal::KILL);
                        l.signalled = true;
                        kills += 1;
                    }
                    Fate::Term(at) if !l.signalled && Instant::now() >= at => {
                        signal(&l.child, rustix::process::Signal::TERM);
                        l.signalled = true;
                        terms += 1;
                    }
                    _ => {}
                }
            }
            let mut i = 0;
            while i < live.len() {
                if live[i].child.try_wait().unwrap().is_some() {
                    let done = live.swap_remove(i);
                    collect(done, &mut reports, &mut skips, &mut unaccounted);
                } else {
                    i += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    for l in live.drain(..) {
        collect(l, &mut reports, &mut skips, &mut unaccounted);
    }
    // The longest task sleeps 3 s, the timeout is 5 s plus 1 s of grace.
    std::thread::sleep(Duration::from_secs(7));

    let text = std::fs::read_to_string(&log).unwrap();
    let mut open: HashMap<(String, String), u128> = HashMap::new();
    let mut intervals: HashMap<String, Vec<(u128, u128)>> = HashMap::new();
    let mut tasks = 0;
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let (id, pid, t) = (
            f[1].to_string(),
            f[2].to_string(),
            f[3].parse::<u128>().unwrap(),
        );
        match f[0] {
            "start" => {
                tasks += 1;
                open.insert((id, pid), t);
            }
            "end" => {
                let start = open
                    .remove(&(id.clone(), pid))
                    .expect("an end without a start");
                intervals.entry(id).or_default().push((start, t));
            }
            other => panic!("bad log line {other:?}"),
        }
    }
    let mut overlaps = Vec::new();
    for (id, list) in &mut intervals {
        list.sort();
        for pair in list.windows(2) {
            if pair[1].0 < pair[0].1 {
                overlaps.push(format!("{id}: {:?} overlaps {:?}", pair[1], pair[0]));
            }
        }
    }
    let leftover = processes_running(task.to_str().unwrap());
    println!(
        "soak: {runs} runs, {tasks} tasks, {skips} skips, {kills} SIGKILLs, {terms} SIGTERMs, \
         {reports} reports, {} overlaps, {} tasks without an end, {leftover} processes left",
        overlaps.len(),
        open.len()
    );
    assert!(
        overlaps.is_empty(),
        "an instance ran twice at once:\n{}",
        overlaps.join("\n")
    );
    assert!(unaccounted.is_empty(), "{}", unaccounted.join("\n"));
    assert!(
        open.is_empty(),
        "tasks that started but never ended: {open:?}"
    );
    assert_eq!(leftover, 0, "task processes are left behind");
    assert!(tasks > 0 && kills > 0 && terms > 0);
}

/// How many running processes have `needle` in their command line.
pub fn processes_running(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let zombie = stat
                .rfind(')')
                .is_some_and(|i| stat[i + 1..].trim_start().starts_with('Z'));
            !zombie
                && std::fs::read(e.path().join("cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .count()
}
