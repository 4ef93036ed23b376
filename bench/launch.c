/*
 * launch.c: how bench/run starts every contender.
 *
 *     launch FD -- PROGRAM [ARG]...     (PROGRAM: a path, no PATH search)
 *
 * Python's subprocess.Popen takes about 2 ms between the harness's clock
 * reading and the contender's exec (forking a large interpreter) and, worse,
 * a child forked from Python inherits Python's RSS high-water mark into its
 * ru_maxrss. This tiny static launcher avoids both:
 *
 *  - it reads CLOCK_REALTIME (the launch instant) right before posix_spawn,
 *    which execs the contender within tens of microseconds;
 *  - it waits with wait4(), whose rusage is the contender's whole tree: the
 *    contender plus every descendant it (and they) reaped; ru_maxrss is the
 *    largest RSS high-water mark in that tree, with nothing inherited from a
 *    big parent.
 *
 * The contender inherits stdin/stdout/stderr; the report goes to descriptor
 * FD (a pipe from bench/run), which the contender does not inherit:
 *
 *     spawned PID LAUNCH_NS                      as soon as it is started
 *     exited WAITSTATUS USER_US SYS_US MAXRSS_KB END_NS   once it is reaped
 *
 * (END_NS is CLOCK_REALTIME; wall time = END_NS - LAUNCH_NS.)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static long long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc < 4 || strcmp(argv[2], "--") != 0) {
        fprintf(stderr, "usage: launch FD -- PROGRAM [ARG]...\n");
        return 2;
    }
    int rfd = atoi(argv[1]);
    if (fcntl(rfd, F_SETFD, FD_CLOEXEC) != 0) {
        perror("launch: report descriptor");
        return 2;
    }
    char buf[256];
    pid_t pid;
    long long launch = now_ns();
    int err = posix_spawn(&pid, argv[3], NULL, NULL, argv + 3, environ);
    if (err != 0) {
        fprintf(stderr, "launch: %s: %s\n", argv[3], strerror(err));
        return 127;
    }
    int len = snprintf(buf, sizeof buf, "spawned %d %lld\n", (int)pid, launch);
    if (write(rfd, buf, (size_t)len) != len)
        perror("launch: write");

    int status;
    struct rusage ru;
    while (wait4(pid, &status, 0, &ru) < 0) {
        if (errno != EINTR) {
            perror("launch: wait4");
            return 1;
        }
    }
    long long end = now_ns();
    len = snprintf(buf, sizeof buf, "exited %d %lld %lld %ld %lld\n", status,
                   (long long)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec,
                   (long long)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec,
                   ru.ru_maxrss, end);
    if (write(rfd, buf, (size_t)len) != len)
        perror("launch: write");
    return 0;
}
