/*
 * httpd.c: the small local HTTP server of scenario (f) (bench/run builds it
 * and starts it outside the measured process tree).
 *
 *     httpd LOG
 *
 * Listens on 127.0.0.1 on a free port, prints "port N" on stdout, and
 * answers every request at once with "200 OK" and an empty body, keeping
 * connections alive (HTTP/1.1) as long as the client does. It is one thread
 * with epoll and non-blocking sockets, so it is never the bottleneck.
 *
 * For each request it reads CLOCK_REALTIME when the request's head is
 * complete and appends ONE line to LOG with one O_APPEND write, in the
 * format of bench/task.c's log, so bench/run measures lateness the same way
 * for every contender (the arrival of the request, client start-up
 * included):
 *
 *     ID ARRIVAL_NS - 0
 *
 * ID is the first segment of the request's path. On SIGTERM or SIGINT it
 * prints "connections C requests R" on stdout and exits: C is how many TCP
 * connections it accepted, R how many requests it answered.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONN 65536
#define BUF 16384

struct conn {
    int fd;
    size_t len;
    char buf[BUF];
};

static volatile sig_atomic_t stop;
static void on_stop(int sig) { (void)sig; stop = 1; }

static const char reply[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: httpd LOG\n");
        return 2;
    }
    int log = open(argv[1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (log < 0) {
        perror(argv[1]);
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) || listen(lfd, 4096)) {
        perror("bind/listen");
        return 1;
    }
    socklen_t alen = sizeof addr;
    getsockname(lfd, (struct sockaddr *)&addr, &alen);
    printf("port %d\n", ntohs(addr.sin_port));
    fflush(stdout);

    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    unsigned long connections = 0, requests = 0;
    struct epoll_event events[256];

    while (!stop) {
        int n = epoll_wait(ep, events, 256, 200);
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c == NULL) {
                for (;;) {
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0)
                        break;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *nc = calloc(1, sizeof *nc);
                    if (nc == NULL) {
                        close(fd);
                        continue;
                    }
                    nc->fd = fd;
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                    connections++;
                }
                continue;
            }
            int closed = 0;
            for (;;) {
                ssize_t r = read(c->fd, c->buf + c->len, BUF - 1 - c->len);
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                    closed = 1;
                    break;
                }
                if (r < 0)
                    break;
                c->len += (size_t)r;
                c->buf[c->len] = 0;
                char *end;
                while ((end = strstr(c->buf, "\r\n\r\n")) != NULL) {
                    struct timespec now;
                    clock_gettime(CLOCK_REALTIME, &now);
                    /* "GET /ID/rest HTTP/1.1": the first path segment. */
                    char *sp = strchr(c->buf, ' ');
                    char id[512] = "?";
                    if (sp && sp[1] == '/') {
                        size_t k = strcspn(sp + 2, "/? ");
                        if (k >= sizeof id)
                            k = sizeof id - 1;
                        memcpy(id, sp + 2, k);
                        id[k] = 0;
                    }
                    char line[700];
                    int len = snprintf(line, sizeof line, "%s %lld - 0\n", id,
                                       (long long)now.tv_sec * 1000000000LL + now.tv_nsec);
                    if (write(log, line, (size_t)len) != len)
                        perror("log");
                    if (write(c->fd, reply, sizeof reply - 1) != (ssize_t)(sizeof reply - 1))
                        closed = 1;
                    requests++;
                    size_t used = (size_t)(end + 4 - c->buf);
                    memmove(c->buf, c->buf + used, c->len - used + 1);
                    c->len -= used;
                }
                if (c->len >= BUF - 1) {
                    closed = 1; /* a head larger than the buffer: not ours */
                    break;
                }
            }
            if (closed) {
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                free(c);
            }
        }
    }
    printf("connections %lu requests %lu\n", connections, requests);
    fflush(stdout);
    return 0;
}
