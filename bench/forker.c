/* otforker: N x (fork; the child exits at once; the parent waits), for bench/build.py: what
 * following a process tree costs per fork.
 *
 *   otforker N
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    long n = argc == 2 ? atol(argv[1]) : 0;
    if (n < 1) {
        fprintf(stderr, "usage: %s N\n", argv[0]);
        return 2;
    }
    for (long i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("otforker: fork");
            return 1;
        }
        if (pid == 0)
            _exit(0);
        if (waitpid(pid, NULL, 0) != pid) {
            perror("otforker: waitpid");
            return 1;
        }
    }
    return 0;
}
