#!/usr/bin/env bash
# tests/cron/real-cron.sh -- run the shipped cron.d/scatter entry under
# Debian's real cron daemon and check what it did.
#
# What it does:
#   1. takes scatter from $SCATTER_BIN, or builds it (cargo build --release);
#   2. installs Debian's `cron` package if the cron daemon is missing;
#   3. makes a demo in a temporary directory: 6 instances (one named
#      "big co", with a space) and a recorder task that appends one line per
#      start, "ID<TAB>START_NS<TAB>SCATTER_WINDOW_START<TAB>SCATTER_SLOT<TAB>PID",
#      with a single write(2) to an O_APPEND log;
#   4. copies cron.d/scatter to /etc/cron.d/scatter-realcron-test with sed
#      rewriting only what must point at the demo: the instances directory,
#      the lock directory, the task (`wget ... {}` becomes `record {}`) and
#      PATH (the demo's bin directory, holding `scatter` and `record`, goes
#      first). Everything else is as shipped, so the entry itself (PATH=,
#      `* * * * * root scatter run ...`, --name, --window 60s) is what runs;
#   5. starts the cron daemon (`cron -f` in the background, unless one is
#      already running, which is then used and left running);
#   6. waits for two complete runs, started by cron on two consecutive minute
#      boundaries (about 2.5 to 3.5 minutes, depending on when it starts);
#   7. stops the cron daemon it started, removes the entry, waits for the
#      runs' tasks to finish, and checks the log:
#        * every run (grouped by SCATTER_WINDOW_START) started every instance
#          exactly once, in name order (slot k is the k-th id);
#        * there were at least 2 runs, on consecutive minutes, each started
#          by cron within a few seconds after the minute boundary;
#        * the starts are spread across the minute: slot k starts
#          k * 60s/6 = k * 10 s after the run's start (within 1 s), so the
#          first start is in the first seconds of the minute and the last
#          one at about 50 s;
#   8. prints a summary and exits 0, or 1 on any failure (2 for a setup error).
#
# It needs root (it writes /etc/cron.d and may run apt-get), Debian (or
# Ubuntu), python3, and about 3 minutes of wall-clock time. That is too slow
# for CI, so it is not part of .ci/run or `cargo test`: run it by hand after
# changing the cron entry or the scheduler:
#
#   sudo tests/cron/real-cron.sh
#   sudo SCATTER_BIN=/usr/local/bin/scatter tests/cron/real-cron.sh
#
# Environment:
#   SCATTER_BIN   scatter binary to test (default: build target/release/scatter)
#   KEEP_DEMO=1   keep the demo directory (it is kept anyway on failure)
#
# It never touches /etc/cron.d/scatter or any other entry; it removes its own
# entry on every exit path (trap), and stops only the cron daemon it started
# itself, by its pid.

set -euo pipefail

ENTRY_NAME=scatter-realcron-test # cron ignores /etc/cron.d names with a dot
ENTRY=/etc/cron.d/$ENTRY_NAME
NINST=6
WINDOW=60

say() { printf 'real-cron: %s\n' "$*"; }
die() {
    say "error: $*" >&2
    exit 2
}

[ "$(id -u)" = 0 ] || die "must run as root (it installs /etc/cron.d/$ENTRY_NAME)"
command -v python3 >/dev/null || die "python3 is needed (recorder task and analysis)"

REPO=$(cd "$(dirname "$0")/../.." && pwd)
SHIPPED=$REPO/cron.d/scatter
[ -f "$SHIPPED" ] || die "no $SHIPPED"

# 1. scatter
if [ -n "${SCATTER_BIN:-}" ]; then
    BIN=$(readlink -f "$SCATTER_BIN")
else
    say "building scatter (cargo build --release)"
    (cd "$REPO" && cargo build --release --quiet)
    BIN=$REPO/target/release/scatter
fi
[ -x "$BIN" ] || die "scatter binary $BIN is not executable"
say "scatter: $BIN ($("$BIN" --version))"

# 2. cron
cron_running() { [ -s /run/crond.pid ] && kill -0 "$(cat /run/crond.pid)" 2>/dev/null; }
CRON_WAS_RUNNING=no
cron_running && CRON_WAS_RUNNING=yes
if ! command -v cron >/dev/null; then
    say "installing Debian's cron package"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq cron >/dev/null
fi
CRON=$(command -v cron) || die "cron is not installed"

# 3. demo
DEMO=$(mktemp -d /tmp/scatter-realcron.XXXXXX)
chmod 0755 "$DEMO"
mkdir -p "$DEMO/instances" "$DEMO/bin"
for id in alpha beta "big co" delta echo foxtrot; do
    mkdir "$DEMO/instances/$id"
done
LOG=$DEMO/starts.log
: >"$LOG"
# The real interpreter, not a pyenv-style shim that needs a login environment.
PY=$(python3 -c 'import sys; print(sys.executable)')
cat >"$DEMO/bin/record" <<EOF
#!$PY -S
# Appends one line per start to $LOG, in one write(2) on an O_APPEND
# descriptor, so lines of concurrent tasks never mix. The time is taken
# first thing.
import time
now = time.time_ns()
import os, sys
line = "%s\t%d\t%s\t%s\t%d\n" % (sys.argv[1], now, os.environ.get("SCATTER_WINDOW_START", "?"),
                                 os.environ.get("SCATTER_SLOT", "?"), os.getpid())
fd = os.open("$LOG", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
os.write(fd, line.encode("utf-8", "surrogateescape"))
os.close(fd)
EOF
chmod 0755 "$DEMO/bin/record"
ln -s "$BIN" "$DEMO/bin/scatter"

# 4. the entry
# Only the active (non-comment) lines are rewritten; each rewrite must hit.
sed -e "/^[^#]/s|^PATH=|PATH=$DEMO/bin:|" \
    -e "/^[^#]/s|/srv/instances|$DEMO/instances|g" \
    -e "/^[^#]/s|--lock-dir /run/scatter |--lock-dir $DEMO/locks |g" \
    -e "/^[^#]/s|-- wget -O /dev/null -q --spider http://127.0.0.1/{}/checkmail.php\$|-- record {}|" \
    "$SHIPPED" >"$DEMO/entry"
ACTIVE=$(grep -Ev '^[[:space:]]*(#|$)' "$DEMO/entry" | grep -Ev '^[A-Za-z_]+=' || true)
[ "$(printf '%s\n' "$ACTIVE" | grep -c .)" = 1 ] ||
    die "expected exactly one cron line in $SHIPPED, found: $ACTIVE"
CMD=$(printf '%s\n' "$ACTIVE" | awk '{ $1=$2=$3=$4=$5=$6=""; sub(/^ +/, ""); print }')
case "$CMD" in
"scatter run "*"--instances $DEMO/instances "*"--lock-dir $DEMO/locks "*"-- record {}") ;;
*) die "the sed rewrite of the shipped entry did not apply (has cron.d/scatter changed?): $CMD" ;;
esac
grep -q "^PATH=$DEMO/bin:" "$DEMO/entry" || die "no PATH= line rewritten in the shipped entry"
say "entry under test:"
printf '    %s\n' "$(grep -E '^[A-Z]+=' "$DEMO/entry" | tr '\n' ' ')" "$ACTIVE"

# Pre-flight: the same command as a dry run, with the entry's PATH, so a
# broken entry fails now rather than after three minutes.
ENTRY_PATH=$(sed -n 's/^PATH=//p' "$DEMO/entry")
DRY=${CMD/scatter run /scatter run --dry-run }
env -i PATH="$ENTRY_PATH" /bin/sh -c "$DRY" >"$DEMO/plan.txt" ||
    die "dry run of the entry failed: $DRY"
sed 's/^/    /' "$DEMO/plan.txt"

CRON_PID=
cleanup() {
    rm -f "$ENTRY"
    if [ -n "$CRON_PID" ] && kill -0 "$CRON_PID" 2>/dev/null; then
        kill "$CRON_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

install -m 0644 -o root -g root "$DEMO/entry" "$ENTRY"

# 5. the daemon
if cron_running && [ "$CRON_WAS_RUNNING" = yes ]; then
    say "using the cron daemon already running (pid $(cat /run/crond.pid)); it is left running"
elif cron_running; then
    # Started by the package's postinst just now: ours to stop at the end.
    CRON_PID=$(cat /run/crond.pid)
    say "using the cron daemon the package installation started (pid $CRON_PID); it is stopped at the end"
else
    "$CRON" -f -L 15 </dev/null >"$DEMO/cron.out" 2>&1 &
    CRON_PID=$!
    sleep 1
    kill -0 "$CRON_PID" 2>/dev/null || {
        cat "$DEMO/cron.out" >&2
        die "cron -f exited at once"
    }
    say "started $CRON -f (pid $CRON_PID)"
fi

# 6. wait for two runs on consecutive minutes. The first boundary counted
# is the first one at least 5 s away, so that cron has read the new entry.
NOW=$(date +%s)
M1=$(((NOW + 5 + 59) / 60 * 60))
STOP=$((M1 + 2 * 60 - 5)) # the second run's last start is at M1 + 60 + 50
say "runs expected at $(date -d "@$M1" +%T) and $(date -d "@$((M1 + 60))" +%T); waiting until $(date -d "@$STOP" +%T) ($((STOP - NOW)) s)"
while [ "$(date +%s)" -lt "$STOP" ]; do
    sleep 5
done

# 7. stop the daemon, remove the entry, let the tasks finish
cleanup
CRON_PID=
say "cron stopped and $ENTRY removed"
# A run still going has the demo's instances directory in its command line.
# (The bracket keeps grep from matching its own command line.)
for _ in $(seq 30); do
    grep -qs -e "$DEMO/instance[s]" /proc/[0-9]*/cmdline || break
    sleep 1
done

say "analysing $LOG ($(wc -l <"$LOG") starts)"
set +e
python3 - "$LOG" "$NINST" "$WINDOW" "$M1" "$DEMO/instances" <<'PYEOF'
import os, sys, time
from collections import defaultdict

log, ninst, window, m1, instdir = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
ids = sorted(os.listdir(instdir), key=lambda s: s.encode())
assert len(ids) == ninst
interval = window / ninst
failures = []
def fail(msg):
    failures.append(msg)

runs = defaultdict(list)
for line in open(log, encoding="utf-8", errors="surrogateescape"):
    parts = line.rstrip("\n").split("\t")
    if len(parts) != 5:
        fail("malformed log line: %r" % line)
        continue
    iid, ns, wstart, slot, pid = parts
    runs[wstart].append((iid, int(ns) / 1e9, int(slot), int(pid)))

if not runs:
    fail("cron started no run at all (is the cron daemon able to run jobs here? see syslog)")

print()
print("%-22s %-6s %-11s %s" % ("run (window start)", "minute", "cron delay", "starts: id +seconds after the window start"))
minutes = []
max_late = 0.0
for wstart in sorted(runs, key=float):
    ws = float(wstart)
    minute = int(ws // 60 * 60)
    minutes.append(minute)
    starts = sorted(runs[wstart], key=lambda r: r[1])
    delay = ws - minute
    print("%-22s %-6s %-11s %s" % (
        wstart, time.strftime("%H:%M", time.localtime(minute)), "%.3fs" % delay,
        "  ".join("%r +%.2f" % (iid, t - ws) for iid, t, _slot, _pid in starts)))
    if delay > 5:
        fail("run %s started %.1f s after its minute boundary (cron should start it within seconds)" % (wstart, delay))
    got = sorted((s[0] for s in starts), key=lambda s: s.encode())
    if got != ids:
        fail("run %s: instances started %r, expected each of %r exactly once" % (wstart, got, ids))
        continue
    for iid, t, slot, pid in starts:
        if ids[slot] != iid:
            fail("run %s: slot %d is %r, expected %r (name order)" % (wstart, slot, iid, ids[slot]))
        late = (t - ws) - slot * interval
        max_late = max(max_late, late)
        if not (-0.05 <= late <= 1.0):
            fail("run %s: %r (slot %d) started at +%.3fs, expected +%.1fs (lateness %.3fs)" % (
                wstart, iid, slot, t - ws, slot * interval, late))
    first = starts[0][1] - minute
    last = starts[-1][1] - minute
    print("%-22s first start %.2f s, last %.2f s into the minute" % ("", first, last))
    if first > 5:
        fail("run %s: first start %.1f s into the minute" % (wstart, first))
    if not (window - interval - 1 <= last < window):
        fail("run %s: last start %.1f s into the minute, expected about %.0f s" % (wstart, last, window - interval))
    gaps = [b[1] - a[1] for a, b in zip(starts, starts[1:])]
    if any(abs(g - interval) > 1.0 for g in gaps):
        fail("run %s: gaps between starts %s, expected %.0f s" % (wstart, ["%.2f" % g for g in gaps], interval))

if len(set(minutes)) != len(minutes):
    fail("two runs in one minute: %s" % minutes)
full = [m for m in minutes if m1 <= m <= m1 + 60]
if len(full) < 2:
    fail("expected runs at both %d and %d, got runs in minutes %s" % (m1, m1 + 60, minutes))
if any(b - a != 60 for a, b in zip(minutes, minutes[1:])):
    fail("runs are not on consecutive minutes: %s" % minutes)
if any(m > m1 + 60 for m in minutes):
    fail("a run started after cron should have been stopped: %s" % minutes)

print()
print("runs: %d, instances per run: %d, interval %.0f s, worst start lateness %.0f ms" % (
    len(runs), ninst, interval, max_late * 1000))
if failures:
    for f in failures:
        print("FAIL: " + f)
    print("real-cron: FAILED (%d problems)" % len(failures))
    sys.exit(1)
print("real-cron: PASSED: %d runs by cron, every instance once per run, starts %.0f s apart" % (len(runs), interval))
PYEOF
rc=$?
set -e

if [ "$rc" = 0 ] && [ "${KEEP_DEMO:-}" != 1 ]; then
    rm -rf "$DEMO"
else
    say "demo kept in $DEMO (log: $LOG)"
fi
exit "$rc"
