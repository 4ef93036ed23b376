#!/bin/sh
# Builds the Debian package with cargo-deb, checks what it holds, installs it
# with dpkg, checks that the installed scatter works, and removes it again.
# Needs root (dpkg -i) and a few minutes; not part of CI.
#
#   tests/packaging/deb.sh
set -eu
cd "$(dirname "$0")/../.."

command -v cargo-deb >/dev/null || cargo install cargo-deb --locked
command -v dpkg-deb >/dev/null || { echo "needs dpkg (Debian/Ubuntu)" >&2; exit 1; }

deb=$(cargo deb --locked 2>&1 | tail -n 1)
[ -f "$deb" ] || { echo "cargo deb did not report a package: $deb" >&2; exit 1; }
echo "built $deb"

contents=$(dpkg-deb -c "$deb")
for path in \
    ./usr/bin/scatter \
    ./usr/share/man/man1/scatter.1.gz \
    ./usr/share/man/man1/scatter-run.1.gz \
    ./usr/share/man/man1/scatter-status.1.gz \
    ./usr/share/bash-completion/completions/scatter \
    ./usr/share/zsh/vendor-completions/_scatter \
    ./usr/share/fish/vendor_completions.d/scatter.fish \
    ./usr/share/doc/scatter/examples/cron.d/scatter \
    ./usr/share/doc/scatter/copyright
do
    echo "$contents" | grep -q " $path\$" || { echo "missing from the package: $path" >&2; echo "$contents" >&2; exit 1; }
done
# The cron entry must not be active: nothing under /etc/cron.d.
if echo "$contents" | grep -q " ./etc/cron.d/"; then
    echo "the package must not enable a cron job" >&2
    exit 1
fi

dpkg -i "$deb"
trap 'dpkg -r scatter >/dev/null' EXIT
/usr/bin/scatter --version
/usr/bin/scatter run --help >/dev/null
zcat /usr/share/man/man1/scatter-run.1.gz | grep -q -- 'max\\-concurrent'
echo "ok: $deb installs, runs and carries its man pages, completions and cron example"
