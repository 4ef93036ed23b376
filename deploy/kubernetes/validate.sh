#!/usr/bin/env bash
# deploy/kubernetes/validate.sh -- validate cronjob.yaml against the
# Kubernetes API schemas.
#
#   deploy/kubernetes/validate.sh             # Kubernetes 1.29, 1.33 and the newest
#   K8S_VERSIONS="1.31 1.34" deploy/kubernetes/validate.sh
#
# Uses the `kubernetes-validate` Python package from PyPI, which ships the
# JSON schemas of every Kubernetes release, so it works offline once
# installed (kubeconform, the usual tool, downloads its schemas from GitHub
# and is not packaged for Debian, PyPI or npm). It is installed into a
# private virtualenv ($KV_VENV, default ~/.cache/scatter-kubernetes-validate);
# nothing else is changed. --strict rejects unknown fields, so a misspelt
# field fails. 1.29 is the oldest release the manifest supports
# (backoffLimitPerIndex is beta, on by default, from 1.29).
#
# Enum values and cross-field rules (completions = parallelism =
# SCATTER_SHARDS, the deadlines against the window) are not in the schemas:
# `cargo test --test deploy` checks those.

set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
VENV=${KV_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/scatter-kubernetes-validate}
VERSIONS=${K8S_VERSIONS:-1.29 1.33 latest}

if [ ! -x "$VENV/bin/kubernetes-validate" ]; then
    echo "validate: installing kubernetes-validate into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate
fi
echo "validate: kubernetes-validate $("$VENV/bin/kubernetes-validate" --version)"

fail=0
for v in $VERSIONS; do
    args=(--strict)
    [ "$v" = latest ] || args+=(--kubernetes-version "$v")
    if ! "$VENV/bin/kubernetes-validate" "${args[@]}" "$HERE/cronjob.yaml"; then
        fail=1
    fi
done

# Negative control: a misspelt field must be rejected, or the check is dead.
bad=$(mktemp)
trap 'rm -f "$bad"' EXIT
sed 's/^\( *\)backoffLimitPerIndex:/\1backoffLimitPerIndx:/' "$HERE/cronjob.yaml" >"$bad"
if "$VENV/bin/kubernetes-validate" --strict --quiet "$bad" >/dev/null 2>&1; then
    echo "validate: FAILED: a misspelt field was not rejected"
    fail=1
else
    echo "validate: ok: negative control (misspelt field) rejected"
fi

if [ "$fail" = 0 ]; then echo "validate: PASSED"; else echo "validate: FAILED"; fi
exit "$fail"
