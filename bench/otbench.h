/* otbench's protocol, shared by the workloads bench/run.py measures (bench/workload.c,
 * bench/uring.c): each defines a worker and calls otbench_run().
 *
 * otbench_run starts THREADS threads, each with its own file PATH.i (created, 16 bytes, so that
 * two threads measure tracing, not contention on one dentry's reference count), which wait on a
 * barrier; prints "armed" once they exist, waits for a line on stdin ("go"), releases them, and
 * prints one JSON line: mean over threads of each thread's wall ns/op, the per-thread figures,
 * total ops and failed ops. A worker gets its struct result (its file's path in it), waits on
 * `barrier`, does `ops` operations, and fills in `ns` and `errors`.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long ops;
static pthread_barrier_t barrier;

struct result {
    char path[4096];
    uint64_t ns;
    long errors;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* OPS_PER_THREAD and THREADS as given on the command line; `name` prefixes error messages. */
static int otbench_run(const char *name, const char *path, const char *ops_arg, const char *threads_arg,
                       void *(*worker)(void *))
{
    ops = atol(ops_arg);
    long threads = atol(threads_arg);
    if (ops < 1 || threads < 1 || threads > 1024) {
        fprintf(stderr, "%s: OPS_PER_THREAD and THREADS (1..1024) must be positive\n", name);
        return 2;
    }
    pthread_t *tids = calloc((size_t)threads, sizeof *tids);
    struct result *res = calloc((size_t)threads, sizeof *res);
    if (!tids || !res || pthread_barrier_init(&barrier, NULL, (unsigned)threads + 1)) {
        fprintf(stderr, "%s: setup failed\n", name);
        return 1;
    }
    for (long t = 0; t < threads; t++) {
        int fd;
        if (snprintf(res[t].path, sizeof res[t].path, "%s.%ld", path, t) >= (int)sizeof res[t].path ||
            (fd = open(res[t].path, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644)) < 0 ||
            write(fd, "0123456789abcdef", 16) != 16) {
            fprintf(stderr, "%s: creating the per-thread file %s failed\n", name, res[t].path);
            return 1;
        }
        close(fd);
        if (pthread_create(&tids[t], NULL, worker, &res[t])) {
            fprintf(stderr, "%s: pthread_create failed\n", name);
            return 1;
        }
    }
    printf("armed\n");
    fflush(stdout);

    char line[64];
    if (!fgets(line, sizeof line, stdin) || strncmp(line, "go", 2) != 0) {
        fprintf(stderr, "%s: expected \"go\" on stdin\n", name);
        return 1;
    }
    uint64_t t0 = now_ns();
    pthread_barrier_wait(&barrier);
    for (long t = 0; t < threads; t++)
        pthread_join(tids[t], NULL);
    uint64_t wall = now_ns() - t0;

    double sum = 0;
    long errors = 0;
    printf("{\"threads\": %ld, \"ops_per_thread\": %ld, \"total_ops\": %ld, \"wall_ns\": %llu, "
           "\"thread_ns_per_op\": [",
           threads, ops, threads * ops, (unsigned long long)wall);
    for (long t = 0; t < threads; t++) {
        double per = (double)res[t].ns / (double)ops;
        sum += per;
        errors += res[t].errors;
        printf("%s%.2f", t ? ", " : "", per);
    }
    printf("], \"ns_per_op\": %.2f, \"errors\": %ld}\n", sum / (double)threads, errors);
    fflush(stdout);
    free(tids);
    free(res);
    return 0;
}
