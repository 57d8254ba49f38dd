/*
 * fsx.c - a small file-system exerciser (written from scratch for ringfs).
 *
 * Applies a long pseudo-random sequence of operations to one file and keeps
 * an in-memory model ("good buffer") of what the file must contain:
 *   READ      pread at a random offset/length (may cross EOF: short read
 *             is checked), compared byte-for-byte with the model
 *   WRITE     pwrite of a pattern at a random offset/length (may extend)
 *   TRUNCATE  ftruncate to a random size (shrink or grow; growth reads 0)
 *   MAPREAD   mmap(MAP_SHARED, PROT_READ) of a random range, compared with
 *             the model; when the range reaches EOF the rest of the last
 *             page must read as zeros
 *   MAPWRITE  extend with ftruncate if needed, mmap(MAP_SHARED, RW),
 *             memcpy the pattern, msync(MS_SYNC), munmap
 *   CLOSEOPEN close and reopen the file (1 op in 50)
 *   FSYNC     fsync (1 op in 50)
 * Op mix otherwise: 25% READ, 25% WRITE, 10% TRUNCATE, 20% MAPREAD,
 * 20% MAPWRITE (-R/-W turn map ops into plain READ/WRITE).
 * After each op that changes the file, fstat's size must equal the model
 * size.  At the end the whole file is read back with read().
 *
 * The byte written at file offset P by op number N is 1 + (P + N) % 251: it
 * is never zero (so holes/zero-fill are recognisable) and a wrong byte G at
 * offset P tells which op wrote it: N = (G - 1 - P) mod 251.
 *
 * Usage: fsx [-N numops] [-S seed] [-l maxlen_file] [-o maxoplen]
 *            [-W] [-R] [-q] [-v] FILE
 *   -N  number of operations (default 10000)
 *   -S  PRNG seed (default 1); the same seed and options replay the same ops
 *   -l  maximum file size (default 262144)
 *   -o  maximum length of one read/write (default 65536)
 *   -W  no mmap writes        -R  no mmap reads
 *   -q  quiet (no progress)   -v  print every op to stdout
 * Exit: 0 ok, 1 data/size mismatch, 2 unexpected syscall failure or usage.
 * Example: cc -O2 -Wall -Wextra -Werror -o fsx fsx.c && ./fsx -N 200000 -S 7 /mnt/x/f
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

enum { OP_READ, OP_WRITE, OP_TRUNCATE, OP_MAPREAD, OP_MAPWRITE,
       OP_CLOSEOPEN, OP_FSYNC, OP_NKINDS };
static const char *op_names[OP_NKINDS] = {
    "READ", "WRITE", "TRUNCATE", "MAPREAD", "MAPWRITE", "CLOSEOPEN", "FSYNC" };

#define LOG_SIZE 20
struct logent {
    uint64_t num;
    int kind;
    int skipped;
    uint64_t off, len;            /* for TRUNCATE: off = new size */
    uint64_t size_before, size_after;
};

static struct logent oplog[LOG_SIZE];
static uint64_t nlogged;

static const char *fname;
static int fd = -1;
static unsigned char *good;     /* model; good[i] == 0 for i >= file_size */
static unsigned char *tmp;      /* scratch for reads and patterns */
static uint64_t file_size;
static uint64_t maxlen = 256 * 1024, maxoplen = 64 * 1024, numops = 10000;
static uint64_t seed = 1, rng_state;
static int no_mapwrite, no_mapread, quiet, verbose;
static long pagesize;
static unsigned char *zeros;    /* one page of zeros */
static uint64_t counts[OP_NKINDS], skipped;
static struct logent *cur;       /* op being executed */

/* splitmix64: small, deterministic, good enough */
static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rnd_below(uint64_t n) { return n ? rnd() % n : 0; }

static void print_ent(FILE *f, const struct logent *e)
{
    fprintf(f, "  op %" PRIu64 ": %-9s", e->num, op_names[e->kind]);
    if (e->kind == OP_TRUNCATE)
        fprintf(f, " to 0x%" PRIx64, e->off);
    else if (e->kind <= OP_MAPWRITE)
        fprintf(f, " off 0x%" PRIx64 " len 0x%" PRIx64 " (end 0x%" PRIx64 ")",
                e->off, e->len, e->off + e->len);
    fprintf(f, " size 0x%" PRIx64 " -> 0x%" PRIx64 "%s\n",
            e->size_before, e->size_after, e->skipped ? " [skipped]" : "");
}

static void dump_log(void)
{
    uint64_t first = nlogged > LOG_SIZE ? nlogged - LOG_SIZE : 0;
    fprintf(stderr, "last %" PRIu64 " operations (oldest first):\n",
            nlogged - first);
    for (uint64_t i = first; i < nlogged; i++)
        print_ent(stderr, &oplog[i % LOG_SIZE]);
    fprintf(stderr, "replay: fsx -N %" PRIu64 " -S %" PRIu64 " -l %" PRIu64
            " -o %" PRIu64 "%s%s %s\n", numops, seed, maxlen, maxoplen,
            no_mapwrite ? " -W" : "", no_mapread ? " -R" : "", fname);
}

static void fail_header(const char *what)
{
    fprintf(stderr, "fsx: FAILURE (%s) seed %" PRIu64, what, seed);
    if (cur) {
        fprintf(stderr, " at\n");
        print_ent(stderr, cur);
    } else {
        fprintf(stderr, "\n");
    }
}

static void sys_fail(const char *call)
{
    int e = errno;
    fail_header("syscall");
    fprintf(stderr, "%s failed: %s (errno %d)\n", call, strerror(e), e);
    dump_log();
    exit(2);
}

/* Compare got[0..len) with the model at file offset off; exit 1 on mismatch. */
static void check_bytes(const char *what, const unsigned char *got,
                        const unsigned char *want, uint64_t off, uint64_t len)
{
    uint64_t i, j, bad = 0;
    for (i = 0; i < len && got[i] == want[i]; i++)
        ;
    if (i == len)
        return;
    for (j = i; j < len; j++)
        bad += got[j] != want[j];
    fail_header(what);
    fprintf(stderr, "first difference at file offset 0x%" PRIx64
            " (0x%" PRIx64 " into the range), %" PRIu64 " bad bytes in range\n",
            off + i, i, bad);
    fprintf(stderr, "offset       expected got   (got byte written by op#, mod 251)\n");
    for (j = i; j < len && j < i + 16; j++) {
        uint64_t p = off + j;
        fprintf(stderr, "0x%-10" PRIx64 " 0x%02x     0x%02x", p, want[j], got[j]);
        if (got[j] == 0)
            fprintf(stderr, "  (zero)");
        else if (got[j] > 251)
            fprintf(stderr, "  (not a pattern byte)");
        else
            fprintf(stderr, "  (op %% 251 = %" PRIu64 ")",
                    ((uint64_t)got[j] - 1 + 251 - p % 251) % 251);
        fprintf(stderr, "%s\n", got[j] != want[j] ? "  <--" : "");
    }
    dump_log();
    exit(1);
}

static void check_size(const char *when)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        sys_fail("fstat");
    if ((uint64_t)st.st_size != file_size) {
        fail_header("size");
        fprintf(stderr, "%s: fstat size 0x%" PRIx64 " (%" PRIu64 "), model "
                "size 0x%" PRIx64 " (%" PRIu64 ")\n", when,
                (uint64_t)st.st_size, (uint64_t)st.st_size, file_size, file_size);
        dump_log();
        exit(1);
    }
}

static void fill_pattern(unsigned char *buf, uint64_t off, uint64_t len,
                         uint64_t opnum)
{
    uint64_t v = (off + opnum) % 251;
    for (uint64_t i = 0; i < len; i++) {
        buf[i] = (unsigned char)(1 + v);
        if (++v == 251)
            v = 0;
    }
}

/* model update for size changes; keeps good[] zero beyond file_size */
static void model_resize(uint64_t newsize)
{
    if (newsize < file_size)
        memset(good + newsize, 0, file_size - newsize);
    file_size = newsize;
}

static void do_open(int flags)
{
    fd = open(fname, flags, 0644);
    if (fd < 0)
        sys_fail("open");
}

static void op_read(uint64_t off, uint64_t len)
{
    uint64_t want = off >= file_size ? 0 :
                    (off + len > file_size ? file_size - off : len);
    uint64_t done = 0;
    /* loop over short reads, but the total must be exactly `want` */
    while (done < len) {
        ssize_t n = pread(fd, tmp + done, len - done, (off_t)(off + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            sys_fail("pread");
        }
        if (n == 0)
            break;
        done += (uint64_t)n;
    }
    if (done != want) {
        fail_header("short/long read");
        fprintf(stderr, "pread returned 0x%" PRIx64 " bytes in total, expected "
                "0x%" PRIx64 " (model size 0x%" PRIx64 ")\n", done, want, file_size);
        if (done > want)
            done = want;
        check_bytes("read data", tmp, good + off, off, done);
        dump_log();
        exit(1);
    }
    check_bytes("read data", tmp, good + off, off, want);
}

static void op_write(uint64_t off, uint64_t len, uint64_t opnum)
{
    uint64_t done = 0;
    fill_pattern(tmp, off, len, opnum);
    while (done < len) {
        ssize_t n = pwrite(fd, tmp + done, len - done, (off_t)(off + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            sys_fail("pwrite");
        }
        if (n == 0) {
            errno = EIO;
            sys_fail("pwrite (returned 0)");
        }
        done += (uint64_t)n;
    }
    memcpy(good + off, tmp, len);
    if (off + len > file_size)
        file_size = off + len;
    check_size("after write");
}

static void op_truncate(uint64_t newsize)
{
    if (ftruncate(fd, (off_t)newsize) < 0)
        sys_fail("ftruncate");
    model_resize(newsize);
    check_size("after truncate");
}

static void op_mapread(uint64_t off, uint64_t len)
{
    uint64_t pg = off & ~(uint64_t)(pagesize - 1);
    uint64_t delta = off - pg, maplen = delta + len, tail = 0;
    unsigned char *p;

    /* if the range ends at EOF, also map the rest of the last page */
    if (off + len == file_size && file_size % (uint64_t)pagesize) {
        tail = (uint64_t)pagesize - file_size % (uint64_t)pagesize;
        maplen += tail;
    }
    p = mmap(NULL, maplen, PROT_READ, MAP_SHARED, fd, (off_t)pg);
    if (p == MAP_FAILED)
        sys_fail("mmap(PROT_READ)");
    check_bytes("mapread data", p + delta, good + off, off, len);
    if (tail) {
        /* beyond EOF the mapped page must read as zeros (mmap(2)) */
        check_bytes("mapread page tail beyond EOF not zero", p + delta + len,
                    zeros, off + len, tail);
    }
    if (munmap(p, maplen) < 0)
        sys_fail("munmap");
}

static void op_mapwrite(uint64_t off, uint64_t len, uint64_t opnum)
{
    uint64_t pg = off & ~(uint64_t)(pagesize - 1);
    uint64_t delta = off - pg, maplen = delta + len;
    unsigned char *p;

    if (off + len > file_size) {
        if (ftruncate(fd, (off_t)(off + len)) < 0)
            sys_fail("ftruncate (mapwrite extend)");
        model_resize(off + len);
        check_size("after mapwrite extend");
    }
    p = mmap(NULL, maplen, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)pg);
    if (p == MAP_FAILED)
        sys_fail("mmap(PROT_READ|PROT_WRITE)");
    fill_pattern(good + off, off, len, opnum);
    memcpy(p + delta, good + off, len);
    if (msync(p, maplen, MS_SYNC) < 0)
        sys_fail("msync");
    if (munmap(p, maplen) < 0)
        sys_fail("munmap");
    check_size("after mapwrite");
}

static void final_check(void)
{
    uint64_t done = 0;
    char extra;
    ssize_t n;

    cur = NULL;
    if (lseek(fd, 0, SEEK_SET) < 0)
        sys_fail("lseek");
    while (done < file_size) {
        n = read(fd, tmp, file_size - done > maxoplen ? maxoplen : file_size - done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            sys_fail("read (final)");
        }
        if (n == 0) {
            fail_header("final read");
            fprintf(stderr, "EOF after 0x%" PRIx64 " bytes, model size 0x%"
                    PRIx64 "\n", done, file_size);
            dump_log();
            exit(1);
        }
        check_bytes("final read data", tmp, good + done, done, (uint64_t)n);
        done += (uint64_t)n;
    }
    while ((n = read(fd, &extra, 1)) < 0 && errno == EINTR)
        ;
    if (n < 0)
        sys_fail("read (final, at EOF)");
    if (n != 0) {
        fail_header("final read");
        fprintf(stderr, "data beyond model size 0x%" PRIx64 "\n", file_size);
        dump_log();
        exit(1);
    }
    check_size("final");
}

static uint64_t parse_num(const char *s, char opt)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || *end) {
        fprintf(stderr, "fsx: bad number for -%c: %s\n", opt, s);
        exit(2);
    }
    return v;
}

static void usage(void)
{
    fprintf(stderr, "usage: fsx [-N numops] [-S seed] [-l maxlen_file] "
            "[-o maxoplen] [-W] [-R] [-q] [-v] FILE\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int c;
    while ((c = getopt(argc, argv, "N:S:l:o:WRqv")) != -1) {
        switch (c) {
        case 'N': numops = parse_num(optarg, 'N'); break;
        case 'S': seed = parse_num(optarg, 'S'); break;
        case 'l': maxlen = parse_num(optarg, 'l'); break;
        case 'o': maxoplen = parse_num(optarg, 'o'); break;
        case 'W': no_mapwrite = 1; break;
        case 'R': no_mapread = 1; break;
        case 'q': quiet = 1; break;
        case 'v': verbose = 1; break;
        default: usage();
        }
    }
    if (optind != argc - 1)
        usage();
    fname = argv[optind];
    if (maxlen == 0 || maxoplen == 0) {
        fprintf(stderr, "fsx: -l and -o must be > 0\n");
        exit(2);
    }
    if (maxoplen > maxlen)
        maxoplen = maxlen;
    pagesize = sysconf(_SC_PAGESIZE);
    if (pagesize <= 0)
        pagesize = 4096;
    good = calloc(1, maxlen + 1);
    tmp = malloc(maxoplen + 1);
    zeros = calloc(1, (size_t)pagesize);
    if (!good || !tmp || !zeros) {
        fprintf(stderr, "fsx: out of memory\n");
        exit(2);
    }
    rng_state = seed;
    do_open(O_RDWR | O_CREAT | O_TRUNC);
    file_size = 0;
    check_size("after open");

    for (uint64_t num = 1; num <= numops; num++) {
        struct logent *e = &oplog[nlogged++ % LOG_SIZE];
        memset(e, 0, sizeof *e);
        e->num = num;
        e->size_before = e->size_after = file_size;
        cur = e;

        /* draw every random number for this op up front, unconditionally,
         * so the sequence depends on the seed only (not on -W/-R) */
        uint64_t r_special = rnd_below(100), r_kind = rnd_below(100);
        uint64_t r_off = rnd(), r_len = rnd();
        if (r_special < 2)              /* 1 in 50 */
            e->kind = OP_CLOSEOPEN;
        else if (r_special < 4)         /* 1 in 50 */
            e->kind = OP_FSYNC;
        else if (r_kind < 25)
            e->kind = OP_READ;
        else if (r_kind < 50)
            e->kind = OP_WRITE;
        else if (r_kind < 60)
            e->kind = OP_TRUNCATE;
        else if (r_kind < 80)
            e->kind = no_mapread ? OP_READ : OP_MAPREAD;
        else
            e->kind = no_mapwrite ? OP_WRITE : OP_MAPWRITE;

        switch (e->kind) {
        case OP_READ:
            /* offset anywhere up to a bit past EOF, length may cross EOF */
            e->off = r_off % (file_size + 1);
            e->len = r_len % (maxoplen + 1);
            if (e->off + e->len > maxlen)
                e->len = maxlen - e->off;
            break;
        case OP_MAPREAD:
            if (file_size == 0) {
                e->skipped = 1;
                break;
            }
            e->off = r_off % file_size;
            e->len = 1 + r_len % maxoplen;
            if (e->off + e->len > file_size)
                e->len = file_size - e->off;
            break;
        case OP_WRITE:
        case OP_MAPWRITE:
            e->off = r_off % maxlen;
            e->len = 1 + r_len % maxoplen;
            if (e->off + e->len > maxlen)
                e->len = maxlen - e->off;
            break;
        case OP_TRUNCATE:
            e->off = r_off % (maxlen + 1);
            break;
        }

        if (e->skipped) {
            skipped++;
        } else {
            counts[e->kind]++;
            switch (e->kind) {
            case OP_READ:     op_read(e->off, e->len); break;
            case OP_WRITE:    op_write(e->off, e->len, num); break;
            case OP_TRUNCATE: op_truncate(e->off); break;
            case OP_MAPREAD:  op_mapread(e->off, e->len); break;
            case OP_MAPWRITE: op_mapwrite(e->off, e->len, num); break;
            case OP_FSYNC:
                if (fsync(fd) < 0)
                    sys_fail("fsync");
                break;
            case OP_CLOSEOPEN:
                if (close(fd) < 0)
                    sys_fail("close");
                do_open(O_RDWR);
                check_size("after reopen");
                break;
            }
        }
        e->size_after = file_size;
        if (verbose)
            print_ent(stdout, e);
        if (!quiet && num % 10000 == 0)
            fprintf(stderr, "fsx: %" PRIu64 " ops done, size 0x%" PRIx64 "\n",
                    num, file_size);
    }

    final_check();
    if (close(fd) < 0)
        sys_fail("close");
    printf("fsx: %" PRIu64 " ops, seed %" PRIu64 ", 0 failures (read %" PRIu64
           ", write %" PRIu64 ", truncate %" PRIu64 ", mapread %" PRIu64
           ", mapwrite %" PRIu64 ", closeopen %" PRIu64 ", fsync %" PRIu64
           ", skipped %" PRIu64 "), final size %" PRIu64 "\n",
           numops, seed, counts[OP_READ], counts[OP_WRITE], counts[OP_TRUNCATE],
           counts[OP_MAPREAD], counts[OP_MAPWRITE], counts[OP_CLOSEOPEN],
           counts[OP_FSYNC], skipped, file_size);
    return 0;
}
