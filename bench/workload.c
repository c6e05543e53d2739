/* otbench: the open storm measured by bench/run.py.
 *
 *   otbench PATH OPS_PER_THREAD THREADS [DIR]
 *
 * Starts THREADS threads that wait on a barrier, prints "armed" once they exist, waits for a
 * line on stdin ("go"), releases them, and thread i does OPS_PER_THREAD x (openat(AT_FDCWD,
 * "PATH.i", O_RDONLY) + close) with raw syscalls. Each thread has its own file (created at
 * start) so that two threads measure tracing, not contention on one dentry's reference count. Prints one JSON line: mean over threads of each
 * thread's wall ns/op, the per-thread figures, total ops and failed opens.
 *
 * With DIR, it first changes into DIR (so that a relative PATH is relative to it).
 *
 * The binary is named otbench so that its comm ("otbench") is recognisable to tracers.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
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

static void *worker(void *arg)
{
    struct result *r = arg;
    long errors = 0;
    pthread_barrier_wait(&barrier);
    uint64_t t0 = now_ns();
    for (long i = 0; i < ops; i++) {
        long fd = syscall(SYS_openat, AT_FDCWD, r->path, O_RDONLY);
        if (fd < 0)
            errors++;
        else
            syscall(SYS_close, (int)fd);
    }
    r->ns = now_ns() - t0;
    r->errors = errors;
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: %s PATH OPS_PER_THREAD THREADS [DIR]\n", argv[0]);
        return 2;
    }
    if (argc == 5 && chdir(argv[4]) != 0) {
        perror("otbench: chdir DIR");
        return 1;
    }
    const char *path = argv[1];
    ops = atol(argv[2]);
    long threads = atol(argv[3]);
    if (ops < 1 || threads < 1 || threads > 1024) {
        fprintf(stderr, "otbench: OPS_PER_THREAD and THREADS (1..1024) must be positive\n");
        return 2;
    }
    pthread_t *tids = calloc((size_t)threads, sizeof *tids);
    struct result *res = calloc((size_t)threads, sizeof *res);
    if (!tids || !res || pthread_barrier_init(&barrier, NULL, (unsigned)threads + 1)) {
        perror("otbench: setup");
        return 1;
    }
    for (long t = 0; t < threads; t++) {
        int fd;
        if (snprintf(res[t].path, sizeof res[t].path, "%s.%ld", path, t) >= (int)sizeof res[t].path ||
            (fd = open(res[t].path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644)) < 0) {
            perror("otbench: creating the per-thread file");
            return 1;
        }
        close(fd);
        if (pthread_create(&tids[t], NULL, worker, &res[t])) {
            perror("otbench: pthread_create");
            return 1;
        }
    }
    printf("armed\n");
    fflush(stdout);

    char line[64];
    if (!fgets(line, sizeof line, stdin) || strncmp(line, "go", 2) != 0) {
        fprintf(stderr, "otbench: expected \"go\" on stdin\n");
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
