/*
 * mmap_watch.c - watch a u64 counter in a file, through a long-lived shared
 * mapping or through pread, and report every change with a timestamp.
 *
 * Used by the cross-host cache-invalidation test: a writer (elsewhere) puts
 * 1, 2, ..., COUNT as an 8-byte little-endian u64 at offset 0 of a 4096-byte
 * file, one pwrite each.  This program polls that value (nanosleep 50 us
 * between polls):
 *   mmap  open O_RDONLY, mmap the first page MAP_SHARED/PROT_READ once and
 *         read through the mapping the whole time (the page is never
 *         unmapped: invalidation must make the kernel drop and refault it)
 *   read  open once and pread(fd, buf, 8, 0) in the loop
 *
 * Usage: mmap_watch MODE FILE COUNT TIMEOUT_MS     (MODE: mmap | read)
 * Output (stdout, each line flushed at once):
 *   ready                  set up and the first value has been read
 *   seen VALUE T_NS        initial value, then every change; T_NS is
 *                          CLOCK_REALTIME in ns just after the value was read
 *   timeout last VALUE     no change for TIMEOUT_MS ms          -> exit 3
 *   backwards FROM TO      the value decreased                  -> exit 4
 *   beyond VALUE COUNT     the value exceeded COUNT             -> exit 5
 * Exit 0 once VALUE == COUNT has been seen (values may skip).  Exit 2 on
 * usage or system errors (including SIGBUS on the mapping), message on stderr.
 * Build: cc -O2 -Wall -Wextra -Werror -o mmap_watch mmap_watch.c
 * Example: ./mmap_watch mmap /mnt/b/counter 1000 5000
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int use_mmap;
static int fd = -1;
static const volatile uint64_t *map;    /* page-aligned, so 8-byte aligned */

static void die(const char *what)
{
    fprintf(stderr, "mmap_watch: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void on_sigbus(int sig)
{
    static const char msg[] = "mmap_watch: SIGBUS reading the mapping "
                              "(file truncated or I/O error)\n";
    (void)sig;
    if (write(2, msg, sizeof msg - 1) < 0) {
        /* nothing more we can do */
    }
    _exit(2);
}

static uint64_t now_ns(clockid_t clk)
{
    struct timespec ts;
    if (clock_gettime(clk, &ts) < 0)
        die("clock_gettime");
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* one raw read of the counter */
static uint64_t read_once(void)
{
    uint64_t v;
    if (use_mmap) {
        v = *map;               /* single aligned volatile load */
    } else {
        unsigned char buf[8];
        ssize_t n;
        while ((n = pread(fd, buf, sizeof buf, 0)) < 0 && errno == EINTR)
            ;
        if (n < 0)
            die("pread");
        if (n != (ssize_t)sizeof buf) {
            fprintf(stderr, "mmap_watch: short pread: %zd bytes\n", n);
            exit(2);
        }
        memcpy(&v, buf, sizeof v);
    }
    return le64toh(v);
}

/*
 * Read the counter; if it differs from `last`, re-read until two
 * consecutive reads agree, so that a read racing with the writer's 8-byte
 * store (which need not be atomic) is not reported as a value.  *t_ns gets
 * the CLOCK_REALTIME just after the first read of the value returned.
 */
static uint64_t read_value(uint64_t last, int have_last, uint64_t *t_ns)
{
    uint64_t a = read_once(), b;
    if (have_last && a == last)
        return a;
    *t_ns = now_ns(CLOCK_REALTIME);
    for (int tries = 0; tries < 1000; tries++) {
        b = read_once();
        if (b == a)
            return a;
        a = b;
        *t_ns = now_ns(CLOCK_REALTIME);
    }
    return a;
}

static uint64_t parse_u64(const char *s, const char *what)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || *end || *s == '-') {
        fprintf(stderr, "mmap_watch: bad %s: %s\n", what, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    uint64_t count, timeout_ms, last, cur, t_ns = 0, last_change;
    long pagesize;
    struct stat st;
    const struct timespec nap = { 0, 50 * 1000 };

    if (argc != 5) {
        fprintf(stderr, "usage: mmap_watch mmap|read FILE COUNT TIMEOUT_MS\n");
        return 2;
    }
    if (strcmp(argv[1], "mmap") == 0) {
        use_mmap = 1;
    } else if (strcmp(argv[1], "read") != 0) {
        fprintf(stderr, "mmap_watch: MODE must be mmap or read, not %s\n", argv[1]);
        return 2;
    }
    count = parse_u64(argv[3], "COUNT");
    timeout_ms = parse_u64(argv[4], "TIMEOUT_MS");

    fd = open(argv[2], O_RDONLY);
    if (fd < 0)
        die(argv[2]);
    if (fstat(fd, &st) < 0)
        die("fstat");
    if (st.st_size < 8) {
        fprintf(stderr, "mmap_watch: %s is only %lld bytes, need 8\n",
                argv[2], (long long)st.st_size);
        return 2;
    }
    if (use_mmap) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_sigbus;
        sigaction(SIGBUS, &sa, NULL);
        pagesize = sysconf(_SC_PAGESIZE);
        if (pagesize <= 0)
            pagesize = 4096;
        void *p = mmap(NULL, (size_t)pagesize, PROT_READ, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED)
            die("mmap");
        map = (const volatile uint64_t *)p;
    }

    last = read_value(0, 0, &t_ns);
    last_change = now_ns(CLOCK_MONOTONIC);
    printf("ready\nseen %" PRIu64 " %" PRIu64 "\n", last, t_ns);
    fflush(stdout);

    for (;;) {
        if (last > count) {
            printf("beyond %" PRIu64 " %" PRIu64 "\n", last, count);
            fflush(stdout);
            return 5;
        }
        if (last == count)
            return 0;
        nanosleep(&nap, NULL);
        cur = read_value(last, 1, &t_ns);
        if (cur == last) {
            if ((now_ns(CLOCK_MONOTONIC) - last_change) / 1000000 >= timeout_ms) {
                printf("timeout last %" PRIu64 "\n", last);
                fflush(stdout);
                return 3;
            }
            continue;
        }
        if (cur < last) {
            printf("backwards %" PRIu64 " %" PRIu64 "\n", last, cur);
            fflush(stdout);
            return 4;
        }
        printf("seen %" PRIu64 " %" PRIu64 "\n", cur, t_ns);
        fflush(stdout);
        last = cur;
        last_change = now_ns(CLOCK_MONOTONIC);
    }
}
