/* otpingpong: a context-switch storm for bench/run.py, speaking bench/otbench.h's protocol.
 *
 *   otpingpong PATH OPS_PER_THREAD THREADS
 *
 * Each thread starts a child process and passes one byte to it and back over two pipes,
 * OPS_PER_THREAD times: every round trip blocks each side once, so the scheduler switches twice
 * (sched:sched_switch fires for each). Thread i and its child are pinned to CPU i (modulo the
 * CPUs): a round trip across CPUs costs whatever waking an idle CPU costs that moment, ten times
 * a switch on one CPU, and would drown what is measured. PATH is not used (the protocol makes it).
 */
#include "otbench.h"

#include <sched.h>
#include <sys/wait.h>

static long next_cpu;

static void *worker(void *arg)
{
    struct result *r = arg;
    int there[2], back[2];
    char byte = 'x';
    long errors = 0;
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    CPU_SET(__atomic_fetch_add(&next_cpu, 1, __ATOMIC_RELAXED) % sysconf(_SC_NPROCESSORS_ONLN), &cpus);
    if (sched_setaffinity(0, sizeof cpus, &cpus) || pipe(there) || pipe(back)) {
        r->errors = ops;
        pthread_barrier_wait(&barrier);
        return NULL;
    }
    pid_t child = fork();
    if (child == 0) {
        /* Only async-signal-safe calls after fork in a threaded process. */
        close(there[1]);
        close(back[0]);
        while (read(there[0], &byte, 1) == 1 && write(back[1], &byte, 1) == 1) {
        }
        _exit(0);
    }
    close(there[0]);
    close(back[1]);
    pthread_barrier_wait(&barrier);
    uint64_t t0 = now_ns();
    for (long i = 0; i < ops; i++) {
        if (child < 0 || write(there[1], &byte, 1) != 1 || read(back[0], &byte, 1) != 1)
            errors++;
    }
    r->ns = now_ns() - t0;
    r->errors = errors;
    close(there[1]);
    close(back[0]);
    if (child > 0)
        waitpid(child, NULL, 0);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s PATH OPS_PER_THREAD THREADS\n", argv[0]);
        return 2;
    }
    return otbench_run("otpingpong", argv[1], argv[2], argv[3], worker);
}
