/* oturing: the io_uring storms measured by bench/run.py, speaking bench/otbench.h's protocol.
 *
 *   oturing open|read PATH OPS_PER_THREAD THREADS
 *
 * Each of THREADS threads has its own ring and its own file PATH.i. Per op:
 *   open  IORING_OP_OPENAT(AT_FDCWD, "PATH.i", O_RDONLY), submitted and waited for, then close(2)
 *         of the fd: one open event per op, which only an io_uring-aware tracer sees;
 *   read  IORING_OP_READ of the file's first 64 bytes through a ring opened once: no open at
 *         all, but the io_uring tracepoints fire for it as for every request (total_ops counts
 *         the reads; a tracer should capture none).
 */
#include "otbench.h"

#include <liburing.h>

static int reads;

static void *worker(void *arg)
{
    struct result *r = arg;
    struct io_uring ring;
    char buf[64];
    long errors = 0;
    int fd = -1;
    if (io_uring_queue_init(8, &ring, 0) < 0 || (reads && (fd = open(r->path, O_RDONLY)) < 0)) {
        r->errors = ops;
        pthread_barrier_wait(&barrier);
        return NULL;
    }
    pthread_barrier_wait(&barrier);
    uint64_t t0 = now_ns();
    for (long i = 0; i < ops; i++) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
        struct io_uring_cqe *cqe;
        if (reads)
            io_uring_prep_read(sqe, fd, buf, sizeof buf, 0);
        else
            io_uring_prep_openat(sqe, AT_FDCWD, r->path, O_RDONLY, 0);
        if (io_uring_submit_and_wait(&ring, 1) < 0 || io_uring_peek_cqe(&ring, &cqe) < 0) {
            errors++;
            continue;
        }
        int res = cqe->res;
        io_uring_cqe_seen(&ring, cqe);
        if (res < 0)
            errors++;
        else if (!reads)
            close(res);
    }
    r->ns = now_ns() - t0;
    r->errors = errors;
    if (fd >= 0)
        close(fd);
    io_uring_queue_exit(&ring);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 5 || (strcmp(argv[1], "open") != 0 && strcmp(argv[1], "read") != 0)) {
        fprintf(stderr, "usage: %s open|read PATH OPS_PER_THREAD THREADS\n", argv[0]);
        return 2;
    }
    reads = argv[1][0] == 'r';
    return otbench_run("oturing", argv[2], argv[3], argv[4], worker);
}
