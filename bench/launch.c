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
 *  - before reaping it, it waits for its exit with waitid(WNOWAIT), which
 *    leaves it a zombie, and reads what the kernel still holds about the
 *    contender alone, without its children: /proc/PID/stat's utime + stime
 *    (all its threads, in clock ticks: 10 ms at USER_HZ = 100) and
 *    /proc/PID/schedstat's run time (nanoseconds, but of its main thread
 *    only: the other threads of a zombie are already gone). bench/run uses
 *    them to check the self-reported own CPU of scatter and the pacer, and
 *    keeps them for the other contenders.
 *
 * The contender inherits stdin/stdout/stderr; the report goes to descriptor
 * FD (a pipe from bench/run), which the contender does not inherit:
 *
 *     spawned PID LAUNCH_NS                      as soon as it is started
 *     exited WAITSTATUS USER_US SYS_US MAXRSS_KB END_NS OWN_TICKS_US MAIN_NS
 *                                                once it is reaped
 *
 * (END_NS is CLOCK_REALTIME when its exit was seen; wall time = END_NS -
 * LAUNCH_NS. OWN_TICKS_US is utime + stime of the zombie converted to
 * microseconds, MAIN_NS its main thread's run time; -1 when unreadable.)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
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

/* Reads up to size-1 bytes of /proc/PID/NAME into buf; -1 on failure. */
static ssize_t read_proc(pid_t pid, const char *name, char *buf, size_t size)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    if (n < 0)
        return -1;
    buf[n] = '\0';
    return n;
}

/* utime + stime of the (zombie) process PID, all its threads, in
 * microseconds with clock-tick precision; -1 if unreadable. */
static long long own_ticks_us(pid_t pid)
{
    char buf[2048];
    if (read_proc(pid, "stat", buf, sizeof buf) < 0)
        return -1;
    /* comm may hold spaces and parentheses: fields start after the last ')' */
    char *p = strrchr(buf, ')');
    if (p == NULL)
        return -1;
    p++;
    /* after ')': state is field 3, utime field 14, stime field 15 */
    unsigned long long v[13];
    for (int i = 0; i < 13; i++) {
        char *end;
        while (*p == ' ')
            p++;
        if (i == 0) { /* state: one character */
            p++;
            v[i] = 0;
            continue;
        }
        errno = 0;
        v[i] = strtoull(p, &end, 10);
        if (end == p || errno != 0)
            return -1;
        p = end;
    }
    long tck = sysconf(_SC_CLK_TCK);
    if (tck <= 0)
        return -1;
    return (long long)((v[11] + v[12]) * 1000000ULL / (unsigned long long)tck);
}

/* Run time of PID's main thread in nanoseconds (/proc/PID/schedstat's first
 * field); -1 if unreadable. */
static long long main_thread_ns(pid_t pid)
{
    char buf[256];
    if (read_proc(pid, "schedstat", buf, sizeof buf) < 0)
        return -1;
    char *end;
    errno = 0;
    unsigned long long ns = strtoull(buf, &end, 10);
    if (end == buf || errno != 0)
        return -1;
    return (long long)ns;
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

    /* Wait for its exit but leave it a zombie, to read its own CPU. */
    siginfo_t si;
    long long own_us = -1, main_ns = -1;
    int waited;
    do {
        memset(&si, 0, sizeof si);
        waited = waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT);
    } while (waited < 0 && errno == EINTR);
    long long end = now_ns();
    if (waited == 0) {
        own_us = own_ticks_us(pid);
        main_ns = main_thread_ns(pid);
    }

    int status;
    struct rusage ru;
    while (wait4(pid, &status, 0, &ru) < 0) {
        if (errno != EINTR) {
            perror("launch: wait4");
            return 1;
        }
    }
    if (waited != 0)
        end = now_ns();
    len = snprintf(buf, sizeof buf, "exited %d %lld %lld %ld %lld %lld %lld\n", status,
                   (long long)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec,
                   (long long)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec,
                   ru.ru_maxrss, end, own_us, main_ns);
    if (write(rfd, buf, (size_t)len) != len)
        perror("launch: write");
    return 0;
}
