/* Opens files through io_uring (liburing), for the tests and the benchmark. Each operation
 * prints one line of JSON with what the kernel answered: the completion's result and, for an
 * fd, what /proc/self/fd says it is.
 *
 *   uring_opener [--sqpoll] [--async] [--out=FILE] OP...
 *     open:PATH             IORING_OP_OPENAT, O_RDONLY, from the working directory
 *     openat:DIR:PATH       IORING_OP_OPENAT relative to an fd of DIR
 *     create:PATH:MODE      IORING_OP_OPENAT2, O_CREAT|O_WRONLY|O_TRUNC, MODE in octal
 *     fixed:PATH            IORING_OP_OPENAT into fixed-file slot 0
 *     cloexec_fixed:PATH    the same with O_CLOEXEC, which the kernel refuses before submission
 *     skip:PATH             IORING_OP_OPENAT with IOSQE_CQE_SKIP_SUCCESS, and a NOP (a success
 *                           posts no completion: res is 0 then, the fd not known; a failure
 *                           posts one, and res is its error)
 *     opens:PATH:N          N opens and closes through the ring (no output per open)
 *     batch:PATH:N          N IORING_OP_OPENATs submitted together (all N submissions come
 *                           before the first completion), a line for each completion
 *     reads:PATH:N          N IORING_OP_READs of PATH's first 64 bytes (no output per read)
 *   --sqpoll: a ring with a kernel submission thread; --async: requests forced to io-wq workers;
 *   --out: the lines go to FILE rather than to stdout.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static struct io_uring ring;
static unsigned sqe_flags;

static void die(const char *what, int err) {
    fprintf(stderr, "uring_opener: %s: %s\n", what, strerror(err < 0 ? -err : err));
    exit(2);
}

/* Submits the prepared request and waits for its completion; returns its result. */
static int complete(void) {
    struct io_uring_cqe *cqe;
    int ret = io_uring_submit(&ring);
    if (ret < 0)
        die("io_uring_submit", ret);
    ret = io_uring_wait_cqe(&ring, &cqe);
    if (ret < 0)
        die("io_uring_wait_cqe", ret);
    int res = cqe->res;
    io_uring_cqe_seen(&ring, cqe);
    return res;
}

static struct io_uring_sqe *sqe(void) {
    struct io_uring_sqe *s = io_uring_get_sqe(&ring);
    if (!s)
        die("io_uring_get_sqe", EBUSY);
    return s;
}

static void report(const char *op, int res, int fixed) {
    char link[4096] = "";
    if (res >= 0 && !fixed) {
        char proc[64];
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", res);
        ssize_t n = readlink(proc, link, sizeof link - 1);
        link[n < 0 ? 0 : n] = 0;
    }
    /* The tests' paths need no JSON escaping. */
    printf("{\"op\": \"%s\", \"res\": %d, \"pid\": %d, \"tid\": %ld, \"link\": \"%s\"}\n", op, res, getpid(),
           syscall(SYS_gettid), link);
    fflush(stdout);
}

int main(int argc, char **argv) {
    struct io_uring_params params = {0};
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--sqpoll") == 0) {
            params.flags |= IORING_SETUP_SQPOLL;
            params.sq_thread_idle = 1000;
        } else if (strcmp(argv[i], "--async") == 0) {
            sqe_flags |= IOSQE_ASYNC;
        } else if (strncmp(argv[i], "--out=", 6) == 0) {
            if (!freopen(argv[i] + 6, "w", stdout))
                die(argv[i] + 6, errno);
        } else {
            die(argv[i], EINVAL);
        }
    }
    int ret = io_uring_queue_init_params(64, &ring, &params);
    if (ret < 0)
        die("io_uring_queue_init", ret);
    for (; i < argc; i++) {
        char *op = strdup(argv[i]);
        char *kind = strtok(op, ":"), *a = strtok(NULL, ":"), *b = strtok(NULL, ":");
        if (!kind || !a)
            die(argv[i], EINVAL);
        if (strcmp(kind, "open") == 0) {
            struct io_uring_sqe *s = sqe();
            io_uring_prep_openat(s, AT_FDCWD, a, O_RDONLY, 0);
            io_uring_sqe_set_flags(s, sqe_flags);
            report(kind, complete(), 0);
        } else if (strcmp(kind, "openat") == 0 && b) {
            int dir = open(a, O_RDONLY | O_DIRECTORY);
            if (dir < 0)
                die(a, errno);
            struct io_uring_sqe *s = sqe();
            io_uring_prep_openat(s, dir, b, O_RDONLY, 0);
            io_uring_sqe_set_flags(s, sqe_flags);
            report(kind, complete(), 0);
            close(dir);
        } else if (strcmp(kind, "create") == 0 && b) {
            struct open_how how = {.flags = O_CREAT | O_WRONLY | O_TRUNC, .mode = strtoul(b, NULL, 8)};
            struct io_uring_sqe *s = sqe();
            io_uring_prep_openat2(s, AT_FDCWD, a, &how);
            io_uring_sqe_set_flags(s, sqe_flags);
            report(kind, complete(), 0);
        } else if (strcmp(kind, "fixed") == 0) {
            ret = io_uring_register_files_sparse(&ring, 4);
            if (ret < 0)
                die("io_uring_register_files_sparse", ret);
            struct io_uring_sqe *s = sqe();
            io_uring_prep_openat_direct(s, AT_FDCWD, a, O_RDONLY, 0, 0);
            io_uring_sqe_set_flags(s, sqe_flags);
            report(kind, complete(), 1);
        } else if (strcmp(kind, "cloexec_fixed") == 0) {
            ret = io_uring_register_files_sparse(&ring, 4);
            if (ret < 0)
                die("io_uring_register_files_sparse", ret);
            struct io_uring_sqe *s = sqe();
            io_uring_prep_openat_direct(s, AT_FDCWD, a, O_RDONLY | O_CLOEXEC, 0, 0);
            io_uring_sqe_set_flags(s, sqe_flags);
            report(kind, complete(), 1);
        } else if (strcmp(kind, "skip") == 0) {
            struct io_uring_sqe *s = sqe();
            io_uring_prep_openat(s, AT_FDCWD, a, O_RDONLY, 0);
            io_uring_sqe_set_flags(s, sqe_flags | IOSQE_CQE_SKIP_SUCCESS);
            io_uring_sqe_set_data64(s, 1);
            struct io_uring_sqe *nop = sqe();
            io_uring_prep_nop(nop);
            io_uring_sqe_set_data64(nop, 2);
            if ((ret = io_uring_submit(&ring)) < 0)
                die("io_uring_submit", ret);
            /* The NOP's completion, and the open's if it failed (a failure is posted after all, in
             * any order: draining does not count skipped completions); a success posts none, so
             * the open's is waited for only so long. */
            int res = 0, nop_seen = 0, open_seen = 0;
            while (!nop_seen || !open_seen) {
                struct io_uring_cqe *cqe;
                struct __kernel_timespec wait = {.tv_nsec = 300 * 1000 * 1000};
                ret = nop_seen ? io_uring_wait_cqe_timeout(&ring, &cqe, &wait) : io_uring_wait_cqe(&ring, &cqe);
                if (ret == -ETIME)
                    break;
                if (ret < 0)
                    die("io_uring_wait_cqe", ret);
                if (cqe->user_data == 1) {
                    res = cqe->res;
                    open_seen = 1;
                } else {
                    nop_seen = 1;
                }
                io_uring_cqe_seen(&ring, cqe);
            }
            report(kind, res, 1);
        } else if (strcmp(kind, "batch") == 0 && b) {
            long n = strtol(b, NULL, 10);
            for (long k = 0; k < n; k++) {
                struct io_uring_sqe *s = sqe();
                io_uring_prep_openat(s, AT_FDCWD, a, O_RDONLY, 0);
                io_uring_sqe_set_flags(s, sqe_flags);
            }
            if ((ret = io_uring_submit(&ring)) != n)
                die("io_uring_submit", ret < 0 ? ret : EAGAIN);
            for (long k = 0; k < n; k++) {
                struct io_uring_cqe *cqe;
                if ((ret = io_uring_wait_cqe(&ring, &cqe)) < 0)
                    die("io_uring_wait_cqe", ret);
                int res = cqe->res;
                io_uring_cqe_seen(&ring, cqe);
                report(kind, res, 0);
            }
        } else if ((strcmp(kind, "opens") == 0 || strcmp(kind, "reads") == 0) && b) {
            long n = strtol(b, NULL, 10);
            int reads = kind[0] == 'r', fd = -1;
            char buf[64];
            if (reads && (fd = open(a, O_RDONLY)) < 0)
                die(a, errno);
            for (long k = 0; k < n; k++) {
                struct io_uring_sqe *s = sqe();
                if (reads)
                    io_uring_prep_read(s, fd, buf, sizeof buf, 0);
                else
                    io_uring_prep_openat(s, AT_FDCWD, a, O_RDONLY, 0);
                io_uring_sqe_set_flags(s, sqe_flags);
                int res = complete();
                if (res < 0)
                    die(a, res);
                if (!reads)
                    close(res);
            }
            if (fd >= 0)
                close(fd);
        } else {
            die(argv[i], EINVAL);
        }
        free(op);
    }
    io_uring_queue_exit(&ring);
    return 0;
}
