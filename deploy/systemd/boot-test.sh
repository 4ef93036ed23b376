#!/usr/bin/env bash
# deploy/systemd/boot-test.sh -- run the units for real, under systemd as
# PID 1 of a throw-away systemd-nspawn container, and check what they do.
#
#   sudo deploy/systemd/boot-test.sh
#   sudo SCATTER_BIN=target/release/scatter deploy/systemd/boot-test.sh
#
# verify.sh checks the unit files' syntax; this checks their behaviour,
# which only a real systemd shows: that ${RUNTIME_DIRECTORY} and
# ${STATE_DIRECTORY} expand in ExecStart=, that the hardening lets scatter
# start its tasks, that the timer fires on the minute, that the failure
# report reaches the journal and fails the unit, that the lock files survive
# the end of a run (RuntimeDirectoryPreserve=yes), and that `systemctl stop`
# stops a run through scatter (KillMode=mixed, exit 143 counted as success).
#
# How: the container boots this machine's own OS, read-only (a bind mount of
# / in a private mount namespace, --volatile=state), with the two units as
# its /etc/systemd/system (timer enabled), the scatter binary as
# /usr/local/bin/scatter and a demo /srv/instances of 4 tenants. The
# container shares the host's network, so the units' wget task reaches a
# small Python web server this script runs on 127.0.0.1:80; it answers 200
# for 3 tenants and 404 for "globex". The unit files are used unchanged.
#
# Takes about 2.5 minutes: it waits for one full run, then stops the next one
# 12 s in. Needs root, a kernel that lets systemd-nspawn run (it does in a
# VM or on a host; not in every container), python3, port 80 free on
# 127.0.0.1, and Debian's systemd-container package (installed if missing).
# Not part of CI.

set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
IDS=(acme "big co" globex initech)
FAILING=globex

say() { printf 'boot-test: %s\n' "$*"; }
die() {
    say "error: $*" >&2
    exit 2
}

[ "$(id -u)" = 0 ] || die "must run as root (systemd-nspawn)"
command -v python3 >/dev/null || die "python3 is needed (the web server the task talks to)"
if ! command -v systemd-nspawn >/dev/null; then
    say "installing Debian's systemd-container package"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq systemd-container >/dev/null
fi
[ -d /srv ] && [ -d /etc/systemd/system ] && [ -d /usr/local/bin ] ||
    die "/srv, /etc/systemd/system and /usr/local/bin must exist (they are mount points in the container)"

if [ -n "${SCATTER_BIN:-}" ]; then
    BIN=$(readlink -f "$SCATTER_BIN")
else
    say "building scatter (cargo build --release)"
    (cd "$REPO" && cargo build --release --quiet)
    BIN=$REPO/target/release/scatter
fi
[ -x "$BIN" ] || die "$BIN is not executable"

T=$(mktemp -d /tmp/scatter-boot-test.XXXXXX)
chmod 0755 "$T"
mkdir -p "$T/root" "$T/system/timers.target.wants" "$T/bin" "$T/srv/instances" "$T/www"
install -m 0644 "$HERE/scatter-checkmail.service" "$HERE/scatter-checkmail.timer" "$T/system/"
ln -s ../scatter-checkmail.timer "$T/system/timers.target.wants/scatter-checkmail.timer"
install -m 0755 "$BIN" "$T/bin/scatter"
for id in "${IDS[@]}"; do
    mkdir "$T/srv/instances/$id"
    if [ "$id" != "$FAILING" ]; then
        mkdir "$T/www/$id"
        echo ok >"$T/www/$id/checkmail.php"
    fi
done

WEB_PID=
NSPAWN_PID=
CPID=
cleanup() {
    if [ -n "$CPID" ] && kill -0 "$CPID" 2>/dev/null; then
        nsenter -t "$CPID" -a systemctl poweroff 2>/dev/null || true
        for _ in $(seq 20); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 1; done
    fi
    [ -n "$NSPAWN_PID" ] && kill "$NSPAWN_PID" 2>/dev/null || true
    [ -n "$WEB_PID" ] && kill "$WEB_PID" 2>/dev/null || true
    if [ "${KEEP:-}" != 1 ]; then rm -rf "$T"; else say "kept $T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The web server: one line per request with the time in nanoseconds.
cat >"$T/web.py" <<'EOF'
import functools, http.server, sys, time
class H(http.server.SimpleHTTPRequestHandler):
    def log_request(self, code="-", size="-"):
        with open(sys.argv[2], "a") as f:
            f.write("%d %s %s\n" % (time.time_ns(), self.path, int(code)))
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer.allow_reuse_address = True
http.server.ThreadingHTTPServer(("127.0.0.1", 80),
    functools.partial(H, directory=sys.argv[1])).serve_forever()
EOF
python3 "$T/web.py" "$T/www" "$T/web.log" 2>"$T/web.err" &
WEB_PID=$!
sleep 1
kill -0 "$WEB_PID" 2>/dev/null || die "cannot serve on 127.0.0.1:80: $(cat "$T/web.err")"

say "booting the container"
unshare -m sh -c '
    mount --make-rprivate / &&
    mount --bind / "$0/root" &&
    mount -o remount,bind,ro "$0/root" &&
    exec systemd-nspawn -D "$0/root" --read-only --volatile=state --register=no --keep-unit \
        -M scatter-boot-test \
        --bind-ro="$0/system:/etc/systemd/system" \
        --bind-ro="$0/bin:/usr/local/bin" \
        --bind="$0/srv:/srv" \
        -b --console=pipe' "$T" >"$T/boot.log" 2>&1 &
NSPAWN_PID=$!
for _ in $(seq 30); do
    CPID=$(ps -o pid= --ppid "$NSPAWN_PID" 2>/dev/null | head -n1 | tr -d " " || true)
    [ -n "$CPID" ] && break
    sleep 1
done
[ -n "$CPID" ] || die "the container did not start: $(tail -5 "$T/boot.log")"
IN=(nsenter -t "$CPID" -a)
for _ in $(seq 60); do
    state=$("${IN[@]}" systemctl is-system-running 2>/dev/null || true)
    case "$state" in running | degraded) break ;; esac
    sleep 1
done
say "container up (systemd pid $CPID, state $state)"
"${IN[@]}" systemctl is-active --quiet scatter-checkmail.timer || die "the timer is not active in the container"

# One full run: the first minute boundary at least 3 s away.
NOW=$(date +%s)
M=$(((NOW + 3 + 59) / 60 * 60))
say "waiting for the run at $(date -d "@$M" +%T) to finish ($((M + 45 - NOW)) s)"
while [ "$(date +%s)" -lt $((M + 45)) ]; do sleep 2; done

fail=0
check() { # description, then a command that must succeed
    local what=$1
    shift
    if "$@"; then say "ok: $what"; else
        say "FAIL: $what"
        fail=1
    fi
}

show() { "${IN[@]}" systemctl show -p "$1" --value scatter-checkmail.service; }
"${IN[@]}" journalctl --no-pager -o short-precise -u scatter-checkmail.service >"$T/journal1.txt" || true
sed 's/^/    /' "$T/journal1.txt"
check "the run failed because of $FAILING (Result=exit-code, status 1)" \
    test "$(show Result)/$(show ExecMainStatus)" = "exit-code/1"
check "scatter's report is in the journal" grep -q "$FAILING: exited with status 8" "$T/journal1.txt"
check "the summary is in the journal" grep -q "1 of 4 instances failed" "$T/journal1.txt"
check "lock files kept after the run in /run/scatter-checkmail/checkmail (RuntimeDirectoryPreserve=yes)" \
    test "$("${IN[@]}" sh -c 'ls /run/scatter-checkmail/checkmail/*.lock | wc -l')" = 4
check "state in /var/lib/scatter/checkmail, read by a plain scatter status --name checkmail" \
    "${IN[@]}" sh -c 'scatter status --name checkmail >/tmp/status.txt; [ $? = 1 ] && grep -q "1 of 4 failing" /tmp/status.txt'

# The requests of that run, as the web server saw them.
python3 - "$T/web.log" "$M" "${#IDS[@]}" <<'EOF' || fail=1
import sys, urllib.parse
log, m, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
reqs = []
for line in open(log):
    ns, path, code = line.split(" ", 2)
    t = int(ns) / 1e9 - m
    if 0 <= t < 60:
        reqs.append((t, urllib.parse.unquote(path).split("/")[1], code.strip()))
print("boot-test: requests of that minute: " + ", ".join("%r +%.2fs %s" % (i, t, c) for t, i, c in reqs))
ok = len(reqs) == n and len({i for _, i, _ in reqs}) == n
interval = 50.0 / n
ok = ok and all(abs(t - k * interval) < 2.0 for k, (t, _, _) in enumerate(reqs))
print("boot-test: %s: each tenant requested once, %.1f s apart from the minute on (window 50s)" % ("ok" if ok else "FAIL", interval))
sys.exit(0 if ok else 1)
EOF

# Stop the next run 12 s in.
while [ "$(date +%s)" -lt $((M + 72)) ]; do sleep 1; done
"${IN[@]}" systemctl stop scatter-checkmail.service 2>/dev/null
sleep 1
"${IN[@]}" journalctl --no-pager -o short-precise -u scatter-checkmail.service --since "@$((M + 60))" >"$T/journal2.txt" || true
sed 's/^/    /' "$T/journal2.txt"
check "systemctl stop: scatter stopped its run on SIGTERM" grep -q "stopped by SIGTERM" "$T/journal2.txt"
check "systemctl stop: not a failure (Result=success, status 143)" \
    test "$(show Result)/$(show ExecMainStatus)" = "success/143"

if [ "$fail" = 0 ]; then say "PASSED"; else
    say "FAILED"
    KEEP=1
fi
exit "$fail"
