/*
 * c_echo: a one-thread, level-triggered epoll TCP echo server; the practical
 * limit of the machine in the greenpatch benchmarks.  Built on demand by
 * run.py with `cc -O2`.
 *
 *   c_echo [--host 127.0.0.1] [--port 0]
 *
 * Prints "READY <port>" on stdout once listening.  Each connection echoes
 * what it reads; when the peer does not take the echo at once, the rest is
 * kept per connection and reading from it pauses until the backlog drains.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUFSZ 65536

struct conn {
    int fd;
    size_t off, len;       /* unsent echo in buf[off:len] */
    char *buf;             /* allocated only when a write falls short */
};

static int ep;
static char scratch[BUFSZ];

static void die(const char *what)
{
    fprintf(stderr, "c_echo: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void drop(struct conn *c)
{
    close(c->fd);          /* also removes it from the epoll set */
    free(c->buf);
    free(c);
}

static void interest(struct conn *c, uint32_t ev)
{
    struct epoll_event e = {.events = ev, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
}

/* Send buf[off:len]; 1 when drained, 0 when the peer is full, -1 on error. */
static int flush_pending(struct conn *c)
{
    while (c->off < c->len) {
        ssize_t n = send(c->fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (n < 0)
            return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
        c->off += (size_t)n;
    }
    c->off = c->len = 0;
    return 1;
}

static void on_readable(struct conn *c)
{
    for (;;) {
        ssize_t n = recv(c->fd, scratch, BUFSZ, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            drop(c);
            return;
        }
        if (n < 0)
            return;
        ssize_t w = send(c->fd, scratch, (size_t)n, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            drop(c);
            return;
        }
        if (w < 0)
            w = 0;
        if (w < n) {
            if (!c->buf && !(c->buf = malloc(BUFSZ)))
                die("malloc");
            memcpy(c->buf, scratch + w, (size_t)(n - w));
            c->off = 0;
            c->len = (size_t)(n - w);
            interest(c, EPOLLOUT);
            return;
        }
        if (n < BUFSZ)
            return;    /* drained the socket; level-triggered epoll tells us about more */
    }
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--host"))
            host = argv[i + 1];
        else if (!strcmp(argv[i], "--port"))
            port = atoi(argv[i + 1]);
    }
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1)
        die("inet_pton");
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0)
        die("bind");
    if (listen(lfd, 4096) < 0)
        die("listen");
    socklen_t alen = sizeof addr;
    getsockname(lfd, (struct sockaddr *)&addr, &alen);
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event le = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &le);
    printf("READY %d\n", ntohs(addr.sin_port));
    fflush(stdout);

    struct epoll_event evs[512];
    for (;;) {
        int n = epoll_wait(ep, evs, 512, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c == NULL) {
                for (;;) {
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0)
                        break;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *nc = calloc(1, sizeof *nc);
                    nc->fd = fd;
                    struct epoll_event e = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
                }
                continue;
            }
            if (c->len) {      /* waiting to finish an echo */
                int r = flush_pending(c);
                if (r < 0)
                    drop(c);
                else if (r > 0)
                    interest(c, EPOLLIN);
                continue;
            }
            on_readable(c);
        }
    }
}
