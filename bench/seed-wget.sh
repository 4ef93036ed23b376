#!/bin/sh
# seed-wget.sh: the shell script scatter replaces, with its own task: wget
# --spider of the tenant's checkmail.php. Scenario (f) of bench/run.
#
# Source: ZeyOS, Benjamin Coutu, "High Performance Web: Efficient and
# scalable cronjobs" (2017), the final script of the "Production-ready"
# section (/opt/checkmail.sh). Adapted as bench/seed.sh is (paths and
# window from the environment; see there), except that the task is the
# article's own wget call, against the benchmark's local server:
#   http://127.0.0.1/$ID/checkmail.php -> $BENCH_URL_BASE/$ID/checkmail.php
# with wget -q --spider, as in the other contenders of scenario (f).

INSTANCES="$(find "$BENCH_INSTANCES" -mindepth 1 -maxdepth 1 -printf "%f\n")"

if [ -z "$INSTANCES" ]; then
  exit
fi

INTERVAL=$(echo "$INSTANCES" | wc -w | awk -v W="$BENCH_WINDOW" '{print W / $1}')

for ID in $(echo "$INSTANCES"); do
  flock -n "$BENCH_LOCK_DIR/checkmail-$ID" -c "wget -q --spider '$BENCH_URL_BASE/$ID/checkmail.php'" &
  sleep $INTERVAL
done

wait
