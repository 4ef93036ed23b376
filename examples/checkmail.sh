#!/bin/sh
# Demo task for scatter: pretends to check one tenant's mail.
#
# scatter runs it once per directory under examples/instances, passing the
# instance id as $1, exactly as the directory is named (spaces and quotes
# included), and the directory itself as $SCATTER_INSTANCE_DIR.
set -eu
id=$1
mailbox=$(sed -n 's/^mailbox=//p' "$SCATTER_INSTANCE_DIR/instance.conf")
printf '%s  slot %s  checking mail of %-10s (%s)\n' \
    "$(date +%T.%3N)" "$SCATTER_SLOT" "$id" "$mailbox"
sleep 0.5
