#!/bin/sh
# seed.sh: the shell script scatter replaces, as a benchmark contender.
#
# Source: ZeyOS, Benjamin Coutu, "High Performance Web: Efficient and
# scalable cronjobs" (2017), the final script of the "Production-ready"
# section (/opt/checkmail.sh).
#
# Adapted ONLY in its paths, its window and its task, which bench/run passes
# in the environment so that every contender gets the same ones:
#   /srv/instances              -> $BENCH_INSTANCES
#   /var/lock/checkmail-$ID     -> $BENCH_LOCK_DIR/checkmail-$ID
#   the 60-second window        -> $BENCH_WINDOW (seconds)
#   wget ... checkmail.php      -> "$BENCH_TASK '$ID'" (bench/task.c)
# The article's awk line shows a templating artefact of its blog engine,
# awk '{print 60 / #{.root->post->html}}', which is not valid awk; it is
# replaced by awk '{print W / $1}' with W the window in seconds (-v W=...).
# Everything else, including the word-splitting loop, the id pasted into
# flock -c's shell string, and `sleep $INTERVAL` after each start, is the
# article's.

INSTANCES="$(find "$BENCH_INSTANCES" -mindepth 1 -maxdepth 1 -printf "%f\n")"

if [ -z "$INSTANCES" ]; then
  exit
fi

INTERVAL=$(echo "$INSTANCES" | wc -w | awk -v W="$BENCH_WINDOW" '{print W / $1}')

for ID in $(echo "$INSTANCES"); do
  flock -n "$BENCH_LOCK_DIR/checkmail-$ID" -c "$BENCH_TASK '$ID'" &
  sleep $INTERVAL
done

wait
