/*
 * task.c: the tiny task every contender starts (bench/run builds it).
 *
 *     task ID
 *
 * Its first action is to read CLOCK_REALTIME, so the time it logs is when
 * the task really started running (after fork/exec), not when the spawner
 * thinks it started it. It then appends ONE line to the log named by
 * $BENCH_TASK_LOG with ONE write(2) on an O_APPEND descriptor, which is
 * atomic on a regular file, so thousands of concurrent tasks never
 * interleave their lines:
 *
 *     ID START_NS SLOT PID
 *
 * SLOT is $SCATTER_SLOT when set (scatter), "-" otherwise; PID lets the
 * harness kill leftover sleepers by pid. If $BENCH_TASK_SLEEP is set (seconds,
 * may be fractional) the task then sleeps that long: the sleep-style task of
 * scenario (d). It is linked statically when possible so that exec costs as
 * little, and as evenly, as possible for every contender.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);

    if (argc < 2) {
        fprintf(stderr, "usage: task ID\n");
        return 2;
    }
    const char *log = getenv("BENCH_TASK_LOG");
    if (log == NULL) {
        fprintf(stderr, "task: BENCH_TASK_LOG is not set\n");
        return 2;
    }
    const char *slot = getenv("SCATTER_SLOT");
    char line[4096];
    int len = snprintf(line, sizeof line, "%s %lld %s %ld\n", argv[1],
                       (long long)now.tv_sec * 1000000000LL + now.tv_nsec,
                       slot ? slot : "-", (long)getpid());
    if (len < 0 || (size_t)len >= sizeof line) {
        fprintf(stderr, "task: id too long\n");
        return 2;
    }
    int fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, line, (size_t)len) != len) {
        fprintf(stderr, "task: %s: %s\n", log, strerror(errno));
        return 1;
    }
    close(fd);

    const char *sleep_s = getenv("BENCH_TASK_SLEEP");
    if (sleep_s != NULL && *sleep_s != '\0') {
        double s = strtod(sleep_s, NULL);
        struct timespec d = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
        while (nanosleep(&d, &d) != 0 && errno == EINTR)
            ;
    }
    return 0;
}
