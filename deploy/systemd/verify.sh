#!/usr/bin/env bash
# deploy/systemd/verify.sh -- check the unit files with `systemd-analyze verify`.
#
#   deploy/systemd/verify.sh                    # builds target/release/scatter
#   SCATTER_BIN=/usr/local/bin/scatter deploy/systemd/verify.sh
#
# systemd-analyze verify loads the units the way systemd would (syntax,
# unknown or misplaced settings, bad values, dependencies) and checks that
# ExecStart's program exists and is executable. It needs no running systemd,
# so it works in a container or CI. Because the service names
# /usr/local/bin/scatter, which need not exist here, the check runs against
# a scratch root (--root=DIR): DIR holds a copy of this system's unit
# directory (for sysinit.target, timers.target, ...), the two units under
# etc/systemd/system, and the scatter binary at the path ExecStart names.
# Nothing outside the scratch directory is touched.
#
# Any output from verify counts as a failure: unknown settings are only
# warnings to systemd (exit status 0), but here they are mistakes. Two
# negative controls make sure the check is alive: a copy of the timer with a
# misspelt setting must draw a warning, and without the binary, verify must
# fail.
#
# Needs: Debian's `systemd` package (installed with apt-get if
# systemd-analyze is missing; that needs root) and, unless SCATTER_BIN is
# given, cargo.

set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
UNITS=(scatter-checkmail.service scatter-checkmail.timer)

say() { printf 'verify: %s\n' "$*"; }
die() {
    say "error: $*" >&2
    exit 2
}

if ! command -v systemd-analyze >/dev/null; then
    [ "$(id -u)" = 0 ] || die "systemd-analyze is missing; install Debian's systemd package (as root)"
    say "installing Debian's systemd package (for systemd-analyze)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq systemd >/dev/null
fi
say "$(systemd-analyze --version | head -n1)"

if [ -n "${SCATTER_BIN:-}" ]; then
    BIN=$SCATTER_BIN
else
    say "building scatter (cargo build --release)"
    (cd "$REPO" && cargo build --release --quiet)
    BIN=$REPO/target/release/scatter
fi
[ -x "$BIN" ] || die "$BIN is not executable"

# The program ExecStart runs: the first word after ExecStart=.
EXEC=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$HERE/scatter-checkmail.service")
case "$EXEC" in
/*) ;;
*) die "ExecStart= should name scatter by an absolute path, found '$EXEC'" ;;
esac

# This system's unit directory (merged /usr or not).
SYSUNITS=
for d in /usr/lib/systemd/system /lib/systemd/system; do
    if [ -e "$d/sysinit.target" ]; then
        SYSUNITS=$d
        break
    fi
done
[ -n "$SYSUNITS" ] || die "cannot find systemd's unit directory (sysinit.target)"

SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT

# make_root DIR: a scratch root with systemd's units, ours and the binary.
make_root() {
    local root=$1
    mkdir -p "$root/usr/lib/systemd" "$root/etc/systemd/system" "$root$(dirname "$EXEC")"
    cp -a "$SYSUNITS" "$root/usr/lib/systemd/system"
    for u in "${UNITS[@]}"; do
        install -m 0644 "$HERE/$u" "$root/etc/systemd/system/$u"
    done
    install -m 0755 "$BIN" "$root$EXEC"
}

OPTS=(--man=no)
# Only our units' own problems, not those of the system's units they pull
# in (systemd >= 250 has the option; older versions check ours only anyway).
if systemd-analyze --help | grep -q -- --recursive-errors; then
    OPTS+=(--recursive-errors=no)
fi

# run_verify ROOT: prints verify's output; returns its exit status.
run_verify() {
    systemd-analyze verify --root="$1" "${OPTS[@]}" "${UNITS[@]}" 2>&1
}

fail=0

# 1. The units as shipped.
make_root "$SCRATCH/ok"
say "systemd-analyze verify --root=SCRATCH ${OPTS[*]} ${UNITS[*]}"
set +e
out=$(run_verify "$SCRATCH/ok")
rc=$?
set -e
if [ "$rc" = 0 ] && [ -z "$out" ]; then
    say "ok: no errors, no warnings"
else
    say "FAILED (exit $rc):"
    printf '%s\n' "$out" | sed 's/^/    /'
    fail=1
fi

# 2. Negative control: a misspelt setting must be reported.
make_root "$SCRATCH/typo"
sed -i 's/^AccuracySec=/AccuracySecs=/' "$SCRATCH/typo/etc/systemd/system/scatter-checkmail.timer"
set +e
out=$(run_verify "$SCRATCH/typo")
set -e
if printf '%s\n' "$out" | grep -q "AccuracySecs"; then
    say "ok: negative control (misspelt AccuracySec=) is reported"
else
    say "FAILED: a misspelt setting went unreported; the check is not working: $out"
    fail=1
fi

# 3. Negative control: without the binary, verify must fail.
make_root "$SCRATCH/nobin"
rm -f "$SCRATCH/nobin$EXEC"
set +e
out=$(run_verify "$SCRATCH/nobin")
rc=$?
set -e
if [ "$rc" != 0 ] && printf '%s\n' "$out" | grep -q "$EXEC"; then
    say "ok: negative control (no $EXEC) fails verify"
else
    say "FAILED: verify did not notice the missing $EXEC (exit $rc): $out"
    fail=1
fi

# Information only: when the timer fires, and the hardening score.
say "next elapses of OnCalendar=minutely:"
systemd-analyze calendar --iterations=2 minutely | sed -n 's/^ *\(Next elapse\|Iter. #2\): /    /p'
if systemd-analyze security --help 2>/dev/null | grep -q -- --offline; then
    score=$(systemd-analyze security --offline=yes --root="$SCRATCH/ok" scatter-checkmail.service 2>/dev/null |
        sed -n 's/.*Overall exposure level for \(.*\)/\1/p')
    [ -n "$score" ] && say "systemd-analyze security --offline: $score"
fi

if [ "$fail" = 0 ]; then
    say "PASSED"
else
    say "FAILED"
fi
exit "$fail"
