/* otbench: the open storm measured by bench/run.py.
 *
 *   otbench PATH OPS_PER_THREAD THREADS [DIR]
 *
 * Thread i does OPS_PER_THREAD x (openat(AT_FDCWD, "PATH.i", O_RDONLY) + close) with raw
 * syscalls; the protocol (threads, "armed", "go", the JSON line) is bench/otbench.h's.
 *
 * With DIR, it first changes into DIR (so that a relative PATH is relative to it).
 *
 * The binary is named otbench so that its comm ("otbench") is recognisable to tracers.
 */
#include "otbench.h"

#include <sys/syscall.h>

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
    return otbench_run("otbench", argv[1], argv[2], argv[3], worker);
}
