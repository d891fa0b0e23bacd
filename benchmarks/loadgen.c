/*
 * loadgen: a one-thread, level-triggered epoll TCP load generator for the
 * greenpatch benchmarks.  Built on demand by run.py with `cc -O2`.
 *
 * Modes
 *   pingpong  N connections, each sends S bytes, waits for S bytes back,
 *             repeats; warm-up W seconds, then measures D seconds.
 *   churn     K parallel slots, each: connect, one S-byte round trip, close,
 *             repeat.  Measures connections (full cycles) per second.
 *   idle      open N connections, one round trip each so the server has
 *             accepted and parked a reader on every one, wait W seconds, read
 *             the server's RSS, close them all.
 *
 * Output: one JSON object on stdout.  Latencies go into a log-linear
 * histogram (64 sub-buckets per power of two, ~1.5 % precision), never into
 * an array.  The client's own CPU use over the measured window comes from
 * getrusage so a saturated client is visible; with --server-pid the server's
 * utime+stime (/proc/PID/stat) and RSS (/proc/PID/status) are sampled at the
 * exact edges of the measured window.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define SUB_BITS 6
#define SUB (1 << SUB_BITS)          /* sub-buckets per octave */
#define NBUCKETS (2 * SUB + 48 * SUB)

enum { ST_CONNECTING, ST_SENDING, ST_RECEIVING, ST_DONE };

struct conn {
    int fd;
    int state;
    size_t sent, rcvd;
    uint64_t t0;          /* start of the current round trip (ns) */
    uint32_t events;      /* current epoll interest */
};

static struct {
    const char *host, *mode;
    int port, conns, parallel, server_pid;
    size_t size;
    double duration, warmup, settle, timeout;
} opt = {"127.0.0.1", "pingpong", 0, 1, 50, 0, 64, 5.0, 1.0, 2.0, 60.0};

static uint64_t hist[NBUCKETS];
static uint64_t done_rt, done_bytes, n_errors, lat_sum, lat_max;
static char *sendbuf, *recvbuf;
static int ep;
static struct sockaddr_in addr;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int bucket_of(uint64_t v)
{
    if (v < 2 * SUB)
        return (int)v;
    int b = 63 - __builtin_clzll(v);           /* b >= SUB_BITS + 1 */
    int shift = b - SUB_BITS;
    int idx = 2 * SUB + (b - SUB_BITS - 1) * SUB + (int)((v >> shift) - SUB);
    return idx < NBUCKETS ? idx : NBUCKETS - 1;
}

static double bucket_mid(int idx)
{
    if (idx < 2 * SUB)
        return idx;
    int octave = (idx - 2 * SUB) / SUB, m = (idx - 2 * SUB) % SUB + SUB;
    int shift = octave + 1;
    double lo = (double)((uint64_t)m << shift), width = (double)(1ull << shift);
    return lo + width / 2;
}

static double percentile_us(double p)
{
    if (done_rt == 0)
        return 0;
    uint64_t want = (uint64_t)(p * (double)done_rt), seen = 0;
    if (want >= done_rt)
        want = done_rt - 1;
    for (int i = 0; i < NBUCKETS; i++) {
        seen += hist[i];
        if (seen > want)
            return bucket_mid(i) / 1000.0;
    }
    return bucket_mid(NBUCKETS - 1) / 1000.0;
}

static void record(uint64_t lat)
{
    hist[bucket_of(lat)]++;
    done_rt++;
    lat_sum += lat;
    if (lat > lat_max)
        lat_max = lat;
}

static void reset_stats(void)
{
    memset(hist, 0, sizeof hist);
    done_rt = done_bytes = lat_sum = lat_max = 0;
}

static void die(const char *what)
{
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(2);
}

/* Server CPU (utime+stime, clock ticks) from /proc/PID/stat; -1 if unknown. */
static long long server_ticks(void)
{
    if (!opt.server_pid)
        return -1;
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/stat", opt.server_pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');     /* comm may contain spaces */
    if (!p)
        return -1;
    unsigned long long ut = 0, st = 0;
    /* after ')': state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (long long)(ut + st);
}

static long server_rss_kb(void)
{
    if (!opt.server_pid)
        return -1;
    char path[64], line[256];
    long kb = -1;
    snprintf(path, sizeof path, "/proc/%d/status", opt.server_pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void set_interest(struct conn *c, uint32_t ev)
{
    if (c->events == ev)
        return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e) < 0)
        die("epoll_ctl MOD");
    c->events = ev;
}

static void nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Blocking connect (bounded by SO_SNDTIMEO), then non-blocking and in epoll for reading. */
static void open_blocking(struct conn *c)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
        die("connect");
    nodelay(fd);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    c->fd = fd;
    c->events = EPOLLIN;
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) < 0)
        die("epoll_ctl ADD");
}

/* Non-blocking connect for churn; the slot waits for EPOLLOUT. */
static void open_async(struct conn *c)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    nodelay(fd);
    c->fd = fd;
    c->t0 = now_ns();
    c->sent = c->rcvd = 0;
    int r = connect(fd, (struct sockaddr *)&addr, sizeof addr);
    if (r < 0 && errno != EINPROGRESS)
        die("connect");
    c->state = ST_CONNECTING;
    c->events = EPOLLOUT;
    struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) < 0)
        die("epoll_ctl ADD");
}

static void start_round(struct conn *c, uint64_t t)
{
    c->state = ST_SENDING;
    c->sent = c->rcvd = 0;
    c->t0 = t;
}

/* Push the rest of the message; on EAGAIN also wait for EPOLLOUT. Returns -1 on error. */
static int do_send(struct conn *c)
{
    while (c->sent < opt.size) {
        ssize_t n = send(c->fd, sendbuf + c->sent, opt.size - c->sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                set_interest(c, EPOLLIN | EPOLLOUT);
                return 0;
            }
            return -1;
        }
        c->sent += (size_t)n;
    }
    c->state = ST_RECEIVING;
    set_interest(c, EPOLLIN);
    return 0;
}

/* Read whatever has come back (also while still sending). 0 ok, -1 on error or EOF. */
static int do_recv(struct conn *c)
{
    for (;;) {
        size_t want = opt.size - c->rcvd;
        if (want == 0)
            return 0;
        ssize_t n = recv(c->fd, recvbuf, want > 65536 ? 65536 : want, 0);
        if (n < 0)
            return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
        if (n == 0)
            return -1;
        c->rcvd += (size_t)n;
    }
}

/* One epoll event for a connection in a round trip: 1 = echo complete, 0 = wait, -1 = broken. */
static int on_event(struct conn *c, uint32_t ev)
{
    if ((ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && c->sent < opt.size && do_send(c) < 0)
        return -1;
    if ((ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) && do_recv(c) < 0)
        return -1;
    return c->sent == opt.size && c->rcvd == opt.size;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen --port P [--host H] [--mode pingpong|churn|idle] [--conns N]\n"
            "               [--size S] [--duration D] [--warmup W] [--parallel K]\n"
            "               [--settle SEC] [--server-pid PID] [--timeout SEC]\n");
    exit(2);
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

struct window {
    uint64_t t;
    double cpu;
    long long sticks;
};

static struct window snap(void)
{
    struct window w = {now_ns(), cpu_seconds(), server_ticks()};
    return w;
}

static void report(const char *mode, struct window a, struct window b, long rss0, long rss1)
{
    double secs = (double)(b.t - a.t) / 1e9, ccpu = b.cpu - a.cpu;
    long hz = sysconf(_SC_CLK_TCK);
    double scpu = (a.sticks >= 0 && b.sticks >= 0) ? (double)(b.sticks - a.sticks) / (double)hz : -1;
    printf("{\"mode\": \"%s\", \"conns\": %d, \"parallel\": %d, \"size\": %zu, \"seconds\": %.4f, "
           "\"round_trips\": %llu, \"rate\": %.1f, \"mbytes_per_s\": %.2f, "
           "\"p50_us\": %.2f, \"p90_us\": %.2f, \"p99_us\": %.2f, \"max_us\": %.2f, \"mean_us\": %.2f, "
           "\"client_cpu_s\": %.4f, \"client_cpu_pct\": %.1f, \"server_cpu_s\": %.4f, "
           "\"server_cpu_us_per_rt\": %.3f, \"errors\": %llu, \"rss_before_kb\": %ld, \"rss_after_kb\": %ld}\n",
           mode, opt.conns, opt.parallel, opt.size, secs, (unsigned long long)done_rt,
           secs > 0 ? done_rt / secs : 0, secs > 0 ? 2.0 * done_bytes / secs / 1e6 : 0,
           percentile_us(0.50), percentile_us(0.90), percentile_us(0.99), lat_max / 1000.0,
           done_rt ? (double)lat_sum / done_rt / 1000.0 : 0, ccpu, secs > 0 ? 100.0 * ccpu / secs : 0,
           scpu, (scpu >= 0 && done_rt) ? scpu * 1e6 / done_rt : -1, (unsigned long long)n_errors,
           rss0, rss1);
    fflush(stdout);
}

/* pingpong and idle share this: N blocking connects, then the event loop. */
static int run_pingpong(int idle)
{
    struct conn *cs = calloc((size_t)opt.conns, sizeof *cs);
    struct epoll_event *evs = calloc(1024, sizeof *evs);
    long rss0 = server_rss_kb();
    for (int i = 0; i < opt.conns; i++)
        open_blocking(&cs[i]);
    uint64_t t = now_ns();
    int alive = opt.conns, waiting_first = opt.conns;
    for (int i = 0; i < opt.conns; i++) {
        start_round(&cs[i], t);
        if (do_send(&cs[i]) < 0)
            die("send");
    }
    uint64_t deadline_setup = t + (uint64_t)(opt.timeout * 1e9);
    uint64_t t_measure = 0, t_end = 0;
    struct window a = {0}, b = {0};
    int measuring = 0;
    if (!idle) {
        t_measure = t + (uint64_t)(opt.warmup * 1e9);
        t_end = t_measure + (uint64_t)(opt.duration * 1e9);
    }
    for (;;) {
        int n = epoll_wait(ep, evs, 1024, 10);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        uint64_t tn = now_ns();
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->state == ST_DONE)
                continue;
            int r = on_event(c, evs[i].events);
            if (r < 0)
                goto broken;
            if (r == 0)
                continue;
            tn = now_ns();
            record(tn - c->t0);
            done_bytes += opt.size;
            if (idle) {
                c->state = ST_DONE;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                waiting_first--;
                continue;
            }
            start_round(c, tn);
            if (do_send(c) < 0)
                goto broken;
            continue;
        broken:
            n_errors++;
            c->state = ST_DONE;
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            alive--;
            if (idle)
                waiting_first--;
        }
        if (idle) {
            if (waiting_first == 0)
                break;
            if (tn > deadline_setup) {
                fprintf(stderr, "loadgen: idle: %d connections never echoed\n", waiting_first);
                break;
            }
            continue;
        }
        if (alive == 0) {
            fprintf(stderr, "loadgen: every connection failed\n");
            break;
        }
        if (!measuring && tn >= t_measure) {
            reset_stats();
            a = snap();
            measuring = 1;
        } else if (measuring && tn >= t_end) {
            b = snap();
            break;
        }
    }
    if (idle) {
        /* let the server settle, then read its RSS while every connection is open */
        struct timespec ts = {(time_t)opt.settle, (long)((opt.settle - (time_t)opt.settle) * 1e9)};
        nanosleep(&ts, NULL);
        struct window w = snap();
        report("idle", w, w, rss0, server_rss_kb());
    } else {
        if (!measuring)
            a = b = snap();
        else if (b.t == 0)
            b = snap();
        report("pingpong", a, b, rss0, server_rss_kb());
    }
    for (int i = 0; i < opt.conns; i++)
        close(cs[i].fd);
    return n_errors && !idle && alive == 0 ? 1 : 0;
}

static int run_churn(void)
{
    struct conn *cs = calloc((size_t)opt.parallel, sizeof *cs);
    struct epoll_event *evs = calloc(1024, sizeof *evs);
    uint64_t t = now_ns();
    uint64_t t_measure = t + (uint64_t)(opt.warmup * 1e9), t_end = t_measure + (uint64_t)(opt.duration * 1e9);
    struct window a = {0}, b = {0};
    int measuring = 0;
    uint64_t max_errors = 1000;
    for (int i = 0; i < opt.parallel; i++)
        open_async(&cs[i]);
    for (;;) {
        int n = epoll_wait(ep, evs, 1024, 10);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->state == ST_CONNECTING) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err) {
                    errno = err;
                    goto broken;
                }
                c->state = ST_SENDING;
                if (do_send(c) < 0)
                    goto broken;
                continue;
            }
            int r = on_event(c, evs[i].events);
            if (r < 0)
                goto broken;
            if (r == 0)
                continue;
            record(now_ns() - c->t0);
            done_bytes += opt.size;
            close(c->fd);
            open_async(c);
            continue;
        broken:
            n_errors++;
            close(c->fd);
            if (n_errors > max_errors) {
                fprintf(stderr, "loadgen: churn: too many errors, last: %s\n", strerror(errno));
                b = snap();
                if (!measuring)
                    a = b;
                goto out;
            }
            open_async(c);
        }
        uint64_t tn = now_ns();
        if (!measuring && tn >= t_measure) {
            reset_stats();
            a = snap();
            measuring = 1;
        } else if (measuring && tn >= t_end) {
            b = snap();
            break;
        }
    }
out:
    report("churn", a, b, -1, server_rss_kb());
    for (int i = 0; i < opt.parallel; i++)
        close(cs[i].fd);
    return 0;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i];
        if (i + 1 >= argc)
            usage();
        const char *v = argv[++i];
        if (!strcmp(k, "--host")) opt.host = v;
        else if (!strcmp(k, "--port")) opt.port = atoi(v);
        else if (!strcmp(k, "--mode")) opt.mode = v;
        else if (!strcmp(k, "--conns")) opt.conns = atoi(v);
        else if (!strcmp(k, "--parallel")) opt.parallel = atoi(v);
        else if (!strcmp(k, "--size")) opt.size = (size_t)atol(v);
        else if (!strcmp(k, "--duration")) opt.duration = atof(v);
        else if (!strcmp(k, "--warmup")) opt.warmup = atof(v);
        else if (!strcmp(k, "--settle")) opt.settle = atof(v);
        else if (!strcmp(k, "--server-pid")) opt.server_pid = atoi(v);
        else if (!strcmp(k, "--timeout")) opt.timeout = atof(v);
        else usage();
    }
    if (!opt.port || opt.size == 0 || opt.conns < 1 || opt.parallel < 1)
        usage();
    /* hard bound on the whole run, whatever the server does */
    alarm((unsigned)(opt.warmup + opt.duration + opt.settle + opt.timeout + 30));
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    sendbuf = malloc(opt.size);
    recvbuf = malloc(65536);
    memset(sendbuf, 'x', opt.size);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)opt.port);
    if (inet_pton(AF_INET, opt.host, &addr.sin_addr) != 1) {
        fprintf(stderr, "loadgen: bad host %s\n", opt.host);
        return 2;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    if (!strcmp(opt.mode, "pingpong"))
        return run_pingpong(0);
    if (!strcmp(opt.mode, "idle"))
        return run_pingpong(1);
    if (!strcmp(opt.mode, "churn"))
        return run_churn();
    usage();
    return 2;
}
