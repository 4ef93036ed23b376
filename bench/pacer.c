/*
 * pacer.c: the minimal spreader, written for the benchmark as the
 * machine's limit. It does only the job scatter does, with nothing else:
 *
 *     pacer INSTANCES_DIR LOCK_DIR WINDOW_SECONDS -- TASK [ARG]...
 *
 * Every ARG that is exactly "{}" is replaced by the instance id.
 *
 *  1. t0 = CLOCK_MONOTONIC, first thing in main (as scatter does, so that
 *     its own start-up counts against the window);
 *  2. reads the ids with readdir (subdirectories not starting with '.'),
 *     sorts them bytewise (scatter's default order);
 *  3. for k in 0..N-1: sleeps to the absolute deadline t0 + k*W/N
 *     (clock_nanosleep TIMER_ABSTIME on CLOCK_MONOTONIC, so no error
 *     accumulates), opens LOCK_DIR/ID.lock, flock(LOCK_EX|LOCK_NB) (skips the
 *     instance if busy), posix_spawn's the task with the lock descriptor
 *     inherited (it is opened without O_CLOEXEC; the pacer is single-threaded
 *     so nothing else can inherit it), closes its own copy, and reaps
 *     finished tasks with waitpid(-1, WNOHANG) if a SIGCHLD has arrived
 *     since the last reap;
 *  4. waits for every task;
 *  5. reports its own CPU, all its threads (it has one) and none of its
 *     tasks, as getrusage(RUSAGE_SELF) gives it, the way scatter reports its
 *     own in its JSON report: one line on stderr,
 *
 *         pacer: own cpu USER_US SYS_US
 *
 *     (microseconds), which bench/run reads.
 *
 * Why only after a SIGCHLD: waitpid(-1, ...) makes the kernel walk the list
 * of every live child (wait_consider_task), so with 10,000 tasks alive
 * (scenario (d)) one call costs ~0.2 ms. Calling it unconditionally between
 * starts made this pacer slower than scatter there, which defeats its
 * purpose as the machine's limit. When tasks exit quickly (scenarios a-c)
 * a SIGCHLD has arrived before nearly every start, so nothing changes.
 *
 * No holder records, no environment, no process groups, no report beyond
 * that one line: anything scatter spends beyond this is its overhead.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <signal.h>
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static int cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static volatile sig_atomic_t child_exited;

static void on_sigchld(int sig)
{
    (void)sig;
    child_exited = 1;
}

static void reap_nohang(void)
{
    if (!child_exited)
        return;
    child_exited = 0;
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
}

int main(int argc, char **argv)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);

    if (argc < 6 || strcmp(argv[4], "--") != 0) {
        fprintf(stderr, "usage: pacer INSTANCES_DIR LOCK_DIR WINDOW_SECONDS -- TASK [ARG]...\n");
        return 2;
    }
    const char *instances = argv[1], *lockdir = argv[2];
    long long window_ns = (long long)(strtold(argv[3], NULL) * 1e9L + 0.5L);
    char **task = argv + 5;
    int task_argc = argc - 5;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigchld;
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGCHLD, &sa, NULL);

    /* 1. the ids */
    DIR *dir = opendir(instances);
    if (dir == NULL)
        die(instances);
    size_t n = 0, cap = 1024;
    char **ids = malloc(cap * sizeof *ids);
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        if (de->d_name[0] == '.' || de->d_type != DT_DIR)
            continue;
        if (n == cap && (ids = realloc(ids, (cap *= 2) * sizeof *ids)) == NULL)
            die("realloc");
        if ((ids[n++] = strdup(de->d_name)) == NULL)
            die("strdup");
    }
    closedir(dir);
    qsort(ids, n, sizeof *ids, cmp);

    /* the argv, with the slots holding "{}" remembered */
    char **args = calloc((size_t)task_argc + 1, sizeof *args);
    int *holes = calloc((size_t)task_argc, sizeof *holes);
    int nholes = 0;
    for (int i = 0; i < task_argc; i++) {
        args[i] = task[i];
        if (strcmp(task[i], "{}") == 0)
            holes[nholes++] = i;
    }

    char lock[4096];
    for (size_t k = 0; k < n; k++) {
        /* 2. sleep to the absolute deadline t0 + k*W/N */
        long long off = (long long)((__int128)window_ns * (__int128)k / (__int128)n);
        struct timespec dl = t0;
        dl.tv_sec += off / 1000000000LL;
        dl.tv_nsec += off % 1000000000LL;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &dl, NULL) == EINTR)
            ;

        /* 3. lock, spawn with the lock inherited, close our copy */
        snprintf(lock, sizeof lock, "%s/%s.lock", lockdir, ids[k]);
        int fd = open(lock, O_RDWR | O_CREAT | O_NOFOLLOW, 0644);
        if (fd < 0) {
            perror(lock);
            continue;
        }
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            close(fd); /* busy: skip this instance */
            continue;
        }
        for (int h = 0; h < nholes; h++)
            args[holes[h]] = ids[k];
        pid_t pid;
        int err = posix_spawn(&pid, args[0], NULL, NULL, args, environ);
        if (err != 0)
            fprintf(stderr, "pacer: %s: %s\n", args[0], strerror(err));
        close(fd);

        /* 4. reap what has finished */
        reap_nohang();
    }

    /* wait for everything */
    for (;;) {
        if (waitpid(-1, NULL, 0) < 0) {
            if (errno == EINTR)
                continue;
            break; /* ECHILD */
        }
    }

    /* 5. its own CPU, measured last, as scatter measures its own just
     * before its report */
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        die("getrusage");
    fprintf(stderr, "pacer: own cpu %lld %lld\n",
            (long long)ru.ru_utime.tv_sec * 1000000LL + ru.ru_utime.tv_usec,
            (long long)ru.ru_stime.tv_sec * 1000000LL + ru.ru_stime.tv_usec);
    return 0;
}
